"""Fake executors and servicer contexts for the controller's unit tests.

The fakes have the shapes the controller uses (an ExecutorPool's ``stub()``, unary
calls as coroutines, a unary-stream call as an async iterator with ``cancel()``,
a servicer context's ``auth_context()`` and ``abort()``) and record what they were
asked, so tests drive the controller without a server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from novaops.v1 import common_pb2, executor_pb2

FAIL = common_pb2.CHECK_STATUS_FAIL


def locks_check(node: str) -> common_pb2.CheckResult:
    return common_pb2.CheckResult(
        node=node,
        check_id="host.locks",
        status=FAIL,
        summary="stale lock",
        event_id="executor-uuid-1",
        remediation=[
            common_pb2.RemediationStep(
                description="remove it", command=f"novaops recover remove-stale-locks --node {node}"
            )
        ],
    )


@dataclass
class FakeNode:
    name: str
    checks: list[common_pb2.CheckResult] = field(default_factory=list)
    recover_outcome: str = "done"
    recover_error: BaseException | None = None
    recover_gate: asyncio.Event | None = None
    recover_calls: list[executor_pb2.RecoverRequest] = field(default_factory=list)
    streams: list[FakeStream] = field(default_factory=list)
    clean: bool = True
    hook_results: list[str] = field(default_factory=list)
    applied: list[executor_pb2.ApplyQuarantineRequest] = field(default_factory=list)
    on_health: Callable[[], None] | None = None


class FakeStream:
    """The shape of a unary-stream call: async iteration and cancel()."""

    def __init__(self, node: FakeNode, request: executor_pb2.RecoverRequest) -> None:
        self.node, self.request, self.cancelled = node, request, False

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    def __aiter__(self) -> AsyncIterator[executor_pb2.RecoveryStep]:
        return self._steps()

    async def _steps(self) -> AsyncIterator[executor_pb2.RecoveryStep]:
        self.node.recover_calls.append(self.request)
        if self.node.recover_gate is not None:
            await self.node.recover_gate.wait()
        if self.node.recover_error is not None:
            raise self.node.recover_error
        yield executor_pb2.RecoveryStep(
            node=self.node.name,
            action=self.request.action,
            description="remove /var/lib/libvirt/qemu/x.lock",
            outcome=self.node.recover_outcome,
            error="Operation not permitted" if self.node.recover_outcome == "failed" else "",
        )


class FakeStub:
    def __init__(self, node: FakeNode) -> None:
        self.node = node

    async def GetHealth(
        self, request: executor_pb2.GetHealthRequest, timeout: float
    ) -> executor_pb2.NodeHealth:
        if self.node.on_health is not None:
            self.node.on_health()
        return executor_pb2.NodeHealth(node=self.node.name, checks=self.node.checks)

    def Recover(self, request: executor_pb2.RecoverRequest, timeout: float) -> FakeStream:
        stream = FakeStream(self.node, request)
        self.node.streams.append(stream)
        return stream

    async def VerifyClean(
        self, request: executor_pb2.VerifyCleanRequest, timeout: float
    ) -> executor_pb2.VerifyCleanResult:
        return executor_pb2.VerifyCleanResult(node=self.node.name, clean=self.node.clean)

    async def ApplyQuarantine(
        self, request: executor_pb2.ApplyQuarantineRequest, timeout: float
    ) -> executor_pb2.ApplyQuarantineResult:
        self.node.applied.append(request)
        return executor_pb2.ApplyQuarantineResult(
            node=self.node.name,
            quarantined=request.quarantined,
            hook_results=self.node.hook_results,
        )


class FakeExecutors:
    def __init__(self, names: list[str]) -> None:
        self.nodes = {f"addr-{name}": FakeNode(name) for name in names}

    def node(self, name: str) -> FakeNode:
        return self.nodes[f"addr-{name}"]

    def stub(self, address: str) -> FakeStub:
        return FakeStub(self.nodes[address])


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


class Aborted(Exception):
    pass


class FakeContext:
    """A servicer context whose peer presented ``pem`` (None: no certificate)."""

    def __init__(self, pem: bytes | None) -> None:
        self._pem = pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._pem]} if self._pem else {}

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(f"{code.name}: {details}")
