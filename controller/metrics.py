"""Prometheus metrics of the controller: per-RPC counters and latency histograms."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

from novaops.client.tls import AioContext

RPC_TOTAL = Counter(
    "novaops_controller_rpc_total",
    "Controller RPCs handled, by method and gRPC status code.",
    ["method", "code"],
)
RPC_SECONDS = Histogram(
    "novaops_controller_rpc_seconds",
    "Controller RPC latency (for streams: until the stream ends), by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def _code(context: AioContext, failed: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if failed is not None:
        return "UNKNOWN"
    return "OK"


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class MetricsInterceptor(_Interceptor):
    """Counts and times every unary-unary and unary-stream RPC."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            inner_unary: Any = handler.unary_unary

            async def unary(request: Any, context: AioContext) -> Any:
                start = time.perf_counter()
                failed: BaseException | None = None
                try:
                    return await inner_unary(request, context)
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    RPC_SECONDS.labels(method).observe(time.perf_counter() - start)
                    RPC_TOTAL.labels(method, _code(context, failed)).inc()

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(request: Any, context: AioContext) -> AsyncIterator[Any]:
                start = time.perf_counter()
                failed: BaseException | None = None
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    RPC_SECONDS.labels(method).observe(time.perf_counter() - start)
                    RPC_TOTAL.labels(method, _code(context, failed)).inc()

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


NODE_UP = Gauge(
    "novaops_node_up",
    "1 while the node's liveness lease is alive, 0 when it is down (as this replica sees it).",
    ["node"],
)
IS_LEADER = Gauge(
    "novaops_controller_is_leader", "1 while this controller replica holds the leader lease."
)

BUNDLES_GENERATED = Counter(
    "novaops_support_bundle_generated_total",
    "Support bundles collected through this controller, by outcome "
    "(success|partial|failure|cancelled: the caller went away).",
    ["outcome"],
)

WORKER_HEALTH = Gauge(
    "novaops_worker_health",
    "Registered nodes by health: healthy, unhealthy (failing checks or down), quarantined.",
    ["status"],
)
QUARANTINED_NODES = Gauge("novaops_quarantined_nodes", "Nodes with a quarantine record.")
HEARTBEAT_INTERVAL = Gauge(
    "novaops_heartbeat_interval_seconds",
    "The heartbeat interval this replica hands to executors (grows with the fleet: "
    "max_heartbeats_per_second).",
)
BREAKER_TRIPPED = Gauge(
    "novaops_automation_breaker_tripped",
    "1 while the automation's circuit breaker is tripped (automatic quarantines stopped).",
)
AUTOMATION_PAUSED = Gauge("novaops_automation_paused", "1 while an operator paused automation.")
