"""The leader's automation loop: I/O around the pure policy (controller/policy.py).

Every poll interval, on the leader only: read the registry, poll the health of
every up node (with checks), feed the observations to the policy, and carry out
the actions it returns (recovery through the executor's catalogue, quarantine
and release through the QuarantineManager, verify-clean, events).

What the loop guarantees:

- it acts only while this replica leads: no action is carried out and no task is
  started without the current term; tasks started in a term are cancelled as
  soon as that term is seen to end (``leadership_changed``, called by the loop
  every poll and by whoever learns of the change first), a recovery checks the
  term again before every executor call and every streamed step, and a result
  from an ended term is never fed back (the next term starts from the store);
- every recovery it starts is reported to the policy as finished, whatever
  happens: failed when it raised, could not reach the node, or ran out of
  ``recovery_timeout`` (one budget for the whole recovery); the policy also times
  out a report that never comes (``PolicyConfig.recovery_deadline``, at least
  twice ``recovery_timeout``);
- policy handling and the actions that follow are serialized by one lock, so a
  store sync never interleaves with a decision being carried out;
- events the policy marks ``cause`` are reported back with their cluster ids, so
  quarantine records, history and events name events ``novaops events`` shows;
- operator state and the circuit breaker (paused, tripped, reason, and the
  window of recent automatic quarantine times) live in the store settings,
  fenced by the term, written whenever they change and read at the start of
  every term, so a new leader continues the breaker window;
- so are the per-node counters (one setting per node, ``automation.node.NAME``,
  written when a node's counters change and cleared when they are back to
  nothing): a new leader goes on with each node's failure streak, spent
  escalation budget and release count instead of giving a broken node a fresh
  set of recoveries every failover (the quarantines themselves, with their
  causes, are in the store).

ERROR checks are judged as the policy's docstring says: never a pass, failing
only once persistent, never a cause of escalation on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import shlex
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from novaops.controller.clock import Clock, SystemClock
from novaops.controller.events import EventLog
from novaops.controller.executors import ExecutorPool
from novaops.controller.fanout import FanoutTarget, fan_out, first_result
from novaops.controller.metrics import AUTOMATION_PAUSED, BREAKER_TRIPPED
from novaops.controller.policy import (
    AUTO,
    MANUAL,
    Action,
    EmitEvent,
    EventRecorded,
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
    Stimulus,
    VerifyClean,
    VerifyCleanObserved,
    restore_node,
)
from novaops.controller.quarantine import NotLeader, QuarantineManager, UnknownNode
from novaops.controller.store.base import LeaderTerm, NodeRecord, Store, StoreError
from novaops.v1 import common_pb2, controller_pb2, executor_pb2

log = logging.getLogger(__name__)

SETTINGS_KEY = "automation"
NODE_SETTINGS_PREFIX = "automation.node."


def node_setting_key(node: str) -> str:
    """The setting that holds a node's counters for the next leader."""
    return NODE_SETTINGS_PREFIX + node


FAILING = (common_pb2.CHECK_STATUS_FAIL, common_pb2.CHECK_STATUS_ERROR)


@dataclass(frozen=True)
class AutomationConfig:
    enabled: bool = True
    poll_interval: float = 10.0
    per_node_timeout: float = 10.0
    recovery_timeout: float = 60.0  # for one whole recovery (all its catalogue actions)
    policy: PolicyConfig = field(default_factory=PolicyConfig)


def check_key(check: common_pb2.CheckResult) -> str:
    """How the policy names a check: "check_id:target"."""
    return f"{check.check_id}:{check.target}"


def _keys(checks: Iterable[common_pb2.CheckResult]) -> tuple[str, ...]:
    return tuple(sorted({check_key(c) for c in checks}))


def recover_actions(checks: list[common_pb2.CheckResult]) -> tuple[tuple[str, str], ...]:
    """Catalogue actions named by the failing checks' remediation commands.

    Checks say how to fix themselves (``novaops recover ACTION --node N --target T``);
    automation runs exactly those, so it can do nothing an operator could not.
    """
    found: dict[tuple[str, str], None] = {}
    for check in checks:
        if check.status not in FAILING:
            continue
        for step in check.remediation:
            words = shlex.split(step.command) if step.command else []
            if words[:2] != ["novaops", "recover"] or len(words) < 3:
                continue
            target = ""
            if "--target" in words[3:]:
                index = words.index("--target")
                target = words[index + 1] if index + 1 < len(words) else ""
            found[(words[2], target)] = None
    return tuple(found)


def _settings(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        log.warning("automation settings in the store are not JSON; using defaults")
        return {}
    return data if isinstance(data, dict) else {}


class _LeadershipLost(Exception):
    """The term a task was started in has ended."""


class Automation:
    """Runs the policy while this replica leads."""

    def __init__(
        self,
        config: AutomationConfig,
        store: Store,
        executors: ExecutorPool,
        events: EventLog,
        quarantines: QuarantineManager,
        term: Callable[[], LeaderTerm | None],
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.executors = executors
        self.events = events
        self.quarantines = quarantines
        self.term = term
        deadline = max(config.policy.recovery_deadline, 2 * config.recovery_timeout)
        self.policy = Policy(replace(config.policy, recovery_deadline=deadline))
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._ids = itertools.count(1)
        self._last_checks: dict[str, list[common_pb2.CheckResult]] = {}
        self._tasks: dict[asyncio.Task[None], int] = {}  # task -> term revision it serves
        self._verifying: set[str] = set()
        self._term_revision: int | None = None
        self._loaded_for: int | None = None
        self._saved = self.policy.state.breaker_snapshot()
        self._saved_nodes: dict[str, dict[str, Any]] = {}  # node -> its memory as stored
        self._unsaved: set[str] = set()  # nodes whose counters a failed write left behind
        self._writes_held = False  # a write failed in this poll: the rest wait for the next
        self._nodes_loaded_for: int | None = None  # the term whose node memories are loaded
        self._lock = asyncio.Lock()

    def _now(self) -> float:
        return self._clock.wall()

    def _sid(self, prefix: str) -> str:
        return f"{prefix}-{int(self._now())}-{next(self._ids)}"

    def _revision(self) -> int | None:
        term = self.term()
        return term.record.revision if term is not None else None

    def _leads(self, revision: int | None) -> bool:
        return revision is not None and self._revision() == revision

    # -- leadership ----------------------------------------------------------------

    def leadership_changed(self, term: LeaderTerm | None) -> None:
        """This replica's term is now ``term`` (None: not leading).

        Cancels every task of another term at once and forgets the per-node memory
        of that term; idempotent. The loop calls it every poll; the election may
        call it sooner.
        """
        revision = term.record.revision if term is not None else None
        if revision == self._term_revision:
            return
        self._term_revision = revision
        for task, started in list(self._tasks.items()):
            if started != revision:
                task.cancel()
        self._verifying.clear()
        self.policy.state.nodes.clear()
        self.policy.take_changed()
        self._saved_nodes.clear()
        self._unsaved.clear()
        self._nodes_loaded_for = None
        self._last_checks.clear()
        self._loaded_for = None

    @property
    def tasks_in_flight(self) -> int:
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Wait until no recovery or verify-clean task is running."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- operator state ----------------------------------------------------------

    async def _load_settings(self) -> None:
        data = _settings(await self.store.get_setting(SETTINGS_KEY))
        state = self.policy.state
        state.paused = bool(data.get("paused", False))
        state.breaker_tripped = bool(data.get("breaker_tripped", False))
        state.breaker_reason = str(data.get("breaker_reason", ""))
        times = data.get("auto_quarantine_times", [])
        state.auto_quarantine_times = deque(
            sorted(float(t) for t in times if isinstance(t, int | float))
            if isinstance(times, list)
            else ()
        )
        self._saved = state.breaker_snapshot()

    async def _load_node_memories(self) -> None:
        """Every registered node's counters as the last leader left them (once per
        term, before its first poll).

        An automatic quarantine the memory names but the store does not hold is
        one of two things. If the node's last history entry is a release, someone
        lifted it: the node starts afresh, as a release does. Otherwise the last
        leader escalated but its term ended before the quarantine was stored: the
        counters stay, without the quarantine, and the next failing poll escalates
        again instead of granting a fresh set of recoveries."""
        self._saved_nodes.clear()
        self._unsaved.clear()
        self.policy.take_changed()
        records = await self.store.list_nodes()
        quarantines = await self.store.get_quarantines()
        for record in records:
            memory = _settings(await self.store.get_setting(node_setting_key(record.name)))
            if not memory:
                continue
            self._saved_nodes[record.name] = memory
            restored = restore_node(memory)
            if restored.quarantine == AUTO and record.name not in quarantines:
                self._unsaved.add(record.name)  # the first write stores what is left
                if await self._last_history_action(record.name) == "unquarantine":
                    continue  # released: nothing is left
                restored = replace(restored, quarantine=None, quarantine_checks=(), clean_passes=0)
            self.policy.state.nodes[record.name] = restored

    async def _last_history_action(self, node: str) -> str:
        history = await self.store.get_history(node)
        if not history:
            return ""
        entry = common_pb2.QuarantineHistoryEntry()
        entry.ParseFromString(history[-1].payload)
        return entry.action

    async def _save_node_memories(self) -> None:
        """Persist the counters of the nodes the policy changed, where they differ
        from what is stored (fenced by the term, like the breaker). After a failed
        write, nothing more is tried until the next poll (a store that hangs must
        not hold every stimulus of this one); what was not written waits in
        ``_unsaved`` and goes first then."""
        changed = self.policy.take_changed()
        if self._writes_held:
            self._unsaved |= changed
            return
        pending = sorted(self._unsaved | changed)
        self._unsaved = set()
        term = self.term()
        for index, node in enumerate(pending):
            memory = self.policy.memory(node)
            if memory == self._saved_nodes.get(node, {}):
                continue
            value = json.dumps(memory, sort_keys=True).encode() if memory else b""
            try:
                if term is None:
                    raise NotLeader("this controller is not the leader")
                await self.store.put_setting(node_setting_key(node), value, term)
            except BaseException:
                self._unsaved.update(pending[index:])
                self._writes_held = True
                raise
            if memory:
                self._saved_nodes[node] = memory
            else:
                self._saved_nodes.pop(node, None)

    async def _save_settings(self) -> None:
        term = self.term()
        if term is None:
            raise NotLeader("this controller is not the leader")
        snapshot = self.policy.state.breaker_snapshot()
        paused, tripped, reason, times = snapshot
        data = {
            "paused": paused,
            "breaker_tripped": tripped,
            "breaker_reason": reason,
            "auto_quarantine_times": list(times),
        }
        await self.store.put_setting(SETTINGS_KEY, json.dumps(data).encode(), term)
        self._saved = snapshot

    async def status(self) -> controller_pb2.AutomationStatus:
        data = _settings(await self.store.get_setting(SETTINGS_KEY))
        leader = await self.store.get_leader()
        quarantines = await self.store.get_quarantines()
        auto = 0
        for payload in quarantines.values():
            record = common_pb2.QuarantineRecord()
            record.ParseFromString(payload)
            auto += record.source == common_pb2.QUARANTINE_SOURCE_AUTO
        paused = bool(data.get("paused", False))
        BREAKER_TRIPPED.set(1 if data.get("breaker_tripped") else 0)
        AUTOMATION_PAUSED.set(1 if paused else 0)
        return controller_pb2.AutomationStatus(
            running=self.config.enabled and not paused and leader is not None,
            paused=paused,
            breaker_tripped=bool(data.get("breaker_tripped", False)),
            breaker_reason=str(data.get("breaker_reason", "")),
            leader=leader.name if leader else "",
            auto_quarantined=auto,
        )

    async def command(
        self, command: str, actor: str, reason: str = ""
    ) -> controller_pb2.AutomationStatus:
        """pause | resume | reset-breaker, on the leader: persisted first, then audited
        in an event naming the actor and the reason."""
        term = self.term()
        if term is None:
            raise NotLeader("this controller is not the leader")
        self.leadership_changed(term)
        async with self._lock:
            try:
                await self._load_settings()
                actions = self.policy.handle(
                    OperatorCommand(self._sid("op"), command, actor, reason), self._now()
                )
                await self._save_settings()
            except BaseException:
                self._loaded_for = None  # memory may now differ from the store: reload
                raise
            self._loaded_for = term.record.revision
            await self._execute(actions)
        return await self.status()

    # -- the loop ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.poll_interval)
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def step(self) -> None:
        """One turn of the loop: follow leadership, then (leading) poll and act."""
        term = self.term()
        self.leadership_changed(term)
        if term is None or not self.config.enabled:
            return
        try:
            if self._loaded_for != term.record.revision:
                # New term: start from the store's operator and breaker state.
                async with self._lock:
                    await self._load_settings()
                self._loaded_for = term.record.revision
            if self._nodes_loaded_for != term.record.revision:
                # Only here, once per term: an operator command in the middle of a
                # term reloads the settings above, never the live node state.
                async with self._lock:
                    await self._load_node_memories()
                self._nodes_loaded_for = term.record.revision
            await self.poll_once()
            BREAKER_TRIPPED.set(1 if self.policy.state.breaker_tripped else 0)
            AUTOMATION_PAUSED.set(1 if self.policy.state.paused else 0)
        except StoreError as exc:
            log.warning("automation: store unavailable: %s", exc)
        except NotLeader:
            pass

    async def poll_once(self) -> None:
        """One round: sync fleet and quarantines, poll health, act."""
        revision = self._revision()
        if revision is None or revision != self._term_revision:
            return
        records = await self.store.list_nodes()
        self._writes_held = False  # a new poll tries the store again
        async with self._lock:
            await self._handle(FleetChanged(self._sid("fleet"), tuple(r.name for r in records)))
            await self._sync_quarantines(records)
        targets = [FanoutTarget(r.name, r.address, r.up) for r in records if r.up]
        request = executor_pb2.GetHealthRequest(include_checks=True)

        def call(target: FanoutTarget, timeout: float):  # type: ignore[no-untyped-def]
            stub = self.executors.stub(target.address)
            return first_result(stub.GetHealth(request, timeout=timeout))

        timeout = self.config.per_node_timeout
        async for outcome in fan_out(targets, call, per_node=timeout, overall=timeout + 1):
            # Bounded by the fan-out's deadline; a term that ended meanwhile acts on nothing.
            if outcome.result is None or not self._leads(revision):
                continue  # unreachable nodes are the registry's business (node.down)
            health: executor_pb2.NodeHealth = outcome.result
            fails = [c for c in health.checks if c.status == common_pb2.CHECK_STATUS_FAIL]
            errors = [c for c in health.checks if c.status == common_pb2.CHECK_STATUS_ERROR]
            self._last_checks[outcome.node] = fails + errors
            await self._feed(
                HealthObserved(
                    self._sid("poll"),
                    outcome.node,
                    _keys(fails),
                    recover_actions(fails),
                    _keys(errors),
                    recover_actions(errors),
                )
            )

    async def _sync_quarantines(self, records: list[NodeRecord]) -> None:
        """Tell the policy where the store's quarantines differ from what it thinks."""
        quarantines = await self.store.get_quarantines()
        for record in records:
            state = self.policy.state.node(record.name)
            stored = quarantines.get(record.name)
            if stored is None:
                if state.quarantine is not None:
                    await self._handle(QuarantineChanged(self._sid("sync"), record.name, False))
                continue
            parsed = common_pb2.QuarantineRecord()
            parsed.ParseFromString(stored)
            source = AUTO if parsed.source == common_pb2.QUARANTINE_SOURCE_AUTO else MANUAL
            if state.quarantine != source:
                await self._handle(
                    QuarantineChanged(
                        self._sid("sync"),
                        record.name,
                        True,
                        source,
                        _keys(parsed.causes),
                        tuple(parsed.event_ids),
                    )
                )

    # -- carrying out actions ------------------------------------------------------

    async def _feed(self, stimulus: Stimulus) -> None:
        async with self._lock:
            await self._handle(stimulus)

    async def _handle(self, stimulus: Stimulus) -> None:
        """Apply one stimulus and carry out its actions; the caller holds the lock."""
        actions = self.policy.handle(stimulus, self._now())
        # Before the actions: a recovery the next leader must know of is stored first.
        try:
            await self._save_node_memories()
        except (NotLeader, StoreError) as exc:
            log.warning("automation: could not persist node counters: %s", exc)
        await self._execute(actions)
        if self.policy.state.breaker_snapshot() != self._saved:
            try:
                await self._save_settings()
            except (NotLeader, StoreError) as exc:
                log.warning("automation: could not persist the breaker state: %s", exc)

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            revision = self._term_revision
            if not self._leads(revision):
                log.info("automation: not leading; dropped %s", type(action).__name__)
                return
            try:
                await self._execute_one(action, revision)
            except (NotLeader, UnknownNode, StoreError) as exc:
                log.warning("automation: %s failed: %s", type(action).__name__, exc)

    async def _execute_one(self, action: Action, revision: int | None) -> None:
        assert revision is not None
        if isinstance(action, EmitEvent):
            event_id = await self.events.emit(
                action.kind,
                action.node,
                action.message,
                cause_ids=action.cause_ids,
                attributes=dict(action.attributes),
            )
            if action.cause:
                await self._handle(
                    EventRecorded(self._sid("event"), action.node, action.kind, event_id)
                )
        elif isinstance(action, StartRecovery):
            self._spawn(self._recover(action, revision), revision)
        elif isinstance(action, VerifyClean):
            if action.node not in self._verifying:
                self._verifying.add(action.node)
                self._spawn(self._verify(action.node, revision), revision)
        elif isinstance(action, QuarantineNode):
            wanted = set(action.checks)
            causes = [c for c in self._last_checks.get(action.node, []) if check_key(c) in wanted]
            response = await self.quarantines.quarantine(
                action.node,
                action.reason,
                "automation",
                source=common_pb2.QUARANTINE_SOURCE_AUTO,
                causes=causes,
                event_ids=action.cause_ids,
            )
            if response.record.source != common_pb2.QUARANTINE_SOURCE_AUTO:
                # An operator quarantined it first: theirs stands, automation keeps off.
                await self._handle(QuarantineChanged(self._sid("sync"), action.node, True))
        elif isinstance(action, ReleaseNode):
            response = await self.quarantines.unquarantine(
                action.node,
                action.reason,
                "automation",
                force=True,  # the policy released it on verify-clean passes
                source=common_pb2.QUARANTINE_SOURCE_AUTO,
                event_ids=action.cause_ids,
            )
            if not response.changed and response.record.node:
                log.info("automation: %s", response.message)
                await self._handle(QuarantineChanged(self._sid("sync"), action.node, True))

    def _spawn(self, coroutine: Coroutine[Any, Any, None], revision: int) -> None:
        if not self._leads(revision):
            coroutine.close()
            return
        task = asyncio.ensure_future(coroutine)
        self._tasks[task] = revision
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("automation task failed: %r", task.exception())

    async def _address(self, node: str) -> str | None:
        record = await self.store.get_node(node)
        return record.address if record else None

    async def _recover(self, action: StartRecovery, revision: int) -> None:
        failures: list[str] = []
        report = True
        try:
            async with asyncio.timeout(self.config.recovery_timeout):
                address = await self._address(action.node)
                if address is None:
                    failures.append("node no longer registered")
                else:
                    failing = ", ".join(_keys(self._last_checks.get(action.node, [])))
                    reason = f"automatic recovery ({action.recovery_id}): {failing or 'failing'}"
                    for name, target in action.actions:
                        failures += await self._run_action(address, name, target, revision, reason)
        except TimeoutError:
            failures.append(f"no result within {self.config.recovery_timeout:g}s")
        except _LeadershipLost:
            report = False
        except asyncio.CancelledError:
            report = False
            raise
        except Exception as exc:
            # Whatever broke, the policy must hear that this recovery is over.
            log.exception("automation: recovery on %s failed", action.node)
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            if report and self._leads(revision):
                await self._feed(
                    RecoveryFinished(
                        self._sid("recovery"),
                        action.node,
                        not failures,
                        "; ".join(failures),
                        action.recovery_id,
                    )
                )

    async def _run_action(
        self, address: str, name: str, target: str, revision: int, reason: str
    ) -> list[str]:
        """One catalogue action; the failures it reported. Stops when the term ends.

        Fenced by the term: a node that has seen a newer leader refuses it."""
        if not self._leads(revision):
            raise _LeadershipLost
        request = executor_pb2.RecoverRequest(
            action=name, target=target, actor="automation", fence_revision=revision, reason=reason
        )
        failures: list[str] = []
        call = self.executors.stub(address).Recover(request, timeout=self.config.recovery_timeout)
        try:
            async for step in call:
                if not self._leads(revision):
                    raise _LeadershipLost
                if step.outcome == "failed":
                    failures.append(f"{name}: {step.description}: {step.error}")
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            failures.append(f"{name}: {code}")
        finally:
            call.cancel()  # no-op once the stream has ended
        return failures

    async def _verify(self, node: str, revision: int) -> None:
        clean = False
        report = True
        try:
            clean, _ = await verify_clean_on(self.executors, await self._address(node))
        except asyncio.CancelledError:
            report = False
            raise
        except Exception:
            log.exception("automation: verify-clean on %s failed", node)
        finally:
            if report and self._leads(revision):
                self._verifying.discard(node)  # (a new term starts with an empty set)
                await self._feed(VerifyCleanObserved(self._sid("verify"), node, clean))


async def verify_clean_on(
    executors: ExecutorPool, address: str | None, timeout: float = 30.0
) -> tuple[bool, list[common_pb2.CheckResult]]:
    """Run VerifyClean on a node; an unreachable node is not clean."""
    if address is None:
        return False, []
    try:
        result = await executors.stub(address).VerifyClean(
            executor_pb2.VerifyCleanRequest(), timeout=timeout
        )
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
        unreachable = common_pb2.CheckResult(
            check_id="verify_clean.rpc",
            status=common_pb2.CHECK_STATUS_ERROR,
            summary=f"verify-clean could not run: {code}",
        )
        return False, [unreachable]
    return result.clean, list(result.checks)
