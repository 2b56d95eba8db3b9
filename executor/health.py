"""The node's health verdict, from health checks run in the background and cached.

What callers may rely on:

* The verdict (:func:`health_status`) is ``QUARANTINED`` while the node holds a
  quarantine; else ``UNHEALTHY`` when libvirt does not answer or any health check
  (``HEALTH_PARTS``) of the last run is FAIL or ERROR (a check that cannot tell is
  not a pass; WARN is healthy); else ``HEALTHY``. ``GetHealth``, the heartbeat
  (hence ``node list`` and ``novaops_worker_health``) and the automation all use
  this one rule.
* :meth:`HealthMonitor.run_checks` runs the checks now and caches the run. Only one
  run is in flight at a time: a caller arriving during a run gets that run's
  result. A caller that goes away (a cancelled RPC) does not cancel the run.
* :meth:`HealthMonitor.latest` never runs the checks inline: it returns the last
  finished run, starting a new one in the background when that one started
  ``min_interval`` or more ago. The heartbeat asks every interval, so the checks
  run about every heartbeat interval (never more often than ``min_interval``)
  and a heartbeat reports the run started one heartbeat earlier. It waits up to
  ``wait`` seconds only while there has been no run at all.
* Each run's results get their event ids once, so every answer built from the
  same run names the same ids.
* :meth:`HealthMonitor.adopt` takes a run made elsewhere (``diag host`` runs the
  health parts too) as the last run when it is the newest; the background runs
  then wait ``min_interval`` from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from novaops.executor.checks.model import CheckResult, Status, new_event_id
from novaops.executor.metrics import count_degraded_controls
from novaops.v1 import common_pb2

log = logging.getLogger(__name__)

# A health check in one of these makes the node unhealthy.
UNHEALTHY_STATUSES = frozenset({Status.FAIL, Status.ERROR})
# Heartbeats come every interval (1 s by default). One run costs a few ms of CPU
# on a host with a few hundred processes (measured: 5 ms); a faster heartbeat
# must not make it a busy loop, so runs start at least this far apart.
MIN_CHECK_INTERVAL_SECONDS = 1.0


def failing_check_ids(results: Iterable[CheckResult]) -> tuple[str, ...]:
    """Sorted ids of the checks that make a node unhealthy (FAIL or ERROR)."""
    return tuple(sorted({r.check_id for r in results if r.status in UNHEALTHY_STATUSES}))


def health_status(
    quarantined: bool, libvirt_reachable: bool, failing: Sequence[str] = ()
) -> common_pb2.HealthStatus:
    """The node's verdict; see the module docstring."""
    if quarantined:
        return common_pb2.HEALTH_STATUS_QUARANTINED
    if not libvirt_reachable or failing:
        return common_pb2.HEALTH_STATUS_UNHEALTHY
    return common_pb2.HEALTH_STATUS_HEALTHY


@dataclass(frozen=True)
class CheckRun:
    """One run of the health checks: results with their event ids, and when it ended."""

    results: tuple[tuple[CheckResult, str], ...]
    finished_at: dt.datetime
    started_monotonic: float

    @property
    def failing(self) -> tuple[str, ...]:
        return failing_check_ids(r for r, _ in self.results)


@dataclass(frozen=True)
class HealthVerdict:
    """What a heartbeat reports: the verdict, the failing check ids and when the
    checks behind them ran (None: no run yet, the verdict is liveness only)."""

    status: common_pb2.HealthStatus
    failing_checks: tuple[str, ...] = ()
    checked_at: dt.datetime | None = None


class HealthMonitor:
    """Runs the node's health checks on demand and keeps the last run."""

    def __init__(
        self,
        run: Callable[[], Awaitable[list[CheckResult]]],
        *,
        min_interval: float = MIN_CHECK_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._run_checks = run
        self.min_interval = min_interval
        self._monotonic = monotonic
        self._now = now
        self._last: CheckRun | None = None
        self._inflight: asyncio.Task[CheckRun] | None = None

    @property
    def last(self) -> CheckRun | None:
        """The last finished run, or None before the first."""
        return self._last

    def _start(self) -> asyncio.Task[CheckRun]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._run())
        return self._inflight

    async def _run(self) -> CheckRun:
        started = self._monotonic()
        results = await self._run_checks()
        count_degraded_controls(results)
        run = CheckRun(tuple((r, new_event_id()) for r in results), self._now(), started)
        if self._last is None or self._last.started_monotonic <= started:
            self._last = run  # else a diag host that started later was adopted meanwhile
        return run

    def adopt(self, results: Sequence[CheckResult], started_monotonic: float) -> None:
        """Take the results of health checks run elsewhere (the health parts of a
        ``diag host``) as the last run, unless a run started later is already
        known. The next background run is then due ``min_interval`` after them:
        the same checks are not run again moments later."""
        last = self._last
        if last is not None and last.started_monotonic >= started_monotonic:
            return
        count_degraded_controls(results)
        self._last = CheckRun(
            tuple((r, new_event_id()) for r in results), self._now(), started_monotonic
        )

    async def run_checks(self) -> CheckRun:
        """Run the checks now (or join the run in flight) and cache the result."""
        return await asyncio.shield(self._start())

    async def latest(self, wait: float) -> CheckRun | None:
        """The last finished run; see the module docstring."""
        last = self._last
        if last is None or self._monotonic() - last.started_monotonic >= self.min_interval:
            task = self._start()
            if last is None:
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(task), wait)
        return self._last

    async def close(self) -> None:
        """Cancel a run in flight (daemon shutdown)."""
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
