"""Plain, typed views of controller answers, independent of protobuf.

These are what the client library returns and what ``--output json`` prints
(``to_json()``), so their field names are part of the documented interface.
"""

from __future__ import annotations

import datetime as dt
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
    """A registered node. ``state`` is "up" or "down"."""

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
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
