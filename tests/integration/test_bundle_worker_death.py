"""Redaction workers die with a kill -9'd executor; the next bundle removes its spools.

A child process (standing in for the executor) starts a real
:class:`RedactionPool`: a worker finishes a file whose spool the child never
reads, then blocks reading a fifo the test holds open, mid-file. The test
SIGKILLs the child and waits for the workers to go, then runs the cleanup the
next bundle runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from novaops.executor.bundle.parallel import (
    PARENT_CHECK_SECONDS,
    SPOOL_PREFIX,
    remove_stale_spools,
    spool_prefix,
)

pytestmark = pytest.mark.timeout(120)

_CHILD = """
import sys
from pathlib import Path
from novaops.executor.bundle.parallel import RedactionPool

small, fifo, spool_dir, use_signal = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
pool = RedactionPool(2, parent_death_signal=use_signal == "1")
done = pool.submit(small, 0, spool_dir)
done.result()               # a finished spool nobody will ever read
pool.submit(fifo, 0, spool_dir)  # blocks in the second worker, mid-file
print("ready", flush=True)
sys.stdin.read()            # until killed
"""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _workers(descendants: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for process in descendants:
        try:
            cmdline = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            found.append(process)
    return found


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "growing.log"
    os.mkfifo(path)
    # Held open for writing by the test (O_RDWR does not block on a fifo): the
    # worker reading it never sees an end of file.
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    os.write(fd, b"Mar 10 12:00:00 hv kernel: half a file so far\n" * 100)
    yield path
    os.close(fd)


@pytest.mark.parametrize("use_signal", [True, False], ids=["pdeathsig", "ppid-check"])
def test_workers_die_with_a_killed_owner_and_its_spools_go(
    tmp_path: Path, fifo: Path, use_signal: bool
) -> None:
    small = tmp_path / "small.log"
    small.write_bytes(b"Mar 10 12:00:00 hv sshd[1]: password=hunter22 rejected\n" * 1000)
    spools = tmp_path / "spool"
    spools.mkdir()
    mine = spools / f"{spool_prefix(os.getpid())}inuse"  # a live owner's spool: kept
    mine.write_bytes(b"x")
    unowned = spools / f"{SPOOL_PREFIX}oldstyle"  # no pid, recent: kept (age rule only)
    unowned.write_bytes(b"x")

    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(small), str(fifo), str(spools), str(int(use_signal))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    started: list[psutil.Process] = []
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        # Workers and multiprocessing's resource tracker: all must be gone at the end.
        started = psutil.Process(child.pid).children(recursive=True)
        workers = _workers(started)
        assert workers, "no redaction worker running"

        def owned_spools() -> list[Path]:
            found = sorted(spools.glob(f"{spool_prefix(child.pid)}*"))
            return found if len(found) == 2 else []

        owned = wait_for(owned_spools, 30, "a finished and an unfinished spool")
        # While the owner lives, its spools are in use and stay.
        assert remove_stale_spools(spools) == []

        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        # The workers go: at once with the signal, within a check interval without.
        _, alive = psutil.wait_procs(workers, timeout=10 + 4 * PARENT_CHECK_SECONDS)
        assert alive == [], f"orphan workers: {[p.pid for p in alive]}"
        # The resource tracker ends by itself once its last writer is gone.
        _, alive = psutil.wait_procs(started, timeout=30)
        assert alive == [], f"orphans: {[p.pid for p in alive]}"

        assert sorted(remove_stale_spools(spools)) == owned
        assert sorted(p.name for p in spools.iterdir()) == sorted([mine.name, unowned.name])
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        for process in started:
            if process.is_running():
                process.kill()
        if child.stdout is not None:
            child.stdout.close()
        if child.stdin is not None:
            child.stdin.close()


def test_a_reused_pid_does_not_keep_a_dead_owners_spool(tmp_path: Path) -> None:
    # This process started before the spool was written: it is its owner.
    fresh = tmp_path / f"{spool_prefix(os.getpid())}a"
    fresh.write_bytes(b"x")
    # The same pid on a spool written long before this process started: a
    # previous owner's leftover.
    reused = tmp_path / f"{spool_prefix(os.getpid())}b"
    reused.write_bytes(b"x")
    started = psutil.Process().create_time()
    os.utime(reused, (started - 600, started - 600))
    old = tmp_path / f"{SPOOL_PREFIX}nopid"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert sorted(remove_stale_spools(tmp_path)) == sorted([reused, old])
    assert [p.name for p in tmp_path.iterdir()] == [fresh.name]
