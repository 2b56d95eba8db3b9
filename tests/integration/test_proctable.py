"""The process table against real processes and the kernel's process events.

A child starts with a command line that is not QEMU-like, is scanned (and kept),
then calls exec into a stand-in's command line: the next scan must see it, which
only the exec event can tell a table that keeps what it read.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from novaops.executor import proctable
from novaops.executor.proctable import (
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    ProcessTable,
    changed_pids,
)

# Spelled so that the waiting child's own command line passes no QEMU-like test.
_WAIT_THEN_EXEC = (
    "import os, sys, time\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    time.sleep(0.01)\n"
    "env = dict(os.environ, NOVAOPS_NODE='node-late')\n"
    "args = ['-c', _STAND_IN, '-name', 'gu' + 'est=' + sys.argv[2]]\n"
    "os.execve(sys.executable, [sys.executable, *args], env)\n"
)
# What the child becomes: a stand-in that, on SIGUSR1, forks a copy of itself
# (same command line, no exec) which leaves once its parent is gone.
_STAND_IN = (
    "import os, signal, time\n"
    "def fork(*_):\n"
    "    parent = os.getpid()\n"
    "    if os.fork() == 0:\n"
    "        while os.getppid() == parent:\n"
    "            time.sleep(0.05)\n"
    "        os._exit(0)\n"
    "signal.signal(signal.SIGUSR1, fork)\n"
    "time.sleep(60)\n"
)
_WAIT_THEN_EXEC = f"_STAND_IN = {_STAND_IN!r}\n" + _WAIT_THEN_EXEC


def _catches(pid: int, signum: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


class Child:
    def __init__(self, tmp: Path, guest: str) -> None:
        self.trigger = tmp / f"exec-{guest}"
        self.guest = guest
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WAIT_THEN_EXEC, str(self.trigger), guest]
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exec_now(self) -> None:
        self.trigger.touch()
        deadline = time.monotonic() + 10
        while b"guest=" + self.guest.encode() not in Path(f"/proc/{self.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "the child did not exec"
            time.sleep(0.01)

    def fork_now(self) -> None:
        """Have the stand-in fork (see _STAND_IN), once its handler is in place."""
        deadline = time.monotonic() + 10
        while not _catches(self.pid, signal.SIGUSR1):
            assert time.monotonic() < deadline, "the stand-in never caught SIGUSR1"
            time.sleep(0.01)
        os.kill(self.pid, signal.SIGUSR1)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Child]:
    started = Child(tmp_path, f"late-{os.getpid()}")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def table() -> Iterator[ProcessTable]:
    made = ProcessTable()
    problem = made.subscribe()
    if problem is not None:
        pytest.skip(f"process events connector unavailable here: {problem}")
    try:
        yield made
    finally:
        made.close()


def pids(table: ProcessTable) -> dict[int, str | None]:
    return {c.pid: c.marker for c in table.candidates()}


def test_a_kept_process_that_calls_exec_is_read_again(table: ProcessTable, child: Child) -> None:
    first = pids(table)
    full_scan = table.last_reads
    assert child.pid not in first
    pids(table)
    # Nothing changed for almost every process: the second scan reads only the few
    # processes started in between (other tests' helpers, this machine's daemons).
    assert table.last_reads < full_scan / 2, (table.last_reads, full_scan)

    child.exec_now()
    assert pids(table).get(child.pid, "absent") == "node-late"


def test_an_exited_process_leaves_the_table(table: ProcessTable, child: Child) -> None:
    child.exec_now()
    assert child.pid in pids(table)
    # Killed but not reaped: /proc/<pid> stays, with the same inode, so only the
    # exit event can tell the table (a zombie's command line reads empty).
    os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not become a zombie"
        time.sleep(0.01)
    assert child.pid not in pids(table)


def test_lost_events_make_the_table_start_over(child: Child) -> None:
    small = ProcessTable()
    problem = small.subscribe(buffer_bytes=1)  # the kernel's minimum: a few events
    if problem is not None:
        pytest.skip(f"process events connector unavailable here: {problem}")
    try:
        assert child.pid not in pids(small)
        for _ in range(40):
            subprocess.run(["true"], check=True)
        child.exec_now()
        assert small.candidates() and child.pid in pids(small)
        assert small.overflows >= 1
    finally:
        small.close()


def test_without_events_every_scan_reads_every_process(child: Child) -> None:
    unsubscribed = ProcessTable()
    assert child.pid not in pids(unsubscribed)
    pids(unsubscribed)
    listed = sum(1 for entry in Path("/proc").iterdir() if entry.name.isdigit())
    assert unsubscribed.last_reads >= listed * 0.8
    child.exec_now()
    assert pids(unsubscribed)[child.pid] == "node-late"


def _message(body: bytes) -> bytes:
    """One process-events netlink message carrying an event body."""
    cn = struct.pack("=IIIIHH", 1, 1, 0, 0, len(body), 0) + body
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


def _event(what: int, pid: int, tgid: int) -> bytes:
    return _message(struct.pack("=IIQii", what, 0, 0, pid, tgid) + bytes(16))


def _fork(parent: int, child_pid: int, child_tgid: int) -> bytes:
    return _message(
        struct.pack("=IIQiiii", PROC_EVENT_FORK, 0, 0, parent, parent, child_pid, child_tgid)
    )


def test_events_are_parsed_fork_exec_and_exit_only() -> None:
    uid = 0x00000004
    datagram = (
        _event(PROC_EVENT_EXEC, 7, 7)
        + _fork(1, 8, 8)
        + _event(uid, 10, 10)
        + _event(PROC_EVENT_EXIT, 9, 9)
    )
    assert changed_pids(datagram) == {7, 8, 9}  # the new process, not its parent
    assert changed_pids(datagram[:-10]) == {7, 8}  # a truncated last message is skipped
    assert changed_pids(b"") == set()
    # An exec by a thread takes over its leader's pid; a thread's start or exit
    # changes nothing.
    threads = _event(PROC_EVENT_EXEC, 12, 11) + _event(PROC_EVENT_EXIT, 14, 13) + _fork(11, 15, 11)
    assert changed_pids(threads) == {12, 11}


def _quiet_listing(table: ProcessTable) -> bool:
    """Whether a scan answers without listing /proc, in a few tries: this
    machine's daemons may start a process between two scans."""
    for _ in range(20):
        pids(table)
        if not table.last_listed:
            return True
        time.sleep(0.05)
    return False


def test_a_scan_with_no_process_started_since_does_not_list_proc(
    table: ProcessTable, child: Child
) -> None:
    first = pids(table)
    assert table.last_listed
    assert _quiet_listing(table)
    assert pids(table) == first and table.last_reads == 0
    # A thread started and gone changes nothing.
    worker = threading.Thread(target=time.sleep, args=(0.01,))
    worker.start()
    worker.join()
    assert _quiet_listing(table)
    # A process that forks a QEMU-like child without exec: only the fork tells.
    child.exec_now()
    assert child.pid in pids(table)
    _quiet_listing(table)
    child.fork_now()
    deadline = time.monotonic() + 10
    while len([c for c in table.candidates() if c.marker == "node-late"]) < 2:
        assert time.monotonic() < deadline, "the forked child was never found"
        time.sleep(0.01)
    assert table.last_listed


def test_the_table_reads_everything_again_after_the_refresh_interval(
    table: ProcessTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids(table)
    full_scan = table.last_reads
    pids(table)
    assert table.last_reads < full_scan / 2
    monkeypatch.setattr(proctable, "REFRESH_SECONDS", 0.0)
    pids(table)
    assert table.last_reads >= full_scan * 0.8
