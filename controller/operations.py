"""Quarantine and automation RPCs of the controller (mutations need the leader)."""

from __future__ import annotations

import logging

import grpc

from novaops.client.tls import AioContext
from novaops.controller.auth import require
from novaops.controller.context import EXPECTED_ERRORS, ControllerContext, abort_for
from novaops.controller.quarantine import HistoryDetails
from novaops.pki.identity import Identity, Role
from novaops.v1 import common_pb2, controller_pb2, controller_pb2_grpc

log = logging.getLogger(__name__)
REASON_REQUIRED = "a node and a non-empty reason are required (--reason TEXT)"


def actor(identity: Identity) -> str:
    return f"{identity.role.value}:{identity.name}"


class QuarantineServicer(controller_pb2_grpc.QuarantineServiceServicer):
    """Quarantine changes (leader, audited, dry-runnable) and their history."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx

    async def Quarantine(
        self, request: controller_pb2.QuarantineRequest, context: AioContext
    ) -> controller_pb2.QuarantineResponse:
        identity = await require(context, Role.OPERATOR, insecure=self.ctx.insecure)
        if not request.node or not request.reason.strip():
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "node and a non-empty reason are required (--reason TEXT)",
            )
        try:
            return await self.ctx.quarantines.quarantine(
                request.node, request.reason.strip(), actor(identity), dry_run=request.dry_run
            )
        except EXPECTED_ERRORS as exc:
            await abort_for(context, exc)

    async def Unquarantine(
        self, request: controller_pb2.UnquarantineRequest, context: AioContext
    ) -> controller_pb2.QuarantineResponse:
        identity = await require(context, Role.OPERATOR, insecure=self.ctx.insecure)
        if not request.node or not request.reason.strip():
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "node and a non-empty reason are required (--reason TEXT)",
            )
        try:
            return await self.ctx.quarantines.unquarantine(
                request.node,
                request.reason.strip(),
                actor(identity),
                force=request.force,
                dry_run=request.dry_run,
            )
        except EXPECTED_ERRORS as exc:
            await abort_for(context, exc)

    async def ListQuarantines(
        self, request: controller_pb2.ListQuarantinesRequest, context: AioContext
    ) -> controller_pb2.ListQuarantinesResponse:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        try:
            stored = await self.ctx.store.get_quarantines()
        except EXPECTED_ERRORS as exc:
            await abort_for(context, exc)
        records = []
        for payload in stored.values():
            record = common_pb2.QuarantineRecord()
            record.ParseFromString(payload)
            records.append(record)
        return controller_pb2.ListQuarantinesResponse(records=records)

    async def GetQuarantineHistory(
        self, request: controller_pb2.GetQuarantineHistoryRequest, context: AioContext
    ) -> controller_pb2.GetQuarantineHistoryResponse:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        try:
            stored = await self.ctx.store.get_history(request.node or None)
        except EXPECTED_ERRORS as exc:
            await abort_for(context, exc)
        entries = []
        for item in stored:
            entry = common_pb2.QuarantineHistoryEntry()
            entry.ParseFromString(item.payload)
            entry.sequence = item.sequence
            # The change's own events (and hook.failed) were recorded after the entry.
            details = HistoryDetails.decode(item.details)
            known = set(entry.event_ids)
            entry.event_ids.extend(i for i in details.event_ids if i not in known)
            entry.hooks = details.hooks
            entry.hook_results.extend(details.hook_results)
            entries.append(entry)
        if request.limit:
            entries = entries[-request.limit :]
        return controller_pb2.GetQuarantineHistoryResponse(entries=entries)


class AutomationServicer(controller_pb2_grpc.AutomationServiceServicer):
    """Status and operator control of the leader's automation."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx

    async def GetAutomationStatus(
        self, request: controller_pb2.GetAutomationStatusRequest, context: AioContext
    ) -> controller_pb2.AutomationStatus:
        await require(context, Role.VIEWER, insecure=self.ctx.insecure)
        try:
            return await self.ctx.automation.status()
        except EXPECTED_ERRORS as exc:
            await abort_for(context, exc)

    async def _command(
        self, context: AioContext, command: str, reason: str
    ) -> controller_pb2.AutomationStatus:
        """Run an operator command; the event it records names the caller's certificate
        identity (who), the command (what), its time (when) and the reason (why)."""
        identity = await require(context, Role.ADMIN, insecure=self.ctx.insecure)
        try:
            return await self.ctx.automation.command(command, actor(identity), reason.strip())
        except EXPECTED_ERRORS as exc:
            await abort_for(context, exc)

    async def PauseAutomation(
        self, request: controller_pb2.PauseAutomationRequest, context: AioContext
    ) -> controller_pb2.AutomationStatus:
        return await self._command(context, "pause", request.reason)

    async def ResumeAutomation(
        self, request: controller_pb2.ResumeAutomationRequest, context: AioContext
    ) -> controller_pb2.AutomationStatus:
        return await self._command(context, "resume", request.reason)

    async def ResetBreaker(
        self, request: controller_pb2.ResetBreakerRequest, context: AioContext
    ) -> controller_pb2.AutomationStatus:
        return await self._command(context, "reset-breaker", request.reason)
