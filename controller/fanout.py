"""Fan-out of one call to many executors, streaming results as they arrive.

Guarantees callers rely on:
- every addressed node yields its results or exactly one ``NodeError``;
- no node delays the stream beyond its per-node deadline, and the whole
  fan-out ends by the overall deadline (unfinished nodes then get an error);
- memory is bounded: results pass through a bounded queue, so a slow reader
  applies back-pressure to the node calls instead of buffering.

The call itself is injected (``NodeCall``), so the bookkeeping is tested with
plain coroutines and used in production with gRPC stubs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc

from novaops.v1 import common_pb2

T = TypeVar("T")

QUEUE_SIZE = 64


@dataclass(frozen=True)
class FanoutTarget:
    """A node to call: its name, executor address and registry liveness."""

    name: str
    address: str
    up: bool = True


@dataclass(frozen=True)
class NodeOutcome(Generic[T]):
    """One streamed item: a result of a node, or that node's error."""

    node: str
    result: T | None = None
    error: common_pb2.NodeError | None = None


@dataclass(frozen=True)
class _Done:
    node: str


NodeCall = Callable[[FanoutTarget, float], AsyncIterator[T]]
"""(target, timeout seconds) -> the node's results as an async iterator."""


def node_error(
    node: str, kind: common_pb2.NodeErrorKind, message: str, code: str = ""
) -> common_pb2.NodeError:
    return common_pb2.NodeError(node=node, kind=kind, message=message, grpc_code=code)


def error_from_rpc(node: str, exc: grpc.aio.AioRpcError | grpc.RpcError) -> common_pb2.NodeError:
    """Classify a gRPC failure of one node."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    first_line = details.strip().splitlines()[0] if details.strip() else code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        kind = common_pb2.NODE_ERROR_KIND_UNREACHABLE
        message = f"node {node} unreachable: {first_line}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        kind = common_pb2.NODE_ERROR_KIND_DEADLINE_EXCEEDED
        message = f"node {node} did not answer before its deadline"
    else:
        kind = common_pb2.NODE_ERROR_KIND_FAILED
        message = f"node {node} failed: {code.name}: {first_line}"
    return node_error(node, kind, message, code.name)


async def fan_out(
    targets: Sequence[FanoutTarget],
    call: NodeCall[T],
    *,
    per_node: float,
    overall: float,
    skip_down: bool = True,
    now: Callable[[], float] = time.monotonic,
    queue_size: int = QUEUE_SIZE,
) -> AsyncIterator[NodeOutcome[T]]:
    """Call every target concurrently and yield outcomes in arrival order.

    At most ``queue_size`` results wait for the reader (plus one per node being
    put); big items such as bundle chunks want a small queue."""
    async with contextlib.aclosing(
        fan_out_batches(
            targets,
            call,
            per_node=per_node,
            overall=overall,
            skip_down=skip_down,
            now=now,
            queue_size=queue_size,
            max_batch=1,  # one at a time: nothing waits outside the bounded queue
        )
    ) as batches:
        async for batch in batches:
            for outcome in batch:
                yield outcome


async def fan_out_batches(
    targets: Sequence[FanoutTarget],
    call: NodeCall[T],
    *,
    per_node: float,
    overall: float,
    skip_down: bool = True,
    now: Callable[[], float] = time.monotonic,
    queue_size: int = QUEUE_SIZE,
    max_batch: int | None = None,
) -> AsyncGenerator[list[NodeOutcome[T]], None]:
    """:func:`fan_out`, yielding every outcome waiting at each turn together (never
    an empty list; at most ``max_batch``, default ``queue_size``): a reader that
    sends each list as one message sends few messages on a large fleet while
    still streaming what arrives."""
    limit = queue_size if max_batch is None else max(1, max_batch)
    queue: asyncio.Queue[NodeOutcome[T] | _Done] = asyncio.Queue(queue_size)
    overall_deadline = now() + overall
    finished: set[str] = set()  # nodes whose completion marker was consumed

    async def run(target: FanoutTarget) -> None:
        timeout = max(0.0, min(per_node, overall_deadline - now()))
        try:
            async with asyncio.timeout(timeout):
                async for item in call(target, timeout):
                    await queue.put(NodeOutcome(target.name, result=item))
        except TimeoutError:
            await queue.put(
                NodeOutcome(
                    target.name,
                    error=node_error(
                        target.name,
                        common_pb2.NODE_ERROR_KIND_DEADLINE_EXCEEDED,
                        f"node {target.name} did not finish within {timeout:.1f}s",
                    ),
                )
            )
        except grpc.RpcError as exc:
            await queue.put(NodeOutcome(target.name, error=error_from_rpc(target.name, exc)))
        except Exception as exc:
            await queue.put(
                NodeOutcome(
                    target.name,
                    error=node_error(
                        target.name,
                        common_pb2.NODE_ERROR_KIND_FAILED,
                        f"node {target.name}: {type(exc).__name__}: {exc}",
                    ),
                )
            )
        finally:
            await queue.put(_Done(target.name))

    def take_waiting(batch: list[NodeOutcome[T]], most: int | None) -> list[NodeOutcome[T]]:
        while not queue.empty() and (most is None or len(batch) < most):
            outcome = queue.get_nowait()
            if isinstance(outcome, _Done):
                finished.add(outcome.node)
            else:
                batch.append(outcome)
        return batch

    live: list[FanoutTarget] = []
    down: list[NodeOutcome[T]] = []
    for target in targets:
        if skip_down and not target.up:
            down.append(
                NodeOutcome(
                    target.name,
                    error=node_error(
                        target.name,
                        common_pb2.NODE_ERROR_KIND_DOWN,
                        f"node {target.name} is down (missed heartbeats); not contacted",
                    ),
                )
            )
        else:
            live.append(target)
    if down:
        yield down
    tasks = [asyncio.create_task(run(t), name=f"fanout-{t.name}") for t in live]
    try:
        while len(finished) < len(live):
            remaining = overall_deadline - now()
            try:
                async with asyncio.timeout(max(0.0, remaining)):
                    first = await queue.get()
            except TimeoutError:
                break
            batch: list[NodeOutcome[T]] = []
            if isinstance(first, _Done):
                finished.add(first.node)
            else:
                batch.append(first)
            take_waiting(batch, limit)
            if batch:
                yield batch
        # Past the overall deadline: hand over what already arrived, then name
        # every node that did not finish.
        late = take_waiting([], None)  # all that arrived
        for target in live:
            if target.name not in finished:
                late.append(
                    NodeOutcome(
                        target.name,
                        error=node_error(
                            target.name,
                            common_pb2.NODE_ERROR_KIND_DEADLINE_EXCEEDED,
                            f"node {target.name} did not finish within the overall deadline "
                            f"({overall:.1f}s)",
                        ),
                    )
                )
        if late:
            yield late
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def first_result(awaitable: Awaitable[T]) -> AsyncIterator[T]:
    """Adapt a unary call into the iterator shape fan_out expects."""
    yield await awaitable
