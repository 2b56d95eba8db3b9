"""The automation policy, driven by stimuli and plain timestamps: no sleeps, no servers."""

from __future__ import annotations

import itertools

from novaops.controller.policy import (
    AUTO,
    Action,
    EmitEvent,
    FleetChanged,
    HealthObserved,
    OperatorCommand,
    Policy,
    PolicyConfig,
    QuarantineChanged,
    QuarantineNode,
    RecoveryFinished,
    ReleaseNode,
    StartRecovery,
    VerifyClean,
    VerifyCleanObserved,
    allowed_quarantined,
)

_ids = itertools.count(1)
FIX = (("remove-stale-locks", ""),)


def sid() -> str:
    return f"ev-{next(_ids)}"


def fleet(n: int, config: PolicyConfig | None = None) -> Policy:
    policy = Policy(config or PolicyConfig())
    policy.handle(FleetChanged(sid(), tuple(f"n{i}" for i in range(1, n + 1))), 0)
    return policy


def fail(
    policy: Policy, node: str, now: float, fix: tuple[tuple[str, str], ...] = FIX
) -> list[Action]:
    return policy.handle(HealthObserved(sid(), node, ("host.stale_locks",), ("chk-1",), fix), now)


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ if not isinstance(a, EmitEvent) else a.kind for a in actions]


def test_recovery_after_k_consecutive_failures() -> None:
    policy = fleet(10)
    assert kinds(fail(policy, "n1", 1)) == ["check.failed"]
    actions = fail(policy, "n1", 2)
    assert kinds(actions) == ["StartRecovery", "recovery.started"]
    start = actions[0]
    assert isinstance(start, StartRecovery) and start.actions == FIX
    assert "chk-1" in start.cause_ids
    # One recovery in flight at a time.
    assert fail(policy, "n1", 3) == []


def test_healthy_poll_resets_counters() -> None:
    policy = fleet(10)
    fail(policy, "n1", 1)
    assert kinds(policy.handle(HealthObserved(sid(), "n1", ()), 2)) == ["node.healthy"]
    assert kinds(fail(policy, "n1", 3)) == ["check.failed"]


def test_successful_recovery_that_clears_the_fault() -> None:
    policy = fleet(10)
    fail(policy, "n1", 1)
    fail(policy, "n1", 2)
    assert kinds(policy.handle(RecoveryFinished(sid(), "n1", True), 3)) == ["recovery.succeeded"]
    assert kinds(policy.handle(HealthObserved(sid(), "n1", ()), 4)) == ["node.healthy"]
    assert policy.state.node("n1").failed_recoveries == 0


def test_escalation_after_the_fourth_failed_recovery() -> None:
    policy = fleet(10)
    now = 0.0
    fail(policy, "n1", now)
    for attempt in range(1, 5):
        now += 1
        actions = fail(policy, "n1", now)
        assert isinstance(actions[0], StartRecovery), (attempt, actions)
        now += 1
        actions = policy.handle(RecoveryFinished(sid(), "n1", False, "lock busy"), now)
        if attempt < 4:
            assert kinds(actions) == ["recovery.failed"]
    assert kinds(actions) == ["recovery.failed", "QuarantineNode", "escalation"]
    quarantine = actions[1]
    assert isinstance(quarantine, QuarantineNode)
    assert quarantine.checks == ("host.stale_locks",)
    assert "chk-1" in quarantine.cause_ids
    assert "4 failed recoveries" in quarantine.reason
    assert policy.state.node("n1").quarantine == AUTO


def test_ineffective_recovery_counts_as_failed() -> None:
    policy = fleet(10)
    fail(policy, "n1", 1)
    fail(policy, "n1", 2)
    policy.handle(RecoveryFinished(sid(), "n1", True), 3)
    actions = fail(policy, "n1", 4)
    assert "recovery.ineffective" in kinds(actions)
    assert policy.state.node("n1").failed_recoveries == 1


def test_unfixable_fault_escalates_without_catalogue_action() -> None:
    policy = fleet(10)
    actions: list[Action] = []
    for now in range(1, 10):
        actions = fail(policy, "n1", now, fix=())
        if any(isinstance(a, QuarantineNode) for a in actions):
            break
    assert any(isinstance(a, QuarantineNode) for a in actions)


def quarantine_auto(policy: Policy, node: str, start: float) -> list[Action]:
    now = start
    actions: list[Action] = []
    fail(policy, node, now)
    for _ in range(4):
        now += 1
        fail(policy, node, now)
        actions = policy.handle(RecoveryFinished(sid(), node, False), now)
    return actions


def test_auto_quarantined_node_released_after_m_clean_passes() -> None:
    policy = fleet(10)
    quarantine_auto(policy, "n1", 0)
    # Polls of a quarantined node ask for verify-clean instead of recovery.
    assert fail(policy, "n1", 20) == [VerifyClean("n1")]
    policy.handle(VerifyCleanObserved(sid(), "n1", True), 21)
    policy.handle(VerifyCleanObserved(sid(), "n1", False), 22)  # resets the streak
    assert policy.handle(VerifyCleanObserved(sid(), "n1", True), 23) == []
    assert policy.handle(VerifyCleanObserved(sid(), "n1", True), 24) == []
    actions = policy.handle(VerifyCleanObserved(sid(), "n1", True), 25)
    assert kinds(actions) == ["ReleaseNode", "unquarantine"]
    assert isinstance(actions[0], ReleaseNode)
    assert policy.state.node("n1").quarantine is None


def test_manual_quarantine_is_never_lifted_automatically() -> None:
    policy = fleet(10)
    policy.handle(QuarantineChanged(sid(), "n2", True, "manual"), 0)
    assert fail(policy, "n2", 1) == []
    for now in range(2, 10):
        assert policy.handle(VerifyCleanObserved(sid(), "n2", True), now) == []
    assert policy.state.node("n2").quarantine == "manual"


def test_breaker_by_share_of_fleet() -> None:
    policy = fleet(10)
    assert allowed_quarantined(10, 0.10) == 1
    assert allowed_quarantined(3, 0.10) == 1
    assert allowed_quarantined(50, 0.10) == 5
    results = [quarantine_auto(policy, f"n{i}", i * 100) for i in range(1, 6)]
    quarantined = [n for n, s in policy.state.nodes.items() if s.quarantine == AUTO]
    assert quarantined == ["n1"]
    assert policy.state.breaker_tripped
    assert "would make 2 of 10 nodes quarantined" in policy.state.breaker_reason
    assert "breaker.tripped" in kinds(results[1])
    # Tripped: later escalations do nothing until an operator resets it.
    assert all("QuarantineNode" not in kinds(r) for r in results[1:])
    reset = policy.handle(OperatorCommand(sid(), "reset-breaker", "admin"), 1000)
    assert kinds(reset) == ["breaker.reset"]
    assert not policy.state.breaker_tripped


def test_breaker_by_window() -> None:
    config = PolicyConfig(max_quarantined_share=1.0, window_seconds=600, window_limit=2)
    policy = fleet(10, config)
    quarantine_auto(policy, "n1", 0)
    quarantine_auto(policy, "n2", 10)
    actions = quarantine_auto(policy, "n3", 20)
    assert "breaker.tripped" in kinds(actions)
    assert "2 automatic quarantines within 600s" in policy.state.breaker_reason
    # Outside the window the count starts again (after a reset).
    policy.handle(OperatorCommand(sid(), "reset-breaker"), 700)
    assert "QuarantineNode" in kinds(quarantine_auto(policy, "n4", 2000))


def test_pause_stops_actions_and_resume_restarts() -> None:
    policy = fleet(10)
    assert kinds(policy.handle(OperatorCommand(sid(), "pause", "alice"), 0)) == [
        "automation.paused"
    ]
    fail(policy, "n1", 1)
    assert fail(policy, "n1", 2) == []
    policy.handle(OperatorCommand(sid(), "resume"), 3)
    assert isinstance(fail(policy, "n1", 4)[0], StartRecovery)


def test_fleet_change_forgets_removed_nodes() -> None:
    policy = fleet(3)
    fail(policy, "n3", 1)
    policy.handle(FleetChanged(sid(), ("n1", "n2")), 2)
    assert set(policy.state.nodes) == {"n1", "n2"}
