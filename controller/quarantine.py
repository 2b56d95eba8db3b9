"""Quarantine decisions on the controller: store record + history, node, event.

A quarantine is fenced by the leader's term (only the leader changes it),
idempotent (quarantining a quarantined node changes nothing), dry-runnable and
audited (actor, reason, source, time, causes). The store is the truth: when the
node cannot be told now, it learns from its next heartbeat response.

Every write is a compare-and-set on the record read just before it (the store's
``expected``), so two concurrent decisions cannot both pass the check; the one
that loses re-reads and decides again:

- an automatic quarantine never overwrites a record, manual or automatic;
- an automatic release lifts only an automatic record, the very one it read;
- a manual ``quarantine`` of an auto-quarantined node turns it into a manual
  quarantine (source, actor and reason become the operator's; ``since``, the
  causes and their event ids stay) and appends a history entry, so automation
  never lifts it.

Hooks run on the node after the store write, so their outcome is recorded after
it: in the quarantine/unquarantine event's attributes (``hooks`` = ok | failed |
none | pending, ``hook_results`` = the node's lines), in the history entry's
details (:class:`HistoryDetails`), and, when any hook failed, in a
``hook.failed`` event caused by the quarantine event.

A node that could not be told ("pending") applies the change from its next
heartbeat response and reports its hooks in a later heartbeat; whichever
replica receives that report records it (:func:`record_synced_hooks`): a
``quarantine.synced`` or ``unquarantine.synced`` event with the hook outcome
(caused by the change's own event, with its actor, source and since), and
``hook.failed`` after it when a hook failed. The change's history entry gets the
outcome too, from leader or follower alike: a compare-and-set on its details
fills a ``pending`` entry once, and the leader's own ``pending`` note is
conditional in the same way, so neither overwrites the other.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from novaops.controller.events import EventLog
from novaops.controller.executors import ExecutorPool
from novaops.controller.store.base import (
    HistoryEntry,
    LeaderTerm,
    QuarantineConflict,
    Store,
    StoreError,
)
from novaops.v1 import common_pb2, controller_pb2, executor_pb2

log = logging.getLogger(__name__)

APPLY_TIMEOUT_SECONDS = 5.0
# Attempts at a conditional write before giving up; each lost race means
# another decision landed in between, which is rare, not contention.
CONFLICT_ATTEMPTS = 4

SOURCE_NAMES = {
    common_pb2.QUARANTINE_SOURCE_MANUAL: "manual",
    common_pb2.QUARANTINE_SOURCE_AUTO: "auto",
}

HOOKS_OK = "ok"
HOOKS_FAILED = "failed"
HOOKS_NONE = "none"
HOOKS_PENDING = "pending"  # the node was not reached; it runs them at its next heartbeat


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


@dataclass(frozen=True)
class HookReport:
    """What the node said about its hooks for one change."""

    status: str  # HOOKS_OK | HOOKS_FAILED | HOOKS_NONE | HOOKS_PENDING
    results: tuple[str, ...] = ()

    @property
    def failed(self) -> tuple[str, ...]:
        """The lines of hooks that did not succeed ("name: exit 3: ...", "name: refused ...")."""
        return tuple(line for line in self.results if not hook_succeeded(line))


def hook_succeeded(line: str) -> bool:
    """Whether one of the executor's hook lines ("name: ok" / "name: <failure>") is a success."""
    return line.rpartition(": ")[2] == "ok"


def hook_report(told: bool, results: Sequence[str]) -> HookReport:
    if not told:
        return HookReport(HOOKS_PENDING)
    lines = tuple(results)
    if not lines:
        return HookReport(HOOKS_NONE)
    failed = any(not hook_succeeded(line) for line in lines)
    return HookReport(HOOKS_FAILED if failed else HOOKS_OK, lines)


async def record_synced_hooks(
    events: EventLog,
    node: str,
    synced: controller_pb2.SyncedQuarantine,
    store: Store,
) -> bool:
    """Record what a node reported about a change it applied from a heartbeat
    (see the module doc); whether the report's event was stored.

    Any replica may: the events go to the store, and the change's history entry
    (the one of that action that began at ``since``, to the second) gets the
    outcome through a compare-and-set on its details, which fills a "pending"
    entry once and is not fenced (the outcome is the node's fact, no decision)."""
    action = "quarantine" if synced.quarantined else "unquarantine"
    report = hook_report(True, synced.hook_results)
    since = synced.since.seconds if synced.HasField("since") else None
    change = await _change_entry(store, node, action, since)
    attributes = {"hooks": report.status, "reason": synced.reason}
    if report.results:
        attributes["hook_results"] = "; ".join(report.results)
    cause_ids: tuple[str, ...] = ()
    if change is not None:
        attributes["actor"] = change.parsed.actor
        attributes["source"] = SOURCE_NAMES.get(change.parsed.source, "unknown")
        attributes["since"] = change.parsed.at.ToJsonString()
        cause_ids = change.details.event_ids[:1]  # the change's own event
    at = synced.applied_at.ToNanoseconds() / 1e9 if synced.HasField("applied_at") else None
    event_id = await events.emit(
        f"{action}.synced",
        node,
        f"{node} applied its {action} from the controller's record; hooks: {report.status}",
        cause_ids=cause_ids,
        attributes=attributes,
        at=at,
    )
    if not event_id:
        return False
    event_ids = [event_id]
    if report.status == HOOKS_FAILED:
        failed = "; ".join(report.failed)
        log.warning("%s hooks failed on %s (applied from a heartbeat): %s", action, node, failed)
        failed_id = await events.emit(
            "hook.failed",
            node,
            f"{action} hooks failed on {node}: {failed}",
            cause_ids=[event_id],
            attributes={"action": action, "failed": failed},
            at=at,
        )
        if failed_id:
            event_ids.append(failed_id)
    if change is not None:
        await _fill_pending(store, node, action, since, change, report, event_ids)
    return True


@dataclass(frozen=True)
class _ChangeEntry:
    entry: HistoryEntry
    parsed: common_pb2.QuarantineHistoryEntry
    details: HistoryDetails


async def _change_entry(
    store: Store, node: str, action: str, since: int | None
) -> _ChangeEntry | None:
    """The history entry of the change a node reports on: the latest of that
    action that began at ``since`` (to the second; without it, the latest of that
    action). None when there is none or the store cannot say (logged)."""
    try:
        history = await store.get_history(node)
    except StoreError as exc:
        log.warning("could not read %s's history for its synced hook results: %s", node, exc)
        return None
    for entry in reversed(history):
        parsed = common_pb2.QuarantineHistoryEntry()
        parsed.ParseFromString(entry.payload)
        if parsed.action == action and (since is None or parsed.at.seconds == since):
            return _ChangeEntry(entry, parsed, HistoryDetails.decode(entry.details))
    return None


async def _fill_pending(
    store: Store,
    node: str,
    action: str,
    since: int | None,
    change: _ChangeEntry,
    report: HookReport,
    event_ids: Sequence[str],
) -> None:
    """The outcome into the change's history entry while its hooks are not known
    yet ("pending", or no details at all: the report beat the leader's own
    "pending" note, which then keeps it); re-read when the details changed."""
    try:
        for _ in range(CONFLICT_ATTEMPTS):
            details = change.details
            if details.hooks not in ("", HOOKS_PENDING):
                return  # the node was told directly, or this was recorded already
            updated = HistoryDetails(
                hooks=report.status,
                hook_results=report.results,
                event_ids=(*details.event_ids, *event_ids),
                previous_source=details.previous_source,
            )
            sequence = change.entry.sequence
            if await store.fill_history_details(sequence, change.entry.details, updated.encode()):
                return
            found = await _change_entry(store, node, action, since)
            if found is None or found.entry.sequence != sequence:
                return
            change = found
        log.warning("%s's history entry kept changing; its synced hook results are in events", node)
    except StoreError as exc:
        log.warning("could not record %s's synced hook results in its history: %s", node, exc)


@dataclass(frozen=True)
class HistoryDetails:
    """A history entry's details (the store's opaque ``details``), JSON-encoded.

    ``event_ids`` are the cluster events of the change (the quarantine or
    unquarantine event, then ``hook.failed`` if any); ``previous_source`` is set
    when a manual quarantine took over an automatic one.
    """

    hooks: str = ""
    hook_results: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()
    previous_source: str = ""

    def encode(self) -> bytes:
        doc: dict[str, object] = {
            "hooks": self.hooks,
            "hook_results": list(self.hook_results),
            "event_ids": list(self.event_ids),
        }
        if self.previous_source:
            doc["previous_source"] = self.previous_source
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> HistoryDetails:
        """The details of an entry; empty for none or for details this version cannot read."""
        if not raw:
            return cls()
        try:
            doc = json.loads(raw)
            return cls(
                hooks=str(doc.get("hooks", "")),
                hook_results=tuple(str(x) for x in doc.get("hook_results", [])),
                event_ids=tuple(str(x) for x in doc.get("event_ids", [])),
                previous_source=str(doc.get("previous_source", "")),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()


@dataclass
class _Change:
    """One decided write: what to store and how to describe it."""

    record: common_pb2.QuarantineRecord
    history: common_pb2.QuarantineHistoryEntry
    previous_source: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


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

    async def _stored(self, node: str) -> tuple[bytes | None, common_pb2.QuarantineRecord | None]:
        """The node's record as stored (the bytes a conditional write expects) and parsed."""
        stored = (await self.store.get_quarantines()).get(node)
        if stored is None:
            return None, None
        record = common_pb2.QuarantineRecord()
        record.ParseFromString(stored)
        return stored, record

    async def current(self, node: str) -> common_pb2.QuarantineRecord | None:
        return (await self._stored(node))[1]

    async def _tell_node(
        self, address: str, quarantined: bool, record: common_pb2.QuarantineRecord, fence: int
    ) -> tuple[bool, list[str]]:
        """(told, lines): the node's hook lines, or one line saying why it was not told."""
        request = executor_pb2.ApplyQuarantineRequest(
            quarantined=quarantined,
            reason=record.reason,
            actor=record.actor,
            source=record.source,
            fence_revision=fence,
            since=record.since if record.HasField("since") else None,
        )
        try:
            result = await self.executors.stub(address).ApplyQuarantine(
                request, timeout=APPLY_TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            log.warning("could not tell %s about quarantine: %s", record.node, code)
            return False, [
                f"node not told now ({code}); it applies the change at its next heartbeat"
            ]
        return True, list(result.hook_results)

    async def _record_outcome(
        self,
        node: str,
        action: str,
        message: str,
        change: _Change,
        sequence: int,
        report: HookReport,
        term: LeaderTerm,
        cause_ids: Sequence[str],
    ) -> None:
        """The change's event (with its hook outcome), hook.failed, and the history details."""
        attributes = dict(change.attributes)
        attributes["hooks"] = report.status
        if report.results:
            attributes["hook_results"] = "; ".join(report.results)
        event_id = await self.events.emit(
            action,
            node,
            message,
            cause_ids=list(cause_ids),
            attributes=attributes,
        )
        event_ids = [event_id] if event_id else []
        if report.status == HOOKS_FAILED:
            failed = "; ".join(report.failed)
            log.warning("%s hooks failed on %s: %s", action, node, failed)
            failed_id = await self.events.emit(
                "hook.failed",
                node,
                f"{action} hooks failed on {node}: {failed}",
                cause_ids=event_ids,
                attributes={"action": action, "failed": failed},
            )
            if failed_id:
                event_ids.append(failed_id)
        details = HistoryDetails(
            hooks=report.status,
            hook_results=report.results,
            event_ids=tuple(event_ids),
            previous_source=change.previous_source,
        )
        try:
            # The node may apply it from a heartbeat and report at any moment, to
            # any replica (record_synced_hooks), also while our call was on its way
            # (it then finds the change applied and runs no hooks: "none"). The
            # note is conditional on what was read; over "pending" or "none" it
            # keeps a reported outcome, adding our ids.
            for _ in range(CONFLICT_ATTEMPTS):
                raw = await self._details_of(node, sequence)
                if raw is None:
                    return
                known = HistoryDetails.decode(raw)
                noted = details
                if known.hooks not in ("", HOOKS_PENDING) and report.status in (
                    HOOKS_PENDING,
                    HOOKS_NONE,
                ):
                    noted = HistoryDetails(
                        hooks=known.hooks,
                        hook_results=known.hook_results,
                        event_ids=(*event_ids, *known.event_ids),
                        previous_source=change.previous_source,
                    )
                if await self.store.annotate_history(sequence, noted.encode(), term, expected=raw):
                    return
            log.warning(
                "%s's history entry %d kept changing; its details are in events", node, sequence
            )
        except StoreError as exc:
            # The change itself is stored; only its after-the-fact details are missing.
            log.warning("could not record hook results in %s's history: %s", node, exc)

    async def _details_of(self, node: str, sequence: int) -> bytes | None:
        for entry in await self.store.get_history(node):
            if entry.sequence == sequence:
                return entry.details
        return None

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
        for _ in range(CONFLICT_ATTEMPTS):
            stored, existing = await self._stored(node)
            if existing is not None and not (
                source == common_pb2.QUARANTINE_SOURCE_MANUAL
                and existing.source == common_pb2.QUARANTINE_SOURCE_AUTO
            ):
                since = existing.since.ToJsonString()
                return controller_pb2.QuarantineResponse(
                    record=existing,
                    changed=False,
                    message=f"{node} is already quarantined (since {since})",
                )
            change = self._quarantine_change(
                node, reason, actor, source, causes, event_ids, existing
            )
            if dry_run:
                verb = "take over the automatic quarantine of" if existing else "quarantine"
                return controller_pb2.QuarantineResponse(
                    record=change.record, changed=False, message=f"dry run: would {verb} {node}"
                )
            try:
                sequence = await self.store.put_quarantine(
                    node,
                    change.record.SerializeToString(),
                    change.history.SerializeToString(),
                    term,
                    expected=stored,
                )
            except QuarantineConflict:
                continue  # another decision landed in between: decide again on what it wrote
            break
        else:
            raise QuarantineConflict(f"quarantine of {node} kept changing concurrently; retry")
        told, lines = await self._tell_node(address, True, change.record, term.record.revision)
        if change.previous_source:
            message = (
                f"{node}: automatic quarantine taken over by {actor} (now manual, "
                f"automation will not lift it): {reason}"
            )
        else:
            message = (
                f"{node} quarantined by {actor} ({SOURCE_NAMES.get(source, 'manual')}): {reason}"
            )
        await self._record_outcome(
            node,
            "quarantine",
            message,
            change,
            sequence,
            hook_report(told, lines),
            term,
            change.record.event_ids,
        )
        return controller_pb2.QuarantineResponse(
            record=change.record,
            changed=True,
            hook_results=lines,
            message=(
                f"{node} is now quarantined manually (was automatic)"
                if change.previous_source
                else f"{node} quarantined"
            ),
        )

    @staticmethod
    def _quarantine_change(
        node: str,
        reason: str,
        actor: str,
        source: common_pb2.QuarantineSource,
        causes: Sequence[common_pb2.CheckResult],
        event_ids: Sequence[str],
        existing: common_pb2.QuarantineRecord | None,
    ) -> _Change:
        source_name = SOURCE_NAMES.get(source, "manual")
        if existing is None:
            record = common_pb2.QuarantineRecord(
                node=node,
                reason=reason,
                actor=actor,
                source=source,
                since=_now_ts(),
                causes=list(causes),
                event_ids=list(event_ids),
            )
            previous = ""
        else:
            # Taking over an automatic quarantine: the node has been out since then,
            # for those causes; who answers for it now, and why, is the operator.
            record = common_pb2.QuarantineRecord()
            record.CopyFrom(existing)
            record.reason, record.actor, record.source = reason, actor, source
            previous = SOURCE_NAMES.get(existing.source, "auto")
        history = common_pb2.QuarantineHistoryEntry(
            node=node,
            action="quarantine",
            reason=reason,
            actor=actor,
            source=source,
            at=_now_ts() if existing is not None else record.since,
            event_ids=list(record.event_ids),
        )
        attributes = {"actor": actor, "source": source_name, "reason": reason}
        if previous:
            attributes["previous_source"] = previous
        return _Change(record, history, previous, attributes)

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
        """Lift a quarantine. With ``source`` auto (the automation's release) only an
        automatic record is lifted: a manual one is left alone, ``changed`` false."""
        term = await self._fence()
        address = await self._address(node)
        verified = force
        for _ in range(CONFLICT_ATTEMPTS):
            stored, existing = await self._stored(node)
            if existing is None:
                return controller_pb2.QuarantineResponse(
                    changed=False, message=f"{node} is not quarantined"
                )
            if (
                source == common_pb2.QUARANTINE_SOURCE_AUTO
                and existing.source != common_pb2.QUARANTINE_SOURCE_AUTO
            ):
                return controller_pb2.QuarantineResponse(
                    record=existing,
                    changed=False,
                    message=f"{node} is quarantined manually; automation does not lift it",
                )
            if not verified:
                await self._require_clean(node)
                verified = True
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
            try:
                sequence = await self.store.delete_quarantine(
                    node, history.SerializeToString(), term, expected=stored
                )
            except QuarantineConflict:
                continue
            break
        else:
            raise QuarantineConflict(f"quarantine of {node} kept changing concurrently; retry")
        released = common_pb2.QuarantineRecord(node=node, reason=reason, actor=actor, source=source)
        told, lines = await self._tell_node(address, False, released, term.record.revision)
        change = _Change(
            released,
            history,
            attributes={
                "actor": actor,
                "source": SOURCE_NAMES.get(source, "manual"),
                "reason": reason,
                "forced": str(force).lower(),
            },
        )
        await self._record_outcome(
            node,
            "unquarantine",
            f"{node} released by {actor}{' (forced)' if force else ''}: {reason}",
            change,
            sequence,
            hook_report(told, lines),
            term,
            event_ids,
        )
        return controller_pb2.QuarantineResponse(
            record=existing, changed=True, hook_results=lines, message=f"{node} unquarantined"
        )

    async def _require_clean(self, node: str) -> None:
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
