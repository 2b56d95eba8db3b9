"""Registry watch: notices nodes going up or down, logs it and exports gauges.

``liveness_transitions`` is pure (previous, current) -> transitions; the loop
around it only reads the store on an interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from novaops.controller.events import EventLog
from novaops.controller.metrics import (
    HEARTBEAT_INTERVAL,
    IS_LEADER,
    NODE_UP,
    QUARANTINED_NODES,
    WORKER_HEALTH,
)
from novaops.controller.registry import HeartbeatPacing
from novaops.controller.store.base import NodeRecord, Store, StoreError
from novaops.v1 import common_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LivenessTransition:
    node: str
    up: bool
    first_seen: bool


def liveness_transitions(
    previous: dict[str, bool], current: dict[str, bool]
) -> list[LivenessTransition]:
    """Nodes whose liveness changed (or that appeared), sorted by name."""
    changes = []
    for node in sorted(current):
        before = previous.get(node)
        if before is None or before != current[node]:
            changes.append(LivenessTransition(node, current[node], before is None))
    return changes


def health_counts(records: list[NodeRecord], quarantined: set[str]) -> dict[str, int]:
    """Nodes per novaops_worker_health status; a down node counts as unhealthy."""
    counts = {"healthy": 0, "unhealthy": 0, "quarantined": 0}
    for record in records:
        if record.name in quarantined:
            counts["quarantined"] += 1
        elif record.up and record.health == common_pb2.HEALTH_STATUS_HEALTHY:
            counts["healthy"] += 1
        else:
            counts["unhealthy"] += 1
    return counts


def export_health(records: list[NodeRecord], quarantined: set[str]) -> None:
    for status, count in health_counts(records, quarantined).items():
        WORKER_HEALTH.labels(status).set(count)
    QUARANTINED_NODES.set(len(quarantined))


async def watch_registry(
    store: Store,
    interval: float,
    stop: asyncio.Event,
    is_leader: Callable[[], bool],
    events: EventLog | None = None,
    pacing: HeartbeatPacing | None = None,
) -> None:
    """Poll the registry every interval until stop is set.

    Every replica keeps its gauges; only the leader records node.up/node.down
    events, so a cluster of replicas reports each transition once. ``pacing``
    learns the number of registered nodes from each poll.
    """
    previous: dict[str, bool] = {}
    while not stop.is_set():
        try:
            records = await store.list_nodes()
            quarantined = set(await store.get_quarantines())
            current = {n.name: n.up for n in records}
        except StoreError as exc:
            log.warning("registry watch: store unavailable: %s", exc)
        else:
            leading = is_leader()
            for change in liveness_transitions(previous, current):
                if change.first_seen:
                    message = f"{change.node} is {'up' if change.up else 'down'}"
                elif change.up:
                    message = f"{change.node} is up again"
                else:
                    message = f"{change.node} is down (missed heartbeats)"
                log.info("%s", message)
                if (
                    events is not None
                    and leading
                    and not (change.first_seen and change.up is False)
                ):
                    await events.emit("node.up" if change.up else "node.down", change.node, message)
            for node in set(previous) - set(current):
                NODE_UP.remove(node)
            for node, up in current.items():
                NODE_UP.labels(node).set(1 if up else 0)
            previous = current
            export_health(records, quarantined)
            if pacing is not None:
                pacing.observe(len(records))
                HEARTBEAT_INTERVAL.set(pacing.interval_ms / 1000)
        IS_LEADER.set(1 if is_leader() else 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
