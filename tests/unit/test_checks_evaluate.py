"""Every evaluate function, driven by data files, plus the pure parsers the checks use.

A data file ``tests/data/checks/<case>.json`` holds ``evaluate`` (which function),
``evidence`` (the evidence dataclass as JSON) and ``expected``: one entry per
result, in order, each with ``check_id`` and ``status`` and optionally
``summary_contains``, ``evidence`` (a subset that must match exactly) and
``commands`` (the remediation commands, exactly and in order).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import struct
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from novaops.executor.checks import container, host, leftovers, network, vm
from novaops.executor.checks.domains import parse_capabilities, parse_domain_spec
from novaops.executor.checks.events import EventRing
from novaops.executor.checks.model import (
    CheckResult,
    RemediationStep,
    Status,
    evidence_from_plain,
    new_event_id,
    result,
    timestamp,
    to_proto,
    worst_status,
)
from novaops.executor.checks.qemu_processes import (
    ProcessScope,
    _may_be_in_scope,
    guest_name,
    in_scope,
    is_qemu_like,
    parse_pid_file,
    parse_stat_state,
    split_cmdline,
)
from novaops.v1 import common_pb2

DATA = Path(__file__).resolve().parent.parent / "data" / "checks"

Evaluate = Callable[[Any], Sequence[CheckResult]]
EVALUATORS: dict[str, tuple[type[Any], Evaluate]] = {
    "vm": (vm.VmEvidence, vm.evaluate_vm),
    "container": (container.ContainerEvidence, container.evaluate_container),
    "network": (network.NetworkEvidence, network.evaluate_network),
    "host.basics": (host.BasicsEvidence, host.evaluate_basics),
    "host.libvirt": (host.LibvirtEvidence, host.evaluate_libvirt),
    "host.cgroup": (host.CgroupEvidence, host.evaluate_cgroup),
    "host.disk": (host.DiskEvidence, host.evaluate_disk),
    "host.memory": (host.MemoryEvidence, host.evaluate_memory),
    "host.orphans": (leftovers.OrphanEvidence, leftovers.evaluate_orphans),
    "host.locks": (leftovers.LockEvidence, leftovers.evaluate_locks),
    "host.taps": (leftovers.TapEvidence, leftovers.evaluate_taps),
    "host": (host.HostEvidence, host.evaluate_host),
}
CASES = sorted(DATA.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_evaluate_from_data_file(path: Path) -> None:
    doc = _load(path)
    evidence_type, evaluate = EVALUATORS[doc["evaluate"]]
    results = list(evaluate(evidence_from_plain(evidence_type, doc["evidence"])))
    got = [(r.check_id, r.status.value) for r in results]
    want = [(e["check_id"], e["status"]) for e in doc["expected"]]
    assert got == want, [r.summary for r in results]
    for res, expected in zip(results, doc["expected"], strict=True):
        if "summary_contains" in expected:
            assert expected["summary_contains"] in res.summary
        for key, value in expected.get("evidence", {}).items():
            assert res.evidence.get(key) == value, (key, dict(res.evidence))
        if "commands" in expected:
            assert [step.command for step in res.remediation] == expected["commands"]
        # Every failed check prints actionable remediation; a passing one prints none.
        if res.status is Status.OK:
            assert res.remediation == ()
        else:
            assert res.remediation and all(step.description for step in res.remediation)
        assert "\n" not in res.summary


def test_every_evaluate_function_has_data_files() -> None:
    used = {_load(path)["evaluate"] for path in CASES}
    assert used == set(EVALUATORS)


def test_evidence_from_plain_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError, match="no fields"):
        evidence_from_plain(vm.VmEvidence, {"node": "n1", "name": "x", "stat": 1})


# -- model ---------------------------------------------------------------------------------


def test_to_proto_carries_node_time_event_and_steps() -> None:
    res = result(
        "vm.domain",
        "web-1",
        Status.FAIL,
        "crashed",
        {"state": "crashed", "pid": 7, "up": False},
        [RemediationStep("Restart", "novaops recover restart-domain --node n1 --target web-1")],
    )
    at = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
    msg = to_proto(res, "n1", at, "ev-1")
    assert msg.node == "n1" and msg.event_id == "ev-1"
    assert msg.status == common_pb2.CHECK_STATUS_FAIL
    assert dict(msg.evidence) == {"state": "crashed", "pid": "7", "up": "false"}
    assert msg.remediation[0].command.startswith("novaops recover restart-domain")
    assert msg.observed_at.ToDatetime(tzinfo=dt.UTC) == at


def test_worst_status() -> None:
    ok = result("a", "t", Status.OK, "fine")
    warn = result("a", "t", Status.WARN, "hmm", remediation=[RemediationStep("x")])
    assert worst_status([]) is Status.OK
    assert worst_status([ok, warn, ok]) is Status.WARN


# -- parsers -------------------------------------------------------------------------------


def _qcow2_header(backing: str) -> bytes:
    name = backing.encode()
    header = bytearray(512)
    header[:4] = b"QFI\xfb"
    struct.pack_into(">IQI", header, 4, 3, 0x200 if name else 0, len(name))
    return bytes(header) + name


def test_parse_qcow2_backing() -> None:
    assert vm.parse_qcow2_backing(_qcow2_header("base.qcow2")) == "base.qcow2"
    assert vm.parse_qcow2_backing(_qcow2_header("")) is None
    assert vm.parse_qcow2_backing(b"not an image at all") is None
    # The name lies beyond what was read: unknown, not garbage.
    assert vm.parse_qcow2_backing(_qcow2_header("base.qcow2")[:520]) is None


def test_backing_host_path() -> None:
    assert vm.backing_host_path("/img/a/top.qcow2", "base.qcow2") == "/img/a/base.qcow2"
    assert vm.backing_host_path("/img/a/top.qcow2", "../b/base.qcow2") == "/img/b/base.qcow2"
    assert vm.backing_host_path("/img/a/top.qcow2", "/other/x.raw") == "/other/x.raw"


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
def test_parse_qemu_img_chain_from_real_output(tmp_path: Path) -> None:
    qemu_img = str(shutil.which("qemu-img"))
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    subprocess.run(
        [qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2", str(top)],
        check=True,
    )
    out = subprocess.run(
        [qemu_img, "info", "--backing-chain", "--output=json", "-U", str(top)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    chain = vm.parse_qemu_img_chain(out)
    assert [image.path for image in chain] == [str(top), str(base)]
    assert chain[0].backing == str(base) and chain[0].format == "qcow2"
    # The header walk finds the same backing name qemu-img does.
    assert vm.parse_qcow2_backing(top.read_bytes()[:65536]) == "base.qcow2"


def test_parse_qemu_log_errors_skips_the_command_line() -> None:
    log = (
        "2024-06-01 00:01:30.000+0000: starting up libvirt version: 9.0.0\n"
        "LC_ALL=C /usr/bin/qemu-system-x86_64 -name guest=a -drive werror=stop\n"
        "KVM internal error. Suberror: 1\n"
        "emulation failure\n"
        "2024-06-01 01:01:30.000+0000: shutting down, reason=crashed\n"
        "2024-06-01 02:01:30.000+0000: shutting down, reason=shutdown\n"
    )
    assert vm.parse_qemu_log_errors(log) == (
        "KVM internal error. Suberror: 1",
        "emulation failure",
        "2024-06-01 01:01:30.000+0000: shutting down, reason=crashed",
    )
    assert vm.parse_qemu_log_errors(log, limit=1) == (
        "2024-06-01 01:01:30.000+0000: shutting down, reason=crashed",
    )


def test_parse_domain_spec_and_capabilities() -> None:
    spec = parse_domain_spec(
        "<domain type='kvm'><name>web-1</name><memory unit='MiB'>2048</memory><vcpu>2</vcpu>"
        "<devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='/var/lib/libvirt/images/web-1.qcow2'/><target dev='vda'/></disk>"
        "<disk type='file' device='cdrom'><target dev='sda'/></disk>"
        "<disk type='network'><source protocol='rbd' name='pool/img'/><target dev='vdb'/></disk>"
        "<interface type='bridge'><mac address='52:54:00:00:00:01'/>"
        "<source bridge='virbr0'/><target dev='vnet3'/></interface>"
        "<interface type='user'><mac address='52:54:00:00:00:02'/></interface>"
        "</devices></domain>"
    )
    assert spec.memory_kib == 2048 * 1024 and spec.vcpus == 2
    assert [(d.device, d.source, d.format) for d in spec.disks] == [
        ("vda", "/var/lib/libvirt/images/web-1.qcow2", "qcow2")
    ]
    assert [(n.tap, n.bridge) for n in spec.interfaces] == [("vnet3", "virbr0")]
    arch, guests = parse_capabilities(
        "<capabilities><host><cpu><arch>x86_64</arch></cpu></host>"
        "<guest><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest>"
        "</capabilities>"
    )
    assert arch == "x86_64" and guests == ["x86_64/kvm", "x86_64/qemu"]


def test_guest_name_and_qemu_likeness() -> None:
    qemu = ["/usr/bin/qemu-system-x86_64", "-name", "guest=web-1,debug-threads=on", "-m", "1024"]
    assert guest_name(qemu) == "web-1" and is_qemu_like(qemu)
    assert guest_name(["qemu-kvm", "-name", "old-style"]) == "old-style"
    standin = ["python3", "-c", "import time; time.sleep(60)", "-name", "guest=db-1"]
    assert guest_name(standin) == "db-1" and is_qemu_like(standin)
    assert not is_qemu_like(["sleep", "60"]) and guest_name(["sleep", "60"]) is None


def test_proc_cmdline_and_stat_parsing() -> None:
    assert split_cmdline(b"qemu-system-x86_64\0-name\0guest=a\0") == [
        "qemu-system-x86_64",
        "-name",
        "guest=a",
    ]
    # A process that rewrote its title into one string (setproctitle), as psutil reads it.
    assert split_cmdline(b"qemu: -name guest=b") == ["qemu:", "-name", "guest=b"]
    assert split_cmdline(b"") == []
    # The command name may hold spaces and parentheses; the state follows the last ")".
    assert parse_stat_state(b"4242 (qemu (x) z) Z 1 4242 4242 0") == "zombie"
    assert parse_stat_state(b"1 (init) S 0 1 1") == "sleeping"
    assert parse_stat_state(b"7 (q) T 1") == "stopped"
    assert parse_stat_state(b"garbage") == ""


def test_process_scope_keeps_simulated_nodes_apart() -> None:
    node_a = ProcessScope("a", "/tmp/cluster/a/root", system_root=False)
    node_b = ProcessScope("b", "/tmp/cluster/b/root", system_root=False)
    production = ProcessScope("prod", "/", system_root=True)
    marked_a = (123, ["python3", "-name", "guest=x"], "a")
    assert in_scope(node_a, *marked_a, pid_file_pids=[])
    assert not in_scope(node_b, *marked_a, pid_file_pids=[])
    # A production executor on the same machine does not adopt a simulated node's process.
    assert not in_scope(production, *marked_a, pid_file_pids=[])
    by_path = ["python3", "/tmp/cluster/a/root/standin.py", "-name", "guest=x"]
    assert in_scope(node_a, 124, by_path, None, [])
    assert not in_scope(node_b, 124, by_path, None, [])
    assert in_scope(node_b, 125, ["qemu-system-x86_64"], None, pid_file_pids=[125])
    assert in_scope(production, 126, ["qemu-system-x86_64"], None, [])


def test_byte_prefilter_never_drops_a_process_in_scope() -> None:
    # The scan skips, before parsing, what _may_be_in_scope rejects; that must be
    # only processes in_scope rejects too.
    scopes = [
        ProcessScope("a", "/tmp/cluster/a/root", system_root=False),
        ProcessScope("a-1", "/tmp/cluster/a/root-1", system_root=False),
        ProcessScope("prod", "/", system_root=True),
    ]
    raws = [
        b"qemu-system-x86_64\0-name\0guest=x\0",
        b"python3\0/tmp/cluster/a/root/standin.py\0-name\0guest=x\0",
        b"python3\0/tmp/cluster/a/root-1/standin.py\0-name\0guest=x\0",
        b"qemu: -chardev path=/tmp/cluster/a/root/m.sock -name guest=y",
    ]
    kept = 0
    for scope in scopes:
        root = scope.host_root.encode()
        for raw in raws:
            for marker in (None, "", "a", "a-1", "prod", "other"):
                inside = in_scope(scope, 9, split_cmdline(raw), marker, [])
                assert not inside or _may_be_in_scope(scope, root, raw, marker), (scope, raw)
                kept += inside
    assert kept > 0


def test_parse_pid_file() -> None:
    assert parse_pid_file("4242\n") == 4242
    assert parse_pid_file("") is None
    assert parse_pid_file("garbage") is None
    assert parse_pid_file("0") is None


def test_parse_runtime_state_runc_and_oci() -> None:
    runc = container.parse_runtime_state(
        json.dumps(
            {
                "id": "web",
                "init_process_pid": 4321,
                "init_process_start": 998877,
                "config": {"labels": ["bundle=/srv/web", "novaops.ports=8080,9090"]},
            }
        )
    )
    assert (runc.pid, runc.bundle, runc.start_ticks) == (4321, "/srv/web", 998877)
    assert container.parse_ports(runc.annotations["novaops.ports"]) == (8080, 9090)
    oci = container.parse_runtime_state(
        json.dumps(
            {
                "id": "db",
                "pid": 77,
                "status": "running",
                "bundle": "/b",
                "annotations": {"a": "b"},
            }
        )
    )
    assert (oci.pid, oci.status, oci.bundle, oci.annotations) == (77, "running", "/b", {"a": "b"})
    with pytest.raises(ValueError):
        container.parse_runtime_state("[]")
    assert container.parse_ports("80/tcp, 53/udp,x,70000,80") == (80,)


def test_parse_stat_start_ticks_with_spaces_in_the_name() -> None:
    stat = "42 (my proc) S 1 42 42 0 -1 4194560 " + " ".join(["0"] * 12) + " 555 0 0"
    assert container.parse_stat_start_ticks(stat) == 555


def test_parse_proc_locks() -> None:
    text = (
        "1: POSIX  ADVISORY  WRITE 1234 fd:01:131090 0 EOF\n"
        "1: -> POSIX  ADVISORY  WRITE 999 fd:01:131090 0 EOF\n"
        "2: FLOCK  ADVISORY  WRITE 77 00:1a:5 0 EOF\n"
        "3: OFDLCK ADVISORY  READ  -1 00:1a:6 0 EOF\n"
    )
    assert leftovers.parse_proc_locks(text) == {(253, 1, 131090): [1234], (0, 26, 5): [77]}


def test_degraded_controls() -> None:
    assert host.degraded_controls("v2", True) == []
    assert host.degraded_controls("hybrid", True) == ["cgroup-kill"]
    assert host.degraded_controls("v2", False) == ["pidfd-signal"]


# -- event ring ----------------------------------------------------------------------------


def test_event_ring_is_bounded_and_filters_by_domain() -> None:
    ring = EventRing(capacity=3)
    for i in range(5):
        ring.record("web-1" if i % 2 == 0 else "db-1", "started", at=float(i))
    assert len(ring) == 3
    assert [e.at for e in ring.recent()] == [2.0, 3.0, 4.0]
    assert [e.at for e in ring.recent("web-1")] == [2.0, 4.0]
    assert [e.at for e in ring.recent("web-1", limit=1)] == [4.0]
    ids = {e.event_id for e in ring.recent()}
    assert len(ids) == 3
    assert ring.record("db-1", "stopped", "crashed").alarming
    with pytest.raises(ValueError):
        EventRing(capacity=0)


def test_event_ids_are_unique_and_shaped_like_uuid_hex() -> None:
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_to_proto_takes_a_shared_timestamp() -> None:
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    res = result("host.kvm", "host", Status.OK, "ok", {}, [])
    stamp = timestamp(at)
    assert (
        to_proto(res, "n1", stamp, "ev-1").observed_at
        == to_proto(res, "n1", at, "ev-1").observed_at
    )
    assert to_proto(res, "n1", stamp, "ev-1").observed_at.ToDatetime(dt.UTC) == at
