"""Pure rules of the node registry, shared by the registry service and the watch loop."""

from __future__ import annotations

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
