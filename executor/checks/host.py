"""``diag host``: host facts, libvirt, cgroup/pidfd, disk and memory pressure.

Each part is an evidence dataclass, a pure ``evaluate_*`` and a ``gather_*``;
:class:`HostEvidence` bundles the parts (a part left None was not gathered) and
:func:`evaluate_host` evaluates them in a stable order, including the
leftover checks of :mod:`novaops.executor.checks.leftovers`. Check ids:

* ``host.kernel``, ``host.virt``, ``host.kvm``: from :mod:`novaops.executor.facts`.
* ``host.libvirt``: reachable, versions, guest types from the capabilities.
* ``host.cgroup``: backend (v1/v2/hybrid, from the host root's
  ``/sys/fs/cgroup``) and pidfd support (``os.pidfd_open`` on this kernel). A
  combination that degrades a control is a warn whose evidence key
  ``degraded_controls`` (comma separated) names it, for
  ``novaops_control_degraded_total{control}``: ``cgroup-kill`` (no
  ``cgroup.kill`` on a v1/hybrid/unknown backend: leftover cgroups are emptied
  pid by pid) and ``pidfd-signal`` (no pidfd: orphans are signalled by pid after
  re-checking identity, racing pid reuse).
* ``host.disk`` (one per filesystem), ``host.memory``: percent used against
  :class:`~novaops.executor.checks.sources.Thresholds` (warn 85 %, fail 95 %).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from novaops.executor.checks.domains import parse_capabilities
from novaops.executor.checks.leftovers import (
    LockEvidence,
    OrphanEvidence,
    TapEvidence,
    evaluate_locks,
    evaluate_orphans,
    evaluate_taps,
)
from novaops.executor.checks.model import (
    CheckResult,
    Recovery,
    RemediationStep,
    Status,
    recover_command,
    result,
)
from novaops.executor.checks.sources import CheckSources, Thresholds
from novaops.executor.facts import (
    parse_cgroup_backend,
    parse_host_evidence,
    read_cgroup_paths,
    read_host_evidence,
)
from novaops.executor.libvirt_access import LibvirtUnavailable

# -- evidence --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BasicsEvidence:
    node: str
    kernel: str = ""
    arch: str = ""
    virt_flags: tuple[str, ...] = ()
    kvm_present: bool = False
    kvm_accessible: bool = False


@dataclass(frozen=True)
class LibvirtEvidence:
    node: str
    uri: str
    error: str = ""
    version: str = ""
    hypervisor: str = ""
    host_arch: str = ""
    guests: tuple[str, ...] = ()
    capabilities_error: str = ""


@dataclass(frozen=True)
class CgroupEvidence:
    node: str
    backend: str
    pidfd: bool
    pidfd_error: str = ""


@dataclass(frozen=True)
class FilesystemUsage:
    """One filesystem under the watched folders (folders on the same device share it)."""

    paths: tuple[str, ...]
    total_bytes: int
    used_bytes: int
    total_inodes: int = 0
    used_inodes: int = 0


@dataclass(frozen=True)
class DiskEvidence:
    node: str
    filesystems: tuple[FilesystemUsage, ...] = ()
    absent: tuple[str, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True)
class MemoryEvidence:
    node: str
    total_kib: int = 0
    available_kib: int = 0
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True)
class HostEvidence:
    """All host evidence; a part left None was not gathered (health runs a subset)."""

    node: str
    basics: BasicsEvidence | None = None
    libvirt: LibvirtEvidence | None = None
    cgroup: CgroupEvidence | None = None
    disk: DiskEvidence | None = None
    memory: MemoryEvidence | None = None
    orphans: OrphanEvidence | None = None
    locks: LockEvidence | None = None
    taps: TapEvidence | None = None


# -- pure parsers ----------------------------------------------------------------------------


def _percent(used: int, total: int) -> float:
    return 100.0 * used / total if total > 0 else 0.0


# -- evaluation (pure) ----------------------------------------------------------------------


def evaluate_basics(ev: BasicsEvidence) -> list[CheckResult]:
    """host.kernel, host.virt, host.kvm."""
    results = []
    if ev.kernel:
        results.append(
            result(
                "host.kernel",
                "host",
                Status.OK,
                f"kernel {ev.kernel} ({ev.arch})",
                {"kernel": ev.kernel, "arch": ev.arch},
            )
        )
    else:
        results.append(
            result(
                "host.kernel",
                "host",
                Status.WARN,
                "kernel release unknown",
                {"arch": ev.arch},
                [RemediationStep("Read it by hand", "uname -r")],
            )
        )
    if ev.virt_flags:
        results.append(
            result(
                "host.virt",
                "host",
                Status.OK,
                f"hardware virtualization: {', '.join(ev.virt_flags)}",
                {"virt_flags": ev.virt_flags},
            )
        )
    else:
        results.append(
            result(
                "host.virt",
                "host",
                Status.FAIL,
                "no vmx/svm CPU flag: guests would run without KVM (TCG, very slow)",
                {"virt_flags": ""},
                [
                    RemediationStep(
                        "Enable VT-x/AMD-V in the firmware, then check",
                        "grep -cE 'vmx|svm' /proc/cpuinfo",
                    )
                ],
            )
        )
    kvm = {"kvm_present": ev.kvm_present, "kvm_accessible": ev.kvm_accessible}
    if ev.kvm_present and ev.kvm_accessible:
        results.append(result("host.kvm", "host", Status.OK, "/dev/kvm is usable", kvm))
    elif ev.kvm_present:
        results.append(
            result(
                "host.kvm",
                "host",
                Status.FAIL,
                "/dev/kvm exists but cannot be opened",
                kvm,
                [RemediationStep("Check its owner and mode", "ls -l /dev/kvm")],
            )
        )
    else:
        results.append(
            result(
                "host.kvm",
                "host",
                Status.FAIL,
                "/dev/kvm is missing",
                kvm,
                [RemediationStep("Load the KVM module", "modprobe kvm_intel || modprobe kvm_amd")],
            )
        )
    return results


def evaluate_libvirt(ev: LibvirtEvidence) -> list[CheckResult]:
    """host.libvirt."""
    evidence: dict[str, object] = {"uri": ev.uri}
    if ev.error:
        evidence["error"] = ev.error
        return [
            result(
                "host.libvirt",
                "host",
                Status.FAIL,
                f"libvirt unreachable: {ev.error}",
                evidence,
                [
                    RemediationStep(
                        "Reconnect the executor to libvirt",
                        recover_command(Recovery.RECONNECT_LIBVIRT, ev.node),
                    ),
                    RemediationStep("Check the daemon", "systemctl status libvirtd"),
                ],
            )
        ]
    evidence |= {"version": ev.version, "hypervisor": ev.hypervisor, "host_arch": ev.host_arch}
    evidence["guests"] = ev.guests
    if ev.capabilities_error or not ev.guests:
        evidence["capabilities_error"] = ev.capabilities_error
        why = ev.capabilities_error or "no guest types offered"
        return [
            result(
                "host.libvirt",
                "host",
                Status.WARN,
                f"libvirt {ev.version} answers but capabilities are unusable: {why}",
                evidence,
                [RemediationStep("Read the capabilities", "virsh capabilities")],
            )
        ]
    return [
        result(
            "host.libvirt",
            "host",
            Status.OK,
            f"libvirt {ev.version} answers ({ev.hypervisor}); {len(ev.guests)} guest type(s)",
            evidence,
        )
    ]


def degraded_controls(backend: str, pidfd: bool) -> list[str]:
    """Controls that fall back to a weaker mechanism on this backend/pidfd combination."""
    controls = []
    if backend != "v2":
        controls.append("cgroup-kill")
    if not pidfd:
        controls.append("pidfd-signal")
    return controls


def evaluate_cgroup(ev: CgroupEvidence) -> list[CheckResult]:
    """host.cgroup: a warn naming the degraded controls when backend and pidfd mismatch."""
    controls = degraded_controls(ev.backend, ev.pidfd)
    evidence: dict[str, object] = {
        "backend": ev.backend,
        "pidfd": ev.pidfd,
        "degraded_controls": controls,
    }
    if ev.pidfd_error:
        evidence["pidfd_error"] = ev.pidfd_error
    if not controls:
        return [result("host.cgroup", "host", Status.OK, "cgroup v2 with pidfd support", evidence)]
    why = []
    if "cgroup-kill" in controls:
        why.append(f"cgroup backend {ev.backend} has no cgroup.kill")
    if "pidfd-signal" in controls:
        why.append("pidfd_open is unavailable")
    return [
        result(
            "host.cgroup",
            "host",
            Status.WARN,
            f"degraded controls {', '.join(controls)}: {'; '.join(why)}",
            evidence,
            [
                RemediationStep(
                    "Boot with the unified cgroup hierarchy",
                    "grubby --update-kernel=ALL --args=systemd.unified_cgroup_hierarchy=1",
                ),
                RemediationStep("Confirm the mounted hierarchy", "stat -fc %T /sys/fs/cgroup"),
            ],
        )
    ]


def _pressure_status(percent: float, warn: float, fail: float) -> Status:
    if percent >= fail:
        return Status.FAIL
    if percent >= warn:
        return Status.WARN
    return Status.OK


def evaluate_disk(ev: DiskEvidence) -> list[CheckResult]:
    """host.disk, one per filesystem: the worse of space and inode use."""
    t = ev.thresholds
    if not ev.filesystems:
        return [
            result(
                "host.disk",
                "host",
                Status.WARN,
                "none of the watched folders exist",
                {"absent": ev.absent},
                [
                    RemediationStep(
                        "Check the libvirt folders",
                        "ls -ld /var/lib/libvirt/images /var/log/libvirt",
                    )
                ],
            )
        ]
    results = []
    for fs in ev.filesystems:
        space = _percent(fs.used_bytes, fs.total_bytes)
        inodes = _percent(fs.used_inodes, fs.total_inodes)
        used = max(space, inodes)
        status = _pressure_status(used, t.disk_warn_percent, t.disk_fail_percent)
        what = "inodes" if inodes > space else "space"
        evidence = {
            "paths": fs.paths,
            "space_used_percent": space,
            "inodes_used_percent": inodes,
            "free_bytes": fs.total_bytes - fs.used_bytes,
            "warn_percent": t.disk_warn_percent,
            "fail_percent": t.disk_fail_percent,
        }
        summary = f"{', '.join(fs.paths)}: {used:.0f}% of {what} used"
        steps = []
        if status is not Status.OK:
            steps = [
                RemediationStep("Find what fills it", f"du -xsh {fs.paths[0]}/* | sort -h | tail"),
                RemediationStep("Rotate and compress logs", "logrotate -f /etc/logrotate.conf"),
            ]
        results.append(result("host.disk", "host", status, summary, evidence, steps))
    return results


def evaluate_memory(ev: MemoryEvidence) -> list[CheckResult]:
    """host.memory: percent of memory not available."""
    t = ev.thresholds
    if ev.total_kib <= 0:
        return [
            result(
                "host.memory",
                "host",
                Status.WARN,
                "memory use unknown (no MemTotal)",
                {},
                [RemediationStep("Read it by hand", "free -m")],
            )
        ]
    used = _percent(ev.total_kib - ev.available_kib, ev.total_kib)
    status = _pressure_status(used, t.memory_warn_percent, t.memory_fail_percent)
    evidence = {"used_percent": used, "available_kib": ev.available_kib, "total_kib": ev.total_kib}
    steps = []
    if status is not Status.OK:
        steps = [
            RemediationStep(
                "See the largest domains", "virsh list --all && virsh domstats --balloon"
            )
        ]
    return [result("host.memory", "host", status, f"{used:.0f}% of memory in use", evidence, steps)]


def evaluate_host(ev: HostEvidence) -> list[CheckResult]:
    """Every host check whose evidence was gathered, in a stable order."""
    results: list[CheckResult] = []
    if ev.basics is not None:
        results += evaluate_basics(ev.basics)
    if ev.libvirt is not None:
        results += evaluate_libvirt(ev.libvirt)
    if ev.cgroup is not None:
        results += evaluate_cgroup(ev.cgroup)
    if ev.disk is not None:
        results += evaluate_disk(ev.disk)
    if ev.memory is not None:
        results += evaluate_memory(ev.memory)
    if ev.orphans is not None:
        results += evaluate_orphans(ev.orphans)
    if ev.locks is not None:
        results += evaluate_locks(ev.locks)
    if ev.taps is not None:
        results += evaluate_taps(ev.taps)
    return results


# -- gathering (I/O) ------------------------------------------------------------------------


def gather_basics(sources: CheckSources) -> BasicsEvidence:
    parsed = parse_host_evidence(read_host_evidence(sources.root))
    return BasicsEvidence(
        node=sources.node,
        kernel=parsed.kernel,
        arch=parsed.arch,
        virt_flags=tuple(parsed.virt_flags),
        kvm_present=parsed.kvm_present,
        kvm_accessible=parsed.kvm_accessible,
    )


async def gather_libvirt(sources: CheckSources) -> LibvirtEvidence:
    uri = sources.domains.uri
    try:
        info = await sources.domains.hypervisor_info()
    except LibvirtUnavailable as exc:
        return LibvirtEvidence(sources.node, uri, error=str(exc))
    try:
        host_arch, guests = parse_capabilities(await sources.domains.capabilities_xml())
    except (LibvirtUnavailable, ValueError) as exc:  # ET.ParseError is a ValueError
        return LibvirtEvidence(
            sources.node,
            uri,
            version=info.libvirt_version,
            hypervisor=info.hypervisor,
            capabilities_error=str(exc),
        )
    return LibvirtEvidence(
        sources.node,
        uri,
        version=info.libvirt_version,
        hypervisor=info.hypervisor,
        host_arch=host_arch,
        guests=tuple(guests),
    )


def probe_pidfd() -> tuple[bool, str]:
    """Whether pidfd_open exists and works on this kernel (tried on our own pid)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return False, "os.pidfd_open is missing (Python or libc too old)"
    try:
        fd = pidfd_open(os.getpid())
    except OSError as exc:
        return False, f"pidfd_open failed: {exc.strerror}"
    os.close(fd)
    return True, ""


def gather_cgroup(sources: CheckSources) -> CgroupEvidence:
    pidfd, error = probe_pidfd()
    backend = parse_cgroup_backend(read_cgroup_paths(sources.root))
    return CgroupEvidence(sources.node, backend, pidfd, error)


def gather_disk(sources: CheckSources) -> DiskEvidence:
    by_device: dict[int, tuple[list[str], FilesystemUsage]] = {}
    absent = []
    for path in sources.pressure_paths:
        if not sources.root.is_dir(path):
            absent.append(path)
            continue
        real = sources.root.resolve(path)
        try:
            device = real.stat().st_dev
            usage = shutil.disk_usage(real)
            vfs = os.statvfs(real)
        except OSError:
            absent.append(path)
            continue
        if device in by_device:
            by_device[device][0].append(path)
            continue
        by_device[device] = (
            [path],
            FilesystemUsage(
                paths=(),
                total_bytes=usage.total,
                used_bytes=usage.total - usage.free,
                total_inodes=vfs.f_files,
                used_inodes=vfs.f_files - vfs.f_ffree,
            ),
        )
    filesystems = tuple(
        FilesystemUsage(
            tuple(paths), fs.total_bytes, fs.used_bytes, fs.total_inodes, fs.used_inodes
        )
        for paths, fs in by_device.values()
    )
    return DiskEvidence(sources.node, filesystems, tuple(absent), sources.thresholds)


def gather_memory(sources: CheckSources) -> MemoryEvidence:
    try:
        text = sources.root.read_text("/proc/meminfo")
    except OSError:
        return MemoryEvidence(sources.node, thresholds=sources.thresholds)
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0])
    return MemoryEvidence(
        sources.node,
        total_kib=values.get("MemTotal", 0),
        available_kib=values.get("MemAvailable", values.get("MemFree", 0)),
        thresholds=sources.thresholds,
    )
