"""The QEMU-like processes of the process table, each command line read once.

Finding a node's QEMU processes means looking at every process on the machine:
``/proc/<pid>/cmdline`` for each, and ``/proc/<pid>/environ`` for the QEMU-like
ones. That is three system calls per process on every scan (measured: 5.6 ms of
CPU for 448 processes, the larger part of a ``diag host``).

A command line changes only when its process calls exec, and a pid names
another process only after an exit. The kernel's process events connector
(netlink ``NETLINK_CONNECTOR``, group ``CN_IDX_PROC``) reports both. While
subscribed, :class:`ProcessTable` keeps what it read of each process and, before
every scan, drops the processes that have called exec or exited since. A scan
then reads only pids it has not seen, and costs one listing of ``/proc``. When
no process was started, called exec or exited since the last listing (threads
do not count), the listing would find what it found then: the scan answers that
without listing ``/proc`` again (measured: the listing was ~0.26 ms of CPU for
~70 processes, almost half of the orphan check).

Dropped events are handled too. When the socket overflows (``ENOBUFS``), the
table forgets everything it kept. Each entry is also tied to the inode that
``getdents`` reports for ``/proc/<pid>``, so a pid that was reused while an
event was in flight is read again. The kernel may also drop an event without an
overflow (no memory for it), so everything kept is read again every
:data:`REFRESH_SECONDS` all the same.

Without the connector (no ``CAP_NET_ADMIN``, a network namespace other than the
host's, a kernel without ``CONFIG_PROC_EVENTS``), every scan reads every
process, as it did before the table existed. A subscription from another pid or
user namespace is accepted by the kernel but gets no events, so subscribing
starts a short process and waits for one of its events before trusting the socket.

Known limit: a process that rewrites its own argv in place (``setproctitle``)
without calling exec keeps, here, the command line it had when first read.
QEMU never does that, and its guest name is fixed at start.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
NLMSG_DONE = 3
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_EVENT_PIDS = struct.Struct("=ii")  # exec: pid, tgid; exit: pid, tgid (first two fields)
_FORK_PIDS = struct.Struct("=iiii")  # parent pid, parent tgid, child pid, child tgid
_EVENT_AT = _NLMSGHDR.size + _CN_MSG.size
_PIDS_AT = _EVENT_AT + _EVENT_HEAD.size

# Room for a few thousand events between two scans (the kernel doubles it).
EVENTS_BUFFER_BYTES = 1 << 20
_PROC_READ = 65536
# How long subscribe() waits for the events of the process it starts to try them.
_CONFIRM_SECONDS = 2.0
_TRUE_PATHS = ("/usr/bin/true", "/bin/true")
# Everything kept is read again this often anyway: the kernel may drop an event
# without an overflow (no memory for it), and a miss must not last.
REFRESH_SECONDS = 60.0
NODE_MARKER_ENV = "NOVAOPS_NODE"
_MARKER_PREFIX = NODE_MARKER_ENV.encode() + b"="


def listen_message() -> bytes:
    """The netlink message subscribing a socket to process events."""
    op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, 0) + cn


def changed_pids(datagram: bytes) -> set[int]:
    """The pids an events datagram says were started, called exec or exited. An
    exec names pid and tgid both (an exec by a thread other than the leader takes
    over the leader's pid); a fork and an exit count only for a process (pid ==
    tgid): QEMU's worker threads come and go without changing its command line.
    Events of any other kind, and truncated messages, are skipped."""
    pids: set[int] = set()
    offset = 0
    while offset + _NLMSGHDR.size <= len(datagram):
        length = _NLMSGHDR.unpack_from(datagram, offset)[0]
        if length < _NLMSGHDR.size or offset + length > len(datagram):
            break
        if length >= _PIDS_AT + _EVENT_PIDS.size:
            what = _EVENT_HEAD.unpack_from(datagram, offset + _EVENT_AT)[0]
            if what == PROC_EVENT_EXEC:
                pids.update(_EVENT_PIDS.unpack_from(datagram, offset + _PIDS_AT))
            elif what == PROC_EVENT_EXIT:
                pid, tgid = _EVENT_PIDS.unpack_from(datagram, offset + _PIDS_AT)
                if pid == tgid:
                    pids.add(pid)
            elif what == PROC_EVENT_FORK and length >= _PIDS_AT + _FORK_PIDS.size:
                _parent, _parent_tgid, pid, tgid = _FORK_PIDS.unpack_from(
                    datagram, offset + _PIDS_AT
                )
                if pid == tgid:
                    pids.add(pid)
        offset += (length + 3) & ~3
    return pids


def open_events(buffer_bytes: int = EVENTS_BUFFER_BYTES) -> socket.socket:
    """A non-blocking socket subscribed to process events; OSError if refused, or
    if the events of a process started to try it do not arrive."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK, NETLINK_CONNECTOR
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
        sock.bind((0, CN_IDX_PROC))
        sock.send(listen_message())
        _confirm(sock)
    except OSError:
        sock.close()
        raise
    return sock


def _confirm(sock: socket.socket) -> None:
    """Start a short process and wait for its exit event. The kernel accepts a
    subscription from a pid or user namespace other than the first and then sends
    nothing; a table trusting that socket would never see an exec."""
    true = next((p for p in _TRUE_PATHS if os.access(p, os.X_OK)), None)
    if true is None:
        raise OSError(errno.ENOENT, "no true(1) to try the process events with")
    pid = os.posix_spawn(true, [true], {})
    with contextlib.suppress(ChildProcessError):  # reaped by someone else: fine
        os.waitpid(pid, 0)
    deadline = time.monotonic() + _CONFIRM_SECONDS
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while (left := deadline - time.monotonic()) > 0:
        if not poller.poll(left * 1000):
            break
        try:
            datagram = sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                return  # more events arrived than fit: they do arrive
            raise
        if pid in changed_pids(datagram):
            return
    raise OSError(errno.ETIMEDOUT, "no process events arrived (another pid or user namespace?)")


def read_proc(pid: int, name: str) -> bytes:
    """The whole of ``/proc/<pid>/<name>``; OSError when the process is gone."""
    # Hot path: a bare descriptor costs half of what a buffered file object does.
    # procfs fills a read as far as the file goes (cmdline, environ and stat all
    # loop over their pages), so a short first read is the whole file.
    fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunk = os.read(fd, _PROC_READ)
        if len(chunk) < _PROC_READ:
            return chunk
        chunks = [chunk]
        while chunk := os.read(fd, _PROC_READ):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def node_marker_of(environ: bytes) -> str | None:
    """The value of the first ``NOVAOPS_NODE=`` entry of a NUL-separated environment
    (/proc/<pid>/environ), or None. Found without splitting the whole environment:
    the scan reads every QEMU-like process's, other nodes' stand-ins included."""
    if environ.startswith(_MARKER_PREFIX):
        start = len(_MARKER_PREFIX)
    else:
        found = environ.find(b"\0" + _MARKER_PREFIX)
        if found < 0:
            return None
        start = found + 1 + len(_MARKER_PREFIX)
    end = environ.find(b"\0", start)
    return environ[start : None if end < 0 else end].decode(errors="replace")


def node_marker(pid: int) -> str | None:
    """The ``NOVAOPS_NODE`` of a process's environment; None if absent or unreadable."""
    try:
        return node_marker_of(read_proc(pid, "environ"))
    except OSError:
        return None


def maybe_qemu(raw_cmdline: bytes) -> bool:
    """A cheap byte test that every QEMU-like command line passes (see
    :func:`novaops.executor.checks.qemu_processes.is_qemu_like`)."""
    return b"qemu" in raw_cmdline or b"guest=" in raw_cmdline


@dataclass(frozen=True)
class Candidate:
    """A process whose command line may be QEMU's, as first read."""

    pid: int
    cmdline: bytes  # raw /proc/<pid>/cmdline
    marker: str | None  # NOVAOPS_NODE of its environment


@dataclass(frozen=True)
class _Seen:
    inode: int
    candidate: Candidate | None  # None: not QEMU-like


class ProcessTable:
    """The QEMU-like processes of this machine (see the module docstring).

    One per executor process (:data:`PROCESS_TABLE`), shared by the nodes a
    process simulates; scans hold a lock, so threads may scan at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, _Seen] = {}
        self._events: socket.socket | None = None
        self._owner = 0  # the pid that subscribed: a forked child must not trust it
        self.overflows = 0  # times events were lost and the table started over
        self.last_reads = 0  # command lines the last scan read (the rest were kept)
        self.last_listed = False  # whether the last scan listed /proc (see _found)
        # What the last listing found, while no process has started, called exec
        # or exited since (None once one has, or when not subscribed).
        self._found: list[Candidate] | None = None
        self._refreshed = 0.0  # monotonic: when everything kept was last dropped

    @property
    def subscribed(self) -> bool:
        return self._events is not None and self._owner == os.getpid()

    def subscribe(self, buffer_bytes: int = EVENTS_BUFFER_BYTES) -> str | None:
        """Listen to process events; None when listening, else why not. Call it from
        a thread in the host's network namespace (the connector lives there only)."""
        with self._lock:
            if self.subscribed:
                return None
            try:
                sock = open_events(buffer_bytes)
            except OSError as exc:
                return exc.strerror or str(exc)
            self._events, self._owner = sock, os.getpid()
            self._seen, self._found = {}, None
        return None

    def close(self) -> None:
        with self._lock:
            if self._events is not None and self._owner == os.getpid():
                self._events.close()
            self._events = None
            self._seen, self._found = {}, None

    def candidates(self) -> list[Candidate]:
        """Every live process whose command line may be QEMU's, in /proc order
        (blocking: at most one listing of /proc, plus a read of each process not
        kept)."""
        me = os.getpid()
        with self._lock:
            keep = self._drain()
            if keep and self._found is not None:
                self.last_reads, self.last_listed = 0, False
                return list(self._found)
            seen: dict[int, _Seen] = {}
            found = []
            reads = 0
            for entry in os.scandir("/proc"):
                name = entry.name
                if not name.isdigit():
                    continue
                pid = int(name)
                inode = entry.inode()
                known = self._seen.get(pid)
                if known is None or known.inode != inode:
                    reads += 1
                    try:
                        raw = read_proc(pid, "cmdline")
                    except OSError:  # gone since the listing, or not ours to read
                        continue
                    candidate = Candidate(pid, raw, node_marker(pid)) if maybe_qemu(raw) else None
                    known = _Seen(inode, candidate)
                seen[pid] = known
                if known.candidate is not None and pid != me:
                    found.append(known.candidate)
            self._seen = seen if keep else {}
            self._found = list(found) if keep else None
            self.last_reads, self.last_listed = reads, True
            return found

    def _drain(self) -> bool:
        """Forget the processes that called exec or exited since the last scan,
        and the last listing once any process started, called exec or exited;
        False when not subscribed (nothing read may be kept)."""
        if not self.subscribed:
            self._seen, self._found = {}, None
            return False
        assert self._events is not None
        now = time.monotonic()
        if now - self._refreshed >= REFRESH_SECONDS:
            # read everything again (REFRESH_SECONDS)
            self._seen, self._found, self._refreshed = {}, None, now
        while True:
            try:
                datagram = self._events.recv(65536)
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # events were lost: start over
                    self.overflows += 1
                    self._seen, self._found = {}, None
                    continue
                log.warning("process events failed (%s): every scan reads every process", exc)
                self._events.close()
                self._events = None
                self._seen, self._found = {}, None
                return False
            changed = changed_pids(datagram)
            if changed:
                self._found = None
            for pid in changed:
                self._seen.pop(pid, None)


PROCESS_TABLE = ProcessTable()
