"""QEMU processes of this node: which processes count, and how they are read.

Processes come from the real process table, which simulated nodes on one
machine share. A process therefore belongs to a node only when one of these
holds (first match wins, see :func:`in_scope`):

1. its pid is written in one of the node's libvirt pid files
   (``<host root>/run/libvirt/qemu/*.pid``) — how libvirt itself knows it;
2. its environment has ``NOVAOPS_NODE``: it belongs to the node named there and
   to no other (dev-cluster stand-ins are started with it);
3. the host root is not ``/`` and its command line mentions the host root path
   (a stand-in started with paths inside its simulated tree);
4. the host root is ``/`` (production): every QEMU process on the machine is
   this node's.

So node A's stand-in is never node B's orphan: it carries A's marker, A's paths
or sits in A's pid files, and B (a simulated root) claims only by rules 1-3.

A process is QEMU-like when its argv[0] is ``qemu-system-*``/``qemu-kvm`` or it
carries ``-name guest=<name>`` (stand-ins are scripts given that argument).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import psutil

from novaops.executor.hostroot import HostRoot
from novaops.executor.proctable import (
    PROCESS_TABLE,
    ProcessTable,
    read_proc,
)

QEMU_PID_DIR = "/run/libvirt/qemu"
_QEMU_BINARIES = ("qemu-system-", "qemu-kvm")


def guest_name(cmdline: Sequence[str]) -> str | None:
    """The guest name of a QEMU command line (``-name guest=web-1,debug-threads=on``
    or the older ``-name web-1``); None when there is no ``-name``."""
    for i, arg in enumerate(cmdline[:-1]):
        if arg in ("-name", "--name"):
            value = cmdline[i + 1]
            for option in value.split(","):
                if option.startswith("guest="):
                    return option.removeprefix("guest=")
            first = value.split(",", 1)[0]
            return first if "=" not in first else None
    return None


def is_qemu_like(cmdline: Sequence[str]) -> bool:
    """A QEMU binary, or anything started with ``-name guest=<name>`` (a stand-in)."""
    if not cmdline:
        return False
    binary = cmdline[0].rstrip("/").rpartition("/")[2]  # PurePosixPath(...).name, cheaper
    if binary.startswith(_QEMU_BINARIES):
        return True
    return any(
        arg in ("-name", "--name") and nxt.startswith("guest=")
        for arg, nxt in itertools.pairwise(cmdline)
    )


def parse_pid_file(text: str) -> int | None:
    """The pid in a pid file (first token); None when it holds no positive integer."""
    token = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    return int(token) if token.isdigit() and int(token) > 0 else None


@dataclass(frozen=True)
class ProcessScope:
    """Which processes of the shared process table belong to this node."""

    node: str
    host_root: str
    system_root: bool

    @staticmethod
    def for_node(node: str, root: HostRoot) -> ProcessScope:
        return ProcessScope(node=node, host_root=str(root.path), system_root=root.is_system_root)


def in_scope(
    scope: ProcessScope,
    pid: int,
    cmdline: Sequence[str],
    node_marker: str | None,
    pid_file_pids: Collection[int],
) -> bool:
    """Whether the process belongs to scope's node (rules in the module docstring)."""
    if pid in pid_file_pids:
        return True
    if node_marker:
        return node_marker == scope.node
    if not scope.system_root:
        # In some argument; the root holds no NUL, so no match spans two of them.
        return scope.host_root in "\0".join(cmdline)
    return True


@dataclass(frozen=True)
class QemuProcess:
    """A QEMU-like process of this node as seen in one scan."""

    pid: int
    guest: str
    status: str
    cmdline: str


def read_pid_files(root: HostRoot, folder: str = QEMU_PID_DIR) -> dict[str, int | None]:
    """Pid file stem -> pid, for every ``*.pid`` in a host folder (None if unparsable)."""
    pids: dict[str, int | None] = {}
    try:
        names = root.list_dir(folder)
    except OSError:
        return pids
    for name in names:
        if not name.endswith(".pid"):
            continue
        try:
            pids[name.removesuffix(".pid")] = parse_pid_file(root.read_text(f"{folder}/{name}"))
        except OSError:
            pids[name.removesuffix(".pid")] = None
    return pids


def split_cmdline(raw: bytes) -> list[str]:
    """argv from /proc/<pid>/cmdline, as psutil reads it: NUL-separated, or
    space-separated when a process rewrote its title into one string."""
    text = raw.decode(errors="replace")
    if text.endswith("\0"):
        text = text[:-1]
    if not text:
        return []
    if "\0" not in text and " " in text:
        return text.split(" ")
    return text.split("\0")


# /proc/<pid>/stat state letters -> psutil's status names.
_STATE_NAMES = {
    "R": psutil.STATUS_RUNNING,
    "S": psutil.STATUS_SLEEPING,
    "D": psutil.STATUS_DISK_SLEEP,
    "Z": psutil.STATUS_ZOMBIE,
    "T": psutil.STATUS_STOPPED,
    "t": psutil.STATUS_TRACING_STOP,
    "X": psutil.STATUS_DEAD,
    "I": psutil.STATUS_IDLE,
    "P": psutil.STATUS_PARKED,
    "W": psutil.STATUS_WAKING,
    "K": "wake-kill",
}


def parse_stat_state(stat: bytes) -> str:
    """psutil's status name from a /proc/<pid>/stat line ("" when unreadable).

    The state letter follows the command name, which is in parentheses and may
    itself contain spaces and parentheses: hence the last ")".
    """
    _, paren, rest = stat.rpartition(b")")
    fields = rest.split() if paren else []
    if not fields:
        return ""
    letter = fields[0].decode(errors="replace")
    return str(_STATE_NAMES.get(letter, letter))


def _status(pid: int) -> str:
    try:
        return parse_stat_state(read_proc(pid, "stat"))
    except OSError:
        return ""


def _may_be_in_scope(
    scope: ProcessScope, root_bytes: bytes, raw_cmdline: bytes, marker: str | None
) -> bool:
    """False only for a process :func:`in_scope` rejects (pid files aside), decided
    on the raw command line without parsing it: on a machine of simulated nodes,
    most QEMU-like processes are other nodes' stand-ins."""
    if marker:
        return marker == scope.node
    return scope.system_root or root_bytes in raw_cmdline


def scan_qemu_processes(
    scope: ProcessScope, pid_file_pids: Iterable[int], table: ProcessTable = PROCESS_TABLE
) -> list[QemuProcess]:
    """Every QEMU-like process in scope, sorted by pid (blocking).

    The command lines come from the process table (:mod:`novaops.executor.proctable`:
    each read once while the kernel reports process events, otherwise a full /proc
    scan); only this node's are parsed, and only their status is read each time.
    """
    own_pids = set(pid_file_pids)
    root_bytes = os.fsencode(scope.host_root)
    found = []
    for candidate in table.candidates():
        pid, raw = candidate.pid, candidate.cmdline
        # A pid in the node's pid files is its own whatever the environment says.
        own = pid in own_pids
        marker = None if own else candidate.marker
        if not own and not _may_be_in_scope(scope, root_bytes, raw, marker):
            continue  # another node's, told from bytes (simulated nodes share /proc)
        cmdline = split_cmdline(raw)
        if not is_qemu_like(cmdline) or not in_scope(scope, pid, cmdline, marker, own_pids):
            continue
        status = _status(pid)
        if not status:
            continue  # exited while we looked
        found.append(
            QemuProcess(
                pid=pid,
                guest=guest_name(cmdline) or "",
                status=status,
                cmdline=" ".join(cmdline)[:200],
            )
        )
    return sorted(found, key=lambda p: p.pid)


def pid_alive(pid: int) -> bool:
    """Whether pid names a live (non-zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def live_pids(pids: Iterable[int]) -> Mapping[int, bool]:
    """pid -> alive, for each pid."""
    return {pid: pid_alive(pid) for pid in pids}
