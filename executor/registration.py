"""Registration with the controllers and the heartbeat that keeps the node up.

The loop registers with the first controller of the configured list that
answers, failing over in order and backing off (with jitter, capped at a few
seconds) after each failure; then it heartbeats at the interval the controller
gives in its registration answer and again in every heartbeat answer (the
interval grows with the fleet). Each heartbeat carries the node's health verdict
with its failing check ids (:class:`~novaops.executor.health.HealthVerdict`),
and each response the
store's quarantine decision for the node, kept in :attr:`Registrar.status`. A
failed heartbeat moves on to the next controller, except that a heartbeat that
timed out with only one controller configured is retried at the next beat on the
same link; ``known = false`` means the controller lost the node, so it registers
again. Every failure is one log line and the loop never ends by itself: only
cancellation stops it.

The decisions are pure (:func:`next_controller_index`, :class:`Backoff`); the
transport (:class:`ControllerLink`), sleep and randomness are injected so the
loop runs under fakes in tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from novaops.client.config import TLSFiles
from novaops.client.tls import secure_aio_channel
from novaops.executor.health import HealthVerdict
from novaops.executor.quarantine import StoredDecision
from novaops.pki.issue import write_atomic
from novaops.v1 import common_pb2, controller_pb2, controller_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT_SECONDS = 5.0
# Used when a controller answers heartbeat_interval_ms = 0 (it should not).
DEFAULT_HEARTBEAT_SECONDS = 1.0
MIN_HEARTBEAT_SECONDS = 0.05


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: ``delay(n)`` before attempt n+1.

    The jitter takes up to ``jitter`` of the delay away so that executors that
    lost the same controller do not come back in lock step.
    """

    initial_seconds: float = 0.2
    cap_seconds: float = 5.0
    jitter: float = 0.5

    def delay(self, failures: int, rand: float) -> float:
        """Seconds to wait after ``failures`` consecutive failures (>= 1); rand in [0, 1)."""
        base = min(self.cap_seconds, self.initial_seconds * 2.0 ** max(failures - 1, 0))
        return base * (1.0 - self.jitter * rand)


def next_controller_index(index: int, count: int) -> int:
    """The controller to try after the one at index, wrapping around the list."""
    return (index + 1) % count


_SOURCE_NAMES = {
    common_pb2.QUARANTINE_SOURCE_MANUAL: "manual",
    common_pb2.QUARANTINE_SOURCE_AUTO: "auto",
}


def _iso(stamp: Timestamp, present: bool) -> str:
    return stamp.ToDatetime(dt.UTC).isoformat(timespec="seconds") if present else ""


def stored_decision(response: controller_pb2.HeartbeatResponse) -> StoredDecision:
    """The store's decision a heartbeat response carries: the record when
    quarantined, the last history entry when released, and the leader's fence."""
    decision = StoredDecision(response.quarantined, fence_revision=response.fence_revision)
    if response.quarantined and response.HasField("quarantine"):
        record = response.quarantine
        return dataclasses.replace(
            decision,
            reason=record.reason,
            actor=record.actor,
            source=_SOURCE_NAMES.get(record.source, ""),
            since=_iso(record.since, record.HasField("since")),
        )
    if not response.quarantined and response.HasField("released"):
        entry = response.released
        return dataclasses.replace(
            decision,
            reason=entry.reason,
            actor=entry.actor,
            source=_SOURCE_NAMES.get(entry.source, ""),
            since=_iso(entry.at, entry.HasField("at")),
        )
    return decision


# Reports of quarantine changes applied from heartbeats kept until recorded.
MAX_SYNCED_REPORTS = 16


def heartbeat_request(
    node: str,
    sequence: int,
    verdict: HealthVerdict,
    synced: controller_pb2.SyncedQuarantine | None = None,
) -> controller_pb2.HeartbeatRequest:
    request = controller_pb2.HeartbeatRequest(
        node=node,
        sequence=sequence,
        health=verdict.status,
        failing_checks=list(verdict.failing_checks),
    )
    if verdict.checked_at is not None:
        request.checked_at.FromDatetime(verdict.checked_at)
    if synced is not None:
        request.synced_quarantine.CopyFrom(synced)
    return request


def is_timeout(exc: BaseException) -> bool:
    """The call ran out of time (the controller answered too slowly, or not yet)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return bool(exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, TimeoutError)


def describe_rpc_error(exc: BaseException) -> str:
    """One line for a failed controller call."""
    if isinstance(exc, grpc.aio.AioRpcError):
        details = " ".join((exc.details() or "").split())
        return f"{exc.code().name}: {details}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class ControllerLink(Protocol):
    """The RegistryService calls of one controller."""

    async def register(
        self, request: controller_pb2.RegisterRequest, timeout: float
    ) -> controller_pb2.RegisterResponse: ...

    async def heartbeat(
        self, request: controller_pb2.HeartbeatRequest, timeout: float
    ) -> controller_pb2.HeartbeatResponse: ...

    async def close(self) -> None: ...


class GrpcControllerLink:
    """ControllerLink over an mTLS gRPC channel."""

    def __init__(self, target: str, tls: TLSFiles) -> None:
        self._channel = secure_aio_channel(target, tls)
        self._stub = controller_pb2_grpc.RegistryServiceStub(self._channel)

    async def register(
        self, request: controller_pb2.RegisterRequest, timeout: float
    ) -> controller_pb2.RegisterResponse:
        response: controller_pb2.RegisterResponse = await self._stub.Register(
            request, timeout=timeout
        )
        return response

    async def heartbeat(
        self, request: controller_pb2.HeartbeatRequest, timeout: float
    ) -> controller_pb2.HeartbeatResponse:
        response: controller_pb2.HeartbeatResponse = await self._stub.Heartbeat(
            request, timeout=timeout
        )
        return response

    async def close(self) -> None:
        await self._channel.close(grace=None)


@dataclass
class RegistrationStatus:
    """What the loop last learned; read by the daemon (e.g. for health)."""

    controller: str | None = None
    registered: bool = False
    # The quarantine state the controllers' store holds; None until told.
    quarantined: bool | None = None
    # The same with the record's details and the leader's fence (from the last
    # heartbeat response; registration answers carry only the state).
    decision: StoredDecision | None = None
    heartbeats_sent: int = 0
    failures: int = 0
    # Quarantine changes applied from heartbeat responses, with their hook lines,
    # oldest first: the oldest goes with every heartbeat until a controller says
    # it recorded it, then the next (bounded: the oldest are dropped past 16).
    # They are kept in ``journal`` (see restore_synced) so a restart loses none.
    synced: list[controller_pb2.SyncedQuarantine] = field(default_factory=list)
    journal: Path | None = None

    _writer: asyncio.Task[None] | None = field(default=None, repr=False, compare=False)
    _unsaved: bool = field(default=False, repr=False, compare=False)

    def report_synced(self, report: controller_pb2.SyncedQuarantine) -> None:
        """Queue a report for the next heartbeats."""
        self.synced.append(report)
        del self.synced[:-MAX_SYNCED_REPORTS]
        self._save_later()

    def synced_recorded(self, report: controller_pb2.SyncedQuarantine) -> None:
        """A controller recorded the report: the next one goes out."""
        if report in self.synced:
            self.synced.remove(report)
            self._save_later()

    async def flush_synced(self) -> None:
        """Wait until the journal holds the queue as it is now."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    def restore_synced(self, journal: Path) -> None:
        """Keep the queue in ``journal`` from now on, and take up the reports a
        previous run left there (a file that cannot be read is set aside as
        ``NAME.bad`` with a warning: a report is not worth refusing to start)."""
        self.journal = journal
        try:
            doc = json.loads(journal.read_bytes())
            reports = []
            for encoded in doc["reports"]:
                report = controller_pb2.SyncedQuarantine()
                report.ParseFromString(base64.b64decode(encoded, validate=True))
                reports.append(report)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, DecodeError) as exc:
            log.warning(
                "unreadable synced-quarantine reports in %s (%s); set aside as %s.bad",
                journal,
                exc,
                journal.name,
            )
            with contextlib.suppress(OSError):
                journal.replace(journal.with_name(journal.name + ".bad"))
            return
        self.synced[:0] = reports
        del self.synced[:-MAX_SYNCED_REPORTS]
        if self.synced:
            log.info("%d synced-quarantine reports from the last run to send", len(self.synced))

    def _save_later(self) -> None:
        """Have the journal follow the queue, without waiting for the disk here: the
        heartbeat loop calls this, and a stuck state_dir must not stop heartbeats.
        One writer at a time; changes made while it writes are written after."""
        if self.journal is None:
            return
        self._unsaved = True
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_journal(self.journal), name="synced-reports-journal"
            )

    async def _write_journal(self, journal: Path) -> None:
        while self._unsaved:
            self._unsaved = False
            reports = [base64.b64encode(r.SerializeToString()).decode() for r in self.synced]
            data = json.dumps({"reports": reports}).encode()
            try:
                await asyncio.to_thread(write_atomic, journal, data, 0o600)
            except OSError as exc:  # the queue in memory still holds them
                log.warning("could not keep synced-quarantine reports in %s: %s", journal, exc)


@dataclass
class Registrar:
    """Registers this node and keeps it alive; run :meth:`run` as a task, cancel to stop."""

    node: str
    address: str
    version: str
    controllers: Sequence[str]
    connect: Callable[[str], ControllerLink]
    facts: Callable[[], Awaitable[common_pb2.HostFacts]]
    health: Callable[[], Awaitable[HealthVerdict]]
    labels: dict[str, str] = field(default_factory=dict)
    backoff: Backoff = field(default_factory=Backoff)
    call_timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rand: Callable[[], float] = random.random
    status: RegistrationStatus = field(default_factory=RegistrationStatus)

    def __post_init__(self) -> None:
        if not self.controllers:
            raise ValueError("at least one controller address is needed")
        self._index = 0
        self._sequence = 0

    async def run(self) -> None:
        """Register and heartbeat until cancelled; never raises anything else."""
        while True:
            target = self.controllers[self._index]
            link = self.connect(target)
            try:
                interval = await self._register(target, link)
                if interval is None:
                    self._index = next_controller_index(self._index, len(self.controllers))
                    await self.sleep(self.backoff.delay(self.status.failures, self.rand()))
                    continue
                if not await self._heartbeat_until_lost(target, link, interval):
                    self._index = next_controller_index(self._index, len(self.controllers))
            finally:
                await asyncio.shield(link.close())

    async def _register(self, target: str, link: ControllerLink) -> float | None:
        """The heartbeat interval in seconds, or None when registration failed."""
        try:
            request = controller_pb2.RegisterRequest(
                node=self.node,
                address=self.address,
                version=self.version,
                facts=await self.facts(),
                labels=self.labels,
            )
            response = await asyncio.wait_for(
                link.register(request, self.call_timeout), self.call_timeout
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.status.failures += 1
            self.status.registered = False
            log.warning(
                "register with controller %s failed (attempt %d): %s",
                target,
                self.status.failures,
                describe_rpc_error(exc),
            )
            return None
        self.status.failures = 0
        self.status.registered = True
        self.status.controller = response.controller or target
        self.status.quarantined = response.quarantined
        self.status.decision = StoredDecision(response.quarantined)
        interval_ms = response.heartbeat_interval_ms
        interval = interval_ms / 1000 if interval_ms else DEFAULT_HEARTBEAT_SECONDS
        log.info(
            "registered node %s with controller %s (%s), heartbeat every %.2fs",
            self.node,
            self.status.controller,
            target,
            interval,
        )
        return max(interval, MIN_HEARTBEAT_SECONDS)

    async def _heartbeat_until_lost(
        self, target: str, link: ControllerLink, interval: float
    ) -> bool:
        """Heartbeat until something goes wrong.

        Returns True when the controller forgot the node (register there again),
        False when the heartbeat failed (move on to the next controller; with only
        one, a heartbeat that timed out is retried on the same link instead).
        """
        # The first heartbeat goes out at once: it carries the node's health,
        # which registration does not, so `node list` never shows it unknown for long.
        first = True
        while True:
            if not first:
                await self.sleep(interval)
            first = False
            self._sequence += 1
            synced = self.status.synced[0] if self.status.synced else None
            try:
                request = heartbeat_request(self.node, self._sequence, await self.health(), synced)
                response = await asyncio.wait_for(
                    link.heartbeat(request, self.call_timeout), self.call_timeout
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.status.registered = False
                if len(self.controllers) > 1 or not is_timeout(exc):
                    log.warning(
                        "heartbeat to controller %s failed, failing over: %s",
                        target,
                        describe_rpc_error(exc),
                    )
                    return False
                # The only controller, answering too slowly: a new connection and a
                # new registration do not cure a slow controller, they load it more
                # (500 nodes doing that at once were a storm of TLS handshakes and
                # fact gathering that kept a busy controller overloaded). The next
                # beat tries again on this link; a controller that lost the node
                # says so. Other failures (unreachable: the channel's own reconnect
                # backoff grows to minutes) get a new link and registration.
                log.warning(
                    "heartbeat to controller %s failed, next try in %.1fs: %s",
                    target,
                    interval,
                    describe_rpc_error(exc),
                )
                continue
            self.status.registered = True
            self.status.heartbeats_sent += 1
            if response.synced_quarantine_recorded and synced is not None:
                self.status.synced_recorded(synced)
            self.status.quarantined = response.quarantined
            self.status.decision = stored_decision(response)
            if response.heartbeat_interval_ms:
                # The interval grows and shrinks with the fleet; the TTL the
                # controller just set is for this interval.
                paced = max(response.heartbeat_interval_ms / 1000, MIN_HEARTBEAT_SECONDS)
                if paced != interval:
                    log.info("heartbeat every %.2fs from now on (was %.2fs)", paced, interval)
                    interval = paced
            if not response.known:
                self.status.registered = False
                log.info(
                    "controller %s does not know node %s; registering again",
                    target,
                    self.node,
                )
                return True
