"""The clean baseline of a node, and the finders recovery shares with it.

A node is *clean* when nothing is left behind by a VM that is no longer there:

* ``clean.orphans``: no QEMU process this node owns runs without a live domain;
* ``clean.stale-locks``: no lock or pid file names an owner pid that is gone;
* ``clean.leaked-taps``: no tap device exists that no live domain names;
* ``clean.cgroups``: no ``machine-qemu*.scope`` cgroup remains without a live domain.

Finders gather evidence (I/O) and return plain records; :func:`verify_clean`
turns them into :class:`BaselineCheck` results. Recovery actions
(:mod:`novaops.executor.recovery`) act on the same records, so "verify-clean
fails" and "recovery has something to do" always agree.

Attribution, because simulated nodes share one process table: a process belongs
to this node only through evidence under this node's host root (a pid file
libvirt keeps in ``/run/libvirt/qemu``). Only when the host root is the system
root (a real host) are QEMU processes also found by scanning the process table.
A process that cannot be attributed is never reported, so never signalled.

These finders stand in until the diagnostics checks (``executor/checks/host.py``)
land; :class:`HostFinders` is the seam to swap them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import logging
import os
import re
import signal as signals
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol, TypeVar

import psutil
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import (
    BLOCKED,
    PAUSED,
    PMSUSPENDED,
    RUNNING,
    SHUTDOWN,
    DomainRecord,
    LibvirtUnavailable,
)
from novaops.v1 import common_pb2

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from novaops.executor.checks.sources import CheckSources

S = TypeVar("S")

# States in which libvirt runs a QEMU process for the domain. CRASHED and SHUTOFF
# have none, so a QEMU still running for such a domain is an orphan.
LIVE_STATES = frozenset({RUNNING, BLOCKED, PAUSED, SHUTDOWN, PMSUSPENDED})

QEMU_PID_DIR = PurePosixPath("/run/libvirt/qemu")
# Where lock and pid files are looked for. Fixed, not caller-supplied: recovery
# deletes what matches, so the set of places must be reviewable here.
DEFAULT_LOCK_PATTERNS: tuple[str, ...] = (
    "/run/libvirt/qemu/*.pid",
    "/run/lock/*.lock",
    "/var/lock/*.lock",
    "/run/novaops/*.lock",
)
CGROUP_SCOPE_PATTERNS: tuple[str, ...] = (
    "/sys/fs/cgroup/machine.slice/machine-qemu*.scope",  # cgroup v2 / unified
    "/sys/fs/cgroup/*/machine.slice/machine-qemu*.scope",  # cgroup v1 controllers
)
# IFF_TAP in /sys/class/net/<dev>/tun_flags; IFF_TUN devices (VPNs) are not ours.
_IFF_TAP = 0x0002
_MAX_PID_FILE_BYTES = 64
_QEMU_NAMES = ("qemu-system-", "qemu-kvm")


class DomainSource(Protocol):
    """The libvirt reads the finders need (a subset of the recovery libvirt ops)."""

    async def list_domains(self) -> list[DomainRecord]: ...

    async def domain_xml(self, name: str) -> str: ...


@dataclass(frozen=True)
class ProcessInfo:
    """A live process; ``create_time`` pins its identity against pid reuse."""

    pid: int
    create_time: float
    name: str
    cmdline: tuple[str, ...] = ()


class ProcessTable(Protocol):
    """The process table, injectable so unit tests need no real processes."""

    def get(self, pid: int) -> ProcessInfo | None:
        """The process with this pid, or None when gone or a zombie."""
        ...

    def qemu_processes(self) -> list[ProcessInfo]:
        """Every live QEMU process (only consulted on a real host)."""
        ...

    def signal(self, pid: int, create_time: float, sig: int) -> bool:
        """Send sig if pid is still the process started at create_time.

        Returns False (and sends nothing) when it is gone or is another process now.
        """
        ...


# The control named when signals go by pid because pidfd is unavailable; the same
# name the host.cgroup check reports in degraded_controls.
PIDFD_CONTROL = "pidfd-signal"


@functools.cache
def pidfd_signalling_available() -> bool:
    """Whether this Python and kernel can signal through a pidfd (probed once)."""
    if not hasattr(os, "pidfd_open") or not hasattr(signals, "pidfd_send_signal"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


def _count_degraded(control: str) -> None:
    from novaops.executor.metrics import CONTROL_DEGRADED

    CONTROL_DEGRADED.labels(control).inc()


class PsutilProcessTable:
    """:class:`ProcessTable` over psutil. Never signals pid <= 1 or this process.

    :meth:`signal` goes through a pidfd where the kernel has them: the descriptor
    is opened first and the process's start time checked after, so the signal
    reaches the process that was found or nobody (a pid reused after the check
    cannot receive it). Without pidfd (``use_pidfd=False`` forces it) it signals
    by pid after the same check, a window in which the pid could be reused, and
    counts ``novaops_control_degraded_total{control="pidfd-signal"}`` per signal sent.
    """

    def __init__(
        self,
        *,
        use_pidfd: bool | None = None,
        count_degraded: Callable[[str], None] = _count_degraded,
    ) -> None:
        self.use_pidfd = pidfd_signalling_available() if use_pidfd is None else use_pidfd
        self._count_degraded = count_degraded

    def get(self, pid: int) -> ProcessInfo | None:
        if pid <= 0:
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return ProcessInfo(pid, proc.create_time(), proc.name(), tuple(proc.cmdline()))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        except psutil.AccessDenied:
            # Alive but unreadable: report it alive with what is known.
            return ProcessInfo(pid, 0.0, "?")

    def qemu_processes(self) -> list[ProcessInfo]:
        found = []
        for proc in psutil.process_iter(["pid", "name", "create_time", "cmdline", "status"]):
            info = proc.info
            name = info.get("name") or ""
            if info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            if name.startswith(_QEMU_NAMES):
                found.append(
                    ProcessInfo(
                        info["pid"], info["create_time"], name, tuple(info.get("cmdline") or ())
                    )
                )
        return found

    def signal(self, pid: int, create_time: float, sig: int) -> bool:
        if pid <= 1 or pid == os.getpid():
            return False
        if self.use_pidfd:
            return self._signal_pidfd(pid, create_time, sig)
        sent = self._signal_pid(pid, create_time, sig)
        if sent:
            self._count_degraded(PIDFD_CONTROL)
        return sent

    @staticmethod
    def _is(pid: int, create_time: float) -> bool:
        """Whether pid is now the live process that started at create_time."""
        try:
            proc = psutil.Process(pid)
            return proc.create_time() == create_time and proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False

    def _signal_pidfd(self, pid: int, create_time: float, sig: int) -> bool:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except OSError as exc:  # ENOSYS in a sandbox that hides the syscall
            log.warning("pidfd_open failed (%s); signalling by pid from now on", exc)
            self.use_pidfd = False
            return self.signal(pid, create_time, sig)
        try:
            # The descriptor holds the process that had the pid when it was opened:
            # if that is still the one found, the signal cannot reach another.
            if not self._is(pid, create_time):
                return False
            signals.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return False  # exited after the check
        finally:
            os.close(fd)
        return True

    def _signal_pid(self, pid: int, create_time: float, sig: int) -> bool:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() != create_time or proc.status() == psutil.STATUS_ZOMBIE:
                return False
            # psutil re-checks the process identity right before kill(), which
            # narrows the window of pid reuse but cannot close it.
            proc.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False
        return True


@dataclass(frozen=True)
class OrphanProcess:
    """A QEMU process of this node with no live domain."""

    pid: int
    create_time: float
    name: str
    domain: str
    evidence: str


@dataclass(frozen=True)
class StaleLock:
    """A lock or pid file (host path) whose owner pid is gone."""

    path: PurePosixPath
    pid: int


@dataclass(frozen=True)
class LeakedTap:
    """A tap device no live domain names."""

    name: str


@dataclass(frozen=True)
class LeftoverCgroup:
    """A machine scope cgroup (host path) with no live domain."""

    path: PurePosixPath
    domain: str


class HostFinders(Protocol):
    """What recovery and verify-clean ask about leftovers. Raise OSError or
    LibvirtUnavailable when the evidence cannot be gathered."""

    async def orphans(self) -> list[OrphanProcess]: ...

    async def stale_locks(self) -> list[StaleLock]: ...

    async def leaked_taps(self) -> list[LeakedTap]: ...

    async def leftover_cgroups(self) -> list[LeftoverCgroup]: ...


def parse_pid_file(text: str) -> int | None:
    """The pid a lock/pid file names (first token), or None when it names none."""
    token = text.strip().split(maxsplit=1)
    if not token or not token[0].isdigit():
        return None
    pid = int(token[0])
    return pid if pid > 0 else None


def qemu_guest_name(cmdline: Sequence[str]) -> str | None:
    """The domain name from a QEMU command line (``-name guest=web-1,debug-threads=on``)."""
    for flag, value in itertools.pairwise(cmdline):
        if flag != "-name":
            continue
        for part in value.split(","):
            if part.startswith("guest="):
                return part[len("guest=") :]
        return value.split(",", 1)[0] or None
    return None


_SCOPE_RE = re.compile(r"^machine-qemu-\d+-(?P<name>.+)\.scope$")


def scope_domain_name(scope_dir_name: str) -> str | None:
    """The (possibly truncated) domain name of ``machine-qemu\\x2d3\\x2dweb\\x2d1.scope``."""
    unescaped = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), scope_dir_name)
    match = _SCOPE_RE.match(unescaped)
    return match.group("name") if match else None


def domain_interfaces(domain_xml: str) -> list[tuple[str, str | None]]:
    """(tap device, bridge or None) for each interface with a target in a domain's XML.

    Live XML of ``type='network'`` interfaces carries the bridge too
    (``<source network='default' bridge='virbr0'/>``).
    """
    root = ET.fromstring(domain_xml)
    found = []
    for iface in root.iterfind("./devices/interface"):
        target = iface.find("target")
        dev = target.get("dev") if target is not None else None
        if not dev:
            continue
        source = iface.find("source")
        found.append((dev, source.get("bridge") if source is not None else None))
    return found


class HostScanner:
    """The default :class:`HostFinders`: host root files, libvirt and the process table."""

    def __init__(
        self,
        host_root: HostRoot,
        libvirt: DomainSource,
        processes: ProcessTable | None = None,
        *,
        lock_patterns: Sequence[str] = DEFAULT_LOCK_PATTERNS,
        scan_process_table: bool | None = None,
    ) -> None:
        self.host_root = host_root
        self.libvirt = libvirt
        self.processes = processes if processes is not None else PsutilProcessTable()
        self.lock_patterns = tuple(lock_patterns)
        # Only a real host may claim QEMU processes it has no pid file for:
        # simulated nodes share this machine's process table.
        self.scan_process_table = (
            host_root.is_system_root if scan_process_table is None else scan_process_table
        )

    async def _live_domains(self) -> list[DomainRecord]:
        return [d for d in await self.libvirt.list_domains() if d.state in LIVE_STATES]

    def _pid_files(self, patterns: Sequence[str]) -> list[tuple[PurePosixPath, int | None]]:
        seen: set[Path] = set()
        found = []
        for pattern in patterns:
            for host_path in self.host_root.glob(pattern):
                try:
                    real = self.host_root.resolve(host_path)
                    if real in seen or not real.is_file():
                        continue
                    seen.add(real)
                    text = self.host_root.read_text(host_path, max_bytes=_MAX_PID_FILE_BYTES)
                except OSError:
                    continue  # vanished or unreadable: not evidence either way
                found.append((host_path, parse_pid_file(text)))
        return found

    async def orphans(self) -> list[OrphanProcess]:
        live = {d.name for d in await self._live_domains()}
        found: dict[int, OrphanProcess] = {}
        pattern = str(QEMU_PID_DIR / "*.pid")
        for host_path, pid in await asyncio.to_thread(self._pid_files, (pattern,)):
            domain = host_path.stem
            if pid is None or domain in live:
                continue
            info = self.processes.get(pid)
            if info is None or info.create_time == 0.0:
                continue
            found[pid] = OrphanProcess(
                pid, info.create_time, info.name, domain, f"pid file {host_path}"
            )
        if self.scan_process_table:
            for info in await asyncio.to_thread(self.processes.qemu_processes):
                guest = qemu_guest_name(info.cmdline)
                if guest is None or guest in live or info.pid in found:
                    continue
                found[info.pid] = OrphanProcess(
                    info.pid, info.create_time, info.name, guest, "QEMU command line -name"
                )
        return sorted(found.values(), key=lambda o: o.pid)

    async def stale_locks(self) -> list[StaleLock]:
        files = await asyncio.to_thread(self._pid_files, self.lock_patterns)
        return [
            StaleLock(path, pid)
            for path, pid in files
            if pid is not None and self.processes.get(pid) is None
        ]

    async def leaked_taps(self) -> list[LeakedTap]:
        named: set[str] = set()
        for domain in await self._live_domains():
            named.update(
                dev for dev, _ in domain_interfaces(await self.libvirt.domain_xml(domain.name))
            )
        return [LeakedTap(tap) for tap in await asyncio.to_thread(self._taps) if tap not in named]

    def _taps(self) -> list[str]:
        taps = []
        for flags_path in self.host_root.glob("/sys/class/net/*/tun_flags"):
            try:
                flags = int(self.host_root.read_text(flags_path).strip(), 0)
            except (OSError, ValueError):
                continue
            if flags & _IFF_TAP:
                taps.append(flags_path.parent.name)
        return taps

    async def leftover_cgroups(self) -> list[LeftoverCgroup]:
        live = [d.name for d in await self._live_domains()]
        leftovers = []
        for pattern in CGROUP_SCOPE_PATTERNS:
            for scope in await asyncio.to_thread(self.host_root.glob, pattern):
                name = scope_domain_name(scope.name)
                if name is None or not self.host_root.is_dir(scope):
                    continue
                # libvirt shortens long names in scope names, so match by prefix.
                if not any(d == name or d.startswith(name) for d in live):
                    leftovers.append(LeftoverCgroup(scope, name))
        return leftovers


class ChecksFinders:
    """:class:`HostFinders` over the diagnostics checks (``executor/checks/leftovers.py``),
    so health, verify-clean and recovery share one notion of orphan, stale lock and
    leaked tap (including the dev cluster's ``NOVAOPS_NODE`` stand-in markers and
    per-node tap prefixes). Leftover cgroups come from :class:`HostScanner`.

    The checks report an orphan by pid only; its start time is read here and the
    process is kept only while its command line is still the one the check saw,
    so a pid reused in between is never handed to recovery.
    """

    def __init__(
        self,
        sources: CheckSources,
        libvirt: DomainSource,
        processes: ProcessTable | None = None,
    ) -> None:
        self.sources = sources
        self.processes = processes if processes is not None else PsutilProcessTable()
        self._cgroups = HostScanner(sources.root, libvirt, self.processes)

    async def orphans(self) -> list[OrphanProcess]:
        from novaops.executor.checks.leftovers import find_orphans, gather_orphans

        evidence = await gather_orphans(self.sources)
        if evidence.libvirt_error:
            raise LibvirtUnavailable(evidence.libvirt_error)
        found = []
        for proc in find_orphans(evidence):
            info = self.processes.get(proc.pid)
            # The checks keep the first 200 characters of the command line.
            if info is None or info.create_time == 0.0:
                continue
            if " ".join(info.cmdline)[:200] != proc.cmdline:
                continue
            found.append(
                OrphanProcess(proc.pid, info.create_time, info.name, proc.guest, "host.orphans")
            )
        return found

    async def stale_locks(self) -> list[StaleLock]:
        from novaops.executor.checks.leftovers import gather_locks

        evidence = await asyncio.to_thread(gather_locks, self.sources)
        if evidence.error:
            raise OSError(evidence.error)
        return [
            StaleLock(PurePosixPath(f.path), f.owner_pid)
            for f in evidence.files
            if f.owner_pid is not None and not f.owner_alive and f.owner_via == "content"
        ]

    async def leaked_taps(self) -> list[LeakedTap]:
        from novaops.executor.checks.leftovers import gather_taps

        evidence = await gather_taps(self.sources)
        if evidence.libvirt_error:
            raise LibvirtUnavailable(evidence.libvirt_error)
        if evidence.error:
            raise OSError(evidence.error)
        return [LeakedTap(t.name) for t in evidence.taps if t.name not in evidence.claimed]

    async def leftover_cgroups(self) -> list[LeftoverCgroup]:
        return await self._cgroups.leftover_cgroups()


# -- the baseline ------------------------------------------------------------------------


class Status:
    OK = "ok"
    FAIL = "fail"
    ERROR = "error"


@dataclass(frozen=True)
class Remediation:
    description: str
    command: str = ""


@dataclass(frozen=True)
class BaselineCheck:
    """One baseline check. ``status`` is "ok", "fail" or "error" (evidence unavailable)."""

    check_id: str
    status: str
    summary: str
    evidence: dict[str, str] = field(default_factory=dict)
    remediation: tuple[Remediation, ...] = ()


@dataclass(frozen=True)
class CleanReport:
    """``clean`` is True only when every check is ok (an error is not clean)."""

    clean: bool
    checks: tuple[BaselineCheck, ...]
    observed_at: dt.datetime


def _recover_command(node: str, action: str) -> str:
    return f"novaops recover {action} --node {node}"


def evaluate_orphans(node: str, orphans: Sequence[OrphanProcess]) -> BaselineCheck:
    if not orphans:
        return BaselineCheck("clean.orphans", Status.OK, "no orphan QEMU processes")
    return BaselineCheck(
        "clean.orphans",
        Status.FAIL,
        f"{len(orphans)} orphan QEMU process(es): "
        + ", ".join(f"pid {o.pid} ({o.domain})" for o in orphans),
        {f"pid.{o.pid}": f"{o.domain}: {o.evidence}" for o in orphans},
        (
            Remediation(
                "Terminate the orphan processes (TERM, then KILL after the grace period)",
                _recover_command(node, "terminate-orphans"),
            ),
        ),
    )


def evaluate_stale_locks(node: str, locks: Sequence[StaleLock]) -> BaselineCheck:
    if not locks:
        return BaselineCheck("clean.stale-locks", Status.OK, "no stale lock files")
    return BaselineCheck(
        "clean.stale-locks",
        Status.FAIL,
        f"{len(locks)} stale lock file(s): " + ", ".join(str(lk.path) for lk in locks),
        {str(lk.path): f"owner pid {lk.pid} is gone" for lk in locks},
        (Remediation("Remove the stale lock files", _recover_command(node, "remove-stale-locks")),),
    )


def evaluate_leaked_taps(node: str, taps: Sequence[LeakedTap]) -> BaselineCheck:
    del node  # no catalogue action deletes devices; the commands are host-side
    if not taps:
        return BaselineCheck("clean.leaked-taps", Status.OK, "no leaked tap devices")
    return BaselineCheck(
        "clean.leaked-taps",
        Status.FAIL,
        f"{len(taps)} tap device(s) attached to no domain: " + ", ".join(t.name for t in taps),
        {t.name: "named by no live domain" for t in taps},
        tuple(
            Remediation(f"Delete the leaked tap {t.name}", f"ip link delete {t.name}") for t in taps
        ),
    )


def evaluate_cgroups(node: str, scopes: Sequence[LeftoverCgroup]) -> BaselineCheck:
    if not scopes:
        return BaselineCheck("clean.cgroups", Status.OK, "no leftover machine cgroups")
    return BaselineCheck(
        "clean.cgroups",
        Status.FAIL,
        f"{len(scopes)} machine cgroup(s) without a live domain: "
        + ", ".join(f"{s.domain} ({s.path})" for s in scopes),
        {str(s.path): f"domain {s.domain} is not running" for s in scopes},
        (
            Remediation(
                "Terminate processes left in the scopes",
                _recover_command(node, "terminate-orphans"),
            ),
            *(Remediation(f"Remove the empty scope {s.path}", f"rmdir '{s.path}'") for s in scopes),
        ),
    )


async def _baseline_check(
    node: str,
    check_id: str,
    gather: Callable[[], Awaitable[S]],
    evaluate: Callable[[str, S], BaselineCheck],
) -> BaselineCheck:
    try:
        found = await gather()
    except (OSError, LibvirtUnavailable, ET.ParseError) as exc:
        return BaselineCheck(check_id, Status.ERROR, f"could not check: {_one_line(exc)}")
    return evaluate(node, found)


async def verify_clean(
    node: str, finders: HostFinders, *, now: dt.datetime | None = None
) -> CleanReport:
    """Run the four baseline checks. A finder that cannot gather evidence yields an
    "error" check (and the node is not clean), never an exception."""
    checks = (
        await _baseline_check(node, "clean.orphans", finders.orphans, evaluate_orphans),
        await _baseline_check(node, "clean.stale-locks", finders.stale_locks, evaluate_stale_locks),
        await _baseline_check(node, "clean.leaked-taps", finders.leaked_taps, evaluate_leaked_taps),
        await _baseline_check(node, "clean.cgroups", finders.leftover_cgroups, evaluate_cgroups),
    )
    return CleanReport(
        clean=all(c.status == Status.OK for c in checks),
        checks=checks,
        observed_at=now if now is not None else dt.datetime.now(dt.UTC),
    )


_PROTO_STATUS = {
    Status.OK: common_pb2.CHECK_STATUS_OK,
    Status.FAIL: common_pb2.CHECK_STATUS_FAIL,
    Status.ERROR: common_pb2.CHECK_STATUS_ERROR,
}


def check_to_proto(
    node: str, check: BaselineCheck, observed_at: dt.datetime, event_id: str = ""
) -> common_pb2.CheckResult:
    """A baseline check as the wire's CheckResult (target "host")."""
    result = common_pb2.CheckResult(
        node=node,
        check_id=check.check_id,
        target="host",
        status=_PROTO_STATUS[check.status],
        summary=check.summary,
        evidence=check.evidence,
        remediation=[
            common_pb2.RemediationStep(description=r.description, command=r.command)
            for r in check.remediation
        ],
        event_id=event_id,
    )
    result.observed_at.FromDatetime(observed_at)
    return result


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# -- metrics -----------------------------------------------------------------------------


class CleanupOutcome:
    SUCCESS = "success"
    FAILURE = "failure"
    PARTIAL = "partial"


_cleanup_counters: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = (
    weakref.WeakKeyDictionary()
)


def cleanup_counter(registry: CollectorRegistry | None = None) -> Counter:
    """``novaops_cleanup_total{outcome}`` on registry (default: the global one).

    Registered once per registry, so every caller gets the same counter.
    """
    registry = registry if registry is not None else REGISTRY
    counter = _cleanup_counters.get(registry)
    if counter is None:
        counter = Counter(
            "novaops_cleanup_total",
            "Cleanup runs (stale-lock removal, orphan termination) by outcome.",
            ["outcome"],
            registry=registry,
        )
        for outcome in (CleanupOutcome.SUCCESS, CleanupOutcome.FAILURE, CleanupOutcome.PARTIAL):
            counter.labels(outcome=outcome)
        _cleanup_counters[registry] = counter
    return counter
