"""The leader's automation loop: I/O around the pure policy (controller/policy.py).

Every poll interval, on the leader only: read the registry, poll the health of
every up node (with checks), feed the observations to the policy, and carry out
the actions it returns (recovery through the executor's catalogue, quarantine
and release through the QuarantineManager, verify-clean, events). Operator
state (paused, breaker) lives in the store so a new leader keeps it; the
per-node counters are the leader's memory and start again after a failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import shlex
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc

from novaops.controller.events import EventLog
from novaops.controller.executors import ExecutorPool
from novaops.controller.fanout import FanoutTarget, fan_out, first_result
from novaops.controller.metrics import AUTOMATION_PAUSED, BREAKER_TRIPPED
from novaops.controller.policy import (
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
    Stimulus,
    VerifyClean,
    VerifyCleanObserved,
)
from novaops.controller.quarantine import NotLeader, QuarantineManager, UnknownNode
from novaops.controller.store.base import LeaderTerm, Store, StoreError
from novaops.v1 import common_pb2, controller_pb2, executor_pb2

log = logging.getLogger(__name__)

SETTINGS_KEY = "automation"
FAILING = (common_pb2.CHECK_STATUS_FAIL, common_pb2.CHECK_STATUS_ERROR)


@dataclass(frozen=True)
class AutomationConfig:
    enabled: bool = True
    poll_interval: float = 10.0
    per_node_timeout: float = 10.0
    recovery_timeout: float = 60.0
    policy: PolicyConfig = field(default_factory=PolicyConfig)


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
    ) -> None:
        self.config = config
        self.store = store
        self.executors = executors
        self.events = events
        self.quarantines = quarantines
        self.term = term
        self.policy = Policy(config.policy)
        self._ids = itertools.count(1)
        self._last_checks: dict[str, list[common_pb2.CheckResult]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loaded_for: int | None = None

    def _sid(self, prefix: str) -> str:
        return f"{prefix}-{int(time.time())}-{next(self._ids)}"

    # -- operator state ----------------------------------------------------------

    async def _load_settings(self) -> None:
        raw = await self.store.get_setting(SETTINGS_KEY)
        data = json.loads(raw) if raw else {}
        self.policy.state.paused = bool(data.get("paused", False))
        self.policy.state.breaker_tripped = bool(data.get("breaker_tripped", False))
        self.policy.state.breaker_reason = str(data.get("breaker_reason", ""))

    async def _save_settings(self) -> None:
        term = self.term()
        if term is None:
            raise NotLeader("this controller is not the leader")
        state = self.policy.state
        data = {
            "paused": state.paused,
            "breaker_tripped": state.breaker_tripped,
            "breaker_reason": state.breaker_reason,
        }
        await self.store.put_setting(SETTINGS_KEY, json.dumps(data).encode(), term)

    async def status(self) -> controller_pb2.AutomationStatus:
        raw = await self.store.get_setting(SETTINGS_KEY)
        data = json.loads(raw) if raw else {}
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

    async def command(self, command: str, actor: str) -> controller_pb2.AutomationStatus:
        """pause | resume | reset-breaker, on the leader; persisted and audited."""
        if self.term() is None:
            raise NotLeader("this controller is not the leader")
        await self._load_settings()
        await self._execute(
            self.policy.handle(OperatorCommand(self._sid("op"), command, actor), time.time())
        )
        await self._save_settings()
        return await self.status()

    # -- the loop ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            term = self.term()
            if term is not None and self.config.enabled:
                try:
                    if self._loaded_for != term.record.revision:
                        # New term: start from the store's operator state.
                        await self._load_settings()
                        self._loaded_for = term.record.revision
                    await self.poll_once()
                    BREAKER_TRIPPED.set(1 if self.policy.state.breaker_tripped else 0)
                    AUTOMATION_PAUSED.set(1 if self.policy.state.paused else 0)
                except StoreError as exc:
                    log.warning("automation: store unavailable: %s", exc)
                except NotLeader:
                    pass
            else:
                self._loaded_for = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.poll_interval)
        for task in list(self._tasks):
            task.cancel()

    async def poll_once(self) -> None:
        """One round: sync fleet and quarantines, poll health, act."""
        records = await self.store.list_nodes()
        await self._feed(FleetChanged(self._sid("fleet"), tuple(r.name for r in records)))
        quarantines = await self.store.get_quarantines()
        for record in records:
            state = self.policy.state.node(record.name)
            stored = quarantines.get(record.name)
            if stored is None and state.quarantine is not None:
                await self._feed(QuarantineChanged(self._sid("sync"), record.name, False))
            elif stored is not None and state.quarantine is None:
                parsed = common_pb2.QuarantineRecord()
                parsed.ParseFromString(stored)
                source = "auto" if parsed.source == common_pb2.QUARANTINE_SOURCE_AUTO else "manual"
                await self._feed(QuarantineChanged(self._sid("sync"), record.name, True, source))
        targets = [FanoutTarget(r.name, r.address, r.up) for r in records if r.up]
        request = executor_pb2.GetHealthRequest(include_checks=True)

        def call(target: FanoutTarget, timeout: float):  # type: ignore[no-untyped-def]
            stub = self.executors.stub(target.address)
            return first_result(stub.GetHealth(request, timeout=timeout))

        timeout = self.config.per_node_timeout
        async for outcome in fan_out(targets, call, per_node=timeout, overall=timeout + 1):
            if outcome.result is None:
                continue  # unreachable nodes are the registry's business (node.down)
            health: executor_pb2.NodeHealth = outcome.result
            failing = [c for c in health.checks if c.status in FAILING]
            self._last_checks[health.node] = failing
            await self._feed(
                HealthObserved(
                    self._sid("poll"),
                    health.node,
                    tuple(sorted({f"{c.check_id}:{c.target}" for c in failing})),
                    tuple(c.event_id for c in failing if c.event_id),
                    recover_actions(failing),
                )
            )

    async def _feed(self, stimulus: Stimulus) -> None:
        await self._execute(self.policy.handle(stimulus, time.time()))

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            try:
                await self._execute_one(action)
            except (NotLeader, UnknownNode) as exc:
                log.info("automation: skipped %s: %s", type(action).__name__, exc)
        if any(isinstance(a, EmitEvent) and a.kind.startswith("breaker") for a in actions):
            with contextlib.suppress(NotLeader):
                await self._save_settings()

    async def _execute_one(self, action: Action) -> None:
        if isinstance(action, EmitEvent):
            await self.events.emit(
                action.kind, action.node, action.message, cause_ids=action.cause_ids
            )
        elif isinstance(action, StartRecovery):
            self._spawn(self._recover(action))
        elif isinstance(action, VerifyClean):
            self._spawn(self._verify(action.node))
        elif isinstance(action, QuarantineNode):
            await self.quarantines.quarantine(
                action.node,
                action.reason,
                "automation",
                source=common_pb2.QUARANTINE_SOURCE_AUTO,
                causes=self._last_checks.get(action.node, []),
                event_ids=action.cause_ids,
            )
        elif isinstance(action, ReleaseNode):
            await self.quarantines.unquarantine(
                action.node,
                action.reason,
                "automation",
                force=True,  # the policy released it on verify-clean passes
                source=common_pb2.QUARANTINE_SOURCE_AUTO,
                event_ids=action.cause_ids,
            )

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _address(self, node: str) -> str | None:
        record = await self.store.get_node(node)
        return record.address if record else None

    async def _recover(self, action: StartRecovery) -> None:
        address = await self._address(action.node)
        failures: list[str] = []
        for name, target in action.actions:
            if address is None:
                failures.append("node no longer registered")
                break
            request = executor_pb2.RecoverRequest(action=name, target=target, actor="automation")
            try:
                stream = self.executors.stub(address).Recover(
                    request, timeout=self.config.recovery_timeout
                )
                async for step in stream:
                    if step.outcome == "failed":
                        failures.append(f"{name}: {step.description}: {step.error}")
            except grpc.RpcError as exc:
                code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
                failures.append(f"{name}: {code}")
        await self._feed(
            RecoveryFinished(self._sid("recovery"), action.node, not failures, "; ".join(failures))
        )

    async def _verify(self, node: str) -> None:
        clean, _ = await verify_clean_on(self.executors, await self._address(node))
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
