import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from novaops.v1 import common_pb2 as _common_pb2
from novaops.v1 import executor_pb2 as _executor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("node", "address", "version", "facts", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    node: str
    address: str
    version: str
    facts: _common_pb2.HostFacts
    labels: _containers.ScalarMap[str, str]
    def __init__(
        self,
        node: _Optional[str] = ...,
        address: _Optional[str] = ...,
        version: _Optional[str] = ...,
        facts: _Optional[_Union[_common_pb2.HostFacts, _Mapping]] = ...,
        labels: _Optional[_Mapping[str, str]] = ...,
    ) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("heartbeat_interval_ms", "missed_heartbeats_limit", "controller", "quarantined")
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MISSED_HEARTBEATS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_ms: int
    missed_heartbeats_limit: int
    controller: str
    quarantined: bool
    def __init__(
        self,
        heartbeat_interval_ms: _Optional[int] = ...,
        missed_heartbeats_limit: _Optional[int] = ...,
        controller: _Optional[str] = ...,
        quarantined: _Optional[bool] = ...,
    ) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node", "sequence", "health", "failing_checks", "checked_at", "synced_quarantine")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    FAILING_CHECKS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    SYNCED_QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    node: str
    sequence: int
    health: _common_pb2.HealthStatus
    failing_checks: _containers.RepeatedScalarFieldContainer[str]
    checked_at: _timestamp_pb2.Timestamp
    synced_quarantine: SyncedQuarantine
    def __init__(
        self,
        node: _Optional[str] = ...,
        sequence: _Optional[int] = ...,
        health: _Optional[_Union[_common_pb2.HealthStatus, str]] = ...,
        failing_checks: _Optional[_Iterable[str]] = ...,
        checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
        synced_quarantine: _Optional[_Union[SyncedQuarantine, _Mapping]] = ...,
    ) -> None: ...

class SyncedQuarantine(_message.Message):
    __slots__ = ("quarantined", "hook_results", "applied_at", "reason", "since")
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    HOOK_RESULTS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    quarantined: bool
    hook_results: _containers.RepeatedScalarFieldContainer[str]
    applied_at: _timestamp_pb2.Timestamp
    reason: str
    since: _timestamp_pb2.Timestamp
    def __init__(
        self,
        quarantined: _Optional[bool] = ...,
        hook_results: _Optional[_Iterable[str]] = ...,
        applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
        reason: _Optional[str] = ...,
        since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
    ) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = (
        "known",
        "quarantined",
        "quarantine",
        "fence_revision",
        "released",
        "synced_quarantine_recorded",
        "heartbeat_interval_ms",
    )
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    FENCE_REVISION_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    SYNCED_QUARANTINE_RECORDED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    known: bool
    quarantined: bool
    quarantine: _common_pb2.QuarantineRecord
    fence_revision: int
    released: _common_pb2.QuarantineHistoryEntry
    synced_quarantine_recorded: bool
    heartbeat_interval_ms: int
    def __init__(
        self,
        known: _Optional[bool] = ...,
        quarantined: _Optional[bool] = ...,
        quarantine: _Optional[_Union[_common_pb2.QuarantineRecord, _Mapping]] = ...,
        fence_revision: _Optional[int] = ...,
        released: _Optional[_Union[_common_pb2.QuarantineHistoryEntry, _Mapping]] = ...,
        synced_quarantine_recorded: _Optional[bool] = ...,
        heartbeat_interval_ms: _Optional[int] = ...,
    ) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = (
        "name",
        "address",
        "state",
        "quarantined",
        "last_heartbeat",
        "registered_at",
        "version",
        "labels",
        "facts",
        "health",
        "failing_checks",
        "health_checked_at",
    )
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    FAILING_CHECKS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    state: _common_pb2.NodeState
    quarantined: bool
    last_heartbeat: _timestamp_pb2.Timestamp
    registered_at: _timestamp_pb2.Timestamp
    version: str
    labels: _containers.ScalarMap[str, str]
    facts: _common_pb2.HostFacts
    health: _common_pb2.HealthStatus
    failing_checks: _containers.RepeatedScalarFieldContainer[str]
    health_checked_at: _timestamp_pb2.Timestamp
    def __init__(
        self,
        name: _Optional[str] = ...,
        address: _Optional[str] = ...,
        state: _Optional[_Union[_common_pb2.NodeState, str]] = ...,
        quarantined: _Optional[bool] = ...,
        last_heartbeat: _Optional[
            _Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]
        ] = ...,
        registered_at: _Optional[
            _Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]
        ] = ...,
        version: _Optional[str] = ...,
        labels: _Optional[_Mapping[str, str]] = ...,
        facts: _Optional[_Union[_common_pb2.HostFacts, _Mapping]] = ...,
        health: _Optional[_Union[_common_pb2.HealthStatus, str]] = ...,
        failing_checks: _Optional[_Iterable[str]] = ...,
        health_checked_at: _Optional[
            _Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]
        ] = ...,
    ) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class GetClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = (
        "nodes_total",
        "nodes_up",
        "nodes_down",
        "nodes_quarantined",
        "leader",
        "store",
        "store_endpoint",
        "answered_by",
        "automation_paused",
        "breaker_tripped",
        "version",
        "automation_enabled",
    )
    NODES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    NODES_UP_FIELD_NUMBER: _ClassVar[int]
    NODES_DOWN_FIELD_NUMBER: _ClassVar[int]
    NODES_QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    STORE_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    AUTOMATION_PAUSED_FIELD_NUMBER: _ClassVar[int]
    BREAKER_TRIPPED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTOMATION_ENABLED_FIELD_NUMBER: _ClassVar[int]
    nodes_total: int
    nodes_up: int
    nodes_down: int
    nodes_quarantined: int
    leader: LeaderInfo
    store: str
    store_endpoint: str
    answered_by: str
    automation_paused: bool
    breaker_tripped: bool
    version: str
    automation_enabled: bool
    def __init__(
        self,
        nodes_total: _Optional[int] = ...,
        nodes_up: _Optional[int] = ...,
        nodes_down: _Optional[int] = ...,
        nodes_quarantined: _Optional[int] = ...,
        leader: _Optional[_Union[LeaderInfo, _Mapping]] = ...,
        store: _Optional[str] = ...,
        store_endpoint: _Optional[str] = ...,
        answered_by: _Optional[str] = ...,
        automation_paused: _Optional[bool] = ...,
        breaker_tripped: _Optional[bool] = ...,
        version: _Optional[str] = ...,
        automation_enabled: _Optional[bool] = ...,
    ) -> None: ...

class GetLeaderRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaderInfo(_message.Message):
    __slots__ = ("name", "address", "since", "revision", "lease_ttl_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    since: _timestamp_pb2.Timestamp
    revision: int
    lease_ttl_seconds: int
    def __init__(
        self,
        name: _Optional[str] = ...,
        address: _Optional[str] = ...,
        since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
        revision: _Optional[int] = ...,
        lease_ttl_seconds: _Optional[int] = ...,
    ) -> None: ...

class TransferLeadershipRequest(_message.Message):
    __slots__ = ("to", "dry_run", "reason")
    TO_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    to: str
    dry_run: bool
    reason: str
    def __init__(
        self, to: _Optional[str] = ..., dry_run: _Optional[bool] = ..., reason: _Optional[str] = ...
    ) -> None: ...

class TransferLeadershipResponse(_message.Message):
    __slots__ = ("previous", "message")
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    previous: LeaderInfo
    message: str
    def __init__(
        self, previous: _Optional[_Union[LeaderInfo, _Mapping]] = ..., message: _Optional[str] = ...
    ) -> None: ...

class RemoveNodeRequest(_message.Message):
    __slots__ = ("node", "reason", "dry_run")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    node: str
    reason: str
    dry_run: bool
    def __init__(
        self,
        node: _Optional[str] = ...,
        reason: _Optional[str] = ...,
        dry_run: _Optional[bool] = ...,
    ) -> None: ...

class RemoveNodeResponse(_message.Message):
    __slots__ = ("removed", "message", "event_id")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    message: str
    event_id: str
    def __init__(
        self,
        removed: _Optional[bool] = ...,
        message: _Optional[str] = ...,
        event_id: _Optional[str] = ...,
    ) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("follow", "after_id", "kinds")
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    follow: bool
    after_id: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(
        self,
        follow: _Optional[bool] = ...,
        after_id: _Optional[str] = ...,
        kinds: _Optional[_Iterable[str]] = ...,
    ) -> None: ...

class ClusterEvent(_message.Message):
    __slots__ = ("id", "kind", "node", "message", "at", "attributes", "cause_ids")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CAUSE_IDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    node: str
    message: str
    at: _timestamp_pb2.Timestamp
    attributes: _containers.ScalarMap[str, str]
    cause_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(
        self,
        id: _Optional[str] = ...,
        kind: _Optional[str] = ...,
        node: _Optional[str] = ...,
        message: _Optional[str] = ...,
        at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...,
        attributes: _Optional[_Mapping[str, str]] = ...,
        cause_ids: _Optional[_Iterable[str]] = ...,
    ) -> None: ...

class FleetHealthRequest(_message.Message):
    __slots__ = (
        "selector",
        "deadlines",
        "include_checks",
        "recover",
        "verify_clean",
        "dry_run",
        "reason",
    )
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    DEADLINES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CHECKS_FIELD_NUMBER: _ClassVar[int]
    RECOVER_FIELD_NUMBER: _ClassVar[int]
    VERIFY_CLEAN_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    selector: _common_pb2.NodeSelector
    deadlines: _common_pb2.FanoutDeadlines
    include_checks: bool
    recover: bool
    verify_clean: bool
    dry_run: bool
    reason: str
    def __init__(
        self,
        selector: _Optional[_Union[_common_pb2.NodeSelector, _Mapping]] = ...,
        deadlines: _Optional[_Union[_common_pb2.FanoutDeadlines, _Mapping]] = ...,
        include_checks: _Optional[bool] = ...,
        recover: _Optional[bool] = ...,
        verify_clean: _Optional[bool] = ...,
        dry_run: _Optional[bool] = ...,
        reason: _Optional[str] = ...,
    ) -> None: ...

class NodeHealthResult(_message.Message):
    __slots__ = ("health", "error", "recovery")
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_FIELD_NUMBER: _ClassVar[int]
    health: _executor_pb2.NodeHealth
    error: _common_pb2.NodeError
    recovery: _containers.RepeatedCompositeFieldContainer[_executor_pb2.RecoveryStep]
    def __init__(
        self,
        health: _Optional[_Union[_executor_pb2.NodeHealth, _Mapping]] = ...,
        error: _Optional[_Union[_common_pb2.NodeError, _Mapping]] = ...,
        recovery: _Optional[_Iterable[_Union[_executor_pb2.RecoveryStep, _Mapping]]] = ...,
    ) -> None: ...

class FleetDiagnoseRequest(_message.Message):
    __slots__ = ("selector", "deadlines", "diagnose", "batched")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    DEADLINES_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSE_FIELD_NUMBER: _ClassVar[int]
    BATCHED_FIELD_NUMBER: _ClassVar[int]
    selector: _common_pb2.NodeSelector
    deadlines: _common_pb2.FanoutDeadlines
    diagnose: _executor_pb2.DiagnoseRequest
    batched: bool
    def __init__(
        self,
        selector: _Optional[_Union[_common_pb2.NodeSelector, _Mapping]] = ...,
        deadlines: _Optional[_Union[_common_pb2.FanoutDeadlines, _Mapping]] = ...,
        diagnose: _Optional[_Union[_executor_pb2.DiagnoseRequest, _Mapping]] = ...,
        batched: _Optional[bool] = ...,
    ) -> None: ...

class DiagnoseResult(_message.Message):
    __slots__ = ("check", "error", "checks")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    check: _common_pb2.CheckResult
    error: _common_pb2.NodeError
    checks: _common_pb2.CheckResultBatch
    def __init__(
        self,
        check: _Optional[_Union[_common_pb2.CheckResult, _Mapping]] = ...,
        error: _Optional[_Union[_common_pb2.NodeError, _Mapping]] = ...,
        checks: _Optional[_Union[_common_pb2.CheckResultBatch, _Mapping]] = ...,
    ) -> None: ...

class FleetRecoverRequest(_message.Message):
    __slots__ = ("selector", "deadlines", "recover")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    DEADLINES_FIELD_NUMBER: _ClassVar[int]
    RECOVER_FIELD_NUMBER: _ClassVar[int]
    selector: _common_pb2.NodeSelector
    deadlines: _common_pb2.FanoutDeadlines
    recover: _executor_pb2.RecoverRequest
    def __init__(
        self,
        selector: _Optional[_Union[_common_pb2.NodeSelector, _Mapping]] = ...,
        deadlines: _Optional[_Union[_common_pb2.FanoutDeadlines, _Mapping]] = ...,
        recover: _Optional[_Union[_executor_pb2.RecoverRequest, _Mapping]] = ...,
    ) -> None: ...

class RecoverResult(_message.Message):
    __slots__ = ("step", "error")
    STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    step: _executor_pb2.RecoveryStep
    error: _common_pb2.NodeError
    def __init__(
        self,
        step: _Optional[_Union[_executor_pb2.RecoveryStep, _Mapping]] = ...,
        error: _Optional[_Union[_common_pb2.NodeError, _Mapping]] = ...,
    ) -> None: ...

class FleetInventoryRequest(_message.Message):
    __slots__ = ("selector", "deadlines")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    DEADLINES_FIELD_NUMBER: _ClassVar[int]
    selector: _common_pb2.NodeSelector
    deadlines: _common_pb2.FanoutDeadlines
    def __init__(
        self,
        selector: _Optional[_Union[_common_pb2.NodeSelector, _Mapping]] = ...,
        deadlines: _Optional[_Union[_common_pb2.FanoutDeadlines, _Mapping]] = ...,
    ) -> None: ...

class InventoryResult(_message.Message):
    __slots__ = ("node", "inventory", "error")
    NODE_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node: str
    inventory: _common_pb2.Inventory
    error: _common_pb2.NodeError
    def __init__(
        self,
        node: _Optional[str] = ...,
        inventory: _Optional[_Union[_common_pb2.Inventory, _Mapping]] = ...,
        error: _Optional[_Union[_common_pb2.NodeError, _Mapping]] = ...,
    ) -> None: ...

class FleetVmStatsRequest(_message.Message):
    __slots__ = ("vm", "node", "deadlines")
    VM_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    DEADLINES_FIELD_NUMBER: _ClassVar[int]
    vm: str
    node: str
    deadlines: _common_pb2.FanoutDeadlines
    def __init__(
        self,
        vm: _Optional[str] = ...,
        node: _Optional[str] = ...,
        deadlines: _Optional[_Union[_common_pb2.FanoutDeadlines, _Mapping]] = ...,
    ) -> None: ...

class FleetBundleRequest(_message.Message):
    __slots__ = ("selector", "deadlines", "bundle")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    DEADLINES_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    selector: _common_pb2.NodeSelector
    deadlines: _common_pb2.FanoutDeadlines
    bundle: _executor_pb2.CollectBundleRequest
    def __init__(
        self,
        selector: _Optional[_Union[_common_pb2.NodeSelector, _Mapping]] = ...,
        deadlines: _Optional[_Union[_common_pb2.FanoutDeadlines, _Mapping]] = ...,
        bundle: _Optional[_Union[_executor_pb2.CollectBundleRequest, _Mapping]] = ...,
    ) -> None: ...

class FleetBundleChunk(_message.Message):
    __slots__ = ("chunk", "error")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    chunk: _executor_pb2.BundleChunk
    error: _common_pb2.NodeError
    def __init__(
        self,
        chunk: _Optional[_Union[_executor_pb2.BundleChunk, _Mapping]] = ...,
        error: _Optional[_Union[_common_pb2.NodeError, _Mapping]] = ...,
    ) -> None: ...

class QuarantineRequest(_message.Message):
    __slots__ = ("node", "reason", "dry_run")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    node: str
    reason: str
    dry_run: bool
    def __init__(
        self,
        node: _Optional[str] = ...,
        reason: _Optional[str] = ...,
        dry_run: _Optional[bool] = ...,
    ) -> None: ...

class UnquarantineRequest(_message.Message):
    __slots__ = ("node", "reason", "force", "dry_run")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    node: str
    reason: str
    force: bool
    dry_run: bool
    def __init__(
        self,
        node: _Optional[str] = ...,
        reason: _Optional[str] = ...,
        force: _Optional[bool] = ...,
        dry_run: _Optional[bool] = ...,
    ) -> None: ...

class QuarantineResponse(_message.Message):
    __slots__ = ("record", "changed", "hook_results", "message")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    HOOK_RESULTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    record: _common_pb2.QuarantineRecord
    changed: bool
    hook_results: _containers.RepeatedScalarFieldContainer[str]
    message: str
    def __init__(
        self,
        record: _Optional[_Union[_common_pb2.QuarantineRecord, _Mapping]] = ...,
        changed: _Optional[bool] = ...,
        hook_results: _Optional[_Iterable[str]] = ...,
        message: _Optional[str] = ...,
    ) -> None: ...

class ListQuarantinesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListQuarantinesResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_common_pb2.QuarantineRecord]
    def __init__(
        self, records: _Optional[_Iterable[_Union[_common_pb2.QuarantineRecord, _Mapping]]] = ...
    ) -> None: ...

class GetQuarantineHistoryRequest(_message.Message):
    __slots__ = ("node", "limit")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    node: str
    limit: int
    def __init__(self, node: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class GetQuarantineHistoryResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_common_pb2.QuarantineHistoryEntry]
    def __init__(
        self,
        entries: _Optional[_Iterable[_Union[_common_pb2.QuarantineHistoryEntry, _Mapping]]] = ...,
    ) -> None: ...

class GetAutomationStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseAutomationRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ResumeAutomationRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ResetBreakerRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class AutomationStatus(_message.Message):
    __slots__ = (
        "running",
        "paused",
        "breaker_tripped",
        "breaker_reason",
        "leader",
        "auto_quarantined",
    )
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    BREAKER_TRIPPED_FIELD_NUMBER: _ClassVar[int]
    BREAKER_REASON_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    AUTO_QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    running: bool
    paused: bool
    breaker_tripped: bool
    breaker_reason: str
    leader: str
    auto_quarantined: int
    def __init__(
        self,
        running: _Optional[bool] = ...,
        paused: _Optional[bool] = ...,
        breaker_tripped: _Optional[bool] = ...,
        breaker_reason: _Optional[str] = ...,
        leader: _Optional[str] = ...,
        auto_quarantined: _Optional[int] = ...,
    ) -> None: ...
