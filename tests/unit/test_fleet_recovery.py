"""Recovery through the controller is leader-only, fenced and audited; heartbeats
carry the store's quarantine decision. Real servicers over a MemoryStore, with a
fake gRPC context and fake executor stubs (no servers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest

from novaops.controller.clock import FakeClock
from novaops.controller.context import ControllerContext
from novaops.controller.events import EventLog
from novaops.controller.fleet import FleetServicer, recovery_outcome
from novaops.controller.quarantine import HistoryDetails
from novaops.controller.registry import HealthReports, HeartbeatPacing
from novaops.controller.services import ClusterServicer, RegistryServicer
from novaops.controller.store.base import LeaderTerm, NodeRegistration
from novaops.controller.store.memory import MemoryStore
from novaops.v1 import common_pb2, controller_pb2, executor_pb2


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class FakeContext:
    """The parts of grpc.aio.ServicerContext the servicers use (insecure: no peer)."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


class FakeExecutor:
    """An ExecutorService stub that records Recover requests and answers one step."""

    def __init__(self, outcome: str = "done", fatal: bool = False) -> None:
        self.requests: list[executor_pb2.RecoverRequest] = []
        self.outcome = outcome
        self.fatal = fatal

    def Recover(
        self, request: executor_pb2.RecoverRequest, timeout: float
    ) -> AsyncIterator[executor_pb2.RecoveryStep]:
        self.requests.append(request)

        async def steps() -> AsyncIterator[executor_pb2.RecoveryStep]:
            yield executor_pb2.RecoveryStep(
                node="n1",
                action=request.action,
                description="remove stale lock /run/lock/x.lock",
                outcome="planned" if request.dry_run else self.outcome,
                fatal=self.fatal,
            )

        return steps()


class Pool:
    def __init__(self, executor: FakeExecutor) -> None:
        self.executor = executor

    def stub(self, address: str) -> FakeExecutor:
        return self.executor


async def make_store(clock: FakeClock) -> MemoryStore:
    store = MemoryStore(clock)
    await store.register_node(NodeRegistration(name="n1", address="127.0.0.1:1"))
    await store.heartbeat("n1", 30.0, common_pb2.HEALTH_STATUS_HEALTHY)
    return store


def context_for(
    store: MemoryStore, term: LeaderTerm | None, executor: FakeExecutor, name: str = "ctl-1"
) -> ControllerContext:
    ctx = SimpleNamespace(
        insecure=True,
        store=store,
        elector=SimpleNamespace(is_leader=lambda: term is not None, term=term),
        config=SimpleNamespace(
            name=name,
            per_node_ms=5000,
            overall_ms=10000,
            missed_heartbeats_limit=3,
            automation=SimpleNamespace(enabled=True),
        ),
        executors=Pool(executor),
        events=EventLog(store),
        pacing=HeartbeatPacing(10_000, 3, 0.0),
    )
    return cast(ControllerContext, ctx)


def recover_request(dry_run: bool) -> controller_pb2.FleetRecoverRequest:
    return controller_pb2.FleetRecoverRequest(
        selector=common_pb2.NodeSelector(nodes=["n1"]),
        recover=executor_pb2.RecoverRequest(
            action="remove-stale-locks", dry_run=dry_run, reason="  lock left by a crash  "
        ),
    )


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


async def test_a_follower_refuses_recovery_naming_the_leader() -> None:
    clock = FakeClock()
    store = await make_store(clock)
    await store.campaign("ctl-0", "10.0.0.1:7400", 10)  # another replica leads
    executor = FakeExecutor()
    fleet = FleetServicer(context_for(store, None, executor))
    context = cast(Any, FakeContext())

    with pytest.raises(Aborted) as refused:
        await collect(fleet.Recover(recover_request(dry_run=False), context))
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    # The client library fails over on "not the leader"; the message names where to go.
    assert "ctl-1 is not the leader (the leader is ctl-0 at 10.0.0.1:7400)" in (
        refused.value.details
    )
    health = controller_pb2.FleetHealthRequest(recover=True)
    with pytest.raises(Aborted) as also:
        await collect(fleet.GetHealth(health, context))
    assert also.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert executor.requests == []  # nothing reached the node

    # A dry run changes nothing, so any replica plans it (unfenced).
    planned = await collect(fleet.Recover(recover_request(dry_run=True), context))
    assert [r.step.outcome for r in planned] == ["planned"]
    assert executor.requests[0].dry_run and executor.requests[0].fence_revision == 0
    assert await EventLog(store).read() == []  # dry runs are not audited as recoveries


async def test_the_leader_fences_and_audits_recovery() -> None:
    clock = FakeClock()
    store = await make_store(clock)
    term = await store.campaign("ctl-0", "10.0.0.1:7400", 10)
    assert term is not None
    executor = FakeExecutor(outcome="failed", fatal=False)
    fleet = FleetServicer(context_for(store, term, executor, name="ctl-0"))

    results = await collect(fleet.Recover(recover_request(dry_run=False), cast(Any, FakeContext())))
    assert [r.step.outcome for r in results] == ["failed"]
    sent = executor.requests[0]
    assert sent.fence_revision == term.record.revision > 0
    assert (sent.actor, sent.reason) == ("admin:anonymous", "lock left by a crash")
    [event] = await EventLog(store).read()
    assert event.kind == "recovery" and event.node == "n1"
    assert event.attributes["actor"] == "admin:anonymous"
    assert event.attributes["reason"] == "lock left by a crash"
    assert event.attributes["outcome"] == "partial"
    assert event.attributes["fence"] == str(term.record.revision)
    assert "by admin:anonymous (lock left by a crash): partial" in event.message


def test_recovery_outcome_follows_the_executor_rule() -> None:
    def step(outcome: str, fatal: bool = False) -> executor_pb2.RecoveryStep:
        return executor_pb2.RecoveryStep(outcome=outcome, fatal=fatal)

    assert recovery_outcome([step("done"), step("skipped")]) == "success"
    assert recovery_outcome([step("done"), step("failed")]) == "partial"
    assert recovery_outcome([step("failed", fatal=True)]) == "failure"


async def test_heartbeats_carry_the_record_fence_and_release() -> None:
    clock = FakeClock()
    store = await make_store(clock)
    term = await store.campaign("ctl-0", "10.0.0.1:7400", 10)
    assert term is not None
    record = common_pb2.QuarantineRecord(
        node="n1",
        reason="bad DIMM",
        actor="operator:alice",
        source=common_pb2.QUARANTINE_SOURCE_MANUAL,
    )
    record.since.FromSeconds(1_700_000_000)
    record.causes.add(check_id="host.locks", summary="1 stale lock")
    history = common_pb2.QuarantineHistoryEntry(
        node="n1",
        action="quarantine",
        reason="bad DIMM",
        actor="operator:alice",
        source=common_pb2.QUARANTINE_SOURCE_MANUAL,
    )
    n1 = "n1"
    await store.put_quarantine(n1, record.SerializeToString(), history.SerializeToString(), term)
    reports = HealthReports()
    ctx = context_for(store, term, FakeExecutor())
    registry = RegistryServicer(ctx, reports)
    context = cast(Any, FakeContext())

    # The node does not know yet (it reports healthy): record and fence to act on.
    beat = controller_pb2.HeartbeatRequest(
        node=n1,
        sequence=1,
        health=common_pb2.HEALTH_STATUS_UNHEALTHY,
        failing_checks=["host.locks", "host.orphans"],
    )
    beat.checked_at.FromSeconds(1_700_000_100)
    answer = await registry.Heartbeat(beat, context)
    assert answer.known and answer.quarantined
    assert (answer.quarantine.reason, answer.quarantine.actor) == ("bad DIMM", "operator:alice")
    assert answer.fence_revision == term.record.revision
    assert not answer.quarantine.causes  # evidence stays in the store
    # The node agrees: no fence needed (it does not act), the record still comes.
    agreed = await registry.Heartbeat(
        controller_pb2.HeartbeatRequest(node=n1, health=common_pb2.HEALTH_STATUS_QUARANTINED),
        context,
    )
    assert agreed.quarantined and agreed.fence_revision == 0
    assert agreed.quarantine.reason == "bad DIMM"

    released = common_pb2.QuarantineHistoryEntry(
        node="n1",
        action="unquarantine",
        reason="DIMM replaced",
        actor="operator:bob",
        source=common_pb2.QUARANTINE_SOURCE_MANUAL,
    )
    await store.delete_quarantine(n1, released.SerializeToString(), term)
    answer = await registry.Heartbeat(
        controller_pb2.HeartbeatRequest(node=n1, health=common_pb2.HEALTH_STATUS_QUARANTINED),
        context,
    )
    assert not answer.quarantined and answer.fence_revision == term.record.revision
    assert (answer.released.reason, answer.released.actor) == ("DIMM replaced", "operator:bob")
    assert answer.released.sequence > 0

    # The failing checks of the last heartbeat show in node views of this replica.
    await registry.Heartbeat(beat, context)
    cluster = ClusterServicer(ctx, reports)
    nodes = await cluster.ListNodes(controller_pb2.ListNodesRequest(), context)
    [node] = nodes.nodes
    assert node.health == common_pb2.HEALTH_STATUS_UNHEALTHY
    assert list(node.failing_checks) == ["host.locks", "host.orphans"]
    assert node.health_checked_at.seconds == 1_700_000_100


async def test_a_heartbeat_records_the_hooks_the_node_ran_from_a_sync() -> None:
    """Any replica records what a node reports of a change it applied from a
    heartbeat: the synced event with the hook outcome, hook.failed after it."""
    store = MemoryStore(FakeClock())
    await store.register_node(NodeRegistration("n1", "addr-n1"))
    ctx = context_for(store, None, FakeExecutor())  # a follower: no term needed
    registry = RegistryServicer(ctx, HealthReports())
    context = cast(Any, FakeContext())
    beat = controller_pb2.HeartbeatRequest(node="n1", health=common_pb2.HEALTH_STATUS_QUARANTINED)
    beat.synced_quarantine.quarantined = True
    beat.synced_quarantine.reason = "bad DIMM"
    beat.synced_quarantine.hook_results.extend(
        ["10-drain: ok", "20-scheduler: exit 3: scheduler API unreachable"]
    )
    beat.synced_quarantine.applied_at.FromSeconds(1_700_000_200)
    answer = await registry.Heartbeat(beat, context)
    assert answer.known and answer.synced_quarantine_recorded
    events = await ctx.events.read()
    assert [e.kind for e in events] == ["quarantine.synced", "hook.failed"]
    synced, failed = events
    assert synced.node == "n1" and synced.at.seconds == 1_700_000_200
    assert synced.attributes["hooks"] == "failed" and synced.attributes["reason"] == "bad DIMM"
    assert "10-drain: ok; 20-scheduler: exit 3" in synced.attributes["hook_results"]
    assert list(failed.cause_ids) == [synced.id]
    assert failed.message == (
        "quarantine hooks failed on n1: 20-scheduler: exit 3: scheduler API unreachable"
    )
    # Without a report nothing is recorded, and the answer says so.
    quiet = await registry.Heartbeat(
        controller_pb2.HeartbeatRequest(node="n1", health=common_pb2.HEALTH_STATUS_QUARANTINED),
        context,
    )
    assert not quiet.synced_quarantine_recorded and len(await ctx.events.read()) == 2


async def test_the_leader_also_puts_the_synced_hooks_in_the_history_entry() -> None:
    clock = FakeClock()
    store = await make_store(clock)
    term = await store.campaign("ctl-1", "ctl-1:1", 30)
    assert term is not None
    record = common_pb2.QuarantineRecord(node="n1", reason="bad DIMM", actor="operator:alice")
    entry = common_pb2.QuarantineHistoryEntry(node="n1", action="quarantine", reason="bad DIMM")
    await store.put_quarantine("n1", record.SerializeToString(), entry.SerializeToString(), term)
    (stored,) = await store.get_history("n1")
    pending = HistoryDetails(hooks="pending", event_ids=("000000000001",))
    await store.annotate_history(stored.sequence, pending.encode(), term)
    registry = RegistryServicer(context_for(store, term, FakeExecutor()), HealthReports())
    beat = controller_pb2.HeartbeatRequest(node="n1", health=common_pb2.HEALTH_STATUS_QUARANTINED)
    beat.synced_quarantine.quarantined = True
    beat.synced_quarantine.hook_results.append("10-drain: ok")
    answer = await registry.Heartbeat(beat, cast(Any, FakeContext()))
    assert answer.synced_quarantine_recorded
    (synced,) = [e for e in await EventLog(store).read() if e.kind == "quarantine.synced"]
    (annotated,) = await store.get_history("n1")
    details = HistoryDetails.decode(annotated.details)
    assert (details.hooks, details.hook_results) == ("ok", ("10-drain: ok",))
    assert details.event_ids == ("000000000001", synced.id)
    # A second report of the same change (its answer was lost) leaves the entry alone.
    await registry.Heartbeat(beat, cast(Any, FakeContext()))
    (again,) = await store.get_history("n1")
    assert HistoryDetails.decode(again.details) == details


async def test_a_replica_drops_its_report_once_the_node_heartbeats_elsewhere() -> None:
    """Two replicas on one store: the node's failing checks reported to A stop
    showing in A's node views once the node heartbeats to B instead (a failover, or
    the node removed and a node of that name registered again there)."""
    clock = FakeClock()
    store = MemoryStore(clock)
    await store.register_node(NodeRegistration("n1", "addr-n1"))
    ctx = context_for(store, None, FakeExecutor())
    context = cast(Any, FakeContext())
    reports_a, reports_b = HealthReports(clock, skew=1.0), HealthReports(clock, skew=1.0)
    replica_a, replica_b = RegistryServicer(ctx, reports_a), RegistryServicer(ctx, reports_b)
    view_a = ClusterServicer(ctx, reports_a)
    failing = controller_pb2.HeartbeatRequest(
        node="n1", health=common_pb2.HEALTH_STATUS_UNHEALTHY, failing_checks=["host.orphans"]
    )

    async def failing_on_a() -> list[str]:
        [node] = (await view_a.ListNodes(controller_pb2.ListNodesRequest(), context)).nodes
        return list(node.failing_checks)

    await replica_a.Heartbeat(failing, context)
    clock.advance(0.9)
    assert await failing_on_a() == ["host.orphans"]
    await replica_b.Heartbeat(  # within the skew: A's report still stands
        controller_pb2.HeartbeatRequest(node="n1", health=common_pb2.HEALTH_STATUS_HEALTHY),
        context,
    )
    assert await failing_on_a() == ["host.orphans"]
    clock.advance(1.0)
    await replica_b.Heartbeat(
        controller_pb2.HeartbeatRequest(node="n1", health=common_pb2.HEALTH_STATUS_HEALTHY),
        context,
    )
    assert await failing_on_a() == []
    await replica_a.Heartbeat(failing, context)  # back on A: its report is current again
    assert await failing_on_a() == ["host.orphans"]


async def test_answers_hand_out_the_paced_interval_and_a_ttl_for_it() -> None:
    """Registration and heartbeat answers carry the interval for the fleet's size;
    the lease set by that heartbeat lasts missed_limit of those intervals."""
    clock = FakeClock()
    store = MemoryStore(clock)
    ctx = context_for(store, None, FakeExecutor())
    ctx.pacing = HeartbeatPacing(1000, 3, 50.0)
    registry = RegistryServicer(ctx, HealthReports(clock))
    context = cast(Any, FakeContext())
    registered = await registry.Register(
        controller_pb2.RegisterRequest(node="n1", address="127.0.0.1:1"), context
    )
    assert registered.heartbeat_interval_ms == 1000
    ctx.pacing.observe(500)  # the registry watch counted the fleet
    beat = controller_pb2.HeartbeatRequest(node="n1", health=common_pb2.HEALTH_STATUS_HEALTHY)
    answer = await registry.Heartbeat(beat, context)
    assert answer.heartbeat_interval_ms == 10_000
    clock.advance(31.0)  # 3 x 10 s and most of the 2 s grace: still up
    assert (await store.get_node("n1")).up  # type: ignore[union-attr]
    clock.advance(1.5)
    assert not (await store.get_node("n1")).up  # type: ignore[union-attr]
