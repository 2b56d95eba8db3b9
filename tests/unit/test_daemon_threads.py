"""DaemonThreads.call (a blocking wait for threads that may block, such as part
threads) and the reads the parts of one diagnosis share."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from novaops.executor.threads import (
    DaemonThreads,
    PartThreads,
    ThreadsBusy,
    run_here,
    shared_read,
    shared_reads,
)

pytestmark = pytest.mark.timeout(30)
T = TypeVar("T")


def test_call_returns_the_result_from_another_thread() -> None:
    pool = DaemonThreads("test-call", max_in_flight=2, idle_seconds=0.5)
    assert pool.call(threading.get_ident, 5) != threading.get_ident()


def test_call_raises_what_the_work_raised() -> None:
    pool = DaemonThreads("test-call-error", max_in_flight=2, idle_seconds=0.5)

    def fail() -> None:
        raise ValueError("broken read")

    with pytest.raises(ValueError, match="broken read"):
        pool.call(fail, 5)
    assert pool.call(lambda: 4, 5) == 4  # the failure left no slot taken


def test_a_hung_call_times_out_and_keeps_its_slot_until_it_returns() -> None:
    pool = DaemonThreads("test-call-hang", max_in_flight=1, idle_seconds=0.5)
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no answer within 0\.2s"):
        pool.call(release.wait, 0.2)
    assert 0.15 < time.monotonic() - started < 2
    with pytest.raises(ThreadsBusy, match="1 calls still pending"):
        pool.call(lambda: 1, 1)  # the hung work still holds the only slot
    release.set()
    deadline = time.monotonic() + 5
    while True:  # the slot frees once the abandoned work returns
        try:
            assert pool.call(lambda: 2, 1) == 2
            break
        except ThreadsBusy:
            assert time.monotonic() < deadline
            time.sleep(0.01)


async def test_blocking_and_loop_callers_share_one_bound() -> None:
    pool = DaemonThreads("test-call-mixed", max_in_flight=1, idle_seconds=0.5)
    release = threading.Event()
    held = pool.submit(release.wait)
    with pytest.raises(ThreadsBusy):
        pool.call(lambda: 1, 1)
    release.set()
    assert await held is True
    assert await asyncio.to_thread(pool.call, lambda: 3, 5) == 3


class Reads:
    def __init__(self, failures: int = 0) -> None:
        self.count = 0
        self.failures = failures

    async def read(self) -> list[str]:
        self.count += 1
        if self.failures:
            self.failures -= 1
            raise OSError("libvirt went away")
        return ["vm-a", "vm-b"]


async def _on_a_part_thread(work: Callable[[], T]) -> T:
    return await PartThreads().submit(work)


async def test_parts_in_one_scope_read_once() -> None:
    reads = Reads()

    def two_parts() -> tuple[list[str], list[str]]:
        with shared_reads():
            first = run_here(shared_read("domains", reads.read))
            second = run_here(shared_read("domains", reads.read))
        return first, second

    first, second = await _on_a_part_thread(two_parts)
    assert first == second == ["vm-a", "vm-b"] and reads.count == 1


async def test_a_failed_read_is_read_again_by_the_next_part() -> None:
    reads = Reads(failures=1)

    def two_parts() -> list[str]:
        with shared_reads():
            with pytest.raises(OSError):
                run_here(shared_read("domains", reads.read))
            return run_here(shared_read("domains", reads.read))

    assert await _on_a_part_thread(two_parts) == ["vm-a", "vm-b"]
    assert reads.count == 2


async def test_without_a_scope_every_read_is_fresh() -> None:
    reads = Reads()

    def outside_scope() -> None:
        run_here(shared_read("domains", reads.read))
        run_here(shared_read("domains", reads.read))

    await _on_a_part_thread(outside_scope)
    await shared_read("domains", reads.read)  # on the loop: not a part thread
    assert reads.count == 3

    def later_scope() -> None:  # a scope that ended shares nothing with the next
        with shared_reads():
            run_here(shared_read("domains", reads.read))
        with shared_reads():
            run_here(shared_read("domains", reads.read))

    await _on_a_part_thread(later_scope)
    assert reads.count == 5


def test_work_that_raises_a_base_exception_answers_the_caller_at_once() -> None:
    # Not after the whole timeout, as "no answer": the caller gets what happened.
    pool = DaemonThreads("test-call-base", max_in_flight=1, idle_seconds=0.5)

    def interrupted() -> None:
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pool.call(interrupted, 10)
    assert time.monotonic() - started < 5
    assert pool.call(lambda: 5, 5) == 5  # its slot was given back
