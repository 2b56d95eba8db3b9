from novaops.executor.domain_events import state_transitions
from novaops.executor.libvirt_access import CRASHED, PAUSED, RUNNING


def test_transitions() -> None:
    before = {"a": (RUNNING, "booted"), "b": (RUNNING, ""), "gone": (RUNNING, "")}
    after = {"a": (CRASHED, "crashed"), "b": (RUNNING, ""), "new": (PAUSED, "user")}
    assert state_transitions(before, after) == [
        ("a", "crashed", "reason crashed"),
        ("gone", "undefined", "domain no longer listed"),
        ("new", "suspended", "first seen; reason user"),
    ]
    assert state_transitions(after, after) == []
