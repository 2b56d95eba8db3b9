"""Every executor RPC is classified (read-only, recovery, quarantine, mutating), so a
new mutating RPC cannot be added without deciding whether quarantine refuses it."""

from __future__ import annotations

from novaops.executor.server import EXECUTOR_RPCS, RpcKind
from novaops.v1 import executor_pb2


def test_every_rpc_of_the_service_is_classified() -> None:
    service = executor_pb2.DESCRIPTOR.services_by_name["ExecutorService"]
    methods = {method.name for method in service.methods}
    assert methods - set(EXECUTOR_RPCS) == set(), "classify the new RPC in EXECUTOR_RPCS"
    assert set(EXECUTOR_RPCS) - methods == set(), "EXECUTOR_RPCS names an RPC that is gone"


def test_recovery_and_the_quarantine_decision_stay_allowed() -> None:
    assert EXECUTOR_RPCS["Recover"] is RpcKind.RECOVERY
    assert EXECUTOR_RPCS["ApplyQuarantine"] is RpcKind.QUARANTINE
    assert EXECUTOR_RPCS["VerifyClean"] is RpcKind.READ_ONLY
