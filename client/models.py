"""Plain, typed views of controller answers, independent of protobuf.

These are what the client library returns and what ``--output json`` prints
(``to_json()``), so their field names are part of the documented interface.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from novaops.v1 import common_pb2, controller_pb2


def _iso(ts: Timestamp, present: bool) -> str | None:
    if not present:
        return None
    return ts.ToDatetime(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")


_HEALTH = {
    common_pb2.HEALTH_STATUS_HEALTHY: "healthy",
    common_pb2.HEALTH_STATUS_UNHEALTHY: "unhealthy",
    common_pb2.HEALTH_STATUS_QUARANTINED: "quarantined",
}


@dataclass(frozen=True)
class HostFactsView:
    hostname: str
    kernel: str
    arch: str
    virt_flags: list[str]
    kvm_present: bool
    kvm_accessible: bool
    cgroup_backend: str
    libvirt_reachable: bool
    libvirt_version: str
    hypervisor: str
    libvirt_uri: str
    libvirt_error: str

    @staticmethod
    def from_proto(facts: common_pb2.HostFacts) -> HostFactsView:
        return HostFactsView(
            hostname=facts.hostname,
            kernel=facts.kernel,
            arch=facts.arch,
            virt_flags=list(facts.virt_flags),
            kvm_present=facts.kvm_present,
            kvm_accessible=facts.kvm_accessible,
            cgroup_backend=facts.cgroup_backend,
            libvirt_reachable=facts.libvirt_reachable,
            libvirt_version=facts.libvirt_version,
            hypervisor=facts.hypervisor,
            libvirt_uri=facts.libvirt_uri,
            libvirt_error=facts.libvirt_error,
        )


@dataclass(frozen=True)
class Node:
    """A registered node. ``state`` is "up" or "down"; ``health`` the verdict of its
    last heartbeat (its health checks run in the background), with the ids of the
    failing checks as far as the answering controller replica knows them."""

    name: str
    address: str
    state: str
    quarantined: bool
    health: str
    version: str
    last_heartbeat: str | None
    registered_at: str | None
    labels: dict[str, str] = field(default_factory=dict)
    facts: HostFactsView | None = None
    failing_checks: list[str] = field(default_factory=list)
    health_checked_at: str | None = None

    @staticmethod
    def from_proto(info: controller_pb2.NodeInfo) -> Node:
        return Node(
            name=info.name,
            address=info.address,
            state="up" if info.state == common_pb2.NODE_STATE_UP else "down",
            quarantined=info.quarantined,
            health=_HEALTH.get(info.health, "unknown"),
            version=info.version,
            last_heartbeat=_iso(info.last_heartbeat, info.HasField("last_heartbeat")),
            registered_at=_iso(info.registered_at, info.HasField("registered_at")),
            labels=dict(info.labels),
            facts=HostFactsView.from_proto(info.facts) if info.HasField("facts") else None,
            failing_checks=list(info.failing_checks),
            health_checked_at=_iso(info.health_checked_at, info.HasField("health_checked_at")),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Leader:
    """The current leader; ``name`` is empty when there is none."""

    name: str
    address: str
    since: str | None
    revision: int
    lease_ttl_seconds: int

    @staticmethod
    def from_proto(info: controller_pb2.LeaderInfo) -> Leader:
        return Leader(
            name=info.name,
            address=info.address,
            since=_iso(info.since, info.HasField("since")),
            revision=info.revision,
            lease_ttl_seconds=info.lease_ttl_seconds,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClusterStatus:
    nodes_total: int
    nodes_up: int
    nodes_down: int
    nodes_quarantined: int
    leader: Leader
    store: str
    store_endpoint: str
    answered_by: str
    automation_paused: bool
    breaker_tripped: bool
    version: str
    # False: [automation] enabled = false in the answering controller's config.
    automation_enabled: bool = True

    @staticmethod
    def from_proto(status: controller_pb2.ClusterStatus) -> ClusterStatus:
        return ClusterStatus(
            nodes_total=status.nodes_total,
            nodes_up=status.nodes_up,
            nodes_down=status.nodes_down,
            nodes_quarantined=status.nodes_quarantined,
            leader=Leader.from_proto(status.leader),
            store=status.store,
            store_endpoint=status.store_endpoint,
            answered_by=status.answered_by,
            automation_paused=status.automation_paused,
            breaker_tripped=status.breaker_tripped,
            version=status.version,
            automation_enabled=status.automation_enabled,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_NODE_ERROR_KIND = {
    common_pb2.NODE_ERROR_KIND_UNREACHABLE: "unreachable",
    common_pb2.NODE_ERROR_KIND_DEADLINE_EXCEEDED: "deadline_exceeded",
    common_pb2.NODE_ERROR_KIND_FAILED: "failed",
    common_pb2.NODE_ERROR_KIND_DOWN: "down",
    common_pb2.NODE_ERROR_KIND_UNKNOWN_NODE: "unknown_node",
    common_pb2.NODE_ERROR_KIND_QUARANTINED: "quarantined",
}

_DOMAIN_STATE = {
    common_pb2.DOMAIN_STATE_RUNNING: "running",
    common_pb2.DOMAIN_STATE_BLOCKED: "blocked",
    common_pb2.DOMAIN_STATE_PAUSED: "paused",
    common_pb2.DOMAIN_STATE_SHUTDOWN: "shutdown",
    common_pb2.DOMAIN_STATE_SHUTOFF: "shutoff",
    common_pb2.DOMAIN_STATE_CRASHED: "crashed",
    common_pb2.DOMAIN_STATE_PMSUSPENDED: "pmsuspended",
    common_pb2.DOMAIN_STATE_NOSTATE: "nostate",
}


@dataclass(frozen=True)
class NodeFailure:
    """A node that could not contribute to a fan-out (``kind`` e.g. "unreachable")."""

    node: str
    kind: str
    message: str

    @staticmethod
    def from_proto(error: common_pb2.NodeError) -> NodeFailure:
        return NodeFailure(
            node=error.node,
            kind=_NODE_ERROR_KIND.get(error.kind, "failed"),
            message=error.message,
        )

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "error": {"kind": self.kind, "message": self.message}}


@dataclass(frozen=True)
class Vm:
    """One libvirt domain on a node."""

    node: str
    name: str
    uuid: str
    state: str
    state_reason: str
    vcpus: int
    memory_mib: int
    uptime_seconds: int
    persistent: bool
    autostart: bool

    @staticmethod
    def from_proto(node: str, domain: common_pb2.Domain) -> Vm:
        return Vm(
            node=node,
            name=domain.name,
            uuid=domain.uuid,
            state=_DOMAIN_STATE.get(domain.state, "unknown"),
            state_reason=domain.state_reason,
            vcpus=domain.vcpus,
            memory_mib=domain.memory_kib // 1024,
            uptime_seconds=domain.uptime_seconds,
            persistent=domain.persistent,
            autostart=domain.autostart,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NodeHealthReport:
    """A node's health verdict, host facts, its checks and any recovery steps run."""

    node: str
    status: str
    quarantined: bool
    version: str
    facts: HostFactsView
    checks: list[Check]
    recovery: list[RecoveryStepView]

    @property
    def failing_checks(self) -> list[Check]:
        return [c for c in self.checks if c.status in ("fail", "error")]

    @staticmethod
    def from_proto(health: Any, recovery: Any = ()) -> NodeHealthReport:
        return NodeHealthReport(
            node=health.node,
            status=_HEALTH.get(health.status, "unknown"),
            quarantined=health.quarantined,
            version=health.version,
            facts=HostFactsView.from_proto(health.facts),
            checks=[Check.from_proto(c) for c in health.checks],
            recovery=[RecoveryStepView.from_proto(s) for s in recovery],
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_SOURCE = {
    common_pb2.QUARANTINE_SOURCE_MANUAL: "manual",
    common_pb2.QUARANTINE_SOURCE_AUTO: "auto",
}

_CHECK_STATUS = {
    common_pb2.CHECK_STATUS_OK: "ok",
    common_pb2.CHECK_STATUS_WARN: "warn",
    common_pb2.CHECK_STATUS_FAIL: "fail",
    common_pb2.CHECK_STATUS_ERROR: "error",
}


@dataclass(frozen=True)
class Remedy:
    description: str
    command: str


@dataclass(frozen=True)
class Check:
    """One check result: ``status`` is ok, warn, fail or error."""

    node: str
    check_id: str
    target: str
    status: str
    summary: str
    evidence: dict[str, str]
    remediation: list[Remedy]
    observed_at: str | None
    event_id: str

    @staticmethod
    def from_proto(check: common_pb2.CheckResult) -> Check:
        return Check(
            node=check.node,
            check_id=check.check_id,
            target=check.target,
            status=_CHECK_STATUS.get(check.status, "error"),
            summary=check.summary,
            evidence=dict(check.evidence),
            remediation=[Remedy(r.description, r.command) for r in check.remediation],
            observed_at=_iso(check.observed_at, check.HasField("observed_at")),
            event_id=check.event_id,
        )

    def to_json(self) -> dict[str, Any]:
        # What asdict gives, built directly: a fleet diagnosis has thousands of
        # results and asdict's deep copy was most of the CLI's JSON time.
        return {
            "node": self.node,
            "check_id": self.check_id,
            "target": self.target,
            "status": self.status,
            "summary": self.summary,
            "evidence": dict(self.evidence),
            "remediation": [
                {"description": r.description, "command": r.command} for r in self.remediation
            ],
            "observed_at": self.observed_at,
            "event_id": self.event_id,
        }


@dataclass(frozen=True)
class Quarantine:
    node: str
    reason: str
    actor: str
    source: str
    since: str | None
    causes: list[Check]
    event_ids: list[str]

    @staticmethod
    def from_proto(record: common_pb2.QuarantineRecord) -> Quarantine:
        return Quarantine(
            node=record.node,
            reason=record.reason,
            actor=record.actor,
            source=_SOURCE.get(record.source, "manual"),
            since=_iso(record.since, record.HasField("since")),
            causes=[Check.from_proto(c) for c in record.causes],
            event_ids=list(record.event_ids),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QuarantineChange:
    """What a quarantine or unquarantine did (``changed`` False: already so, or dry run)."""

    node: str
    changed: bool
    message: str
    record: Quarantine | None
    hook_results: list[str]

    @staticmethod
    def from_proto(node: str, response: Any) -> QuarantineChange:
        record = Quarantine.from_proto(response.record) if response.HasField("record") else None
        return QuarantineChange(
            node=node,
            changed=response.changed,
            message=response.message,
            record=record,
            hook_results=list(response.hook_results),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NodeRemoval:
    """What ``node remove`` did (``removed`` False: a dry run)."""

    node: str
    removed: bool
    message: str
    event_id: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QuarantineHistoryItem:
    sequence: int
    node: str
    action: str
    reason: str
    actor: str
    source: str
    at: str | None
    forced: bool
    event_ids: list[str]
    hooks: str = ""
    hook_results: list[str] = field(default_factory=list)

    @staticmethod
    def from_proto(entry: common_pb2.QuarantineHistoryEntry) -> QuarantineHistoryItem:
        return QuarantineHistoryItem(
            sequence=entry.sequence,
            node=entry.node,
            action=entry.action,
            reason=entry.reason,
            actor=entry.actor,
            source=_SOURCE.get(entry.source, "manual"),
            at=_iso(entry.at, entry.HasField("at")),
            forced=entry.forced,
            event_ids=list(entry.event_ids),
            hooks=entry.hooks,
            hook_results=list(entry.hook_results),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    node: str
    message: str
    at: str | None
    attributes: dict[str, str]
    cause_ids: list[str]

    @staticmethod
    def from_proto(event: controller_pb2.ClusterEvent) -> Event:
        return Event(
            id=event.id,
            kind=event.kind,
            node=event.node,
            message=event.message,
            at=_iso(event.at, event.HasField("at")),
            attributes=dict(event.attributes),
            cause_ids=list(event.cause_ids),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AutomationState:
    running: bool
    paused: bool
    breaker_tripped: bool
    breaker_reason: str
    leader: str
    auto_quarantined: int

    @staticmethod
    def from_proto(status: controller_pb2.AutomationStatus) -> AutomationState:
        return AutomationState(
            running=status.running,
            paused=status.paused,
            breaker_tripped=status.breaker_tripped,
            breaker_reason=status.breaker_reason,
            leader=status.leader,
            auto_quarantined=status.auto_quarantined,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RecoveryStepView:
    """One step of a recovery action: outcome planned, done, skipped or failed;
    ``fatal`` for a failed step that ended the action."""

    node: str
    action: str
    description: str
    outcome: str
    error: str
    at: str | None
    fatal: bool = False

    @staticmethod
    def from_proto(step: Any) -> RecoveryStepView:
        return RecoveryStepView(
            node=step.node,
            action=step.action,
            description=step.description,
            outcome=step.outcome,
            error=step.error,
            at=_iso(step.at, step.HasField("at")),
            fatal=step.fatal,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RecoveryOutcome:
    """The overall outcome of one action on one node: ``planned`` (dry run),
    ``done`` (no step failed; skipped steps were already fine), ``partial`` (some
    items failed, the action went on) or ``failed`` (a fatal step ended it)."""

    node: str
    action: str
    outcome: str
    steps: int
    failed_steps: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def recovery_outcomes(steps: Iterable[RecoveryStepView]) -> list[RecoveryOutcome]:
    """One :class:`RecoveryOutcome` per (node, action), in order of first step."""
    grouped: dict[tuple[str, str], list[RecoveryStepView]] = {}
    for step in steps:
        grouped.setdefault((step.node, step.action), []).append(step)
    outcomes = []
    for (node, action), group in grouped.items():
        failed = [s for s in group if s.outcome == "failed"]
        if any(s.fatal for s in failed):
            outcome = "failed"
        elif failed:
            outcome = "partial"
        elif any(s.outcome == "planned" for s in group):
            outcome = "planned"
        else:
            outcome = "done"
        outcomes.append(RecoveryOutcome(node, action, outcome, len(group), len(failed)))
    return outcomes


@dataclass(frozen=True)
class VmStatsView:
    """libvirt counters of one VM."""

    node: str
    vm: str
    cpu_time_ns: int
    memory_kib: int
    rss_kib: int
    block: list[dict[str, Any]]
    interfaces: list[dict[str, Any]]
    observed_at: str | None
    running: bool = True  # False: no CPU, disk or interface counters; memory is configured

    @staticmethod
    def from_proto(stats: Any) -> VmStatsView:
        return VmStatsView(
            node=stats.node,
            vm=stats.vm,
            running=not stats.inactive,
            cpu_time_ns=stats.cpu_time_ns,
            memory_kib=stats.memory_kib,
            rss_kib=stats.rss_kib,
            block=[
                {
                    "device": b.device,
                    "read_bytes": b.read_bytes,
                    "write_bytes": b.write_bytes,
                    "read_requests": b.read_requests,
                    "write_requests": b.write_requests,
                    "errors": b.errors,
                }
                for b in stats.block
            ],
            interfaces=[
                {
                    "device": i.device,
                    "rx_bytes": i.rx_bytes,
                    "tx_bytes": i.tx_bytes,
                    "rx_packets": i.rx_packets,
                    "tx_packets": i.tx_packets,
                    "rx_errors": i.rx_errors,
                    "tx_errors": i.tx_errors,
                    "rx_drops": i.rx_drops,
                    "tx_drops": i.tx_drops,
                }
                for i in stats.interfaces
            ],
            observed_at=_iso(stats.observed_at, stats.HasField("observed_at")),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
