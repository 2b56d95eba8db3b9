"""gRPC servicers of the controller for the registry and the cluster views.

Each servicer method authorizes the caller first (controller/auth.py), then
talks to the store. Reads and registry changes (registration, heartbeats, node
removal) are served by any replica; leadership transfer needs the leader.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator

import grpc

from novaops.client.tls import AioContext
from novaops.controller.auth import require
from novaops.controller.context import (
    ControllerContext,
    leader_info,
    node_info,
    store_call_failed,
)
from novaops.controller.events import sequence_of
from novaops.controller.fleet import FleetServicer
from novaops.controller.operations import AutomationServicer, QuarantineServicer, actor
from novaops.controller.quarantine import record_synced_hooks
from novaops.controller.registry import HealthReports, ReportedHealth
from novaops.controller.store.base import NodeRecord, NodeRegistration, Removal, StoreError
from novaops.pki.identity import Role
from novaops.v1 import common_pb2, controller_pb2, controller_pb2_grpc

log = logging.getLogger(__name__)


class RegistryServicer(controller_pb2_grpc.RegistryServiceServicer):
    """Executors register and heartbeat; a node's identity must match its certificate.

    A heartbeat's verdict goes to the store (``node list``, ``novaops_worker_health``);
    its failing check ids stay in this replica's memory (``reports``). The answer
    carries the store's quarantine record, and when the node's own state differs
    from it (it reports QUARANTINED or not) also the leader's fence and, for a
    release, the node's last history entry, so the node can apply the decision
    with the real reason and actor.
    """

    def __init__(self, ctx: ControllerContext, reports: HealthReports | None = None) -> None:
        self.ctx = ctx
        self.reports = reports if reports is not None else HealthReports()

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
                request.node, self.ctx.pacing.ttl, common_pb2.HEALTH_STATUS_UNSPECIFIED
            )
            quarantines = await self.ctx.store.get_quarantines()
        except StoreError as exc:
            await store_call_failed(context, exc)
        log.info("node %s registered from %s", request.node, request.address)
        return controller_pb2.RegisterResponse(
            heartbeat_interval_ms=self.ctx.pacing.interval_ms,
            missed_heartbeats_limit=self.ctx.config.missed_heartbeats_limit,
            controller=self.ctx.config.name,
            quarantined=request.node in quarantines,
        )

    async def Heartbeat(
        self, request: controller_pb2.HeartbeatRequest, context: AioContext
    ) -> controller_pb2.HeartbeatResponse:
        await self._authorize_node(request.node, context)
        try:
            # The TTL goes with the interval this answer tells the node.
            interval_ms = self.ctx.pacing.interval_ms
            known, stored = await self.ctx.store.heartbeat_with_quarantine(
                request.node, self.ctx.pacing.ttl, request.health
            )
            if not known:
                return controller_pb2.HeartbeatResponse(known=False)
            response = controller_pb2.HeartbeatResponse(
                known=True, quarantined=stored is not None, heartbeat_interval_ms=interval_ms
            )
            if stored is not None:
                response.quarantine.ParseFromString(stored)
                # The node needs who/why/when, not the evidence: keep heartbeats small.
                response.quarantine.ClearField("causes")
            local = request.health == common_pb2.HEALTH_STATUS_QUARANTINED
            if local != (stored is not None):
                # The node acts on this answer: give it the fence and the release.
                leader = await self.ctx.store.get_leader()
                response.fence_revision = leader.revision if leader is not None else 0
                if stored is None:
                    history = await self.ctx.store.get_history(request.node)
                    last = common_pb2.QuarantineHistoryEntry()
                    if history:
                        last.ParseFromString(history[-1].payload)
                        last.sequence = history[-1].sequence
                    if last.action == "unquarantine":
                        response.released.CopyFrom(last)
            if request.HasField("synced_quarantine"):
                response.synced_quarantine_recorded = await record_synced_hooks(
                    self.ctx.events, request.node, request.synced_quarantine, self.ctx.store
                )
        except StoreError as exc:
            await store_call_failed(context, exc)
        checked_at = (
            request.checked_at.ToNanoseconds() / 1e9 if request.HasField("checked_at") else None
        )
        self.reports.record(request.node, ReportedHealth(tuple(request.failing_checks), checked_at))
        return response


class ClusterServicer(controller_pb2_grpc.ClusterServiceServicer):
    """Cluster views served by any replica."""

    def __init__(self, ctx: ControllerContext, reports: HealthReports | None = None) -> None:
        self.ctx = ctx
        self.reports = reports if reports is not None else HealthReports()

    async def _nodes(self, context: AioContext) -> list[controller_pb2.NodeInfo]:
        try:
            records = await self.ctx.store.list_nodes()
            quarantines = await self.ctx.store.get_quarantines()
        except StoreError as exc:
            await store_call_failed(context, exc)
        infos = []
        for record in records:
            info = node_info(record, record.name in quarantines)
            report = self.reports.current(record.name, record.last_heartbeat)
            if report is not None:
                info.failing_checks.extend(report.failing_checks)
                if report.checked_at is not None:
                    info.health_checked_at.FromNanoseconds(int(report.checked_at * 1e9))
            infos.append(info)
        return infos

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
            await store_call_failed(context, exc)
        try:
            automation = await self.ctx.automation.status()
        except StoreError as exc:
            await store_call_failed(context, exc)
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
            automation_enabled=self.ctx.config.automation.enabled,
            automation_paused=automation.paused,
            breaker_tripped=automation.breaker_tripped,
        )

    async def GetLeader(
        self, request: controller_pb2.GetLeaderRequest, context: AioContext
    ) -> controller_pb2.LeaderInfo:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        try:
            return leader_info(await self.ctx.store.get_leader())
        except StoreError as exc:
            await store_call_failed(context, exc)

    async def TransferLeadership(
        self,
        request: controller_pb2.TransferLeadershipRequest,
        context: AioContext,
    ) -> controller_pb2.TransferLeadershipResponse:
        identity = await require(context, Role.ADMIN, insecure=self.ctx.insecure)
        if request.to:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "choosing the successor is not supported: any other replica takes over; "
                "leave --to empty",
            )
        try:
            leader = await self.ctx.store.get_leader()
        except StoreError as exc:
            await store_call_failed(context, exc)
        previous = leader_info(leader)
        if not self.ctx.elector.is_leader():
            where = f"{leader.name} at {leader.address}" if leader else "no leader"
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{self.ctx.config.name} is not the leader ({where}); ask the leader",
            )
        hold_off = 2.0 * self.ctx.config.lease_ttl_seconds
        if request.dry_run:
            return controller_pb2.TransferLeadershipResponse(
                previous=previous,
                message=f"dry run: {self.ctx.config.name} would resign and stay out of "
                f"elections for {hold_off:.0f}s",
            )
        await self.ctx.events.emit(
            "leader.transfer",
            "",
            f"{self.ctx.config.name} hands over leadership at the request of "
            f"{identity.role.value}:{identity.name}: {request.reason or 'no reason given'}",
        )
        await self.ctx.elector.hand_over(hold_off)
        return controller_pb2.TransferLeadershipResponse(
            previous=previous,
            message=f"{self.ctx.config.name} resigned; another replica takes over "
            f"(this one stays out for {hold_off:.0f}s)",
        )

    async def RemoveNode(
        self, request: controller_pb2.RemoveNodeRequest, context: AioContext
    ) -> controller_pb2.RemoveNodeResponse:
        """Forget a decommissioned node (see the proto). The store checks "down and
        not quarantined" and deletes in one transaction; the checks here come first
        for their messages (and the dry run). Two replicas removing the same node
        at once both record it."""
        identity = await require(context, Role.ADMIN, insecure=self.ctx.insecure)
        node, reason = request.node, request.reason.strip()
        if not node or not reason:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a node and a non-empty reason are required (--reason TEXT)",
            )
        try:
            record = await self.ctx.store.get_node(node)
            quarantined = node in await self.ctx.store.get_quarantines()
        except StoreError as exc:
            await store_call_failed(context, exc)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, await self._not_registered(node))
        if record.up:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{node} is up ({_last_seen(record)}): stop its executor first; "
                "a running executor registers again at its next heartbeat",
            )
        if quarantined:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{node} is quarantined: lift it first (novaops unquarantine {node} "
                "--reason TEXT --force, since the node is down), then remove it",
            )
        if request.dry_run:
            return controller_pb2.RemoveNodeResponse(
                message=f"dry run: would remove {node} from the registry ({_last_seen(record)})"
            )
        # From here the removal happens whole: a caller that gives up (its deadline)
        # must not leave the node removed without its event.
        try:
            outcome = await asyncio.shield(self._remove(record, reason, actor(identity)))
        except StoreError as exc:
            await store_call_failed(context, exc)
        if isinstance(outcome, Removal):  # it changed since the checks above
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{node} came up while being removed: stop its executor first"
                if outcome is Removal.UP
                else f"{node} was quarantined while being removed: lift it first, then remove it",
            )
        return controller_pb2.RemoveNodeResponse(
            removed=True,
            message=f"{node} removed from the registry ({_last_seen(record)})",
            event_id=outcome,
        )

    async def _not_registered(self, node: str) -> str:
        """Why ``node`` cannot be removed when it is not registered, naming its last
        removal when the event log still has one (a retry after a deadline, on this
        replica or another, or someone else was first)."""
        message = f"no node named {node!r} is registered"
        last = None
        try:
            async for event in self.ctx.events.follow(0, {"node.removed"}, follow=False):
                if event.node == node:
                    last = event
        except StoreError:
            return message
        if last is None:
            return message
        when = dt.datetime.fromtimestamp(last.at.seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            f"{message}: it was removed at {when} by {last.attributes.get('actor', '?')} "
            f"({last.attributes.get('reason', '')}; event {last.id})"
        )

    async def _remove(self, record: NodeRecord, reason: str, who: str) -> Removal | str:
        """Removal.UP or QUARANTINED when that changed since the caller's check; else
        the node is gone and the id of its node.removed event is returned."""
        node = record.name
        # Checked and deleted in one store transaction. UNKNOWN: the record went in
        # the meantime (another replica's removal, or this delete resent by the etcd
        # client after a timeout): removed either way.
        outcome = await self.ctx.store.remove_down_node(node)
        if outcome in (Removal.UP, Removal.QUARANTINED):
            return outcome
        self.reports.forget(node)
        try:
            shared = any(r.address == record.address for r in await self.ctx.store.list_nodes())
        except StoreError:
            shared = True  # keep the channel: another node may use the address
        if not shared:
            await self.ctx.executors.forget(record.address)
        event = await self.ctx.events.emit(
            "node.removed",
            node,
            f"{node} removed from the registry by {who}: {reason}",
            attributes={"actor": who, "reason": reason, "address": record.address},
        )
        log.info("node %s removed by %s: %s", node, who, reason)
        return event

    async def WatchEvents(
        self, request: controller_pb2.WatchEventsRequest, context: AioContext
    ) -> AsyncIterator[controller_pb2.ClusterEvent]:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        try:
            after = sequence_of(request.after_id) if request.after_id else 0
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            async for event in self.ctx.events.follow(after, set(request.kinds), request.follow):
                yield event
        except StoreError as exc:
            await store_call_failed(context, exc)


def _last_seen(record: NodeRecord) -> str:
    if record.last_heartbeat is None:
        return "no heartbeat seen"
    ago = max(0.0, time.time() - record.last_heartbeat)
    return f"last heartbeat {ago:.0f}s ago"


def add_servicers(server: grpc.aio.Server, ctx: ControllerContext) -> None:
    # Heartbeats fill it, node views read it; a report is stale once the node's
    # store record has a heartbeat an interval later (at least a second) than it.
    reports = HealthReports(skew=max(1.0, ctx.config.heartbeat_interval_ms / 1000))
    controller_pb2_grpc.add_RegistryServiceServicer_to_server(
        RegistryServicer(ctx, reports), server
    )
    controller_pb2_grpc.add_ClusterServiceServicer_to_server(ClusterServicer(ctx, reports), server)
    controller_pb2_grpc.add_FleetServiceServicer_to_server(FleetServicer(ctx), server)
    controller_pb2_grpc.add_QuarantineServiceServicer_to_server(QuarantineServicer(ctx), server)
    controller_pb2_grpc.add_AutomationServiceServicer_to_server(AutomationServicer(ctx), server)
