"""PartGate: part threads of one process take turns; a holder that overruns its
hold limit loses the gate, and its late leave frees nothing."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from novaops.executor.threads import PartGate

pytestmark = pytest.mark.timeout(30)


def _passing_through(gate: PartGate) -> tuple[threading.Thread, threading.Event]:
    """A thread that goes through the gate, and the event it sets once inside."""
    entered = threading.Event()

    def run() -> None:
        with gate.held():
            entered.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, entered


def test_holders_take_turns() -> None:
    gate = PartGate(hold_limit=5.0)
    inside = 0
    most = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        for _ in range(20):
            with gate.held():
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1
    assert inside == 0


def test_a_holder_past_the_limit_loses_the_gate_and_its_leave_frees_nothing() -> None:
    gate = PartGate(hold_limit=0.2)
    hung = gate.enter()
    started = time.monotonic()
    second = gate.enter()  # waits for the limit, then goes through
    waited = time.monotonic() - started
    assert 0.15 <= waited < 2.0
    gate.leave(hung)  # the hung holder returns at last: the gate stays with the second
    thread, entered = _passing_through(gate)
    assert not entered.wait(0.05)  # still held by the second
    gate.leave(second)
    assert entered.wait(2.0)
    thread.join()


def test_leaving_wakes_a_waiter_at_once() -> None:
    gate = PartGate(hold_limit=10.0)
    first = gate.enter()
    waited: list[float] = []

    def waiter() -> None:
        started = time.monotonic()
        with gate.held():
            waited.append(time.monotonic() - started)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    gate.leave(first)
    thread.join(5)
    assert waited and waited[0] < 1.0  # far below the 10 s limit


def _start_queued(gate: PartGate, run: Callable[[], None], name: str) -> threading.Thread:
    """A thread running run(), which enters the gate; returned once it is queued."""
    queued = gate.waiting
    thread = threading.Thread(target=run, name=name)
    thread.start()
    deadline = time.monotonic() + 5
    while gate.waiting == queued and time.monotonic() < deadline:
        time.sleep(0.001)
    assert gate.waiting == queued + 1, f"{name} did not queue"
    return thread


def _queue_behind(gate: PartGate, name: str, order: list[str]) -> threading.Thread:
    """A thread that enters (queued behind whoever waits), notes its turn, leaves."""

    def run() -> None:
        with gate.held():
            order.append(name)

    return _start_queued(gate, run, name)


def test_turns_go_in_arrival_order_and_a_newcomer_waits_behind_the_queue() -> None:
    gate = PartGate(hold_limit=10.0)
    first = gate.enter()
    order: list[str] = []
    threads = [_queue_behind(gate, name, order) for name in ("a", "b", "c")]
    gate.leave(first)
    # At the instant the gate is free, the woken "a" has not run yet; a newcomer
    # must still queue behind a, b and c instead of taking the gate.
    late = gate.enter()
    order.append("newcomer")
    gate.leave(late)
    for thread in threads:
        thread.join(5)
    assert order == ["a", "b", "c", "newcomer"]


def test_the_first_waiter_takes_over_from_an_overrun_holder_and_the_next_waits_its_own_limit() -> (
    None
):
    gate = PartGate(hold_limit=0.2)
    started = time.monotonic()
    hung = gate.enter()
    order: list[str] = []
    entered: dict[str, float] = {}

    def hold(name: str) -> None:
        gate.enter()  # never leaves: each waiter overruns in turn
        entered[name] = time.monotonic() - started
        order.append(name)

    threads = [_start_queued(gate, functools.partial(hold, name), name) for name in ("a", "b")]
    for thread in threads:
        thread.join(5)
    gate.leave(hung)  # too late: changes nothing
    assert order == ["a", "b"]
    assert 0.19 <= entered["a"] < 2.0  # the hung holder's limit
    assert entered["b"] >= 0.39  # then a's own limit, counted from a's turn
    assert gate.waiting == 0


def test_a_waiter_interrupted_in_the_queue_leaves_it() -> None:
    gate = PartGate(hold_limit=10.0)
    first = gate.enter()

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    # A signal handler raising in the main thread, as Ctrl-C does, while queued.
    previous = signal.signal(signal.SIGUSR1, interrupt)
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        with pytest.raises(Interrupted):
            gate.enter()
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    assert gate.waiting == 0
    gate.leave(first)
    other, entered = _passing_through(gate)
    assert entered.wait(2.0)  # not stuck behind the interrupted waiter
    other.join(5)
