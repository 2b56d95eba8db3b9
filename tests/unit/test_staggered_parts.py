"""Host parts run one after another; a slow one stops holding up the rest after
the stagger, and what finished meanwhile is handed over."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from novaops.executor.checks import runner
from novaops.executor.checks.model import CheckResult, Status
from novaops.executor.threads import (
    DaemonThreads,
    PartThreads,
    ThreadsBusy,
    off_loop,
    on_part_thread,
)

pytestmark = pytest.mark.timeout(30)


class Sources:
    """Stands in for CheckSources: what the runner reads of it."""

    class timings:  # stands in for CheckTimings
        per_check = 5.0

    def __init__(self) -> None:
        self.part_threads = PartThreads()


class Parts:
    def __init__(self) -> None:
        self.running = 0
        self.most_at_once = 0
        self.started: list[str] = []

    async def part(self, name: str, seconds: float = 0.0) -> list[CheckResult]:
        self.started.append(name)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.running -= 1
        return [CheckResult(name, "host", Status.OK, f"{name} ok")]


async def _groups(parts: list[tuple[str, object]], stagger: float) -> list[list[str]]:
    return [
        [check_id for check_id, _ in group]
        async for group in runner._staggered(parts, stagger)  # type: ignore[arg-type]
    ]


async def test_fast_parts_run_one_at_a_time_and_come_together() -> None:
    parts = Parts()
    names = [f"p{i}" for i in range(6)]
    groups = await _groups([(n, parts.part(n, 0.001)) for n in names], stagger=5.0)
    assert groups == [names]
    assert parts.most_at_once == 1


async def test_a_slow_part_stops_holding_up_the_rest_after_the_stagger() -> None:
    parts = Parts()
    started = time.monotonic()
    seen: list[tuple[float, list[str]]] = []
    plan = [("a", 0.0), ("slow", 1.0), ("b", 0.0), ("c", 0.0)]
    async for group in runner._staggered([(n, parts.part(n, s)) for n, s in plan], 0.1):
        seen.append((time.monotonic() - started, [check_id for check_id, _ in group]))
    # "a" is handed over as soon as "slow" is found slow; b and c do not wait for it.
    assert [names for _, names in seen] == [["a"], ["b", "c"], ["slow"]]
    assert seen[0][0] < 0.5 and seen[1][0] < 0.6 and seen[2][0] >= 0.9
    assert parts.most_at_once == 2


async def test_a_consumer_that_stops_cancels_running_and_unstarted_parts() -> None:
    parts = Parts()
    plan = [(n, parts.part(n, 10.0)) for n in ("x", "y", "z")]
    stream = runner._staggered(plan, 0.05)
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.3)  # x and y started, z too (each after the stagger)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    await stream.aclose()
    await asyncio.sleep(0)
    assert parts.running == 0


async def test_run_parts_keeps_the_order_named(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = Parts()
    delays = {"host.libvirt": 0.3, "host.cgroup": 0.0, "host.disk": 0.0}
    fake = {name: (lambda sources, name=name: parts.part(name, delays[name])) for name in delays}
    monkeypatch.setattr(runner, "HOST_PARTS", fake)
    monkeypatch.setattr(runner, "PART_STAGGER_SECONDS", 0.05)

    results = await runner.run_parts(tuple(delays), Sources())  # type: ignore[arg-type]
    assert [r.check_id for r in results] == list(delays)


# -- _sequenced: every part on one part thread, the loop taking over a slow one --------


class Blocking:
    """Parts that block their thread (time.sleep), as a hung syscall would."""

    def __init__(self) -> None:
        self.threads: dict[str, int] = {}

    def part(self, name: str, seconds: float = 0.0, crash: bool = False) -> runner.CheckRun:
        async def run(sources: object) -> list[CheckResult]:
            self.threads[name] = threading.get_ident()
            await off_loop(time.sleep, seconds)  # runs right here on a part thread
            if crash:
                raise OSError("disk gone")
            return [CheckResult(name, "host", Status.OK, f"{name} ok")]

        return run


async def _sequenced(
    plan: list[tuple[str, runner.CheckRun]], timeout: float = 5.0, stagger: float = 0.1
) -> list[tuple[float, list[tuple[str, list[CheckResult]]]]]:
    started = time.monotonic()
    return [
        (time.monotonic() - started, group)
        async for group in runner._sequenced(plan, Sources(), timeout, stagger)  # type: ignore[arg-type]
    ]


async def test_sequenced_parts_share_one_thread_and_come_together() -> None:
    parts = Blocking()
    names = [f"p{i}" for i in range(5)]
    groups = await _sequenced([(n, parts.part(n, 0.001)) for n in names])
    assert [[check_id for check_id, _ in group] for _, group in groups] == [names]
    assert len(set(parts.threads.values())) == 1
    assert threading.get_ident() not in parts.threads.values()


async def test_a_blocking_part_stops_holding_up_the_rest_after_the_stagger() -> None:
    parts = Blocking()
    plan = [(n, parts.part(n, s)) for n, s in [("a", 0.0), ("slow", 1.0), ("b", 0.0), ("c", 0.0)]]
    seen = await _sequenced(plan)
    assert [[check_id for check_id, _ in group] for _, group in seen] == [
        ["a"],
        ["b", "c"],
        ["slow"],
    ]
    assert seen[0][0] < 0.5 and seen[1][0] < 0.6 and seen[2][0] >= 0.9
    assert seen[2][1][0][1][0].status is Status.OK  # the slow part's own result, once done
    assert parts.threads["b"] != parts.threads["slow"]


async def test_a_part_past_its_timeout_is_an_error_and_a_crash_is_one_too() -> None:
    parts = Blocking()
    plan = [
        ("hung", parts.part("hung", 2.0)),
        ("crash", parts.part("crash", crash=True)),
        ("fine", parts.part("fine")),
    ]
    seen = await _sequenced(plan, timeout=0.4)
    results = {check_id: found[0] for _, group in seen for check_id, found in group}
    assert results["hung"].status is Status.ERROR
    assert results["hung"].summary == "timed out after 0.4s"
    assert results["crash"].status is Status.ERROR
    assert results["crash"].summary == "check crashed: OSError: disk gone"
    assert results["fine"].status is Status.OK
    assert seen[-1][0] < 1.5  # the hung part did not hold the stream for its 2 s


async def test_off_loop_runs_in_a_thread_off_a_part_thread() -> None:
    assert await off_loop(threading.get_ident) != threading.get_ident()
    assert not on_part_thread()


async def test_daemon_threads_refuse_work_past_their_bound() -> None:
    pool = DaemonThreads("test-bound", max_in_flight=2, idle_seconds=0.5)
    release = threading.Event()
    held = [pool.submit(release.wait) for _ in range(2)]
    with pytest.raises(ThreadsBusy, match="2 calls still pending"):
        pool.submit(lambda: None)
    release.set()
    assert await asyncio.gather(*held) == [True, True]
    assert await pool.submit(lambda: 7) == 7


async def test_each_node_has_its_own_bound() -> None:
    # Many simulated nodes share one process (bench, tests): one node's hung parts
    # must not refuse another's.
    release = threading.Event()
    first, second = PartThreads(max_in_flight=2), PartThreads(max_in_flight=2)
    held = [first.submit(release.wait) for _ in range(2)]
    with pytest.raises(ThreadsBusy):
        first.submit(lambda: None)
    assert await second.submit(lambda: 3) == 3
    release.set()
    await asyncio.gather(*held)


async def test_a_thread_that_cannot_start_is_busy_and_holds_no_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = DaemonThreads("test-start", max_in_flight=1)

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(ThreadsBusy):
        pool.submit(lambda: 1)
    monkeypatch.undo()
    assert await pool.submit(lambda: 2) == 2  # the failed call left no slot taken


async def test_a_sequence_whose_thread_never_starts_times_out() -> None:
    started = time.monotonic()
    blocked = threading.Event()
    original = runner._Sequence.run

    def late(self: runner._Sequence) -> None:
        blocked.wait(5)
        original(self)

    runner._Sequence.run = late  # type: ignore[method-assign]
    try:
        seen = await _sequenced([("a", Blocking().part("a"))], timeout=0.3)
    finally:
        runner._Sequence.run = original  # type: ignore[method-assign]
        blocked.set()
    assert [found[0].summary for _, group in seen for _, found in group] == ["timed out after 0.3s"]
    assert time.monotonic() - started < 2
