"""Node bundles built from a generated hypervisor tree, end to end through the writer.

The tree under a temp host root holds syslog, libvirtd, QEMU, nova-compute-like,
auth and container logs plus config files, seeded with one value of every kind
the redactor handles. A scrubbed bundle must contain none of them; validate must
find every one of them in an unredacted copy.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from novaops.client.bundle import (
    BundleRequestInfo,
    BundleWriter,
    extract,
    inspect,
    validate,
)
from novaops.client.bundle.format import STATUS_FAILED, STATUS_OK
from novaops.executor.bundle import BundleOptions, BundleSources, NodeBundleBuilder
from novaops.executor.hostroot import HostRoot

NOW = datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC)
KEY = b"k" * 32

# Every seeded value, by kind. None of them may survive a scrubbed bundle.
SECRETS = {
    "password": "Tr0ub4dor&3horse",
    "db_password": "n0va-db-pa55",
    "url_password": "rbdS3cretPw",
    "token": "tok_9f8e7d6c5b4a3928",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
    "aws_secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "github_token": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "slack_token": "xoxb-123456789012-abcdefghijkl",
    "bearer": "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5",
    "cookie": "sessionid=4f1c2e9a7b3d",
    "fernet": "gAAAAABk" + "Q" * 70,
    "pem_body": "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
    "vnc": "vncPassw0rd!",
}
IDENTIFIERS = {
    "ipv4": ["10.20.30.41", "172.16.5.9", "203.0.114.77"],
    "ipv6": ["fd12:3456:789a:1::15", "fe80::5054:ff:fe3a:1b2c"],
    "mac": ["52:54:00:3a:1b:2c", "fa:16:3e:11:22:33"],
    "hostname": ["compute-07.dc1.acme-corp.com", "ceph-mon1.storage.acme-corp.com", "hv-node-b"],
    "username": ["alice", "bob_ops", "carol.w"],
    "email": ["ops-team@acme-corp.com"],
}
ALL_SEEDS = list(SECRETS.values()) + [v for vs in IDENTIFIERS.values() for v in vs]


def _w(root: Path, host_path: str, text: str, mtime: datetime = NOW) -> None:
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))


def make_host_tree(root: Path) -> None:
    """A realistic hypervisor host, one seeded value of every kind."""
    s, i = SECRETS, IDENTIFIERS
    _w(root, "/etc/hostname", "hv-node-b\n")
    _w(
        root,
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nlibvirt-qemu:x:64055:108::/var/lib/libvirt:/bin/false\n"
        "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
        "bob_ops:x:1001:1001::/home/bob_ops:/bin/bash\n"
        "carol.w:x:1002:1002::/home/carol.w:/bin/bash\n",
    )
    _w(root, "/etc/hosts", f"127.0.0.1 localhost\n{i['ipv4'][0]} {i['hostname'][0]} compute-07\n")
    _w(
        root,
        "/etc/nova/nova.conf",
        "[DEFAULT]\nmy_ip = 10.20.30.41\ntransport_url = rabbit://nova:"
        f"{s['url_password']}@{i['hostname'][1]}:5672/\n[database]\n"
        f"connection = mysql+pymysql://nova:{s['db_password']}@172.16.5.9/nova\n"
        f"[keystone_authtoken]\nauth_url = http://{i['hostname'][1]}:5000\n"
        f"password = {s['password']}\n[vnc]\nserver_listen = 0.0.0.0\n",
    )
    _w(
        root,
        "/etc/libvirt/qemu.conf",
        f'vnc_password = "{s["vnc"]}"\nuser = "libvirt-qemu"\n'
        f"aws_secret_access_key: {s['aws_secret']}\n",
    )
    old = "Mar  8 09:00:00"  # outside a 24h window
    _w(
        root,
        "/var/log/syslog",
        f"{old} hv-node-b kernel: [    0.000000] Linux version 6.1.0 old line\n"
        f"Mar 10 11:00:01 hv-node-b kernel: br0: port 1(tap3a1b2c) entered forwarding state\n"
        f"Mar 10 11:00:02 hv-node-b dnsmasq-dhcp[811]: DHCPACK(br0) {i['ipv4'][2]} "
        f"{i['mac'][0]} {i['hostname'][0]}\n"
        f"Mar 10 11:00:03 hv-node-b systemd[1]: Failed to start nova-compute.service.\n"
        f"Mar 10 11:00:04 hv-node-b NetworkManager[700]: inet6 {i['ipv6'][0]}/64 on br0\n",
    )
    _w(
        root,
        "/var/log/auth.log",
        f"Mar 10 11:10:00 hv-node-b sshd[2211]: Accepted publickey for alice from "
        f"{i['ipv4'][2]} port 50022 ssh2\n"
        f"Mar 10 11:11:00 hv-node-b sshd[2212]: Failed password for invalid user bob_ops from "
        f"{i['ipv6'][1]} port 40000 ssh2\n"
        f"Mar 10 11:12:00 hv-node-b sudo:  carol.w : TTY=pts/0 ; PWD=/home/carol.w ; "
        f"USER=root ; COMMAND=/usr/bin/virsh list\n",
    )
    _w(
        root,
        "/var/log/libvirt/libvirtd.log",
        "2025-03-10 11:20:00.123+0000: 1234: info : libvirt version: 9.0.0\n"
        "2025-03-10 11:20:01.000+0000: 1234: error : virNetSocketReadWire:1793 : "
        "End of file while reading data: Input/output error\n"
        f"2025-03-10 11:20:02.000+0000: 1234: debug : remote client {i['ipv4'][1]} "
        f"Authorization: Bearer {s['bearer']}\n"
        "2025-03-10 11:20:03.000+0000: 1234: error : virNetSocketReadWire:1793 : "
        "End of file while reading data: Input/output error\n",
    )
    _w(
        root,
        "/var/log/libvirt/qemu/instance-00000042.log",
        "2025-03-10 11:30:00.000+0000: starting up libvirt version: 9.0.0\n"
        f"LC_ALL=C /usr/bin/qemu-system-x86_64 -name guest=instance-00000042 "
        f"-netdev tap,id=hostnet0 -device virtio-net-pci,mac={i['mac'][1]} "
        f"-vnc 0.0.0.0:0,password=on -object secret,id=sec0,data={s['token']}\n"
        "2025-03-10T11:30:05.123456Z qemu-system-x86_64: terminating on signal 15\n",
    )
    _w(
        root,
        "/var/log/nova/nova-compute.log",
        "2025-03-10 11:40:00.001 4242 INFO nova.compute.manager [req-1 - - - - -] "
        f"Took 1.2 seconds to spawn on {i['hostname'][0]} for user alice "
        f"({i['email'][0]})\n"
        f"2025-03-10 11:40:01.002 4242 DEBUG keystoneauth.session REQ: curl -g -i -X GET "
        f'http://{i["hostname"][1]}:8774/v2.1 -H "X-Auth-Token: {s["fernet"]}" '
        f"-H 'Cookie: {s['cookie']}'\n"
        f"2025-03-10 11:40:02.003 4242 ERROR nova.compute.manager Traceback: github token "
        f"{s['github_token']} slack {s['slack_token']} jwt {s['jwt']}\n"
        "-----BEGIN RSA PRIVATE KEY-----\n"
        f"{s['pem_body']}\n"
        "-----END RSA PRIVATE KEY-----\n"
        f"2025-03-10 11:40:03.004 4242 INFO nova aws key {s['aws_access_key_id']} ok\n",
    )
    _w(
        root,
        "/var/lib/docker/containers/abcdef0123456789/abcdef0123456789-json.log",
        json.dumps(
            {"log": f"login user=bob_ops from {i['ipv4'][0]}\n", "time": "2025-03-10T11:50:00Z"}
        )
        + "\n",
    )
    _w(root, "/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n")
    _w(root, "/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vmx ept vpid sse2\n")
    _w(root, "/proc/loadavg", "0.10 0.20 0.30 1/200 4242\n")
    _w(root, "/sys/fs/cgroup/cgroup.controllers", "cpu memory io\n")
    _w(
        root,
        "/var/lib/dpkg/status",
        "Package: libvirt-daemon\nStatus: install ok installed\nVersion: 9.0.0-4\n\n"
        "Package: qemu-system-x86\nStatus: install ok installed\nVersion: 1:7.2+dfsg-7\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2\n",
    )
    _w(root, "/sys/class/net/br0/address", f"{i['mac'][0]}\n")
    (root / "sys/class/net/br0/bridge").mkdir(parents=True)
    _w(root, "/sys/class/net/tap3a1b2c/address", f"{i['mac'][1]}\n")
    _w(root, "/sys/class/net/tap3a1b2c/statistics/rx_bytes", "1234\n")
    (root / "sys/class/net/tap3a1b2c/master").symlink_to("../br0")


def sources(root: Path, log: Path | None = None, *, fail_domains: bool = False) -> BundleSources:
    def domains() -> list[tuple[str, str, str]]:
        if fail_domains:
            raise RuntimeError("libvirt: connection refused to qemu:///system")
        xml = (
            "<domain type='kvm'><name>instance-00000042</name>"
            f"<devices><interface type='bridge'><mac address='{IDENTIFIERS['mac'][1]}'/>"
            f"</interface><graphics type='vnc' passwd='{SECRETS['vnc']}'/></devices></domain>"
        )
        return [("instance-00000042", "running", xml)]

    checks = [
        {"name": "libvirt.reachable", "status": "passed", "message": "ok"},
        {
            "name": "bridge.br0.stp",
            "status": "failed",
            "message": f"STP off on br0 ({IDENTIFIERS['ipv4'][0]})",
            "remediation": "enable STP",
        },
    ]
    return BundleSources(
        host_root=HostRoot(root),
        novaops_version="0.1.0",
        executor_log=log,
        libvirt_info=lambda: ("9.0.0", "<capabilities><host><uuid>x</uuid></host></capabilities>"),
        domains=domains,
        diag_checks=lambda: checks,
        diag_network=lambda: {"bridges": {"br0": {"members": ["tap3a1b2c"]}}},
        clock=lambda: NOW,
    )


def build(root: Path, *, scrub: bool, node: str = "node-a", **kw: object) -> NodeBundleBuilder:
    options = BundleOptions(
        node=node,
        request_id="req-1",
        include=frozenset({"network", "metrics"}),
        scrub=scrub,
        scrub_key=KEY,
        since=timedelta(hours=24),
        return_map=True,
        chunk_size=4096,
    )
    return NodeBundleBuilder(options, sources(root, **kw))  # type: ignore[arg-type]


def tar_texts(data: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    make_host_tree(root)
    return root


def test_scrubbed_node_bundle_has_no_seeded_value(host: Path) -> None:
    builder = build(host, scrub=True)
    chunks = list(builder.chunks())
    assert all(len(c) <= 4096 for c in chunks)
    data = b"".join(chunks)
    assert builder.result is not None and builder.result.size == len(data)
    files = tar_texts(data)
    everything = "\n".join(files.values()) + "\n".join(files)
    survivors = [v for v in ALL_SEEDS if v in everything]
    assert survivors == []
    meta = json.loads(files["metadata.json"])
    statuses = {c["name"]: c["status"] for c in meta["collectors"]}
    assert statuses["logs.libvirt"] == "ok" and statuses["network.state"] == "ok"
    assert statuses["logs.executor"] == "skipped"
    counts = {r["kind"]: r["count"] for r in meta["redactions"]}
    assert meta["scrub"] is True and counts["ipv4"] >= 3
    # The since window drops the old syslog line; the pseudonym map came back.
    assert "old line" not in files["logs/system/syslog"]
    mapping = builder.result.pseudonym_map or {}
    assert mapping["username"]["alice"].startswith("user-")
    # Bridge membership survives scrubbing (interface names are not identifiers).
    assert '"br0": [\n      "tap3a1b2c"' in files["network/state.json"]


def test_default_rules_keep_identifiers_but_not_secrets(host: Path) -> None:
    files = tar_texts(b"".join(build(host, scrub=False).chunks()))
    everything = "\n".join(files.values())
    assert [v for v in SECRETS.values() if v in everything] == []
    assert IDENTIFIERS["ipv4"][0] in everything


def test_validate_finds_every_seeded_kind_in_an_unredacted_copy(host: Path, tmp_path: Path) -> None:
    # An unredacted node archive: the same tree packed by plain tar.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path in sorted(host.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=str(path.relative_to(host)))
        meta = json.dumps({"format": "novaops-node-bundle/1", "node": "node-a", "files": []})
        info = tarfile.TarInfo("metadata.json")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta.encode()))
    out = tmp_path / "raw.tar.gz"
    with BundleWriter(out, request=BundleRequestInfo(scrub=True)) as writer:
        import hashlib

        data = raw.getvalue()
        writer.add_chunk("node-a", 0, data)
        writer.finish_node("node-a", hashlib.sha256(data).hexdigest(), len(data))
        writer.close()
    findings = validate(out)
    found_kinds = {f.kind for f in findings}
    for kind in (
        "password",
        "url_password",
        "jwt",
        "aws_access_key_id",
        "github_token",
        "slack_token",
        "private_key",
        "cookie",
        "openstack_token",
        "ipv4",
        "ipv6",
        "mac",
        "hostname",
        "username",
        "email",
    ):
        assert kind in found_kinds, kind
    rendered = "\n".join(str(f) for f in findings)
    assert [v for v in ALL_SEEDS if len(v) > 6 and v in rendered] == []


def _feed(
    writer: BundleWriter, node: str, builder: NodeBundleBuilder, stop_after: int = -1
) -> None:
    offset = 0
    writer.start_node(node)
    for count, chunk in enumerate(builder.chunks()):
        if count == stop_after:
            writer.fail_node(node, "UNAVAILABLE: executor went away mid-stream")
            return
        writer.add_chunk(node, offset, chunk)
        offset += len(chunk)
    result = builder.result
    assert result is not None
    writer.finish_node(node, result.sha256, result.size, result.redactions, result.pseudonym_map)


def test_round_trip_two_nodes_one_failing_mid_stream(host: Path, tmp_path: Path) -> None:
    log = tmp_path / "executor.log"
    log.write_text(f"{NOW.isoformat()} ERROR bundle test from {IDENTIFIERS['ipv4'][1]}\n")
    out = tmp_path / "out" / "bundle.tar.zst"
    node_a = build(host, scrub=True, node="node-a", log=log, fail_domains=True)
    node_b = build(host, scrub=True, node="node-b")
    # Scrubbed, the executors' streams name the nodes by their pseudonyms.
    a, b = node_a.archive_node, node_b.archive_node
    assert a.startswith("host-") and b.startswith("host-") and a != b
    request = BundleRequestInfo(include=("network",), scrub=True, since_seconds=86400, nodes=(a, b))
    with BundleWriter(out, request=request, keep_map=True) as writer:
        _feed(writer, a, node_a)
        _feed(writer, b, node_b, stop_after=3)
        summary = writer.close()
    assert summary.failed_nodes == [b]
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "bundle.tar.zst",
        "bundle.tar.zst.map.json",
    ]
    assert summary.map_path is not None and summary.map_path.stat().st_mode & 0o777 == 0o600
    assert json.loads(summary.map_path.read_text())["hostname"]["node-a"] == a
    assert validate(out) == []

    report = inspect(out)
    by_node = {n.node: n for n in report.nodes}
    assert by_node[a].status == STATUS_OK and by_node[b].status == STATUS_FAILED
    assert "mid-stream" in by_node[b].error
    assert [c.name for c in by_node[a].failing_checks] == ["bridge.br0.stp"]
    assert [name for name, _ in by_node[a].collector_failures] == ["libvirt.domains"]
    assert by_node[a].top_errors[0][0] == 2  # the repeated libvirtd error
    assert report.time_window[0] is not None and report.redaction_totals()["ipv4"] > 0

    dest = extract(out, tmp_path / "extracted")
    manifest = json.loads((dest / "manifest.json").read_text())
    assert {n["node"]: n["status"] for n in manifest["nodes"]} == {a: "ok", b: "failed"}
    assert (dest / f"nodes/{a}/logs/libvirt/libvirtd.log").is_file()
    assert not (dest / f"nodes/{b}").exists()


async def test_async_stream_resolves_async_sources_with_back_pressure(host: Path) -> None:
    builder = build(host, scrub=False)

    async def diag_checks() -> list[dict[str, str]]:
        await asyncio.sleep(0)
        return [{"name": "x", "status": "failed"}]

    builder.sources.diag_checks = diag_checks
    stream = builder.stream()
    first = await stream.__anext__()
    assert len(first) == 4096 and builder.result is None  # nothing ran ahead
    rest = [chunk async for chunk in stream]
    files = tar_texts(first + b"".join(rest))
    assert json.loads(files["diag/checks.json"]) == [{"name": "x", "status": "failed"}]


def iter_tree(root: Path) -> Iterator[Path]:
    yield from (p for p in root.rglob("*") if p.is_file())


# ------------------------------------------------- generated tree (bench/logtree.py)

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bench.logtree import SECRET_SEED_KINDS, make_log_tree, survivors  # noqa: E402


def _extract_node_tar(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


@pytest.mark.parametrize("scrub", [False, True])
def test_generated_tree_has_no_survivors(
    tmp_path: Path, scrub: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import novaops.executor.bundle.builder as builder_module

    # Small files go to the worker processes too, so the parallel path is tested.
    monkeypatch.setattr(builder_module, "PARALLEL_MIN_BYTES", 64 * 1024)
    tree = make_log_tree(tmp_path / "host", 3, seeds_per_kind=6)
    options = BundleOptions(node="n", scrub=scrub, scrub_key=KEY, workers=2)
    builder = NodeBundleBuilder(options, BundleSources(host_root=HostRoot(tree.root)))
    _extract_node_tar(b"".join(builder.chunks()), tmp_path / "out")
    # Bundle layout -> tree layout, for the seeded log files the collectors take.
    paths: dict[str, str] = {}
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    for entry in meta["files"]:
        if entry["source"].startswith("/"):
            paths[entry["source"].lstrip("/")] = entry["path"]
    seeded = [s for s in tree.seeds if s.path in paths]
    assert {s.path for s in seeded} >= {p for p in paths if p.startswith("var/log")}
    kinds = {s.kind for s in seeded}
    assert kinds >= set(SECRET_SEED_KINDS) - {"aws_secret_key"}
    left = [s for s in survivors(tree, tmp_path / "out", paths) if s.path in paths]
    if scrub:
        assert left == []
    else:
        assert [s for s in left if s.kind in SECRET_SEED_KINDS] == []


# ----------------------------------------------------------- the node's own name

FQDN_NODE = "compute-07.dc1.acme-corp.com"


def _every_member(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


@pytest.mark.parametrize("etc_hostname", [True, False])
def test_scrubbed_bundle_of_an_fqdn_node_holds_its_name_nowhere(
    tmp_path: Path, etc_hostname: bool
) -> None:
    # The host root's own path, /etc/hostname, syslog, a VM, the executor log
    # and a check result all carry the node's name; the archive may not. Without
    # /etc/hostname (a simulated node) the name comes from the request alone.
    root = tmp_path / "nodes" / FQDN_NODE / "root"
    make_host_tree(root)
    (root / "etc/hosts").unlink()
    if etc_hostname:
        _w(root, "/etc/hostname", "compute-07\n")
    else:
        (root / "etc/hostname").unlink()
    _w(
        root,
        "/var/log/syslog",
        f"Mar 10 11:00:01 compute-07 kernel: br0: port 1(tap3a1b2c) entered forwarding state\n"
        f"Mar 10 11:00:02 compute-07 nova-compute[42]: host {FQDN_NODE} up, "
        f"vm compute-07-vm1, path /srv/{FQDN_NODE}/disk\n",
    )
    log = tmp_path / "executor.log"
    log.write_text(f"{NOW.isoformat()} INFO executor on {FQDN_NODE} (compute-07) started\n")
    node_sources = sources(root, log)
    xml = "<domain type='kvm'><name>compute-07-vm1</name></domain>"
    node_sources.domains = lambda: [("compute-07-vm1", "running", xml)]
    node_sources.diag_checks = lambda: [
        {"name": "host.name", "status": "failed", "message": f"{FQDN_NODE}: clock skew"}
    ]
    options = BundleOptions(
        node=FQDN_NODE,
        request_id=f"req-{FQDN_NODE}",
        include=frozenset({"network", "metrics"}),
        scrub=True,
        scrub_key=KEY,
        return_map=True,
    )
    builder = NodeBundleBuilder(options, node_sources)
    data = b"".join(builder.chunks())
    result = builder.result
    assert result is not None

    members = _every_member(data)
    everything = b"\n".join([*(name.encode() for name in members), *members.values()])
    assert b"compute-07" not in everything.lower()
    assert {"libvirt/domains.json", "system/facts.json", "logs/system/syslog"} <= set(members)
    meta = json.loads(members["metadata.json"])
    assert meta["node"] == result.archive_node and result.archive_node.startswith("host-")
    # The real name is only in the private map.
    assert (result.pseudonym_map or {})["hostname"]["compute-07"] == "host-" + (
        result.archive_node.split(".")[0].removeprefix("host-")
    )

    # The executor's stream names the node by its pseudonym, so does the client.
    again = NodeBundleBuilder(options, node_sources)
    assert again.archive_node == result.archive_node
    out = tmp_path / "bundle.tar.gz"
    request = BundleRequestInfo(scrub=True, nodes=(again.archive_node,))
    with BundleWriter(out, request=request, keep_map=True) as writer:
        _feed(writer, again.archive_node, again)
        writer.close()
    assert validate(out) == []
    bundle_bytes = out.read_bytes()
    import gzip

    assert b"compute-07" not in gzip.decompress(bundle_bytes).lower()
    assert b"compute-07" in (out.parent / "bundle.tar.gz.map.json").read_bytes()
