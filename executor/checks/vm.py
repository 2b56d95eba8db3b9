"""``diag vm NAME``: the domain, its QEMU process, disks, recent events and taps.

:func:`gather_vm` reads the evidence (libvirt, the process table, files under the
host root, links); :func:`evaluate_vm` is pure. Check ids: ``vm.domain``,
``vm.process``, ``vm.disk`` (one per disk), ``vm.interface`` (one per
interface), ``vm.events``.

Backing chains: when the host root is ``/`` and qemu-img is installed, the
chain comes from ``qemu-img info --backing-chain --output=json -U``. Otherwise
(a simulated host root, whose images name backing files by *host* path that
qemu-img would look up in the real ``/``) — and whenever qemu-img fails, which
it does exactly when a backing file is missing — the chain is walked by reading
each qcow2 header through the host root, which names the missing file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import re
import struct
import subprocess
from dataclasses import dataclass

import psutil

from novaops.executor.checks.domains import (
    PROCESS_STATES,
    STATE_NAMES,
    TAP_STATES,
    DiskSpec,
    DomainSpec,
    parse_domain_spec,
)
from novaops.executor.checks.events import DomainEvent
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
    QEMU_PID_DIR,
    guest_name,
    parse_pid_file,
    scan_qemu_processes,
)
from novaops.executor.checks.sources import CheckSources
from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import (
    CRASHED,
    PAUSED,
    PMSUSPENDED,
    RUNNING,
    SHUTOFF,
    DomainNotFound,
    LibvirtUnavailable,
)

QEMU_LOG_DIR = "/var/log/libvirt/qemu"
_LOG_TAIL_BYTES = 256 * 1024
_HEADER_BYTES = 64 * 1024
_MAX_CHAIN = 16
_QCOW2_MAGIC = b"QFI\xfb"
# Paused for a reason an operator chose or a transient job: a warning, not a failure.
_BENIGN_PAUSE_REASONS = frozenset(
    {"user", "migration", "save", "dump", "snapshot", "from_snapshot", "starting_up"}
)


@dataclass(frozen=True)
class VmLimits:
    """When a QEMU process counts as runaway or bloated."""

    # CPU above (vCPUs + 1) x this percent: the emulator is spinning beyond its guest.
    cpu_percent_per_vcpu: float = 100.0
    # CPU of a paused domain's process above this percent.
    paused_cpu_percent: float = 50.0
    # RSS above configured memory x factor + slack.
    rss_factor: float = 1.5
    rss_slack_kib: int = 512 * 1024


@dataclass(frozen=True)
class ProcessSample:
    """The domain's QEMU process; ``names_guest`` is False when a pid file points at a
    process whose command line is not this guest's (pid reused)."""

    pid: int
    found_via: str
    status: str
    cpu_percent: float = 0.0
    rss_kib: int = 0
    names_guest: bool = True


@dataclass(frozen=True)
class ImageEvidence:
    """One file of a disk's backing chain (the source first). Paths are host paths."""

    path: str
    exists: bool
    readable: bool
    format: str = ""
    backing: str = ""


@dataclass(frozen=True)
class DiskEvidence:
    device: str
    source: str
    chain: tuple[ImageEvidence, ...] = ()
    chain_error: str = ""
    chain_via: str = "header"


@dataclass(frozen=True)
class InterfaceEvidence:
    tap: str
    bridge: str
    tap_exists: bool
    master: str = ""


@dataclass(frozen=True)
class VmEvidence:
    """Everything ``diag vm`` looked at. ``state`` is a virDomainState code."""

    node: str
    name: str
    libvirt_error: str = ""
    exists: bool = True
    state: int = 0
    reason: str = ""
    vcpus: int = 0
    memory_kib: int = 0
    pid_file_pid: int | None = None
    process: ProcessSample | None = None
    disks: tuple[DiskEvidence, ...] = ()
    interfaces: tuple[InterfaceEvidence, ...] = ()
    log_errors: tuple[str, ...] = ()
    events: tuple[DomainEvent, ...] = ()
    limits: VmLimits = VmLimits()


# -- pure parsers ----------------------------------------------------------------------------


def parse_qcow2_backing(header: bytes) -> str | None:
    """The backing file name stored in a qcow2 header; None for no backing or not qcow2."""
    if len(header) < 20 or header[:4] != _QCOW2_MAGIC:
        return None
    offset, size = struct.unpack(">QI", header[8:20])
    if offset == 0 or size == 0 or offset + size > len(header):
        return None
    return header[offset : offset + size].decode("utf-8", errors="replace")


def parse_qemu_img_chain(output: str) -> list[ImageEvidence]:
    """The chain in ``qemu-img info --backing-chain --output=json`` output (source
    first). Every listed file was opened by qemu-img, so exists and readable hold."""
    doc = json.loads(output)
    images = doc if isinstance(doc, list) else [doc]
    return [
        ImageEvidence(
            path=str(image.get("filename", "")),
            exists=True,
            readable=True,
            format=str(image.get("format", "")),
            backing=str(image.get("full-backing-filename") or image.get("backing-filename") or ""),
        )
        for image in images
    ]


_ERROR_LINE = re.compile(
    r"\b(error|failed|failure|could not|cannot|crashed|abort(ed)?|panic(ked)?|emulation failure)\b",
    re.IGNORECASE,
)


def parse_qemu_log_errors(text: str, limit: int = 5) -> tuple[str, ...]:
    """The last ``limit`` error lines of a QEMU log. The command-line line is skipped:
    its drive options (``werror=stop``) would match."""
    errors = [
        line.strip()
        for line in text.splitlines()
        if _ERROR_LINE.search(line) and not line.startswith("LC_ALL=") and " -name " not in line
    ]
    return tuple(errors[-limit:]) if limit > 0 else ()


def backing_host_path(image: str, backing: str) -> str:
    """A backing name as a host path: relative names are relative to the image's folder."""
    if backing.startswith("/"):
        return posixpath.normpath(backing)
    return posixpath.normpath(posixpath.join(posixpath.dirname(image), backing))


# -- evaluation (pure) ----------------------------------------------------------------------


def evaluate_vm(ev: VmEvidence) -> list[CheckResult]:
    """Every vm check from evidence; libvirt unreachable or no domain stops after vm.domain."""
    domain = _evaluate_domain(ev)
    if ev.libvirt_error or not ev.exists:
        return [domain]
    results = [domain]
    process = _evaluate_process(ev)
    if process is not None:
        results.append(process)
    results += [_evaluate_disk(ev, disk) for disk in ev.disks]
    results += [_evaluate_interface(ev, nic) for nic in ev.interfaces]
    results.append(_evaluate_events(ev))
    return results


def _log_step(name: str) -> RemediationStep:
    return RemediationStep(
        "Read the end of the domain's QEMU log", f"tail -n 50 {QEMU_LOG_DIR}/{name}.log"
    )


def _evaluate_domain(ev: VmEvidence) -> CheckResult:
    name, node = ev.name, ev.node
    if ev.libvirt_error:
        return result(
            "vm.domain",
            name,
            Status.ERROR,
            f"libvirt unreachable: {ev.libvirt_error}",
            {"error": ev.libvirt_error},
            [
                RemediationStep(
                    "Reconnect the executor to libvirt",
                    recover_command(Recovery.RECONNECT_LIBVIRT, node),
                ),
                RemediationStep("Check the libvirt daemon", "systemctl status libvirtd"),
            ],
        )
    if not ev.exists:
        return result(
            "vm.domain",
            name,
            Status.FAIL,
            f"no domain named {name} on {node}",
            {"exists": False},
            [RemediationStep("List the domains this node knows", "virsh list --all")],
        )
    state = STATE_NAMES.get(ev.state, f"state-{ev.state}")
    evidence = {"state": state, "reason": ev.reason, "vcpus": ev.vcpus, "memory_kib": ev.memory_kib}
    restart = RemediationStep(
        "Restart the domain", recover_command(Recovery.RESTART_DOMAIN, node, name)
    )
    resume = RemediationStep(
        "Resume the domain", recover_command(Recovery.RESUME_DOMAIN, node, name)
    )
    if ev.state == RUNNING:
        return result("vm.domain", name, Status.OK, f"running ({ev.reason})", evidence)
    if ev.state == PAUSED:
        if ev.reason in _BENIGN_PAUSE_REASONS:
            return result(
                "vm.domain", name, Status.WARN, f"paused ({ev.reason})", evidence, [resume]
            )
        steps = [_log_step(name)]
        if ev.reason == "ioerror":
            steps.insert(
                0,
                RemediationStep(
                    "Free space or fix the storage behind the domain's disks",
                    "df -h /var/lib/libvirt/images",
                ),
            )
        return result(
            "vm.domain", name, Status.FAIL, f"paused ({ev.reason})", evidence, [*steps, resume]
        )
    if ev.state == CRASHED:
        return result(
            "vm.domain",
            name,
            Status.FAIL,
            f"crashed ({ev.reason})",
            evidence,
            [_log_step(name), restart],
        )
    if ev.state == SHUTOFF:
        if ev.reason in ("crashed", "failed"):
            return result(
                "vm.domain",
                name,
                Status.FAIL,
                f"shut off ({ev.reason})",
                evidence,
                [_log_step(name), restart],
            )
        return result(
            "vm.domain",
            name,
            Status.WARN,
            f"shut off ({ev.reason})",
            evidence,
            [RemediationStep("Start the domain if it should run", f"virsh start {name}")],
        )
    if ev.state == PMSUSPENDED:
        return result(
            "vm.domain",
            name,
            Status.WARN,
            "suspended by guest power management",
            evidence,
            [RemediationStep("Wake the domain", f"virsh dompmwakeup {name}")],
        )
    steps = [RemediationStep("Inspect the domain's state", f"virsh domstate --reason {name}")]
    return result("vm.domain", name, Status.WARN, f"{state} ({ev.reason})", evidence, steps)


def _evaluate_process(ev: VmEvidence) -> CheckResult | None:
    name, node = ev.name, ev.node
    proc = ev.process
    restart = RemediationStep(
        "Restart the domain", recover_command(Recovery.RESTART_DOMAIN, node, name)
    )
    pid_file = f"{QEMU_PID_DIR}/{name}.pid"
    if ev.state not in PROCESS_STATES:
        if proc is None:
            return None
        return result(
            "vm.process",
            name,
            Status.WARN,
            f"QEMU process {proc.pid} still runs for a {STATE_NAMES.get(ev.state, '?')} domain",
            {"pid": proc.pid, "found_via": proc.found_via, "status": proc.status},
            [
                RemediationStep(
                    "Terminate QEMU processes no domain claims",
                    recover_command(Recovery.TERMINATE_ORPHANS, node),
                )
            ],
        )
    if proc is None:
        if ev.state == CRASHED:
            return None  # on_crash=destroy: no process is expected; vm.domain says crashed
        evidence: dict[str, object] = {"pid_file": pid_file}
        if ev.pid_file_pid is not None:
            evidence["pid_file_pid"] = ev.pid_file_pid
            summary = f"no QEMU process: pid file names pid {ev.pid_file_pid}, which is gone"
        else:
            summary = "no QEMU process found (no pid file, no -name guest= command line)"
        return result("vm.process", name, Status.FAIL, summary, evidence, [restart])
    evidence = {
        "pid": proc.pid,
        "found_via": proc.found_via,
        "status": proc.status,
        "cpu_percent": proc.cpu_percent,
        "rss_kib": proc.rss_kib,
        "memory_kib": ev.memory_kib,
    }
    limits = ev.limits
    if not proc.names_guest:
        return result(
            "vm.process",
            name,
            Status.WARN,
            f"pid file names pid {proc.pid}, which is not this domain's QEMU (pid reused)",
            evidence,
            [
                RemediationStep(
                    "Compare with libvirt's view",
                    f"virsh qemu-monitor-command {name} --hmp 'info status'",
                ),
                restart,
            ],
        )
    if proc.status == psutil.STATUS_ZOMBIE:
        return result(
            "vm.process",
            name,
            Status.FAIL,
            f"QEMU process {proc.pid} is a zombie",
            evidence,
            [restart],
        )
    if proc.status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
        return result(
            "vm.process",
            name,
            Status.FAIL,
            f"QEMU process {proc.pid} is stopped ({proc.status})",
            evidence,
            [RemediationStep("Let the process continue", f"kill -CONT {proc.pid}")],
        )
    cpu_limit = (max(ev.vcpus, 1) + 1) * limits.cpu_percent_per_vcpu
    if ev.state == PAUSED:
        cpu_limit = limits.paused_cpu_percent
    if proc.cpu_percent > cpu_limit:
        evidence["cpu_limit_percent"] = cpu_limit
        return result(
            "vm.process",
            name,
            Status.WARN,
            f"QEMU process {proc.pid} uses {proc.cpu_percent:.0f}% CPU"
            f" (runaway above {cpu_limit:.0f}%)",
            evidence,
            [RemediationStep("See which threads spin", f"top -H -p {proc.pid}"), restart],
        )
    rss_limit = int(ev.memory_kib * limits.rss_factor) + limits.rss_slack_kib
    if ev.memory_kib and proc.rss_kib > rss_limit:
        evidence["rss_limit_kib"] = rss_limit
        return result(
            "vm.process",
            name,
            Status.WARN,
            f"QEMU RSS {proc.rss_kib // 1024} MiB is far beyond the configured "
            f"{ev.memory_kib // 1024} MiB",
            evidence,
            [RemediationStep("Inspect the process's memory", f"pmap -x {proc.pid}"), restart],
        )
    return result(
        "vm.process", name, Status.OK, f"QEMU process {proc.pid} is {proc.status}", evidence
    )


def _evaluate_disk(ev: VmEvidence, disk: DiskEvidence) -> CheckResult:
    name = ev.name
    evidence: dict[str, object] = {
        "device": disk.device,
        "source": disk.source,
        "chain": [image.path for image in disk.chain],
        "chain_via": disk.chain_via,
    }
    inspect = RemediationStep(
        "Inspect the image chain", f"qemu-img info --backing-chain -U {disk.source}"
    )
    for depth, image in enumerate(disk.chain):
        what = "source" if depth == 0 else f"backing file (depth {depth})"
        if not image.exists or not image.readable:
            problem = "is missing" if not image.exists else "is not readable"
            evidence["broken"] = image.path
            steps = [
                RemediationStep(
                    f"Restore {image.path} from backup or re-create it", f"ls -l {image.path}"
                ),
                inspect,
            ]
            if depth == 0:
                steps.append(
                    RemediationStep("Or point the disk at another image", f"virsh edit {name}")
                )
            return result(
                "vm.disk",
                name,
                Status.FAIL,
                f"{disk.device}: {what} {image.path} {problem}",
                evidence,
                steps,
            )
    if disk.chain_error:
        evidence["error"] = disk.chain_error
        return result(
            "vm.disk",
            name,
            Status.WARN,
            f"{disk.device}: backing chain not fully read: {disk.chain_error}",
            evidence,
            [inspect],
        )
    backing = len(disk.chain) - 1
    return result(
        "vm.disk",
        name,
        Status.OK,
        f"{disk.device}: {disk.source} readable"
        + (f" with {backing} backing file(s)" if backing else ""),
        evidence,
    )


def _evaluate_interface(ev: VmEvidence, nic: InterfaceEvidence) -> CheckResult:
    name, node = ev.name, ev.node
    evidence: dict[str, object] = {
        "tap": nic.tap,
        "bridge": nic.bridge,
        "tap_exists": nic.tap_exists,
        "master": nic.master,
    }
    repair = RemediationStep(
        f"Re-attach the domain's taps to {nic.bridge} and bring it up",
        recover_command(Recovery.REPAIR_NETWORK, node, nic.bridge),
    )
    if ev.state not in TAP_STATES:
        return result(
            "vm.interface",
            name,
            Status.OK,
            f"domain not running; no tap expected on {nic.bridge}",
            evidence,
        )
    if not nic.tap:
        return result(
            "vm.interface",
            name,
            Status.WARN,
            f"interface on {nic.bridge} has no tap name",
            evidence,
            [RemediationStep("Show the domain's interfaces", f"virsh domiflist {name}")],
        )
    if not nic.tap_exists:
        return result(
            "vm.interface",
            name,
            Status.FAIL,
            f"tap {nic.tap} does not exist",
            evidence,
            [repair],
        )
    if nic.master != nic.bridge:
        where = f"in {nic.master}" if nic.master else "in no bridge"
        return result(
            "vm.interface",
            name,
            Status.FAIL,
            f"tap {nic.tap} is {where}, not in {nic.bridge}",
            evidence,
            [
                repair,
                RemediationStep(
                    "Or attach it by hand", f"ip link set {nic.tap} master {nic.bridge}"
                ),
            ],
        )
    return result("vm.interface", name, Status.OK, f"tap {nic.tap} is in {nic.bridge}", evidence)


def _evaluate_events(ev: VmEvidence) -> CheckResult:
    alarming = [e for e in ev.events if e.alarming]
    evidence: dict[str, object] = {
        "log_errors": len(ev.log_errors),
        "events": len(ev.events),
        "alarming_events": len(alarming),
    }
    if ev.events:
        last = ev.events[-1]
        evidence["last_event"] = f"{last.event_id} {last.event} {last.detail}".strip()
    if not ev.log_errors and not alarming:
        return result("vm.events", ev.name, Status.OK, "no recent errors", evidence)
    for i, line in enumerate(ev.log_errors, 1):
        evidence[f"log_error_{i}"] = line
    for i, event in enumerate(alarming[-5:], 1):
        evidence[f"event_{i}"] = f"{event.event_id} {event.event} {event.detail}".strip()
    parts = []
    if ev.log_errors:
        parts.append(f"{len(ev.log_errors)} error line(s) in the QEMU log")
    if alarming:
        parts.append(f"{len(alarming)} alarming lifecycle event(s)")
    latest = ev.log_errors[-1] if ev.log_errors else alarming[-1].detail or alarming[-1].event
    return result(
        "vm.events",
        ev.name,
        Status.WARN,
        f"{' and '.join(parts)}; latest: {latest}"[:300],
        evidence,
        [_log_step(ev.name)],
    )


# -- gathering (I/O) ------------------------------------------------------------------------


def read_tail(root: HostRoot, host_path: str, max_bytes: int = _LOG_TAIL_BYTES) -> str:
    """The last max_bytes of a host file, opened through the root (no symlink escape)."""
    fd = os.open(root.resolve(host_path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(size - max_bytes, 0))
        return fh.read().decode("utf-8", errors="replace")


def _walk_chain_headers(root: HostRoot, disk: DiskSpec) -> tuple[list[ImageEvidence], str]:
    chain: list[ImageEvidence] = []
    path = disk.source
    seen: set[str] = set()
    while len(chain) < _MAX_CHAIN:
        seen.add(path)
        if not root.exists(path):
            chain.append(ImageEvidence(path=path, exists=False, readable=False))
            return chain, ""
        try:
            header = root.read_bytes(path, max_bytes=_HEADER_BYTES)
        except OSError:
            chain.append(ImageEvidence(path=path, exists=True, readable=False))
            return chain, ""
        qcow2 = header[:4] == _QCOW2_MAGIC
        backing = parse_qcow2_backing(header) or ""
        fmt = "qcow2" if qcow2 else (disk.format if not chain else "raw")
        chain.append(ImageEvidence(path, True, True, fmt, backing))
        if not backing:
            return chain, ""
        path = backing_host_path(path, backing)
        if path in seen:
            return chain, f"backing chain loops at {path}"
    return chain, f"backing chain deeper than {_MAX_CHAIN}"


def gather_disk(root: HostRoot, disk: DiskSpec, qemu_img: str | None) -> DiskEvidence:
    """The backing chain of one disk (see the module docstring for how)."""
    error = ""
    if qemu_img and root.is_system_root and root.exists(disk.source):
        try:
            done = subprocess.run(
                [qemu_img, "info", "--backing-chain", "--output=json", "-U", disk.source],
                capture_output=True,
                text=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if done.returncode == 0:
                return DiskEvidence(
                    disk.device,
                    disk.source,
                    tuple(parse_qemu_img_chain(done.stdout)),
                    "",
                    "qemu-img",
                )
            error = " ".join(done.stderr.split())[:200]
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            error = f"qemu-img: {exc}"
    chain, walk_error = _walk_chain_headers(root, disk)
    # A failing qemu-img whose failure the header walk explains (a missing file) is
    # not a second problem; otherwise keep its message.
    if error and all(image.exists and image.readable for image in chain):
        walk_error = walk_error or error
    return DiskEvidence(disk.device, disk.source, tuple(chain), walk_error, "header")


def _sample_process(pid: int, found_via: str, name: str, window: float) -> ProcessSample | None:
    try:
        proc = psutil.Process(pid)
        names_guest = guest_name(proc.cmdline()) == name
        status = proc.status()
        if status == psutil.STATUS_ZOMBIE:
            return ProcessSample(pid, found_via, status, names_guest=names_guest)
        cpu = proc.cpu_percent(interval=window) if window > 0 else 0.0
        rss_kib = proc.memory_info().rss // 1024
        return ProcessSample(pid, found_via, proc.status(), cpu, rss_kib, names_guest)
    except psutil.ZombieProcess:
        return ProcessSample(pid, found_via, psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return None


def _find_process(sources: CheckSources, name: str) -> tuple[int | None, ProcessSample | None]:
    pid_file_pid = None
    with contextlib.suppress(OSError):
        pid_file_pid = parse_pid_file(sources.root.read_text(f"{QEMU_PID_DIR}/{name}.pid"))
    window = sources.timings.cpu_window
    if pid_file_pid is not None:
        sample = _sample_process(pid_file_pid, "pid-file", name, window)
        if sample is not None:
            return pid_file_pid, sample
    own = [pid_file_pid] if pid_file_pid else []
    for proc in scan_qemu_processes(sources.process_scope, own):
        if proc.guest == name:
            return pid_file_pid, _sample_process(proc.pid, "cmdline", name, window)
    return pid_file_pid, None


def _interfaces(spec: DomainSpec, links: list[LinkInfo]) -> tuple[InterfaceEvidence, ...]:
    by_name = {link.name: link for link in links}
    return tuple(
        InterfaceEvidence(
            tap=nic.tap,
            bridge=nic.bridge,
            tap_exists=nic.tap in by_name,
            master=by_name[nic.tap].master if nic.tap in by_name else "",
        )
        for nic in spec.interfaces
    )


def _gather_host_side(
    sources: CheckSources, name: str, spec: DomainSpec
) -> tuple[
    int | None,
    ProcessSample | None,
    tuple[DiskEvidence, ...],
    tuple[InterfaceEvidence, ...],
    tuple[str, ...],
]:
    pid_file_pid, process = _find_process(sources, name)
    disks = tuple(gather_disk(sources.root, disk, sources.qemu_img) for disk in spec.disks)
    interfaces = _interfaces(spec, sources.link_source()) if spec.interfaces else ()
    try:
        log_errors = parse_qemu_log_errors(read_tail(sources.root, f"{QEMU_LOG_DIR}/{name}.log"))
    except OSError:
        log_errors = ()
    return pid_file_pid, process, disks, interfaces, log_errors


async def gather_vm(sources: CheckSources, name: str) -> VmEvidence:
    """Evidence for ``diag vm``. libvirt being down or the domain missing are evidence."""
    node = sources.node
    try:
        records = {record.name: record for record in await sources.domains.list_domains()}
        if name not in records:
            return VmEvidence(node=node, name=name, exists=False)
        spec = parse_domain_spec(await sources.domains.domain_xml(name))
    except LibvirtUnavailable as exc:
        return VmEvidence(node=node, name=name, libvirt_error=str(exc))
    except DomainNotFound:
        return VmEvidence(node=node, name=name, exists=False)
    record = records[name]
    pid_file_pid, process, disks, interfaces, log_errors = await asyncio.to_thread(
        _gather_host_side, sources, name, spec
    )
    return VmEvidence(
        node=node,
        name=name,
        state=record.state,
        reason=record.reason,
        vcpus=record.vcpus or spec.vcpus,
        memory_kib=record.memory_kib or spec.memory_kib,
        pid_file_pid=pid_file_pid,
        process=process,
        disks=disks,
        interfaces=interfaces,
        log_errors=log_errors,
        events=sources.events.recent(name),
    )
