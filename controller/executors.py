"""Connections from the controller to executors, and node selection for fan-outs."""

from __future__ import annotations

import grpc

from novaops.client.config import TLSFiles
from novaops.client.tls import secure_aio_channel
from novaops.controller.fanout import FanoutTarget, node_error
from novaops.controller.store.base import NodeRecord
from novaops.v1 import common_pb2, executor_pb2_grpc


class ExecutorPool:
    """One cached mTLS channel, and its stub, per executor address (the
    controller's certificate). A stub builds a callable per RPC, so it is made
    once per channel, not once per call."""

    def __init__(self, tls: TLSFiles) -> None:
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, executor_pb2_grpc.ExecutorServiceStub] = {}

    def stub(self, address: str) -> executor_pb2_grpc.ExecutorServiceStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = secure_aio_channel(address, self._tls)
            self._channels[address] = channel
            stub = self._stubs[address] = executor_pb2_grpc.ExecutorServiceStub(channel)
        return stub

    async def forget(self, address: str) -> None:
        """Close the channel to address (a removed node's), if one is cached."""
        channel = self._channels.pop(address, None)
        self._stubs.pop(address, None)
        if channel is not None:
            await channel.close(None)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        self._stubs.clear()
        for channel in channels.values():
            await channel.close(None)


def select_targets(
    records: list[NodeRecord], selector: common_pb2.NodeSelector
) -> tuple[list[FanoutTarget], list[common_pb2.NodeError]]:
    """The registered nodes a selector names, and an error per unknown name.

    An empty selector means every node, as ``all`` does.
    """
    by_name = {r.name: r for r in records}
    if selector.all or not selector.nodes:
        chosen = records
        unknown: list[str] = []
    else:
        names = list(dict.fromkeys(selector.nodes))  # keep order, drop repeats
        chosen = [by_name[n] for n in names if n in by_name]
        unknown = [n for n in names if n not in by_name]
    targets = [FanoutTarget(r.name, r.address, r.up) for r in chosen]
    errors = [
        node_error(n, common_pb2.NODE_ERROR_KIND_UNKNOWN_NODE, f"no node named {n!r} is registered")
        for n in unknown
    ]
    return targets, errors
