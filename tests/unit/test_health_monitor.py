"""The node's health verdict: one rule, checks run in the background and cached."""

from __future__ import annotations

import asyncio
import datetime as dt

from novaops.executor.checks.model import CheckResult, Status
from novaops.executor.health import HealthMonitor, failing_check_ids, health_status
from novaops.v1 import common_pb2


def result(check_id: str, status: Status) -> CheckResult:
    return CheckResult(check_id, "host", status, f"{check_id} is {status.value}")


def test_fail_and_error_are_unhealthy_warn_is_not() -> None:
    results = [
        result("host.libvirt", Status.OK),
        result("host.cgroup", Status.WARN),
        result("host.taps", Status.ERROR),
        result("host.orphans", Status.FAIL),
        result("host.orphans", Status.FAIL),
    ]
    assert failing_check_ids(results) == ("host.orphans", "host.taps")
    assert failing_check_ids(results[:2]) == ()
    assert health_status(False, True, ()) == common_pb2.HEALTH_STATUS_HEALTHY
    assert health_status(False, True, ("host.taps",)) == common_pb2.HEALTH_STATUS_UNHEALTHY
    assert health_status(False, False, ()) == common_pb2.HEALTH_STATUS_UNHEALTHY
    assert health_status(True, False, ("x",)) == common_pb2.HEALTH_STATUS_QUARANTINED


class Checks:
    """A health-check run that waits for the test to release it."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()
        self.results = [result("host.orphans", Status.FAIL)]

    async def __call__(self) -> list[CheckResult]:
        self.started += 1
        await self.release.wait()
        return list(self.results)


async def test_latest_runs_in_the_background_at_most_every_min_interval() -> None:
    checks = Checks()
    now = [100.0]
    monitor = HealthMonitor(
        checks,
        min_interval=5.0,
        monotonic=lambda: now[0],
        now=lambda: dt.datetime(2024, 6, 1, tzinfo=dt.UTC),
    )
    # No run yet: the first caller waits (briefly) for one.
    assert await monitor.latest(wait=0.01) is None
    assert checks.started == 1
    checks.release.set()
    first = await monitor.latest(wait=1.0)
    assert first is not None and first.failing == ("host.orphans",)
    assert checks.started == 1  # joined the run in flight, did not start another

    # Within the interval: the cached run, nothing started.
    now[0] += 4.9
    assert await monitor.latest(wait=1.0) is first
    assert checks.started == 1
    # Past it: the cached run is returned at once and a new one starts behind it.
    checks.release.clear()
    checks.results = [result("host.orphans", Status.OK)]
    now[0] += 0.2
    assert await monitor.latest(wait=1.0) is first
    await asyncio.sleep(0)  # let the background run begin
    assert checks.started == 2
    checks.release.set()
    second = await monitor.run_checks()  # joins the run in flight
    assert checks.started == 2 and second is not first and second.failing == ()
    assert monitor.last is second
    # Event ids are given once per run.
    assert [e for _, e in second.results] == [e for _, e in monitor.last.results]
    await monitor.close()


async def test_a_caller_that_goes_away_does_not_cancel_the_run() -> None:
    checks = Checks()
    monitor = HealthMonitor(checks)
    caller = asyncio.ensure_future(monitor.run_checks())
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.gather(caller, return_exceptions=True)
    checks.release.set()
    run = await monitor.run_checks()
    assert checks.started == 1 and run.failing == ("host.orphans",)


async def test_close_cancels_a_run_in_flight() -> None:
    checks = Checks()
    monitor = HealthMonitor(checks)
    assert await monitor.latest(wait=0.0) is None
    await monitor.close()
    assert monitor.last is None


async def test_adopted_diag_host_results_postpone_the_next_background_run() -> None:
    checks = Checks()
    now = [100.0]
    monitor = HealthMonitor(checks, min_interval=5.0, monotonic=lambda: now[0])
    checks.release.set()
    first = await monitor.run_checks()
    assert checks.started == 1 and first.failing == ("host.orphans",)
    # A diag host that started at 103 ran the same parts: its results are the health.
    monitor.adopt([result("host.orphans", Status.OK)], started_monotonic=103.0)
    adopted = monitor.last
    assert adopted is not None and adopted.failing == () and adopted.started_monotonic == 103.0
    # 5 s after the first run but not after the adopted one: no new run.
    now[0] = 106.0
    assert await monitor.latest(wait=1.0) is adopted
    await asyncio.sleep(0)
    assert checks.started == 1
    # Results older than the last run are not taken.
    monitor.adopt([result("host.orphans", Status.FAIL)], started_monotonic=101.0)
    assert monitor.last is adopted
    # Past the interval from the adopted run, the background run starts again.
    now[0] = 108.5
    await monitor.latest(wait=1.0)
    await asyncio.sleep(0)
    assert checks.started == 2
    await monitor.close()


async def test_a_background_run_older_than_an_adopted_one_does_not_replace_it() -> None:
    checks = Checks()
    now = [100.0]
    monitor = HealthMonitor(checks, min_interval=5.0, monotonic=lambda: now[0])
    running = asyncio.ensure_future(monitor.run_checks())  # starts at 100
    await asyncio.sleep(0)
    monitor.adopt([result("host.orphans", Status.OK)], started_monotonic=101.0)
    checks.release.set()
    background = await running
    assert background.failing == ("host.orphans",)
    last = monitor.last
    assert last is not None and last.started_monotonic == 101.0 and last.failing == ()
