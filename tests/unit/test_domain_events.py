"""The domain events recorder: pure transitions and tracker, and the real watcher on
the in-memory libvirt twin, its ring fed to the vm checks."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from novaops.executor.checks import vm
from novaops.executor.checks.events import DomainEvent, EventRing
from novaops.executor.checks.model import Status
from novaops.executor.domain_events import (
    DomainStateTracker,
    state_transitions,
    watch_domain_states,
)
from novaops.executor.libvirt_access import (
    BLOCKED,
    CRASHED,
    PAUSED,
    RUNNING,
    SHUTOFF,
    DomainCounters,
    DomainRecord,
    HypervisorInfo,
    LibvirtGateway,
    LibvirtUnavailable,
    LifecycleListener,
    lifecycle_event_name,
)
from novaops.executor.libvirt_fake import FakeDomain, FakeLibvirt

DATA = Path(__file__).resolve().parent.parent / "data" / "checks"


def test_transitions_use_libvirt_names_and_bare_reasons() -> None:
    before = {
        "a": (RUNNING, "booted"),
        "b": (RUNNING, ""),
        "c": (PAUSED, "user"),
        "d": (RUNNING, "booted"),
        "gone": (RUNNING, ""),
    }
    after = {
        "a": (CRASHED, "panicked"),
        "b": (BLOCKED, "unknown"),  # still running: no lifecycle change
        "c": (RUNNING, "unpaused"),
        "d": (PAUSED, "ioerror"),
        "new": (PAUSED, "user"),
        "new-off": (SHUTOFF, "unknown"),
    }
    assert state_transitions(before, after) == [
        ("a", "crashed", "panicked"),
        ("c", "resumed", "unpaused"),
        ("d", "suspended", "ioerror"),
        ("gone", "undefined", "removed"),
        ("new", "defined", "added"),
        ("new", "suspended", "user"),
        ("new-off", "defined", "added"),
    ]
    assert state_transitions(after, after) == []


def test_lifecycle_event_names() -> None:
    assert lifecycle_event_name(3, 2) == ("suspended", "ioerror")
    assert lifecycle_event_name(5, 2) == ("stopped", "crashed")
    assert lifecycle_event_name(4, 0) == ("resumed", "unpaused")
    assert lifecycle_event_name(8, 0) == ("crashed", "panicked")
    assert lifecycle_event_name(42, 7) == ("event-42", "detail-7")
    assert lifecycle_event_name(2, 99) == ("started", "detail-99")


def test_lifecycle_names_match_the_libvirt_module() -> None:
    libvirt = pytest.importorskip("libvirt")
    prefix = "VIR_DOMAIN_EVENT_"
    types = {
        name.removeprefix(prefix).lower(): value
        for name, value in vars(libvirt).items()
        if name.startswith(prefix) and name.count("_") == 3 and not name.startswith(prefix + "ID")
    }
    assert len(types) >= 9
    for event_name, event in types.items():
        assert lifecycle_event_name(event, 0)[0] == event_name
        for name, value in vars(libvirt).items():
            detail_prefix = f"{prefix}{event_name.upper()}_"
            if name.startswith(detail_prefix):
                detail = name.removeprefix(detail_prefix).lower()
                assert lifecycle_event_name(event, value) == (event_name, detail), name


def test_tracker_first_poll_is_silent_then_records_changes() -> None:
    tracker = DomainStateTracker()
    assert tracker.polled({"a": (RUNNING, "booted")}, tracker.mark()) == []
    assert tracker.polled({"a": (PAUSED, "ioerror")}, tracker.mark()) == [
        ("a", "suspended", "ioerror")
    ]
    assert tracker.polled({"a": (PAUSED, "ioerror")}, tracker.mark()) == []


def test_tracker_records_a_transition_seen_by_push_and_poll_once() -> None:
    tracker = DomainStateTracker()
    tracker.polled({"a": (RUNNING, "booted"), "b": (RUNNING, "booted")}, tracker.mark())
    # Pushed first: the poll after it finds the state it already knows.
    assert tracker.pushed("a", "suspended", "paused") == [("a", "suspended", "paused")]
    assert tracker.polled({"a": (PAUSED, "user"), "b": (RUNNING, "")}, tracker.mark()) == []
    # Polled first: the late push of the same transition is not recorded again...
    assert tracker.polled({"a": (PAUSED, "user"), "b": (PAUSED, "ioerror")}, tracker.mark()) == [
        ("b", "suspended", "ioerror")
    ]
    assert tracker.pushed("b", "suspended", "ioerror") == []
    # ... but the next one is.
    assert tracker.pushed("b", "resumed", "unpaused") == [("b", "resumed", "unpaused")]
    assert tracker.pushed("b", "suspended", "ioerror") == [("b", "suspended", "ioerror")]


def test_tracker_leaves_a_domain_pushed_during_the_read_to_the_push() -> None:
    tracker = DomainStateTracker()
    tracker.polled({"a": (RUNNING, "booted")}, tracker.mark())
    mark = tracker.mark()
    # The snapshot was read before this push was applied: it still shows running.
    assert tracker.pushed("a", "suspended", "paused") == [("a", "suspended", "paused")]
    assert tracker.polled({"a": (RUNNING, "booted")}, mark) == []
    assert tracker.known["a"] == (PAUSED, "paused")
    # A later snapshot is compared again.
    assert tracker.polled({"a": (RUNNING, "unpaused")}, tracker.mark()) == [
        ("a", "resumed", "unpaused")
    ]


def test_tracker_defined_and_undefined() -> None:
    tracker = DomainStateTracker()
    tracker.polled({}, tracker.mark())
    assert tracker.pushed("n", "defined", "added") == [("n", "defined", "added")]
    assert tracker.polled({"n": (SHUTOFF, "unknown")}, tracker.mark()) == []
    assert tracker.pushed("n", "undefined", "removed") == [("n", "undefined", "removed")]
    assert tracker.polled({}, tracker.mark()) == []
    # A running domain undefined stays listed: no "defined" on the next poll.
    tracker.polled({"t": (RUNNING, "booted")}, tracker.mark())
    assert tracker.pushed("t", "undefined", "removed") == [("t", "undefined", "removed")]
    assert tracker.polled({"t": (RUNNING, "booted")}, tracker.mark()) == []


class SignallingRing(EventRing):
    """An EventRing that tells the test each time something is recorded (on the loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def record(
        self, domain: str, event: str, detail: str = "", *, at: float | None = None
    ) -> DomainEvent:
        recorded = super().record(domain, event, detail, at=at)
        self.changed.set()
        return recorded


class SignallingLibvirt(FakeLibvirt):
    """A FakeLibvirt that tells the test once the watcher listens for pushed events."""

    def __init__(self, domains: list[FakeDomain]) -> None:
        super().__init__(domains)
        self.listening = asyncio.Event()

    async def add_lifecycle_listener(self, listener: LifecycleListener) -> bool:
        self.listening.set()
        return await super().add_lifecycle_listener(listener)


async def _until(ring: SignallingRing, count: int) -> None:
    async with asyncio.timeout(5):
        while len(ring) < count:
            ring.changed.clear()
            await ring.changed.wait()


def _evidence(name: str, ring: EventRing) -> vm.VmEvidence:
    return vm.VmEvidence(
        node="n1", name=name, state=RUNNING, reason="unpaused", vcpus=1, events=ring.recent(name)
    )


async def test_polled_ioerror_pause_and_crash_are_alarming_in_diag_vm() -> None:
    libvirt = FakeLibvirt(
        [FakeDomain("web-1", reason="booted"), FakeDomain("db-1", reason="booted")],
        pushes_events=False,
    )
    ring = SignallingRing()
    stop = asyncio.Event()
    watch = asyncio.create_task(watch_domain_states(libvirt, ring, stop, interval=0.01))
    try:
        await asyncio.sleep(0.05)
        web, db = libvirt.domains["web-1"], libvirt.domains["db-1"]
        web.state, web.reason = PAUSED, "ioerror"
        db.state, db.reason = SHUTOFF, "crashed"
        await _until(ring, 2)
        web.state, web.reason = RUNNING, "unpaused"
        await _until(ring, 3)
    finally:
        stop.set()
        await asyncio.wait_for(watch, 5)
    assert [(e.domain, e.event, e.detail) for e in ring.recent()] == [
        ("db-1", "stopped", "crashed"),
        ("web-1", "suspended", "ioerror"),
        ("web-1", "resumed", "unpaused"),
    ]
    assert [e.alarming for e in ring.recent()] == [True, True, False]
    for name, alarming in (("web-1", "ev-2 suspended ioerror"), ("db-1", "ev-1 stopped crashed")):
        events = vm.evaluate_vm(_evidence(name, ring))[-1]
        assert events.check_id == "vm.events"
        assert events.status is Status.WARN, events.summary
        assert "1 alarming lifecycle event" in events.summary
        assert events.evidence["event_1"] == alarming


async def test_pushed_events_from_another_thread_reach_the_ring() -> None:
    libvirt = SignallingLibvirt([FakeDomain("web-1", reason="booted")])
    ring = SignallingRing()
    stop = asyncio.Event()
    watch = asyncio.create_task(watch_domain_states(libvirt, ring, stop, interval=3600))
    try:
        async with asyncio.timeout(5):
            await libvirt.listening.wait()

        def libvirt_event_thread() -> None:
            libvirt.push_lifecycle("web-1", *lifecycle_event_name(3, 2))  # suspended ioerror
            libvirt.push_lifecycle("web-1", *lifecycle_event_name(8, 0))  # crashed panicked

        thread = threading.Thread(target=libvirt_event_thread)
        thread.start()
        thread.join(5)
        await _until(ring, 2)
    finally:
        stop.set()
        await asyncio.wait_for(watch, 5)
    assert libvirt.listeners == []  # removed when the watch ends
    events = ring.recent("web-1")
    assert [(e.event, e.detail, e.alarming) for e in events] == [
        ("suspended", "ioerror", True),
        ("crashed", "panicked", True),
    ]
    check = vm.evaluate_vm(_evidence("web-1", ring))[-1]
    assert check.status is Status.WARN and "2 alarming lifecycle event" in check.summary


def test_the_events_data_file_has_the_recorders_shape() -> None:
    """tests/data/checks/vm_events_only_ring.json holds what the recorder makes of a
    boot (pushed), an I/O-error pause and a resume (polled)."""
    tracker = DomainStateTracker()
    ring = EventRing()
    tracker.polled({}, tracker.mark())
    for transition in (
        *tracker.pushed("web-1", *lifecycle_event_name(2, 0)),
        *tracker.polled({"web-1": (PAUSED, "ioerror")}, tracker.mark()),
        *tracker.polled({"web-1": (RUNNING, "unpaused")}, tracker.mark()),
    ):
        ring.record(*transition)
    doc = json.loads((DATA / "vm_events_only_ring.json").read_text())
    recorded = [(e.event_id, e.domain, e.event, e.detail) for e in ring.recent()]
    in_file = [
        (e["event_id"], e["domain"], e["event"], e["detail"]) for e in doc["evidence"]["events"]
    ]
    assert in_file == recorded


class StatesOnlyLibvirt(FakeLibvirt):
    """A FakeLibvirt whose full listing must not be used by the poll."""

    async def list_domains(self) -> list[DomainRecord]:
        raise AssertionError("the poll reads domain_states, not full records")


class RecordsOnlyLibvirt:
    """A gateway with list_domains only (no domain_states, no pushed events)."""

    def __init__(self, fake: FakeLibvirt) -> None:
        self.fake = fake
        self.listed = 0

    @property
    def uri(self) -> str:
        return self.fake.uri

    async def hypervisor_info(self) -> HypervisorInfo:
        return await self.fake.hypervisor_info()

    async def list_domains(self) -> list[DomainRecord]:
        self.listed += 1
        return await self.fake.list_domains()

    async def domain_counters(self, name: str) -> DomainCounters:
        return await self.fake.domain_counters(name)

    async def close(self) -> None:
        await self.fake.close()


@pytest.mark.parametrize("gateway", ["states", "records"])
async def test_the_poll_reads_states_when_it_can_and_records_otherwise(gateway: str) -> None:
    fake = StatesOnlyLibvirt([FakeDomain("web-1", reason="booted")], pushes_events=False)
    records_only = RecordsOnlyLibvirt(FakeLibvirt([FakeDomain("web-1", reason="booted")]))
    libvirt: LibvirtGateway = fake if gateway == "states" else records_only
    domain = fake.domains["web-1"] if gateway == "states" else records_only.fake.domains["web-1"]
    ring = SignallingRing()
    stop = asyncio.Event()
    watch = asyncio.create_task(watch_domain_states(libvirt, ring, stop, interval=0.01))
    try:
        await asyncio.sleep(0.05)
        domain.state, domain.reason = PAUSED, "ioerror"
        await _until(ring, 1)
    finally:
        stop.set()
        await asyncio.wait_for(watch, 5)
    assert [(e.domain, e.event, e.detail) for e in ring.recent()] == [
        ("web-1", "suspended", "ioerror")
    ]
    assert (records_only.listed > 0) == (gateway == "records")


async def test_fake_domain_states_match_its_list_domains() -> None:
    fake = FakeLibvirt(
        [FakeDomain("b", PAUSED, "user"), FakeDomain("a", reason="booted"), FakeDomain("c")]
    )
    states = await fake.domain_states()
    assert states == {d.name: (d.state, d.reason) for d in await fake.list_domains()}
    assert list(states) == ["a", "b", "c"]
    fake.error = "libvirt is down"
    with pytest.raises(LibvirtUnavailable):
        await fake.domain_states()
