"""gRPC servicers of the controller: registry, cluster views, and the RPCs still owed.

Each servicer method authorizes the caller first (controller/auth.py), then
talks to the store. Reads are served by any replica; features not built yet
answer UNIMPLEMENTED naming the issue that owes them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from novaops.client.tls import AioContext
from novaops.controller.auth import require, unimplemented
from novaops.controller.config import ControllerConfig
from novaops.controller.election import Elector
from novaops.controller.executors import ExecutorPool, select_targets
from novaops.controller.fanout import FanoutTarget, NodeCall, NodeOutcome, fan_out, first_result
from novaops.controller.registry import liveness_ttl
from novaops.controller.store.base import (
    LeaderRecord,
    NodeRecord,
    NodeRegistration,
    Store,
    StoreError,
)
from novaops.pki.identity import Role
from novaops.v1 import common_pb2, controller_pb2, controller_pb2_grpc, executor_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

ISSUE_DIAGNOSTICS = 3
ISSUE_BUNDLES = 4
ISSUE_HEALTH = 5


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def node_info(record: NodeRecord, quarantined: bool) -> controller_pb2.NodeInfo:
    info = controller_pb2.NodeInfo(
        name=record.name,
        address=record.address,
        state=common_pb2.NODE_STATE_UP if record.up else common_pb2.NODE_STATE_DOWN,
        quarantined=quarantined,
        version=record.version,
        labels=record.labels,
        health=record.health,  # type: ignore[arg-type]
        registered_at=timestamp(record.registered_at),
        last_heartbeat=timestamp(record.last_heartbeat),
    )
    if record.facts:
        info.facts.ParseFromString(record.facts)
    return info


def leader_info(record: LeaderRecord | None) -> controller_pb2.LeaderInfo:
    if record is None:
        return controller_pb2.LeaderInfo()
    return controller_pb2.LeaderInfo(
        name=record.name,
        address=record.address,
        since=timestamp(record.since),
        revision=record.revision,
        lease_ttl_seconds=record.lease_ttl,
    )


@dataclass
class ControllerContext:
    """What every servicer shares: configuration, store and election state."""

    config: ControllerConfig
    store: Store
    elector: Elector
    version: str
    executors: ExecutorPool

    @property
    def insecure(self) -> bool:
        return self.config.tls.insecure

    @property
    def liveness_ttl(self) -> float:
        return liveness_ttl(self.config.heartbeat_interval_ms, self.config.missed_heartbeats_limit)


async def _store_call_failed(context: AioContext, exc: StoreError) -> None:
    log.warning("store call failed: %s", exc)
    await context.abort(grpc.StatusCode.UNAVAILABLE, f"controller store unavailable: {exc}")


class RegistryServicer(controller_pb2_grpc.RegistryServiceServicer):
    """Executors register and heartbeat; a node's identity must match its certificate."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx

    async def _authorize_node(self, node: str, context: AioContext) -> None:
        identity = await require(context, Role.EXECUTOR, insecure=self.ctx.insecure)
        if not self.ctx.insecure and identity.name != node:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"executor certificate is for node {identity.name!r}, not {node!r}",
            )

    async def Register(
        self, request: controller_pb2.RegisterRequest, context: AioContext
    ) -> controller_pb2.RegisterResponse:
        await self._authorize_node(request.node, context)
        if not request.address:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "address is required (host:port)")
        try:
            await self.ctx.store.register_node(
                NodeRegistration(
                    name=request.node,
                    address=request.address,
                    version=request.version,
                    labels=dict(request.labels),
                    facts=request.facts.SerializeToString(),
                )
            )
            await self.ctx.store.heartbeat(
                request.node, self.ctx.liveness_ttl, common_pb2.HEALTH_STATUS_UNSPECIFIED
            )
            quarantines = await self.ctx.store.get_quarantines()
        except StoreError as exc:
            await _store_call_failed(context, exc)
            raise
        log.info("node %s registered from %s", request.node, request.address)
        return controller_pb2.RegisterResponse(
            heartbeat_interval_ms=self.ctx.config.heartbeat_interval_ms,
            missed_heartbeats_limit=self.ctx.config.missed_heartbeats_limit,
            controller=self.ctx.config.name,
            quarantined=request.node in quarantines,
        )

    async def Heartbeat(
        self, request: controller_pb2.HeartbeatRequest, context: AioContext
    ) -> controller_pb2.HeartbeatResponse:
        await self._authorize_node(request.node, context)
        try:
            known = await self.ctx.store.heartbeat(
                request.node, self.ctx.liveness_ttl, request.health
            )
            quarantines = await self.ctx.store.get_quarantines() if known else {}
        except StoreError as exc:
            await _store_call_failed(context, exc)
            raise
        return controller_pb2.HeartbeatResponse(
            known=known, quarantined=request.node in quarantines
        )


class ClusterServicer(controller_pb2_grpc.ClusterServiceServicer):
    """Cluster views served by any replica."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx

    async def _nodes(self, context: AioContext) -> list[controller_pb2.NodeInfo]:
        try:
            records = await self.ctx.store.list_nodes()
            quarantines = await self.ctx.store.get_quarantines()
        except StoreError as exc:
            await _store_call_failed(context, exc)
            raise
        return [node_info(r, r.name in quarantines) for r in records]

    async def ListNodes(
        self, request: controller_pb2.ListNodesRequest, context: AioContext
    ) -> controller_pb2.ListNodesResponse:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        return controller_pb2.ListNodesResponse(nodes=await self._nodes(context))

    async def GetClusterStatus(
        self, request: controller_pb2.GetClusterStatusRequest, context: AioContext
    ) -> controller_pb2.ClusterStatus:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        nodes = await self._nodes(context)
        try:
            leader = await self.ctx.store.get_leader()
        except StoreError as exc:
            await _store_call_failed(context, exc)
            raise
        up = sum(1 for n in nodes if n.state == common_pb2.NODE_STATE_UP)
        return controller_pb2.ClusterStatus(
            nodes_total=len(nodes),
            nodes_up=up,
            nodes_down=len(nodes) - up,
            nodes_quarantined=sum(1 for n in nodes if n.quarantined),
            leader=leader_info(leader),
            store=self.ctx.store.kind,
            store_endpoint=self.ctx.store.endpoint,
            answered_by=self.ctx.config.name,
            version=self.ctx.version,
        )

    async def GetLeader(
        self, request: controller_pb2.GetLeaderRequest, context: AioContext
    ) -> controller_pb2.LeaderInfo:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        try:
            return leader_info(await self.ctx.store.get_leader())
        except StoreError as exc:
            await _store_call_failed(context, exc)
            raise

    async def TransferLeadership(
        self,
        request: controller_pb2.TransferLeadershipRequest,
        context: AioContext,
    ) -> controller_pb2.TransferLeadershipResponse:
        await require(context, Role.ADMIN, insecure=self.ctx.insecure)
        await unimplemented(context, "leader transfer (HA hardening)", ISSUE_HEALTH)
        raise AssertionError("unreachable")

    async def WatchEvents(
        self, request: controller_pb2.WatchEventsRequest, context: AioContext
    ) -> AsyncIterator[controller_pb2.ClusterEvent]:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        await unimplemented(context, "cluster events", ISSUE_HEALTH)
        yield controller_pb2.ClusterEvent()  # pragma: no cover - abort raised above


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
    ) -> AsyncIterator[NodeOutcome[T]]:
        try:
            records = await self.ctx.store.list_nodes()
        except StoreError as exc:
            await _store_call_failed(context, exc)
            raise
        targets, unknown = select_targets(records, selector)
        for error in unknown:
            yield NodeOutcome(error.node, error=error)
        per_node = (deadlines.per_node_ms or self.ctx.config.per_node_ms) / 1000
        overall = (deadlines.overall_ms or self.ctx.config.overall_ms) / 1000
        async for outcome in fan_out(targets, call, per_node=per_node, overall=overall):
            yield outcome

    async def GetHealth(
        self, request: controller_pb2.FleetHealthRequest, context: AioContext
    ) -> AsyncIterator[controller_pb2.NodeHealthResult]:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        if request.recover or request.verify_clean:
            await unimplemented(context, "health --recover / --verify-clean", ISSUE_HEALTH)
        inner = executor_pb2.GetHealthRequest(include_checks=request.include_checks)

        def call(target: FanoutTarget, timeout: float) -> AsyncIterator[executor_pb2.NodeHealth]:
            stub = self.ctx.executors.stub(target.address)
            return first_result(stub.GetHealth(inner, timeout=timeout))

        async for outcome in self._fan_out(context, request.selector, request.deadlines, call):
            if outcome.error is not None:
                yield controller_pb2.NodeHealthResult(error=outcome.error)
            else:
                yield controller_pb2.NodeHealthResult(health=outcome.result)

    async def Diagnose(
        self, request: controller_pb2.FleetDiagnoseRequest, context: AioContext
    ) -> AsyncIterator[controller_pb2.DiagnoseResult]:
        await require(context, Role.OPERATOR, insecure=self.ctx.insecure)
        await unimplemented(context, "cluster diagnostics (diag ...)", ISSUE_DIAGNOSTICS)
        yield controller_pb2.DiagnoseResult()  # pragma: no cover

    async def Recover(
        self, request: controller_pb2.FleetRecoverRequest, context: AioContext
    ) -> AsyncIterator[controller_pb2.RecoverResult]:
        await require(context, Role.OPERATOR, insecure=self.ctx.insecure)
        await unimplemented(context, "recovery actions", ISSUE_HEALTH)
        yield controller_pb2.RecoverResult()  # pragma: no cover

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
        await unimplemented(context, "vm stats", ISSUE_DIAGNOSTICS)
        raise AssertionError("unreachable")

    async def CollectBundle(
        self, request: controller_pb2.FleetBundleRequest, context: AioContext
    ) -> AsyncIterator[controller_pb2.FleetBundleChunk]:
        await require(context, Role.OPERATOR, insecure=self.ctx.insecure)
        await unimplemented(context, "support bundles", ISSUE_BUNDLES)
        yield controller_pb2.FleetBundleChunk()  # pragma: no cover


class QuarantineServicer(controller_pb2_grpc.QuarantineServiceServicer):
    """Quarantine reads work now (node list shows them); changes are owed by issue #5."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx

    async def Quarantine(
        self, request: controller_pb2.QuarantineRequest, context: AioContext
    ) -> controller_pb2.QuarantineResponse:
        await require(context, Role.OPERATOR, insecure=self.ctx.insecure)
        await unimplemented(context, "quarantine", ISSUE_HEALTH)
        raise AssertionError("unreachable")

    async def Unquarantine(
        self, request: controller_pb2.UnquarantineRequest, context: AioContext
    ) -> controller_pb2.QuarantineResponse:
        await require(context, Role.OPERATOR, insecure=self.ctx.insecure)
        await unimplemented(context, "unquarantine", ISSUE_HEALTH)
        raise AssertionError("unreachable")

    async def ListQuarantines(
        self, request: controller_pb2.ListQuarantinesRequest, context: AioContext
    ) -> controller_pb2.ListQuarantinesResponse:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        try:
            stored = await self.ctx.store.get_quarantines()
        except StoreError as exc:
            await _store_call_failed(context, exc)
            raise
        records = []
        for payload in stored.values():
            record = common_pb2.QuarantineRecord()
            record.ParseFromString(payload)
            records.append(record)
        return controller_pb2.ListQuarantinesResponse(records=records)

    async def GetQuarantineHistory(
        self,
        request: controller_pb2.GetQuarantineHistoryRequest,
        context: AioContext,
    ) -> controller_pb2.GetQuarantineHistoryResponse:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        try:
            stored = await self.ctx.store.get_history(request.node or None)
        except StoreError as exc:
            await _store_call_failed(context, exc)
            raise
        entries = []
        for item in stored:
            entry = common_pb2.QuarantineHistoryEntry()
            entry.ParseFromString(item.payload)
            entry.sequence = item.sequence
            entries.append(entry)
        if request.limit:
            entries = entries[-request.limit :]
        return controller_pb2.GetQuarantineHistoryResponse(entries=entries)


class AutomationServicer(controller_pb2_grpc.AutomationServiceServicer):
    """The leader's automation; owed by issue #5."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx

    async def _owed(self, context: AioContext, role: Role) -> None:
        await require(context, role, insecure=self.ctx.insecure)
        await unimplemented(context, "health automation and its circuit breaker", ISSUE_HEALTH)

    async def GetAutomationStatus(
        self, request: controller_pb2.GetAutomationStatusRequest, context: AioContext
    ) -> controller_pb2.AutomationStatus:
        await self._owed(context, Role.VIEWER)
        raise AssertionError("unreachable")

    async def PauseAutomation(
        self, request: controller_pb2.PauseAutomationRequest, context: AioContext
    ) -> controller_pb2.AutomationStatus:
        await self._owed(context, Role.ADMIN)
        raise AssertionError("unreachable")

    async def ResumeAutomation(
        self, request: controller_pb2.ResumeAutomationRequest, context: AioContext
    ) -> controller_pb2.AutomationStatus:
        await self._owed(context, Role.ADMIN)
        raise AssertionError("unreachable")

    async def ResetBreaker(
        self, request: controller_pb2.ResetBreakerRequest, context: AioContext
    ) -> controller_pb2.AutomationStatus:
        await self._owed(context, Role.ADMIN)
        raise AssertionError("unreachable")


def add_servicers(server: grpc.aio.Server, ctx: ControllerContext) -> None:
    controller_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(ctx), server)
    controller_pb2_grpc.add_ClusterServiceServicer_to_server(ClusterServicer(ctx), server)
    controller_pb2_grpc.add_FleetServiceServicer_to_server(FleetServicer(ctx), server)
    controller_pb2_grpc.add_QuarantineServiceServicer_to_server(QuarantineServicer(ctx), server)
    controller_pb2_grpc.add_AutomationServiceServicer_to_server(AutomationServicer(ctx), server)
