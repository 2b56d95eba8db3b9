"""Quarantine decisions on the controller: store record + history, node, event.

A quarantine is fenced by the leader's term (only the leader changes it),
idempotent (quarantining a quarantined node changes nothing), dry-runnable and
audited (actor, reason, source, time, causes). The store is the truth: when the
node cannot be told now, it learns from its next heartbeat response.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from novaops.controller.events import EventLog
from novaops.controller.executors import ExecutorPool
from novaops.controller.store.base import LeaderTerm, Store
from novaops.v1 import common_pb2, controller_pb2, executor_pb2

log = logging.getLogger(__name__)

APPLY_TIMEOUT_SECONDS = 5.0

SOURCE_NAMES = {
    common_pb2.QUARANTINE_SOURCE_MANUAL: "manual",
    common_pb2.QUARANTINE_SOURCE_AUTO: "auto",
}


class NotLeader(Exception):
    """This replica is not the leader; the message names the leader if known."""


class UnknownNode(Exception):
    """No node of that name is registered."""


class NotClean(Exception):
    """verify-clean failed on the node; unquarantine refused without --force."""


VerifyCleanFn = Callable[[str], Awaitable[tuple[bool, list[common_pb2.CheckResult]]]]


def _now_ts() -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


@dataclass
class QuarantineManager:
    store: Store
    term: Callable[[], LeaderTerm | None]
    executors: ExecutorPool
    events: EventLog
    verify_clean: VerifyCleanFn

    async def _fence(self) -> LeaderTerm:
        term = self.term()
        if term is None:
            leader = await self.store.get_leader()
            where = f"the leader is {leader.name} at {leader.address}" if leader else "no leader"
            raise NotLeader(f"this controller is not the leader ({where}); retry there")
        return term

    async def _address(self, node: str) -> str:
        record = await self.store.get_node(node)
        if record is None:
            raise UnknownNode(f"no node named {node!r} is registered")
        return record.address

    async def current(self, node: str) -> common_pb2.QuarantineRecord | None:
        stored = (await self.store.get_quarantines()).get(node)
        if stored is None:
            return None
        record = common_pb2.QuarantineRecord()
        record.ParseFromString(stored)
        return record

    async def _tell_node(
        self, address: str, quarantined: bool, record: common_pb2.QuarantineRecord, fence: int
    ) -> list[str]:
        request = executor_pb2.ApplyQuarantineRequest(
            quarantined=quarantined,
            reason=record.reason,
            actor=record.actor,
            source=record.source,
            fence_revision=fence,
        )
        try:
            result = await self.executors.stub(address).ApplyQuarantine(
                request, timeout=APPLY_TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            log.warning("could not tell %s about quarantine: %s", record.node, code)
            return [f"node not told now ({code}); it applies the change at its next heartbeat"]
        return list(result.hook_results)

    async def quarantine(
        self,
        node: str,
        reason: str,
        actor: str,
        *,
        source: common_pb2.QuarantineSource = common_pb2.QUARANTINE_SOURCE_MANUAL,
        causes: Sequence[common_pb2.CheckResult] = (),
        event_ids: Sequence[str] = (),
        dry_run: bool = False,
    ) -> controller_pb2.QuarantineResponse:
        term = await self._fence()
        address = await self._address(node)
        existing = await self.current(node)
        if existing is not None:
            return controller_pb2.QuarantineResponse(
                record=existing,
                changed=False,
                message=f"{node} is already quarantined (since {existing.since.ToJsonString()})",
            )
        record = common_pb2.QuarantineRecord(
            node=node,
            reason=reason,
            actor=actor,
            source=source,
            since=_now_ts(),
            causes=list(causes),
            event_ids=list(event_ids),
        )
        if dry_run:
            return controller_pb2.QuarantineResponse(
                record=record, changed=False, message=f"dry run: would quarantine {node}"
            )
        history = common_pb2.QuarantineHistoryEntry(
            node=node,
            action="quarantine",
            reason=reason,
            actor=actor,
            source=source,
            at=record.since,
            event_ids=list(event_ids),
        )
        await self.store.put_quarantine(
            node, record.SerializeToString(), history.SerializeToString(), term
        )
        hooks = await self._tell_node(address, True, record, term.record.revision)
        await self.events.emit(
            "quarantine",
            node,
            f"{node} quarantined by {actor} ({SOURCE_NAMES.get(source, 'manual')}): {reason}",
            cause_ids=event_ids,
            attributes={"actor": actor, "source": SOURCE_NAMES.get(source, "manual")},
        )
        return controller_pb2.QuarantineResponse(
            record=record, changed=True, hook_results=hooks, message=f"{node} quarantined"
        )

    async def unquarantine(
        self,
        node: str,
        reason: str,
        actor: str,
        *,
        force: bool = False,
        dry_run: bool = False,
        source: common_pb2.QuarantineSource = common_pb2.QUARANTINE_SOURCE_MANUAL,
        event_ids: Sequence[str] = (),
    ) -> controller_pb2.QuarantineResponse:
        term = await self._fence()
        address = await self._address(node)
        existing = await self.current(node)
        if existing is None:
            return controller_pb2.QuarantineResponse(
                changed=False, message=f"{node} is not quarantined"
            )
        if not force:
            clean, checks = await self.verify_clean(node)
            if not clean:
                failing = ", ".join(
                    f"{c.check_id}({c.target}): {c.summary}"
                    for c in checks
                    if c.status != common_pb2.CHECK_STATUS_OK
                )
                raise NotClean(
                    f"verify-clean fails on {node}: {failing or 'unknown'}; "
                    "fix it (novaops health --recover) or pass --force"
                )
        if dry_run:
            return controller_pb2.QuarantineResponse(
                record=existing, changed=False, message=f"dry run: would unquarantine {node}"
            )
        history = common_pb2.QuarantineHistoryEntry(
            node=node,
            action="unquarantine",
            reason=reason,
            actor=actor,
            source=source,
            at=_now_ts(),
            forced=force,
            event_ids=list(event_ids),
        )
        await self.store.delete_quarantine(node, history.SerializeToString(), term)
        released = common_pb2.QuarantineRecord(node=node, reason=reason, actor=actor, source=source)
        hooks = await self._tell_node(address, False, released, term.record.revision)
        await self.events.emit(
            "unquarantine",
            node,
            f"{node} released by {actor}{' (forced)' if force else ''}: {reason}",
            cause_ids=event_ids,
            attributes={"actor": actor, "forced": str(force).lower()},
        )
        return controller_pb2.QuarantineResponse(
            record=existing, changed=True, hook_results=hooks, message=f"{node} unquarantined"
        )
