"""The executor's gRPC service (``novaops.v1.ExecutorService``).

Only controllers may call it: every RPC first checks that the caller's
certificate carries the controller role, and answers PERMISSION_DENIED naming
the caller otherwise (in ``tls.insecure`` mode there is no certificate and the
check is skipped; the daemon logs a warning at start). RPCs whose feature is not
a test context leaves out answer UNIMPLEMENTED naming the feature.

Every RPC of the service is classified in :data:`EXECUTOR_RPCS` (a test checks
the table against the service descriptor, so a new RPC needs a decision):

* ``read-only``: changes nothing on the node; always allowed.
* ``recovery``: a catalogue repair (Recover); allowed while quarantined, since it
  is how a quarantined node gets clean. A non-dry-run recovery is fenced: one
  whose ``fence_revision`` is older than the newest fence the node has seen is
  refused with FAILED_PRECONDITION, and so is one without a fence (0): only the
  leading controller changes a node, and it always sends its term's revision.
* ``quarantine``: ApplyQuarantine, the decision itself; always allowed (fenced in
  :mod:`novaops.executor.quarantine`).
* ``mutating``: any other change; refused with FAILED_PRECONDITION while the node
  is quarantined (:meth:`NodeQuarantine.refuse_if_quarantined`). Today no RPC is
  in this class. An RPC missing from the table is treated as mutating.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import types
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from novaops.client.tls import AioContext, peer_identity
from novaops.executor.bundle_service import BundleRequestError, BundleService
from novaops.executor.checks.model import CheckResult, new_event_id, timestamp, to_proto
from novaops.executor.checks.runner import (
    HEALTH_PARTS,
    DiagnoseTarget,
    run_diagnose_batches,
    run_health_checks,
)
from novaops.executor.checks.sources import CheckSources
from novaops.executor.cleanliness import (
    CleanupOutcome,
    HostFinders,
    check_to_proto,
    cleanup_counter,
    verify_clean,
)
from novaops.executor.facts import gather_host_facts, probe_libvirt
from novaops.executor.health import (
    MIN_CHECK_INTERVAL_SECONDS,
    UNHEALTHY_STATUSES,
    HealthMonitor,
    HealthVerdict,
    health_status,
)
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
from novaops.executor.quarantine import (
    NodeQuarantine,
    NodeQuarantined,
    StaleFence,
    source_from_proto,
)
from novaops.executor.recovery import RecoveryCatalogue, RecoveryError
from novaops.pki.identity import Identity, Role
from novaops.v1 import common_pb2, executor_pb2, executor_pb2_grpc

log = logging.getLogger(__name__)

# A file in state_dir whose presence means "this node is quarantined". Written by
# the quarantine feature (issue #5); only read here.
QUARANTINE_FLAG_FILE = "quarantined"


class RpcKind(enum.Enum):
    """How an executor RPC relates to quarantine (see the module docstring)."""

    READ_ONLY = "read-only"
    RECOVERY = "recovery"
    QUARANTINE = "quarantine"
    MUTATING = "mutating"


# Every RPC of ExecutorService. tests/unit/test_executor_rpcs.py fails when an RPC
# of the service descriptor is missing here.
EXECUTOR_RPCS: Mapping[str, RpcKind] = types.MappingProxyType(
    {
        "GetHealth": RpcKind.READ_ONLY,
        "GetInventory": RpcKind.READ_ONLY,
        "Diagnose": RpcKind.READ_ONLY,
        "Recover": RpcKind.RECOVERY,
        # Reads the baseline; with record_outcome it only counts a metric.
        "VerifyClean": RpcKind.READ_ONLY,
        # Builds the archive in memory/temp space and streams it; the node's
        # state is not changed.
        "CollectBundle": RpcKind.READ_ONLY,
        "ApplyQuarantine": RpcKind.QUARANTINE,
        "GetVmStats": RpcKind.READ_ONLY,
    }
)


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
    # Seconds between background health-check runs (at most; see HealthMonitor).
    health_check_interval: float = MIN_CHECK_INTERVAL_SECONDS
    _monitor: HealthMonitor | None = field(default=None, init=False, repr=False)

    def quarantined(self) -> bool:
        """Whether this node is quarantined (persisted state, or the flag file)."""
        if self.quarantine is not None:
            return self.quarantine.is_quarantined()
        return (self.state_dir / QUARANTINE_FLAG_FILE).exists()

    def health_monitor(self) -> HealthMonitor | None:
        """The health-check runner and cache; None without checks (test contexts)."""
        if self._monitor is None and self.checks is not None:
            self._monitor = HealthMonitor(
                partial(run_health_checks, self.checks), min_interval=self.health_check_interval
            )
        return self._monitor

    async def close(self) -> None:
        """Stop background work (a health-check run in flight)."""
        if self._monitor is not None:
            await self._monitor.close()


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
    """The liveness verdict (no checks): quarantined wins, then libvirt reachability."""
    return health_status(quarantined, facts.libvirt_reachable)


async def heartbeat_health(ctx: ExecutorContext, timeout: float) -> HealthVerdict:
    """What the next heartbeat reports: the verdict of the last health-check run (a
    new one starts in the background, see HealthMonitor.latest), worsened when
    libvirt does not answer now. Waits at most about 2 x timeout.

    Of the host facts only libvirt's reachability counts here, so only libvirt is
    asked (reading the rest every beat cost most of a heartbeat's CPU)."""
    quarantined = ctx.quarantined()
    try:
        async with asyncio.timeout(timeout):
            reachable = (await probe_libvirt(ctx.libvirt)).info is not None
    except TimeoutError:
        # A libvirt too slow to answer is unhealthy; the heartbeat must not wait
        # for it, or the controller would see the node as down instead.
        reachable = False
    monitor = ctx.health_monitor()
    run = None if monitor is None else await monitor.latest(wait=timeout)
    if run is None:
        return HealthVerdict(health_status(quarantined, reachable))
    return HealthVerdict(
        health_status(quarantined, reachable, run.failing),
        run.failing,
        run.finished_at,
    )


def _adopt_health_parts(
    monitor: HealthMonitor, by_part: dict[str, list[CheckResult]], started: float
) -> None:
    """A finished ``diag host`` ran every health part: the node's health is those
    results now, and the background run due next waits from them."""
    monitor.adopt([r for part in HEALTH_PARTS for r in by_part.get(part, ())], started)


def libvirt_check(node: str, facts: common_pb2.HostFacts) -> common_pb2.CheckResult:
    """The "host.libvirt" health check from host facts."""
    result = common_pb2.CheckResult(
        node=node,
        check_id="host.libvirt",
        target="host",
        evidence={"uri": facts.libvirt_uri},
        observed_at=now_timestamp(),
        event_id=new_event_id(),
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

    async def _admit(self, context: AioContext, rpc: str) -> None:
        """Authorize the caller, then apply the RPC's class (see EXECUTOR_RPCS)."""
        await self._authorize(context)
        kind = EXECUTOR_RPCS.get(rpc, RpcKind.MUTATING)
        if kind is RpcKind.MUTATING and self.ctx.quarantine is not None:
            try:
                self.ctx.quarantine.refuse_if_quarantined(rpc)
            except NodeQuarantined as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

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
        await self._admit(context, "GetHealth")
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
        monitor = self.ctx.health_monitor()
        if monitor is None:
            if request.include_checks:
                health.checks.append(libvirt_check(self.ctx.node, facts))
            return health
        run = await monitor.run_checks() if request.include_checks else monitor.last
        if run is not None:
            health.status = health_status(quarantined, facts.libvirt_reachable, run.failing)
            finished_at = timestamp(run.finished_at)
            health.checks.extend(
                to_proto(result, self.ctx.node, finished_at, event_id)
                for result, event_id in run.results
                if request.include_checks or result.status in UNHEALTHY_STATUSES
            )
        return health

    async def GetInventory(
        self, request: executor_pb2.GetInventoryRequest, context: AioContext
    ) -> common_pb2.Inventory:
        await self._admit(context, "GetInventory")
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
        await self._admit(context, "GetVmStats")
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
            inactive=not counters.active,
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
    ) -> AsyncIterator[common_pb2.CheckResultBatch]:
        await self._admit(context, "Diagnose")
        if self.ctx.checks is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "diagnostics are not configured")
            return
        try:
            target = DiagnoseTarget.from_request(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        monitor = self.ctx.health_monitor()
        adopt = None if monitor is None else partial(_adopt_health_parts, monitor)
        async for batch in run_diagnose_batches(target, self.ctx.checks, on_host_parts=adopt):
            now = now_timestamp()
            yield common_pb2.CheckResultBatch(
                results=[to_proto(r, self.ctx.node, now, new_event_id()) for r in batch]
            )

    async def Recover(
        self, request: executor_pb2.RecoverRequest, context: AioContext
    ) -> AsyncIterator[executor_pb2.RecoveryStep]:
        # Allowed while quarantined: recovery is how a quarantined node gets clean.
        await self._admit(context, "Recover")
        if self.ctx.catalogue is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "recovery is not configured")
            return
        try:
            self.ctx.catalogue.validate(request.action, request.target)
        except RecoveryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        if not request.dry_run and request.fence_revision <= 0:
            # Every leader sends its term's revision (the CLI's and the automation's
            # recoveries alike); a recovery without one comes from no leader.
            log.warning(
                "refused unfenced recovery %s from %s", request.action, request.actor or "unknown"
            )
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"recovery {request.action} refused: no fence_revision (only the leading "
                "controller may change a node, and it sends its term's revision)",
            )
            return
        if not request.dry_run and self.ctx.quarantine is not None:
            try:
                await self.ctx.quarantine.admit_fence(
                    request.fence_revision, f"recovery {request.action}"
                )
            except StaleFence as exc:
                log.warning("refused recovery from %s: %s", request.actor or "unknown", exc)
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
                return
        grace = request.grace.ToTimedelta().total_seconds() if request.HasField("grace") else None
        log.info(
            "recovery %s%s requested by %s%s (fence %d): %s",
            request.action,
            f" on {request.target}" if request.target else "",
            request.actor or "unknown",
            " (dry run)" if request.dry_run else "",
            request.fence_revision,
            request.reason or "no reason given",
        )
        steps = self.ctx.catalogue.run(
            request.action, request.target, dry_run=request.dry_run, grace=grace or None
        )
        async for step in steps:
            yield step.to_proto(self.ctx.node)

    async def VerifyClean(
        self, request: executor_pb2.VerifyCleanRequest, context: AioContext
    ) -> executor_pb2.VerifyCleanResult:
        await self._admit(context, "VerifyClean")
        if self.ctx.finders is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "verify-clean is not configured")
            raise AssertionError("unreachable")
        report = await verify_clean(self.ctx.node, self.ctx.finders)
        if request.record_outcome:
            outcome = CleanupOutcome.SUCCESS if report.clean else CleanupOutcome.FAILURE
            cleanup_counter().labels(outcome=outcome).inc()
        return executor_pb2.VerifyCleanResult(
            node=self.ctx.node,
            clean=report.clean,
            checks=[check_to_proto(self.ctx.node, c, report.observed_at) for c in report.checks],
        )

    async def CollectBundle(
        self, request: executor_pb2.CollectBundleRequest, context: AioContext
    ) -> AsyncIterator[executor_pb2.BundleChunk]:
        await self._admit(context, "CollectBundle")
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
        await self._admit(context, "ApplyQuarantine")
        if self.ctx.quarantine is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "quarantine is not configured")
            raise AssertionError("unreachable")
        try:
            source = source_from_proto(request.source)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from None
        since = ""
        if request.HasField("since"):
            since = request.since.ToDatetime(dt.UTC).isoformat(timespec="seconds")
        result = await self.ctx.quarantine.apply(
            request.quarantined,
            request.reason,
            request.actor,
            source,
            request.fence_revision,
            since=since,
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
