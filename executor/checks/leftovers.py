"""Leftovers a node must be clean of: orphan QEMU processes, stale locks, leaked taps.

Each is an evidence dataclass, a pure ``evaluate_*`` and a ``gather_*``. These
are the clean-baseline checks of ``health --verify-clean`` and part of
``GetHealth``. Check ids:

* ``host.orphans``: QEMU-like processes of this node (scoping rules in
  :mod:`novaops.executor.checks.qemu_processes`) that no domain claims, or that
  claim a domain whose pid file names another live process. Zombies are left
  out: only their parent can reap them.
* ``host.locks``: ``*.lock``/``*.pid`` files under ``/var/lib/libvirt`` and
  ``/run/libvirt`` (host root) whose owner is gone. The owner is the pid written
  in the file, else the holder of a POSIX/flock lock on it (from the real
  ``/proc/locks``). A file naming no pid and locked by nobody is not reported:
  there is no owner to be gone.
* ``host.taps``: tap devices (kind tun/macvtap) whose name carries one of the
  node's tap prefixes and that no domain with a process claims (the prefix is the scope: simulated
  nodes sharing one namespace get their own prefix).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from novaops.executor.checks.domains import PROCESS_STATES, parse_domain_spec
from novaops.executor.checks.links import LinkInfo
from novaops.executor.checks.model import (
    CheckResult,
    Recovery,
    RemediationStep,
    Status,
    recover_command,
    result,
)
from novaops.executor.checks.qemu_processes import (
    QemuProcess,
    parse_pid_file,
    pid_alive,
    read_pid_files,
    scan_qemu_processes,
)
from novaops.executor.checks.sources import CheckSources
from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import LibvirtUnavailable
from novaops.executor.threads import off_loop, shared_read

LOCK_FOLDERS = ("/var/lib/libvirt", "/run/libvirt")
LOCK_SUFFIXES = (".lock", ".pid")
# rtnetlink kinds of tap devices; "" is a sysfs link whose kind could not be told.
TAP_KINDS = frozenset({"tun", "tap", "macvtap", ""})
_WALK_DEPTH = 5
_WALK_MAX_FILES = 5000


@dataclass(frozen=True)
class OrphanEvidence:
    """``claimed``: domain with a process -> the pid its pid file names (None: no file)."""

    node: str
    processes: tuple[QemuProcess, ...] = ()
    claimed: dict[str, int | None] = field(default_factory=dict)
    libvirt_error: str = ""


@dataclass(frozen=True)
class LockFile:
    """``owner_via``: "content" (pid written in it), "fcntl" (lock holder) or "none"."""

    path: str
    owner_pid: int | None
    owner_alive: bool
    owner_via: str = "content"


@dataclass(frozen=True)
class LockEvidence:
    node: str
    files: tuple[LockFile, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class TapEvidence:
    """``taps``: tap links in the node's scope; ``claimed``: tap -> domain."""

    node: str
    taps: tuple[LinkInfo, ...] = ()
    claimed: dict[str, str] = field(default_factory=dict)
    libvirt_error: str = ""
    error: str = ""


# -- pure parsers ---------------------------------------------------------------------------


def parse_proc_locks(text: str) -> dict[tuple[int, int, int], list[int]]:
    """(major, minor, inode) -> holder pids, from /proc/locks (waiters and OFD locks,
    whose pid is -1, are left out)."""
    holders: dict[tuple[int, int, int], list[int]] = {}
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) < 6 or tokens[1] == "->":
            continue
        pid, device = tokens[4], tokens[5].split(":")
        if not pid.isdigit() or len(device) != 3:
            continue
        try:
            key = (int(device[0], 16), int(device[1], 16), int(device[2]))
        except ValueError:
            continue
        holders.setdefault(key, []).append(int(pid))
    return holders


# -- evaluation (pure) ----------------------------------------------------------------------


def find_orphans(ev: OrphanEvidence) -> list[QemuProcess]:
    """The orphans among ev.processes (zombies excluded: only their parent can reap them)."""
    live = {p.pid for p in ev.processes}
    orphans = []
    for proc in ev.processes:
        if proc.status == "zombie":
            continue
        if proc.guest not in ev.claimed:
            orphans.append(proc)
            continue
        claimed_pid = ev.claimed[proc.guest]
        if claimed_pid is not None and claimed_pid != proc.pid and claimed_pid in live:
            orphans.append(proc)  # a second process for a domain libvirt already runs
    return orphans


def evaluate_orphans(ev: OrphanEvidence) -> list[CheckResult]:
    """host.orphans."""
    if ev.libvirt_error:
        return [
            result(
                "host.orphans",
                "host",
                Status.ERROR,
                f"cannot tell orphans: libvirt unreachable: {ev.libvirt_error}",
                {"error": ev.libvirt_error, "qemu_processes": len(ev.processes)},
                [
                    RemediationStep(
                        "Reconnect to libvirt", recover_command(Recovery.RECONNECT_LIBVIRT, ev.node)
                    )
                ],
            )
        ]
    orphans = find_orphans(ev)
    evidence: dict[str, object] = {"qemu_processes": len(ev.processes), "orphans": len(orphans)}
    if not orphans:
        return [
            result(
                "host.orphans",
                "host",
                Status.OK,
                f"{len(ev.processes)} QEMU process(es), each claimed by a domain",
                evidence,
            )
        ]
    for proc in orphans[:10]:
        evidence[f"orphan.{proc.pid}"] = f"guest={proc.guest or '?'} {proc.cmdline}"[:200]
    listed = ", ".join(f"{p.pid} ({p.guest or 'no -name'})" for p in orphans[:10])
    return [
        result(
            "host.orphans",
            "host",
            Status.FAIL,
            f"{len(orphans)} QEMU process(es) no domain claims: {listed}",
            evidence,
            [
                RemediationStep(
                    "Terminate them (TERM, then KILL after a grace period)",
                    recover_command(Recovery.TERMINATE_ORPHANS, ev.node),
                ),
                RemediationStep("Inspect one first", f"ps -o pid,etime,cmd -p {orphans[0].pid}"),
            ],
        )
    ]


def evaluate_locks(ev: LockEvidence) -> list[CheckResult]:
    """host.locks."""
    if ev.error:
        return [
            result(
                "host.locks",
                "host",
                Status.ERROR,
                f"lock files unreadable: {ev.error}",
                {"error": ev.error},
                [
                    RemediationStep(
                        "List them by hand",
                        "find /var/lib/libvirt /run/libvirt -name '*.lock' -o -name '*.pid'",
                    )
                ],
            )
        ]
    stale = [f for f in ev.files if f.owner_pid is not None and not f.owner_alive]
    evidence: dict[str, object] = {"files": len(ev.files), "stale": len(stale)}
    if not stale:
        return [
            result(
                "host.locks",
                "host",
                Status.OK,
                f"{len(ev.files)} lock/pid file(s); every named owner is alive",
                evidence,
            )
        ]
    for lock in stale[:10]:
        evidence[lock.path] = f"pid {lock.owner_pid} ({lock.owner_via}) gone"
    return [
        result(
            "host.locks",
            "host",
            Status.FAIL,
            f"{len(stale)} stale lock file(s): {', '.join(f.path for f in stale[:5])}",
            evidence,
            [
                RemediationStep(
                    "Remove the stale locks", recover_command(Recovery.REMOVE_STALE_LOCKS, ev.node)
                )
            ],
        )
    ]


def evaluate_taps(ev: TapEvidence) -> list[CheckResult]:
    """host.taps."""
    if ev.error or ev.libvirt_error:
        why = ev.error or f"libvirt unreachable: {ev.libvirt_error}"
        steps = [RemediationStep("List taps by hand", "ip -d link show type tun")]
        if ev.libvirt_error:
            steps.insert(
                0,
                RemediationStep(
                    "Reconnect to libvirt", recover_command(Recovery.RECONNECT_LIBVIRT, ev.node)
                ),
            )
        return [
            result(
                "host.taps",
                "host",
                Status.ERROR,
                f"cannot tell leaked taps: {why}",
                {"error": why},
                steps,
            )
        ]
    leaked = sorted(t.name for t in ev.taps if t.name not in ev.claimed)
    evidence: dict[str, object] = {"taps": len(ev.taps), "leaked": leaked}
    if not leaked:
        return [
            result(
                "host.taps",
                "host",
                Status.OK,
                f"{len(ev.taps)} tap(s), each attached to a domain",
                evidence,
            )
        ]
    masters = {t.name: t.master for t in ev.taps}
    evidence |= {f"tap.{name}": f"master={masters[name] or '-'}" for name in leaked[:10]}
    return [
        result(
            "host.taps",
            "host",
            Status.FAIL,
            f"{len(leaked)} tap(s) attached to no domain: {', '.join(leaked[:10])}",
            evidence,
            [RemediationStep(f"Delete {name}", f"ip link delete {name}") for name in leaked[:10]],
        )
    ]


# -- gathering (I/O) ------------------------------------------------------------------------


async def _claiming_domains(sources: CheckSources) -> dict[str, list[str]]:
    """Domain -> its taps, for every domain libvirt holds a process for; read once
    for the orphan and the tap part of one diagnosis (not to be changed)."""
    return await shared_read("claiming-domains", lambda: _read_claiming_domains(sources))


async def _read_claiming_domains(sources: CheckSources) -> dict[str, list[str]]:
    claimed = {}
    for record, xml in await sources.domains.domains_with_xml(PROCESS_STATES):
        claimed[record.name] = [nic.tap for nic in parse_domain_spec(xml).interfaces if nic.tap]
    return claimed


def _scan_orphan_evidence(sources: CheckSources, domains: dict[str, list[str]]) -> OrphanEvidence:
    pid_files = read_pid_files(sources.root)
    processes = scan_qemu_processes(
        sources.process_scope, [pid for pid in pid_files.values() if pid is not None]
    )
    return OrphanEvidence(sources.node, tuple(processes), _claimed(pid_files, domains))


def _claimed(
    pid_files: dict[str, int | None], domains: dict[str, list[str]]
) -> dict[str, int | None]:
    return {name: pid_files.get(name) for name in domains}


def _claim_again(
    sources: CheckSources, scanned: OrphanEvidence, domains: dict[str, list[str]]
) -> OrphanEvidence:
    """The scanned processes against a newer listing and the pid files as they are now."""
    return OrphanEvidence(
        sources.node, scanned.processes, _claimed(read_pid_files(sources.root), domains)
    )


async def gather_orphans(sources: CheckSources) -> OrphanEvidence:
    try:
        domains = await _claiming_domains(sources)
    except LibvirtUnavailable as exc:
        return OrphanEvidence(sources.node, libvirt_error=str(exc))
    evidence = await off_loop(_scan_orphan_evidence, sources, domains)
    if find_orphans(evidence):
        # The listing predates the process scan (and may be the tap part's): a
        # domain started in between would leave its QEMU looking orphaned. Ask again;
        # a process no domain claims after that is reported.
        try:
            domains = await _read_claiming_domains(sources)
        except LibvirtUnavailable as exc:
            return OrphanEvidence(sources.node, libvirt_error=str(exc))
        evidence = await off_loop(_claim_again, sources, evidence, domains)
    return evidence


def _walk_lock_files(root: HostRoot) -> list[str]:
    found: list[str] = []
    pending = [(folder, 0) for folder in LOCK_FOLDERS]
    while pending and len(found) < _WALK_MAX_FILES:
        folder, depth = pending.pop()
        try:
            entries = root.scan_dir(folder)
        except OSError:
            continue
        for name, kind in entries:  # links are not followed
            path = f"{folder}/{name}"
            if kind == "dir":
                if depth < _WALK_DEPTH:
                    pending.append((path, depth + 1))
            elif kind == "file" and name.endswith(LOCK_SUFFIXES):
                found.append(path)
    return sorted(found)


def _lock_holders(real: Path, holders: dict[tuple[int, int, int], list[int]]) -> list[int]:
    st = real.stat()
    return holders.get((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino), [])


def gather_locks(sources: CheckSources) -> LockEvidence:
    root = sources.root
    try:
        # The real /proc/locks: locks are held by processes, which are global.
        holders = parse_proc_locks(Path("/proc/locks").read_text())
    except OSError:
        holders = {}
    files = []
    for path in _walk_lock_files(root):
        try:
            pid = parse_pid_file(root.read_text(path, max_bytes=64))
            if pid is not None:
                files.append(LockFile(path, pid, pid_alive(pid), "content"))
                continue
            live = [p for p in _lock_holders(root.resolve(path), holders) if pid_alive(p)]
        except OSError:
            continue  # removed while we looked
        files.append(
            LockFile(path, live[0] if live else None, bool(live), "fcntl" if live else "none")
        )
    return LockEvidence(sources.node, tuple(files))


def _tap_links(sources: CheckSources) -> list[LinkInfo]:
    return [
        link
        for link in sources.link_source()
        if link.name.startswith(sources.tap_prefixes) and link.kind in TAP_KINDS
    ]


async def gather_taps(sources: CheckSources) -> TapEvidence:
    try:
        domains = await _claiming_domains(sources)
    except LibvirtUnavailable as exc:
        return TapEvidence(sources.node, libvirt_error=str(exc))
    try:
        taps = await off_loop(_tap_links, sources)
    except OSError as exc:
        return TapEvidence(sources.node, error=str(exc))
    claimed = _claimed_taps(domains)
    if any(tap.name not in claimed for tap in taps):
        # The listing may be the orphan part's, from before the links were read: a
        # domain started since would leave its tap looking leaked. Ask again.
        try:
            claimed = _claimed_taps(await _read_claiming_domains(sources))
        except LibvirtUnavailable as exc:
            return TapEvidence(sources.node, libvirt_error=str(exc))
    return TapEvidence(sources.node, tuple(taps), claimed)


def _claimed_taps(domains: dict[str, list[str]]) -> dict[str, str]:
    """tap -> the domain whose XML names it."""
    return {tap: name for name, domain_taps in domains.items() for tap in domain_taps}
