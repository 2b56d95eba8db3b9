"""Backends for the store contract: memory and embedded under a FakeClock, etcd for real.

Each test gets a fresh backend; etcd tests share one single-member etcd for the
session (fast elections, so 1 s leases are allowed) and each uses its own key
prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from novaops.controller.clock import FakeClock
from novaops.controller.store.base import Store
from novaops.controller.store.embedded import EmbeddedStore
from novaops.controller.store.etcd import EtcdStore
from novaops.controller.store.memory import MemoryStore
from novaops.devcluster.etcd import EtcdCluster, EtcdError, find_etcd_binary

# Shortest lease etcd accepts with the fixture's 500 ms election timeout.
LEASE_TTL = 1


def etcd_available() -> bool:
    try:
        find_etcd_binary()
    except EtcdError:
        return False
    return True


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd not found; apt-get install etcd-server")
    data_dir = tmp_path_factory.mktemp("etcd")
    with EtcdCluster.start(data_dir, members=1, heartbeat_ms=50, election_ms=500) as cluster:
        yield cluster


class Backend:
    """One store under test, plus how to let its time pass and open a second handle."""

    def __init__(
        self,
        kind: str,
        store: Store,
        clock: FakeClock | None,
        peer_factory: Callable[[], Store] | None = None,
    ) -> None:
        self.kind = kind
        self.store = store
        self.clock = clock
        self._peer_factory = peer_factory
        self._peers: list[Store] = []

    @property
    def real_time(self) -> bool:
        return self.clock is None

    async def peer(self) -> Store:
        """Another replica's view of the same state (its own client where that exists)."""
        if self._peer_factory is None:
            return self.store  # memory and embedded hold their state in one object
        other = self._peer_factory()
        await other.open()
        self._peers.append(other)
        return other

    async def elapse(self, seconds: float) -> None:
        """Let ``seconds`` pass: a FakeClock jumps, real time is slept."""
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    async def until(
        self, condition: Callable[[], Awaitable[bool]], seconds: float, what: str
    ) -> None:
        """Let time pass until ``condition()`` holds; fail after ``seconds`` (+ etcd slack)."""
        if self.clock is not None:
            self.clock.advance(seconds)
            assert await condition(), what
            return
        # etcd revokes expired leases on a 500 ms sweep, so allow that much and more.
        deadline = time.monotonic() + seconds + 3.0
        while not await condition():
            assert time.monotonic() < deadline, f"{what}: not within {seconds + 3.0:g}s"
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for store in [*self._peers, self.store]:
            await store.close()


@pytest.fixture(
    params=["memory", "embedded", pytest.param("etcd", marks=pytest.mark.etcd)],
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind: str = request.param
    result: Backend
    if kind == "memory":
        clock = FakeClock()
        result = Backend(kind, MemoryStore(clock), clock)
    elif kind == "embedded":
        clock = FakeClock()
        result = Backend(kind, EmbeddedStore(tmp_path / "novaops.db", clock), clock)
    else:
        cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
        prefix = f"/test-{uuid.uuid4().hex[:12]}"

        def make() -> Store:
            return EtcdStore(cluster.endpoints, prefix=prefix, timeout=2.0)

        result = Backend(kind, make(), None, peer_factory=make)
    await result.store.open()
    try:
        yield result
    finally:
        await result.close()
