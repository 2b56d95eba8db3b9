import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_UP: _ClassVar[NodeState]
    NODE_STATE_DOWN: _ClassVar[NodeState]

class CheckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_STATUS_UNSPECIFIED: _ClassVar[CheckStatus]
    CHECK_STATUS_OK: _ClassVar[CheckStatus]
    CHECK_STATUS_WARN: _ClassVar[CheckStatus]
    CHECK_STATUS_FAIL: _ClassVar[CheckStatus]
    CHECK_STATUS_ERROR: _ClassVar[CheckStatus]

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATUS_UNSPECIFIED: _ClassVar[HealthStatus]
    HEALTH_STATUS_HEALTHY: _ClassVar[HealthStatus]
    HEALTH_STATUS_UNHEALTHY: _ClassVar[HealthStatus]
    HEALTH_STATUS_QUARANTINED: _ClassVar[HealthStatus]

class QuarantineSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUARANTINE_SOURCE_UNSPECIFIED: _ClassVar[QuarantineSource]
    QUARANTINE_SOURCE_MANUAL: _ClassVar[QuarantineSource]
    QUARANTINE_SOURCE_AUTO: _ClassVar[QuarantineSource]

class NodeErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_ERROR_KIND_UNSPECIFIED: _ClassVar[NodeErrorKind]
    NODE_ERROR_KIND_UNREACHABLE: _ClassVar[NodeErrorKind]
    NODE_ERROR_KIND_DEADLINE_EXCEEDED: _ClassVar[NodeErrorKind]
    NODE_ERROR_KIND_FAILED: _ClassVar[NodeErrorKind]
    NODE_ERROR_KIND_DOWN: _ClassVar[NodeErrorKind]
    NODE_ERROR_KIND_UNKNOWN_NODE: _ClassVar[NodeErrorKind]
    NODE_ERROR_KIND_QUARANTINED: _ClassVar[NodeErrorKind]

class DomainState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOMAIN_STATE_UNSPECIFIED: _ClassVar[DomainState]
    DOMAIN_STATE_RUNNING: _ClassVar[DomainState]
    DOMAIN_STATE_BLOCKED: _ClassVar[DomainState]
    DOMAIN_STATE_PAUSED: _ClassVar[DomainState]
    DOMAIN_STATE_SHUTDOWN: _ClassVar[DomainState]
    DOMAIN_STATE_SHUTOFF: _ClassVar[DomainState]
    DOMAIN_STATE_CRASHED: _ClassVar[DomainState]
    DOMAIN_STATE_PMSUSPENDED: _ClassVar[DomainState]
    DOMAIN_STATE_NOSTATE: _ClassVar[DomainState]

NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_UP: NodeState
NODE_STATE_DOWN: NodeState
CHECK_STATUS_UNSPECIFIED: CheckStatus
CHECK_STATUS_OK: CheckStatus
CHECK_STATUS_WARN: CheckStatus
CHECK_STATUS_FAIL: CheckStatus
CHECK_STATUS_ERROR: CheckStatus
HEALTH_STATUS_UNSPECIFIED: HealthStatus
HEALTH_STATUS_HEALTHY: HealthStatus
HEALTH_STATUS_UNHEALTHY: HealthStatus
HEALTH_STATUS_QUARANTINED: HealthStatus
QUARANTINE_SOURCE_UNSPECIFIED: QuarantineSource
QUARANTINE_SOURCE_MANUAL: QuarantineSource
QUARANTINE_SOURCE_AUTO: QuarantineSource
NODE_ERROR_KIND_UNSPECIFIED: NodeErrorKind
NODE_ERROR_KIND_UNREACHABLE: NodeErrorKind
NODE_ERROR_KIND_DEADLINE_EXCEEDED: NodeErrorKind
NODE_ERROR_KIND_FAILED: NodeErrorKind
NODE_ERROR_KIND_DOWN: NodeErrorKind
NODE_ERROR_KIND_UNKNOWN_NODE: NodeErrorKind
NODE_ERROR_KIND_QUARANTINED: NodeErrorKind
DOMAIN_STATE_UNSPECIFIED: DomainState
DOMAIN_STATE_RUNNING: DomainState
DOMAIN_STATE_BLOCKED: DomainState
DOMAIN_STATE_PAUSED: DomainState
DOMAIN_STATE_SHUTDOWN: DomainState
DOMAIN_STATE_SHUTOFF: DomainState
DOMAIN_STATE_CRASHED: DomainState
DOMAIN_STATE_PMSUSPENDED: DomainState
DOMAIN_STATE_NOSTATE: DomainState

class NodeError(_message.Message):
    __slots__ = ("node", "kind", "message", "grpc_code")
    NODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GRPC_CODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    kind: NodeErrorKind
    message: str
    grpc_code: str
    def __init__(
        self,
        node: _Optional[str] = ...,
        kind: _Optional[_Union[NodeErrorKind, str]] = ...,
        message: _Optional[str] = ...,
        grpc_code: _Optional[str] = ...,
    ) -> None: ...

class NodeSelector(_message.Message):
    __slots__ = ("all", "nodes")
    ALL_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    all: bool
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(
        self, all: _Optional[bool] = ..., nodes: _Optional[_Iterable[str]] = ...
    ) -> None: ...

class FanoutDeadlines(_message.Message):
    __slots__ = ("per_node_ms", "overall_ms")
    PER_NODE_MS_FIELD_NUMBER: _ClassVar[int]
    OVERALL_MS_FIELD_NUMBER: _ClassVar[int]
    per_node_ms: int
    overall_ms: int
    def __init__(
        self, per_node_ms: _Optional[int] = ..., overall_ms: _Optional[int] = ...
    ) -> None: ...

class RemediationStep(_message.Message):
    __slots__ = ("description", "command")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    description: str
    command: str
    def __init__(
        self, description: _Optional[str] = ..., command: _Optional[str] = ...
    ) -> None: ...

class CheckResult(_message.Message):
    __slots__ = (
        "node",
        "check_id",
        "target",
        "status",
        "summary",
        "evidence",
        "remediation",
        "observed_at",
        "event_id",
    )
    class EvidenceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

    NODE_FIELD_NUMBER: _ClassVar[int]
    CHECK_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    REMEDIATION_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    node: str
    check_id: str
    target: str
    status: CheckStatus
    summary: str
    evidence: _containers.ScalarMap[str, str]
    remediation: _containers.RepeatedCompositeFieldContainer[RemediationStep]
    observed_at: _timestamp_pb2.Timestamp
    event_id: str
    def __init__(
        self,
        node: _Optional[str] = ...,
        check_id: _Optional[str] = ...,
        target: _Optional[str] = ...,
        status: _Optional[_Union[CheckStatus, str]] = ...,
        summary: _Optional[str] = ...,
        evidence: _Optional[_Mapping[str, str]] = ...,
        remediation: _Optional[_Iterable[_Union[RemediationStep, _Mapping]]] = ...,
        observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
        event_id: _Optional[str] = ...,
    ) -> None: ...

class CheckResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CheckResult]
    def __init__(
        self, results: _Optional[_Iterable[_Union[CheckResult, _Mapping]]] = ...
    ) -> None: ...

class HostFacts(_message.Message):
    __slots__ = (
        "hostname",
        "kernel",
        "arch",
        "virt_flags",
        "kvm_present",
        "kvm_accessible",
        "cgroup_backend",
        "libvirt_reachable",
        "libvirt_version",
        "hypervisor",
        "libvirt_uri",
        "libvirt_error",
        "cpu_count",
        "memory_bytes",
        "boot_time",
    )
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    VIRT_FLAGS_FIELD_NUMBER: _ClassVar[int]
    KVM_PRESENT_FIELD_NUMBER: _ClassVar[int]
    KVM_ACCESSIBLE_FIELD_NUMBER: _ClassVar[int]
    CGROUP_BACKEND_FIELD_NUMBER: _ClassVar[int]
    LIBVIRT_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LIBVIRT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HYPERVISOR_FIELD_NUMBER: _ClassVar[int]
    LIBVIRT_URI_FIELD_NUMBER: _ClassVar[int]
    LIBVIRT_ERROR_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    BOOT_TIME_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    kernel: str
    arch: str
    virt_flags: _containers.RepeatedScalarFieldContainer[str]
    kvm_present: bool
    kvm_accessible: bool
    cgroup_backend: str
    libvirt_reachable: bool
    libvirt_version: str
    hypervisor: str
    libvirt_uri: str
    libvirt_error: str
    cpu_count: int
    memory_bytes: int
    boot_time: _timestamp_pb2.Timestamp
    def __init__(
        self,
        hostname: _Optional[str] = ...,
        kernel: _Optional[str] = ...,
        arch: _Optional[str] = ...,
        virt_flags: _Optional[_Iterable[str]] = ...,
        kvm_present: _Optional[bool] = ...,
        kvm_accessible: _Optional[bool] = ...,
        cgroup_backend: _Optional[str] = ...,
        libvirt_reachable: _Optional[bool] = ...,
        libvirt_version: _Optional[str] = ...,
        hypervisor: _Optional[str] = ...,
        libvirt_uri: _Optional[str] = ...,
        libvirt_error: _Optional[str] = ...,
        cpu_count: _Optional[int] = ...,
        memory_bytes: _Optional[int] = ...,
        boot_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
    ) -> None: ...

class Domain(_message.Message):
    __slots__ = (
        "name",
        "uuid",
        "state",
        "state_reason",
        "vcpus",
        "memory_kib",
        "uptime_seconds",
        "persistent",
        "autostart",
    )
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_KIB_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PERSISTENT_FIELD_NUMBER: _ClassVar[int]
    AUTOSTART_FIELD_NUMBER: _ClassVar[int]
    name: str
    uuid: str
    state: DomainState
    state_reason: str
    vcpus: int
    memory_kib: int
    uptime_seconds: int
    persistent: bool
    autostart: bool
    def __init__(
        self,
        name: _Optional[str] = ...,
        uuid: _Optional[str] = ...,
        state: _Optional[_Union[DomainState, str]] = ...,
        state_reason: _Optional[str] = ...,
        vcpus: _Optional[int] = ...,
        memory_kib: _Optional[int] = ...,
        uptime_seconds: _Optional[int] = ...,
        persistent: _Optional[bool] = ...,
        autostart: _Optional[bool] = ...,
    ) -> None: ...

class Inventory(_message.Message):
    __slots__ = ("domains", "observed_at", "libvirt_error")
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    LIBVIRT_ERROR_FIELD_NUMBER: _ClassVar[int]
    domains: _containers.RepeatedCompositeFieldContainer[Domain]
    observed_at: _timestamp_pb2.Timestamp
    libvirt_error: str
    def __init__(
        self,
        domains: _Optional[_Iterable[_Union[Domain, _Mapping]]] = ...,
        observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
        libvirt_error: _Optional[str] = ...,
    ) -> None: ...

class QuarantineRecord(_message.Message):
    __slots__ = ("node", "reason", "actor", "source", "since", "causes", "event_ids")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    CAUSES_FIELD_NUMBER: _ClassVar[int]
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    node: str
    reason: str
    actor: str
    source: QuarantineSource
    since: _timestamp_pb2.Timestamp
    causes: _containers.RepeatedCompositeFieldContainer[CheckResult]
    event_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(
        self,
        node: _Optional[str] = ...,
        reason: _Optional[str] = ...,
        actor: _Optional[str] = ...,
        source: _Optional[_Union[QuarantineSource, str]] = ...,
        since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
        causes: _Optional[_Iterable[_Union[CheckResult, _Mapping]]] = ...,
        event_ids: _Optional[_Iterable[str]] = ...,
    ) -> None: ...

class QuarantineHistoryEntry(_message.Message):
    __slots__ = (
        "sequence",
        "node",
        "action",
        "reason",
        "actor",
        "source",
        "at",
        "forced",
        "event_ids",
        "hooks",
        "hook_results",
    )
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    HOOKS_FIELD_NUMBER: _ClassVar[int]
    HOOK_RESULTS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    node: str
    action: str
    reason: str
    actor: str
    source: QuarantineSource
    at: _timestamp_pb2.Timestamp
    forced: bool
    event_ids: _containers.RepeatedScalarFieldContainer[str]
    hooks: str
    hook_results: _containers.RepeatedScalarFieldContainer[str]
    def __init__(
        self,
        sequence: _Optional[int] = ...,
        node: _Optional[str] = ...,
        action: _Optional[str] = ...,
        reason: _Optional[str] = ...,
        actor: _Optional[str] = ...,
        source: _Optional[_Union[QuarantineSource, str]] = ...,
        at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
        forced: _Optional[bool] = ...,
        event_ids: _Optional[_Iterable[str]] = ...,
        hooks: _Optional[str] = ...,
        hook_results: _Optional[_Iterable[str]] = ...,
    ) -> None: ...
