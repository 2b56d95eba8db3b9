"""ClusterService.RemoveNode when something changes under it: a heartbeat or a
quarantine landing between its checks and the delete, a caller that gives up
mid-way, a delete resent after a timeout. Real servicer over a MemoryStore, fake
gRPC context (insecure: no peer certificate)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest

from novaops.controller.clock import FakeClock
from novaops.controller.context import ControllerContext
from novaops.controller.events import EventLog
from novaops.controller.services import ClusterServicer
from novaops.controller.store.base import NodeRegistration, Removal
from novaops.controller.store.memory import MemoryStore
from novaops.v1 import common_pb2, controller_pb2

from .test_fleet_recovery import Aborted, FakeContext

pytestmark = pytest.mark.timeout(30)


class Channels:
    def __init__(self) -> None:
        self.forgotten: list[str] = []

    async def forget(self, address: str) -> None:
        self.forgotten.append(address)


class Racing(MemoryStore):
    """Runs ``between`` after the servicer's checks, just before the atomic delete."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.between: Any = None

    async def remove_down_node(self, name: str) -> Removal:
        if self.between is not None:
            await self.between(name)
        return await super().remove_down_node(name)


async def setup() -> tuple[Racing, ClusterServicer, Channels]:
    store = Racing(FakeClock())
    await store.register_node(NodeRegistration(name="n1", address="127.0.0.1:1"))
    channels = Channels()
    ctx = SimpleNamespace(insecure=True, store=store, events=EventLog(store), executors=channels)
    return store, ClusterServicer(cast(ControllerContext, ctx)), channels


def request() -> controller_pb2.RemoveNodeRequest:
    return controller_pb2.RemoveNodeRequest(node="n1", reason="decommissioned")


async def removed_events(store: MemoryStore) -> list[str]:
    return [e.node for e in await EventLog(store).read() if e.kind == "node.removed"]


async def test_a_heartbeat_between_the_checks_and_the_delete_keeps_the_node() -> None:
    store, servicer, channels = await setup()

    async def heartbeat(name: str) -> None:
        await store.heartbeat(name, 30.0, common_pb2.HEALTH_STATUS_HEALTHY)

    store.between = heartbeat
    with pytest.raises(Aborted) as refused:
        await servicer.RemoveNode(request(), cast(Any, FakeContext()))
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "n1 came up while being removed" in refused.value.details
    assert await store.get_node("n1") is not None
    assert await removed_events(store) == [] and channels.forgotten == []


async def test_a_quarantine_between_the_checks_and_the_delete_keeps_the_node() -> None:
    store, servicer, _ = await setup()
    term = await store.campaign("ctl-0", "127.0.0.1:2", 10)
    assert term is not None

    async def quarantine(name: str) -> None:
        await store.put_quarantine(name, b"record", b"history", term)

    store.between = quarantine
    with pytest.raises(Aborted, match="n1 was quarantined while being removed"):
        await servicer.RemoveNode(request(), cast(Any, FakeContext()))
    assert await store.get_node("n1") is not None  # no quarantine of a forgotten node


async def test_a_caller_that_gives_up_still_leaves_the_removal_recorded() -> None:
    store, servicer, channels = await setup()
    reached, release = asyncio.Event(), asyncio.Event()

    async def slow(name: str) -> None:
        reached.set()
        await release.wait()

    store.between = slow
    call = asyncio.ensure_future(servicer.RemoveNode(request(), cast(Any, FakeContext())))
    await reached.wait()
    call.cancel()  # the caller's deadline passed
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    for _ in range(100):  # the shielded rest finishes on its own
        if await removed_events(store):
            break
        await asyncio.sleep(0.01)
    assert await store.get_node("n1") is None
    assert await removed_events(store) == ["n1"]
    assert channels.forgotten == ["127.0.0.1:1"]


async def test_a_delete_that_finds_the_node_gone_counts_as_done() -> None:
    # The etcd client resends a delete after a timeout; the resend finds nothing.
    store, servicer, _ = await setup()

    async def already_deleted(name: str) -> None:
        await store.remove_node(name)

    store.between = already_deleted
    answer = await servicer.RemoveNode(request(), cast(Any, FakeContext()))
    assert answer.removed and answer.event_id
    assert await removed_events(store) == ["n1"]


async def test_the_channel_stays_while_another_node_uses_the_address() -> None:
    store, servicer, channels = await setup()
    await store.register_node(NodeRegistration(name="n2", address="127.0.0.1:1"))
    assert (await servicer.RemoveNode(request(), cast(Any, FakeContext()))).removed
    assert channels.forgotten == []
