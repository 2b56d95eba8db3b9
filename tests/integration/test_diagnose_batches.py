"""``diag host`` in batches on a simulated node: the same results as one by one,
and the health monitor takes the health parts of a finished run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from novaops.devcluster.simnode import plan_node, write_sim_node
from novaops.executor.checks.domains import LibvirtDomainSource
from novaops.executor.checks.model import CheckResult
from novaops.executor.checks.runner import (
    HEALTH_PARTS,
    HOST_PARTS,
    DiagnoseTarget,
    TargetKind,
    run_diagnose,
    run_diagnose_batches,
    run_health_checks,
)
from novaops.executor.checks.sources import CheckSources, CheckTimings
from novaops.executor.health import HealthMonitor
from novaops.executor.hostroot import HostRoot

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def sources(tmp_path: Path) -> AsyncIterator[CheckSources]:
    paths = write_sim_node(plan_node("node-1", 1), tmp_path / "node-1")
    domains = LibvirtDomainSource(paths.libvirt_uri)
    yield CheckSources(
        node="node-1",
        root=HostRoot(paths.host_root),
        domains=domains,
        tap_prefixes=("vtap1-",),
        timings=CheckTimings(per_check=20, cpu_window=0.1),
    )
    await domains.close()


def _keys(results: list[CheckResult]) -> list[tuple[str, str, str]]:
    return sorted((r.check_id, r.target, r.status.value) for r in results)


async def test_batches_carry_the_same_results_as_the_flat_stream(sources: CheckSources) -> None:
    host = DiagnoseTarget(TargetKind.HOST)
    seen: list[tuple[dict[str, list[CheckResult]], float]] = []
    batches = [
        b
        async for b in run_diagnose_batches(
            host, sources, on_host_parts=lambda parts, started: seen.append((parts, started))
        )
    ]
    assert batches and all(batches) and len(batches) <= len(HOST_PARTS)
    flat = [r async for r in run_diagnose(host, sources)]
    assert _keys([r for b in batches for r in b]) == _keys(flat)
    # Every part ran, and the callback got each part's results once.
    ((parts, _),) = seen
    assert set(parts) == set(HOST_PARTS)
    assert _keys([r for p in parts.values() for r in p]) == _keys(flat)


async def test_a_consumer_that_stops_early_hands_nothing_to_the_monitor(
    sources: CheckSources,
) -> None:
    seen: list[object] = []
    stream = run_diagnose_batches(
        DiagnoseTarget(TargetKind.HOST), sources, on_host_parts=lambda *a: seen.append(a)
    )
    first = await anext(stream)
    assert first
    await stream.aclose()
    await asyncio.sleep(0.1)
    assert seen == []


async def test_the_monitor_adopts_the_health_parts_of_a_diag_host(sources: CheckSources) -> None:
    runs = 0

    async def background() -> list[CheckResult]:
        nonlocal runs
        runs += 1
        return []

    monitor = HealthMonitor(background, min_interval=60)

    def adopt(parts: dict[str, list[CheckResult]], started: float) -> None:
        monitor.adopt([r for part in HEALTH_PARTS for r in parts[part]], started)

    async for _ in run_diagnose_batches(
        DiagnoseTarget(TargetKind.HOST), sources, on_host_parts=adopt
    ):
        pass
    last = await monitor.latest(wait=1.0)
    assert runs == 0 and last is not None
    # What the background run would have found, in the health parts' order.
    direct = await run_health_checks(sources)
    assert [r.check_id for r, _ in last.results] == [r.check_id for r in direct]
    assert _keys([r for r, _ in last.results]) == _keys(direct)
    assert {"host.libvirt", "host.orphans", "host.locks", "host.taps"} <= {
        r.check_id for r, _ in last.results
    }
