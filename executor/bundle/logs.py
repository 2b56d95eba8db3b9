"""Log selection: the ``since`` window and the per-file cap, then the log collectors.

What callers may rely on:

* A file larger than the cap contributes only its newest ``cap`` bytes, cut at
  a line boundary (mid-line only when no line starts within them); the
  metadata entry says ``truncated``.
* With ``since``, a file keeps the lines from the first line whose timestamp is
  inside the window to its end (continuation lines without a timestamp, such
  as tracebacks, stay with their line). Timestamps recognised: ISO-8601
  (``2024-05-01T12:00:00Z``, libvirt's ``2024-05-01 12:00:00.123+0000``, nova's
  ``2024-05-01 12:00:00.123``; no zone means UTC), syslog ``May  1 12:00:00``
  (the year is inferred) and Docker json-file ``"time":"..."``. A file without
  any parseable timestamp is kept whole if its mtime is inside the window and
  left out otherwise.
* A failing ``journalctl`` (non-zero exit, timeout, not runnable) never costs
  the plain system log files of the same collector: they are still collected,
  then the journal's error is raised (the collector is recorded ``failed``
  with it, and keeps its members). What journalctl wrote before failing is
  kept too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

from novaops.executor.hostroot import HostRoot

if TYPE_CHECKING:
    from novaops.executor.bundle.builder import CollectorContext, Member

DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
JOURNALCTL_TIMEOUT_SECONDS = 120.0
# Only the head of a line is searched for its timestamp.
_HEAD = 160
_ISO_RE = re.compile(
    rb"^\s*\[?(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,]\d+)?\s*(Z|[+-]\d\d:?\d\d)?"
)
_DOCKER_TIME_RE = re.compile(rb'"time":\s*"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)')
_SYSLOG_RE = re.compile(rb"^([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)\b")
_MONTHS = {
    m.encode(): i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def parse_line_time(line: bytes, now: datetime) -> datetime | None:
    """The timestamp a log line starts with (UTC), or None."""
    head = line[:_HEAD]
    m = _ISO_RE.match(head) or _DOCKER_TIME_RE.search(head)
    try:
        if m:
            year, month, day, hour, minute, second = (int(x) for x in m.groups()[:6])
            stamp = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
            zone = m.group(7) if m.re is _ISO_RE else None
            if zone and zone != b"Z":
                sign = 1 if zone[:1] == b"+" else -1
                digits = zone[1:].replace(b":", b"")
                stamp -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            return stamp
        s = _SYSLOG_RE.match(head)
        if s:
            month_number = _MONTHS.get(s.group(1))
            if month_number is None:
                return None
            day, hour, minute, second = (int(x) for x in s.groups()[1:])
            stamp = datetime(now.year, month_number, day, hour, minute, second, tzinfo=UTC)
            # Syslog has no year: a date "after" now belongs to last year.
            if stamp > now + timedelta(days=1):
                stamp = stamp.replace(year=now.year - 1)
            return stamp
    except ValueError:
        return None
    return None


def _window_start(
    fh: BinaryIO, start: int, since: datetime | None, now: datetime
) -> tuple[int | None, bool]:
    """(offset of the first line inside the window or None, whether any line had a time)."""
    if since is None:
        return start, False
    fh.seek(start)
    offset = start
    seen_time = False
    while True:
        line = fh.readline(1024 * 1024)
        if not line:
            return None, seen_time
        stamp = parse_line_time(line, now)
        if stamp is not None:
            seen_time = True
            if stamp >= since:
                return offset, True
        offset += len(line)


def _tail_start(fh: BinaryIO, size: int, cap: int) -> int:
    """Offset of the first whole line within the last cap bytes.

    When no line starts within the last cap bytes (one line longer than the
    cap), they are kept as they are, cut mid-line, rather than nothing.
    """
    if size <= cap:
        return 0
    start = size - cap
    fh.seek(start - 1)
    if fh.read(1) == b"\n":
        return start  # the cut falls exactly on a line start
    partial = fh.readline(cap)
    if not partial.endswith(b"\n") or start + len(partial) >= size:
        return start
    return start + len(partial)


def open_host_file(root: HostRoot, host_path: str | PurePosixPath) -> BinaryIO:
    """A host file opened for reading through the root, the way HostRoot reads."""
    real = root.resolve(host_path)
    # Named by its real path, so a worker process can open it too (parallel.py).
    return open(real, "rb", opener=_open_nofollow)


def _open_nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def log_member(ctx: CollectorContext, name: str, fh: BinaryIO, source: str) -> Member | None:
    """A redacted member of the window/cap-selected part of an open log; None if empty."""
    stat = os.fstat(fh.fileno())
    start = _tail_start(fh, stat.st_size, ctx.max_file_bytes)
    since = ctx.since_time
    begin, seen_time = _window_start(fh, start, since, ctx.now)
    if since is not None and not seen_time:
        # No timestamps at all in the kept part: decide by modification time.
        inside = datetime.fromtimestamp(stat.st_mtime, UTC) >= since
        begin = start if inside else None
    if begin is None:
        return None
    fh.seek(begin)
    return ctx.redacted_member(name, fh, source=source, mtime=stat.st_mtime, truncated=start > 0)


# (archive folder, host glob) of the plain log files each collector takes.
LIBVIRT_LOGS = (
    ("logs/libvirt", "/var/log/libvirt/libvirtd.log"),
    ("logs/libvirt", "/var/log/libvirt/virtqemud.log"),
)
QEMU_LOGS = (
    ("logs/libvirt/qemu", "/var/log/libvirt/qemu/*.log"),
    ("logs/libvirt/lxc", "/var/log/libvirt/lxc/*.log"),
)
CONTAINER_LOGS = (
    ("logs/containers", "/var/log/containers/*.log"),
    ("logs/containers/docker", "/var/lib/docker/containers/*/*-json.log"),
)
SERVICE_LOGS = (
    ("logs/services/nova", "/var/log/nova/*.log"),
    ("logs/services/openvswitch", "/var/log/openvswitch/*.log"),
)
SYSTEM_LOGS = tuple(
    ("logs/system", f"/var/log/{name}")
    for name in ("syslog", "messages", "auth.log", "secure", "kern.log", "daemon.log")
)
ROTATED_LOGS = (
    ("logs/rotated", "/var/log/libvirt/libvirtd.log.1"),
    ("logs/rotated", "/var/log/syslog.1"),
    ("logs/rotated", "/var/log/messages.1"),
    ("logs/rotated/qemu", "/var/log/libvirt/qemu/*.log.1"),
)


def host_log_members(
    ctx: CollectorContext, sources: tuple[tuple[str, str], ...]
) -> Iterator[Member]:
    """Members for every host file matching sources; a source matching nothing adds nothing."""
    for folder, pattern in sources:
        for host_path in ctx.root.glob(pattern):
            if not ctx.root.resolve(host_path).is_file():
                continue
            name = f"{folder}/{host_path.name}"
            if "docker" in folder:
                # Docker names every container's file <id>-json.log; keep the id.
                name = f"{folder}/{host_path.parent.name[:12]}.log"
            with open_host_file(ctx.root, host_path) as fh:
                member = log_member(ctx, name, fh, str(host_path))
            if member is not None:
                yield member


def executor_log_members(ctx: CollectorContext, path: Path | None) -> Iterator[Member]:
    """The executor's own log (a path in the executor's filesystem, not the host root)."""
    if path is None:
        ctx.skip("no executor log file configured")
    with path.open("rb") as fh:
        member = log_member(ctx, "logs/executor.log", fh, str(path))
    if member is not None:
        yield member


def journal_available(root: HostRoot) -> bool:
    return root.is_system_root and shutil.which("journalctl") is not None


class JournalError(RuntimeError):
    """journalctl failed; the message is one line (exit status and its first error)."""


def system_log_members(ctx: CollectorContext) -> Iterator[Member]:
    """The journal (when there is one) and the plain system log files.

    A journal failure is raised after the plain files were yielded.
    """
    failure: JournalError | None = None
    if journal_available(ctx.root):
        try:
            yield from _journal_members(ctx)
        except JournalError as exc:
            failure = exc
    yield from host_log_members(ctx, SYSTEM_LOGS)
    if failure is not None:
        raise failure


def journal_members(ctx: CollectorContext) -> Iterator[Member]:
    """``journalctl --since`` output, newest ``cap`` bytes, redacted.

    For a caller that goes on to the plain system files only when this
    returns: on failure the plain files (:data:`SYSTEM_LOGS`) are yielded here,
    then :class:`JournalError` is raised. New callers use
    :func:`system_log_members`.
    """
    try:
        yield from _journal_members(ctx)
    except JournalError:
        yield from host_log_members(ctx, SYSTEM_LOGS)
        raise


def journal_command(since: datetime | None) -> list[str]:
    """The journalctl command line for a window starting at since (None: everything)."""
    command = ["journalctl", "--no-pager", "--utc", "-o", "short-iso", "-q"]
    if since is not None:
        command.append(f"--since=@{int(since.timestamp())}")
    return command


def _journal_members(ctx: CollectorContext) -> Iterator[Member]:
    with (
        tempfile.TemporaryFile(dir=ctx.spool_dir) as raw,
        tempfile.TemporaryFile(dir=ctx.spool_dir) as errors,
    ):
        # The journal may be large: it lands on disk, then only its tail is redacted.
        failure: str | None = None
        try:
            done = subprocess.run(
                journal_command(ctx.since_time),
                stdout=raw,
                stderr=errors,
                timeout=JOURNALCTL_TIMEOUT_SECONDS,
                check=False,
            )
            if done.returncode != 0:
                errors.seek(0)
                said = " ".join(errors.read(2000).decode("utf-8", "replace").split())
                failure = f"journalctl exited with status {done.returncode}" + (
                    f": {said[:300]}" if said else ""
                )
        except subprocess.TimeoutExpired:
            failure = f"journalctl did not finish within {JOURNALCTL_TIMEOUT_SECONDS:g}s"
        except OSError as exc:
            failure = f"journalctl could not be run: {exc.strerror or exc}"
        size = raw.seek(0, os.SEEK_END)
        # An empty journal is still a member (it was read); a failed run with no output is not.
        if size or failure is None:
            raw.seek(_tail_start(raw, size, ctx.max_file_bytes))
            yield ctx.redacted_member(
                "logs/system/journal.log",
                raw,
                source="journalctl",
                mtime=ctx.now.timestamp(),
                truncated=size > ctx.max_file_bytes,
            )
        if failure is not None:
            raise JournalError(failure)
