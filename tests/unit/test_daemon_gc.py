"""settle_gc: what a daemon allocated by the end of start-up leaves the cyclic
collector's reach, and young collections run less often; cycles made later are
still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from novaops.client.daemon import DAEMON_GC_YOUNG_THRESHOLD, settle_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("restored_gc")
def test_settle_freezes_start_up_raises_the_young_threshold_and_cycles_still_go() -> None:
    settle_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == max(700, DAEMON_GC_YOUNG_THRESHOLD)
    frozen = gc.get_freeze_count()
    later = _cycle()  # garbage made after start-up: a cycle only the collector frees
    assert later() is not None
    gc.collect()
    assert later() is None
    assert gc.get_freeze_count() == frozen  # what start-up left stays out of reach
