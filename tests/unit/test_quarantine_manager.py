"""The quarantine manager over an in-memory store and fake executors: conditional
writes (an automatic decision never overwrites an operator's, an operator may take
over an automatic quarantine) and hook results recorded in events and history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import grpc

from novaops.controller.automation import verify_clean_on
from novaops.controller.clock import FakeClock
from novaops.controller.context import ControllerContext
from novaops.controller.events import EventLog
from novaops.controller.executors import ExecutorPool
from novaops.controller.operations import QuarantineServicer
from novaops.controller.quarantine import HistoryDetails, QuarantineManager, record_synced_hooks
from novaops.controller.store.base import (
    ANY_RECORD,
    ExpectedRecord,
    LeaderTerm,
    NodeRegistration,
)
from novaops.controller.store.memory import MemoryStore
from novaops.v1 import common_pb2, controller_pb2, executor_pb2

from .controller_fakes import FakeContext, FakeExecutors, FakeRpcError, FakeStub

AUTO = common_pb2.QUARANTINE_SOURCE_AUTO
MANUAL = common_pb2.QUARANTINE_SOURCE_MANUAL


class Cluster:
    """The leader's quarantine manager over a store with registered nodes."""

    def __init__(self, store: MemoryStore, executors: FakeExecutors) -> None:
        self.store = store
        self.executors = executors
        self.term: LeaderTerm | None = None
        self.events = EventLog(store)
        pool = cast(ExecutorPool, executors)

        async def verify(node: str) -> tuple[bool, list[common_pb2.CheckResult]]:
            record = await store.get_node(node)
            return await verify_clean_on(pool, record.address if record else None)

        self.quarantines = QuarantineManager(store, lambda: self.term, pool, self.events, verify)

    async def record(self, node: str) -> common_pb2.QuarantineRecord | None:
        return await self.quarantines.current(node)

    async def events_of(self, kind: str) -> list[controller_pb2.ClusterEvent]:
        return [e for e in await self.events.read() if e.kind == kind]


async def make_cluster(nodes: int = 3, store: MemoryStore | None = None) -> Cluster:
    store = store if store is not None else MemoryStore(FakeClock())
    names = [f"n{i}" for i in range(1, nodes + 1)]
    for name in names:
        await store.register_node(NodeRegistration(name, f"addr-{name}"))
    cluster = Cluster(store, FakeExecutors(names))
    cluster.term = await store.campaign("ctl-0", "ctl-0:1", 3600)
    assert cluster.term is not None
    return cluster


async def test_failed_hooks_are_recorded_in_the_event_and_the_history() -> None:
    cluster = await make_cluster()
    n1 = cluster.executors.node("n1")
    n1.hook_results = ["10-disable-scheduler: exit 3: scheduler unreachable", "20-notify: ok"]
    response = await cluster.quarantines.quarantine(
        "n1", "automatic: disk", "automation", source=AUTO, event_ids=["000000000007"]
    )
    assert list(response.hook_results) == n1.hook_results
    (quarantine,) = await cluster.events_of("quarantine")
    assert quarantine.attributes["hooks"] == "failed"
    assert quarantine.attributes["hook_results"] == "; ".join(n1.hook_results)
    assert list(quarantine.cause_ids) == ["000000000007"]
    (failed,) = await cluster.events_of("hook.failed")
    assert list(failed.cause_ids) == [quarantine.id]
    assert "10-disable-scheduler: exit 3: scheduler unreachable" in failed.message
    assert "20-notify" not in failed.message
    (entry,) = await cluster.store.get_history("n1")
    details = HistoryDetails.decode(entry.details)
    assert (details.hooks, details.hook_results) == ("failed", tuple(n1.hook_results))
    assert details.event_ids == (quarantine.id, failed.id)
    # The release's hooks are recorded the same way.
    n1.hook_results = ["10-enable-scheduler: ok"]
    await cluster.quarantines.unquarantine("n1", "fixed", "operator:bob")
    (release,) = await cluster.events_of("unquarantine")
    assert release.attributes["hooks"] == "ok"
    assert len(await cluster.events_of("hook.failed")) == 1
    assert HistoryDetails.decode((await cluster.store.get_history("n1"))[1].details).hooks == "ok"


async def test_history_rpc_names_the_change_events() -> None:
    cluster = await make_cluster(2)
    cluster.executors.node("n1").hook_results = ["10-x: ok"]
    await cluster.quarantines.quarantine("n1", "disk", "operator:bob")
    servicer = QuarantineServicer(
        cast(ControllerContext, SimpleNamespace(insecure=True, store=cluster.store))
    )
    response = await servicer.GetQuarantineHistory(
        controller_pb2.GetQuarantineHistoryRequest(node="n1"), cast(Any, FakeContext(None))
    )
    (quarantine,) = await cluster.events_of("quarantine")
    assert quarantine.attributes["hooks"] == "ok"
    assert list(response.entries[0].event_ids) == [quarantine.id]
    assert await cluster.events_of("hook.failed") == []


async def _unreachable(*args: object, **kwargs: object) -> None:
    raise FakeRpcError(grpc.StatusCode.UNAVAILABLE)


def cut_off_n1(cluster: Cluster, apply: Callable[..., Awaitable[object]] = _unreachable) -> None:
    """n1's ApplyQuarantine runs apply (by default: fails UNAVAILABLE)."""
    stub = FakeStub(cluster.executors.node("n1"))
    stub.ApplyQuarantine = apply  # type: ignore[assignment, method-assign]
    cluster.executors.stub = lambda address: stub  # type: ignore[method-assign]


async def test_node_not_reached_leaves_hooks_pending() -> None:
    cluster = await make_cluster(2)
    cut_off_n1(cluster)
    response = await cluster.quarantines.quarantine("n1", "disk", "operator:bob")
    assert "next heartbeat" in response.hook_results[0]
    (quarantine,) = await cluster.events_of("quarantine")
    assert quarantine.attributes["hooks"] == "pending"
    assert HistoryDetails.decode((await cluster.store.get_history("n1"))[0].details).hooks == (
        "pending"
    )


async def report_synced_quarantine(cluster: Cluster, hook_line: str) -> bool:
    """n1 reports, as from a heartbeat, that it applied its one quarantine ("disk")
    and its hook printed hook_line; whether the report was recorded."""
    (entry,) = await cluster.store.get_history("n1")
    parsed = common_pb2.QuarantineHistoryEntry()
    parsed.ParseFromString(entry.payload)
    synced = controller_pb2.SyncedQuarantine(quarantined=True, reason="disk")
    synced.hook_results.append(hook_line)
    synced.since.FromSeconds(parsed.at.seconds)
    return await record_synced_hooks(cluster.events, "n1", synced, cluster.store)


async def test_a_heartbeat_report_that_beats_the_pending_note_is_kept() -> None:
    """The node cannot be reached inbound but heartbeats: it applies the change and
    reports its hooks while the leader still waits on ApplyQuarantine. The entry
    gets the node's outcome, and the leader's late "pending" does not undo it."""
    cluster = await make_cluster(2)
    reported: list[bool] = []

    async def unreachable_after_the_report(*args: object, **kwargs: object) -> None:
        assert cluster.term is not None
        reported.append(await report_synced_quarantine(cluster, "10-drain: exit 3: drain API down"))
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE)

    cut_off_n1(cluster, unreachable_after_the_report)
    await cluster.quarantines.quarantine("n1", "disk", "operator:bob")
    assert reported == [True]
    (entry,) = await cluster.store.get_history("n1")
    details = HistoryDetails.decode(entry.details)
    assert details.hooks == "failed"
    assert details.hook_results == ("10-drain: exit 3: drain API down",)
    (quarantine,) = await cluster.events_of("quarantine")
    (synced_event,) = await cluster.events_of("quarantine.synced")
    assert quarantine.id in details.event_ids and synced_event.id in details.event_ids


async def test_a_report_that_beats_a_direct_call_finding_nothing_to_do_is_kept() -> None:
    """The node applies the change from a heartbeat and reports its hooks while the
    leader's ApplyQuarantine is on its way; the call then finds the change applied
    and runs no hooks ("none"). The entry keeps the node's reported outcome."""
    cluster = await make_cluster(2)

    async def applied_already(
        *args: object, **kwargs: object
    ) -> executor_pb2.ApplyQuarantineResult:
        assert await report_synced_quarantine(cluster, "10-drain: ok")
        return executor_pb2.ApplyQuarantineResult(node="n1", quarantined=True)

    cut_off_n1(cluster, applied_already)
    await cluster.quarantines.quarantine("n1", "disk", "operator:bob")
    details = HistoryDetails.decode((await cluster.store.get_history("n1"))[0].details)
    assert (details.hooks, details.hook_results) == ("ok", ("10-drain: ok",))
    (quarantine,) = await cluster.events_of("quarantine")
    (synced_event,) = await cluster.events_of("quarantine.synced")
    assert quarantine.attributes["hooks"] == "none"  # what the call itself saw
    assert quarantine.id in details.event_ids and synced_event.id in details.event_ids


async def test_a_late_report_annotates_the_change_it_belongs_to() -> None:
    """Q1 (not reached), U1, Q2 (not reached): a report of Q1 still being retried
    lands in Q1's entry, not in the latest quarantine's."""
    cluster = await make_cluster(2)
    cut_off_n1(cluster)
    await cluster.quarantines.quarantine("n1", "first", "operator:bob")
    await cluster.quarantines.unquarantine("n1", "done", "operator:bob", force=True)
    first = (await cluster.store.get_history("n1"))[0]
    first_at = common_pb2.QuarantineHistoryEntry()
    first_at.ParseFromString(first.payload)
    # The second quarantine starts in a later second than the first (wall time).
    await asyncio.sleep(max(0.0, first_at.at.seconds + 1 - time.time()))
    await cluster.quarantines.quarantine("n1", "second", "operator:bob")
    synced = controller_pb2.SyncedQuarantine(quarantined=True, hook_results=["10-drain: ok"])
    synced.since.FromSeconds(first_at.at.seconds)
    assert cluster.term is not None
    assert await record_synced_hooks(cluster.events, "n1", synced, cluster.store)
    hooks = [HistoryDetails.decode(e.details).hooks for e in await cluster.store.get_history("n1")]
    assert hooks == ["ok", "pending", "pending"]


async def test_a_report_to_a_follower_fills_the_history_and_links_the_change() -> None:
    """The node heartbeats a follower: that replica holds no term, yet the
    change's entry gets the outcome (a compare-and-set, not a fenced write), and
    the synced event points at the change's own event and names who made it."""
    cluster = await make_cluster(2)
    cut_off_n1(cluster)
    await cluster.quarantines.quarantine("n1", "disk", "operator:bob")
    (entry,) = await cluster.store.get_history("n1")
    parsed = common_pb2.QuarantineHistoryEntry()
    parsed.ParseFromString(entry.payload)
    assert cluster.term is not None
    await cluster.store.resign(cluster.term)  # no replica leads now
    synced = controller_pb2.SyncedQuarantine(quarantined=True, reason="disk")
    synced.hook_results.extend(["10-drain: ok", "20-notify: exit 1: smtp down"])
    synced.since.FromSeconds(parsed.at.seconds)
    follower_events = EventLog(cluster.store)
    assert await record_synced_hooks(follower_events, "n1", synced, cluster.store)
    (quarantine,) = await cluster.events_of("quarantine")
    (report,) = await cluster.events_of("quarantine.synced")
    assert list(report.cause_ids) == [quarantine.id]
    assert report.attributes["actor"] == "operator:bob"
    assert report.attributes["source"] == "manual"
    assert report.attributes["since"] == parsed.at.ToJsonString()
    (failed,) = await cluster.events_of("hook.failed")
    details = HistoryDetails.decode((await cluster.store.get_history("n1"))[0].details)
    assert details.hooks == "failed"
    assert details.hook_results == ("10-drain: ok", "20-notify: exit 1: smtp down")
    assert details.event_ids == (quarantine.id, report.id, failed.id)
    # Delivered again (the answer was lost): events repeat, the entry does not change.
    assert await record_synced_hooks(follower_events, "n1", synced, cluster.store)
    assert HistoryDetails.decode((await cluster.store.get_history("n1"))[0].details) == details


class ReportBetweenReadAndNote(MemoryStore):
    """A follower's fill lands between the leader's read of the details and its note."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.report: bytes | None = None

    async def annotate_history(
        self, sequence: int, details: bytes, fence: LeaderTerm, *, expected: bytes | None = None
    ) -> bool:
        if self.report is not None and expected is not None:
            report, self.report = self.report, None
            assert await self.fill_history_details(sequence, expected, report)
        return await super().annotate_history(sequence, details, fence, expected=expected)


async def test_the_pending_note_never_overwrites_a_report_that_lands_meanwhile() -> None:
    store = ReportBetweenReadAndNote(FakeClock())
    cluster = await make_cluster(2, store)
    cut_off_n1(cluster)
    store.report = HistoryDetails(hooks="ok", hook_results=("10-drain: ok",)).encode()
    await cluster.quarantines.quarantine("n1", "disk", "operator:bob")
    details = HistoryDetails.decode((await store.get_history("n1"))[0].details)
    assert details.hooks == "ok"
    assert details.hook_results == ("10-drain: ok",)
    (quarantine,) = await cluster.events_of("quarantine")
    assert quarantine.id in details.event_ids  # the leader's ids were added to it


class RacingStore(MemoryStore):
    """Lands an operator's write just before the next conditional quarantine write."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.interleave: Callable[[], Awaitable[None]] | None = None

    async def _race(self) -> None:
        if self.interleave is not None:
            interleave, self.interleave = self.interleave, None
            await interleave()

    async def put_quarantine(
        self,
        node: str,
        record: bytes,
        history: bytes,
        fence: LeaderTerm,
        *,
        expected: ExpectedRecord = ANY_RECORD,
    ) -> int:
        await self._race()
        return await super().put_quarantine(node, record, history, fence, expected=expected)

    async def delete_quarantine(
        self, node: str, history: bytes, fence: LeaderTerm, *, expected: ExpectedRecord = ANY_RECORD
    ) -> int:
        await self._race()
        return await super().delete_quarantine(node, history, fence, expected=expected)


async def test_automatic_quarantine_never_overwrites_a_concurrent_manual_one() -> None:
    store = RacingStore(FakeClock())
    cluster = await make_cluster(3, store=store)

    async def operator() -> None:
        await cluster.quarantines.quarantine("n1", "DIMM errors", "operator:bob")

    store.interleave = operator
    response = await cluster.quarantines.quarantine(
        "n1", "automatic: 4 failed recoveries", "automation", source=AUTO
    )
    assert not response.changed
    record = await cluster.record("n1")
    assert record is not None
    assert (record.source, record.actor, record.reason) == (MANUAL, "operator:bob", "DIMM errors")
    assert [e.kind for e in await cluster.events.read()] == ["quarantine"]
    # The automation's release leaves the manual record alone.
    released = await cluster.quarantines.unquarantine(
        "n1", "automatic: clean", "automation", force=True, source=AUTO
    )
    assert not released.changed and "manually" in released.message
    assert await cluster.record("n1") is not None


async def test_automatic_release_loses_to_a_concurrent_takeover() -> None:
    store = RacingStore(FakeClock())
    cluster = await make_cluster(3, store=store)
    await cluster.quarantines.quarantine("n1", "automatic: x", "automation", source=AUTO)

    async def operator() -> None:
        await cluster.quarantines.quarantine("n1", "keep it out", "operator:bob")

    store.interleave = operator
    released = await cluster.quarantines.unquarantine(
        "n1", "automatic: clean", "automation", force=True, source=AUTO
    )
    assert not released.changed
    record = await cluster.record("n1")
    assert record is not None and record.source == MANUAL


async def test_manual_quarantine_takes_over_an_automatic_one() -> None:
    cluster = await make_cluster(3)
    first = await cluster.quarantines.quarantine(
        "n1", "automatic: disk", "automation", source=AUTO, event_ids=["000000000001"]
    )
    taken = await cluster.quarantines.quarantine("n1", "waiting for a new disk", "operator:bob")
    assert taken.changed and "manually" in taken.message
    record = await cluster.record("n1")
    assert record is not None
    assert (record.source, record.actor, record.reason) == (
        MANUAL,
        "operator:bob",
        "waiting for a new disk",
    )
    assert record.since == first.record.since
    assert list(record.event_ids) == ["000000000001"]
    history = await cluster.store.get_history("n1")
    assert len(history) == 2
    entry = common_pb2.QuarantineHistoryEntry()
    entry.ParseFromString(history[1].payload)
    assert (entry.action, entry.source, entry.actor) == ("quarantine", MANUAL, "operator:bob")
    assert HistoryDetails.decode(history[1].details).previous_source == "auto"
    # A repeat changes nothing; automation's release no longer applies.
    again = await cluster.quarantines.quarantine("n1", "again", "operator:bob")
    assert not again.changed
    released = await cluster.quarantines.unquarantine(
        "n1", "automatic: clean", "automation", force=True, source=AUTO
    )
    assert not released.changed
