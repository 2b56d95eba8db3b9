"""The automation policy: a pure state machine over (state, stimulus, now) -> actions.

The leader's automation loop (controller/automation.py) feeds it observations
(health polls, recovery outcomes, verify-clean results, the ids of the events it
recorded, operator commands) and carries out the actions it returns. Nothing
here does I/O or reads a clock, so every transition is tested with plain values
(tests/unit/test_policy.py).

Rules (issue #5):

- a node failing ``failures_before_recovery`` consecutive polls gets automatic
  recovery (one attempt in flight at a time);
- a recovery fails when it reports failure, when the poll after it still fails,
  or when it has not reported within ``recovery_deadline`` seconds (a lost task
  never leaves a node stuck "in flight"; a report arriving later is ignored);
- more than ``max_failed_recoveries`` failed recoveries → automatic quarantine:
  first an ``escalation`` event, then, once the loop reports that event's id,
  the quarantine itself, naming the failing checks and the cluster events
  (check.failed, recovery.failed/ineffective, escalation) that led to it;
- an auto-quarantined node is released after ``clean_passes_to_release``
  consecutive polls in which every check that caused the quarantine passes AND
  verify-clean then passes; a poll in which a causing check is not OK, or a
  verify-clean that fails, starts the count again. So a fault that comes and
  goes keeps its node quarantined instead of cycling it in and out (each cycle
  would count toward the breaker window). Manual quarantines are never lifted;
- circuit breaker: an automatic quarantine that would make quarantined nodes
  exceed ``max_quarantined_share`` of the fleet (at least one node allowed), or
  the ``window_limit``-th automatic quarantine within ``window_seconds``, trips
  the breaker instead; a tripped breaker stops automatic quarantines until an
  operator resets it. The breaker's state (tripped, reason, the window's
  quarantine times) is plain data the loop persists, so a new leader goes on;
- the per-node counters a new leader needs to go on where the last one stopped
  (failure streaks, the escalation budget spent, the release count of an
  automatic quarantine) are plain data too (:func:`node_memory`, restored by
  :func:`restore_node`); a recovery that was in flight when its leader's term
  ended comes back with its outcome unknown, judged by the next poll as a
  reported success is;
- paused: observations still update counters, but no action is taken (no
  recovery, no escalation, no verify-clean, no release);
- the cause ids kept per node are bounded: the first and the latest
  ``cause_ids_kept``.

ERROR checks (a check that could not run, as opposed to FAIL: it ran and found
a fault). A check that cannot tell is not a pass, so an ERROR never counts as
passing (it keeps an auto-quarantined node quarantined when it is one of the
causes). But automation acts on it only with care, so a broken check cannot
take nodes out of service:

- an ERROR counts as failing only once the same check (id and target) has been
  ERROR ``errors_before_failing`` consecutive polls; from then on the node is
  failing as with a FAIL, and recovery runs the actions the check names. Before
  that, a poll whose only non-OK checks are ERROR is inconclusive: it changes
  no counter (only a poll with every check OK makes a node healthy again);
- a node failing only through ERROR checks is never escalated for lack of a
  catalogue action (a FAIL without one escalates: each such poll counts as a
  failed recovery); it is escalated only after at least one recovery was
  actually attempted and failed (reported failure, or still failing after it).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

MANUAL = "manual"
AUTO = "auto"

RecoverActions = tuple[tuple[str, str], ...]  # (catalogue action, target)
Attributes = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PolicyConfig:
    failures_before_recovery: int = 2
    max_failed_recoveries: int = 3
    clean_passes_to_release: int = 3
    max_quarantined_share: float = 0.10
    window_seconds: float = 3600.0
    window_limit: int = 3
    errors_before_failing: int = 2
    recovery_deadline: float = 300.0
    cause_ids_kept: int = 20


def keep_causes(ids: Iterable[str], kept: int) -> tuple[str, ...]:
    """Distinct non-empty ids in order, bounded to the first and the latest ``kept``."""
    distinct = tuple(dict.fromkeys(i for i in ids if i))
    if len(distinct) <= kept + 1:
        return distinct
    return (distinct[0], *distinct[len(distinct) - kept :])


# -- stimuli -----------------------------------------------------------------------


@dataclass(frozen=True)
class HealthObserved:
    """A health poll of one node; check keys are "check_id:target".

    ``failing``: FAIL checks and ``recover_actions`` the catalogue actions they
    name; ``erroring``: ERROR checks and ``error_actions`` theirs.
    """

    stimulus_id: str
    node: str
    failing: tuple[str, ...]
    recover_actions: RecoverActions = ()
    erroring: tuple[str, ...] = ()
    error_actions: RecoverActions = ()

    @property
    def not_ok(self) -> frozenset[str]:
        return frozenset(self.failing) | frozenset(self.erroring)


@dataclass(frozen=True)
class RecoveryFinished:
    """A recovery ended; ``recovery_id`` is the StartRecovery's (stale reports are ignored)."""

    stimulus_id: str
    node: str
    succeeded: bool
    detail: str = ""
    recovery_id: str = ""


@dataclass(frozen=True)
class VerifyCleanObserved:
    stimulus_id: str
    node: str
    clean: bool


@dataclass(frozen=True)
class QuarantineChanged:
    """The store holds another quarantine state for the node than the policy thinks
    (an operator, or a previous leader): ``checks`` are the record's causes."""

    stimulus_id: str
    node: str
    quarantined: bool
    source: str = MANUAL
    checks: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class FleetChanged:
    stimulus_id: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class OperatorCommand:
    """pause | resume | reset-breaker, with who asked and why."""

    stimulus_id: str
    command: str
    actor: str = ""
    reason: str = ""


@dataclass(frozen=True)
class EventRecorded:
    """The loop recorded an EmitEvent marked ``cause``: its cluster event id ("" if the
    store refused it). The id joins the node's causes; an escalation's proceeds."""

    stimulus_id: str
    node: str
    kind: str
    event_id: str


Stimulus = (
    HealthObserved
    | RecoveryFinished
    | VerifyCleanObserved
    | QuarantineChanged
    | FleetChanged
    | OperatorCommand
    | EventRecorded
)

# -- actions -----------------------------------------------------------------------


@dataclass(frozen=True)
class StartRecovery:
    node: str
    actions: RecoverActions
    cause_ids: tuple[str, ...]
    recovery_id: str = ""


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
    """Record a cluster event. With ``cause`` the loop reports its id back (EventRecorded)."""

    kind: str
    node: str
    message: str
    cause_ids: tuple[str, ...] = ()
    attributes: Attributes = ()
    cause: bool = False


Action = StartRecovery | QuarantineNode | ReleaseNode | VerifyClean | EmitEvent

# -- state -------------------------------------------------------------------------


@dataclass(frozen=True)
class NodePolicyState:
    consecutive_failures: int = 0
    failed_recoveries: int = 0  # every failure toward escalation
    attempted_failures: int = 0  # of those, recoveries that actually ran and failed
    recovery_id: str = ""  # the recovery in flight, if any
    recovery_started: float = 0.0
    awaiting_confirmation: bool = False
    quarantine: str | None = None  # None | "manual" | "auto"
    quarantine_checks: tuple[str, ...] = ()  # the checks that caused an auto quarantine
    pending_quarantine: str = ""  # an escalation's reason, until its event id is known
    causes_clear: bool = False  # the latest poll passed every causing check
    clean_passes: int = 0
    last_failing: tuple[str, ...] = ()
    error_streaks: tuple[tuple[str, int], ...] = ()  # consecutive ERROR polls per check
    cause_ids: tuple[str, ...] = ()  # cluster event ids, bounded (keep_causes)

    @property
    def recovery_in_flight(self) -> bool:
        return bool(self.recovery_id)


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

    def breaker_snapshot(self) -> tuple[bool, bool, str, tuple[float, ...]]:
        """What the loop persists for the next leader: paused, tripped, reason, window."""
        return (
            self.paused,
            self.breaker_tripped,
            self.breaker_reason,
            tuple(self.auto_quarantine_times),
        )


def node_memory(node: NodePolicyState, config: PolicyConfig) -> dict[str, Any]:
    """What the loop persists of a node for the next leader ({}: nothing to keep).

    Streaks are kept only as far as they decide anything (capped at
    ``failures_before_recovery`` and ``errors_before_failing``), so a node that
    keeps failing does not need a write every poll. A recovery in flight is kept
    as a reported success is (outcome to be confirmed by the next poll, streak
    at 0, so the node waits ``failures_before_recovery`` polls before the next
    attempt): the next leader cannot hear its report.

    Not kept: whatever the store already knows better (a quarantine the store
    may not have yet, an escalation still waiting for its event id: the next
    leader escalates again from the counters) and what only a fresh poll may
    tell (whether the causing checks passed the latest poll)."""
    memory: dict[str, Any] = {}
    in_flight = node.recovery_in_flight
    streak = 0 if in_flight else min(node.consecutive_failures, config.failures_before_recovery)
    counters = (
        ("consecutive_failures", streak),
        ("failed_recoveries", node.failed_recoveries),
        ("attempted_failures", node.attempted_failures),
    )
    memory.update((key, value) for key, value in counters if value)
    if in_flight or node.awaiting_confirmation:
        memory["awaiting_confirmation"] = True
    if node.last_failing:
        memory["last_failing"] = list(node.last_failing)
    if node.error_streaks:
        cap = config.errors_before_failing
        memory["error_streaks"] = [[key, min(count, cap)] for key, count in node.error_streaks]
    if node.cause_ids:
        memory["cause_ids"] = list(node.cause_ids)
    if node.quarantine is not None and not node.pending_quarantine:
        memory["quarantine"] = node.quarantine
        if node.quarantine_checks:
            memory["quarantine_checks"] = list(node.quarantine_checks)
        if node.clean_passes:
            memory["clean_passes"] = node.clean_passes
    return memory


def restore_node(memory: Mapping[str, Any]) -> NodePolicyState:
    """A node's state from :func:`node_memory`'s output (also a JSON round trip of
    it); anything malformed counts as absent, so a damaged record costs counters,
    never the loop."""

    def count(key: str) -> int:
        value = memory.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    def strings(key: str) -> tuple[str, ...]:
        value = memory.get(key, ())
        if not isinstance(value, list | tuple):
            return ()
        return tuple(item for item in value if isinstance(item, str))

    raw_streaks = memory.get("error_streaks", ())
    streaks = tuple(
        (item[0], item[1])
        for item in (raw_streaks if isinstance(raw_streaks, list | tuple) else ())
        if isinstance(item, list | tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and item[1] > 0
    )
    quarantine = memory.get("quarantine")
    source = quarantine if quarantine in (MANUAL, AUTO) else None
    return NodePolicyState(
        consecutive_failures=count("consecutive_failures"),
        failed_recoveries=count("failed_recoveries"),
        attempted_failures=count("attempted_failures"),
        awaiting_confirmation=memory.get("awaiting_confirmation") is True,
        last_failing=strings("last_failing"),
        error_streaks=streaks,
        cause_ids=strings("cause_ids"),
        quarantine=source,
        quarantine_checks=strings("quarantine_checks") if source == AUTO else (),
        clean_passes=count("clean_passes") if source == AUTO else 0,
    )


def allowed_quarantined(fleet_size: int, share: float) -> int:
    """How many nodes may be quarantined at once: the share of the fleet, at least 1."""
    return max(1, math.floor(fleet_size * share + 1e-9))


class Policy:
    """Applies stimuli to a PolicyState; returns the actions to carry out."""

    def __init__(self, config: PolicyConfig | None = None, state: PolicyState | None = None):
        self.config = config or PolicyConfig()
        self.state = state or PolicyState()
        self._changed: set[str] = set()

    def memory(self, node: str) -> dict[str, Any]:
        """:func:`node_memory` of one node ({} when the policy does not know it)."""
        state = self.state.nodes.get(node)
        return node_memory(state, self.config) if state is not None else {}

    def take_changed(self) -> set[str]:
        """The nodes whose state was set or dropped since the last call."""
        changed, self._changed = self._changed, set()
        return changed

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
        if isinstance(stimulus, EventRecorded):
            return self._event_recorded(stimulus)
        return self._operator(stimulus)

    # -- transitions ---------------------------------------------------------------

    def _set(self, node: str, value: NodePolicyState) -> None:
        self.state.nodes[node] = value
        self._changed.add(node)

    def _causes(self, ids: Iterable[str]) -> tuple[str, ...]:
        return keep_causes(ids, self.config.cause_ids_kept)

    def _health(self, obs: HealthObserved, now: float) -> list[Action]:
        actions: list[Action] = []
        current = self.state.node(obs.node)
        if (
            current.recovery_in_flight
            and now - current.recovery_started >= self.config.recovery_deadline
        ):
            actions += self._recovery_failed(
                obs.node,
                f"no result within {self.config.recovery_deadline:.0f}s",
                now,
                timed_out=True,
            )
            current = self.state.node(obs.node)
        previous = dict(current.error_streaks)
        streaks = tuple((key, previous.get(key, 0) + 1) for key in sorted(set(obs.erroring)))
        persistent = tuple(k for k, n in streaks if n >= self.config.errors_before_failing)
        current = replace(current, error_streaks=streaks)
        self._set(obs.node, current)
        if current.quarantine is not None:
            return actions + self._quarantined_poll(obs, current)
        failing = tuple(sorted(set(obs.failing) | set(persistent)))
        if not failing:
            if obs.erroring:
                return actions  # inconclusive: not failing yet, and not a pass either
            return actions + self._healthy(obs, current)
        failed = current.failed_recoveries
        attempted = current.attempted_failures
        if current.awaiting_confirmation:
            # The last recovery said it succeeded, yet the node still fails.
            failed += 1
            attempted += 1
            actions.append(
                EmitEvent(
                    "recovery.ineffective",
                    obs.node,
                    f"recovery on {obs.node} did not clear: {', '.join(failing)}",
                    current.cause_ids,
                    cause=True,
                )
            )
        self._set(
            obs.node,
            replace(
                current,
                consecutive_failures=current.consecutive_failures + 1,
                failed_recoveries=failed,
                attempted_failures=attempted,
                awaiting_confirmation=False,
                last_failing=failing,
            ),
        )
        if current.consecutive_failures == 0:
            actions.append(
                EmitEvent(
                    "check.failed",
                    obs.node,
                    f"{obs.node} fails: {', '.join(failing)}",
                    current.cause_ids,
                    (("checks", ",".join(failing)),),
                    cause=True,
                )
            )
        fix = obs.recover_actions + (obs.error_actions if persistent else ())
        actions += self._escalate_or_recover(
            obs.node, obs.stimulus_id, tuple(dict.fromkeys(fix)), not obs.failing, now
        )
        return actions

    def _healthy(self, obs: HealthObserved, current: NodePolicyState) -> list[Action]:
        # An in-flight recovery stays in flight: it reports, or its deadline passes.
        recovered = current.consecutive_failures > 0 or current.awaiting_confirmation
        self._set(
            obs.node,
            replace(
                current,
                consecutive_failures=0,
                failed_recoveries=0,
                attempted_failures=0,
                awaiting_confirmation=False,
                last_failing=(),
                cause_ids=(),
            ),
        )
        if not recovered:
            return []
        return [
            EmitEvent(
                "node.healthy", obs.node, f"{obs.node} passes its checks again", current.cause_ids
            )
        ]

    def _escalate_or_recover(
        self,
        node: str,
        recovery_id: str,
        fix: RecoverActions,
        only_errors: bool,
        now: float,
    ) -> list[Action]:
        current = self.state.node(node)
        if self.state.paused or current.recovery_in_flight:
            return []
        # A check that could not run escalates only after a recovery really failed.
        may_escalate = not only_errors or current.attempted_failures > 0
        if current.failed_recoveries > self.config.max_failed_recoveries:
            return self._escalate(node, now) if may_escalate else []
        if current.consecutive_failures < self.config.failures_before_recovery:
            return []
        if not fix:
            if only_errors:
                return []
            # Nothing in the catalogue fixes these checks: each poll counts as a failed
            # recovery, so the node escalates instead of failing silently forever.
            self._set(node, replace(current, failed_recoveries=current.failed_recoveries + 1))
            if self.state.node(node).failed_recoveries > self.config.max_failed_recoveries:
                return self._escalate(node, now)
            return []
        self._set(node, replace(current, recovery_id=recovery_id, recovery_started=now))
        return [
            StartRecovery(node, fix, current.cause_ids, recovery_id),
            EmitEvent(
                "recovery.started",
                node,
                f"recovering {node}: " + ", ".join(a for a, _ in fix),
                current.cause_ids,
                (("recovery_id", recovery_id),),
            ),
        ]

    def _recovery_finished(self, done: RecoveryFinished, now: float) -> list[Action]:
        current = self.state.node(done.node)
        if not current.recovery_in_flight or (
            done.recovery_id and done.recovery_id != current.recovery_id
        ):
            return []  # it timed out already, or the node's state was reset since
        if not done.succeeded:
            return self._recovery_failed(done.node, done.detail, now)
        self._set(
            done.node,
            replace(
                current,
                recovery_id="",
                awaiting_confirmation=True,
                consecutive_failures=0,
            ),
        )
        return [
            EmitEvent(
                "recovery.succeeded",
                done.node,
                f"recovery on {done.node} finished",
                current.cause_ids,
            )
        ]

    def _recovery_failed(
        self, node: str, detail: str, now: float, *, timed_out: bool = False
    ) -> list[Action]:
        current = self.state.node(node)
        updated = replace(
            current,
            recovery_id="",
            failed_recoveries=current.failed_recoveries + 1,
            attempted_failures=current.attempted_failures + 1,
        )
        self._set(node, updated)
        actions: list[Action] = [
            EmitEvent(
                "recovery.failed",
                node,
                f"recovery on {node} failed ({updated.failed_recoveries} failed so far)"
                + (f": {detail}" if detail else ""),
                current.cause_ids,
                (("timed_out", "true"),) if timed_out else (),
                cause=True,
            )
        ]
        if updated.failed_recoveries > self.config.max_failed_recoveries and not self.state.paused:
            actions += self._escalate(node, now)
        return actions

    def _escalate(self, node: str, now: float) -> list[Action]:
        current = self.state.node(node)
        if self.state.breaker_tripped or current.quarantine is not None:
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
                EmitEvent(
                    "breaker.tripped",
                    node,
                    f"circuit breaker tripped: {reason}",
                    current.cause_ids,
                    (("reason", reason),),
                )
            ]
        window.append(now)
        failing = current.last_failing
        summary = (
            f"{current.failed_recoveries} failed recoveries; failing: "
            f"{', '.join(failing) or 'unknown'}"
        )
        self._set(
            node,
            replace(
                current,
                quarantine=AUTO,
                quarantine_checks=failing,
                pending_quarantine=f"automatic: {summary}",
                clean_passes=0,
                causes_clear=False,
                recovery_id="",
            ),
        )
        return [
            EmitEvent(
                "escalation",
                node,
                f"{node} quarantined automatically: {summary}",
                current.cause_ids,
                (("checks", ",".join(failing)),),
                cause=True,
            )
        ]

    def _event_recorded(self, recorded: EventRecorded) -> list[Action]:
        if recorded.node not in self.state.nodes:
            return []
        current = self.state.node(recorded.node)
        updated = replace(current, cause_ids=self._causes((*current.cause_ids, recorded.event_id)))
        if recorded.kind != "escalation" or not current.pending_quarantine:
            self._set(recorded.node, updated)
            return []
        self._set(recorded.node, replace(updated, pending_quarantine=""))
        return [
            QuarantineNode(
                recorded.node,
                current.pending_quarantine,
                current.quarantine_checks,
                updated.cause_ids,
            )
        ]

    def _quarantined_poll(self, obs: HealthObserved, current: NodePolicyState) -> list[Action]:
        if current.quarantine != AUTO or current.pending_quarantine:
            return []
        not_ok = obs.not_ok
        if any(check in not_ok for check in current.quarantine_checks):
            # A causing check still fails (or cannot tell): the streak starts again.
            self._set(obs.node, replace(current, clean_passes=0, causes_clear=False))
            return []
        self._set(obs.node, replace(current, causes_clear=True))
        return [] if self.state.paused else [VerifyClean(obs.node)]

    def _verify_clean(self, obs: VerifyCleanObserved) -> list[Action]:
        current = self.state.node(obs.node)
        if current.quarantine != AUTO or current.pending_quarantine:
            return []
        if not obs.clean:
            self._set(obs.node, replace(current, clean_passes=0, causes_clear=False))
            return []
        if not current.causes_clear:
            return []  # no fresh poll with the causes passing since the last pass
        passes = current.clean_passes + 1
        self._set(obs.node, replace(current, clean_passes=passes, causes_clear=False))
        if passes < self.config.clean_passes_to_release or self.state.paused:
            return []
        self._set(obs.node, NodePolicyState())
        reason = f"automatic: verify-clean and the causing checks passed {passes} consecutive times"
        # The release's own event is the QuarantineManager's "unquarantine".
        return [ReleaseNode(obs.node, reason, current.cause_ids)]

    def _quarantine_changed(self, change: QuarantineChanged) -> list[Action]:
        current = self.state.node(change.node)
        if not change.quarantined:
            self._set(change.node, NodePolicyState(error_streaks=current.error_streaks))
            return []
        if current.quarantine == change.source and not current.pending_quarantine:
            return []
        # Known from the store now: start from its record (an in-flight recovery's
        # late report is then ignored).
        self._set(
            change.node,
            NodePolicyState(
                quarantine=change.source,
                quarantine_checks=change.checks if change.source == AUTO else (),
                error_streaks=current.error_streaks,
                cause_ids=self._causes(change.event_ids),
            ),
        )
        return []

    def _fleet_changed(self, change: FleetChanged) -> list[Action]:
        names = set(change.nodes)
        for name in list(self.state.nodes):
            if name not in names:
                del self.state.nodes[name]
                self._changed.add(name)
        for name in names:
            self.state.nodes.setdefault(name, NodePolicyState())
        return []

    def _operator(self, command: OperatorCommand) -> list[Action]:
        # Every command is audited (who, what, why; the event says when), also a
        # repeat that changes nothing.
        who = f" by {command.actor}" if command.actor else ""
        why = f": {command.reason}" if command.reason else ""
        attributes: Attributes = (
            ("actor", command.actor),
            ("command", command.command),
            ("reason", command.reason),
        )
        if command.command == "pause":
            already = " (already paused)" if self.state.paused else ""
            self.state.paused = True
            return [
                EmitEvent(
                    "automation.paused", "", f"automation paused{who}{already}{why}", (), attributes
                )
            ]
        if command.command == "resume":
            already = " (was not paused)" if not self.state.paused else ""
            self.state.paused = False
            return [
                EmitEvent(
                    "automation.resumed",
                    "",
                    f"automation resumed{who}{already}{why}",
                    (),
                    attributes,
                )
            ]
        if command.command == "reset-breaker":
            was = self.state.breaker_tripped
            previous = self.state.breaker_reason
            self.state.breaker_tripped = False
            self.state.breaker_reason = ""
            self.state.auto_quarantine_times.clear()
            note = f" (it had tripped: {previous})" if was else " (it was not tripped)"
            return [
                EmitEvent(
                    "breaker.reset",
                    "",
                    f"circuit breaker reset{who}{note}{why}",
                    (),
                    (*attributes, ("was_tripped", str(was).lower())),
                )
            ]
        raise ValueError(f"unknown operator command {command.command!r}")
