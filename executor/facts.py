"""Host facts: raw evidence read through the host root, then pure parsers.

:func:`read_host_evidence` does the I/O and never raises: a file that cannot be
read is recorded as ``None``. The ``parse_*`` functions and
:func:`build_host_facts` are pure (tested from data files), and turn missing
evidence into the empty/unknown value of each fact, never an error.
:func:`gather_host_facts` combines both with what libvirt says.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import HypervisorInfo, LibvirtGateway, LibvirtUnavailable
from novaops.v1 import common_pb2

VIRT_FLAGS = ("svm", "vmx")
CGROUP_ROOT = "/sys/fs/cgroup"
# Hierarchies a cgroup v1 host mounts under /sys/fs/cgroup (one folder each;
# co-mounted ones appear as "cpu,cpuacct" with "cpu" and "cpuacct" as links).
CGROUP_V1_CONTROLLERS = frozenset(
    {
        "blkio",
        "cpu",
        "cpuacct",
        "cpu,cpuacct",
        "cpuset",
        "devices",
        "freezer",
        "hugetlb",
        "memory",
        "misc",
        "net_cls",
        "net_prio",
        "net_cls,net_prio",
        "perf_event",
        "pids",
        "rdma",
    }
)
# The cgroup v2 mount of a hybrid host, next to the v1 hierarchies.
CGROUP_HYBRID_UNIFIED = "unified"

UNKNOWN = "unknown"


@dataclass(frozen=True)
class HostEvidence:
    """Raw evidence about a host; ``None`` means "could not be read"."""

    osrelease: str | None = None
    hostname: str | None = None
    cpuinfo: str | None = None
    meminfo: str | None = None
    stat: str | None = None
    # Entries under /sys/fs/cgroup relative to it: top-level names, plus
    # "unified/cgroup.controllers" when a hybrid v2 mount is there.
    cgroup_paths: tuple[str, ...] = ()
    kvm_present: bool = False
    kvm_accessible: bool = False
    # From this machine's uname; the kernel release is only used as a fallback
    # when the host root is "/" (a simulated host root has its own kernel).
    uname_machine: str = ""
    uname_release: str | None = None
    uname_nodename: str | None = None
    cpu_count_fallback: int | None = None


@dataclass(frozen=True)
class LibvirtFacts:
    """What libvirt said, or why it could not be asked."""

    uri: str
    info: HypervisorInfo | None = None
    error: str = ""


@dataclass(frozen=True)
class ParsedHostFacts:
    """Host facts without libvirt, in plain types (for tests and logs)."""

    hostname: str
    kernel: str
    arch: str
    virt_flags: list[str]
    kvm_present: bool
    kvm_accessible: bool
    cgroup_backend: str
    cpu_count: int
    memory_bytes: int
    boot_time: int | None


def first_line(text: str | None) -> str:
    """The first non-empty line of text, stripped; "" when there is none."""
    if text is None:
        return ""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


@functools.lru_cache(maxsize=16)
def _virt_flags(cpuinfo: str) -> tuple[str, ...]:
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            found.update(flag for flag in value.split() if flag in VIRT_FLAGS)
    return tuple(sorted(found))


def parse_virt_flags(cpuinfo: str | None) -> list[str]:
    """Virtualization CPU flags ("svm", "vmx") present in /proc/cpuinfo, sorted
    (parsed once per distinct text: the heartbeat asks every interval)."""
    return list(_virt_flags(cpuinfo or ""))


_PROCESSOR_LINE = re.compile(r"^processor\s*\d*\s*:", re.MULTILINE)


def parse_cpu_count(cpuinfo: str | None) -> int:
    """Number of "processor" entries in /proc/cpuinfo; 0 when unknown."""
    return len(_PROCESSOR_LINE.findall(cpuinfo or ""))


def parse_meminfo_total_bytes(meminfo: str | None) -> int:
    """MemTotal of /proc/meminfo in bytes; 0 when missing or malformed."""
    for line in (meminfo or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "MemTotal":
            parts = value.split()
            if not parts or not parts[0].isdigit():
                return 0
            unit = parts[1].lower() if len(parts) > 1 else "b"
            scale = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "b": 1}.get(unit)
            return int(parts[0]) * scale if scale else 0
    return 0


def parse_boot_time(stat: str | None) -> int | None:
    """Boot time from the "btime" line of /proc/stat, in epoch seconds; None if absent."""
    for line in (stat or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "btime" and parts[1].isdigit():
            return int(parts[1])
    return None


def parse_cgroup_backend(paths: Iterable[str]) -> str:
    """ "v2", "v1", "hybrid" or "unknown" from entries under /sys/fs/cgroup.

    v2: cgroup.controllers at the top. v1: controller hierarchies (cpu, memory,
    ...) at the top. hybrid: v1 hierarchies plus a v2 mount at "unified".
    """
    entries = {p.strip("/") for p in paths}
    if "cgroup.controllers" in entries:
        return "v2"
    if entries & CGROUP_V1_CONTROLLERS:
        if f"{CGROUP_HYBRID_UNIFIED}/cgroup.controllers" in entries:
            return "hybrid"
        return "v1"
    return UNKNOWN


def parse_host_evidence(evidence: HostEvidence) -> ParsedHostFacts:
    """Host facts from evidence; unreadable evidence gives the fact's empty value."""
    kernel = first_line(evidence.osrelease) or (evidence.uname_release or "")
    cpu_count = parse_cpu_count(evidence.cpuinfo) or (evidence.cpu_count_fallback or 0)
    return ParsedHostFacts(
        hostname=first_line(evidence.hostname) or (evidence.uname_nodename or ""),
        kernel=kernel,
        arch=evidence.uname_machine,
        virt_flags=parse_virt_flags(evidence.cpuinfo),
        kvm_present=evidence.kvm_present,
        kvm_accessible=evidence.kvm_present and evidence.kvm_accessible,
        cgroup_backend=parse_cgroup_backend(evidence.cgroup_paths),
        cpu_count=cpu_count,
        memory_bytes=parse_meminfo_total_bytes(evidence.meminfo),
        boot_time=parse_boot_time(evidence.stat),
    )


def build_host_facts(evidence: HostEvidence, libvirt: LibvirtFacts) -> common_pb2.HostFacts:
    """The HostFacts message from host evidence and libvirt's answer."""
    parsed = parse_host_evidence(evidence)
    facts = common_pb2.HostFacts(
        hostname=parsed.hostname,
        kernel=parsed.kernel,
        arch=parsed.arch,
        virt_flags=parsed.virt_flags,
        kvm_present=parsed.kvm_present,
        kvm_accessible=parsed.kvm_accessible,
        cgroup_backend=parsed.cgroup_backend,
        libvirt_reachable=libvirt.info is not None,
        libvirt_version=libvirt.info.libvirt_version if libvirt.info else "",
        hypervisor=libvirt.info.hypervisor if libvirt.info else "",
        libvirt_uri=libvirt.uri,
        libvirt_error="" if libvirt.info else (libvirt.error or "libvirt not reachable"),
        cpu_count=parsed.cpu_count,
        memory_bytes=parsed.memory_bytes,
    )
    if parsed.boot_time is not None:
        facts.boot_time.CopyFrom(Timestamp(seconds=parsed.boot_time))
    return facts


def _read_or_none(root: HostRoot, host_path: str) -> str | None:
    try:
        return root.read_text(host_path)
    except (OSError, ValueError):
        return None


# /proc/cpuinfo is read at most this often per host root. The kernel builds it
# by asking every CPU for its clock (an interrupt per CPU); on a large host that
# is milliseconds, and the facts are read on every heartbeat. What the facts take
# from it (virtualization flags, CPU count) does not change while the host runs.
CPUINFO_MAX_AGE_SECONDS = 300.0
_cpuinfo_cache: dict[Path, tuple[float, tuple[int, int, int], str | None]] = {}


def read_cpuinfo(root: HostRoot, *, now: float | None = None) -> str | None:
    """The host's /proc/cpuinfo, re-read when the cached copy is older than
    CPUINFO_MAX_AGE_SECONDS or the file's identity (inode, size, mtime) changed
    (a simulated host's file being rewritten); None when unreadable."""
    now = time.monotonic() if now is None else now
    try:
        info = root.resolve("/proc/cpuinfo").stat()
        identity = (info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:
        return None
    cached = _cpuinfo_cache.get(root.path)
    if cached is not None and cached[1] == identity and now - cached[0] < CPUINFO_MAX_AGE_SECONDS:
        return cached[2]
    text = _read_or_none(root, "/proc/cpuinfo")
    _cpuinfo_cache[root.path] = (now, identity, text)
    return text


def read_cgroup_paths(root: HostRoot) -> tuple[str, ...]:
    """Top-level entries of the host's /sys/fs/cgroup, plus the hybrid marker file."""
    try:
        names = root.list_dir(CGROUP_ROOT)
    except OSError:
        return ()
    paths = list(names)
    if CGROUP_HYBRID_UNIFIED in names and root.exists(
        f"{CGROUP_ROOT}/{CGROUP_HYBRID_UNIFIED}/cgroup.controllers"
    ):
        paths.append(f"{CGROUP_HYBRID_UNIFIED}/cgroup.controllers")
    return tuple(paths)


def read_host_evidence(root: HostRoot) -> HostEvidence:
    """Read every piece of host evidence through root (blocking I/O; never raises)."""
    uname = os.uname()
    system = root.is_system_root
    return HostEvidence(
        osrelease=_read_or_none(root, "/proc/sys/kernel/osrelease"),
        hostname=_read_or_none(root, "/etc/hostname"),
        cpuinfo=read_cpuinfo(root),
        meminfo=_read_or_none(root, "/proc/meminfo"),
        stat=_read_or_none(root, "/proc/stat"),
        cgroup_paths=read_cgroup_paths(root),
        kvm_present=root.exists("/dev/kvm"),
        kvm_accessible=root.can_open_read_write("/dev/kvm"),
        uname_machine=uname.machine,
        uname_release=uname.release if system else None,
        uname_nodename=uname.nodename if system else None,
        cpu_count_fallback=os.cpu_count() if system else None,
    )


async def probe_libvirt(libvirt: LibvirtGateway) -> LibvirtFacts:
    """What libvirt says about itself; unreachable is an answer, not an exception."""
    try:
        info = await libvirt.hypervisor_info()
    except LibvirtUnavailable as exc:
        return LibvirtFacts(uri=libvirt.uri, error=str(exc))
    return LibvirtFacts(uri=libvirt.uri, info=info)


async def gather_host_facts(root: HostRoot, libvirt: LibvirtGateway) -> common_pb2.HostFacts:
    """Current HostFacts of this node. Never raises for an unreadable fact."""
    evidence, libvirt_facts = await asyncio.gather(
        asyncio.to_thread(read_host_evidence, root), probe_libvirt(libvirt)
    )
    return build_host_facts(evidence, libvirt_facts)
