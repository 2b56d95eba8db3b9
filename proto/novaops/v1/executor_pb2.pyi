import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from novaops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetHealthRequest(_message.Message):
    __slots__ = ("include_checks",)
    INCLUDE_CHECKS_FIELD_NUMBER: _ClassVar[int]
    include_checks: bool
    def __init__(self, include_checks: _Optional[bool] = ...) -> None: ...

class NodeHealth(_message.Message):
    __slots__ = ("node", "status", "facts", "checks", "version", "started_at", "quarantined")
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    node: str
    status: _common_pb2.HealthStatus
    facts: _common_pb2.HostFacts
    checks: _containers.RepeatedCompositeFieldContainer[_common_pb2.CheckResult]
    version: str
    started_at: _timestamp_pb2.Timestamp
    quarantined: bool
    def __init__(
        self,
        node: _Optional[str] = ...,
        status: _Optional[_Union[_common_pb2.HealthStatus, str]] = ...,
        facts: _Optional[_Union[_common_pb2.HostFacts, _Mapping]] = ...,
        checks: _Optional[_Iterable[_Union[_common_pb2.CheckResult, _Mapping]]] = ...,
        version: _Optional[str] = ...,
        started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
        quarantined: _Optional[bool] = ...,
    ) -> None: ...

class GetInventoryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DiagnoseRequest(_message.Message):
    __slots__ = ("vm", "container", "network", "host", "all_vms", "skip_absent")
    VM_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    ALL_VMS_FIELD_NUMBER: _ClassVar[int]
    SKIP_ABSENT_FIELD_NUMBER: _ClassVar[int]
    vm: str
    container: str
    network: str
    host: bool
    all_vms: bool
    skip_absent: bool
    def __init__(
        self,
        vm: _Optional[str] = ...,
        container: _Optional[str] = ...,
        network: _Optional[str] = ...,
        host: _Optional[bool] = ...,
        all_vms: _Optional[bool] = ...,
        skip_absent: _Optional[bool] = ...,
    ) -> None: ...

class RecoverRequest(_message.Message):
    __slots__ = ("action", "target", "dry_run", "actor", "grace", "fence_revision", "reason")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    GRACE_FIELD_NUMBER: _ClassVar[int]
    FENCE_REVISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    action: str
    target: str
    dry_run: bool
    actor: str
    grace: _duration_pb2.Duration
    fence_revision: int
    reason: str
    def __init__(
        self,
        action: _Optional[str] = ...,
        target: _Optional[str] = ...,
        dry_run: _Optional[bool] = ...,
        actor: _Optional[str] = ...,
        grace: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...,
        fence_revision: _Optional[int] = ...,
        reason: _Optional[str] = ...,
    ) -> None: ...

class RecoveryStep(_message.Message):
    __slots__ = ("node", "action", "description", "outcome", "error", "at", "fatal")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    FATAL_FIELD_NUMBER: _ClassVar[int]
    node: str
    action: str
    description: str
    outcome: str
    error: str
    at: _timestamp_pb2.Timestamp
    fatal: bool
    def __init__(
        self,
        node: _Optional[str] = ...,
        action: _Optional[str] = ...,
        description: _Optional[str] = ...,
        outcome: _Optional[str] = ...,
        error: _Optional[str] = ...,
        at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
        fatal: _Optional[bool] = ...,
    ) -> None: ...

class VerifyCleanRequest(_message.Message):
    __slots__ = ("record_outcome",)
    RECORD_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    record_outcome: bool
    def __init__(self, record_outcome: _Optional[bool] = ...) -> None: ...

class VerifyCleanResult(_message.Message):
    __slots__ = ("node", "clean", "checks")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CLEAN_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    node: str
    clean: bool
    checks: _containers.RepeatedCompositeFieldContainer[_common_pb2.CheckResult]
    def __init__(
        self,
        node: _Optional[str] = ...,
        clean: _Optional[bool] = ...,
        checks: _Optional[_Iterable[_Union[_common_pb2.CheckResult, _Mapping]]] = ...,
    ) -> None: ...

class CollectBundleRequest(_message.Message):
    __slots__ = (
        "include",
        "scrub",
        "since",
        "scrub_key",
        "max_file_bytes",
        "request_id",
        "return_map",
    )
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    SCRUB_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    SCRUB_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RETURN_MAP_FIELD_NUMBER: _ClassVar[int]
    include: _containers.RepeatedScalarFieldContainer[str]
    scrub: bool
    since: _duration_pb2.Duration
    scrub_key: bytes
    max_file_bytes: int
    request_id: str
    return_map: bool
    def __init__(
        self,
        include: _Optional[_Iterable[str]] = ...,
        scrub: _Optional[bool] = ...,
        since: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...,
        scrub_key: _Optional[bytes] = ...,
        max_file_bytes: _Optional[int] = ...,
        request_id: _Optional[str] = ...,
        return_map: _Optional[bool] = ...,
    ) -> None: ...

class BundleChunk(_message.Message):
    __slots__ = ("node", "header", "data", "trailer", "offset")
    NODE_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    node: str
    header: BundleHeader
    data: bytes
    trailer: BundleTrailer
    offset: int
    def __init__(
        self,
        node: _Optional[str] = ...,
        header: _Optional[_Union[BundleHeader, _Mapping]] = ...,
        data: _Optional[bytes] = ...,
        trailer: _Optional[_Union[BundleTrailer, _Mapping]] = ...,
        offset: _Optional[int] = ...,
    ) -> None: ...

class BundleHeader(_message.Message):
    __slots__ = ("format", "request_id")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    format: str
    request_id: str
    def __init__(self, format: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class BundleTrailer(_message.Message):
    __slots__ = ("sha256", "size", "redactions", "pseudonym_map_json")
    class RedactionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...

    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REDACTIONS_FIELD_NUMBER: _ClassVar[int]
    PSEUDONYM_MAP_JSON_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    redactions: _containers.ScalarMap[str, int]
    pseudonym_map_json: bytes
    def __init__(
        self,
        sha256: _Optional[str] = ...,
        size: _Optional[int] = ...,
        redactions: _Optional[_Mapping[str, int]] = ...,
        pseudonym_map_json: _Optional[bytes] = ...,
    ) -> None: ...

class ApplyQuarantineRequest(_message.Message):
    __slots__ = ("quarantined", "reason", "actor", "source", "fence_revision", "since")
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FENCE_REVISION_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    quarantined: bool
    reason: str
    actor: str
    source: _common_pb2.QuarantineSource
    fence_revision: int
    since: _timestamp_pb2.Timestamp
    def __init__(
        self,
        quarantined: _Optional[bool] = ...,
        reason: _Optional[str] = ...,
        actor: _Optional[str] = ...,
        source: _Optional[_Union[_common_pb2.QuarantineSource, str]] = ...,
        fence_revision: _Optional[int] = ...,
        since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
    ) -> None: ...

class ApplyQuarantineResult(_message.Message):
    __slots__ = ("node", "quarantined", "changed", "hook_results")
    NODE_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    HOOK_RESULTS_FIELD_NUMBER: _ClassVar[int]
    node: str
    quarantined: bool
    changed: bool
    hook_results: _containers.RepeatedScalarFieldContainer[str]
    def __init__(
        self,
        node: _Optional[str] = ...,
        quarantined: _Optional[bool] = ...,
        changed: _Optional[bool] = ...,
        hook_results: _Optional[_Iterable[str]] = ...,
    ) -> None: ...

class GetVmStatsRequest(_message.Message):
    __slots__ = ("vm",)
    VM_FIELD_NUMBER: _ClassVar[int]
    vm: str
    def __init__(self, vm: _Optional[str] = ...) -> None: ...

class VmStats(_message.Message):
    __slots__ = (
        "node",
        "vm",
        "cpu_time_ns",
        "memory_kib",
        "rss_kib",
        "block",
        "interfaces",
        "observed_at",
        "inactive",
    )
    NODE_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_KIB_FIELD_NUMBER: _ClassVar[int]
    RSS_KIB_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_FIELD_NUMBER: _ClassVar[int]
    node: str
    vm: str
    cpu_time_ns: int
    memory_kib: int
    rss_kib: int
    block: _containers.RepeatedCompositeFieldContainer[BlockStats]
    interfaces: _containers.RepeatedCompositeFieldContainer[InterfaceStats]
    observed_at: _timestamp_pb2.Timestamp
    inactive: bool
    def __init__(
        self,
        node: _Optional[str] = ...,
        vm: _Optional[str] = ...,
        cpu_time_ns: _Optional[int] = ...,
        memory_kib: _Optional[int] = ...,
        rss_kib: _Optional[int] = ...,
        block: _Optional[_Iterable[_Union[BlockStats, _Mapping]]] = ...,
        interfaces: _Optional[_Iterable[_Union[InterfaceStats, _Mapping]]] = ...,
        observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
        inactive: _Optional[bool] = ...,
    ) -> None: ...

class BlockStats(_message.Message):
    __slots__ = ("device", "read_bytes", "write_bytes", "read_requests", "write_requests", "errors")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITE_BYTES_FIELD_NUMBER: _ClassVar[int]
    READ_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WRITE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    device: str
    read_bytes: int
    write_bytes: int
    read_requests: int
    write_requests: int
    errors: int
    def __init__(
        self,
        device: _Optional[str] = ...,
        read_bytes: _Optional[int] = ...,
        write_bytes: _Optional[int] = ...,
        read_requests: _Optional[int] = ...,
        write_requests: _Optional[int] = ...,
        errors: _Optional[int] = ...,
    ) -> None: ...

class InterfaceStats(_message.Message):
    __slots__ = (
        "device",
        "rx_bytes",
        "tx_bytes",
        "rx_packets",
        "tx_packets",
        "rx_errors",
        "tx_errors",
        "rx_drops",
        "tx_drops",
    )
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    RX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    TX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RX_ERRORS_FIELD_NUMBER: _ClassVar[int]
    TX_ERRORS_FIELD_NUMBER: _ClassVar[int]
    RX_DROPS_FIELD_NUMBER: _ClassVar[int]
    TX_DROPS_FIELD_NUMBER: _ClassVar[int]
    device: str
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    rx_errors: int
    tx_errors: int
    rx_drops: int
    tx_drops: int
    def __init__(
        self,
        device: _Optional[str] = ...,
        rx_bytes: _Optional[int] = ...,
        tx_bytes: _Optional[int] = ...,
        rx_packets: _Optional[int] = ...,
        tx_packets: _Optional[int] = ...,
        rx_errors: _Optional[int] = ...,
        tx_errors: _Optional[int] = ...,
        rx_drops: _Optional[int] = ...,
        tx_drops: _Optional[int] = ...,
    ) -> None: ...
