"""What every controller servicer shares, and how store/leadership errors map to gRPC."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import NoReturn

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from novaops.client.tls import AioContext
from novaops.controller.automation import Automation
from novaops.controller.config import ControllerConfig
from novaops.controller.election import Elector
from novaops.controller.events import EventLog
from novaops.controller.executors import ExecutorPool
from novaops.controller.quarantine import NotClean, NotLeader, QuarantineManager, UnknownNode
from novaops.controller.registry import HeartbeatPacing
from novaops.controller.store.base import (
    FencingError,
    LeaderRecord,
    NodeRecord,
    Store,
    StoreError,
)
from novaops.v1 import common_pb2, controller_pb2

log = logging.getLogger(__name__)

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
    events: EventLog
    quarantines: QuarantineManager
    automation: Automation
    # The heartbeat interval handed out now (it grows with the fleet) and its TTL.
    pacing: HeartbeatPacing = field(init=False)

    def __post_init__(self) -> None:
        self.pacing = HeartbeatPacing(
            self.config.heartbeat_interval_ms,
            self.config.missed_heartbeats_limit,
            self.config.max_heartbeats_per_second,
        )

    @property
    def insecure(self) -> bool:
        return self.config.tls.insecure


async def store_call_failed(context: AioContext, exc: StoreError) -> NoReturn:
    log.warning("store call failed: %s", exc)
    await context.abort(grpc.StatusCode.UNAVAILABLE, f"controller store unavailable: {exc}")
    raise AssertionError("unreachable")


async def abort_for(context: AioContext, exc: Exception) -> NoReturn:
    """Abort the call with the status code that fits an expected failure."""
    if isinstance(exc, NotLeader | FencingError):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, UnknownNode):
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, NotClean):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, StoreError):
        await store_call_failed(context, exc)
    raise exc


EXPECTED_ERRORS = (NotLeader, FencingError, UnknownNode, NotClean, StoreError)
