"""Prometheus metrics of the executor (served on ``metrics_listen`` when configured).

Counters of the recovery catalogue (``novaops_recovery_total``,
``novaops_cleanup_total``) live with the catalogue; this module holds the
node-health ones and the bundle counter.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

from novaops.executor.checks.model import CheckResult

CONTROL_DEGRADED = Counter(
    "novaops_control_degraded_total",
    "Controls found degraded by a health check (cgroup backend, missing pidfd), and "
    "signals sent by pid for lack of pidfd (control pidfd-signal).",
    ["control"],
)
BUNDLES_BUILT = Counter(
    "novaops_executor_bundles_total",
    "Node support bundles streamed by this executor, by outcome.",
    ["outcome"],
)


def count_degraded_controls(results: Iterable[CheckResult]) -> None:
    """Count each control a health check reports as degraded (evidence degraded_controls)."""
    for result in results:
        listed = result.evidence.get("degraded_controls", "")
        for control in filter(None, (c.strip() for c in listed.split(","))):
            CONTROL_DEGRADED.labels(control).inc()
