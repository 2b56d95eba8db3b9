"""The bundle's network state comes from the executor's configured network namespace.

The test makes two namespaces with iproute2: the node's, holding bridge
``brnv0`` with tap ``tapnv0`` in it, addresses and a route; and a guest's,
holding the tap's veth peer. A ping from the guest through the tap gives the
links non-zero counters. BundleService streams a bundle for a node whose
executor is configured with the node's namespace; its host root is a simulated
one (so without the namespace the collector would fall back to an empty
sys/class/net and skip). Both namespaces are deleted whatever happens.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from novaops.executor.bundle_service import BundleService
from novaops.executor.hostroot import HostRoot
from novaops.v1 import executor_pb2

pytestmark = pytest.mark.netns

BRIDGE, TAP, GUEST_IF = "brnv0", "tapnv0", "guestnv0"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    suffix = uuid.uuid4().hex[:8]
    node, guest = f"novaops-bn-{suffix}", f"novaops-bg-{suffix}"
    made: list[str] = []
    try:
        for name in (node, guest):
            _ip("netns", "add", name)
            made.append(name)
        _ip("-n", node, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", node, "link", "add", TAP, "type", "veth", "peer", "name", GUEST_IF)
        _ip("-n", node, "link", "set", GUEST_IF, "netns", guest)
        _ip("-n", node, "link", "set", TAP, "master", BRIDGE)
        for link in ("lo", BRIDGE, TAP):
            _ip("-n", node, "link", "set", link, "up")
        _ip("-n", node, "addr", "add", "10.77.0.1/24", "dev", BRIDGE)
        _ip("-n", node, "addr", "add", "fd77::1/64", "dev", BRIDGE, "nodad")
        _ip("-n", node, "route", "add", "10.99.0.0/16", "via", "10.77.0.2")
        _ip("-n", guest, "link", "set", GUEST_IF, "up")
        _ip("-n", guest, "addr", "add", "10.77.0.2/24", "dev", GUEST_IF)
        # Traffic through the tap (ARP, then the datagrams), so its counters move.
        send = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for _ in range(3):\n"
            "    s.sendto(b'novaops', ('10.77.0.1', 9))\n"
        )
        _ip("netns", "exec", guest, sys.executable, "-c", send)
        yield node
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


class _NoLibvirt:
    async def hypervisor_info(self) -> Any:
        raise RuntimeError("no libvirt in this test")

    async def list_domains(self) -> list[Any]:
        raise RuntimeError("no libvirt in this test")


def _service(tmp_path: Path, netns: str | None) -> BundleService:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("nv-node\n")
    ctx = SimpleNamespace(
        node="nv-node",
        version="0.0.0",
        host_root=HostRoot(root),
        libvirt=_NoLibvirt(),
        state_dir=tmp_path / "state",
        checks=SimpleNamespace(netns=netns),
    )
    (tmp_path / "state").mkdir()
    return BundleService(ctx, None)  # type: ignore[arg-type]


async def _bundle(service: BundleService) -> dict[str, bytes]:
    request = executor_pb2.CollectBundleRequest(include=["network"], request_id="netns-test")
    builder = service.builder(request)
    data = b"".join([chunk.data async for chunk in service.stream(request, builder) if chunk.data])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def _loop_thread_netns() -> str:
    return str(Path("/proc/thread-self/ns/net").readlink())


async def test_network_state_is_read_in_the_configured_namespace(
    namespaces: str, tmp_path: Path
) -> None:
    before = _loop_thread_netns()
    members = await _bundle(_service(tmp_path, namespaces))
    assert _loop_thread_netns() == before  # the event loop's thread never moved

    meta = json.loads(members["metadata.json"])
    status = {c["name"]: c["status"] for c in meta["collectors"]}
    assert status["network.state"] == "ok"
    state = json.loads(members["network/state.json"])
    assert state["source"] == "netlink" and state["netns"] == namespaces
    links = {link["name"]: link for link in state["links"]}
    # The namespace's links, and none of the executor's own.
    assert set(links) == {"lo", BRIDGE, TAP}
    assert state["bridges"] == {BRIDGE: [TAP]}
    assert links[TAP]["master"] == BRIDGE and links[BRIDGE]["kind"] == "bridge"
    assert links[TAP]["statistics"]["rx_packets"] > 0
    assert links[TAP]["statistics"]["tx_packets"] > 0
    addresses = {(a["link"], a["family"], a["address"], a["prefixlen"]) for a in state["addresses"]}
    assert {(BRIDGE, "inet", "10.77.0.1", 24), (BRIDGE, "inet6", "fd77::1", 64)} <= addresses
    routes = {(r["dst"], r["dst_len"], r["gateway"], r["oif"]) for r in state["routes"]}
    assert ("10.99.0.0", 16, "10.77.0.2", BRIDGE) in routes
    assert ("10.77.0.0", 24, None, BRIDGE) in routes


async def test_without_a_namespace_a_simulated_node_reads_its_host_root(tmp_path: Path) -> None:
    # No namespace and a simulated root: never the executor's own netlink.
    members = await _bundle(_service(tmp_path, None))
    meta = json.loads(members["metadata.json"])
    record = next(c for c in meta["collectors"] if c["name"] == "network.state")
    assert record["status"] == "skipped" and "sys/class/net" in record["error"]
    assert "network/state.json" not in members
