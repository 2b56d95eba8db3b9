"""vm and host checks against the libvirt test driver, a tmp host root and real processes.

The node document has running, paused, crashed and shut-off domains. web-1 has a
stand-in QEMU process (its pid in the host root's pid file, NOVAOPS_NODE set);
web-2 runs without one and its tap is missing; build-1's disk is missing. An
orphan stand-in of this node, a stand-in of *another* node (which must not count
as an orphan here), a stale lock file and a leaked tap complete the faults.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from novaops.executor.checks import leftovers, vm
from novaops.executor.checks.domains import (
    DiskSpec,
    DomainSource,
    FakeDomainSource,
    LibvirtDomainSource,
)
from novaops.executor.checks.links import LinkInfo
from novaops.executor.checks.model import CheckResult, Status
from novaops.executor.checks.runner import (
    DiagnoseTarget,
    TargetKind,
    run_diagnose,
    run_health_checks,
    run_parts,
)
from novaops.executor.checks.sources import CheckSources, CheckTimings
from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import DomainRecord, HypervisorInfo
from novaops.v1 import executor_pb2

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
IMAGES = "var/lib/libvirt/images"


def _domain(name: str, tap: str, runstate: int | None = None) -> str:
    state = f"<test:runstate>{runstate}</test:runstate>" if runstate else ""
    return f"""
  <domain type='test' xmlns:test='{TEST_NS}'>
    <name>{name}</name>
    <memory unit='KiB'>1048576</memory>
    <vcpu>2</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <on_crash>preserve</on_crash>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='/{IMAGES}/{name}.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <interface type='bridge'>
        <source bridge='virbr0'/>
        <target dev='{tap}'/>
      </interface>
    </devices>
    {state}
  </domain>"""


def _write_qcow2(path: Path, backing: str | None = None) -> None:
    qemu_img = shutil.which("qemu-img")
    path.parent.mkdir(parents=True, exist_ok=True)
    if qemu_img is None:
        path.write_bytes(b"\0" * 512)  # a raw image: no chain to walk
        return
    command = [qemu_img, "create", "-q", "-f", "qcow2"]
    if backing:
        command += ["-F", "qcow2", "-b", backing]
    subprocess.run([*command, str(path), "1M"], check=True, timeout=30)


def _sys_link(
    root: Path, name: str, *, tun: bool = False, bridge: bool = False, master: str = ""
) -> None:
    link = root / "sys/class/net" / name
    link.mkdir(parents=True)
    (link / "flags").write_text("0x1003\n")
    if tun:
        (link / "tun_flags").write_text("0x1002\n")
    if bridge:
        (link / "bridge").mkdir()
    if master:
        (link / "master").symlink_to(f"../{master}")


def _standin(root: Path, guest: str, node: str) -> subprocess.Popen[bytes]:
    """A QEMU stand-in whose command line is in place: Popen returns once exec
    has begun, and until the kernel has set up the new argv /proc shows an empty
    command line (a scan right then saw no QEMU: a flaky test)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-name", f"guest={guest}"],
        env={**os.environ, "NOVAOPS_NODE": node},
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while f"guest={guest}".encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=30)
            raise AssertionError(f"stand-in for {guest} did not exec")
        time.sleep(0.001)
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[CheckSources, dict[str, int]]]:
    root = tmp_path / "root"
    images = root / IMAGES
    _write_qcow2(images / "base.qcow2")
    _write_qcow2(images / "web-1.qcow2", backing="base.qcow2")
    for name in ("web-2", "db-1", "cache-1"):
        _write_qcow2(images / f"{name}.qcow2")
    (root / "run/libvirt/qemu").mkdir(parents=True)
    (root / "var/log/libvirt/qemu").mkdir(parents=True)
    (root / "var/log/libvirt/qemu/db-1.log").write_text(
        "LC_ALL=C /usr/bin/qemu-system-x86_64 -name guest=db-1\nKVM internal error. Suberror: 1\n"
    )
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("cpu memory pids\n")
    _sys_link(root, "virbr0", bridge=True)
    _sys_link(root, "vtap0", tun=True, master="virbr0")
    _sys_link(root, "vtap9", tun=True)  # leaked: no domain names it
    xml = tmp_path / "node.xml"
    xml.write_text(
        "<node>"
        + _domain("web-1", "vtap0")
        + _domain("web-2", "vtap1")
        + _domain("cache-1", "vtap2", runstate=3)
        + _domain("db-1", "vtap3", runstate=6)
        + _domain("build-1", "vtap4", runstate=5)
        + "\n</node>\n"
    )
    lock = root / "var/lib/libvirt/qemu/channel/web-9.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(f"{_dead_pid()}\n")
    procs = [_standin(root, "web-1", "n1"), _standin(root, "ghost-1", "n1")]
    procs.append(_standin(root, "ghost-2", "other-node"))
    try:
        (root / "run/libvirt/qemu/web-1.pid").write_text(f"{procs[0].pid}\n")
        sources = CheckSources(
            node="n1",
            root=HostRoot(root),
            domains=LibvirtDomainSource(f"test://{xml}"),
            tap_prefixes=("vtap",),
            timings=CheckTimings(per_check=20, cpu_window=0.1),
        )
        yield sources, {"web-1": procs[0].pid, "ghost-1": procs[1].pid, "ghost-2": procs[2].pid}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)


async def _diag(sources: CheckSources, kind: TargetKind, name: str = "host") -> list[CheckResult]:
    return [r async for r in run_diagnose(DiagnoseTarget(kind, name), sources)]


def _by_id(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check_id: r for r in results}


async def test_vm_checks_on_the_test_driver(node: tuple[CheckSources, dict[str, int]]) -> None:
    sources, pids = node
    web1 = _by_id(await _diag(sources, TargetKind.VM, "web-1"))
    assert web1["vm.domain"].status is Status.OK
    assert web1["vm.process"].status is Status.OK, web1["vm.process"].summary
    assert web1["vm.process"].evidence["pid"] == str(pids["web-1"])
    assert web1["vm.process"].evidence["found_via"] == "pid-file"
    assert web1["vm.disk"].status is Status.OK
    if shutil.which("qemu-img"):
        assert web1["vm.disk"].evidence["chain"].endswith("/var/lib/libvirt/images/base.qcow2")
    assert web1["vm.interface"].status is Status.OK

    web2 = _by_id(await _diag(sources, TargetKind.VM, "web-2"))
    assert web2["vm.process"].status is Status.FAIL
    assert web2["vm.interface"].status is Status.FAIL
    assert "vtap1 does not exist" in web2["vm.interface"].summary

    paused = _by_id(await _diag(sources, TargetKind.VM, "cache-1"))
    assert paused["vm.domain"].status in (Status.WARN, Status.FAIL)
    assert paused["vm.domain"].remediation[-1].command == (
        "novaops recover resume-domain --node n1 --target cache-1"
    )
    crashed = _by_id(await _diag(sources, TargetKind.VM, "db-1"))
    assert crashed["vm.domain"].status is Status.FAIL
    assert "restart-domain --node n1 --target db-1" in crashed["vm.domain"].remediation[-1].command
    assert crashed["vm.events"].status is Status.WARN

    missing_disk = _by_id(await _diag(sources, TargetKind.VM, "build-1"))
    assert missing_disk["vm.domain"].status is Status.WARN  # shut off
    assert missing_disk["vm.disk"].status is Status.FAIL
    assert "build-1.qcow2 is missing" in missing_disk["vm.disk"].summary

    unknown = await _diag(sources, TargetKind.VM, "nope")
    assert [(r.check_id, r.status) for r in unknown] == [("vm.domain", Status.FAIL)]


async def test_missing_backing_file_is_named(node: tuple[CheckSources, dict[str, int]]) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    sources, _ = node
    (sources.root.path / IMAGES / "base.qcow2").unlink()
    web1 = _by_id(await _diag(sources, TargetKind.VM, "web-1"))
    assert web1["vm.disk"].status is Status.FAIL
    assert web1["vm.disk"].evidence["broken"] == "/var/lib/libvirt/images/base.qcow2"


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
def test_backing_chain_from_qemu_img_on_the_system_root(tmp_path: Path) -> None:
    """qemu-img reads chains only on the system root (a simulated root's images may
    name backing files by host path, which qemu-img would look up in the real /).
    Exercised for real on images in a tmp folder: through HostRoot("/") nothing but
    these files is read."""
    qemu_img = shutil.which("qemu-img")
    root = HostRoot("/")
    assert root.is_system_root
    images = tmp_path / "images"
    _write_qcow2(images / "base.qcow2")
    _write_qcow2(images / "mid.qcow2", backing="base.qcow2")
    _write_qcow2(images / "top.qcow2", backing=str(images / "mid.qcow2"))
    disk = DiskSpec("vda", str(images / "top.qcow2"), "qcow2")

    healthy = vm.gather_disk(root, disk, qemu_img)
    assert healthy.chain_via == "qemu-img"
    assert [image.path for image in healthy.chain] == [
        str(images / name) for name in ("top.qcow2", "mid.qcow2", "base.qcow2")
    ]
    assert healthy.chain[1].backing == str(images / "base.qcow2")
    assert vm.evaluate_vm(_disk_only(healthy))[1].status is Status.OK

    # Without its base, qemu-img fails; the header walk then names the missing file.
    (images / "base.qcow2").unlink()
    broken = vm.gather_disk(root, disk, qemu_img)
    assert broken.chain_via == "header"
    assert broken.chain_error == ""  # qemu-img's failure is the missing file, nothing more
    assert [(image.path, image.exists) for image in broken.chain] == [
        (str(images / "top.qcow2"), True),
        (str(images / "mid.qcow2"), True),
        (str(images / "base.qcow2"), False),
    ]
    check = vm.evaluate_vm(_disk_only(broken))[1]
    assert check.status is Status.FAIL
    assert check.summary == f"vda: backing file (depth 2) {images / 'base.qcow2'} is missing"
    assert check.remediation[0].command == f"ls -l {images / 'base.qcow2'}"


def _disk_only(disk: vm.DiskEvidence) -> vm.VmEvidence:
    # Shut off: no process to look for; results are vm.domain, vm.disk, vm.events.
    return vm.VmEvidence(node="n1", name="web-1", state=5, reason="shutdown", disks=(disk,))


async def test_host_checks_find_orphans_locks_and_taps(
    node: tuple[CheckSources, dict[str, int]],
) -> None:
    sources, pids = node
    results = _by_id(await _diag(sources, TargetKind.HOST))
    assert results["host.libvirt"].status is Status.OK
    assert results["host.cgroup"].evidence["backend"] == "v2"
    orphans = results["host.orphans"]
    assert orphans.status is Status.FAIL
    assert f"orphan.{pids['ghost-1']}" in orphans.evidence
    assert f"orphan.{pids['ghost-2']}" not in orphans.evidence  # another node's stand-in
    assert f"orphan.{pids['web-1']}" not in orphans.evidence
    assert results["host.locks"].status is Status.FAIL
    assert "/var/lib/libvirt/qemu/channel/web-9.lock" in results["host.locks"].evidence
    assert results["host.taps"].status is Status.FAIL
    assert results["host.taps"].evidence["leaked"] == "vtap9"
    assert {"host.kernel", "host.kvm", "host.disk", "host.memory"} <= set(results)

    health = await run_health_checks(sources)
    assert [r.check_id for r in health] == [
        "host.libvirt",
        "host.cgroup",
        *["host.disk"] * sum(r.check_id == "host.disk" for r in health),
        "host.orphans",
        "host.locks",
        "host.taps",
    ]


async def test_orphan_scan_of_the_other_node_sees_only_its_own(
    node: tuple[CheckSources, dict[str, int]],
) -> None:
    sources, pids = node
    other = CheckSources(
        node="other-node",
        root=HostRoot(sources.root.path.parent / "elsewhere"),
        domains=FakeDomainSource(),
    )
    evidence = await leftovers.gather_orphans(other)
    assert [p.pid for p in evidence.processes] == [pids["ghost-2"]]


class _HangingDomains(FakeDomainSource):
    async def hypervisor_info(self) -> HypervisorInfo:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def list_domains(self) -> list[DomainRecord]:
        await asyncio.sleep(3600)
        return []

    async def domains_with_xml(self, states: frozenset[int]) -> list[tuple[DomainRecord, str]]:
        await asyncio.sleep(3600)
        return []


async def test_a_hung_check_is_an_error_not_a_hang(tmp_path: Path) -> None:
    hanging: DomainSource = _HangingDomains()
    sources = CheckSources(
        node="n1",
        root=HostRoot(tmp_path),
        domains=hanging,
        timings=CheckTimings(per_check=0.3),
    )
    health = _by_id(await asyncio.wait_for(run_health_checks(sources), 10))
    for check_id in ("host.libvirt", "host.orphans", "host.taps"):
        assert health[check_id].status is Status.ERROR
        assert health[check_id].summary == "timed out after 0.3s"
    assert health["host.cgroup"].status is not Status.ERROR


async def test_target_from_request() -> None:
    assert DiagnoseTarget.from_request(executor_pb2.DiagnoseRequest(vm="web-1")) == DiagnoseTarget(
        TargetKind.VM, "web-1"
    )
    assert DiagnoseTarget.from_request(executor_pb2.DiagnoseRequest(host=True)).kind is (
        TargetKind.HOST
    )
    with pytest.raises(ValueError):
        DiagnoseTarget.from_request(executor_pb2.DiagnoseRequest())


async def test_a_wedged_libvirt_is_unreachable_and_leaves_the_other_parts_alone(
    tmp_path: Path,
) -> None:
    # libvirt calls from host parts still go through the connection's own bounded
    # threads: a daemon that stops answering reads as unreachable within
    # call_timeout, run after run, and never uses up the node's part threads.
    wedged = threading.Event()
    source = LibvirtDomainSource("test:///default", call_timeout=0.3)
    connect = source._connection

    def hang() -> object:
        wedged.wait()
        return connect()

    source._connection = hang  # type: ignore[method-assign]
    sources = CheckSources(
        node="n1", root=HostRoot(tmp_path), domains=source, timings=CheckTimings(per_check=2.0)
    )
    try:
        for _ in range(6):
            health = _by_id(await asyncio.wait_for(run_health_checks(sources), 10))
            assert health["host.libvirt"].status is Status.FAIL
            # First "did not answer within 0.3s"; once 8 calls hang, "not answering".
            assert health["host.libvirt"].summary.startswith("libvirt unreachable: ")
            assert health["host.cgroup"].status is not Status.ERROR
            assert health["host.locks"].status is not Status.ERROR
    finally:
        wedged.set()
        await source.close()


async def test_one_diagnosis_lists_the_domains_with_their_xml_once(tmp_path: Path) -> None:
    # The orphan and the tap part of one run share one listing (threads.shared_read);
    # the next run lists again.
    source = LibvirtDomainSource("test:///default")
    listings: list[frozenset[int]] = []
    original = source._read_with_xml

    def counted(states: frozenset[int], conn: object) -> list[tuple[DomainRecord, str]]:
        listings.append(states)
        return original(states, conn)

    source._read_with_xml = counted  # type: ignore[method-assign]
    sources = CheckSources(node="n1", root=HostRoot(tmp_path), domains=source)
    try:
        for run in range(1, 3):
            results = [r async for r in run_diagnose(DiagnoseTarget(TargetKind.HOST), sources)]
            by_id = {r.check_id: r for r in results}
            assert by_id["host.orphans"].status is Status.OK
            assert by_id["host.taps"].status is Status.OK
            assert len(listings) == run
        health = _by_id(await run_health_checks(sources))
        assert health["host.taps"].status is Status.OK
        assert len(listings) == 3
    finally:
        await source.close()


async def test_a_tap_of_a_domain_started_after_the_shared_listing_is_not_leaked(
    tmp_path: Path,
) -> None:
    # The tap part takes the orphan part's listing; a domain that started after it,
    # before the links were read, has its listing read again instead of a FAIL.
    source = FakeDomainSource()
    record = DomainRecord("late-vm", "uuid-late", 1, "booted", 2, 1048576, True, False)

    def links_after_a_start() -> list[LinkInfo]:
        source.domains["late-vm"] = (record, _domain("late-vm", "vnet7"))
        return [LinkInfo("vnet7", "tun", "virbr0", True)]

    sources = CheckSources(
        node="n1", root=HostRoot(tmp_path), domains=source, links=links_after_a_start
    )
    taps = _by_id(await run_parts(("host.orphans", "host.taps"), sources))["host.taps"]
    assert taps.status is Status.OK, taps.summary
    assert taps.summary == "1 tap(s), each attached to a domain"
    # A tap no domain names is still reported, after the second look.
    source.domains.clear()
    sources.links = lambda: [LinkInfo("vnet9", "tun", "virbr0", True)]
    taps = _by_id(await run_parts(("host.orphans", "host.taps"), sources))["host.taps"]
    assert taps.status is Status.FAIL and "vnet9" in taps.summary


async def test_a_qemu_of_a_domain_started_after_the_listing_is_not_an_orphan(
    tmp_path: Path,
) -> None:
    # The orphan part lists the domains, then scans the processes; a domain that
    # started in between has its QEMU claimed on a second look instead of a FAIL.
    root = tmp_path / "root"
    (root / "run/libvirt/qemu").mkdir(parents=True)
    source = FakeDomainSource()
    record = DomainRecord("late-vm", "uuid-late", 1, "booted", 2, 1048576, True, False)
    listed = source.domains_with_xml

    async def listing_before_a_start(states: frozenset[int]) -> list[tuple[DomainRecord, str]]:
        before = await listed(states)
        source.domains["late-vm"] = (record, _domain("late-vm", "vnet7"))
        return before

    source.domains_with_xml = listing_before_a_start  # type: ignore[method-assign]
    procs = [_standin(root, "late-vm", "n1")]
    try:
        (root / "run/libvirt/qemu/late-vm.pid").write_text(f"{procs[0].pid}\n")
        sources = CheckSources(node="n1", root=HostRoot(root), domains=source)
        orphans = _by_id(await run_parts(("host.orphans",), sources))["host.orphans"]
        assert orphans.status is Status.OK, orphans.summary
        assert orphans.summary == "1 QEMU process(es), each claimed by a domain"
        # A QEMU no domain claims is still reported, after the second look.
        procs.append(_standin(root, "ghost-3", "n1"))
        orphans = _by_id(await run_parts(("host.orphans",), sources))["host.orphans"]
        assert orphans.status is Status.FAIL
        assert f"orphan.{procs[1].pid}" in orphans.evidence
        assert f"orphan.{procs[0].pid}" not in orphans.evidence
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
