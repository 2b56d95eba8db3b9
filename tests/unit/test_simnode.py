"""Simulated nodes: the generated document opens with the real libvirt test driver."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from xml.etree import ElementTree

import pytest

from novaops.devcluster.layout import Layout, controller_config, executor_config
from novaops.devcluster.simnode import (
    BRIDGE,
    PID_MAX_LIMIT,
    DomainState,
    Fault,
    SimNodePaths,
    host_path,
    plan_host,
    plan_node,
    qcow2_image,
    render_host_files,
    render_libvirt_xml,
    write_sim_node,
)
from novaops.executor.checks import vm

libvirt = pytest.importorskip("libvirt")


@pytest.fixture(scope="module", autouse=True)
def _quiet_libvirt() -> Iterator[None]:
    # libvirt prints every error to stderr by default; the tests check them instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    yield


@pytest.fixture
def node(tmp_path: Path) -> SimNodePaths:
    return write_sim_node(plan_node("node-1", 1, seed=7), tmp_path / "node-1")


def test_document_opens_with_test_driver_and_shows_every_state(node: SimNodePaths) -> None:
    spec = plan_node("node-1", 1, seed=7)
    conn = libvirt.open(node.libvirt_uri)
    try:
        states = {dom.name(): dom.state()[0] for dom in conn.listAllDomains()}
        assert states == {d.name: int(d.state) for d in spec.domains}
        assert set(states.values()) == {
            libvirt.VIR_DOMAIN_RUNNING,
            libvirt.VIR_DOMAIN_PAUSED,
            libvirt.VIR_DOMAIN_SHUTOFF,
            libvirt.VIR_DOMAIN_CRASHED,
        }
        assert states[spec.with_fault(Fault.CRASHED).name] == libvirt.VIR_DOMAIN_CRASHED
        assert states[spec.with_fault(Fault.PAUSED).name] == libvirt.VIR_DOMAIN_PAUSED
        assert [n.bridgeName() for n in conn.listAllNetworks()] == [BRIDGE]
        assert [p.name() for p in conn.listAllStoragePools()] == ["default"]
        # The domain XML libvirt returns names the disk, bridge and tap we wrote.
        web = spec.domain("node-1-web-1")
        desc = ElementTree.fromstring(conn.lookupByName(web.name).XMLDesc())
        assert desc.find("devices/disk/source").get("file") == str(web.disk)  # type: ignore[union-attr]
        iface = desc.find("devices/interface")
        assert iface is not None
        assert iface.find("source").get("bridge") == BRIDGE  # type: ignore[union-attr]
        assert iface.find("target").get("dev") == web.tap  # type: ignore[union-attr]
        assert iface.find("mac").get("address") == web.mac  # type: ignore[union-attr]
        info = conn.getInfo()
        assert info[2] == spec.cpu.count
    finally:
        conn.close()


def test_missing_disk_is_missing_and_the_others_exist(node: SimNodePaths) -> None:
    spec = plan_node("node-1", 1, seed=7)
    broken = spec.with_fault(Fault.MISSING_DISK)
    assert broken.state is DomainState.SHUTOFF
    assert not host_path(node.host_root, broken.disk).exists()
    for dom in spec.domains:
        if dom is not broken:
            disk = host_path(node.host_root, dom.disk)
            assert disk.is_file() and disk.stat().st_size > 0, dom.name


def test_missing_backing_is_an_overlay_on_a_deleted_image(node: SimNodePaths) -> None:
    spec = plan_node("node-1", 1, seed=7)
    broken = spec.with_fault(Fault.MISSING_BACKING)
    assert broken.state is DomainState.SHUTOFF and broken.backing is not None
    assert broken.backing.parent == broken.disk.parent
    overlay = host_path(node.host_root, broken.disk)
    assert overlay.is_file()
    assert not host_path(node.host_root, broken.backing).exists()
    # The header names the backing file relative to the overlay, as the host resolves it.
    assert vm.parse_qcow2_backing(overlay.read_bytes()[:65536]) == broken.backing.name
    assert sum(dom.backing is not None for dom in spec.domains) == 1
    libvirtd_log = (node.host_root / "var/log/libvirt/libvirtd.log").read_text()
    assert f"Cannot access backing file '{broken.backing}'" in libvirtd_log


def test_handmade_qcow2_names_its_backing_file() -> None:
    image = qcow2_image("base.qcow2")
    assert len(image) == 4 * 65536
    assert vm.parse_qcow2_backing(image[:65536]) == "base.qcow2"
    assert vm.parse_qcow2_backing(qcow2_image()[:65536]) is None


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
def test_qemu_img_accepts_the_handmade_qcow2(tmp_path: Path) -> None:
    qemu_img = str(shutil.which("qemu-img"))
    (tmp_path / "base.qcow2").write_bytes(qcow2_image())
    (tmp_path / "top.qcow2").write_bytes(qcow2_image("base.qcow2"))
    for name in ("base.qcow2", "top.qcow2"):
        check = subprocess.run(
            [qemu_img, "check", "-U", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    info = subprocess.run(
        [qemu_img, "info", "--backing-chain", "--output=json", "-U", str(tmp_path / "top.qcow2")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    chain = vm.parse_qemu_img_chain(info.stdout)
    assert [(image.path, image.format) for image in chain] == [
        (str(tmp_path / "top.qcow2"), "qcow2"),
        (str(tmp_path / "base.qcow2"), "qcow2"),
    ]
    assert chain[0].backing == str(tmp_path / "base.qcow2")


def test_without_qemu_img_the_faults_are_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    spec = plan_node("node-1", 1, seed=7)
    node = write_sim_node(spec, tmp_path / "node-1")
    for dom in spec.domains:
        disk = host_path(node.host_root, dom.disk)
        assert disk.exists() is dom.disk_present, dom.name
        if dom.disk_present:
            want = None if dom.backing is None else dom.backing.name
            assert vm.parse_qcow2_backing(disk.read_bytes()[:65536]) == want, dom.name
        if dom.backing is not None:
            assert not host_path(node.host_root, dom.backing).exists()


def test_host_root_tree(node: SimNodePaths) -> None:
    root = node.host_root
    assert (root / "etc/hostname").read_text() == "node-1\n"
    assert " vmx " in (root / "proc/cpuinfo").read_text()
    assert (root / "proc/meminfo").read_text().startswith("MemTotal:")
    assert any(line.startswith("btime ") for line in (root / "proc/stat").read_text().splitlines())
    assert (root / "proc/sys/kernel/osrelease").read_text().strip()
    assert "memory" in (root / "sys/fs/cgroup/cgroup.controllers").read_text().split()
    assert (root / "dev/kvm").exists()
    assert "libvirt version" in (root / "var/log/libvirt/libvirtd.log").read_text()
    assert (root / "run/libvirt/qemu").is_dir()
    spec = plan_node("node-1", 1, seed=7)
    for dom in spec.domains:
        assert host_path(root, dom.qemu_log).is_file(), dom.name
    crashed_log = host_path(root, spec.with_fault(Fault.CRASHED).qemu_log).read_text()
    assert "error" in crashed_log.lower() and "reason=crashed" in crashed_log


def test_plan_is_deterministic_and_seeded() -> None:
    first, again = plan_node("node-2", 2, seed=3), plan_node("node-2", 2, seed=3)
    assert first == again
    assert render_libvirt_xml(first) == render_libvirt_xml(again)
    assert render_host_files(first) == render_host_files(again)
    other = plan_node("node-2", 2, seed=4)
    assert [d.uuid for d in other.domains] != [d.uuid for d in first.domains]


def test_names_and_taps_unique_across_a_cluster() -> None:
    specs = [plan_node(f"node-{i}", i) for i in range(1, 11)]
    domains = [d for spec in specs for d in spec.domains]
    assert len({d.name for d in domains}) == len(domains)
    assert len({d.uuid for d in domains}) == len(domains)
    assert len({d.tap for d in domains}) == len(domains)
    assert all(len(d.tap) <= 15 for d in domains)  # IFNAMSIZ - 1
    assert all(d.name.startswith(f"{spec.name}-") for spec in specs for d in spec.domains)


def test_rewriting_restores_the_faults(node: SimNodePaths) -> None:
    spec = plan_node("node-1", 1, seed=7)
    broken = host_path(node.host_root, spec.with_fault(Fault.MISSING_DISK).disk)
    broken.write_bytes(b"repaired by a previous run")
    backing = spec.with_fault(Fault.MISSING_BACKING).backing
    assert backing is not None
    host_path(node.host_root, backing).write_bytes(b"restored by a previous run")
    (node.node_dir / "state").mkdir()
    (node.node_dir / "state" / "keep").write_text("x")
    write_sim_node(spec, node.node_dir)
    assert not broken.exists()
    assert not host_path(node.host_root, backing).exists()
    assert (node.node_dir / "state" / "keep").read_text() == "x"


def test_host_files_are_keyed_by_absolute_host_paths() -> None:
    files = render_host_files(plan_node("node-1", 1))
    assert all(path.is_absolute() for path in files)
    assert PurePosixPath("/etc/hostname") in files


def test_host_plan_is_deterministic_and_has_each_host_fault() -> None:
    spec = plan_node("node-3", 3, seed=2)
    plan = plan_host(spec)
    assert plan == plan_host(plan_node("node-3", 3, seed=2))
    with_process = {
        d.name for d in spec.domains if d.state in (DomainState.RUNNING, DomainState.PAUSED)
    }
    # A stand-in and a tap for every domain with a QEMU process, nothing more.
    assert {s.guest for s in plan.standins} == with_process
    assert {t.domain for t in plan.taps} == with_process
    assert all(s.pid_file == spec.domain(s.guest).pid_file for s in plan.standins)
    assert all(t.name.startswith(plan.tap_prefix) for t in plan.taps)
    # Exactly one tap is off the bridge, that of a healthy running domain.
    detached = [t for t in plan.taps if not t.attached]
    assert detached == [plan.detached_tap]
    healthy = spec.domain(plan.detached_tap.domain)
    assert healthy.state is DomainState.RUNNING and healthy.fault is None
    # The orphan claims a guest no domain has and has no pid file.
    assert plan.orphan.guest not in {d.name for d in spec.domains}
    assert plan.orphan.pid_file is None
    assert "-name" in plan.orphan.args
    assert plan.stale_lock.suffix == ".lock" and plan.stale_lock_pid > PID_MAX_LIMIT
    assert plan.container.closed_ports == (8081,) and plan.container.listening == (8080,)
    # The host plan has its own random stream: the domains did not change.
    assert render_libvirt_xml(spec) == render_libvirt_xml(plan_node("node-3", 3, seed=2))


def test_executor_config_names_netns_and_tap_prefixes(tmp_path: Path) -> None:
    def config(**extra: Any) -> str:
        return executor_config(
            Layout(tmp_path),
            "node-1",
            listen="127.0.0.1:1",
            controllers=["127.0.0.1:2"],
            libvirt_uri="test:///x.xml",
            host_root=tmp_path / "root",
            tls={"ca": "a", "cert": "b", "key": "c"},
            **extra,
        )

    text = config(netns="novaops-0-node-1", tap_prefixes=["vtap1-"])
    assert 'netns = "novaops-0-node-1"' in text and 'tap_prefixes = ["vtap1-"]' in text
    plain = config()
    assert "netns" not in plain and "tap_prefixes" not in plain


def test_controller_config_can_turn_automation_off(tmp_path: Path) -> None:
    def config(automation: bool) -> str:
        return controller_config(
            Layout(tmp_path),
            listen="127.0.0.1:1",
            metrics_listen="127.0.0.1:2",
            tls={"ca": "a", "cert": "b", "key": "c"},
            etcd_endpoints=None,
            heartbeat_interval_ms=500,
            missed_heartbeats_limit=3,
            automation=automation,
        )

    assert "[automation]\nenabled = false\n" in config(False)
    assert "[automation]" not in config(True)
