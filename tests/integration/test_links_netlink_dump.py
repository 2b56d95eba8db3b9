"""netlink_links' own RTM_GETLINK dump, against pyroute2 and iproute2, in the
executor's own namespace and in network namespaces made by the test.

The fixture's namespace holds bridge ``br0`` (up), veth ``va0`` in it with peer
``vb0`` (both up), tap ``vnet7`` (down), dummy ``dm0`` (down) and dummy ``dm1``
(up) -- ifb links instead where the kernel has no dummy driver. Every namespace
is removed in a finally, whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from novaops.executor.checks.domains import FakeDomainSource
from novaops.executor.checks.leftovers import gather_taps
from novaops.executor.checks.links import LinkInfo, netlink_links
from novaops.executor.checks.sources import CheckSources
from novaops.executor.hostroot import HostRoot
from novaops.executor.netns import NETNS_RUN_DIR, NetnsError, iproute, namespace_identity

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

pyroute2 = pytest.importorskip("pyroute2")


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)
    return done.stdout


def _needs_root() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")


def _add_plain(name: str, link: str) -> str:
    """A dummy link (an ifb where the dummy driver is missing); its kind."""
    try:
        _ip("-n", name, "link", "add", link, "type", "dummy")
        return "dummy"
    except subprocess.CalledProcessError:
        _ip("-n", name, "link", "add", link, "type", "ifb")
        return "ifb"


def _populate(name: str, bridge: str = "br0") -> str:
    """The links of the module docstring; the kind of dm0 and dm1."""
    _ip("-n", name, "link", "add", bridge, "type", "bridge")
    _ip("-n", name, "link", "add", "va0", "type", "veth", "peer", "name", "vb0")
    _ip("-n", name, "link", "set", "va0", "master", bridge)
    _ip("-n", name, "tuntap", "add", "dev", "vnet7", "mode", "tap")
    plain = _add_plain(name, "dm0")
    _add_plain(name, "dm1")
    for link in (bridge, "va0", "vb0", "dm1"):
        _ip("-n", name, "link", "set", link, "up")
    return plain


def _remove(name: str) -> None:
    if (NETNS_RUN_DIR / name).exists():
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)


PLAIN_KIND: dict[str, str] = {}  # namespace -> the kind _populate gave dm0 and dm1


@pytest.fixture
def namespace() -> Iterator[str]:
    _needs_root()
    name = f"novaops-ld-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", name)
        PLAIN_KIND[name] = _populate(name)
        yield name
    finally:
        PLAIN_KIND.pop(name, None)
        _remove(name)


def _pyroute2_links(name: str | None) -> list[LinkInfo]:
    """The links as the old netlink_links decoded them: pyroute2's full dump."""
    with iproute(name) as ipr:
        raw = list(ipr.get_links())
    names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in raw}
    links = []
    for msg in raw:
        info = msg.get_attr("IFLA_LINKINFO")
        master = msg.get_attr("IFLA_MASTER")
        links.append(
            LinkInfo(
                name=str(msg.get_attr("IFLA_IFNAME")),
                kind=str((info.get_attr("IFLA_INFO_KIND") if info is not None else None) or ""),
                master=str(names.get(master, "")) if master else "",
                up=bool(msg["flags"] & 0x1),
            )
        )
    return sorted(links, key=lambda link: link.name)


def _iproute2_links(name: str | None) -> list[LinkInfo]:
    args = ["-d", "-j", "link", "show"]
    links = [
        LinkInfo(
            name=entry["ifname"],
            kind=entry.get("linkinfo", {}).get("info_kind", ""),
            master=entry.get("master", ""),
            up="UP" in entry["flags"],
        )
        for entry in json.loads(_ip(*args) if name is None else _ip("-n", name, *args))
    ]
    return sorted(links, key=lambda link: link.name)


def _open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def test_own_namespace_matches_pyroute2() -> None:
    links = netlink_links(None)
    assert links == _pyroute2_links(None)
    assert "lo" in {link.name for link in links}
    if shutil.which("ip") is not None:
        assert links == _iproute2_links(None)


def test_test_namespace_matches_pyroute2_and_iproute2(namespace: str) -> None:
    links = netlink_links(namespace)
    assert links == _pyroute2_links(namespace) == _iproute2_links(namespace)
    assert links == [
        LinkInfo("br0", "bridge", "", True),
        LinkInfo("dm0", PLAIN_KIND[namespace], "", False),
        LinkInfo("dm1", PLAIN_KIND[namespace], "", True),
        LinkInfo("lo", "", "", False),
        LinkInfo("va0", "veth", "br0", True),
        LinkInfo("vb0", "veth", "", True),
        LinkInfo("vnet7", "tun", "", False),
    ]


def test_many_links_span_several_datagrams(namespace: str) -> None:
    """~100 links: the dump comes in several datagrams, all of them read."""
    batch = "\n".join(
        [f"link add vx{i} type veth peer name vy{i}" for i in range(25)]
        + [f"tuntap add dev tp{i} mode tap" for i in range(25)]
        + [f"link set vx{i} master br0" for i in range(0, 25, 2)]
        + [f"link set vx{i} up" for i in range(0, 25, 3)]
    )
    subprocess.run(
        ["ip", "-n", namespace, "-batch", "-"], input=batch, check=True, text=True, timeout=30
    )
    links = netlink_links(namespace)
    assert len(links) == 7 + 75
    assert links == _pyroute2_links(namespace) == _iproute2_links(namespace)
    assert LinkInfo("vx4", "veth", "br0", False) in links
    assert LinkInfo("vx6", "veth", "br0", True) in links


def test_reads_see_changes_and_leave_no_socket_or_namespace_behind(namespace: str) -> None:
    own = namespace_identity(None)
    netlink_links(namespace)
    before = _open_fds()
    _ip("-n", namespace, "link", "add", "br1", "type", "bridge")
    _ip("-n", namespace, "link", "set", "vb0", "master", "br1")
    after = netlink_links(namespace)
    assert LinkInfo("br1", "bridge", "", False) in after
    assert LinkInfo("vb0", "veth", "br1", True) in after
    _ip("-n", namespace, "link", "del", "br1")
    assert "br1" not in {link.name for link in netlink_links(namespace)}
    assert _open_fds() == before
    assert namespace_identity(None) == own  # the thread is back in its namespace


def test_namespace_deleted_and_recreated_under_the_same_name(namespace: str) -> None:
    assert "br0" in {link.name for link in netlink_links(namespace)}
    _ip("netns", "del", namespace)
    with pytest.raises(NetnsError, match=f"network namespace {namespace!r}"):
        netlink_links(namespace)
    _ip("netns", "add", namespace)
    _populate(namespace, bridge="brnew")
    recreated = netlink_links(namespace)
    assert {link.name for link in recreated} == {"brnew", "dm0", "dm1", "lo", "va0", "vb0", "vnet7"}
    assert recreated == _iproute2_links(namespace)


def test_missing_namespace_raises_netns_error_an_oserror() -> None:
    with pytest.raises(NetnsError, match="network namespace 'novaops-ld-absent'") as caught:
        netlink_links("novaops-ld-absent")
    assert isinstance(caught.value, OSError)


async def test_worker_threads_each_read_the_namespace(namespace: str) -> None:
    expected = _iproute2_links(namespace)
    own = await asyncio.to_thread(netlink_links, None)
    before = _open_fds()
    barrier = threading.Barrier(3)

    def read_together() -> tuple[list[LinkInfo], list[LinkInfo]]:
        barrier.wait(timeout=10)
        return netlink_links(namespace), netlink_links(None)

    for _ in range(3):
        results = await asyncio.gather(*(asyncio.to_thread(read_together) for _ in range(3)))
        assert all(result == (expected, own) for result in results)
    assert _open_fds() == before


async def test_tap_evidence_and_its_namespace_gone(namespace: str) -> None:
    """The callers' contract is unchanged: a vanished namespace is an OSError,
    which gather_taps reports as evidence (not a crash)."""
    sources = CheckSources(
        node="n1", root=HostRoot("/"), domains=FakeDomainSource(), netns=namespace
    )
    assert [tap.name for tap in (await gather_taps(sources)).taps] == ["vnet7"]
    _ip("netns", "del", namespace)
    gone = await gather_taps(sources)
    assert gone.taps == () and f"network namespace {namespace!r}" in gone.error
