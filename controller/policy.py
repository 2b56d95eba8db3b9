"""The automation policy: a pure state machine over (state, stimulus, now) -> actions.

The leader's automation loop (controller/automation.py) feeds it observations
(health polls, recovery outcomes, verify-clean results, operator commands) and
carries out the actions it returns. Nothing here does I/O or reads a clock, so
every transition is tested with plain values (tests/unit/test_policy.py).

Rules (issue #5):
- a node failing ``failures_before_recovery`` consecutive polls gets automatic
  recovery (one attempt in flight at a time);
- a recovery fails when it reports failure, or when the poll after it still fails;
- more than ``max_failed_recoveries`` failed recoveries → automatic quarantine,
  with an escalation event naming the checks and event ids that caused it;
- an auto-quarantined node that passes verify-clean ``clean_passes_to_release``
  consecutive times is released; manual quarantines are never lifted here;
- circuit breaker: an automatic quarantine that would make quarantined nodes
  exceed ``max_quarantined_share`` of the fleet (at least one node allowed), or
  the ``window_limit``-th automatic quarantine within ``window_seconds``, trips
  the breaker instead; a tripped breaker stops automatic quarantines until an
  operator resets it;
- paused: observations still update counters, but no action is taken.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace

MANUAL = "manual"
AUTO = "auto"


@dataclass(frozen=True)
class PolicyConfig:
    failures_before_recovery: int = 2
    max_failed_recoveries: int = 3
    clean_passes_to_release: int = 3
    max_quarantined_share: float = 0.10
    window_seconds: float = 3600.0
    window_limit: int = 3


# -- stimuli -----------------------------------------------------------------------


@dataclass(frozen=True)
class HealthObserved:
    """A health poll of one node; ``failing`` names the failing check ids."""

    stimulus_id: str
    node: str
    failing: tuple[str, ...]
    cause_ids: tuple[str, ...] = ()
    recover_actions: tuple[tuple[str, str], ...] = ()  # (action, target) per failing check

    @property
    def healthy(self) -> bool:
        return not self.failing


@dataclass(frozen=True)
class RecoveryFinished:
    stimulus_id: str
    node: str
    succeeded: bool
    detail: str = ""


@dataclass(frozen=True)
class VerifyCleanObserved:
    stimulus_id: str
    node: str
    clean: bool


@dataclass(frozen=True)
class QuarantineChanged:
    """An operator (or a previous leader) changed a node's quarantine in the store."""

    stimulus_id: str
    node: str
    quarantined: bool
    source: str = MANUAL


@dataclass(frozen=True)
class FleetChanged:
    stimulus_id: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class OperatorCommand:
    """pause | resume | reset-breaker."""

    stimulus_id: str
    command: str
    actor: str = ""


Stimulus = (
    HealthObserved
    | RecoveryFinished
    | VerifyCleanObserved
    | QuarantineChanged
    | FleetChanged
    | OperatorCommand
)

# -- actions -----------------------------------------------------------------------


@dataclass(frozen=True)
class StartRecovery:
    node: str
    actions: tuple[tuple[str, str], ...]  # (catalogue action, target)
    cause_ids: tuple[str, ...]


@dataclass(frozen=True)
class QuarantineNode:
    node: str
    reason: str
    checks: tuple[str, ...]
    cause_ids: tuple[str, ...]


@dataclass(frozen=True)
class ReleaseNode:
    node: str
    reason: str
    cause_ids: tuple[str, ...]


@dataclass(frozen=True)
class VerifyClean:
    node: str


@dataclass(frozen=True)
class EmitEvent:
    kind: str
    node: str
    message: str
    cause_ids: tuple[str, ...] = ()


Action = StartRecovery | QuarantineNode | ReleaseNode | VerifyClean | EmitEvent

# -- state -------------------------------------------------------------------------


@dataclass(frozen=True)
class NodePolicyState:
    consecutive_failures: int = 0
    failed_recoveries: int = 0
    recovery_in_flight: bool = False
    awaiting_confirmation: bool = False
    clean_passes: int = 0
    quarantine: str | None = None  # None | "manual" | "auto"
    last_failing: tuple[str, ...] = ()
    cause_ids: tuple[str, ...] = ()


@dataclass
class PolicyState:
    nodes: dict[str, NodePolicyState] = field(default_factory=dict)
    paused: bool = False
    breaker_tripped: bool = False
    breaker_reason: str = ""
    auto_quarantine_times: deque[float] = field(default_factory=deque)

    def node(self, name: str) -> NodePolicyState:
        return self.nodes.get(name, NodePolicyState())

    @property
    def quarantined_count(self) -> int:
        return sum(1 for n in self.nodes.values() if n.quarantine is not None)

    @property
    def auto_quarantined(self) -> list[str]:
        return sorted(name for name, n in self.nodes.items() if n.quarantine == AUTO)


def allowed_quarantined(fleet_size: int, share: float) -> int:
    """How many nodes may be quarantined at once: the share of the fleet, at least 1."""
    return max(1, math.floor(fleet_size * share + 1e-9))


class Policy:
    """Applies stimuli to a PolicyState; returns the actions to carry out."""

    def __init__(self, config: PolicyConfig | None = None, state: PolicyState | None = None):
        self.config = config or PolicyConfig()
        self.state = state or PolicyState()

    def handle(self, stimulus: Stimulus, now: float) -> list[Action]:
        if isinstance(stimulus, HealthObserved):
            return self._health(stimulus, now)
        if isinstance(stimulus, RecoveryFinished):
            return self._recovery_finished(stimulus, now)
        if isinstance(stimulus, VerifyCleanObserved):
            return self._verify_clean(stimulus)
        if isinstance(stimulus, QuarantineChanged):
            return self._quarantine_changed(stimulus)
        if isinstance(stimulus, FleetChanged):
            return self._fleet_changed(stimulus)
        return self._operator(stimulus)

    # -- transitions ---------------------------------------------------------------

    def _set(self, node: str, value: NodePolicyState) -> None:
        self.state.nodes[node] = value

    def _health(self, obs: HealthObserved, now: float) -> list[Action]:
        current = self.state.node(obs.node)
        if current.quarantine is not None:
            # Quarantined nodes are judged by verify-clean, not by polls.
            return (
                [] if self.state.paused or current.quarantine != AUTO else [VerifyClean(obs.node)]
            )
        if obs.healthy:
            recovered = current.consecutive_failures > 0 or current.awaiting_confirmation
            self._set(
                obs.node,
                replace(
                    current,
                    consecutive_failures=0,
                    failed_recoveries=0,
                    awaiting_confirmation=False,
                    last_failing=(),
                    cause_ids=(),
                ),
            )
            if recovered:
                return [
                    EmitEvent(
                        "node.healthy",
                        obs.node,
                        f"{obs.node} passes its checks again",
                        (obs.stimulus_id,),
                    )
                ]
            return []
        causes = tuple(dict.fromkeys(current.cause_ids + obs.cause_ids + (obs.stimulus_id,)))
        failed_recoveries = current.failed_recoveries
        actions: list[Action] = []
        if current.awaiting_confirmation:
            # The last recovery said it succeeded, yet the node still fails.
            failed_recoveries += 1
            actions.append(
                EmitEvent(
                    "recovery.ineffective",
                    obs.node,
                    f"recovery on {obs.node} did not clear: {', '.join(obs.failing)}",
                    causes,
                )
            )
        updated = replace(
            current,
            consecutive_failures=current.consecutive_failures + 1,
            failed_recoveries=failed_recoveries,
            awaiting_confirmation=False,
            last_failing=obs.failing,
            cause_ids=causes,
        )
        self._set(obs.node, updated)
        if current.consecutive_failures == 0:
            actions.append(
                EmitEvent(
                    "check.failed", obs.node, f"{obs.node} fails: {', '.join(obs.failing)}", causes
                )
            )
        actions += self._escalate_or_recover(obs.node, obs.recover_actions, now)
        return actions

    def _escalate_or_recover(
        self, node: str, recover_actions: tuple[tuple[str, str], ...], now: float
    ) -> list[Action]:
        current = self.state.node(node)
        if self.state.paused or current.recovery_in_flight:
            return []
        if current.failed_recoveries > self.config.max_failed_recoveries:
            return self._auto_quarantine(node, now)
        if current.consecutive_failures < self.config.failures_before_recovery:
            return []
        if not recover_actions:
            # Nothing in the catalogue fixes these checks: each poll counts as a failed
            # recovery, so the node escalates instead of failing silently forever.
            self._set(node, replace(current, failed_recoveries=current.failed_recoveries + 1))
            if self.state.node(node).failed_recoveries > self.config.max_failed_recoveries:
                return self._auto_quarantine(node, now)
            return []
        self._set(node, replace(current, recovery_in_flight=True))
        return [
            StartRecovery(node, recover_actions, current.cause_ids),
            EmitEvent(
                "recovery.started",
                node,
                f"recovering {node}: " + ", ".join(a for a, _ in recover_actions),
                current.cause_ids,
            ),
        ]

    def _recovery_finished(self, done: RecoveryFinished, now: float) -> list[Action]:
        current = self.state.node(done.node)
        causes = (*current.cause_ids, done.stimulus_id)
        if done.succeeded:
            self._set(
                done.node,
                replace(
                    current,
                    recovery_in_flight=False,
                    awaiting_confirmation=True,
                    consecutive_failures=0,
                ),
            )
            return [
                EmitEvent(
                    "recovery.succeeded", done.node, f"recovery on {done.node} finished", causes
                )
            ]
        updated = replace(
            current,
            recovery_in_flight=False,
            failed_recoveries=current.failed_recoveries + 1,
            cause_ids=causes,
        )
        self._set(done.node, updated)
        actions: list[Action] = [
            EmitEvent(
                "recovery.failed",
                done.node,
                f"recovery on {done.node} failed ({updated.failed_recoveries} failed so far)"
                + (f": {done.detail}" if done.detail else ""),
                causes,
            )
        ]
        if updated.failed_recoveries > self.config.max_failed_recoveries and not self.state.paused:
            actions += self._auto_quarantine(done.node, now)
        return actions

    def _auto_quarantine(self, node: str, now: float) -> list[Action]:
        current = self.state.node(node)
        causes = current.cause_ids
        if self.state.breaker_tripped:
            return []
        window = self.state.auto_quarantine_times
        while window and window[0] <= now - self.config.window_seconds:
            window.popleft()
        fleet = len(self.state.nodes)
        allowed = allowed_quarantined(fleet, self.config.max_quarantined_share)
        reason = ""
        if self.state.quarantined_count + 1 > allowed:
            reason = (
                f"quarantining {node} would make {self.state.quarantined_count + 1} of "
                f"{fleet} nodes quarantined (limit {allowed}, "
                f"{self.config.max_quarantined_share:.0%} of the fleet)"
            )
        elif len(window) >= self.config.window_limit:
            reason = (
                f"{len(window)} automatic quarantines within "
                f"{self.config.window_seconds:.0f}s (limit {self.config.window_limit})"
            )
        if reason:
            self.state.breaker_tripped = True
            self.state.breaker_reason = reason
            return [
                EmitEvent("breaker.tripped", node, f"circuit breaker tripped: {reason}", causes)
            ]
        window.append(now)
        failing = current.last_failing
        summary = (
            f"{current.failed_recoveries} failed recoveries; failing: "
            f"{', '.join(failing) or 'unknown'}"
        )
        self._set(node, replace(current, quarantine=AUTO, clean_passes=0, recovery_in_flight=False))
        return [
            QuarantineNode(node, f"automatic: {summary}", failing, causes),
            EmitEvent("escalation", node, f"{node} quarantined automatically: {summary}", causes),
        ]

    def _verify_clean(self, obs: VerifyCleanObserved) -> list[Action]:
        current = self.state.node(obs.node)
        if current.quarantine != AUTO:
            return []
        if not obs.clean:
            self._set(obs.node, replace(current, clean_passes=0))
            return []
        passes = current.clean_passes + 1
        self._set(obs.node, replace(current, clean_passes=passes))
        if passes < self.config.clean_passes_to_release or self.state.paused:
            return []
        self._set(obs.node, NodePolicyState())
        reason = f"automatic: verify-clean passed {passes} consecutive times"
        return [
            ReleaseNode(obs.node, reason, (obs.stimulus_id,)),
            EmitEvent(
                "unquarantine", obs.node, f"{obs.node} released: {reason}", (obs.stimulus_id,)
            ),
        ]

    def _quarantine_changed(self, change: QuarantineChanged) -> list[Action]:
        current = self.state.node(change.node)
        if change.quarantined:
            self._set(change.node, replace(current, quarantine=change.source, clean_passes=0))
        else:
            self._set(change.node, NodePolicyState())
        return []

    def _fleet_changed(self, change: FleetChanged) -> list[Action]:
        names = set(change.nodes)
        for name in list(self.state.nodes):
            if name not in names:
                del self.state.nodes[name]
        for name in names:
            self.state.nodes.setdefault(name, NodePolicyState())
        return []

    def _operator(self, command: OperatorCommand) -> list[Action]:
        who = f" by {command.actor}" if command.actor else ""
        if command.command == "pause":
            self.state.paused = True
            return [
                EmitEvent(
                    "automation.paused", "", f"automation paused{who}", (command.stimulus_id,)
                )
            ]
        if command.command == "resume":
            self.state.paused = False
            return [
                EmitEvent(
                    "automation.resumed", "", f"automation resumed{who}", (command.stimulus_id,)
                )
            ]
        if command.command == "reset-breaker":
            was = self.state.breaker_tripped
            self.state.breaker_tripped = False
            self.state.breaker_reason = ""
            self.state.auto_quarantine_times.clear()
            if not was:
                return []
            return [
                EmitEvent(
                    "breaker.reset", "", f"circuit breaker reset{who}", (command.stimulus_id,)
                )
            ]
        raise ValueError(f"unknown operator command {command.command!r}")
