from novaops.controller.store.base import NodeRecord
from novaops.controller.watch import LivenessTransition, health_counts, liveness_transitions
from novaops.v1 import common_pb2


def test_first_seen_and_changes() -> None:
    assert liveness_transitions({}, {"b": True, "a": False}) == [
        LivenessTransition("a", False, True),
        LivenessTransition("b", True, True),
    ]
    assert liveness_transitions({"a": True, "b": True}, {"a": False, "b": True}) == [
        LivenessTransition("a", False, False)
    ]
    assert liveness_transitions({"a": True}, {"a": True}) == []


def record(name: str, up: bool, health: int) -> NodeRecord:
    return NodeRecord(name, "a:1", "", {}, b"", 0.0, None, health, up)


def test_health_counts() -> None:
    healthy = common_pb2.HEALTH_STATUS_HEALTHY
    records = [
        record("a", True, healthy),
        record("b", True, common_pb2.HEALTH_STATUS_UNHEALTHY),
        record("c", False, healthy),
        record("d", True, healthy),
    ]
    assert health_counts(records, {"d"}) == {"healthy": 1, "unhealthy": 2, "quarantined": 1}
