"""The executor's gRPC service (``novaops.v1.ExecutorService``).

Only controllers may call it: every RPC first checks that the caller's
certificate carries the controller role, and answers PERMISSION_DENIED naming
the caller otherwise (in ``tls.insecure`` mode there is no certificate and the
check is skipped; the daemon logs a warning at start). RPCs whose feature is not
a test context leaves out answer UNIMPLEMENTED naming the feature.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from novaops.client.tls import AioContext, peer_identity
from novaops.executor.bundle_service import BundleRequestError, BundleService
from novaops.executor.checks.model import Status, to_proto
from novaops.executor.checks.runner import (
    DiagnoseTarget,
    run_diagnose,
    run_health_checks,
)
from novaops.executor.checks.sources import CheckSources
from novaops.executor.cleanliness import HostFinders, check_to_proto, verify_clean
from novaops.executor.facts import gather_host_facts
from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import (
    BLOCKED,
    CRASHED,
    NOSTATE,
    PAUSED,
    PMSUSPENDED,
    RUNNING,
    SHUTDOWN,
    SHUTOFF,
    DomainNotFound,
    DomainRecord,
    LibvirtGateway,
    LibvirtUnavailable,
)
from novaops.executor.metrics import count_degraded_controls
from novaops.executor.quarantine import NodeQuarantine, source_from_proto
from novaops.executor.recovery import RecoveryCatalogue, RecoveryError
from novaops.pki.identity import Identity, Role
from novaops.v1 import common_pb2, executor_pb2, executor_pb2_grpc

log = logging.getLogger(__name__)

# A file in state_dir whose presence means "this node is quarantined". Written by
# the quarantine feature (issue #5); only read here.
QUARANTINE_FLAG_FILE = "quarantined"


@dataclass
class ExecutorContext:
    """What the servicer needs of the daemon: identity, host access, libvirt."""

    node: str
    version: str
    host_root: HostRoot
    libvirt: LibvirtGateway
    state_dir: Path
    insecure: bool = False
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    # The feature parts; None only in tests that exercise the basics.
    checks: CheckSources | None = None
    catalogue: RecoveryCatalogue | None = None
    finders: HostFinders | None = None
    quarantine: NodeQuarantine | None = None
    bundles: BundleService | None = None

    def quarantined(self) -> bool:
        """Whether this node is quarantined (persisted state, or the flag file)."""
        if self.quarantine is not None:
            return self.quarantine.is_quarantined()
        return (self.state_dir / QUARANTINE_FLAG_FILE).exists()


def describe_caller(identity: Identity) -> str:
    """ "user:alice (operator)" for users, "executor:node-2" for the other roles."""
    if identity.role.is_user:
        return f"user:{identity.name} ({identity.role.value})"
    return f"{identity.role.value}:{identity.name}"


def now_timestamp() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


_DOMAIN_STATES: dict[int, common_pb2.DomainState] = {
    NOSTATE: common_pb2.DOMAIN_STATE_NOSTATE,
    RUNNING: common_pb2.DOMAIN_STATE_RUNNING,
    BLOCKED: common_pb2.DOMAIN_STATE_BLOCKED,
    PAUSED: common_pb2.DOMAIN_STATE_PAUSED,
    SHUTDOWN: common_pb2.DOMAIN_STATE_SHUTDOWN,
    SHUTOFF: common_pb2.DOMAIN_STATE_SHUTOFF,
    CRASHED: common_pb2.DOMAIN_STATE_CRASHED,
    PMSUSPENDED: common_pb2.DOMAIN_STATE_PMSUSPENDED,
}


def domain_state_to_proto(state: int) -> common_pb2.DomainState:
    """libvirt virDomainState code -> DomainState; UNSPECIFIED for a code newer than us."""
    return _DOMAIN_STATES.get(state, common_pb2.DOMAIN_STATE_UNSPECIFIED)


def domain_to_proto(record: DomainRecord) -> common_pb2.Domain:
    return common_pb2.Domain(
        name=record.name,
        uuid=record.uuid,
        state=domain_state_to_proto(record.state),
        state_reason=record.reason,
        vcpus=record.vcpus,
        memory_kib=record.memory_kib,
        uptime_seconds=record.uptime_seconds,
        persistent=record.persistent,
        autostart=record.autostart,
    )


def evaluate_health(facts: common_pb2.HostFacts, quarantined: bool) -> common_pb2.HealthStatus:
    """The node's verdict: quarantined wins, then libvirt reachability."""
    if quarantined:
        return common_pb2.HEALTH_STATUS_QUARANTINED
    if not facts.libvirt_reachable:
        return common_pb2.HEALTH_STATUS_UNHEALTHY
    return common_pb2.HEALTH_STATUS_HEALTHY


def libvirt_check(node: str, facts: common_pb2.HostFacts) -> common_pb2.CheckResult:
    """The "host.libvirt" health check from host facts."""
    result = common_pb2.CheckResult(
        node=node,
        check_id="host.libvirt",
        target="host",
        evidence={"uri": facts.libvirt_uri},
        observed_at=now_timestamp(),
        event_id=uuid.uuid4().hex,
    )
    if facts.libvirt_reachable:
        result.status = common_pb2.CHECK_STATUS_OK
        result.summary = f"libvirt {facts.libvirt_version} answers ({facts.hypervisor})"
        result.evidence["hypervisor"] = facts.hypervisor
        return result
    result.status = common_pb2.CHECK_STATUS_FAIL
    result.summary = f"libvirt does not answer: {facts.libvirt_error}"
    result.evidence["error"] = facts.libvirt_error
    result.remediation.extend(
        [
            common_pb2.RemediationStep(
                description="Check that the libvirt daemon runs",
                command="systemctl status libvirtd virtqemud",
            ),
            common_pb2.RemediationStep(
                description="Check libvirt_uri in the executor configuration",
                command=f"virsh -c {facts.libvirt_uri} version",
            ),
        ]
    )
    return result


class ExecutorServicer(executor_pb2_grpc.ExecutorServiceServicer):
    """ExecutorService over an :class:`ExecutorContext`."""

    def __init__(self, ctx: ExecutorContext) -> None:
        self.ctx = ctx

    async def _authorize(self, context: AioContext) -> None:
        if self.ctx.insecure:
            return
        identity = peer_identity(context)
        if identity is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "caller presented no novaops certificate (expected a SAN URI spiffe://novaops/...)",
            )
            raise AssertionError("unreachable")  # abort raises
        if identity.role is not Role.CONTROLLER:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"executor RPCs are for controllers; caller is {describe_caller(identity)}",
            )

    async def GetHealth(
        self, request: executor_pb2.GetHealthRequest, context: AioContext
    ) -> executor_pb2.NodeHealth:
        await self._authorize(context)
        facts = await gather_host_facts(self.ctx.host_root, self.ctx.libvirt)
        quarantined = self.ctx.quarantined()
        health = executor_pb2.NodeHealth(
            node=self.ctx.node,
            status=evaluate_health(facts, quarantined),
            facts=facts,
            version=self.ctx.version,
            quarantined=quarantined,
        )
        health.started_at.FromDatetime(self.ctx.started_at)
        if request.include_checks:
            if self.ctx.checks is None:
                health.checks.append(libvirt_check(self.ctx.node, facts))
            else:
                now = dt.datetime.now(dt.UTC)
                results = await run_health_checks(self.ctx.checks)
                count_degraded_controls(results)
                health.checks.extend(
                    to_proto(r, self.ctx.node, now, uuid.uuid4().hex) for r in results
                )
                if not quarantined and any(r.status is Status.FAIL for r in results):
                    health.status = common_pb2.HEALTH_STATUS_UNHEALTHY
        return health

    async def GetInventory(
        self, request: executor_pb2.GetInventoryRequest, context: AioContext
    ) -> common_pb2.Inventory:
        await self._authorize(context)
        inventory = common_pb2.Inventory(observed_at=now_timestamp())
        try:
            records = await self.ctx.libvirt.list_domains()
        except LibvirtUnavailable as exc:
            inventory.libvirt_error = str(exc)
            return inventory
        inventory.domains.extend(domain_to_proto(r) for r in records)
        return inventory

    async def GetVmStats(
        self, request: executor_pb2.GetVmStatsRequest, context: AioContext
    ) -> executor_pb2.VmStats:
        await self._authorize(context)
        if not request.vm:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "vm (a domain name) is required")
        try:
            counters = await self.ctx.libvirt.domain_counters(request.vm)
        except DomainNotFound:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no domain named {request.vm!r} on node {self.ctx.node}",
            )
            raise AssertionError("unreachable") from None
        except LibvirtUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise AssertionError("unreachable") from None
        return executor_pb2.VmStats(
            node=self.ctx.node,
            vm=request.vm,
            cpu_time_ns=counters.cpu_time_ns,
            memory_kib=counters.memory_kib,
            rss_kib=counters.rss_kib,
            block=[
                executor_pb2.BlockStats(
                    device=b.device,
                    read_bytes=b.read_bytes,
                    write_bytes=b.write_bytes,
                    read_requests=b.read_requests,
                    write_requests=b.write_requests,
                    errors=b.errors,
                )
                for b in counters.block
            ],
            interfaces=[
                executor_pb2.InterfaceStats(
                    device=i.device,
                    rx_bytes=i.rx_bytes,
                    tx_bytes=i.tx_bytes,
                    rx_packets=i.rx_packets,
                    tx_packets=i.tx_packets,
                    rx_errors=i.rx_errors,
                    tx_errors=i.tx_errors,
                    rx_drops=i.rx_drops,
                    tx_drops=i.tx_drops,
                )
                for i in counters.interfaces
            ],
            observed_at=now_timestamp(),
        )

    async def Diagnose(
        self, request: executor_pb2.DiagnoseRequest, context: AioContext
    ) -> AsyncIterator[common_pb2.CheckResult]:
        await self._authorize(context)
        if self.ctx.checks is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "diagnostics are not configured")
            return
        try:
            target = DiagnoseTarget.from_request(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        async for result in run_diagnose(target, self.ctx.checks):
            yield to_proto(result, self.ctx.node, dt.datetime.now(dt.UTC), uuid.uuid4().hex)

    async def Recover(
        self, request: executor_pb2.RecoverRequest, context: AioContext
    ) -> AsyncIterator[executor_pb2.RecoveryStep]:
        # Allowed while quarantined: recovery is how a quarantined node gets clean.
        await self._authorize(context)
        if self.ctx.catalogue is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "recovery is not configured")
            return
        try:
            self.ctx.catalogue.validate(request.action, request.target)
        except RecoveryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        grace = request.grace.ToTimedelta().total_seconds() if request.HasField("grace") else None
        log.info(
            "recovery %s%s requested by %s%s",
            request.action,
            f" on {request.target}" if request.target else "",
            request.actor or "unknown",
            " (dry run)" if request.dry_run else "",
        )
        steps = self.ctx.catalogue.run(
            request.action, request.target, dry_run=request.dry_run, grace=grace or None
        )
        async for step in steps:
            yield step.to_proto(self.ctx.node)

    async def VerifyClean(
        self, request: executor_pb2.VerifyCleanRequest, context: AioContext
    ) -> executor_pb2.VerifyCleanResult:
        await self._authorize(context)
        if self.ctx.finders is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "verify-clean is not configured")
            raise AssertionError("unreachable")
        report = await verify_clean(self.ctx.node, self.ctx.finders)
        return executor_pb2.VerifyCleanResult(
            node=self.ctx.node,
            clean=report.clean,
            checks=[check_to_proto(self.ctx.node, c, report.observed_at) for c in report.checks],
        )

    async def CollectBundle(
        self, request: executor_pb2.CollectBundleRequest, context: AioContext
    ) -> AsyncIterator[executor_pb2.BundleChunk]:
        await self._authorize(context)
        if self.ctx.bundles is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "support bundles are not configured")
            return
        try:
            builder = self.ctx.bundles.builder(request)
        except BundleRequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        async for chunk in self.ctx.bundles.stream(request, builder):
            yield chunk

    async def ApplyQuarantine(
        self, request: executor_pb2.ApplyQuarantineRequest, context: AioContext
    ) -> executor_pb2.ApplyQuarantineResult:
        await self._authorize(context)
        if self.ctx.quarantine is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "quarantine is not configured")
            raise AssertionError("unreachable")
        try:
            source = source_from_proto(request.source)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from None
        result = await self.ctx.quarantine.apply(
            request.quarantined, request.reason, request.actor, source, request.fence_revision
        )
        if result.changed:
            log.warning(
                "node %s %s by %s (%s): %s",
                self.ctx.node,
                "quarantined" if result.quarantined else "released",
                request.actor,
                source,
                request.reason,
            )
        return executor_pb2.ApplyQuarantineResult(
            node=self.ctx.node,
            quarantined=result.quarantined,
            changed=result.changed,
            hook_results=list(result.hook_results),
        )


def add_executor_service(server: grpc.aio.Server, ctx: ExecutorContext) -> ExecutorServicer:
    """Register the ExecutorService on server; returns the servicer."""
    servicer = ExecutorServicer(ctx)
    executor_pb2_grpc.add_ExecutorServiceServicer_to_server(servicer, server)
    return servicer
