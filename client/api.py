"""The novaops Python client library.

    from novaops.client import NovaopsClient

    with NovaopsClient.from_config_file("dev-cluster/client.toml") as client:
        for node in client.list_nodes():
            print(node.name, node.state, node.quarantined)

Calls go to the first configured controller that answers; on a connection
failure the client fails over to the next one. Errors are subclasses of
``NovaopsError`` (novaops.client.errors) carrying the CLI exit code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from novaops.client.config import ClientConfig, ConfigError
from novaops.client.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ControllerUnreachable,
    InvalidRequest,
    NovaopsError,
    RequestRefused,
)
from novaops.client.models import (
    ClusterStatus,
    Leader,
    Node,
    NodeFailure,
    NodeHealthReport,
    Vm,
)
from novaops.client.tls import probe_tls, secure_channel
from novaops.v1 import common_pb2, controller_pb2, controller_pb2_grpc

Response = TypeVar("Response")
_END = object()

_TLS_MARKERS = ("handshake", "ssl", "certificate", "tls", "alert")
_REFUSED = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.NOT_FOUND,
}


def describe_tls_failure(target: str, details: str) -> str:
    """One line saying the TLS handshake was refused, and the likely reason."""
    lowered = details.lower()
    if "unknown_ca" in lowered or "unknown ca" in lowered:
        why = "the controller does not trust our client certificate (issued by another CA?)"
    elif "certificate verify failed" in lowered or "certificate_verify_failed" in lowered:
        why = "we do not trust the controller's certificate (tls.ca is a different CA?)"
    elif "certificate required" in lowered or "certificate_required" in lowered:
        why = "the controller requires a client certificate"
    elif "expired" in lowered:
        why = "a certificate has expired"
    else:
        why = details.strip().splitlines()[0] if details.strip() else "no detail given"
    return f"TLS handshake with controller {target} refused: {why}"


class NovaopsClient:
    """A blocking client for the controller API (thread-safe for concurrent calls)."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._channels: dict[str, grpc.Channel] = {}
        self._preferred = 0

    @classmethod
    def from_config_file(cls, path: str | Path) -> NovaopsClient:
        try:
            return cls(ClientConfig.load(Path(path)))
        except ConfigError as exc:
            raise ConfigurationError(str(exc)) from None

    def __enter__(self) -> NovaopsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def _channel(self, target: str) -> grpc.Channel:
        channel = self._channels.get(target)
        if channel is None:
            try:
                channel = secure_channel(target, self.config.tls)
            except OSError as exc:
                raise ConfigurationError(f"cannot read TLS files: {exc}") from None
            self._channels[target] = channel
        return channel

    def _call(self, invoke: Callable[[grpc.Channel, float], Response]) -> Response:
        """Run invoke on the first controller that answers, failing over on transport errors."""
        targets = self.config.controllers
        order = targets[self._preferred :] + targets[: self._preferred]
        failures: list[str] = []
        tls_failure: str | None = None
        for target in order:
            try:
                result = invoke(self._channel(target), self.config.timeout_seconds)
            except grpc.RpcError as exc:
                code = exc.code()
                details = exc.details() or ""
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    lowered = details.lower()
                    if any(marker in lowered for marker in _TLS_MARKERS):
                        tls_failure = describe_tls_failure(target, details)
                    failures.append(f"{target}: {code.name.lower()}")
                    continue
                raise self._translate(code, details) from None
            self._preferred = targets.index(target)
            return result
        if tls_failure is not None:
            raise AuthenticationFailed(tls_failure)
        for target in order:
            reason = probe_tls(target, self.config.tls)
            if reason is not None:
                raise AuthenticationFailed(
                    f"TLS handshake with controller {target} refused: {reason}"
                )
        raise ControllerUnreachable("no controller answered (" + "; ".join(failures) + ")")

    @staticmethod
    def _translate(code: grpc.StatusCode, details: str) -> NovaopsError:
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return AuthenticationFailed(f"controller refused our identity: {details}")
        if code in _REFUSED:
            return RequestRefused(details or code.name)
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
            return InvalidRequest(details or code.name)
        return NovaopsError(f"controller error {code.name}: {details}")

    def _stream(self, stub_type: Any, method: str, request: Any, timeout: float) -> Iterator[Any]:
        """Iterate a server stream; fail over to the next controller only before the
        first message (after that, a broken stream is an error, not a silent retry)."""

        def start(channel: grpc.Channel, _: float) -> tuple[Any, Any]:
            stream = getattr(stub_type(channel), method)(request, timeout=timeout)
            first = next(stream, _END)  # raises RpcError here if this controller is down
            return stream, first

        stream, first = self._call(start)
        if first is _END:
            return
        yield first
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise self._translate(exc.code(), exc.details() or "") from None

    def _unary(self, stub_type: Any, method: str, request: Any) -> Any:
        def invoke(channel: grpc.Channel, timeout: float) -> Any:
            return getattr(stub_type(channel), method)(request, timeout=timeout)

        return self._call(invoke)

    # -- cluster views -----------------------------------------------------------

    def list_nodes(self) -> list[Node]:
        """Every registered node with liveness and quarantine, sorted by name."""
        response = self._unary(
            controller_pb2_grpc.ClusterServiceStub, "ListNodes", controller_pb2.ListNodesRequest()
        )
        return [Node.from_proto(n) for n in response.nodes]

    def cluster_status(self) -> ClusterStatus:
        """Node counts, leader, store and automation state."""
        response = self._unary(
            controller_pb2_grpc.ClusterServiceStub,
            "GetClusterStatus",
            controller_pb2.GetClusterStatusRequest(),
        )
        return ClusterStatus.from_proto(response)

    def leader(self) -> Leader:
        """The current leader (``name`` empty when none)."""
        response = self._unary(
            controller_pb2_grpc.ClusterServiceStub, "GetLeader", controller_pb2.GetLeaderRequest()
        )
        return Leader.from_proto(response)

    # -- fan-outs ------------------------------------------------------------------

    @staticmethod
    def _selector(nodes: Iterable[str] | None) -> common_pb2.NodeSelector:
        names = list(nodes or [])
        return common_pb2.NodeSelector(all=not names, nodes=names)

    def _stream_timeout(self, overall_ms: int) -> float:
        # The controller ends the fan-out by its overall deadline; allow for transfer.
        return max(self.config.timeout_seconds, overall_ms / 1000 + 5 if overall_ms else 60)

    def health(
        self,
        nodes: Iterable[str] | None = None,
        *,
        include_checks: bool = False,
        recover: bool = False,
        verify_clean: bool = False,
        dry_run: bool = False,
        per_node_ms: int = 0,
        overall_ms: int = 0,
    ) -> Iterator[NodeHealthReport | NodeFailure]:
        """Health of the named nodes (all when None), streamed as nodes answer."""
        request = controller_pb2.FleetHealthRequest(
            selector=self._selector(nodes),
            deadlines=common_pb2.FanoutDeadlines(per_node_ms=per_node_ms, overall_ms=overall_ms),
            include_checks=include_checks,
            recover=recover,
            verify_clean=verify_clean,
            dry_run=dry_run,
        )
        stream = self._stream(
            controller_pb2_grpc.FleetServiceStub,
            "GetHealth",
            request,
            self._stream_timeout(overall_ms),
        )
        for item in stream:
            if item.HasField("error"):
                yield NodeFailure.from_proto(item.error)
            else:
                yield NodeHealthReport.from_proto(item.health)

    def list_vms(
        self, nodes: Iterable[str] | None = None, *, per_node_ms: int = 0, overall_ms: int = 0
    ) -> Iterator[list[Vm] | NodeFailure]:
        """Domains per node (all nodes when None), one list per node as it answers."""
        request = controller_pb2.FleetInventoryRequest(
            selector=self._selector(nodes),
            deadlines=common_pb2.FanoutDeadlines(per_node_ms=per_node_ms, overall_ms=overall_ms),
        )
        stream = self._stream(
            controller_pb2_grpc.FleetServiceStub,
            "ListVms",
            request,
            self._stream_timeout(overall_ms),
        )
        for item in stream:
            if item.HasField("error"):
                yield NodeFailure.from_proto(item.error)
            elif item.inventory.libvirt_error:
                yield NodeFailure(item.node, "failed", f"libvirt: {item.inventory.libvirt_error}")
            else:
                yield [Vm.from_proto(item.node, d) for d in item.inventory.domains]
