"""Link dumps on kept-open pyroute2 sockets (executor/netns.py call_cached), in
network namespaces made by the test. cached_links no longer uses this cache (it
reads on a raw socket per call: test_links_netlink_dump.py); the cache is still
exercised here as the old link read, ``cached_links``.

Each test makes its own namespace with iproute2 (bridge ``br0`` up, veth ``va0``
in it with peer ``vb0``, tap ``vnet7``) and removes it in the fixture's finally,
whatever happens; cached sockets are closed before and after each test. What
pyroute2 reads is compared with ``ip -d -j link show``, an independent reader.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from novaops.executor import netns as netns_module
from novaops.executor.checks.links import LinkInfo
from novaops.executor.netns import NETNS_RUN_DIR, NetnsError, call_cached, close_cached, iproute

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

pyroute2 = pytest.importorskip("pyroute2")


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)
    return done.stdout


def _populate(name: str, bridge: str = "br0") -> None:
    _ip("-n", name, "link", "add", bridge, "type", "bridge")
    _ip("-n", name, "link", "add", "va0", "type", "veth", "peer", "name", "vb0")
    _ip("-n", name, "link", "set", "va0", "master", bridge)
    _ip("-n", name, "tuntap", "add", "dev", "vnet7", "mode", "tap")
    for link in (bridge, "va0", "vb0"):
        _ip("-n", name, "link", "set", link, "up")


def _remove(name: str) -> None:
    if (NETNS_RUN_DIR / name).exists():
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)


@pytest.fixture
def namespace() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    name = f"novaops-lc-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", name)
        _populate(name)
        yield name
    finally:
        _remove(name)


@pytest.fixture(autouse=True)
def _no_cached_sockets() -> Iterator[None]:
    close_cached()
    yield
    close_cached()
    gc.collect()  # an unclosed loop or transport would warn now, inside the test


@pytest.fixture
def constructions(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every IPRoute constructed during the test (netns.py imports it per open)."""
    made: list[Any] = []
    real = pyroute2.IPRoute

    class CountingIPRoute(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(pyroute2, "IPRoute", CountingIPRoute)
    return made


def _iproute2_links(name: str | None) -> list[LinkInfo]:
    """The same links as iproute2 sees them."""
    args = (
        ["-d", "-j", "link", "show"] if name is None else ["-n", name, "-d", "-j", "link", "show"]
    )
    links = [
        LinkInfo(
            name=entry["ifname"],
            kind=entry.get("linkinfo", {}).get("info_kind", ""),
            master=entry.get("master", ""),
            up="UP" in entry["flags"],
        )
        for entry in json.loads(_ip(*args))
    ]
    return sorted(links, key=lambda link: link.name)


def _uncached_links(name: str | None) -> list[LinkInfo]:
    """The links read on a pyroute2 socket opened for the call."""
    with iproute(name) as ipr:
        return _decode(list(ipr.get_links()))


def _decode(raw: list[Any]) -> list[LinkInfo]:
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


def cached_links(name: str | None) -> list[LinkInfo]:
    """The links, dumped on this thread's kept-open socket (the old netlink_links)."""
    return _decode(call_cached(name, lambda ipr: list(ipr.get_links())))


def _open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def test_repeated_reads_reuse_one_socket_and_match_a_fresh_read(
    namespace: str, constructions: list[Any]
) -> None:
    first = cached_links(namespace)
    for _ in range(20):
        assert cached_links(namespace) == first
    assert len(constructions) == 1
    assert first == _uncached_links(namespace) == _iproute2_links(namespace)
    assert LinkInfo("va0", "veth", "br0", True) in first
    assert LinkInfo("vnet7", "tun", "", False) in first
    # The kept-open socket is not subscribed to notifications: nothing piles up.
    assert constructions[0].asyncore.socket.getsockname()[1] == 0


def test_own_namespace_reads_reuse_one_socket(constructions: list[Any]) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs iproute2")
    first = cached_links(None)
    for _ in range(5):
        assert cached_links(None) == first
    assert len(constructions) == 1
    assert first == _uncached_links(None) == _iproute2_links(None)


def test_a_link_added_between_reads_is_seen(namespace: str, constructions: list[Any]) -> None:
    before = cached_links(namespace)
    assert "br1" not in {link.name for link in before}
    _ip("-n", namespace, "link", "add", "br1", "type", "bridge")
    _ip("-n", namespace, "link", "set", "vb0", "master", "br1")
    after = cached_links(namespace)
    assert LinkInfo("br1", "bridge", "", False) in after
    assert LinkInfo("vb0", "veth", "br1", True) in after
    _ip("-n", namespace, "link", "del", "br1")
    assert "br1" not in {link.name for link in cached_links(namespace)}
    assert len(constructions) == 1


def test_namespace_deleted_and_recreated_under_the_same_name(
    namespace: str, constructions: list[Any]
) -> None:
    assert "br0" in {link.name for link in cached_links(namespace)}
    _ip("netns", "del", namespace)
    with pytest.raises(NetnsError):  # as without the cache: the namespace is gone
        cached_links(namespace)
    _ip("netns", "add", namespace)
    _populate(namespace, bridge="brnew")
    recreated = cached_links(namespace)
    assert {link.name for link in recreated} == {"brnew", "lo", "va0", "vb0", "vnet7"}
    assert recreated == _iproute2_links(namespace)
    assert len(constructions) == 2


def test_namespace_swapped_without_a_read_in_between(
    namespace: str, constructions: list[Any]
) -> None:
    cached_links(namespace)
    _ip("netns", "del", namespace)
    _ip("netns", "add", namespace)  # an empty one: only lo
    assert [link.name for link in cached_links(namespace)] == ["lo"]
    assert len(constructions) == 2


def test_missing_namespace_raises_netns_error_and_caches_nothing() -> None:
    with pytest.raises(NetnsError, match="network namespace 'novaops-lc-absent'"):
        cached_links("novaops-lc-absent")
    assert close_cached() == 0


def test_a_closed_cached_socket_is_replaced(namespace: str, constructions: list[Any]) -> None:
    first = cached_links(namespace)
    constructions[0].close()  # behind the cache's back: the next call on it raises
    assert cached_links(namespace) == first
    assert len(constructions) == 2


def test_a_socket_whose_fd_went_away_is_replaced(namespace: str, constructions: list[Any]) -> None:
    first = cached_links(namespace)
    # The netlink socket itself dies (as on a namespace teardown error): the
    # dump on it raises OSError, the retry opens a new one.
    fd = constructions[0].asyncore.socket.fileno()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, fd)  # the socket's fd now names /dev/null: sendto fails
    os.close(null)
    assert cached_links(namespace) == first
    assert len(constructions) == 2


def test_a_failing_read_is_retried_once_then_raised(
    namespace: str, constructions: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    cached_links(namespace)
    calls = []

    def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(self)
        raise NetlinkError(16, "busy")

    monkeypatch.setattr(type(constructions[0]), "get_links", refuse, raising=False)
    with pytest.raises(NetlinkError):
        cached_links(namespace)
    # One call on the cached socket, one on a fresh one; neither is kept.
    assert len(calls) == 2 and calls[0] is constructions[0] and calls[1] is constructions[1]
    assert close_cached() == 0


async def test_worker_threads_read_the_namespace_and_close_from_the_loop(
    namespace: str, constructions: list[Any]
) -> None:
    """Reads from several pool threads each see the namespace (a socket shared
    across threads would dump the executor's own); closing from the event loop's
    thread closes them all, with their loops, and leaves no fd behind."""
    expected = _iproute2_links(namespace)
    before = _open_fds()
    barrier = threading.Barrier(3)

    def read_together() -> list[LinkInfo]:
        barrier.wait(timeout=10)  # three distinct threads
        return cached_links(namespace)

    for _ in range(3):
        results = await asyncio.gather(*(asyncio.to_thread(read_together) for _ in range(3)))
        assert all(result == expected for result in results)
    assert len(constructions) == 3
    assert _open_fds() > before
    assert close_cached() == 3
    gc.collect()
    assert _open_fds() == before
    # The threads' dropped sockets are reopened on their next read.
    assert await asyncio.to_thread(cached_links, namespace) == expected
    assert len(constructions) == 4


def test_sockets_of_ended_threads_are_closed(namespace: str) -> None:
    before = _open_fds()
    reader = threading.Thread(target=cached_links, args=(namespace,))
    reader.start()
    reader.join(timeout=10)
    assert _open_fds() > before  # the ended thread's socket and loop, still open
    cached_links(namespace)  # opening one here closes the ended thread's
    gc.collect()
    assert close_cached() == 1
    gc.collect()
    assert _open_fds() == before


def test_the_thread_cache_is_bounded(
    constructions: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    monkeypatch.setattr(netns_module, "MAX_CACHED_PER_THREAD", 2)
    names = [f"novaops-lc-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    try:
        for name in names:
            _ip("netns", "add", name)
        for name in names:
            assert [link.name for link in cached_links(name)] == ["lo"]
        assert len(constructions) == 3
        assert constructions[0].asyncore.status["closed"]  # least recently used: closed
        cached_links(names[2])
        assert len(constructions) == 3
        assert close_cached() == 2
    finally:
        for name in names:
            _remove(name)
