"""How the controller turns node batches into DiagnoseResult messages."""

from __future__ import annotations

from novaops.controller import fleet
from novaops.controller.fanout import NodeOutcome, node_error
from novaops.v1 import common_pb2


def batch(node: str, *ids: str, evidence: str = "") -> NodeOutcome[common_pb2.CheckResultBatch]:
    results = [
        common_pb2.CheckResult(node=node, check_id=i, evidence={"x": evidence} if evidence else {})
        for i in ids
    ]
    return NodeOutcome(node, result=common_pb2.CheckResultBatch(results=results))


def failed(node: str) -> NodeOutcome[common_pb2.CheckResultBatch]:
    return NodeOutcome(
        node, error=node_error(node, common_pb2.NODE_ERROR_KIND_UNREACHABLE, f"{node} gone")
    )


OUTCOMES = [
    batch("a", "host.kvm", "host.disk"),
    batch("b", "host.kvm"),
    failed("c"),
    NodeOutcome("d", result=common_pb2.CheckResultBatch()),  # nothing to send
    batch("e", "host.locks"),
]


def test_unbatched_is_one_message_per_result_and_error_in_order() -> None:
    messages = list(fleet.diagnose_messages(OUTCOMES, batched=False))
    assert [m.WhichOneof("result") for m in messages] == ["check"] * 3 + ["error", "check"]
    assert [(m.check.node, m.check.check_id) for m in messages if m.HasField("check")] == [
        ("a", "host.kvm"),
        ("a", "host.disk"),
        ("b", "host.kvm"),
        ("e", "host.locks"),
    ]


def test_batched_groups_results_between_errors() -> None:
    messages = list(fleet.diagnose_messages(OUTCOMES, batched=True))
    assert [m.WhichOneof("result") for m in messages] == ["checks", "error", "checks"]
    assert [(r.node, r.check_id) for r in messages[0].checks.results] == [
        ("a", "host.kvm"),
        ("a", "host.disk"),
        ("b", "host.kvm"),
    ]
    assert messages[1].error.node == "c"
    assert [r.node for r in messages[2].checks.results] == ["e"]
    assert list(fleet.diagnose_messages([OUTCOMES[3]], batched=True)) == []


def test_batched_messages_stay_under_the_size_bound() -> None:
    big = "x" * (fleet.DIAGNOSE_BATCH_BYTES // 3)
    outcomes = [batch(f"n{i}", "host.disk", evidence=big) for i in range(7)]
    messages = list(fleet.diagnose_messages(outcomes, batched=True))
    assert all(m.ByteSize() <= fleet.DIAGNOSE_BATCH_BYTES + 64 for m in messages)
    assert len(messages) == 4  # 2 + 2 + 2 + 1 results of a third of the bound each
    assert [r.node for m in messages for r in m.checks.results] == [f"n{i}" for i in range(7)]
