"""PartGate: part threads of one process take turns; a holder that overruns its
hold limit loses the gate, and its late leave frees nothing."""

from __future__ import annotations

import threading
import time

import pytest

from novaops.executor.threads import PartGate

pytestmark = pytest.mark.timeout(30)


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
    entered = threading.Event()

    def third() -> None:
        with gate.held():
            entered.set()

    thread = threading.Thread(target=third)
    thread.start()
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
