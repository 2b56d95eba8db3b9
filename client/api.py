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
    AutomationState,
    Check,
    ClusterStatus,
    Event,
    Leader,
    Node,
    NodeFailure,
    NodeHealthReport,
    NodeRemoval,
    Quarantine,
    QuarantineChange,
    QuarantineHistoryItem,
    RecoveryStepView,
    Vm,
    VmStatsView,
)
from novaops.client.tls import probe_tls, secure_channel
from novaops.v1 import common_pb2, controller_pb2, controller_pb2_grpc, executor_pb2

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
        not_leader: str | None = None
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
                if code == grpc.StatusCode.FAILED_PRECONDITION and "not the leader" in details:
                    # Mutations go to the leader: try the next replica.
                    failures.append(f"{target}: not the leader")
                    not_leader = details
                    continue
                raise self._translate(code, details) from None
            self._preferred = targets.index(target)
            return result
        if not_leader is not None:
            raise RequestRefused(not_leader)
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

    def _stream(
        self, stub_type: Any, method: str, request: Any, timeout: float | None
    ) -> Iterator[Any]:
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

    def remove_node(self, node: str, reason: str, *, dry_run: bool = False) -> NodeRemoval:
        """Forget a decommissioned node (admin; refused while it is up or quarantined)."""
        response = self._unary(
            controller_pb2_grpc.ClusterServiceStub,
            "RemoveNode",
            controller_pb2.RemoveNodeRequest(node=node, reason=reason, dry_run=dry_run),
        )
        return NodeRemoval(node, response.removed, response.message, response.event_id)

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
        include_checks: bool = True,
        recover: bool = False,
        verify_clean: bool = False,
        dry_run: bool = False,
        reason: str = "",
        per_node_ms: int = 0,
        overall_ms: int = 0,
    ) -> Iterator[NodeHealthReport | NodeFailure]:
        """Health of the named nodes (all when None), streamed as nodes answer.

        With ``include_checks`` (the default) each node runs its health checks now;
        without, the answer is liveness, host facts and the node's last background
        verdict with its failing checks (cheap). ``recover`` runs on the leader
        only, unless ``dry_run``; ``reason`` is audited with it.
        """
        request = controller_pb2.FleetHealthRequest(
            selector=self._selector(nodes),
            deadlines=common_pb2.FanoutDeadlines(per_node_ms=per_node_ms, overall_ms=overall_ms),
            include_checks=include_checks,
            recover=recover,
            verify_clean=verify_clean,
            dry_run=dry_run,
            reason=reason,
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
                yield NodeHealthReport.from_proto(item.health, item.recovery)

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

    # -- diagnostics -------------------------------------------------------------------

    def diagnose(
        self,
        *,
        vm: str = "",
        container: str = "",
        network: str = "",
        host: bool = False,
        all_vms: bool = False,
        nodes: Iterable[str] | None = None,
        all_nodes: bool = False,
        per_node_ms: int = 0,
        overall_ms: int = 0,
    ) -> Iterator[Check | NodeFailure]:
        """Diagnostic check results as nodes produce them (exactly one target).

        For a VM without nodes (or with ``all_nodes``), the controller finds the
        node(s) hosting it; nodes it could not ask are then yielded as failures
        when no node that answered has it. A container without nodes (or with
        ``all_nodes``) is searched for on every node: only the nodes that have
        it yield checks; RequestRefused when every node answered and none has
        it. ``all_vms`` checks every domain of each addressed node.
        """
        chosen = [bool(vm), bool(container), bool(network), host, all_vms]
        if sum(chosen) != 1:
            raise InvalidRequest("diagnose exactly one of vm, container, network, host or all_vms")
        inner = executor_pb2.DiagnoseRequest()
        if vm:
            inner.vm = vm
        elif container:
            inner.container = container
        elif network:
            inner.network = network
        elif all_vms:
            inner.all_vms = True
        else:
            inner.host = True
        names = list(nodes or [])
        request = controller_pb2.FleetDiagnoseRequest(
            selector=common_pb2.NodeSelector(all=all_nodes, nodes=names),
            deadlines=common_pb2.FanoutDeadlines(per_node_ms=per_node_ms, overall_ms=overall_ms),
            diagnose=inner,
            batched=True,
        )
        timeout = self._stream_timeout(overall_ms)
        for item in self._stream(
            controller_pb2_grpc.FleetServiceStub, "Diagnose", request, timeout
        ):
            which = item.WhichOneof("result")
            if which == "checks":
                for check in item.checks.results:
                    yield Check.from_proto(check)
            elif which == "error":
                yield NodeFailure.from_proto(item.error)
            elif which == "check":  # a controller that does not batch yet
                yield Check.from_proto(item.check)

    def vm_stats(self, vm: str, node: str = "") -> VmStatsView:
        """libvirt counters of one VM (the controller finds its node when not given)."""
        response = self._unary(
            controller_pb2_grpc.FleetServiceStub,
            "GetVmStats",
            controller_pb2.FleetVmStatsRequest(vm=vm, node=node),
        )
        return VmStatsView.from_proto(response)

    # -- recovery and quarantine -----------------------------------------------------

    def recover(
        self,
        action: str,
        nodes: Iterable[str] | None = None,
        *,
        all_nodes: bool = False,
        target: str = "",
        dry_run: bool = False,
        reason: str = "",
        grace_seconds: float = 0.0,
        per_node_ms: int = 0,
        overall_ms: int = 0,
    ) -> Iterator[RecoveryStepView | NodeFailure]:
        """Run (or plan) one catalogue action on nodes; steps stream as they happen.

        Runs on the leader only, unless ``dry_run`` (the library retries on the next
        controller; ``RequestRefused`` naming the leader when none of the configured
        ones leads). ``reason`` is audited with who asked.
        """
        inner = executor_pb2.RecoverRequest(
            action=action, target=target, dry_run=dry_run, reason=reason
        )
        if grace_seconds:
            inner.grace.FromMilliseconds(int(grace_seconds * 1000))
        request = controller_pb2.FleetRecoverRequest(
            selector=common_pb2.NodeSelector(all=all_nodes, nodes=list(nodes or [])),
            deadlines=common_pb2.FanoutDeadlines(per_node_ms=per_node_ms, overall_ms=overall_ms),
            recover=inner,
        )
        timeout = self._stream_timeout(overall_ms)
        for item in self._stream(controller_pb2_grpc.FleetServiceStub, "Recover", request, timeout):
            if item.HasField("error"):
                yield NodeFailure.from_proto(item.error)
            else:
                yield RecoveryStepView.from_proto(item.step)

    def quarantine(self, node: str, reason: str, *, dry_run: bool = False) -> QuarantineChange:
        """Quarantine a node (idempotent; audited with our certificate's name)."""
        response = self._unary(
            controller_pb2_grpc.QuarantineServiceStub,
            "Quarantine",
            controller_pb2.QuarantineRequest(node=node, reason=reason, dry_run=dry_run),
        )
        return QuarantineChange.from_proto(node, response)

    def unquarantine(
        self, node: str, reason: str, *, force: bool = False, dry_run: bool = False
    ) -> QuarantineChange:
        """Lift a quarantine; refused while verify-clean fails unless force."""
        response = self._unary(
            controller_pb2_grpc.QuarantineServiceStub,
            "Unquarantine",
            controller_pb2.UnquarantineRequest(
                node=node, reason=reason, force=force, dry_run=dry_run
            ),
        )
        return QuarantineChange.from_proto(node, response)

    def list_quarantines(self) -> list[Quarantine]:
        response = self._unary(
            controller_pb2_grpc.QuarantineServiceStub,
            "ListQuarantines",
            controller_pb2.ListQuarantinesRequest(),
        )
        return sorted((Quarantine.from_proto(r) for r in response.records), key=lambda q: q.node)

    def quarantine_history(self, node: str = "", limit: int = 0) -> list[QuarantineHistoryItem]:
        response = self._unary(
            controller_pb2_grpc.QuarantineServiceStub,
            "GetQuarantineHistory",
            controller_pb2.GetQuarantineHistoryRequest(node=node, limit=limit),
        )
        return [QuarantineHistoryItem.from_proto(e) for e in response.entries]

    # -- automation, events, leadership ----------------------------------------------

    def automation_status(self) -> AutomationState:
        response = self._unary(
            controller_pb2_grpc.AutomationServiceStub,
            "GetAutomationStatus",
            controller_pb2.GetAutomationStatusRequest(),
        )
        return AutomationState.from_proto(response)

    def automation_command(self, command: str, reason: str = "") -> AutomationState:
        """pause | resume | reset-breaker (admin; the leader carries it out)."""
        methods = {
            "pause": ("PauseAutomation", controller_pb2.PauseAutomationRequest(reason=reason)),
            "resume": ("ResumeAutomation", controller_pb2.ResumeAutomationRequest(reason=reason)),
            "reset-breaker": ("ResetBreaker", controller_pb2.ResetBreakerRequest(reason=reason)),
        }
        if command not in methods:
            raise InvalidRequest(f"automation {command!r}: expected pause, resume or reset-breaker")
        method, request = methods[command]
        response = self._unary(controller_pb2_grpc.AutomationServiceStub, method, request)
        return AutomationState.from_proto(response)

    def events(
        self, *, follow: bool = False, after_id: str = "", kinds: Iterable[str] = ()
    ) -> Iterator[Event]:
        """Cluster events after after_id (the retained backlog when empty); with follow,
        keeps yielding new ones until the caller stops iterating."""
        request = controller_pb2.WatchEventsRequest(
            follow=follow, after_id=after_id, kinds=list(kinds)
        )
        # A followed stream has no deadline: it lasts as long as the caller reads.
        timeout = None if follow else self.config.timeout_seconds
        stream = self._stream(
            controller_pb2_grpc.ClusterServiceStub, "WatchEvents", request, timeout
        )
        for item in stream:
            yield Event.from_proto(item)

    def transfer_leadership(self, *, reason: str = "", dry_run: bool = False) -> str:
        """Ask the leader to resign so another replica takes over; returns what happened."""
        response = self._unary(
            controller_pb2_grpc.ClusterServiceStub,
            "TransferLeadership",
            controller_pb2.TransferLeadershipRequest(reason=reason, dry_run=dry_run),
        )
        return str(response.message)

    # -- support bundles -------------------------------------------------------------

    def collect_bundle(
        self,
        nodes: Iterable[str] | None = None,
        *,
        include: Iterable[str] = (),
        scrub: bool = False,
        since_seconds: int = 0,
        return_map: bool = False,
        request_id: str = "",
        per_node_ms: int = 0,
        overall_ms: int = 0,
    ) -> Iterator[Any]:
        """The raw FleetBundleChunk stream; feed it to novaops.client.bundle.BundleWriter."""
        inner = executor_pb2.CollectBundleRequest(
            include=list(include), scrub=scrub, return_map=return_map, request_id=request_id
        )
        if since_seconds:
            inner.since.FromSeconds(since_seconds)
        names = list(nodes or [])
        request = controller_pb2.FleetBundleRequest(
            selector=common_pb2.NodeSelector(all=not names, nodes=names),
            deadlines=common_pb2.FanoutDeadlines(per_node_ms=per_node_ms, overall_ms=overall_ms),
            bundle=inner,
        )
        timeout = max(self._stream_timeout(overall_ms), 20 * 60.0)
        yield from self._stream(
            controller_pb2_grpc.FleetServiceStub, "CollectBundle", request, timeout
        )
