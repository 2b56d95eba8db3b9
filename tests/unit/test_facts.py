"""Host facts: pure parsers driven by data files, and gathering through a host root.

Each tests/data/facts/<fact>.json lists cases: an input (a sample file next to
it, or null for "could not be read") and the fact expected from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from novaops.executor.facts import (
    HostEvidence,
    LibvirtFacts,
    build_host_facts,
    gather_host_facts,
    parse_boot_time,
    parse_cgroup_backend,
    parse_cpu_count,
    parse_host_evidence,
    parse_meminfo_total_bytes,
    parse_virt_flags,
    read_host_evidence,
)
from novaops.executor.hostroot import HostPathError, HostRoot
from novaops.executor.libvirt_access import (
    CRASHED,
    PAUSED,
    HypervisorInfo,
    parse_domain_devices,
    state_reason_name,
)
from novaops.executor.libvirt_fake import FakeLibvirt

DATA = Path(__file__).resolve().parents[1] / "data" / "facts"


def cases(kind: str) -> list[Any]:
    loaded = json.loads((DATA / f"{kind}.json").read_text())
    return [pytest.param(case, id=case["case"]) for case in loaded]


def sample(case: dict[str, Any]) -> str | None:
    name = case["file"]
    return None if name is None else (DATA / name).read_text(errors="replace")


# -- pure parsers, from data files ------------------------------------------------


@pytest.mark.parametrize("case", cases("cpuinfo"))
def test_cpuinfo(case: dict[str, Any]) -> None:
    text = sample(case)
    assert parse_virt_flags(text) == case["virt_flags"]
    assert parse_cpu_count(text) == case["cpu_count"]


@pytest.mark.parametrize("case", cases("meminfo"))
def test_meminfo(case: dict[str, Any]) -> None:
    assert parse_meminfo_total_bytes(sample(case)) == case["memory_bytes"]


@pytest.mark.parametrize("case", cases("stat"))
def test_boot_time(case: dict[str, Any]) -> None:
    assert parse_boot_time(sample(case)) == case["boot_time"]


@pytest.mark.parametrize("case", cases("cgroup"))
def test_cgroup_backend(case: dict[str, Any]) -> None:
    assert parse_cgroup_backend(case["paths"]) == case["fact"]


def test_missing_evidence_gives_unknowns_not_errors() -> None:
    parsed = parse_host_evidence(HostEvidence(uname_machine="x86_64"))
    assert parsed.kernel == ""
    assert parsed.hostname == ""
    assert parsed.virt_flags == []
    assert parsed.cgroup_backend == "unknown"
    assert (parsed.cpu_count, parsed.memory_bytes, parsed.boot_time) == (0, 0, None)
    assert parsed.kvm_present is False and parsed.kvm_accessible is False


def test_uname_is_the_fallback_only_where_evidence_is_missing() -> None:
    evidence = HostEvidence(
        osrelease=None,
        hostname="\n",
        uname_machine="aarch64",
        uname_release="6.1.0-18-arm64",
        uname_nodename="real-host",
        cpu_count_fallback=8,
    )
    parsed = parse_host_evidence(evidence)
    assert (parsed.kernel, parsed.hostname, parsed.cpu_count) == (
        "6.1.0-18-arm64",
        "real-host",
        8,
    )
    with_files = parse_host_evidence(
        HostEvidence(osrelease="6.12.0\n", hostname="node-1\n", uname_release="other")
    )
    assert (with_files.kernel, with_files.hostname) == ("6.12.0", "node-1")


def test_host_facts_message_reports_libvirt_unreachable_as_a_fact() -> None:
    facts = build_host_facts(
        HostEvidence(stat="btime 1717113600\n"),
        LibvirtFacts(uri="qemu:///system", error="cannot connect to libvirt at qemu:///system"),
    )
    assert facts.libvirt_reachable is False
    assert facts.libvirt_error == "cannot connect to libvirt at qemu:///system"
    assert facts.libvirt_uri == "qemu:///system"
    assert facts.libvirt_version == "" and facts.hypervisor == ""
    assert facts.boot_time.seconds == 1717113600


# -- gathering through a host root ---------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def simulated_host(root: Path) -> None:
    write_tree(
        root,
        {
            "proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
            "proc/cpuinfo": (DATA / "cpuinfo/intel-vmx.txt").read_text(),
            "proc/meminfo": (DATA / "meminfo/debian-64g.txt").read_text(),
            "proc/stat": (DATA / "stat/host.txt").read_text(),
            "etc/hostname": "node-1\n",
            "sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n",
            "dev/kvm": "",
        },
    )


async def test_gather_host_facts_from_a_simulated_host(tmp_path: Path) -> None:
    simulated_host(tmp_path)
    libvirt = FakeLibvirt(info=HypervisorInfo("9.0.0", "QEMU 7.2.0"), uri="qemu:///system")
    facts = await gather_host_facts(HostRoot(tmp_path), libvirt)
    assert facts.hostname == "node-1"
    assert facts.kernel == "6.1.0-18-amd64"
    assert facts.arch == os.uname().machine
    assert list(facts.virt_flags) == ["vmx"]
    assert facts.kvm_present and facts.kvm_accessible
    assert facts.cgroup_backend == "v2"
    assert facts.cpu_count == 2
    assert facts.memory_bytes == 65747312 * 1024
    assert facts.boot_time.seconds == 1717113600
    assert facts.libvirt_reachable and facts.libvirt_error == ""
    assert (facts.libvirt_version, facts.hypervisor) == ("9.0.0", "QEMU 7.2.0")


async def test_gather_host_facts_from_an_empty_host_root_never_crashes(tmp_path: Path) -> None:
    libvirt = FakeLibvirt(error="cannot connect to libvirt at test:///nope.xml: XML error")
    facts = await gather_host_facts(HostRoot(tmp_path), libvirt)
    assert facts.kernel == "" and facts.hostname == ""
    assert facts.cgroup_backend == "unknown"
    assert not facts.kvm_present and not facts.kvm_accessible
    assert not facts.libvirt_reachable
    assert facts.libvirt_error.startswith("cannot connect to libvirt")


def test_hybrid_cgroup_layout_is_read_from_the_tree(tmp_path: Path) -> None:
    for name in ("cpu,cpuacct", "memory", "pids", "systemd"):
        (tmp_path / "sys/fs/cgroup" / name).mkdir(parents=True)
    write_tree(tmp_path, {"sys/fs/cgroup/unified/cgroup.controllers": ""})
    evidence = read_host_evidence(HostRoot(tmp_path))
    assert parse_cgroup_backend(evidence.cgroup_paths) == "hybrid"


def test_a_kvm_node_that_cannot_be_opened_is_present_but_not_accessible(tmp_path: Path) -> None:
    write_tree(tmp_path, {"dev/kvm": ""})
    (tmp_path / "dev/kvm").chmod(0o000)
    evidence = read_host_evidence(HostRoot(tmp_path))
    assert evidence.kvm_present
    # Root bypasses file modes; the fact is then truthfully "accessible".
    assert evidence.kvm_accessible == (os.geteuid() == 0)


# -- the host root confines every read -----------------------------------------------


def test_host_root_reads_host_paths_with_or_without_leading_slash(tmp_path: Path) -> None:
    write_tree(tmp_path, {"etc/hostname": "node-1\n"})
    root = HostRoot(tmp_path)
    assert root.read_text("/etc/hostname") == root.read_text("etc/hostname") == "node-1\n"
    assert root.exists("/etc/hostname") and not root.exists("/etc/shadow")


@pytest.mark.parametrize("path", ["../outside", "/etc/../../outside", "etc/../hostname"])
def test_host_root_refuses_dot_dot(tmp_path: Path, path: str) -> None:
    root = HostRoot(tmp_path / "root")
    (tmp_path / "root").mkdir()
    with pytest.raises(HostPathError):
        root.read_text(path)
    assert not root.exists(path)


def test_relative_symlink_climbing_out_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("do not read")
    (tmp_path / "root/etc").mkdir(parents=True)
    (tmp_path / "root/etc/leak").symlink_to("../../secret")
    root = HostRoot(tmp_path / "root")
    with pytest.raises(HostPathError):
        root.read_text("/etc/leak")
    assert not root.exists("/etc/leak")


def test_absolute_symlink_stays_inside_the_root(tmp_path: Path) -> None:
    # /var/run -> /run on a real host: the target is the host's /run, i.e. inside
    # the root, never this machine's /run.
    (tmp_path / "secret").write_text("do not read")
    write_tree(tmp_path / "root", {"run/libvirt/qemu/web-1.pid": "4242\n"})
    (tmp_path / "root/var").mkdir()
    (tmp_path / "root/var/run").symlink_to("/run")
    (tmp_path / "root/escape").symlink_to(tmp_path / "secret")
    root = HostRoot(tmp_path / "root")
    assert root.read_text("/var/run/libvirt/qemu/web-1.pid") == "4242\n"
    with pytest.raises(FileNotFoundError):
        root.read_text("/escape")
    assert root.glob("/var/run/libvirt/qemu/*.pid") == [
        PurePosixPath("/var/run/libvirt/qemu/web-1.pid")
    ]


def test_symlink_loop_is_an_error_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError):
        HostRoot(tmp_path).read_text("/a")


def test_reads_are_bounded(tmp_path: Path) -> None:
    write_tree(tmp_path, {"var/log/big.log": "x" * 10_000})
    assert len(HostRoot(tmp_path).read_bytes("/var/log/big.log", max_bytes=100)) == 100


def test_glob_matches_one_component_at_a_time(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "var/log/libvirt/qemu/web-1.log": "",
            "var/log/libvirt/qemu/db-1.log": "",
            "var/log/libvirt/qemu/.hidden.log": "",
            "var/log/libvirt/qemu/notes.txt": "",
        },
    )
    root = HostRoot(tmp_path)
    assert [str(p) for p in root.glob("/var/log/libvirt/*/*.log")] == [
        "/var/log/libvirt/qemu/db-1.log",
        "/var/log/libvirt/qemu/web-1.log",
    ]
    with pytest.raises(HostPathError):
        root.glob("/var/../*")


# -- libvirt mapping (pure) ----------------------------------------------------------


def test_state_reasons_have_libvirt_symbolic_names() -> None:
    assert state_reason_name(PAUSED, 1) == "user"
    assert state_reason_name(CRASHED, 0) == "unknown"
    assert state_reason_name(CRASHED, 1) == "panicked"
    assert state_reason_name(PAUSED, 99) == "reason-99"


def test_reason_table_matches_the_libvirt_module() -> None:
    libvirt = pytest.importorskip("libvirt")
    # SHUTDOWN and PMSUSPENDED share their prefix with unrelated flag constants.
    for state in ("NOSTATE", "RUNNING", "BLOCKED", "PAUSED", "SHUTOFF", "CRASHED"):
        code = getattr(libvirt, f"VIR_DOMAIN_{state}")
        prefix = f"VIR_DOMAIN_{state}_"
        for symbol in dir(libvirt):
            if symbol.startswith(prefix):
                assert state_reason_name(code, getattr(libvirt, symbol)) == (
                    symbol.removeprefix(prefix).lower()
                ), symbol


def test_domain_devices_come_from_the_domain_xml() -> None:
    xml = """<domain type='kvm'><name>web-1</name><devices>
      <disk type='file' device='disk'><source file='/img/a.qcow2'/><target dev='vda'/></disk>
      <disk type='file' device='cdrom'><target dev='sda'/></disk>
      <disk type='file' device='disk'><source file='/img/b.raw'/></disk>
      <interface type='bridge'><source bridge='virbr0'/><target dev='vnet3'/></interface>
      <interface type='network'><source network='default'/></interface>
    </devices></domain>"""
    assert parse_domain_devices(xml) == (["vda", "sda"], ["vnet3"])


def test_cpuinfo_is_reread_when_rewritten_or_stale(tmp_path: Path) -> None:
    from novaops.executor import facts
    from novaops.executor.hostroot import HostRoot

    (tmp_path / "proc").mkdir()
    cpuinfo = tmp_path / "proc/cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu vmx\n")
    root = HostRoot(tmp_path)
    assert facts.read_cpuinfo(root, now=1000.0) == "processor : 0\nflags : fpu vmx\n"
    # Rewritten (another size): read again at once.
    cpuinfo.write_text("processor : 0\nprocessor : 1\nflags : fpu svm\n")
    assert "svm" in (facts.read_cpuinfo(root, now=1002.0) or "")
    # Same identity but older than the limit: read again.
    os.utime(cpuinfo, ns=(0, 0))
    first = facts.read_cpuinfo(root, now=2000.0)
    stat = cpuinfo.stat()
    with cpuinfo.open("r+") as fh:  # same size, content changed, mtime put back
        fh.write("PROCESSOR")
    os.utime(cpuinfo, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert facts.read_cpuinfo(root, now=2001.0) == first  # cached: same identity, young
    later = 2000.0 + facts.CPUINFO_MAX_AGE_SECONDS + 1
    assert (facts.read_cpuinfo(root, now=later) or "").startswith("PROCESSOR")
    cpuinfo.unlink()
    assert facts.read_cpuinfo(root, now=later + 1) is None
