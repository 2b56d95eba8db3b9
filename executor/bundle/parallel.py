"""Redaction of large log files in worker processes, so a node bundle uses two cores.

The builder hands a file (path, offset) to a small process pool and goes on
collecting the next member; the worker redacts it block by block into a spool
file in the spool folder and returns its name, size, sha256 and counts. The
builder frames members in collector order, so the archive is byte-for-byte the
one a single process would build.

Only default-rules bundles use workers: with ``--scrub`` every pseudonym must
come from the one map of the node (collisions are re-derived in order), so
scrubbed bundles are redacted in the builder's own process.

Workers are started with ``spawn`` (never ``fork``: the executor runs gRPC
threads), lazily, at the first file large enough to be worth it, and stopped
when the bundle ends. Memory stays bounded: a worker holds about two blocks.

What callers may rely on when the executor dies (kill -9 included):

* Its workers die with it: each asks the kernel for SIGKILL when its parent
  goes (``prctl(PR_SET_PDEATHSIG)``) and, where that is unavailable, a thread
  in the worker sees its parent change (re-parented to init or a subreaper)
  within :data:`PARENT_CHECK_SECONDS` and exits.
* Spool files carry their owner's pid (``redact-<pid>-*``); the next bundle's
  :func:`remove_stale_spools` removes those whose owner is gone, and any spool
  older than an hour.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Files smaller than this are redacted in the builder's process: a worker's
# round trip costs more than it saves.
PARALLEL_MIN_BYTES = 4 * 1024 * 1024
WORKERS = 2
SPOOL_PREFIX = "redact-"
# How often a worker checks that its parent is still the one that started it
# (the fallback when the parent-death signal cannot be set).
PARENT_CHECK_SECONDS = 0.5
STALE_SPOOL_SECONDS = 3600.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RedactedFile:
    spool: str
    size: int
    sha256: str
    counts: dict[str, int]


class _HashingSink:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        return len(data)


def spool_prefix(owner_pid: int) -> str:
    """The name prefix of the spool files of the bundles run by process owner_pid."""
    return f"{SPOOL_PREFIX}{owner_pid}-"


def redact_file(
    path: str, offset: int, spool_dir: str | None, owner_pid: int | None = None
) -> RedactedFile:
    """Worker side: path from offset, redacted with default rules, into a spool file.

    The spool is named for owner_pid (the process that will read it; the
    worker's parent by default), so a crashed owner's spools can be found.
    """
    from novaops.executor.redact import Redactor

    redactor = Redactor(scrub=False)
    owner = os.getppid() if owner_pid is None else owner_pid
    fd, spool = tempfile.mkstemp(prefix=spool_prefix(owner), dir=spool_dir)
    try:
        sink = _HashingSink(fd)
        source_fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(source_fd, "rb") as source:
            if offset:  # (a pipe cannot seek; it is read from where it is)
                source.seek(offset)
            size = redactor.redact_stream(source, sink)  # type: ignore[arg-type]
    except BaseException:
        os.close(fd)
        Path(spool).unlink(missing_ok=True)
        raise
    os.close(fd)
    return RedactedFile(spool, size, sink.hash.hexdigest(), redactor.counts())


def set_parent_death_signal(signum: int) -> bool:
    """Asks the kernel to send signum to this process when its parent dies (Linux).

    False where that is not available. The kernel sends it when the *thread*
    that started this process ends; the builder's threads (asyncio's default
    executor, or the caller's) live as long as the bundle's pool.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:
            os._exit(1)


def die_with_parent(parent_pid: int, use_signal: bool = True) -> None:
    """Worker initializer: this process ends when parent_pid (its parent) does."""
    if use_signal:
        set_parent_death_signal(signal.SIGKILL)
    # The parent may have died before the signal was armed: we are re-parented.
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(
        target=_watch_parent,
        args=(parent_pid, PARENT_CHECK_SECONDS),
        name="novaops-parent-watch",
        daemon=True,
    ).start()


class RedactionPool:
    """A lazily started pool of worker processes for one bundle.

    parent_death_signal=False leaves only the parent-pid check (for tests).
    """

    def __init__(self, workers: int = WORKERS, *, parent_death_signal: bool = True) -> None:
        self.workers = workers
        self.parent_death_signal = parent_death_signal
        self._executor: ProcessPoolExecutor | None = None

    def submit(self, path: str, offset: int, spool_dir: Path | None) -> Future[RedactedFile]:
        owner = os.getpid()
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with_parent,
                initargs=(owner, self.parent_death_signal),
            )
        return self._executor.submit(
            redact_file, path, offset, str(spool_dir) if spool_dir else None, owner
        )

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def open_spool(result: RedactedFile) -> int:
    """Opens a finished spool file and unlinks it (it lives on as an open file)."""
    fd = os.open(result.spool, os.O_RDONLY | os.O_CLOEXEC)
    Path(result.spool).unlink()
    return fd


def remove_stale_spools(
    spool_dir: Path, older_than_seconds: float = STALE_SPOOL_SECONDS
) -> list[Path]:
    """Removes the spool files a killed bundle left behind; returns them.

    A spool is stale when its owner process is gone (or the pid now belongs to
    a process started after the spool was written), or when it is older than
    older_than_seconds (also for names without an owner pid).
    """
    cutoff = time.time() - older_than_seconds
    removed: list[Path] = []
    for path in spool_dir.glob(SPOOL_PREFIX + "*"):
        try:
            mtime = path.stat().st_mtime
            if mtime < cutoff or not _owner_alive(path.name, mtime):
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def _owner_alive(name: str, spool_mtime: float) -> bool:
    owner, sep, _ = name[len(SPOOL_PREFIX) :].partition("-")
    if not sep or not owner.isdigit():
        return True  # no owner in the name: only the age rule applies
    import psutil

    try:
        process = psutil.Process(int(owner))
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        # A pid reused by a process younger than the spool is not its owner
        # (the slack covers create_time's clock-tick rounding).
        return process.create_time() <= spool_mtime + 2.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
