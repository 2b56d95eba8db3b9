"""Fan-out RPCs of the controller: health, recovery, diagnostics, VMs, bundles.

Recovery (``Recover``, ``GetHealth`` with ``recover``) changes nodes, so unless it
is a dry run it runs on the leader only: any other replica answers
FAILED_PRECONDITION naming the leader ("... is not the leader ..."), which the
client library takes as "retry on the next controller". The leader sends its
term revision as ``RecoverRequest.fence_revision``; an executor refuses a fence
older than the newest it has seen, so a deposed leader that has not noticed yet
cannot repair a node its successor has acted on. Every recovery run (not a dry
run) is audited as a ``recovery`` event per node: action, target, actor, reason,
fence and outcome (success | partial | failure, as in novaops_recovery_total).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import TypeVar

import grpc

from novaops.client.bundle.pseudonyms import PseudonymMaps
from novaops.client.tls import AioContext
from novaops.controller.auth import require
from novaops.controller.automation import FAILING, recover_actions
from novaops.controller.context import (
    ControllerContext,
    store_call_failed,
)
from novaops.controller.executors import select_targets
from novaops.controller.fanout import (
    QUEUE_SIZE,
    FanoutTarget,
    NodeCall,
    NodeOutcome,
    error_from_rpc,
    fan_out,
    fan_out_batches,
    first_result,
)
from novaops.controller.metrics import BUNDLES_GENERATED
from novaops.controller.store.base import LeaderTerm, StoreError
from novaops.pki.identity import Role
from novaops.v1 import common_pb2, controller_pb2, controller_pb2_grpc, executor_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

BUNDLE_NODE_DEADLINE_MS = 10 * 60 * 1000
BUNDLE_QUEUE_CHUNKS = 8
BUNDLE_OVERALL_DEADLINE_MS = 15 * 60 * 1000
NO_REASON = "no reason given"
# A batched DiagnoseResult carries at most about this many bytes of results
# (gRPC refuses messages over 4 MiB by default).
DIAGNOSE_BATCH_BYTES = 1 << 20


def recovery_outcome(steps: list[executor_pb2.RecoveryStep]) -> str:
    """success: no step failed; failure: a fatal step failed; partial: otherwise
    (the executor's rule for novaops_recovery_total)."""
    failed = [s for s in steps if s.outcome == "failed"]
    if not failed:
        return "success"
    return "failure" if any(s.fatal for s in failed) else "partial"


class FleetServicer(controller_pb2_grpc.FleetServiceServicer):
    """Fan-out operations: every addressed node yields results or a NodeError."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx

    async def _fan_out(
        self,
        context: AioContext,
        selector: common_pb2.NodeSelector,
        deadlines: common_pb2.FanoutDeadlines,
        call: NodeCall[T],
        queue_size: int = QUEUE_SIZE,
    ) -> AsyncIterator[NodeOutcome[T]]:
        async with contextlib.aclosing(
            self._fan_out_batches(context, selector, deadlines, call, queue_size)
        ) as batches:
            async for batch in batches:
                for outcome in batch:
                    yield outcome

    async def _fan_out_batches(
        self,
        context: AioContext,
        selector: common_pb2.NodeSelector,
        deadlines: common_pb2.FanoutDeadlines,
        call: NodeCall[T],
        queue_size: int = QUEUE_SIZE,
    ) -> AsyncGenerator[list[NodeOutcome[T]], None]:
        try:
            records = await self.ctx.store.list_nodes()
        except StoreError as exc:
            await store_call_failed(context, exc)
        targets, unknown = select_targets(records, selector)
        if unknown:
            yield [NodeOutcome(error.node, error=error) for error in unknown]
        per_node = (deadlines.per_node_ms or self.ctx.config.per_node_ms) / 1000
        overall = (deadlines.overall_ms or self.ctx.config.overall_ms) / 1000
        batches = fan_out_batches(
            targets, call, per_node=per_node, overall=overall, queue_size=queue_size
        )
        async with contextlib.aclosing(batches):
            async for batch in batches:
                yield batch

    async def _leader_term(self, context: AioContext, what: str) -> LeaderTerm:
        """This replica's leader term, or abort FAILED_PRECONDITION naming the leader."""
        term = self.ctx.elector.term if self.ctx.elector.is_leader() else None
        if term is not None:
            return term
        try:
            leader = await self.ctx.store.get_leader()
        except StoreError as exc:
            await store_call_failed(context, exc)
        where = f"the leader is {leader.name} at {leader.address}" if leader else "no leader"
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{self.ctx.config.name} is not the leader ({where}); {what} runs on the leader "
            "(a dry run runs anywhere), retry there",
        )
        raise AssertionError("unreachable")

    async def _audit_recovery(
        self,
        node: str,
        actions: list[tuple[str, str]],
        actor: str,
        reason: str,
        fence: int,
        steps: list[executor_pb2.RecoveryStep],
        error: common_pb2.NodeError | None = None,
    ) -> None:
        """One ``recovery`` event for a node: who, what, why, fence and outcome."""
        what = ", ".join(f"{a} {t}" if t else a for a, t in actions)
        if error is not None and not steps:
            outcome, detail = "failure", f"not run: {error.message}"
        else:
            outcome = recovery_outcome(steps)
            counts = [s.outcome for s in steps]
            detail = ", ".join(f"{counts.count(o)} {o}" for o in sorted(set(counts)))
            if error is not None:  # the stream broke off after some steps
                outcome = "failure" if outcome == "failure" else "partial"
                detail += f"; then {error.message}"
        await self.ctx.events.emit(
            "recovery",
            node,
            f"{what} on {node} by {actor} ({reason or NO_REASON}): {outcome}; {detail}",
            attributes={
                "action": ",".join(a for a, _ in actions),
                "target": ",".join(t for _, t in actions if t),
                "actor": actor,
                "reason": reason,
                "fence": str(fence),
                "outcome": outcome,
            },
        )

    # -- health --------------------------------------------------------------------

    async def _recover_then_health(
        self,
        target: FanoutTarget,
        timeout: float,
        dry_run: bool,
        actor: str,
        reason: str,
        fence: int,
    ) -> AsyncIterator[controller_pb2.NodeHealthResult]:
        """Health with checks, the catalogue actions its failing checks name, health again."""
        stub = self.ctx.executors.stub(target.address)
        request = executor_pb2.GetHealthRequest(include_checks=True)
        before = await stub.GetHealth(request, timeout=timeout)
        failing = [c for c in before.checks if c.status in FAILING]
        steps: list[executor_pb2.RecoveryStep] = []
        actions = recover_actions(failing)
        for action, action_target in actions:
            recover = executor_pb2.RecoverRequest(
                action=action,
                target=action_target,
                dry_run=dry_run,
                actor=actor,
                reason=reason,
                fence_revision=fence,
            )
            async for step in stub.Recover(recover, timeout=timeout):
                steps.append(step)
        if steps and not dry_run:
            await self._audit_recovery(target.name, list(actions), actor, reason, fence, steps)
        after = before if dry_run or not steps else await stub.GetHealth(request, timeout=timeout)
        yield controller_pb2.NodeHealthResult(health=after, recovery=steps)

    async def _verify_clean(
        self, target: FanoutTarget, timeout: float
    ) -> AsyncIterator[controller_pb2.NodeHealthResult]:
        stub = self.ctx.executors.stub(target.address)
        # The operator's verify-clean counts in the node's novaops_cleanup_total.
        request = executor_pb2.VerifyCleanRequest(record_outcome=True)
        result = await stub.VerifyClean(request, timeout=timeout)
        status = (
            common_pb2.HEALTH_STATUS_HEALTHY if result.clean else common_pb2.HEALTH_STATUS_UNHEALTHY
        )
        yield controller_pb2.NodeHealthResult(
            health=executor_pb2.NodeHealth(node=result.node, status=status, checks=result.checks)
        )

    async def GetHealth(
        self, request: controller_pb2.FleetHealthRequest, context: AioContext
    ) -> AsyncIterator[controller_pb2.NodeHealthResult]:
        needed = Role.OPERATOR if request.recover else Role.VIEWER
        identity = await require(context, needed, insecure=self.ctx.insecure)
        if request.recover and request.verify_clean:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "--recover and --verify-clean exclude each other"
            )
        inner = executor_pb2.GetHealthRequest(include_checks=request.include_checks)
        actor = f"{identity.role.value}:{identity.name}"
        reason = request.reason.strip()
        fence = 0
        if request.recover and not request.dry_run:
            fence = (await self._leader_term(context, "health --recover")).record.revision

        def call(
            target: FanoutTarget, timeout: float
        ) -> AsyncIterator[controller_pb2.NodeHealthResult]:
            if request.recover:
                return self._recover_then_health(
                    target, timeout, request.dry_run, actor, reason, fence
                )
            if request.verify_clean:
                return self._verify_clean(target, timeout)
            stub = self.ctx.executors.stub(target.address)
            return _wrap_health(first_result(stub.GetHealth(inner, timeout=timeout)))

        async for outcome in self._fan_out(context, request.selector, request.deadlines, call):
            if outcome.error is not None:
                yield controller_pb2.NodeHealthResult(error=outcome.error)
            elif outcome.result is not None:
                yield outcome.result

    # -- recovery --------------------------------------------------------------------

    async def Recover(
        self, request: controller_pb2.FleetRecoverRequest, context: AioContext
    ) -> AsyncIterator[controller_pb2.RecoverResult]:
        identity = await require(context, Role.OPERATOR, insecure=self.ctx.insecure)
        if not request.recover.action:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a recovery action is required")
        if not request.selector.all and not request.selector.nodes:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "name the nodes (--node NAME) or --all"
            )
        actor = f"{identity.role.value}:{identity.name}"
        inner = executor_pb2.RecoverRequest()
        inner.CopyFrom(request.recover)
        inner.actor = actor
        inner.reason = inner.reason.strip()
        inner.fence_revision = 0
        if not inner.dry_run:
            term = await self._leader_term(context, "recovery")
            inner.fence_revision = term.record.revision
        done: dict[str, list[executor_pb2.RecoveryStep]] = {}
        errors: dict[str, common_pb2.NodeError] = {}

        def call(target: FanoutTarget, timeout: float) -> AsyncIterator[executor_pb2.RecoveryStep]:
            stream: AsyncIterator[executor_pb2.RecoveryStep]
            stream = self.ctx.executors.stub(target.address).Recover(inner, timeout=timeout)
            return stream

        async for outcome in self._fan_out(context, request.selector, request.deadlines, call):
            if outcome.error is not None:
                if outcome.error.kind != common_pb2.NODE_ERROR_KIND_UNKNOWN_NODE:
                    errors[outcome.node] = outcome.error
                yield controller_pb2.RecoverResult(error=outcome.error)
            elif outcome.result is not None:
                done.setdefault(outcome.node, []).append(outcome.result)
                yield controller_pb2.RecoverResult(step=outcome.result)
        if not inner.dry_run:
            for node in sorted(done.keys() | errors.keys()):
                await self._audit_recovery(
                    node,
                    [(inner.action, inner.target)],
                    actor,
                    inner.reason,
                    inner.fence_revision,
                    done.get(node, []),
                    errors.get(node),
                )

    # -- diagnostics and inventory -------------------------------------------------

    async def _locate_vm(
        self, context: AioContext, vm: str, per_node: float, overall: float
    ) -> tuple[list[str], list[common_pb2.NodeError]]:
        """Nodes whose inventory lists the domain (every registered node is asked),
        and an error for each node that could not be asked (down, unreachable, slow)."""
        try:
            records = await self.ctx.store.list_nodes()
        except StoreError as exc:
            await store_call_failed(context, exc)
        inner = executor_pb2.GetInventoryRequest()

        def call(target: FanoutTarget, timeout: float) -> AsyncIterator[common_pb2.Inventory]:
            stub = self.ctx.executors.stub(target.address)
            return first_result(stub.GetInventory(inner, timeout=timeout))

        targets = [FanoutTarget(r.name, r.address, r.up) for r in records]
        hosts = []
        errors = []
        async for outcome in fan_out(targets, call, per_node=per_node, overall=overall):
            if outcome.error is not None:
                errors.append(outcome.error)
            elif outcome.result is not None and any(d.name == vm for d in outcome.result.domains):
                hosts.append(outcome.node)
        return sorted(hosts), errors

    async def Diagnose(
        self, request: controller_pb2.FleetDiagnoseRequest, context: AioContext
    ) -> AsyncIterator[controller_pb2.DiagnoseResult]:
        await require(context, Role.OPERATOR, insecure=self.ctx.insecure)
        target = request.diagnose.WhichOneof("target")
        if target is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "say what to diagnose: vm, container, network, host or all_vms",
            )
        selector = request.selector
        deadlines = request.deadlines
        inner = request.diagnose
        # No node named (or --all): a container is searched for on every node, each
        # node without it answering nothing (there is no container inventory to ask).
        search = target == "container" and not selector.nodes
        if target == "vm" and not selector.nodes:
            # No node named (or --all): diagnose the VM where the inventory finds it.
            # The lookup is charged to the overall deadline.
            started = time.monotonic()
            per_node = (deadlines.per_node_ms or self.ctx.config.per_node_ms) / 1000
            overall = (deadlines.overall_ms or self.ctx.config.overall_ms) / 1000
            hosts, errors = await self._locate_vm(context, request.diagnose.vm, per_node, overall)
            if not hosts:
                if not errors:
                    await context.abort(
                        grpc.StatusCode.NOT_FOUND,
                        f"no node lists a domain named {request.diagnose.vm!r}",
                    )
                # Not found on the nodes that answered: the ones that did not are
                # where it may be, so they are named rather than hidden.
                for error in errors:
                    yield controller_pb2.DiagnoseResult(error=error)
                return
            selector = common_pb2.NodeSelector(nodes=hosts)
            left_ms = max(1, int((overall - (time.monotonic() - started)) * 1000))
            deadlines = common_pb2.FanoutDeadlines(
                per_node_ms=int(per_node * 1000), overall_ms=left_ms
            )
        elif search:
            selector = common_pb2.NodeSelector(all=True)
            inner = executor_pb2.DiagnoseRequest(container=inner.container, skip_absent=True)
        elif not selector.all and not selector.nodes:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "name the nodes (--node NAME) or --all"
            )

        def call(
            target: FanoutTarget, timeout: float
        ) -> AsyncIterator[common_pb2.CheckResultBatch]:
            stream: AsyncIterator[common_pb2.CheckResultBatch]
            stream = self.ctx.executors.stub(target.address).Diagnose(inner, timeout=timeout)
            return stream

        answered = False  # a result or an error went out
        batches = self._fan_out_batches(context, selector, deadlines, call)
        async with contextlib.aclosing(batches):
            async for outcomes in batches:
                for message in diagnose_messages(outcomes, batched=request.batched):
                    answered = True
                    yield message
        if search and not answered:
            # Every node answered and none has it (a node that could not be asked
            # went out as an error: the container may be there).
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no node runs a container named {inner.container!r}"
            )

    async def ListVms(
        self, request: controller_pb2.FleetInventoryRequest, context: AioContext
    ) -> AsyncIterator[controller_pb2.InventoryResult]:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        inner = executor_pb2.GetInventoryRequest()

        def call(target: FanoutTarget, timeout: float) -> AsyncIterator[common_pb2.Inventory]:
            stub = self.ctx.executors.stub(target.address)
            return first_result(stub.GetInventory(inner, timeout=timeout))

        async for outcome in self._fan_out(context, request.selector, request.deadlines, call):
            if outcome.error is not None:
                yield controller_pb2.InventoryResult(node=outcome.node, error=outcome.error)
            else:
                yield controller_pb2.InventoryResult(node=outcome.node, inventory=outcome.result)

    async def GetVmStats(
        self, request: controller_pb2.FleetVmStatsRequest, context: AioContext
    ) -> executor_pb2.VmStats:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        if not request.vm:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a VM name is required")
        per_node = (request.deadlines.per_node_ms or self.ctx.config.per_node_ms) / 1000
        hosts: list[str] = [request.node]
        errors: list[common_pb2.NodeError] = []
        if not request.node:
            hosts, errors = await self._locate_vm(context, request.vm, per_node, per_node + 1)
        if not hosts:
            unasked = "; ".join(e.message for e in errors[:3])
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no node lists a domain named {request.vm!r}"
                + (f" (not asked: {unasked})" if unasked else ""),
            )
        if len(hosts) > 1:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{request.vm!r} is defined on {', '.join(hosts)}; name one with --node",
            )
        try:
            record = await self.ctx.store.get_node(hosts[0])
        except StoreError as exc:
            await store_call_failed(context, exc)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no node named {hosts[0]!r}")
            raise AssertionError("unreachable")
        try:
            stats: executor_pb2.VmStats = await self.ctx.executors.stub(record.address).GetVmStats(
                executor_pb2.GetVmStatsRequest(vm=request.vm), timeout=per_node
            )
        except grpc.RpcError as exc:
            error = error_from_rpc(record.name, exc)
            code = (
                grpc.StatusCode.NOT_FOUND
                if exc.code() == grpc.StatusCode.NOT_FOUND
                else (grpc.StatusCode.UNAVAILABLE)
            )
            await context.abort(code, error.message)
            raise AssertionError("unreachable") from None
        return stats

    async def CollectBundle(
        self, request: controller_pb2.FleetBundleRequest, context: AioContext
    ) -> AsyncIterator[controller_pb2.FleetBundleChunk]:
        identity = await require(context, Role.OPERATOR, insecure=self.ctx.insecure)
        inner = executor_pb2.CollectBundleRequest()
        inner.CopyFrom(request.bundle)
        # One secret per bundle keys the pseudonyms, so a value maps the same on
        # every node of this bundle and differently in any other. Never stored.
        inner.scrub_key = os.urandom(32)
        inner.request_id = inner.request_id or uuid.uuid4().hex
        log.info(
            "bundle %s requested by %s:%s (scrub=%s)",
            inner.request_id,
            identity.role.value,
            identity.name,
            inner.scrub,
        )
        ok: set[str] = set()
        failed: set[str] = set()

        def call(target: FanoutTarget, timeout: float) -> AsyncIterator[executor_pb2.BundleChunk]:
            stream: AsyncIterator[executor_pb2.BundleChunk]
            stream = self.ctx.executors.stub(target.address).CollectBundle(inner, timeout=timeout)
            return stream

        # Bundles take long: the per-node deadline bounds a node's whole stream.
        deadlines = common_pb2.FanoutDeadlines(
            per_node_ms=request.deadlines.per_node_ms or BUNDLE_NODE_DEADLINE_MS,
            overall_ms=request.deadlines.overall_ms or BUNDLE_OVERALL_DEADLINE_MS,
        )
        # Chunks are up to 256 KiB: a few in the queue keep every node's stream
        # moving without the controller holding megabytes per bundle.
        named = _bundle_error_naming(inner)
        try:
            async for outcome in self._fan_out(
                context, request.selector, deadlines, call, queue_size=BUNDLE_QUEUE_CHUNKS
            ):
                if outcome.error is not None:
                    failed.add(outcome.node)
                    yield controller_pb2.FleetBundleChunk(error=named(outcome.error))
                elif outcome.result is not None:
                    if outcome.result.HasField("trailer"):
                        ok.add(outcome.node)
                    yield controller_pb2.FleetBundleChunk(chunk=outcome.result)
        except (asyncio.CancelledError, GeneratorExit):
            # The caller went away (CLI interrupted): counted, then the nodes'
            # streams are cancelled by the fan-out's own cleanup.
            BUNDLES_GENERATED.labels("cancelled").inc()
            raise
        outcome_label = "success" if not failed else ("partial" if ok else "failure")
        BUNDLES_GENERATED.labels(outcome_label).inc()
        await self.ctx.events.emit(
            "bundle",
            "",
            f"support bundle {inner.request_id} by {identity.role.value}:{identity.name}: "
            f"{len(ok)} node(s) ok, {len(failed)} failed",
            attributes={"request_id": inner.request_id, "outcome": outcome_label},
        )


def diagnose_messages(
    outcomes: list[NodeOutcome[common_pb2.CheckResultBatch]], *, batched: bool
) -> Iterator[controller_pb2.DiagnoseResult]:
    """The DiagnoseResult messages for outcomes that arrived together, in their
    order: one message per result and per error; or, batched, the results
    together in ``checks`` batches of at most about DIAGNOSE_BATCH_BYTES, each
    error between them where it came."""
    if not batched:
        for outcome in outcomes:
            if outcome.error is not None:
                yield controller_pb2.DiagnoseResult(error=outcome.error)
            elif outcome.result is not None:
                for check in outcome.result.results:
                    yield controller_pb2.DiagnoseResult(check=check)
        return
    pending = controller_pb2.DiagnoseResult()
    size = 0
    for outcome in outcomes:
        if outcome.error is not None:
            if size:
                yield pending
                pending, size = controller_pb2.DiagnoseResult(), 0
            yield controller_pb2.DiagnoseResult(error=outcome.error)
        elif outcome.result is not None and outcome.result.results:
            grows = outcome.result.ByteSize()
            if size and size + grows > DIAGNOSE_BATCH_BYTES:
                yield pending
                pending, size = controller_pb2.DiagnoseResult(), 0
            pending.checks.MergeFrom(outcome.result)
            size += grows
    if size:
        yield pending


def _bundle_error_naming(
    request: executor_pb2.CollectBundleRequest,
) -> Callable[[common_pb2.NodeError], common_pb2.NodeError]:
    """How a node's error is named in the bundle: by the node's pseudonym when the
    bundle is scrubbed (as its archive is; the real name is only in the keep-map),
    else as it is."""
    if not request.scrub:
        return lambda error: error
    maps = PseudonymMaps(request.scrub_key)

    def named(error: common_pb2.NodeError) -> common_pb2.NodeError:
        pseudonym = maps.pseudonym("hostname", error.node)
        return common_pb2.NodeError(
            node=pseudonym,
            kind=error.kind,
            message=error.message.replace(error.node, pseudonym),
            grpc_code=error.grpc_code,
        )

    return named


async def _wrap_health(
    results: AsyncIterator[executor_pb2.NodeHealth],
) -> AsyncIterator[controller_pb2.NodeHealthResult]:
    async for health in results:
        yield controller_pb2.NodeHealthResult(health=health)
