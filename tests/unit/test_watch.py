from novaops.controller.watch import LivenessTransition, liveness_transitions


def test_first_seen_and_changes() -> None:
    assert liveness_transitions({}, {"b": True, "a": False}) == [
        LivenessTransition("a", False, True),
        LivenessTransition("b", True, True),
    ]
    assert liveness_transitions({"a": True, "b": True}, {"a": False, "b": True}) == [
        LivenessTransition("a", False, False)
    ]
    assert liveness_transitions({"a": True}, {"a": True}) == []
