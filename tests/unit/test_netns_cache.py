"""The kept-open netlink socket cache (executor/netns.py: call_cached, close_cached),
on a fake IPRoute: no netlink, no namespaces (the real thing: tests/integration/
test_links_netlink_cache.py covers the link reads, which no longer use this
cache). Named namespaces are faked by replacing ``entered``
and ``namespace_identity``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from novaops.executor import netns as netns_module
from novaops.executor.netns import call_cached, close_cached

pytestmark = pytest.mark.timeout(30)

pyroute2 = pytest.importorskip("pyroute2")


def read_links(netns: str | None = None) -> list[Any]:
    """A link dump on this thread's cached socket in netns."""
    return call_cached(netns, lambda ipr: list(ipr.get_links()))


class FakeMsg:
    def __init__(self, index: int, flags: int, **attrs: Any) -> None:
        self.fields = {"index": index, "flags": flags}
        self.attrs = attrs

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


def _kind(kind: str) -> FakeMsg:
    return FakeMsg(0, 0, IFLA_INFO_KIND=kind)


LINKS = [
    FakeMsg(3, 1, IFLA_IFNAME="vnet0", IFLA_MASTER=2, IFLA_LINKINFO=_kind("tun")),
    FakeMsg(1, 1, IFLA_IFNAME="lo"),
    FakeMsg(2, 0, IFLA_IFNAME="br0", IFLA_LINKINFO=_kind("bridge")),
    FakeMsg(4, 1, IFLA_IFNAME="orphan0", IFLA_MASTER=99, IFLA_LINKINFO=FakeMsg(0, 0)),
]


class FakeIPRoute:
    """Counts itself; ``failures`` makes its next get_links calls raise."""

    made: list[FakeIPRoute] = []
    failures: list[BaseException] = []

    def __init__(self) -> None:
        self.closed_by: threading.Thread | None = None
        self.dumps = 0
        FakeIPRoute.made.append(self)

    def get_links(self) -> Iterator[FakeMsg]:
        if self.closed_by is not None:
            raise OSError(9, "Bad file descriptor")
        self.dumps += 1
        if FakeIPRoute.failures:
            raise FakeIPRoute.failures.pop(0)
        return iter(LINKS)

    def close(self) -> None:
        self.closed_by = threading.current_thread()


@pytest.fixture(autouse=True)
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str | None, tuple[int, int]]]:
    """Fake IPRoute; named namespaces whose identity the test may change."""
    identities: dict[str | None, tuple[int, int]] = {None: (4, 1)}
    inside = threading.local()  # .name: the namespace a thread has "entered"

    def identity(netns: str | None) -> tuple[int, int]:
        netns = getattr(inside, "name", None) if netns is None else netns
        if netns not in identities:
            raise FileNotFoundError(2, "No such file or directory")
        return identities[netns]

    @contextlib.contextmanager
    def entered(name: str) -> Iterator[None]:
        if name not in identities:
            raise netns_module.NetnsError(2, f"network namespace {name!r}: missing")
        inside.name = name
        try:
            yield
        finally:
            inside.name = None

    close_cached()
    FakeIPRoute.made, FakeIPRoute.failures = [], []
    monkeypatch.setattr(pyroute2, "IPRoute", FakeIPRoute)
    monkeypatch.setattr(netns_module, "namespace_identity", identity)
    monkeypatch.setattr(netns_module, "entered", entered)
    yield identities
    close_cached()


def test_one_socket_per_namespace_per_thread(fake: dict[str | None, Any]) -> None:
    fake["ns1"] = (4, 10)
    for _ in range(3):
        read_links()
        read_links("ns1")
    assert len(FakeIPRoute.made) == 2 and [ipr.dumps for ipr in FakeIPRoute.made] == [3, 3]
    other = threading.Thread(target=read_links, args=("ns1",))
    other.start()
    other.join(timeout=10)
    assert len(FakeIPRoute.made) == 3  # the other thread has its own


def test_changed_identity_reopens(fake: dict[str | None, Any]) -> None:
    fake["ns1"] = (4, 10)
    read_links("ns1")
    fake["ns1"] = (4, 11)  # deleted and recreated
    read_links("ns1")
    first, second = FakeIPRoute.made
    assert first.closed_by is threading.current_thread() and second.closed_by is None


def test_vanished_namespace_raises_netns_error_and_drops_the_socket(
    fake: dict[str | None, Any],
) -> None:
    fake["ns1"] = (4, 10)
    read_links("ns1")
    del fake["ns1"]
    with pytest.raises(netns_module.NetnsError):
        read_links("ns1")
    assert FakeIPRoute.made[0].closed_by is not None
    assert close_cached() == 0


def test_failure_on_the_cached_socket_is_retried_once_on_a_new_one() -> None:
    read_links()
    FakeIPRoute.failures = [OSError(105, "No buffer space available")]
    assert read_links() == LINKS
    first, second = FakeIPRoute.made
    assert first.closed_by is not None and second.closed_by is None
    assert close_cached() == 1


def test_failure_on_a_new_socket_is_raised_without_a_retry() -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    FakeIPRoute.failures = [NetlinkError(1, "refused")]
    with pytest.raises(NetlinkError):
        read_links()
    assert len(FakeIPRoute.made) == 1 and FakeIPRoute.made[0].closed_by is not None
    assert close_cached() == 0


def test_both_attempts_failing_raises_the_second_error() -> None:
    read_links()
    FakeIPRoute.failures = [OSError(9, "first"), OSError(19, "second")]
    with pytest.raises(OSError, match="second"):
        read_links()
    assert len(FakeIPRoute.made) == 2 and all(ipr.closed_by for ipr in FakeIPRoute.made)


def test_an_interrupt_drops_the_socket_and_is_not_retried() -> None:
    read_links()
    FakeIPRoute.failures = [KeyboardInterrupt()]
    with pytest.raises(KeyboardInterrupt):
        read_links()
    assert len(FakeIPRoute.made) == 1 and FakeIPRoute.made[0].closed_by is not None


def test_least_recently_used_socket_is_closed_over_the_bound(
    fake: dict[str | None, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netns_module, "MAX_CACHED_PER_THREAD", 2)
    fake.update({"a": (4, 20), "b": (4, 21), "c": (4, 22)})
    read_links("a")
    read_links("b")
    read_links("a")  # b is now the least recently used
    read_links("c")
    a, b, c = FakeIPRoute.made
    assert b.closed_by is not None and a.closed_by is None and c.closed_by is None
    assert close_cached() == 2


async def test_close_from_the_event_loop_closes_every_threads_sockets() -> None:
    await asyncio.gather(*(asyncio.to_thread(read_links) for _ in range(3)))
    assert close_cached() == len(FakeIPRoute.made) >= 1
    loop_thread = threading.current_thread()
    # Never on the loop's thread (it could not run the sockets' own loops).
    assert all(ipr.closed_by not in (None, loop_thread) for ipr in FakeIPRoute.made)
    made = len(FakeIPRoute.made)
    await asyncio.to_thread(read_links)  # the pool thread reopens
    assert len(FakeIPRoute.made) == made + 1


def test_a_socket_closed_meanwhile_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    read_links()
    (entry,) = netns_module._registry

    def closed_after_the_check() -> bool:
        entry.closed = True  # as if close_cached() won the race right after the check
        return True

    monkeypatch.setattr(entry, "current", closed_after_the_check)
    assert read_links() == LINKS
    assert len(FakeIPRoute.made) == 2 and FakeIPRoute.made[0].dumps == 1
