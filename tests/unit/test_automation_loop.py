"""The automation loop over an in-memory store and fake executors: every step is
driven by the test (``step()`` then ``wait_idle()``), no sleeps.

What is checked here is the I/O side of the policy: cause ids that are cluster
events, hook results recorded for automatic quarantines, recoveries always
reported and fenced, tasks of an ended term cancelled, an operator's quarantine
left alone, the breaker across leaders, and the operator commands' audit trail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest

from novaops.controller.automation import (
    SETTINGS_KEY,
    Automation,
    AutomationConfig,
    node_setting_key,
    verify_clean_on,
)
from novaops.controller.clock import FakeClock
from novaops.controller.context import ControllerContext
from novaops.controller.events import EventLog
from novaops.controller.executors import ExecutorPool
from novaops.controller.operations import AutomationServicer
from novaops.controller.policy import NodePolicyState, PolicyConfig
from novaops.controller.quarantine import HistoryDetails, QuarantineManager
from novaops.controller.store.base import (
    LeaderTerm,
    NodeRecord,
    NodeRegistration,
    StoreError,
)
from novaops.controller.store.memory import MemoryStore
from novaops.pki.identity import Identity, Role
from novaops.pki.issue import CertificateAuthority
from novaops.v1 import common_pb2, controller_pb2

from .controller_fakes import (
    Aborted,
    FakeContext,
    FakeExecutors,
    FakeNode,
    FakeRpcError,
    locks_check,
)

AUTO = common_pb2.QUARANTINE_SOURCE_AUTO
MANUAL = common_pb2.QUARANTINE_SOURCE_MANUAL


class FlakyStore(MemoryStore):
    """A memory store whose node lookups can be made to fail."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.get_node_fails = False
        self.put_setting_fails = False
        self.failed_puts = 0

    async def get_node(self, name: str) -> NodeRecord | None:
        if self.get_node_fails:
            raise StoreError("memory store: injected failure")
        return await super().get_node(name)

    async def put_setting(self, key: str, value: bytes, fence: LeaderTerm) -> None:
        if self.put_setting_fails:
            self.failed_puts += 1
            raise StoreError("memory store: injected failure")
        await super().put_setting(key, value, fence)


class Harness:
    """One controller replica's automation and quarantine manager over a shared store."""

    def __init__(
        self, store: MemoryStore, executors: FakeExecutors, config: AutomationConfig
    ) -> None:
        self.store = store
        self.executors = executors
        self.term: LeaderTerm | None = None
        self.events = EventLog(store)
        pool = cast(ExecutorPool, executors)

        async def verify(node: str) -> tuple[bool, list[common_pb2.CheckResult]]:
            record = await store.get_node(node)
            return await verify_clean_on(pool, record.address if record else None)

        self.quarantines = QuarantineManager(store, lambda: self.term, pool, self.events, verify)
        self.automation = Automation(
            config, store, pool, self.events, self.quarantines, lambda: self.term, FakeClock()
        )

    async def lead(self, name: str = "ctl-0") -> LeaderTerm:
        term = await self.store.campaign(name, f"{name}:1", 3600)
        assert term is not None
        self.term = term
        return term

    async def turn(self) -> None:
        await self.automation.step()
        await self.automation.wait_idle()

    async def until(self, condition: Callable[[], Awaitable[bool]], turns: int = 30) -> None:
        for _ in range(turns):
            await self.turn()
            if await condition():
                return
        raise AssertionError(f"not reached within {turns} turns")

    async def record(self, node: str) -> common_pb2.QuarantineRecord | None:
        return await self.quarantines.current(node)

    async def events_of(self, kind: str) -> list[controller_pb2.ClusterEvent]:
        return [e for e in await self.events.read() if e.kind == kind]


FAST = AutomationConfig(poll_interval=0.01, policy=PolicyConfig())


async def make_cluster(
    nodes: int = 10, config: AutomationConfig = FAST, store: MemoryStore | None = None
) -> Harness:
    clock = FakeClock()
    store = store if store is not None else MemoryStore(clock)
    names = [f"n{i}" for i in range(1, nodes + 1)]
    for name in names:
        await store.register_node(NodeRegistration(name, f"addr-{name}"))
        await store.heartbeat(name, 3600, 1)
    harness = Harness(store, FakeExecutors(names), config)
    await harness.lead()
    return harness


async def hanging_recovery(harness: Harness, node: str = "n1") -> tuple[FakeNode, asyncio.Event]:
    """node fails its locks check; two turns start a recovery that then hangs on
    the node, the call already there, until the returned gate is set."""
    fake = harness.executors.node(node)
    fake.checks = [locks_check(node)]
    fake.recover_gate = gate = asyncio.Event()
    await harness.turn()
    await harness.automation.step()
    for _ in range(3):
        await asyncio.sleep(0)  # let the task reach the node
    return fake, gate


async def quarantined(harness: Harness, node: str) -> bool:
    return await harness.record(node) is not None


# -- D, B: the causes are cluster events; hook results are recorded ---------------------


async def test_automatic_quarantine_names_cluster_events_and_records_hook_failure() -> None:
    cluster = await make_cluster()
    n1 = cluster.executors.node("n1")
    n1.checks = [locks_check("n1")]
    n1.recover_outcome = "failed"
    n1.hook_results = ["10-disable-scheduler: exit 3: scheduler unreachable", "20-notify: ok"]
    await cluster.until(lambda: quarantined(cluster, "n1"))

    record = await cluster.record("n1")
    assert record is not None and record.source == AUTO
    assert [c.check_id for c in record.causes] == ["host.locks"]
    # Recoveries and the quarantine are fenced by the leader's term.
    assert cluster.term is not None
    fence = cluster.term.record.revision
    assert {r.fence_revision for r in n1.recover_calls} == {fence}
    assert all("host.locks" in r.reason for r in n1.recover_calls)
    (applied,) = n1.applied
    assert applied.fence_revision == fence and applied.since == record.since
    events = {e.id: e for e in await cluster.events.read()}
    # Every cause id is an event `novaops events` can show.
    assert record.event_ids and all(i in events for i in record.event_ids)
    kinds = [events[i].kind for i in record.event_ids]
    assert kinds[0] == "check.failed" and kinds[-1] == "escalation"
    assert kinds.count("recovery.failed") == 4
    assert all(not i.startswith(("poll-", "executor-")) for i in record.event_ids)

    (quarantine,) = await cluster.events_of("quarantine")
    assert quarantine.attributes["hooks"] == "failed"
    assert "scheduler unreachable" in quarantine.attributes["hook_results"]
    assert list(quarantine.cause_ids) == list(record.event_ids)
    (hook_failed,) = await cluster.events_of("hook.failed")
    assert hook_failed.node == "n1"
    assert list(hook_failed.cause_ids) == [quarantine.id]
    assert "10-disable-scheduler: exit 3" in hook_failed.message
    assert "20-notify" not in hook_failed.message

    (entry,) = await cluster.store.get_history("n1")
    details = HistoryDetails.decode(entry.details)
    assert details.hooks == "failed"
    assert details.hook_results == tuple(n1.hook_results)
    assert details.event_ids == (quarantine.id, hook_failed.id)


# -- E: a recovery is always reported ---------------------------------------------------


@pytest.mark.parametrize("failure", ["store", "stream"])
async def test_recovery_that_raises_is_reported_failed(failure: str) -> None:
    cluster = await make_cluster(3, store=FlakyStore(FakeClock()))
    n1 = cluster.executors.node("n1")
    n1.checks = [locks_check("n1")]
    await cluster.turn()  # check.failed
    assert isinstance(cluster.store, FlakyStore)
    if failure == "store":
        cluster.store.get_node_fails = True
    else:
        n1.recover_error = RuntimeError("executor sent garbage")
    await cluster.turn()  # starts the recovery; it fails in its task
    state = cluster.automation.policy.state.node("n1")
    assert not state.recovery_in_flight
    assert state.failed_recoveries == 1
    (failed,) = await cluster.events_of("recovery.failed")
    assert ("StoreError" if failure == "store" else "RuntimeError") in failed.message
    # Not stuck: the next poll starts another attempt.
    cluster.store.get_node_fails = False
    n1.recover_error = None
    await cluster.turn()
    assert len(await cluster.events_of("recovery.started")) == 2


# -- F: leadership ------------------------------------------------------------------------


async def test_recovery_of_a_lost_term_is_cancelled_and_not_reported() -> None:
    cluster = await make_cluster(3)
    n1, gate = await hanging_recovery(cluster)
    assert len(n1.recover_calls) == 1 and cluster.automation.tasks_in_flight == 1
    term = cluster.term
    assert term is not None
    await cluster.store.resign(term)
    cluster.term = None
    await cluster.automation.step()  # sees the term gone: cancels at once
    for _ in range(3):
        await asyncio.sleep(0)  # the cancellation reaches the task
    assert n1.streams[0].cancelled  # while the node still holds the call
    await cluster.automation.wait_idle()
    assert cluster.automation.tasks_in_flight == 0
    kinds = [e.kind for e in await cluster.events.read()]
    assert "recovery.failed" not in kinds and "recovery.succeeded" not in kinds
    # Nothing more happens while not leading.
    gate.set()
    for _ in range(3):
        await cluster.turn()
    assert len(n1.recover_calls) == 1


async def test_no_recovery_starts_once_the_term_ended_mid_poll() -> None:
    cluster = await make_cluster(3)
    n1 = cluster.executors.node("n1")
    n1.checks = [locks_check("n1")]
    await cluster.turn()

    def lose() -> None:
        cluster.term = None

    n1.on_health = lose  # the term ends while the health poll is out
    await cluster.turn()
    assert n1.recover_calls == []
    assert await cluster.events_of("recovery.started") == []


async def test_leadership_change_cancels_tasks_at_once() -> None:
    cluster = await make_cluster(3)
    n1 = cluster.executors.node("n1")
    n1.checks = [locks_check("n1")]
    n1.recover_gate = asyncio.Event()
    await cluster.turn()
    await cluster.automation.step()
    await asyncio.sleep(0)
    assert cluster.automation.tasks_in_flight == 1
    cluster.automation.leadership_changed(None)  # as the election would call it
    for _ in range(3):
        await asyncio.sleep(0)
    assert n1.streams[0].cancelled
    await cluster.automation.wait_idle()
    assert cluster.automation.tasks_in_flight == 0
    assert await cluster.events_of("recovery.failed") == []


async def test_actions_stop_when_the_term_ends_mid_decision() -> None:
    cluster = await make_cluster(10)
    n1 = cluster.executors.node("n1")
    n1.checks = [locks_check("n1")]
    n1.recover_outcome = "failed"
    emit = cluster.events.emit
    failures = 0

    async def emit_then_lose(kind: str, node: str, message: str, **kwargs: Any) -> str:
        nonlocal failures
        event_id = await emit(kind, node, message, **kwargs)
        failures += kind == "recovery.failed"
        if failures == 4:
            cluster.term = None  # the 4th failure is recorded, then the term ends
        return event_id

    cluster.events.emit = emit_then_lose  # type: ignore[method-assign]
    for _ in range(10):
        await cluster.turn()
    # The escalation that followed the 4th failure was not carried out.
    assert await cluster.events_of("escalation") == []
    assert not await quarantined(cluster, "n1")


# -- H: an operator's quarantine stands --------------------------------------------------


async def test_policy_follows_a_takeover_and_never_releases() -> None:
    cluster = await make_cluster(10)
    n1 = cluster.executors.node("n1")
    n1.checks = [locks_check("n1")]
    n1.recover_outcome = "failed"
    await cluster.until(lambda: quarantined(cluster, "n1"))
    await cluster.quarantines.quarantine("n1", "mine now", "operator:bob")
    n1.checks = []  # fixed, and clean
    for _ in range(10):
        await cluster.turn()
    record = await cluster.record("n1")
    assert record is not None and record.source == MANUAL
    assert cluster.automation.policy.state.node("n1").quarantine == "manual"


async def test_fixed_node_is_released_after_m_clean_polls() -> None:
    cluster = await make_cluster(10)
    n1 = cluster.executors.node("n1")
    n1.checks = [locks_check("n1")]
    n1.recover_outcome = "failed"
    await cluster.until(lambda: quarantined(cluster, "n1"))
    # Verify-clean passes but the causing check still fails: never released.
    for _ in range(6):
        await cluster.turn()
    assert await quarantined(cluster, "n1")
    n1.checks = []
    turns = 0
    while await quarantined(cluster, "n1"):
        await cluster.turn()
        turns += 1
        assert turns <= 3
    assert turns == 3
    (release,) = await cluster.events_of("unquarantine")
    assert release.attributes["actor"] == "automation"


# -- J: the breaker outlives a leader ----------------------------------------------------


async def test_breaker_window_continues_on_a_new_leader() -> None:
    policy = PolicyConfig(max_quarantined_share=1.0, window_limit=2, window_seconds=3600)
    config = AutomationConfig(policy=policy)
    first = await make_cluster(10, config)
    store = first.store
    second = Harness(store, first.executors, config)
    for name in ("n1", "n2"):
        node = first.executors.node(name)
        node.checks = [locks_check(name)]
        node.recover_outcome = "failed"
    await first.until(lambda: quarantined(first, "n2"))
    assert await quarantined(first, "n1")
    saved = json.loads(await store.get_setting(SETTINGS_KEY) or b"{}")
    assert len(saved["auto_quarantine_times"]) == 2

    # Failover: the first leader's term ends, the second replica wins.
    assert first.term is not None
    await store.resign(first.term)
    first.term = None
    await first.turn()
    await second.lead("ctl-1")
    n3 = first.executors.node("n3")
    n3.checks = [locks_check("n3")]
    n3.recover_outcome = "failed"
    await second.until(lambda: second_breaker_tripped(second))
    assert not await quarantined(second, "n3")
    status = await second.automation.status()
    assert status.breaker_tripped and "2 automatic quarantines" in status.breaker_reason
    # The first replica, no longer leading, acted on nothing meanwhile.
    assert first.automation.policy.state.nodes == {}
    assert first.automation.tasks_in_flight == 0


async def second_breaker_tripped(harness: Harness) -> bool:
    return harness.automation.policy.state.breaker_tripped


async def fail_over(first: Harness, second: Harness, name: str = "ctl-1") -> None:
    """The first replica's term ends and the second one wins the next."""
    assert first.term is not None
    await first.store.resign(first.term)
    first.term = None
    await first.turn()
    await second.lead(name)


async def node_memory_stored(harness: Harness, node: str) -> dict[str, Any]:
    raw = await harness.store.get_setting(node_setting_key(node))
    return cast(dict[str, Any], json.loads(raw)) if raw else {}


async def failing_recoveries(harness: Harness, count: int) -> FakeNode:
    """n1 fails its locks check and every recovery of it; returns once ``count``
    recoveries have failed."""
    n1 = harness.executors.node("n1")
    n1.checks = [locks_check("n1")]
    n1.recover_outcome = "failed"

    async def failed() -> bool:
        return len(await harness.events_of("recovery.failed")) == count

    await harness.until(failed)
    return n1


async def test_escalation_budget_continues_on_a_new_leader() -> None:
    """A node whose recoveries keep failing is quarantined after the same number of
    recoveries however many failovers happen meanwhile (4 with the defaults), not
    after 4 more per leader."""
    first = await make_cluster(3)
    second = Harness(first.store, first.executors, first.automation.config)
    n1 = await failing_recoveries(first, 2)
    stored = await node_memory_stored(first, "n1")
    assert stored["failed_recoveries"] == 2 and stored["attempted_failures"] == 2
    assert len(stored["cause_ids"]) == 3  # check.failed and the two recovery.failed

    await fail_over(first, second)
    await second.until(lambda: quarantined(second, "n1"))
    assert len(n1.recover_calls) == 4
    record = await second.record("n1")
    assert record is not None and record.source == AUTO
    assert "4 failed recoveries" in record.reason
    # The quarantine names the first leader's events too.
    kinds = {e.id: e.kind for e in await second.events.read()}
    named = [kinds[i] for i in record.event_ids]
    assert named.count("recovery.failed") == 4 and named[0] == "check.failed"
    assert (await node_memory_stored(second, "n1"))["quarantine"] == "auto"


async def test_recovery_cut_off_by_a_failover_is_judged_by_the_next_poll() -> None:
    first = await make_cluster(3)
    second = Harness(first.store, first.executors, first.automation.config)
    n1, gate = await hanging_recovery(first)  # hangs until the first term ends
    assert len(n1.recover_calls) == 1
    assert (await node_memory_stored(first, "n1"))["awaiting_confirmation"] is True

    n1.checks = []  # whatever the recovery did, the node passes now
    gate.set()
    await fail_over(first, second)
    await second.turn()
    assert [e.node for e in await second.events_of("node.healthy")] == ["n1"]
    assert await second.events_of("recovery.ineffective") == []
    # Back to nothing to remember: the node's setting is cleared.
    assert await second.store.get_setting(node_setting_key("n1")) == b""
    assert second.automation.policy.state.node("n1") == NodePolicyState()


async def test_a_removed_node_leaves_no_counters_behind() -> None:
    """`node remove` (any replica) deletes the record; the leader's next poll drops
    the node's counters and clears its setting, so a host registered again under
    the name starts afresh, on this leader and on the next."""
    cluster = await make_cluster(3)
    n1 = await failing_recoveries(cluster, 1)
    await cluster.automation.wait_idle()
    assert (await node_memory_stored(cluster, "n1"))["failed_recoveries"] == 1
    assert await cluster.store.remove_node("n1")
    await cluster.turn()
    assert await cluster.store.get_setting(node_setting_key("n1")) == b""
    assert "n1" not in cluster.automation.policy.state.nodes
    await cluster.store.register_node(NodeRegistration("n1", "addr-n1"))
    await cluster.store.heartbeat("n1", 3600, 1)
    n1.checks = []  # the new host passes
    second = Harness(cluster.store, cluster.executors, cluster.automation.config)
    await fail_over(cluster, second)
    await second.automation.step()
    assert second.automation.policy.state.node("n1") == NodePolicyState()


async def test_counters_a_store_outage_kept_from_being_written_follow_later() -> None:
    cluster = await make_cluster(3, store=FlakyStore(FakeClock()))
    store = cluster.store
    assert isinstance(store, FlakyStore)
    n1 = cluster.executors.node("n1")
    n1.checks = [locks_check("n1")]
    store.put_setting_fails = True
    await cluster.turn()  # check.failed: consecutive_failures 1, not written
    assert await store.get_setting(node_setting_key("n1")) is None
    store.put_setting_fails = False

    def unreachable() -> None:
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE)

    n1.on_health = unreachable  # so n1's own state does not change again
    await cluster.turn()
    assert await node_memory_stored(cluster, "n1") == {
        "consecutive_failures": 1,
        "cause_ids": [(await cluster.events_of("check.failed"))[0].id],
        "last_failing": ["host.locks:"],
    }


async def test_a_store_that_fails_writes_is_tried_once_per_poll() -> None:
    cluster = await make_cluster(10, store=FlakyStore(FakeClock()))
    store = cluster.store
    assert isinstance(store, FlakyStore)
    for name in ("n1", "n4", "n7"):
        cluster.executors.node(name).checks = [locks_check(name)]
    store.put_setting_fails = True
    await cluster.turn()
    assert store.failed_puts == 1  # not once per failing node, nor per later stimulus
    await cluster.turn()
    assert store.failed_puts == 2
    store.put_setting_fails = False
    await cluster.turn()
    for name in ("n1", "n4", "n7"):
        assert (await node_memory_stored(cluster, name))["last_failing"] == ["host.locks:"]


async def test_an_operator_command_mid_term_leaves_a_running_recovery_alone() -> None:
    cluster = await make_cluster(3)
    _, gate = await hanging_recovery(cluster)
    assert cluster.automation.policy.state.node("n1").recovery_in_flight
    await cluster.automation.command("pause", "admin:alice", "maintenance")
    assert cluster.automation.policy.state.node("n1").recovery_in_flight  # not reloaded
    gate.set()
    await cluster.automation.wait_idle()
    assert len(await cluster.events_of("recovery.succeeded")) == 1  # its report counted


@pytest.mark.parametrize("released", [False, True])
async def test_an_escalation_the_store_never_got_escalates_again(released: bool) -> None:
    """The last leader escalated n1 (memory says auto-quarantined) but its term
    ended before the quarantine was stored. The next leader escalates at the first
    failing poll, not after four more recoveries; unless an operator's release is
    the node's last history entry: then it starts afresh, as a release does."""
    cluster = await make_cluster(3)
    store = cluster.store
    term = cluster.term
    assert term is not None
    if released:
        await cluster.quarantines.quarantine("n1", "drill", "admin:alice")
        await cluster.quarantines.unquarantine("n1", "drill over", "admin:alice")
    memory = {
        "consecutive_failures": 2,
        "failed_recoveries": 4,
        "attempted_failures": 4,
        "last_failing": ["host.locks:"],
        "quarantine": "auto",
        "quarantine_checks": ["host.locks:"],
    }
    await store.put_setting(node_setting_key("n1"), json.dumps(memory).encode(), term)
    second = Harness(store, cluster.executors, cluster.automation.config)
    await fail_over(cluster, second)
    n1 = cluster.executors.node("n1")
    n1.checks = [locks_check("n1")]
    n1.recover_outcome = "failed"
    await second.turn()
    if released:
        assert not await quarantined(second, "n1")
        assert [e.node for e in await second.events_of("check.failed")] == ["n1"]
        assert await node_memory_stored(second, "n1") == {
            "consecutive_failures": 1,
            "cause_ids": [(await second.events_of("check.failed"))[0].id],
            "last_failing": ["host.locks:"],
        }
        return
    record = await second.record("n1")
    assert record is not None and record.source == AUTO
    assert n1.recover_calls == []
    assert (await node_memory_stored(second, "n1"))["quarantine"] == "auto"


# -- C: operator commands are audited ----------------------------------------------------


async def test_operator_commands_record_who_what_when_and_why(tmp_path: Path) -> None:
    cluster = await make_cluster(3)
    ca = CertificateAuthority.create()
    ca.save(tmp_path)
    pem = ca.issue(Identity(Role.ADMIN, "alice"), tmp_path).cert.read_bytes()
    context = cast(Any, FakeContext(pem))
    servicer = AutomationServicer(
        cast(ControllerContext, SimpleNamespace(insecure=False, automation=cluster.automation))
    )
    paused = await servicer.PauseAutomation(
        controller_pb2.PauseAutomationRequest(reason="kernel upgrade"), context
    )
    assert paused.paused
    await servicer.ResetBreaker(controller_pb2.ResetBreakerRequest(reason="false alarm"), context)
    await servicer.ResumeAutomation(controller_pb2.ResumeAutomationRequest(reason=""), context)
    events = await cluster.events.read()
    assert [e.kind for e in events] == ["automation.paused", "breaker.reset", "automation.resumed"]
    for event, reason in zip(events, ("kernel upgrade", "false alarm", ""), strict=True):
        assert event.attributes["actor"] == "admin:alice"
        assert event.attributes["reason"] == reason
        assert event.at.seconds > 0
    assert "kernel upgrade" in events[0].message
    # A viewer may not, and the refusal records nothing.
    viewer = ca.issue(Identity(Role.VIEWER, "victor"), tmp_path, file_stem="viewer").cert
    with pytest.raises(Aborted, match="PERMISSION_DENIED"):
        await servicer.PauseAutomation(
            controller_pb2.PauseAutomationRequest(reason="x"),
            cast(Any, FakeContext(viewer.read_bytes())),
        )
    assert len(await cluster.events.read()) == 3
