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
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Files smaller than this are redacted in the builder's process: a worker's
# round trip costs more than it saves.
PARALLEL_MIN_BYTES = 4 * 1024 * 1024
WORKERS = 2
SPOOL_PREFIX = "redact-"


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


def redact_file(path: str, offset: int, spool_dir: str | None) -> RedactedFile:
    """Worker side: path from offset, redacted with default rules, into a spool file."""
    from novaops.executor.redact import Redactor

    redactor = Redactor(scrub=False)
    fd, spool = tempfile.mkstemp(prefix=SPOOL_PREFIX, dir=spool_dir)
    try:
        sink = _HashingSink(fd)
        source_fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(source_fd, "rb") as source:
            source.seek(offset)
            size = redactor.redact_stream(source, sink)  # type: ignore[arg-type]
    except BaseException:
        os.close(fd)
        Path(spool).unlink(missing_ok=True)
        raise
    os.close(fd)
    return RedactedFile(spool, size, sink.hash.hexdigest(), redactor.counts())


class RedactionPool:
    """A lazily started pool of worker processes for one bundle."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    def submit(self, path: str, offset: int, spool_dir: Path | None) -> Future[RedactedFile]:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._executor.submit(
            redact_file, path, offset, str(spool_dir) if spool_dir else None
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


def remove_stale_spools(spool_dir: Path, older_than_seconds: float = 3600.0) -> None:
    """Spool files a killed bundle left behind (older than any bundle in progress)."""
    import time

    cutoff = time.time() - older_than_seconds
    for path in spool_dir.glob(SPOOL_PREFIX + "*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            continue
