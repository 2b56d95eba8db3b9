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

from collections.abc import Callable
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
from novaops.client.models import ClusterStatus, Leader, Node
from novaops.client.tls import secure_channel
from novaops.v1 import controller_pb2, controller_pb2_grpc

Response = TypeVar("Response")

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
