"""libvirt behind one small interface: the real connection and an in-memory twin.

:class:`LibvirtGateway` is all the executor asks of libvirt. :class:`LibvirtConnection`
implements it on libvirt-python; ``novaops.executor.libvirt_fake.FakeLibvirt``
implements it in memory for unit tests. What callers may rely on:

* Every method is a coroutine that never blocks the event loop: libvirt calls run
  on the connection's own reused daemon threads, each call bounded by ``call_timeout``
  seconds.
* libvirt being unreachable (bad URI, missing file, daemon down, no answer in
  time) raises :class:`LibvirtUnavailable` with a one-line message; callers report
  it as a fact. A missing domain raises :class:`DomainNotFound`.
* The connection is opened lazily and reopened after a connection failure, so a
  libvirtd restart heals without restarting the executor.
* Domain states are libvirt ``virDomainState`` codes; state reasons are already
  symbolic (``VIR_DOMAIN_PAUSED_USER`` -> ``"user"``), see :func:`state_reason_name`.
* ``DomainRecord.uptime_seconds`` is the age of the domain's QEMU process, whose
  pid libvirt keeps in ``<host root>/run/libvirt/qemu/<name>.pid``; 0 for an
  inactive domain, when the connection was given no host root, or when the pid
  file is missing or names no live process.
* Lifecycle events (:class:`LifecycleSource`): libvirt's default event loop is
  registered once per process, before any connection opens, and run on a daemon
  thread; listeners are called on that thread with symbolic names
  (:func:`lifecycle_event_name`) and stay registered across reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import psutil

from novaops.executor.checks.qemu_processes import QEMU_PID_DIR, parse_pid_file
from novaops.executor.hostroot import HostRoot
from novaops.executor.threads import DaemonThreads, ThreadsBusy, on_part_thread

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CALL_TIMEOUT_SECONDS = 5.0
# Calls still running in their threads; beyond this a hung libvirt gets no more
# threads and callers are told at once that it is not answering.
_MAX_CALLS_IN_FLIGHT = 8
# An idle libvirt worker thread ends after this long without a call.
_WORKER_IDLE_SECONDS = 30.0

# libvirt virDomainState codes (stable ABI, include/libvirt/libvirt-domain.h).
NOSTATE, RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = range(8)

# Reason codes per state, in libvirt's numbering (virDomain<State>Reason); the
# name is the symbol's suffix in lower case. Kept here rather than read from the
# libvirt module so the fake and the pure mapping need no libvirt import.
_REASONS: dict[int, tuple[str, ...]] = {
    NOSTATE: ("unknown",),
    RUNNING: (
        "unknown",
        "booted",
        "migrated",
        "restored",
        "from_snapshot",
        "unpaused",
        "migration_canceled",
        "save_canceled",
        "wakeup",
        "crashed",
        "postcopy",
        "postcopy_failed",
    ),
    BLOCKED: ("unknown",),
    PAUSED: (
        "unknown",
        "user",
        "migration",
        "save",
        "dump",
        "ioerror",
        "watchdog",
        "from_snapshot",
        "shutting_down",
        "snapshot",
        "crashed",
        "starting_up",
        "postcopy",
        "postcopy_failed",
        "api_error",
    ),
    SHUTDOWN: ("unknown", "user"),
    SHUTOFF: (
        "unknown",
        "shutdown",
        "destroyed",
        "crashed",
        "migrated",
        "saved",
        "failed",
        "from_snapshot",
        "daemon",
    ),
    CRASHED: ("unknown", "panicked"),
    PMSUSPENDED: ("unknown",),
}


# States in which libvirt holds a QEMU process for the domain (a crashed domain with
# on_crash=preserve keeps its process), so it has an uptime.
ACTIVE_STATES = frozenset({RUNNING, BLOCKED, PAUSED, SHUTDOWN, CRASHED, PMSUSPENDED})

# virDomainEventType codes and, per type, its detail names in libvirt's numbering
# (virDomainEvent<Type>DetailType); names are the symbols' suffixes in lower case.
_LIFECYCLE_EVENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("defined", ("added", "updated", "renamed", "from_snapshot")),
    ("undefined", ("removed", "renamed")),
    ("started", ("booted", "migrated", "restored", "from_snapshot", "wakeup", "recreated")),
    (
        "suspended",
        (
            "paused",
            "migrated",
            "ioerror",
            "watchdog",
            "restored",
            "from_snapshot",
            "api_error",
            "postcopy",
            "postcopy_failed",
        ),
    ),
    ("resumed", ("unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed")),
    (
        "stopped",
        ("shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot"),
    ),
    ("shutdown", ("finished", "guest", "host")),
    ("pmsuspended", ("memory", "disk")),
    ("crashed", ("panicked", "crashloaded")),
)


def lifecycle_event_name(event: int, detail: int) -> tuple[str, str]:
    """(event, detail) names of a lifecycle callback's codes, e.g. (3, 2) ->
    ("suspended", "ioerror"); ``"event-<n>"``/``"detail-<n>"`` for newer codes."""
    if 0 <= event < len(_LIFECYCLE_EVENTS):
        name, details = _LIFECYCLE_EVENTS[event]
    else:
        name, details = f"event-{event}", ()
    return name, details[detail] if 0 <= detail < len(details) else f"detail-{detail}"


def state_reason_name(state: int, reason: int) -> str:
    """libvirt's symbolic name of a state reason; ``"reason-<n>"`` for one newer than us."""
    names = _REASONS.get(state, ())
    if 0 <= reason < len(names):
        return names[reason]
    return f"reason-{reason}"


def format_libvirt_version(number: int) -> str:
    """libvirt's packed version (major * 1e6 + minor * 1e3 + release) as "9.0.0"."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


class LibvirtUnavailable(Exception):
    """libvirt could not be reached or did not answer; the message is one line."""


class DomainNotFound(Exception):
    """No domain of that name exists on this node."""


@dataclass(frozen=True)
class HypervisorInfo:
    """What libvirt says about itself and the hypervisor it drives."""

    libvirt_version: str
    hypervisor: str


@dataclass(frozen=True)
class DomainRecord:
    """One domain as listed; ``state`` is a virDomainState code, ``reason`` symbolic."""

    name: str
    uuid: str
    state: int
    reason: str
    vcpus: int
    memory_kib: int
    persistent: bool
    autostart: bool
    uptime_seconds: int = 0


@dataclass(frozen=True)
class BlockCounters:
    device: str
    read_bytes: int = 0
    write_bytes: int = 0
    read_requests: int = 0
    write_requests: int = 0
    errors: int = 0


@dataclass(frozen=True)
class InterfaceCounters:
    device: str
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_errors: int = 0
    tx_errors: int = 0
    rx_drops: int = 0
    tx_drops: int = 0


@dataclass(frozen=True)
class DomainCounters:
    """Counters of one domain; when it is not running (active False), zeros and no
    devices, and memory_kib its configured memory."""

    cpu_time_ns: int = 0
    memory_kib: int = 0
    rss_kib: int = 0
    block: tuple[BlockCounters, ...] = ()
    interfaces: tuple[InterfaceCounters, ...] = ()
    active: bool = True


# (domain, event, detail) with libvirt's symbolic names; called on libvirt's event thread.
LifecycleListener = Callable[[str, str, str], None]


@runtime_checkable
class LifecycleSource(Protocol):
    """A gateway that pushes domain lifecycle events as libvirt reports them."""

    async def add_lifecycle_listener(self, listener: LifecycleListener) -> bool:
        """Call listener for every lifecycle event from now on (across reconnects)
        until removed. True when libvirt pushes events now; False when it cannot
        yet (libvirt down: retried on reconnect) or at all (a driver without events)."""
        ...

    def remove_lifecycle_listener(self, listener: LifecycleListener) -> None:
        """Stop calling listener (an unknown listener is ignored)."""
        ...


# domain -> (virDomainState code, symbolic reason), as list_domains reports them.
DomainStates = dict[str, tuple[int, str]]


@runtime_checkable
class DomainStateSource(Protocol):
    """A gateway that reads every domain's state without the rest of its record."""

    async def domain_states(self) -> DomainStates:
        """Every domain's (state, reason), the same pairs :meth:`LibvirtGateway.list_domains`
        reports, read far more cheaply. Raises LibvirtUnavailable."""
        ...


class LibvirtGateway(Protocol):
    """The libvirt operations the executor uses."""

    @property
    def uri(self) -> str:
        """The libvirt URI this gateway talks to."""
        ...

    async def hypervisor_info(self) -> HypervisorInfo:
        """libvirt and hypervisor versions. Raises LibvirtUnavailable."""
        ...

    async def list_domains(self) -> list[DomainRecord]:
        """Every domain (active and inactive), sorted by name. Raises LibvirtUnavailable."""
        ...

    async def domain_counters(self, name: str) -> DomainCounters:
        """Counters of one domain. Raises DomainNotFound or LibvirtUnavailable."""
        ...

    async def close(self) -> None:
        """Release the connection; later calls may reopen it."""
        ...


def parse_domain_devices(domain_xml: str) -> tuple[list[str], list[str]]:
    """(disk target devices, interface target devices) named in a domain's XML.

    These are the names domain.blockStats/interfaceStats accept. Devices without
    a target (an interface of a shut-off domain, a cdrom slot) are left out.
    """
    root = ET.fromstring(domain_xml)
    disks = [dev for target in root.iterfind("./devices/disk/target") if (dev := target.get("dev"))]
    interfaces = [
        dev for target in root.iterfind("./devices/interface/target") if (dev := target.get("dev"))
    ]
    return disks, interfaces


def _non_negative(values: Iterable[Any]) -> list[int]:
    # libvirt reports -1 for a counter the driver does not support.
    return [max(int(v), 0) for v in values]


_event_loop_lock = threading.Lock()
_event_loop_ready: bool | None = None  # None: not tried yet


def _start_event_loop(libvirt: Any) -> bool:
    """Register libvirt's default event loop and run it on a daemon thread, once per
    process. It must precede every connection: the remote driver watches its socket
    (async events, keepalive) only through an event loop present when it opens."""
    global _event_loop_ready
    with _event_loop_lock:
        if _event_loop_ready is None:
            try:
                libvirt.virEventRegisterDefaultImpl()
            except libvirt.libvirtError as exc:
                log.warning("no libvirt event loop, lifecycle events are polled: %s", exc)
                _event_loop_ready = False
            else:
                threading.Thread(
                    target=_run_event_loop, args=(libvirt,), name="libvirt-events", daemon=True
                ).start()
                _event_loop_ready = True
        return _event_loop_ready


def _run_event_loop(libvirt: Any) -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError as exc:  # pragma: no cover - libvirt's loop broke
            log.warning("libvirt event loop: %s", _one_line(exc))
            time.sleep(1.0)


class LibvirtConnection:
    """The real gateway on libvirt-python (``libvirt.open(uri)``).

    ``host_root`` is where libvirt's pid files are read for uptimes (None: no
    uptimes). It also implements :class:`LifecycleSource` and :class:`DomainStateSource`.
    """

    def __init__(
        self,
        uri: str,
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS,
        host_root: HostRoot | None = None,
    ) -> None:
        import libvirt

        self._libvirt = libvirt
        # libvirt prints every error to stderr by default; ours are reported as facts.
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        self._events_ready = _start_event_loop(libvirt)
        self._uri = uri
        self._call_timeout = call_timeout
        self._host_root = host_root
        self._conn: Any = None
        # The lifecycle callback's id on _conn (None: not registered there).
        self._callback_id: int | None = None
        # Replaced, never mutated: the event thread reads it without a lock.
        self._listeners: tuple[LifecycleListener, ...] = ()
        self._listeners_lock = threading.Lock()
        self._lock = threading.Lock()
        # Calls run on these threads (their own lock: a hung libvirt.open() may
        # hold _lock indefinitely).
        self._threads = DaemonThreads(
            "libvirt-call", max_in_flight=_MAX_CALLS_IN_FLIGHT, idle_seconds=_WORKER_IDLE_SECONDS
        )
        # Set when the driver lacks getAllDomainStats (reset on reconnect).
        self._no_domain_stats = False
        self._unsupported_error_codes = {
            getattr(libvirt, name)
            for name in ("VIR_ERR_NO_SUPPORT", "VIR_ERR_OPERATION_UNSUPPORTED")
            if hasattr(libvirt, name)
        }
        self._connection_error_codes = {
            getattr(libvirt, name)
            for name in (
                "VIR_ERR_SYSTEM_ERROR",
                "VIR_ERR_RPC",
                "VIR_ERR_NO_CONNECT",
                "VIR_ERR_INVALID_CONN",
                "VIR_ERR_AUTH_UNAVAILABLE",
            )
            if hasattr(libvirt, name)
        }

    @property
    def uri(self) -> str:
        return self._uri

    async def _call(self, operation: Callable[[Any], T]) -> T:
        """operation(connection), off the event loop, bounded by call_timeout.

        Also from a part thread (novaops.executor.threads), it goes to one of the
        connection's threads: a hung libvirt must show as "libvirt unreachable"
        within call_timeout, and must not hold the node's part threads."""
        return await self._in_thread(lambda: self._run(operation))

    async def _in_thread(self, work: Callable[[], T]) -> T:
        """Run work on one of this connection's daemon threads, bounded by call_timeout.

        Daemon threads (see DaemonThreads): a libvirt call that never returns must
        not keep the process from exiting at shutdown. Threads are reused (starting
        one per call cost more than most libvirt reads); a hung call keeps its
        thread, and the next call gets a fresh one. A part thread, which may block,
        waits for the answer right there, on a lock: a trip through its event loop
        cost about twice as much CPU (measured: 146 vs 75 us per call).
        """
        try:
            if on_part_thread():
                return self._threads.call(work, self._call_timeout)
            future = self._threads.submit(work)
        except ThreadsBusy as busy:
            raise self._busy(busy) from None
        except TimeoutError:
            raise self._no_answer() from None
        try:
            return await asyncio.wait_for(future, self._call_timeout)
        except TimeoutError:
            raise self._no_answer() from None

    def _busy(self, busy: ThreadsBusy) -> LibvirtUnavailable:
        return LibvirtUnavailable(
            f"libvirt at {self._uri} is not answering ({busy.pending} calls still pending)"
        )

    def _no_answer(self) -> LibvirtUnavailable:
        return LibvirtUnavailable(
            f"libvirt at {self._uri} did not answer within {self._call_timeout:g}s"
        )

    def _connection(self) -> Any:
        with self._lock:
            if self._conn is not None:
                try:
                    alive = self._conn.isAlive() == 1
                except self._libvirt.libvirtError:
                    alive = False
                if alive:
                    return self._conn
                self._close_locked()
            try:
                self._conn = self._libvirt.open(self._uri)
            except self._libvirt.libvirtError as exc:
                raise LibvirtUnavailable(
                    f"cannot connect to libvirt at {self._uri}: {_one_line(exc)}"
                ) from None
            self._register_lifecycle_locked()
            return self._conn

    def _close_locked(self) -> None:
        conn, self._conn = self._conn, None
        self._no_domain_stats = False  # the next daemon may have it
        callback_id, self._callback_id = self._callback_id, None
        if conn is not None:
            # A registered callback holds a reference on the connection: without
            # deregistering, close() would leave it open (and still pushing).
            if callback_id is not None:
                with contextlib.suppress(self._libvirt.libvirtError):
                    conn.domainEventDeregisterAny(callback_id)
            with contextlib.suppress(self._libvirt.libvirtError):
                conn.close()

    # -- lifecycle events ----------------------------------------------------------------

    def _register_lifecycle_locked(self) -> bool:
        """Register the lifecycle callback on the open connection if anyone listens."""
        if self._callback_id is not None:
            return True
        if self._conn is None or not self._listeners or not self._events_ready:
            return False
        try:
            self._callback_id = self._conn.domainEventRegisterAny(
                None, self._libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
            )
        except self._libvirt.libvirtError as exc:
            log.info("libvirt at %s pushes no lifecycle events: %s", self._uri, _one_line(exc))
            return False
        return True

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        # On libvirt's event thread: no libvirt calls here (dom.name() is cached).
        name = dom.name()
        event_name, detail_name = lifecycle_event_name(event, detail)
        for listener in self._listeners:
            try:
                listener(name, event_name, detail_name)
            except Exception:
                log.exception("lifecycle listener failed on %s %s", name, event_name)

    async def add_lifecycle_listener(self, listener: LifecycleListener) -> bool:
        with self._listeners_lock:
            self._listeners = (*self._listeners, listener)
        if not self._events_ready:
            return False

        def register(_conn: Any) -> bool:
            with self._lock:
                return self._register_lifecycle_locked()

        try:
            return await self._call(register)
        except LibvirtUnavailable:
            return False  # registered when the connection next opens

    def remove_lifecycle_listener(self, listener: LifecycleListener) -> None:
        # The libvirt callback stays until the connection closes: it then calls nobody.
        with self._listeners_lock:
            self._listeners = tuple(known for known in self._listeners if known != listener)

    def _run(self, operation: Callable[[Any], T]) -> T:
        """Run operation on the connection; retry once on a fresh one if it broke."""
        conn = self._connection()
        try:
            return operation(conn)
        except self._libvirt.libvirtError as exc:
            if exc.get_error_code() not in self._connection_error_codes:
                raise self._translate(exc) from None
            log.warning("libvirt connection to %s broke, reconnecting: %s", self._uri, exc)
            with self._lock:
                if self._conn is conn:
                    self._close_locked()
        conn = self._connection()
        try:
            return operation(conn)
        except self._libvirt.libvirtError as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: Any) -> Exception:
        if exc.get_error_code() == self._libvirt.VIR_ERR_NO_DOMAIN:
            return DomainNotFound(_one_line(exc))
        return LibvirtUnavailable(f"libvirt at {self._uri}: {_one_line(exc)}")

    async def hypervisor_info(self) -> HypervisorInfo:
        def read(conn: Any) -> HypervisorInfo:
            return HypervisorInfo(
                libvirt_version=format_libvirt_version(conn.getLibVersion()),
                hypervisor=f"{conn.getType()} {format_libvirt_version(conn.getVersion())}",
            )

        return await self._call(read)

    async def list_domains(self) -> list[DomainRecord]:
        return await self._call(self._list_domains)

    def _list_domains(self, conn: Any) -> list[DomainRecord]:
        records = []
        for dom in conn.listAllDomains(0):
            try:
                records.append(self._record(dom))
            except self._libvirt.libvirtError as exc:
                # The domain went away between listing and reading it.
                if exc.get_error_code() != self._libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return sorted(records, key=lambda r: r.name)

    async def domain_states(self) -> DomainStates:
        return await self._call(self._domain_states)

    def _domain_states(self, conn: Any) -> DomainStates:
        listed = self._state_stats(conn)
        if listed is None:
            listed = [(dom, {}) for dom in conn.listAllDomains(0)]
        states = {}
        for dom, values in listed:
            if "state.state" in values:
                state, reason = values["state.state"], values.get("state.reason", 0)
            else:  # no stats call, or a driver that left the group out for this domain
                try:
                    state, reason = dom.state(0)
                except self._libvirt.libvirtError as exc:
                    if exc.get_error_code() != self._libvirt.VIR_ERR_NO_DOMAIN:
                        raise
                    continue  # it went away between listing and reading it
            states[dom.name()] = (state, state_reason_name(state, reason))
        return dict(sorted(states.items()))

    def _state_stats(self, conn: Any) -> list[tuple[Any, dict[str, Any]]] | None:
        """Every domain with its state stats in one call (one RPC to libvirtd, and
        no domain job: the state group needs no QEMU monitor), rather than a
        state() call per domain. None when the driver lacks getAllDomainStats."""
        if self._no_domain_stats:
            return None
        try:
            return list(conn.getAllDomainStats(self._libvirt.VIR_DOMAIN_STATS_STATE))
        except self._libvirt.libvirtError as exc:
            if exc.get_error_code() not in self._unsupported_error_codes:
                raise
            self._no_domain_stats = True
            return None

    def _record(
        self, dom: Any, state_reason: tuple[int, int] | None = None, *, uptime: bool = True
    ) -> DomainRecord:
        """dom as a record; state_reason: its ``dom.state(0)`` already read.
        ``uptime=False`` leaves uptime_seconds 0 (it costs a file read and a
        process lookup per active domain)."""
        state, reason = dom.state(0) if state_reason is None else state_reason
        _, max_mem_kib, _, vcpus, _ = dom.info()
        persistent = dom.isPersistent() == 1
        try:
            autostart = bool(dom.autostart())
        except self._libvirt.libvirtError:
            autostart = False  # transient domains have no autostart setting
        name = dom.name()
        uptime_seconds = 0
        if uptime and self._host_root is not None and state in ACTIVE_STATES:
            uptime_seconds = domain_uptime_seconds(self._host_root, name)
        return DomainRecord(
            name=name,
            uuid=dom.UUIDString(),
            state=state,
            reason=state_reason_name(state, reason),
            vcpus=vcpus,
            memory_kib=max_mem_kib,
            persistent=persistent,
            autostart=autostart,
            uptime_seconds=uptime_seconds,
        )

    async def domain_counters(self, name: str) -> DomainCounters:
        def read(conn: Any) -> DomainCounters:
            return self._counters(conn.lookupByName(name))

        return await self._call(read)

    def _counters(self, dom: Any) -> DomainCounters:
        _, _, memory_kib, _, cpu_time_ns = dom.info()
        if dom.isActive() != 1:
            return DomainCounters(memory_kib=int(memory_kib), active=False)
        try:
            rss_kib = int(dom.memoryStats().get("rss", 0))
        except self._libvirt.libvirtError:
            rss_kib = 0
        disks, interfaces = parse_domain_devices(dom.XMLDesc(0))
        block = []
        for dev in disks:
            try:
                rd_req, rd_bytes, wr_req, wr_bytes, errs = _non_negative(dom.blockStats(dev))
            except self._libvirt.libvirtError:
                continue  # e.g. an empty cdrom drive has no statistics
            block.append(BlockCounters(dev, rd_bytes, wr_bytes, rd_req, wr_req, errs))
        nics = []
        for dev in interfaces:
            try:
                rx_b, rx_p, rx_e, rx_d, tx_b, tx_p, tx_e, tx_d = _non_negative(
                    dom.interfaceStats(dev)
                )
            except self._libvirt.libvirtError:
                continue
            nics.append(InterfaceCounters(dev, rx_b, tx_b, rx_p, tx_p, rx_e, tx_e, rx_d, tx_d))
        return DomainCounters(
            cpu_time_ns=max(int(cpu_time_ns), 0),
            memory_kib=int(memory_kib),
            rss_kib=rss_kib,
            block=tuple(block),
            interfaces=tuple(nics),
        )

    async def close(self) -> None:
        def close_connection() -> None:
            with self._lock:
                self._close_locked()

        try:
            await self._in_thread(close_connection)
        except LibvirtUnavailable as exc:
            log.warning("closing the libvirt connection: %s", exc)


def domain_uptime_seconds(root: HostRoot, name: str, *, now: float | None = None) -> int:
    """Seconds since the process in the domain's libvirt pid file started; 0 when the
    pid file is missing or unparsable or its process is gone (blocking: a file read)."""
    try:
        pid = parse_pid_file(root.read_text(f"{QEMU_PID_DIR}/{name}.pid"))
    except OSError:
        return 0
    if pid is None:
        return 0
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return 0
    return max(int((time.time() if now is None else now) - started), 0)


def _ignore_libvirt_error(_ctx: object, _error: object) -> None:
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
