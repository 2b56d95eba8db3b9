"""Fan-out bookkeeping with plain coroutines: deadlines, errors, arrival order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from novaops.controller.fanout import FanoutTarget, NodeOutcome, fan_out, fan_out_batches
from novaops.v1 import common_pb2


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


async def behaviour(target: FanoutTarget, timeout: float) -> AsyncIterator[str]:
    if target.name == "slow":
        await asyncio.sleep(10)
    if target.name == "refused":
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")
    if target.name == "broken":
        raise RuntimeError("bug")
    if target.name == "two":
        yield "two-a"
        await asyncio.sleep(0.05)
        yield "two-b"
        return
    yield f"{target.name}-ok"


async def collect(
    targets: list[FanoutTarget], *, per_node: float, overall: float
) -> list[NodeOutcome[str]]:
    return [o async for o in fan_out(targets, behaviour, per_node=per_node, overall=overall)]


async def test_every_node_answers_or_errors_within_deadline() -> None:
    targets = [
        FanoutTarget("a", "x"),
        FanoutTarget("slow", "x"),
        FanoutTarget("refused", "x"),
        FanoutTarget("broken", "x"),
        FanoutTarget("down", "x", up=False),
        FanoutTarget("two", "x"),
    ]
    start = time.monotonic()
    outcomes = await collect(targets, per_node=0.3, overall=5.0)
    assert time.monotonic() - start < 1.5
    results = {o.node: o.result for o in outcomes if o.result}
    errors = {o.node: o.error for o in outcomes if o.error}
    assert results == {"a": "a-ok", "two": "two-b"}
    assert [o.result for o in outcomes if o.node == "two"] == ["two-a", "two-b"]
    assert errors["slow"].kind == common_pb2.NODE_ERROR_KIND_DEADLINE_EXCEEDED
    assert errors["refused"].kind == common_pb2.NODE_ERROR_KIND_UNREACHABLE
    assert errors["broken"].kind == common_pb2.NODE_ERROR_KIND_FAILED
    assert errors["down"].kind == common_pb2.NODE_ERROR_KIND_DOWN
    assert len(errors) == 4


async def test_overall_deadline_bounds_the_stream() -> None:
    targets = [FanoutTarget("slow", "x"), FanoutTarget("a", "x")]
    start = time.monotonic()
    outcomes = await collect(targets, per_node=10.0, overall=0.3)
    assert time.monotonic() - start < 1.0
    assert {o.node for o in outcomes if o.error} == {"slow"}
    assert [o.result for o in outcomes if o.result] == ["a-ok"]


@pytest.mark.parametrize("count", [200])
async def test_many_nodes(count: int) -> None:
    targets = [FanoutTarget(f"n{i}", "x") for i in range(count)]
    outcomes = await collect(targets, per_node=2.0, overall=5.0)
    assert sorted(o.node for o in outcomes) == sorted(t.name for t in targets)


async def test_batches_hold_what_waited_together_in_arrival_order() -> None:
    release = asyncio.Event()

    async def gated(target: FanoutTarget, timeout: float) -> AsyncIterator[str]:
        if target.name != "first":
            await release.wait()
        yield f"{target.name}-1"
        yield f"{target.name}-2"

    targets = [FanoutTarget("first", "x"), FanoutTarget("down", "x", up=False)]
    targets += [FanoutTarget(f"n{i}", "x") for i in range(5)]
    batches: list[list[NodeOutcome[str]]] = []
    async for batch in fan_out_batches(targets, gated, per_node=2.0, overall=5.0):
        assert batch, "an empty batch is never yielded"
        batches.append(batch)
        release.set()
    # The down node comes first, alone; the rest arrive in few batches.
    assert [o.node for o in batches[0]] == ["down"] and batches[0][0].error is not None
    flat = [o for b in batches[1:] for o in b]
    assert sorted(o.result for o in flat if o.result) == sorted(
        f"{t.name}-{i}" for t in targets if t.up for i in (1, 2)
    )
    for name in ["first"] + [f"n{i}" for i in range(5)]:
        assert [o.result for o in flat if o.node == name] == [f"{name}-1", f"{name}-2"]
    assert len(batches) < 1 + len(flat)  # some outcomes travelled together


async def test_batches_never_exceed_the_queue() -> None:
    async def chatty(target: FanoutTarget, timeout: float) -> AsyncIterator[int]:
        for i in range(50):
            yield i

    targets = [FanoutTarget(f"n{i}", "x") for i in range(20)]
    seen = 0
    async for batch in fan_out_batches(targets, chatty, per_node=2.0, overall=5.0, queue_size=8):
        assert 1 <= len(batch) <= 8
        seen += len(batch)
    assert seen == 20 * 50


async def test_max_batch_one_yields_outcomes_singly() -> None:
    async def chatty(target: FanoutTarget, timeout: float) -> AsyncIterator[int]:
        for i in range(5):
            yield i

    targets = [FanoutTarget(f"n{i}", "x") for i in range(10)]
    sizes = [
        len(batch)
        async for batch in fan_out_batches(
            targets, chatty, per_node=2.0, overall=5.0, queue_size=8, max_batch=1
        )
    ]
    assert sizes == [1] * 50
