"""Starting, checking and stopping the dev cluster's processes.

A process counts as ours only while its pid exists with the start time we
recorded and it is not a zombie. Processes started here lead their own session
and process group, so stopping one signals the group: a child that the process
started goes too, and a child that ignores SIGTERM gets SIGKILL after the
timeout. Nothing here signals a pid whose identity it has not just checked.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from novaops.devcluster.errors import ProcessStartError
from novaops.devcluster.ports import accepts_connections
from novaops.devcluster.state import ProcessRecord, ProcessRole

log = logging.getLogger(__name__)

# psutil derives start times from clock ticks since boot (1/100 s): allow for rounding.
_START_TIME_TOLERANCE = 0.1
_POLL_INTERVAL = 0.05
# After SIGKILL the kernel needs a moment; a process that outlives this is in
# uninterruptible sleep and is reported as such.
_KILL_GRACE = 5.0
LOG_TAIL_LINES = 12

# Popen objects of processes started by this Python process, by pid. Kept so that
# they are never garbage-collected while running (Popen warns then) and so that
# their exit status is collected here, not left as a zombie.
_spawned: dict[int, subprocess.Popen[bytes]] = {}


class StopOutcome(enum.StrEnum):
    NOT_RUNNING = "not-running"  # already gone before down
    TERMINATED = "terminated"  # exited after SIGTERM
    KILLED = "killed"  # needed SIGKILL
    SURVIVED = "survived"  # still there after SIGKILL (uninterruptible sleep)


@dataclass(frozen=True)
class ProcessStatus:
    """What ``status`` and ``down`` report for one recorded process."""

    role: ProcessRole
    name: str
    pid: int
    address: str
    running: bool
    log: Path | None = None
    stop: StopOutcome | None = None

    @staticmethod
    def of(rec: ProcessRecord, running: bool, stop: StopOutcome | None = None) -> ProcessStatus:
        return ProcessStatus(rec.role, rec.name, rec.pid, rec.address, running, rec.log, stop)


# -- identity ------------------------------------------------------------------------------


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22).

    Exact and immune to wall-clock steps, unlike a start time in epoch seconds,
    which is derived from a boot time that moves when the clock is adjusted.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold spaces.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _same_start(proc: psutil.Process, rec: ProcessRecord) -> bool:
    if rec.start_ticks is not None:
        return start_ticks(proc.pid) == rec.start_ticks
    try:
        return abs(proc.create_time() - rec.create_time) <= _START_TIME_TOLERANCE
    except psutil.Error:
        return False


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find_process(rec: ProcessRecord) -> psutil.Process | None:
    """The live process rec names, or None when it is gone, a zombie, or its pid
    now belongs to another process."""
    try:
        proc = psutil.Process(rec.pid)
    except psutil.Error:
        return None
    if not _same_start(proc, rec) or not _alive(proc):
        return None
    return proc


def is_running(rec: ProcessRecord) -> bool:
    return find_process(rec) is not None


def group_members(rec: ProcessRecord) -> list[psutil.Process]:
    """Live processes of rec: the process itself and, when it leads its own group,
    every process still in that group (also after the leader exited).

    The kernel never hands out a pid that is still some group's id, so when the
    recorded pid now belongs to another process, our group is gone and the group
    of that id is someone else's. Members must also have started no earlier than
    the leader."""
    leader = find_process(rec)
    if not rec.own_group:
        return [] if leader is None else [leader]
    if leader is None and psutil.pid_exists(rec.pid):
        try:
            if psutil.Process(rec.pid).status() != psutil.STATUS_ZOMBIE:
                return []  # the pid was reused: that group is not ours
        except psutil.Error:
            pass
    members = [] if leader is None else [leader]
    for proc in psutil.process_iter():
        if proc.pid == rec.pid:
            continue
        try:
            if os.getpgid(proc.pid) != rec.pid:
                continue
        except OSError:
            continue
        if _alive(proc) and _started_since(proc, rec):
            members.append(proc)
    return members


def _started_since(proc: psutil.Process, rec: ProcessRecord) -> bool:
    if rec.start_ticks is not None:
        ticks = start_ticks(proc.pid)
        return ticks is not None and ticks >= rec.start_ticks
    try:
        return proc.create_time() >= rec.create_time - _START_TIME_TOLERANCE
    except psutil.Error:
        return False


# -- start -----------------------------------------------------------------------------------


def spawn(
    role: ProcessRole,
    name: str,
    argv: Sequence[str],
    *,
    address: str,
    log_path: Path,
    cwd: Path,
    config: Path | None = None,
    env: dict[str, str] | None = None,
) -> ProcessRecord:
    """Start argv detached (own session), stdin from /dev/null, stdout and stderr
    appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_fh:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    _spawned[popen.pid] = popen
    try:
        create_time = psutil.Process(popen.pid).create_time()
    except psutil.Error:
        create_time = 0.0
    # None only if it died at once; then 0 ticks matches nothing: "not running".
    ticks = start_ticks(popen.pid) or 0
    log.info("started %s %s (pid %d) on %s", role.value, name, popen.pid, address)
    return ProcessRecord(
        role=role,
        name=name,
        pid=popen.pid,
        create_time=create_time,
        start_ticks=ticks,
        address=address,
        own_group=True,
        config=config,
        log=log_path,
    )


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> list[str]:
    if path is None:
        return []
    try:
        with path.open("r", errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except OSError:
        return []


def _exit_code(rec: ProcessRecord) -> int | None:
    popen = _spawned.get(rec.pid)
    return None if popen is None else popen.poll()


def wait_listening(rec: ProcessRecord, *, deadline: float) -> None:
    """Return once rec's address accepts TCP connections; ProcessStartError when the
    process exits first or the deadline (a time.monotonic() value) passes."""
    while True:
        if accepts_connections(rec.address):
            return
        if not is_running(rec):
            code = _exit_code(rec)
            how = "exited" if code is None else f"exited with code {code}"
            raise ProcessStartError(_start_failure(rec, f"{how} before listening"))
        if time.monotonic() >= deadline:
            raise ProcessStartError(_start_failure(rec, "did not start listening in time"))
        time.sleep(_POLL_INTERVAL * 2)


def _start_failure(rec: ProcessRecord, what: str) -> str:
    lines = [f"{rec.role.value} {rec.name} (pid {rec.pid}) {what} on {rec.address}"]
    tail = log_tail(rec.log)
    if tail:
        lines.append(f"last lines of {rec.log}:")
        lines += [f"  {line}" for line in tail]
    else:
        lines.append(f"its log {rec.log} is empty")
    return "\n".join(lines)


# -- stop ------------------------------------------------------------------------------------


def _signal(rec: ProcessRecord, members: list[psutil.Process], sig: signal.Signals) -> None:
    if rec.own_group and any(p.pid == rec.pid for p in members):
        # The leader is alive and verified, so the group id is ours: one killpg also
        # reaches children forked between our listing and the signal.
        try:
            os.killpg(rec.pid, sig)
            return
        except ProcessLookupError:
            pass
    for proc in members:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)  # psutil re-checks the pid's identity first


def spawned_processes() -> dict[int, subprocess.Popen[bytes]]:
    """The Popen objects of processes this Python process started, by pid."""
    return _spawned


def _reap(rec: ProcessRecord) -> None:
    """Collect the exit status of rec's process if this Python process started it.
    A Popen is dropped only once it has exited (its pid may now be recorded under
    another name, e.g. a recycled-pid record, while the process still runs)."""
    popen = _spawned.get(rec.pid)
    if popen is not None and popen.poll() is not None:
        # poll() also notes an exit status that psutil.wait_procs already collected.
        del _spawned[rec.pid]


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until procs exit (reaping those that are our children); the survivors."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        _, alive = psutil.wait_procs(alive, timeout=min(_POLL_INTERVAL * 4, timeout))
        alive = [p for p in alive if _alive(p)]
        if time.monotonic() >= deadline:
            break
    return alive


def stop_group(records: Sequence[ProcessRecord], timeout: float) -> dict[str, StopOutcome]:
    """SIGTERM every process of records (and their groups) at once, wait up to
    timeout for all of them, SIGKILL what is left, and reap."""
    outcomes: dict[str, StopOutcome] = {}
    members: dict[str, list[psutil.Process]] = {}
    for rec in records:
        members[rec.name] = group_members(rec)
        if not members[rec.name]:
            outcomes[rec.name] = StopOutcome.NOT_RUNNING
            continue
        log.info("stopping %s %s (pid %d)", rec.role.value, rec.name, rec.pid)
        _signal(rec, members[rec.name], signal.SIGTERM)
    pending = [p for rec in records for p in members[rec.name]]
    _wait_gone(pending, timeout)
    for rec in records:
        if rec.name in outcomes:
            _reap(rec)
            continue
        # Re-list: a member may have forked after the first listing.
        left = group_members(rec)
        if not left:
            outcomes[rec.name] = StopOutcome.TERMINATED
            _reap(rec)
            continue
        log.warning(
            "%s %s: %d process(es) ignored SIGTERM for %.1fs; sending SIGKILL",
            rec.role.value,
            rec.name,
            len(left),
            timeout,
        )
        deadline = time.monotonic() + _KILL_GRACE
        while left and time.monotonic() < deadline:
            _signal(rec, left, signal.SIGKILL)
            _wait_gone(left, 0.5)
            left = group_members(rec)
        outcomes[rec.name] = StopOutcome.SURVIVED if left else StopOutcome.KILLED
        _reap(rec)
    return outcomes


def send_signal(rec: ProcessRecord, sig: signal.Signals, *, wait: float = 5.0) -> bool:
    """Send sig to rec's process alone (not its group), as ``kill -SIG pid`` would.
    For SIGKILL, wait until it is gone and reap it. False when it was not running."""
    proc = find_process(rec)
    if proc is None:
        return False
    try:
        proc.send_signal(sig)
    except psutil.Error:
        return False
    if sig is signal.SIGKILL:
        _wait_gone([proc], wait)
        _reap(rec)
    return True
