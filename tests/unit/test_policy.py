"""The automation policy, driven by stimuli and plain timestamps: no sleeps, no servers."""

from __future__ import annotations

import itertools
import json
from typing import Any

from novaops.controller.policy import (
    AUTO,
    Action,
    EmitEvent,
    EventRecorded,
    FleetChanged,
    HealthObserved,
    NodePolicyState,
    OperatorCommand,
    Policy,
    PolicyConfig,
    QuarantineChanged,
    QuarantineNode,
    RecoveryFinished,
    ReleaseNode,
    StartRecovery,
    Stimulus,
    VerifyClean,
    VerifyCleanObserved,
    allowed_quarantined,
    keep_causes,
    node_memory,
    restore_node,
)

_ids = itertools.count(1)
FIX = (("remove-stale-locks", ""),)
LOCKS = "host.locks:"
DISK = "host.disk_pressure:/var/lib/libvirt/images"


def sid() -> str:
    return f"ev-{next(_ids)}"


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ if not isinstance(a, EmitEvent) else a.kind for a in actions]


class Driver:
    """The loop's part, minus the I/O: feeds stimuli and reports the id of every
    event marked ``cause`` back to the policy, as controller/automation.py does."""

    def __init__(self, nodes: int = 10, config: PolicyConfig | None = None) -> None:
        self.policy = Policy(config or PolicyConfig())
        self.policy.handle(FleetChanged(sid(), tuple(f"n{i}" for i in range(1, nodes + 1))), 0)
        self._event_ids = itertools.count(1)
        self.recorded: list[tuple[str, str, str]] = []  # (event id, kind, node)

    def feed(self, stimulus: Stimulus, now: float) -> list[Action]:
        done: list[Action] = []
        queue = self.policy.handle(stimulus, now)
        while queue:
            action = queue.pop(0)
            done.append(action)
            if isinstance(action, EmitEvent) and action.cause:
                event_id = f"{next(self._event_ids):012d}"
                self.recorded.append((event_id, action.kind, action.node))
                follow = self.policy.handle(
                    EventRecorded(sid(), action.node, action.kind, event_id), now
                )
                queue[0:0] = follow
        return done

    def poll(
        self,
        node: str,
        now: float,
        failing: tuple[str, ...] = (LOCKS,),
        fix: tuple[tuple[str, str], ...] = FIX,
        erroring: tuple[str, ...] = (),
        error_fix: tuple[tuple[str, str], ...] = (),
    ) -> list[Action]:
        return self.feed(
            HealthObserved(sid(), node, failing, fix if failing else (), erroring, error_fix), now
        )

    def healthy(self, node: str, now: float) -> list[Action]:
        return self.poll(node, now, failing=())

    def finish(self, node: str, now: float, succeeded: bool, detail: str = "") -> list[Action]:
        recovery_id = self.policy.state.node(node).recovery_id
        return self.feed(RecoveryFinished(sid(), node, succeeded, detail, recovery_id), now)

    def verify(self, node: str, now: float, clean: bool = True) -> list[Action]:
        return self.feed(VerifyCleanObserved(sid(), node, clean), now)

    def quarantine_auto(
        self, node: str, start: float, failing: tuple[str, ...] = (LOCKS,)
    ) -> list[Action]:
        """K failing polls, then 4 recoveries that fail: the actions of the last one."""
        now = start
        actions: list[Action] = []
        self.poll(node, now, failing)
        for _ in range(4):
            now += 1
            self.poll(node, now, failing)
            actions = self.finish(node, now, False, "lock busy")
        return actions

    def ids(self, kind: str, node: str) -> list[str]:
        return [i for i, k, n in self.recorded if k == kind and n == node]


def test_recovery_after_k_consecutive_failures() -> None:
    loop = Driver()
    assert kinds(loop.poll("n1", 1)) == ["check.failed"]
    actions = loop.poll("n1", 2)
    assert kinds(actions) == ["StartRecovery", "recovery.started"]
    start = actions[0]
    assert isinstance(start, StartRecovery) and start.actions == FIX
    # The recovery names the cluster event of the failure, not internal ids.
    assert start.cause_ids == tuple(loop.ids("check.failed", "n1"))
    # One recovery in flight at a time.
    assert loop.poll("n1", 3) == []


def test_healthy_poll_resets_counters() -> None:
    loop = Driver()
    loop.poll("n1", 1)
    assert kinds(loop.healthy("n1", 2)) == ["node.healthy"]
    assert kinds(loop.poll("n1", 3)) == ["check.failed"]


def test_successful_recovery_that_clears_the_fault() -> None:
    loop = Driver()
    loop.poll("n1", 1)
    loop.poll("n1", 2)
    assert kinds(loop.finish("n1", 3, True)) == ["recovery.succeeded"]
    assert kinds(loop.healthy("n1", 4)) == ["node.healthy"]
    assert loop.policy.state.node("n1").failed_recoveries == 0


def test_escalation_after_the_fourth_failed_recovery() -> None:
    loop = Driver()
    now = 0.0
    loop.poll("n1", now)
    actions: list[Action] = []
    for attempt in range(1, 5):
        now += 1
        actions = loop.poll("n1", now)
        assert isinstance(actions[0], StartRecovery), (attempt, actions)
        now += 1
        actions = loop.finish("n1", now, False, "lock busy")
        if attempt < 4:
            assert kinds(actions) == ["recovery.failed"]
    # The escalation event is recorded first, so the quarantine can name it.
    assert kinds(actions) == ["recovery.failed", "escalation", "QuarantineNode"]
    quarantine = actions[2]
    assert isinstance(quarantine, QuarantineNode)
    assert quarantine.checks == (LOCKS,)
    assert quarantine.cause_ids == (
        *loop.ids("check.failed", "n1"),
        *loop.ids("recovery.failed", "n1"),
        *loop.ids("escalation", "n1"),
    )
    assert len(quarantine.cause_ids) == 6
    assert "4 failed recoveries" in quarantine.reason
    assert loop.policy.state.node("n1").quarantine == AUTO


def test_quarantine_waits_for_the_escalation_event_id() -> None:
    policy = Driver().policy
    policy.handle(HealthObserved(sid(), "n1", (LOCKS,), FIX), 0)
    for now in range(1, 5):
        policy.handle(HealthObserved(sid(), "n1", (LOCKS,), FIX), now)
        recovery_id = policy.state.node("n1").recovery_id
        actions = policy.handle(RecoveryFinished(sid(), "n1", False, "", recovery_id), now)
    assert kinds(actions) == ["recovery.failed", "escalation"]
    # Until the loop reports the escalation's id, a poll decides nothing more.
    assert policy.handle(HealthObserved(sid(), "n1", (LOCKS,), FIX), 6) == []
    assert policy.handle(EventRecorded(sid(), "n1", "recovery.failed", "000000000007"), 6) == []
    # The store refused the event (no id): the quarantine still proceeds.
    follow = policy.handle(EventRecorded(sid(), "n1", "escalation", ""), 6)
    assert kinds(follow) == ["QuarantineNode"]
    assert isinstance(follow[0], QuarantineNode)
    assert follow[0].cause_ids == ("000000000007",)
    assert policy.handle(EventRecorded(sid(), "n1", "escalation", "000000000008"), 7) == []


def test_ineffective_recovery_counts_as_failed() -> None:
    loop = Driver()
    loop.poll("n1", 1)
    loop.poll("n1", 2)
    loop.finish("n1", 3, True)
    actions = loop.poll("n1", 4)
    assert "recovery.ineffective" in kinds(actions)
    assert loop.policy.state.node("n1").failed_recoveries == 1


def test_unfixable_fault_escalates_without_catalogue_action() -> None:
    loop = Driver()
    actions: list[Action] = []
    for now in range(1, 10):
        actions = loop.poll("n1", now, fix=())
        if any(isinstance(a, QuarantineNode) for a in actions):
            break
    assert any(isinstance(a, QuarantineNode) for a in actions)


def test_auto_quarantined_node_released_after_m_clean_passes() -> None:
    loop = Driver()
    loop.quarantine_auto("n1", 0)
    # While the causing check fails, polls ask for nothing (no verify-clean).
    assert loop.poll("n1", 20) == []
    # The fault is gone: each poll whose causing checks pass asks for verify-clean.
    assert loop.healthy("n1", 21) == [VerifyClean("n1")]
    assert loop.verify("n1", 21) == []
    assert loop.healthy("n1", 22) == [VerifyClean("n1")]
    assert loop.verify("n1", 22, clean=False) == []  # resets the streak
    for now in (23, 24):
        loop.healthy("n1", now)
        assert loop.verify("n1", now) == []
    loop.healthy("n1", 25)
    actions = loop.verify("n1", 25)
    assert kinds(actions) == ["ReleaseNode"]
    assert isinstance(actions[0], ReleaseNode)
    assert "passed 3 consecutive times" in actions[0].reason
    assert loop.policy.state.node("n1").quarantine is None


def test_flapping_fault_is_never_released() -> None:
    # A disk that fills up every third poll, on a node whose clean baseline (no
    # orphans, locks, taps, cgroups) is always clean.
    loop = Driver()
    loop.quarantine_auto("n1", 0, failing=(DISK,))
    assert loop.policy.state.node("n1").quarantine_checks == (DISK,)
    released: list[Action] = []
    for poll in range(300):
        now = 100.0 + poll
        if poll % 3 == 2:
            assert loop.poll("n1", now, failing=(DISK,), fix=()) == []
        else:
            assert loop.healthy("n1", now) == [VerifyClean("n1")]
        released += [a for a in loop.verify("n1", now) if isinstance(a, ReleaseNode)]
    assert released == []
    assert loop.policy.state.node("n1").quarantine == AUTO
    assert list(loop.policy.state.auto_quarantine_times) == [4.0]  # one, not one per flap


def test_fixed_fault_is_released_after_exactly_m_polls() -> None:
    config = PolicyConfig(clean_passes_to_release=5)
    loop = Driver(config=config)
    loop.quarantine_auto("n1", 0, failing=(DISK,))
    loop.poll("n1", 10, failing=(DISK,), fix=())
    for now in range(11, 15):
        assert loop.healthy("n1", now) == [VerifyClean("n1")]
        assert loop.verify("n1", now) == []
    loop.healthy("n1", 15)
    assert kinds(loop.verify("n1", 15)) == ["ReleaseNode"]


def test_verify_clean_without_a_fresh_poll_counts_once() -> None:
    loop = Driver()
    loop.quarantine_auto("n1", 0)
    loop.healthy("n1", 10)
    for now in range(10, 20):
        assert loop.verify("n1", now) == []
    assert loop.policy.state.node("n1").clean_passes == 1


def test_error_on_a_causing_check_keeps_the_node_quarantined() -> None:
    loop = Driver()
    loop.quarantine_auto("n1", 0)
    for now in range(10, 20):
        # The lock check cannot run: that is not a pass.
        assert loop.poll("n1", now, failing=(), erroring=(LOCKS,)) == []
        assert loop.verify("n1", now) == []
    assert loop.policy.state.node("n1").quarantine == AUTO


def test_quarantine_read_from_the_store_keeps_its_causes() -> None:
    # A new leader learns of an automatic quarantine from the store.
    loop = Driver()
    loop.feed(QuarantineChanged(sid(), "n1", True, AUTO, (DISK,), ("000000000042",)), 0)
    assert loop.poll("n1", 1, failing=(DISK,), fix=()) == []
    assert loop.healthy("n1", 2) == [VerifyClean("n1")]
    actions: list[Action] = []
    for now in range(3, 6):
        loop.healthy("n1", now)
        actions = loop.verify("n1", now)
    assert isinstance(actions[0], ReleaseNode)
    assert actions[0].cause_ids == ("000000000042",)


def test_manual_quarantine_is_never_lifted_automatically() -> None:
    loop = Driver()
    loop.feed(QuarantineChanged(sid(), "n2", True, "manual"), 0)
    assert loop.poll("n2", 1) == []
    for now in range(2, 10):
        assert loop.healthy("n2", now) == []
        assert loop.verify("n2", now) == []
    assert loop.policy.state.node("n2").quarantine == "manual"


def test_auto_quarantine_taken_over_by_an_operator_is_not_lifted() -> None:
    loop = Driver()
    loop.quarantine_auto("n1", 0)
    loop.feed(QuarantineChanged(sid(), "n1", True, "manual"), 10)
    for now in range(11, 20):
        assert loop.healthy("n1", now) == []
        assert loop.verify("n1", now) == []
    assert loop.policy.state.node("n1").quarantine == "manual"


def test_breaker_by_share_of_fleet() -> None:
    loop = Driver()
    assert allowed_quarantined(10, 0.10) == 1
    assert allowed_quarantined(3, 0.10) == 1
    assert allowed_quarantined(50, 0.10) == 5
    results = [loop.quarantine_auto(f"n{i}", i * 100) for i in range(1, 6)]
    quarantined = [n for n, s in loop.policy.state.nodes.items() if s.quarantine == AUTO]
    assert quarantined == ["n1"]
    assert loop.policy.state.breaker_tripped
    assert "would make 2 of 10 nodes quarantined" in loop.policy.state.breaker_reason
    assert "breaker.tripped" in kinds(results[1])
    # Tripped: later escalations do nothing until an operator resets it.
    assert all("QuarantineNode" not in kinds(r) for r in results[1:])
    reset = loop.feed(OperatorCommand(sid(), "reset-breaker", "admin:alice", "disk swapped"), 1000)
    assert kinds(reset) == ["breaker.reset"]
    assert not loop.policy.state.breaker_tripped


def test_breaker_by_window() -> None:
    config = PolicyConfig(max_quarantined_share=1.0, window_seconds=600, window_limit=2)
    loop = Driver(config=config)
    loop.quarantine_auto("n1", 0)
    loop.quarantine_auto("n2", 10)
    actions = loop.quarantine_auto("n3", 20)
    assert "breaker.tripped" in kinds(actions)
    assert "2 automatic quarantines within 600s" in loop.policy.state.breaker_reason
    # A reset empties the window.
    loop.feed(OperatorCommand(sid(), "reset-breaker"), 700)
    assert "QuarantineNode" in kinds(loop.quarantine_auto("n4", 710))


def test_breaker_window_expires_without_a_reset() -> None:
    config = PolicyConfig(max_quarantined_share=1.0, window_seconds=600, window_limit=2)
    loop = Driver(config=config)
    assert "QuarantineNode" in kinds(loop.quarantine_auto("n1", 0))  # at t=4
    assert "QuarantineNode" in kinds(loop.quarantine_auto("n2", 300))  # at t=304
    # t=654: the first has left the window, the second has not: one in the window.
    assert "QuarantineNode" in kinds(loop.quarantine_auto("n3", 650))
    assert not loop.policy.state.breaker_tripped
    # t=704: 304 and 654 are both within 600 s: this one trips the breaker.
    assert "breaker.tripped" in kinds(loop.quarantine_auto("n4", 700))
    assert list(loop.policy.state.auto_quarantine_times) == [304.0, 654.0]


def test_pause_stops_actions_and_resume_restarts() -> None:
    loop = Driver()
    paused = loop.feed(OperatorCommand(sid(), "pause", "admin:alice", "maintenance"), 0)
    assert kinds(paused) == ["automation.paused"]
    loop.poll("n1", 1)
    assert loop.poll("n1", 2) == []
    loop.feed(OperatorCommand(sid(), "resume"), 3)
    assert isinstance(loop.poll("n1", 4)[0], StartRecovery)


def test_pause_while_quarantined_neither_verifies_nor_releases() -> None:
    loop = Driver()
    loop.quarantine_auto("n1", 0)
    loop.feed(OperatorCommand(sid(), "pause", "admin:alice", "investigating"), 10)
    for now in range(11, 30):
        assert loop.healthy("n1", now) == []  # no verify-clean asked for
        # Even verify-clean results that still arrive release nothing.
        assert loop.verify("n1", now) == []
    assert loop.policy.state.node("n1").quarantine == AUTO
    loop.feed(OperatorCommand(sid(), "resume", "admin:alice"), 30)
    assert loop.healthy("n1", 31) == [VerifyClean("n1")]
    assert kinds(loop.verify("n1", 31)) == ["ReleaseNode"]


def test_operator_commands_are_audited_with_actor_and_reason() -> None:
    loop = Driver()
    for command in ("pause", "pause", "resume", "reset-breaker"):
        actions = loop.feed(OperatorCommand(sid(), command, "admin:alice", "change 42"), 0)
        assert len(actions) == 1, command  # also a repeat that changes nothing
        event = actions[0]
        assert isinstance(event, EmitEvent)
        attributes = dict(event.attributes)
        assert attributes["actor"] == "admin:alice"
        assert attributes["reason"] == "change 42"
        assert attributes["command"] == command
        assert "admin:alice" in event.message and "change 42" in event.message


def test_cause_ids_keep_the_first_and_the_latest() -> None:
    assert keep_causes(["a", "b", "", "a", "c"], 5) == ("a", "b", "c")
    ids = [f"{i:012d}" for i in range(100)]
    assert keep_causes(ids, 20) == (ids[0], *ids[80:])


def test_cause_ids_stay_bounded_while_a_node_keeps_failing() -> None:
    config = PolicyConfig(cause_ids_kept=20)
    loop = Driver(config=config)
    loop.feed(OperatorCommand(sid(), "pause"), 0)
    for now in range(1, 2001):
        loop.poll("n1", now)
        loop.feed(EventRecorded(sid(), "n1", "recovery.failed", f"r{now}"), now)
    state = loop.policy.state.node("n1")
    first = loop.ids("check.failed", "n1")
    assert len(first) == 1  # the failure is announced once, not per poll
    assert len(state.cause_ids) == 21
    assert state.cause_ids[0] == first[0]
    assert state.cause_ids[-20:] == tuple(f"r{now}" for now in range(1981, 2001))


def test_in_flight_recovery_times_out_and_a_late_report_is_ignored() -> None:
    loop = Driver(config=PolicyConfig(recovery_deadline=120))
    loop.poll("n1", 0)
    assert isinstance(loop.poll("n1", 10)[0], StartRecovery)
    stale = loop.policy.state.node("n1").recovery_id
    # Healthy polls do not end a recovery in flight, until its deadline passes.
    assert kinds(loop.healthy("n1", 20)) == ["node.healthy"]
    assert loop.healthy("n1", 129) == []
    assert loop.policy.state.node("n1").recovery_in_flight
    actions = loop.healthy("n1", 130)
    assert kinds(actions) == ["recovery.failed"]
    assert isinstance(actions[0], EmitEvent)
    assert ("timed_out", "true") in actions[0].attributes
    assert not loop.policy.state.node("n1").recovery_in_flight
    # The lost task reports after all: it is ignored.
    assert loop.feed(RecoveryFinished(sid(), "n1", True, "", stale), 131) == []
    assert not loop.policy.state.node("n1").awaiting_confirmation


def test_timed_out_recovery_counts_toward_escalation() -> None:
    loop = Driver(config=PolicyConfig(recovery_deadline=50))
    loop.poll("n1", 0)
    assert isinstance(loop.poll("n1", 1)[0], StartRecovery)
    now = 1.0
    for attempt in range(1, 5):
        now += 50  # the task never reports: the poll times it out
        actions = loop.poll("n1", now)
        assert kinds(actions)[0] == "recovery.failed"
        if attempt < 4:
            assert "StartRecovery" in kinds(actions)
    assert kinds(actions)[-2:] == ["escalation", "QuarantineNode"]


def test_report_of_another_recovery_is_ignored() -> None:
    loop = Driver()
    loop.poll("n1", 0)
    loop.poll("n1", 1)
    assert loop.feed(RecoveryFinished(sid(), "n1", False, "", "some-other-id"), 2) == []
    assert loop.policy.state.node("n1").recovery_in_flight


def test_error_counts_as_failing_only_once_persistent() -> None:
    loop = Driver()
    fix = (("reconnect-libvirt", ""),)
    libvirt = "host.libvirt:"
    # An error that comes and goes never counts.
    for now in range(0, 20, 2):
        assert loop.poll("n1", now, failing=(), erroring=(libvirt,), error_fix=fix) == []
        assert loop.healthy("n1", now + 1) == []
    # Persistent: failing from the 2nd poll on, recovered after 2 failing polls.
    assert loop.poll("n1", 30, failing=(), erroring=(libvirt,), error_fix=fix) == []
    assert kinds(loop.poll("n1", 31, failing=(), erroring=(libvirt,), error_fix=fix)) == [
        "check.failed"
    ]
    actions = loop.poll("n1", 32, failing=(), erroring=(libvirt,), error_fix=fix)
    assert isinstance(actions[0], StartRecovery) and actions[0].actions == fix


def test_error_alone_without_a_catalogue_action_never_escalates() -> None:
    loop = Driver()
    for now in range(200):
        actions = loop.poll("n1", now, failing=(), erroring=("host.cgroups:",))
        assert not any(isinstance(a, QuarantineNode | StartRecovery) for a in actions)
    assert loop.policy.state.node("n1").quarantine is None
    assert not loop.policy.state.breaker_tripped


def test_error_escalates_once_attempted_recoveries_fail() -> None:
    loop = Driver()
    fix = (("reconnect-libvirt", ""),)
    actions: list[Action] = []
    now = 0.0
    for _ in range(20):
        now += 1
        actions = loop.poll("n1", now, failing=(), erroring=("host.libvirt:",), error_fix=fix)
        if loop.policy.state.node("n1").recovery_in_flight:
            actions = loop.finish("n1", now, False, "libvirt still down")
        if "QuarantineNode" in kinds(actions):
            break
    assert "QuarantineNode" in kinds(actions)
    assert loop.policy.state.node("n1").attempted_failures == 4


def test_fleet_change_forgets_removed_nodes() -> None:
    loop = Driver(nodes=3)
    loop.poll("n3", 1)
    loop.feed(FleetChanged(sid(), ("n1", "n2")), 2)
    assert set(loop.policy.state.nodes) == {"n1", "n2"}


def test_error_escalates_after_a_pause_only_if_a_recovery_really_failed() -> None:
    # Past the limit while paused (a FAIL without catalogue action counted its polls,
    # or recoveries failed); after resume only an ERROR remains.
    libvirt = ("host.libvirt:",)
    for attempted in (0, 1):
        loop = Driver()
        loop.policy.state.nodes["n1"] = NodePolicyState(
            consecutive_failures=6, failed_recoveries=4, attempted_failures=attempted
        )
        actions: list[Action] = []
        for now in (1, 2):
            actions = loop.poll("n1", now, failing=(), erroring=libvirt)
        assert ("QuarantineNode" in kinds(actions)) is bool(attempted), attempted


# -- the per-node memory a new leader starts from --------------------------------------


def through_store(node: NodePolicyState) -> NodePolicyState:
    """node_memory -> JSON bytes -> restore_node, as the loop and the next leader do."""
    return restore_node(json.loads(json.dumps(node_memory(node, PolicyConfig()))))


def test_a_node_with_nothing_to_remember_stores_nothing() -> None:
    assert node_memory(NodePolicyState(), PolicyConfig()) == {}
    loop = Driver()
    loop.poll("n1", 1)
    loop.healthy("n1", 2)
    assert loop.policy.memory("n1") == {}


def test_the_escalation_budget_survives_a_new_leader() -> None:
    """Two failed recoveries under one leader: the next one escalates after the
    remaining two, not after four more."""
    first = Driver()
    now = 0.0
    first.poll("n1", now)
    for _ in range(2):
        now += 1
        assert kinds(first.poll("n1", now))[0] == "StartRecovery"
        now += 1
        first.finish("n1", now, False, "lock busy")
    remembered = first.policy.state.node("n1")
    assert remembered.failed_recoveries == 2

    second = Driver()
    second.policy.state.nodes["n1"] = through_store(remembered)
    restored = second.policy.state.node("n1")
    assert restored.failed_recoveries == 2 and restored.attempted_failures == 2
    assert restored.consecutive_failures == PolicyConfig().failures_before_recovery  # capped
    assert restored.last_failing == (LOCKS,) and restored.cause_ids == remembered.cause_ids
    actions: list[Action] = []
    for attempt in range(2):
        now += 1
        assert kinds(second.poll("n1", now))[0] == "StartRecovery", attempt
        now += 1
        actions = second.finish("n1", now, False, "lock busy")
    assert kinds(actions) == ["recovery.failed", "escalation", "QuarantineNode"]
    quarantine = actions[2]
    assert isinstance(quarantine, QuarantineNode) and "4 failed recoveries" in quarantine.reason
    # The first leader's causes are still named.
    assert set(remembered.cause_ids) <= set(quarantine.cause_ids)


def test_a_recovery_in_flight_comes_back_with_its_outcome_unknown() -> None:
    """As a reported success: confirmed or found ineffective by the next poll, and
    the next attempt waits the usual failing polls (the old one may still run)."""
    loop = Driver()
    loop.poll("n1", 1)
    loop.poll("n1", 2)  # starts a recovery; its leader goes away before it reports
    assert loop.policy.state.node("n1").recovery_in_flight
    restored = through_store(loop.policy.state.node("n1"))
    assert not restored.recovery_in_flight and restored.awaiting_confirmation
    assert restored.consecutive_failures == 0

    still_failing = Driver()
    still_failing.policy.state.nodes["n1"] = restored
    assert kinds(still_failing.poll("n1", 3)) == ["recovery.ineffective", "check.failed"]
    assert still_failing.policy.state.node("n1").failed_recoveries == 1
    assert kinds(still_failing.poll("n1", 4)) == ["StartRecovery", "recovery.started"]

    cleared = Driver()
    cleared.policy.state.nodes["n1"] = restored
    assert kinds(cleared.healthy("n1", 3)) == ["node.healthy"]


def test_streaks_are_kept_only_as_far_as_they_decide() -> None:
    """A node that keeps failing while paused, or whose check keeps erroring,
    stops changing its memory: no write every poll."""
    loop = Driver()
    loop.feed(OperatorCommand(sid(), "pause", "admin:alice"), 0)
    memories = []
    for now in range(1, 8):
        loop.poll("n1", now, failing=(), erroring=("host.libvirt:",))
        loop.poll("n2", now)
        memories.append((loop.policy.memory("n1"), loop.policy.memory("n2")))
    assert loop.policy.state.node("n2").consecutive_failures == 7
    assert memories[-1] == memories[2]
    n1, n2 = memories[-1]
    assert n1["error_streaks"] == [["host.libvirt:", PolicyConfig().errors_before_failing]]
    assert n2["consecutive_failures"] == PolicyConfig().failures_before_recovery
    # Restored at the cap, the decisions are the same: recovery once resumed.
    after = Driver()
    after.policy.state.nodes["n2"] = restore_node(n2)
    assert kinds(after.poll("n2", 9))[0] == "StartRecovery"


def test_an_escalation_without_its_quarantine_yet_is_not_remembered_as_one() -> None:
    policy = Driver().policy
    for now in range(6):
        policy.handle(HealthObserved(sid(), "n1", (LOCKS,), ()), now)
    state = policy.state.node("n1")
    assert state.quarantine == AUTO and state.pending_quarantine  # no event id yet
    restored = through_store(state)
    assert restored.quarantine is None and restored.failed_recoveries == state.failed_recoveries
    # The next leader escalates again at its first failing poll.
    again = Driver()
    again.policy.state.nodes["n1"] = restored
    assert kinds(again.poll("n1", 10, fix=())) == ["escalation", "QuarantineNode"]


def test_an_auto_quarantine_keeps_its_release_count() -> None:
    loop = Driver()
    loop.quarantine_auto("n1", 0)
    loop.healthy("n1", 10)
    loop.verify("n1", 10)
    state = loop.policy.state.node("n1")
    assert state.clean_passes == 1
    restored = through_store(state)
    assert (restored.quarantine, restored.quarantine_checks, restored.clean_passes) == (
        AUTO,
        (LOCKS,),
        1,
    )
    assert not restored.causes_clear  # a fresh poll must say so again
    after = Driver()
    after.policy.state.nodes["n1"] = restored
    actions: list[Action] = []
    for now in (11, 12):
        after.healthy("n1", now)
        actions = after.verify("n1", now)
    assert kinds(actions) == ["ReleaseNode"]


def test_a_damaged_memory_costs_counters_not_the_loop() -> None:
    damaged: dict[str, Any] = {
        "failed_recoveries": "3",
        "consecutive_failures": -2,
        "attempted_failures": True,
        "last_failing": "host.locks:",
        "error_streaks": [["host.libvirt:", 2], ["bad"], [3, 1], ["x", 0]],
        "quarantine": "sometimes",
        "clean_passes": 4,
        "awaiting_confirmation": "yes",
    }
    restored = restore_node(damaged)
    assert restored == NodePolicyState(error_streaks=(("host.libvirt:", 2),))


def test_the_policy_names_the_nodes_it_changed() -> None:
    loop = Driver(3)
    loop.policy.take_changed()
    loop.poll("n2", 1)
    assert loop.policy.take_changed() == {"n2"}
    assert loop.policy.take_changed() == set()
    loop.policy.handle(FleetChanged(sid(), ("n1", "n2")), 2)
    assert loop.policy.take_changed() == {"n3"}
