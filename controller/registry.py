"""Pure rules of the node registry, shared by the registry service and the watch loop."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from novaops.controller.clock import Clock, SystemClock

# A heartbeat a little late (a GC pause, a busy event loop) must not mark a node
# down: the grace is half an interval, capped so slow intervals stay responsive.
GRACE_FRACTION = 0.5
MAX_GRACE_SECONDS = 2.0


def liveness_ttl(heartbeat_interval_ms: int, missed_limit: int) -> float:
    """Seconds a node stays up after a heartbeat: ``missed_limit`` intervals plus a grace.

    >>> liveness_ttl(1000, 3)
    3.5
    """
    if heartbeat_interval_ms <= 0 or missed_limit <= 0:
        raise ValueError("heartbeat interval and missed-heartbeats limit must be positive")
    interval = heartbeat_interval_ms / 1000
    return interval * missed_limit + min(interval * GRACE_FRACTION, MAX_GRACE_SECONDS)


def paced_interval_ms(base_ms: int, nodes: int, max_per_second: float) -> int:
    """The heartbeat interval for a fleet of ``nodes``: ``base_ms``, stretched so
    the whole fleet sends at most ``max_per_second`` heartbeats (0: never stretched).

    >>> paced_interval_ms(1000, 20, 50.0), paced_interval_ms(1000, 500, 50.0)
    (1000, 10000)
    """
    if max_per_second <= 0 or nodes <= 0:
        return base_ms
    return max(base_ms, math.ceil(nodes * 1000 / max_per_second))


class HeartbeatPacing:
    """The interval every heartbeat and registration answer hands out, and the
    liveness TTL that goes with it.

    Each heartbeat costs the controller a call and a store write: at 500 nodes a
    fixed 1 s interval kept an otherwise idle controller at 0.82 cores (decision
    0011). As Nomad does with its ``max_heartbeats_per_second``,
    the interval grows with the fleet instead: a node learns the current one from
    every answer, and its TTL is set from the interval it was just told, so a
    node is down after ``missed_limit`` missed beats at whatever interval it keeps.
    The fleet size comes from the registry watch (:meth:`observe`).
    """

    def __init__(self, base_ms: int, missed_limit: int, max_per_second: float) -> None:
        self.base_ms = base_ms
        self.missed_limit = missed_limit
        self.max_per_second = max_per_second
        self.nodes = 0

    def observe(self, nodes: int) -> None:
        self.nodes = nodes

    @property
    def interval_ms(self) -> int:
        return paced_interval_ms(self.base_ms, self.nodes, self.max_per_second)

    @property
    def ttl(self) -> float:
        """Seconds a node stays up after a heartbeat answered now."""
        return liveness_ttl(self.interval_ms, self.missed_limit)


def seconds_since_heartbeat(last_heartbeat: float | None, now: float) -> float | None:
    """Age of a node's last heartbeat in wall seconds (never negative), or None if never seen."""
    if last_heartbeat is None:
        return None
    return max(0.0, now - last_heartbeat)


@dataclass(frozen=True)
class ReportedHealth:
    """What a node's last heartbeat to this replica said beyond the verdict."""

    failing_checks: tuple[str, ...]
    checked_at: float | None  # wall seconds of the node's check run, if any
    received: float = 0.0  # wall seconds this replica recorded it (set by HealthReports)


class HealthReports:
    """Failing checks per node as last heartbeated to this replica.

    In memory only: the store keeps the verdict (NodeRecord.health), not the
    check ids, so a replica that does not receive a node's heartbeats has none.
    A report older than the node's last heartbeat in the store by more than
    ``skew`` seconds is stale and not shown: the node heartbeats to another replica
    now (a failover), or it was removed there and a node of that name registered
    again. ``skew`` allows for the replicas' clocks differing.
    """

    def __init__(self, clock: Clock | None = None, skew: float = 1.0) -> None:
        self._by_node: dict[str, ReportedHealth] = {}
        self._clock = clock if clock is not None else SystemClock()
        self.skew = skew

    def record(self, node: str, report: ReportedHealth) -> None:
        self._by_node[node] = replace(report, received=self._clock.wall())

    def current(self, node: str, last_heartbeat: float | None) -> ReportedHealth | None:
        """The node's report unless a later heartbeat went elsewhere (see the class)."""
        report = self._by_node.get(node)
        if report is None or last_heartbeat is None:
            return report
        return report if last_heartbeat - report.received <= self.skew else None

    def forget(self, node: str) -> None:
        self._by_node.pop(node, None)
