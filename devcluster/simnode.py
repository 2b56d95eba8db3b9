"""Simulated hypervisor nodes: a libvirt test-driver document plus a host root tree.

A simulated node is planned by a pure function of (node name, index, seed) —
:func:`plan_node` — and rendered by pure functions (:func:`render_libvirt_xml`,
:func:`render_host_files`), so the same inputs always give byte-identical
output. Only :func:`write_sim_node` touches the disk.

Paths inside the libvirt XML are *host* paths (``/var/lib/libvirt/images/...``),
exactly as libvirt reports them on a real host. The executor resolves every
host path under its ``host_root``, the same way an executor running in a
container with the host's ``/`` mounted at ``/host`` would. That keeps the XML
independent of where the dev cluster lives.

Each node carries a few healthy running domains and the realistic faults:

* one crashed domain (``<test:runstate>6</test:runstate>``), with an error in its QEMU log;
* one paused domain (``3``);
* one shut-off domain whose disk file is missing (it cannot be started again);
* one shut-off domain whose disk is a qcow2 overlay whose backing file is missing
  (a golden image deleted under it: it cannot be started again either).

The host side of a node — stand-in QEMU processes, an orphan, a stale lock, the
bridge and taps, a container — is planned here too (:func:`plan_host`, pure) and
made real by :mod:`novaops.devcluster.simhost`.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import os
import random
import shutil
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from xml.sax.saxutils import escape, quoteattr

from novaops.pki.issue import write_atomic

log = logging.getLogger(__name__)

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
BRIDGE = "virbr0"
IMAGES_DIR = PurePosixPath("/var/lib/libvirt/images")
QEMU_LOG_DIR = PurePosixPath("/var/log/libvirt/qemu")
QEMU_RUN_DIR = PurePosixPath("/run/libvirt/qemu")
LIBVIRTD_LOG = PurePosixPath("/var/log/libvirt/libvirtd.log")
KERNEL_RELEASE = "6.1.0-18-amd64"
DISK_BYTES = 64 * 2**20
DISK_SIZE = f"{DISK_BYTES // 2**20}M"  # as qemu-img create takes it
# A fixed epoch so generated timestamps never depend on the wall clock.
_EPOCH = 1_717_200_000  # 2024-06-01T00:00:00Z


class DomainState(enum.IntEnum):
    """libvirt ``virDomainState`` codes, as the test driver's ``test:runstate`` takes them."""

    RUNNING = 1
    PAUSED = 3
    SHUTOFF = 5
    CRASHED = 6


class Fault(enum.Enum):
    CRASHED = "crashed"
    PAUSED = "paused"
    MISSING_DISK = "missing-disk"
    MISSING_BACKING = "missing-backing"


@dataclass(frozen=True)
class SimDomain:
    """One domain of a simulated node. Paths are host paths (see the module docstring)."""

    name: str
    uuid: str
    state: DomainState
    fault: Fault | None
    memory_kib: int
    vcpus: int
    disk: PurePosixPath
    disk_present: bool
    mac: str
    tap: str
    bridge: str = BRIDGE
    # The backing file named in the disk's qcow2 header (None: a standalone image).
    # Always absent on the node: written for the overlay, then deleted.
    backing: PurePosixPath | None = None

    @property
    def qemu_log(self) -> PurePosixPath:
        return QEMU_LOG_DIR / f"{self.name}.log"

    @property
    def pid_file(self) -> PurePosixPath:
        """Where libvirt keeps the QEMU pid of a running domain."""
        return QEMU_RUN_DIR / f"{self.name}.pid"


@dataclass(frozen=True)
class CpuSpec:
    sockets: int
    cores: int
    threads: int
    mhz: int
    model_name: str

    @property
    def count(self) -> int:
        return self.sockets * self.cores * self.threads


@dataclass(frozen=True)
class SimNodeSpec:
    """Everything that defines a simulated node; a pure function of (name, index, seed)."""

    name: str
    index: int
    seed: int
    machine_id: str
    cpu: CpuSpec
    memory_kib: int
    boot_time: int
    domains: tuple[SimDomain, ...]
    kernel_release: str = KERNEL_RELEASE

    def domain(self, name: str) -> SimDomain:
        for dom in self.domains:
            if dom.name == name:
                return dom
        raise KeyError(name)

    def with_fault(self, fault: Fault) -> SimDomain:
        for dom in self.domains:
            if dom.fault is fault:
                return dom
        raise KeyError(fault.value)


@dataclass(frozen=True)
class SimNodePaths:
    """Where a written simulated node lives."""

    node_dir: Path
    libvirt_xml: Path
    host_root: Path

    @property
    def libvirt_uri(self) -> str:
        return f"test://{self.libvirt_xml.resolve()}"


def _mac(rng: random.Random) -> str:
    # 52:54:00 is QEMU's OUI, as libvirt assigns.
    return "52:54:00:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(3))


def plan_node(name: str, index: int, seed: int = 0) -> SimNodeSpec:
    """Plan a simulated node. Domain names start with the node name, so they are
    unique across a cluster whose node names are unique."""
    rng = random.Random(f"novaops-simnode:{seed}:{name}:{index}")
    cpu = CpuSpec(
        sockets=1,
        cores=rng.choice((4, 8)),
        threads=2,
        mhz=rng.choice((2200, 2400, 2900)),
        model_name="Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
    )
    web_count = rng.choice((2, 3))
    layout: list[tuple[str, DomainState, Fault | None]] = [
        (f"{name}-web-{i}", DomainState.RUNNING, None) for i in range(1, web_count + 1)
    ]
    layout += [
        (f"{name}-db-1", DomainState.CRASHED, Fault.CRASHED),
        (f"{name}-cache-1", DomainState.PAUSED, Fault.PAUSED),
        (f"{name}-build-1", DomainState.SHUTOFF, Fault.MISSING_DISK),
        (f"{name}-batch-1", DomainState.SHUTOFF, Fault.MISSING_BACKING),
    ]
    domains = []
    for n, (dom_name, state, fault) in enumerate(layout):
        domains.append(
            SimDomain(
                name=dom_name,
                uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                state=state,
                fault=fault,
                memory_kib=rng.choice((1, 2, 4)) * 1024 * 1024,
                vcpus=rng.choice((1, 2, 4)),
                disk=IMAGES_DIR / f"{dom_name}.qcow2",
                disk_present=fault is not Fault.MISSING_DISK,
                mac=_mac(rng),
                # libvirt discards target names starting with "vnet" (reserved for
                # names it generates) and the test driver substitutes "testnetN", so
                # use a prefix it keeps; unique per cluster, within IFNAMSIZ (15).
                tap=f"vtap{index}-{n}",
                backing=(
                    IMAGES_DIR / f"{dom_name}-base.qcow2"
                    if fault is Fault.MISSING_BACKING
                    else None
                ),
            )
        )
    return SimNodeSpec(
        name=name,
        index=index,
        seed=seed,
        machine_id=f"{rng.getrandbits(128):032x}",
        cpu=cpu,
        memory_kib=rng.choice((32, 64, 128)) * 1024 * 1024,
        boot_time=_EPOCH + rng.randrange(86_400),
        domains=tuple(domains),
    )


# -- libvirt test driver document --------------------------------------------------------


def _domain_xml(dom: SimDomain) -> str:
    runstate = (
        f"    <test:runstate>{int(dom.state)}</test:runstate>\n"
        if dom.state is not DomainState.RUNNING
        else ""
    )
    return (
        f"  <domain type='test' xmlns:test={quoteattr(TEST_NS)}>\n"
        f"    <name>{escape(dom.name)}</name>\n"
        f"    <uuid>{dom.uuid}</uuid>\n"
        f"    <memory unit='KiB'>{dom.memory_kib}</memory>\n"
        f"    <currentMemory unit='KiB'>{dom.memory_kib}</currentMemory>\n"
        f"    <vcpu>{dom.vcpus}</vcpu>\n"
        "    <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>\n"
        "    <on_crash>preserve</on_crash>\n"
        "    <devices>\n"
        "      <disk type='file' device='disk'>\n"
        "        <driver name='qemu' type='qcow2'/>\n"
        f"        <source file={quoteattr(str(dom.disk))}/>\n"
        "        <target dev='vda' bus='virtio'/>\n"
        "      </disk>\n"
        "      <interface type='bridge'>\n"
        f"        <mac address='{dom.mac}'/>\n"
        f"        <source bridge={quoteattr(dom.bridge)}/>\n"
        f"        <target dev={quoteattr(dom.tap)}/>\n"
        "        <model type='virtio'/>\n"
        "      </interface>\n"
        "    </devices>\n"
        f"{runstate}"
        "  </domain>\n"
    )


def render_libvirt_xml(spec: SimNodeSpec) -> str:
    """The node document for ``test:///path/to/it.xml``: host CPU and memory, the
    default network on virbr0, the default image pool and every domain."""
    cpu = spec.cpu
    parts = [
        "<node>\n",
        "  <cpu>\n",
        f"    <nodes>1</nodes><sockets>{cpu.sockets}</sockets>",
        f"<cores>{cpu.cores}</cores><threads>{cpu.threads}</threads>\n",
        f"    <active>{cpu.count}</active><mhz>{cpu.mhz}</mhz><model>x86_64</model>\n",
        "  </cpu>\n",
        f"  <memory>{spec.memory_kib}</memory>\n",
        "  <network>\n",
        "    <name>default</name>\n",
        f"    <uuid>{uuid.uuid5(uuid.NAMESPACE_URL, f'novaops:{spec.name}:net')}</uuid>\n",
        f"    <bridge name='{BRIDGE}' stp='on' delay='0'/>\n",
        "    <forward mode='nat'/>\n",
        "    <ip address='192.168.122.1' netmask='255.255.255.0'>\n",
        "      <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp>\n",
        "    </ip>\n",
        "  </network>\n",
        "  <pool type='dir'>\n",
        "    <name>default</name>\n",
        f"    <uuid>{uuid.uuid5(uuid.NAMESPACE_URL, f'novaops:{spec.name}:pool')}</uuid>\n",
        "    <capacity unit='bytes'>107374182400</capacity>\n",
        "    <allocation unit='bytes'>0</allocation>\n",
        "    <available unit='bytes'>107374182400</available>\n",
        f"    <target><path>{IMAGES_DIR}</path></target>\n",
        "  </pool>\n",
    ]
    parts += [_domain_xml(dom) for dom in spec.domains]
    parts.append("</node>\n")
    return "".join(parts)


# -- host root tree ----------------------------------------------------------------------

_CPU_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush "
    "mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc nopl xtopology "
    "cpuid pni pclmulqdq vmx ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes "
    "xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch avx2 smep bmi2 erms "
    "avx512f avx512dq rdseed adx smap clflushopt clwb avx512cd avx512bw avx512vl"
)


def _timestamp(epoch: int) -> str:
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.000+0000")


def _cpuinfo(spec: SimNodeSpec) -> str:
    blocks = []
    for cpu_id in range(spec.cpu.count):
        blocks.append(
            f"processor\t: {cpu_id}\n"
            "vendor_id\t: GenuineIntel\n"
            "cpu family\t: 6\n"
            "model\t\t: 85\n"
            f"model name\t: {spec.cpu.model_name}\n"
            f"cpu MHz\t\t: {spec.cpu.mhz}.000\n"
            f"physical id\t: 0\n"
            f"core id\t\t: {cpu_id // spec.cpu.threads}\n"
            f"cpu cores\t: {spec.cpu.cores}\n"
            f"flags\t\t: {_CPU_FLAGS}\n"
        )
    return "\n".join(blocks) + "\n"


def _meminfo(spec: SimNodeSpec) -> str:
    total = spec.memory_kib
    used = sum(d.memory_kib for d in spec.domains if d.state is not DomainState.SHUTOFF)
    free = max(total - used - total // 10, 0)
    fields = [
        ("MemTotal", total),
        ("MemFree", free),
        ("MemAvailable", free + total // 20),
        ("Buffers", 204_800),
        ("Cached", total // 20),
        ("SwapTotal", 0),
        ("SwapFree", 0),
        ("HugePages_Total", 0),
    ]
    return "".join(
        f"{key}:{value:>16} kB\n" if not key.startswith("HugePages") else f"{key}:{value:>8}\n"
        for key, value in fields
    )


def _stat(spec: SimNodeSpec) -> str:
    lines = ["cpu  482113 1207 160322 91238112 20418 0 8822 0 0 0"]
    lines += [f"cpu{i} 60264 150 20040 11404764 2552 0 1102 0 0 0" for i in range(spec.cpu.count)]
    lines += [
        "ctxt 402982113",
        f"btime {spec.boot_time}",
        "processes 112044",
        "procs_running 2",
        "procs_blocked 0",
    ]
    return "\n".join(lines) + "\n"


def _libvirtd_log(spec: SimNodeSpec) -> str:
    t = spec.boot_time + 30
    lines = [f"{_timestamp(t)}: 812: info : libvirt version: 9.0.0, package: 9.0.0-4 (Debian)"]
    lines.append(f"{_timestamp(t)}: 812: info : hostname: {spec.name}")
    for n, dom in enumerate(spec.domains):
        when = _timestamp(t + 60 + n * 5)
        if dom.fault is Fault.CRASHED:
            lines.append(
                f"{when}: 812: error : qemuMonitorIO:578 : internal error: End of file "
                f"from qemu monitor (vm='{dom.name}')"
            )
        elif dom.fault is Fault.MISSING_DISK:
            lines.append(
                f"{when}: 812: error : qemuProcessStart:7512 : Cannot access storage file "
                f"'{dom.disk}': No such file or directory"
            )
        elif dom.fault is Fault.PAUSED:
            lines.append(
                f"{when}: 812: warning : qemuProcessHandleStop:713 : domain '{dom.name}' "
                "paused: I/O error"
            )
        elif dom.fault is Fault.MISSING_BACKING:
            lines.append(
                f"{when}: 812: error : virStorageSourceReportBrokenChain:1064 : Cannot access "
                f"backing file '{dom.backing}' of storage file '{dom.disk}' "
                "(as uid:64055, gid:64055): No such file or directory"
            )
    return "\n".join(lines) + "\n"


def _qemu_log(spec: SimNodeSpec, dom: SimDomain, n: int) -> str:
    t = spec.boot_time + 90 + n * 5
    lines = [
        f"{_timestamp(t)}: starting up libvirt version: 9.0.0, qemu version: 7.2.9, "
        f"kernel: {spec.kernel_release}, hostname: {spec.name}",
        f"LC_ALL=C /usr/bin/qemu-system-x86_64 -name guest={dom.name} -m {dom.memory_kib // 1024} "
        f"-smp {dom.vcpus} -uuid {dom.uuid} "
        f'-blockdev \'{{"driver":"file","filename":"{dom.disk}"}}\' '
        f"-netdev tap,fd=30,id=hostnet0 -device virtio-net-pci,mac={dom.mac}",
    ]
    if dom.fault is Fault.CRASHED:
        lines += [
            "KVM internal error. Suberror: 1",
            "emulation failure",
            f"{_timestamp(t + 3600)}: shutting down, reason=crashed",
        ]
    elif dom.fault is Fault.MISSING_DISK:
        lines += [
            f"{_timestamp(t + 7200)}: shutting down, reason=shutdown",
            f'qemu-system-x86_64: -blockdev {{"driver":"file","filename":"{dom.disk}"}}: '
            f"Could not open '{dom.disk}': No such file or directory",
        ]
    elif dom.fault is Fault.PAUSED:
        lines.append(f"{_timestamp(t + 1800)}: block I/O error in device 'drive-virtio-disk0'")
    elif dom.fault is Fault.MISSING_BACKING:
        lines += [
            f"{_timestamp(t + 5400)}: shutting down, reason=shutdown",
            f'qemu-system-x86_64: -blockdev {{"driver":"file","filename":"{dom.disk}"}}: '
            f"Could not open backing file: Could not open '{dom.backing}': "
            "No such file or directory",
        ]
    return "\n".join(lines) + "\n"


def render_host_files(spec: SimNodeSpec) -> dict[PurePosixPath, str]:
    """Text files of the node's host root, keyed by host path. Disk images are not
    here (see :func:`write_sim_node`): they are binary and made by qemu-img (or
    :func:`qcow2_image` without it)."""
    files: dict[PurePosixPath, str] = {
        PurePosixPath("/etc/hostname"): f"{spec.name}\n",
        PurePosixPath("/etc/machine-id"): f"{spec.machine_id}\n",
        PurePosixPath("/etc/os-release"): (
            'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
        ),
        PurePosixPath("/proc/cpuinfo"): _cpuinfo(spec),
        PurePosixPath("/proc/meminfo"): _meminfo(spec),
        PurePosixPath("/proc/stat"): _stat(spec),
        PurePosixPath("/proc/sys/kernel/osrelease"): f"{spec.kernel_release}\n",
        PurePosixPath("/proc/version"): (
            f"Linux version {spec.kernel_release} (debian-kernel@lists.debian.org) "
            "(gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1\n"
        ),
        PurePosixPath("/sys/fs/cgroup/cgroup.controllers"): (
            "cpuset cpu io memory hugetlb pids rdma misc\n"
        ),
        PurePosixPath("/dev/kvm"): "",
        LIBVIRTD_LOG: _libvirtd_log(spec),
    }
    for n, dom in enumerate(spec.domains):
        files[dom.qemu_log] = _qemu_log(spec, dom, n)
    return files


def host_path(host_root: Path, path: PurePosixPath) -> Path:
    """A host path (absolute, as libvirt reports it) inside a simulated host root."""
    return host_root / path.relative_to("/")


_QCOW2_CLUSTER = 65536


def qcow2_image(backing: str = "", size: int = DISK_BYTES) -> bytes:
    """An empty qcow2 (version 2) image of ``size`` bytes naming ``backing``, the way
    ``qemu-img create`` lays it out: header, refcount table, refcount block and L1
    table, one 64 KiB cluster each (``qemu-img check`` finds no errors). For hosts
    without qemu-img; ``size`` up to 4 TiB (what one cluster of L1 table maps)."""
    cluster = _QCOW2_CLUSTER
    name = backing.encode()
    l1_entries = max(1, -(-size // (cluster * (cluster // 8))))
    if l1_entries > cluster // 8 or len(name) > cluster - 72:
        raise ValueError("qcow2_image: size above 4 TiB or backing name too long")
    header = struct.pack(
        ">4sIQIIQIIQQIIQ",
        b"QFI\xfb",
        2,  # version
        72 if name else 0,  # backing_file_offset: right after this 72-byte header
        len(name),  # backing_file_size
        16,  # cluster_bits: 64 KiB clusters
        size,
        0,  # crypt_method
        l1_entries,  # l1_size
        3 * cluster,  # l1_table_offset
        cluster,  # refcount_table_offset
        1,  # refcount_table_clusters
        0,  # nb_snapshots
        0,  # snapshots_offset
    )
    refcount_table = struct.pack(">Q", 2 * cluster)
    refcount_block = struct.pack(">4H", 1, 1, 1, 1)  # the four clusters in use
    parts = (header + name, refcount_table, refcount_block, b"")
    return b"".join(part.ljust(cluster, b"\0") for part in parts)


def _qemu_img_create(qemu_img: str, path: Path, *options: str) -> None:
    subprocess.run(
        [qemu_img, "create", "-q", "-f", "qcow2", *options, str(path), DISK_SIZE],
        check=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _write_disk(path: Path, backing: Path | None = None) -> None:
    """A qcow2 image at path; with ``backing``, an overlay on it whose backing file is
    then deleted (named relative to the overlay's folder, as the host path resolves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    qemu_img = shutil.which("qemu-img")
    if backing is not None:
        relative = os.path.relpath(backing, path.parent)
        if qemu_img:
            backing.parent.mkdir(parents=True, exist_ok=True)
            _qemu_img_create(qemu_img, backing)
            _qemu_img_create(qemu_img, path, "-b", relative, "-F", "qcow2")
            backing.unlink()
        else:
            write_atomic(path, qcow2_image(relative))
    elif qemu_img:
        _qemu_img_create(qemu_img, path)
    else:
        write_atomic(path, qcow2_image())


def write_sim_node(spec: SimNodeSpec, node_dir: Path) -> SimNodePaths:
    """Write ``node_dir/libvirt.xml`` and ``node_dir/root/``. The root tree is
    replaced so every dev cluster starts with the same faults (a repaired fault of a
    previous run does not survive). ``node_dir/state`` is left alone."""
    paths = SimNodePaths(
        node_dir=node_dir,
        libvirt_xml=node_dir / "libvirt.xml",
        host_root=node_dir / "root",
    )
    if paths.host_root.exists():
        shutil.rmtree(paths.host_root)
    for rel, text in render_host_files(spec).items():
        write_atomic(host_path(paths.host_root, rel), text.encode())
    # Pid files are not written here: each stand-in QEMU writes its own once it runs
    # (simhost), so a pid file names a real stand-in, never a made-up pid.
    host_path(paths.host_root, QEMU_RUN_DIR).mkdir(parents=True, exist_ok=True)
    for dom in spec.domains:
        if dom.disk_present:
            backing = None if dom.backing is None else host_path(paths.host_root, dom.backing)
            _write_disk(host_path(paths.host_root, dom.disk), backing)
    host_path(paths.host_root, IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    write_atomic(paths.libvirt_xml, render_libvirt_xml(spec).encode())
    log.debug("simulated node %s written to %s", spec.name, node_dir)
    return paths


# -- host side: processes, locks, taps, a container ---------------------------------------

# The kernel's ceiling for pid_max on 64-bit Linux: no process ever gets a pid above
# it, so a lock naming one is stale on any machine, for as long as it exists.
PID_MAX_LIMIT = 4_194_304
CONTAINER_PORTS = (8080, 8081)
# Domains whose QEMU process is alive (a paused guest's process only stops its vCPUs)
# and whose taps exist, as libvirt keeps them.
PROCESS_DOMAIN_STATES = frozenset({DomainState.RUNNING, DomainState.PAUSED})


class HostFault(enum.Enum):
    ORPHAN = "orphan-qemu"
    STALE_LOCK = "stale-lock"
    TAP_OFF_BRIDGE = "tap-off-bridge"
    CLOSED_PORT = "closed-port"


@dataclass(frozen=True)
class StandIn:
    """A QEMU-like process: ``args`` follow the stand-in script on its command line
    (``-name guest=<guest>,...`` makes it QEMU-like to the checks). ``pid_file`` is
    the host path libvirt would keep its pid in (None: the orphan, nobody does)."""

    guest: str
    args: tuple[str, ...]
    pid_file: PurePosixPath | None
    taps: tuple[str, ...] = ()


@dataclass(frozen=True)
class SimTap:
    """A domain's tap device; ``attached`` is False for the one left off its bridge."""

    name: str
    domain: str
    attached: bool = True


@dataclass(frozen=True)
class SimContainer:
    """A runc-style container: it declares ``ports`` but listens on ``listening`` only."""

    id: str
    ports: tuple[int, ...]
    listening: tuple[int, ...]

    @property
    def state_dir(self) -> PurePosixPath:
        return PurePosixPath("/run/runc") / self.id

    @property
    def closed_ports(self) -> tuple[int, ...]:
        return tuple(p for p in self.ports if p not in self.listening)


@dataclass(frozen=True)
class SimHostPlan:
    """The host side of a simulated node; a pure function of its :class:`SimNodeSpec`."""

    node: str
    standins: tuple[StandIn, ...]
    orphan: StandIn
    bridge: str
    tap_prefix: str
    taps: tuple[SimTap, ...]
    stale_lock: PurePosixPath
    stale_lock_pid: int
    container: SimContainer

    @property
    def detached_tap(self) -> SimTap:
        return next(tap for tap in self.taps if not tap.attached)


def _qemu_args(
    guest: str,
    guest_uuid: str,
    memory_kib: int,
    vcpus: int,
    disk: PurePosixPath,
    nic: tuple[str, str] | None,
) -> tuple[str, ...]:
    """QEMU arguments as libvirt passes them (trimmed), for a stand-in's command line."""
    blockdev = json.dumps({"driver": "file", "filename": str(disk)}, separators=(",", ":"))
    args = [
        "-name",
        f"guest={guest},debug-threads=on",
        "-machine",
        "pc-q35-7.2,usb=off,accel=kvm",
        "-m",
        str(memory_kib // 1024),
        "-smp",
        str(vcpus),
        "-uuid",
        guest_uuid,
        "-no-user-config",
        "-nodefaults",
        "-blockdev",
        blockdev,
    ]
    if nic is not None:
        tap, mac = nic
        # ifname= (not libvirt's fd=): the stand-in opens the tap itself by name.
        args += ["-netdev", f"tap,ifname={tap},id=hostnet0"]
        args += ["-device", f"virtio-net-pci,netdev=hostnet0,mac={mac}"]
    return tuple(args)


def plan_host(spec: SimNodeSpec) -> SimHostPlan:
    """Plan the host side of a node. Its own random stream, so the domain plan (and
    the XML) do not change when this plan grows."""
    rng = random.Random(f"novaops-simhost:{spec.seed}:{spec.name}:{spec.index}")
    with_process = [d for d in spec.domains if d.state in PROCESS_DOMAIN_STATES]
    standins = tuple(
        StandIn(
            guest=d.name,
            args=_qemu_args(d.name, d.uuid, d.memory_kib, d.vcpus, d.disk, (d.tap, d.mac)),
            pid_file=d.pid_file,
            taps=(d.tap,),
        )
        for d in with_process
    )
    # The last running, fault-free domain loses its bridge port: its guest runs but
    # is cut off, which only the network checks notice.
    detached = [d for d in with_process if d.state is DomainState.RUNNING and d.fault is None][-1]
    taps = tuple(SimTap(d.tap, d.name, attached=d is not detached) for d in with_process)
    ghost = f"{spec.name}-ghost-1"
    orphan = StandIn(
        guest=ghost,
        args=_qemu_args(
            ghost,
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            rng.choice((1, 2)) * 1024 * 1024,
            rng.choice((1, 2)),
            IMAGES_DIR / f"{ghost}.qcow2",
            None,
        ),
        pid_file=None,
    )
    crashed = spec.with_fault(Fault.CRASHED)
    return SimHostPlan(
        node=spec.name,
        standins=standins,
        orphan=orphan,
        bridge=BRIDGE,
        tap_prefix=f"vtap{spec.index}-",
        taps=taps,
        # The crashed guest's QEMU died holding its lock; nobody removed the file.
        stale_lock=QEMU_RUN_DIR / f"{crashed.name}.lock",
        stale_lock_pid=PID_MAX_LIMIT + 1 + rng.randrange(100_000),
        container=SimContainer(
            id=f"{spec.name}-app-1", ports=CONTAINER_PORTS, listening=CONTAINER_PORTS[:1]
        ),
    )
