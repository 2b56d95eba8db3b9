"""Domain lifecycle events for the ring ``diag vm`` reads: pushed by libvirt, polled too.

Two feeds, one record:

* libvirt's lifecycle callbacks, when the gateway is a
  :class:`~novaops.executor.libvirt_access.LifecycleSource`: they run on libvirt's
  event thread and are handed to the asyncio loop with ``call_soon_threadsafe``,
  so a suspend and resume between two polls are both recorded;
* a poll of every domain's state every ``interval`` seconds, the fallback for what
  no callback reports: drivers without events, changes the test driver made on
  another connection (it pushes only for changes made through the same one), the
  gap while a broken connection is reopened.

:class:`DomainStateTracker` (pure) merges them so that a transition seen by both
is recorded once. What callers may rely on: events use libvirt's names — the
event is a lifecycle event type (``started``, ``suspended``, ``resumed``,
``stopped``, ``shutdown``, ``crashed``, ``pmsuspended``, ``defined``,
``undefined``) and the detail a bare symbolic name (``ioerror``, ``crashed``,
``unpaused``: the callback's detail, or for a polled transition the new state's
reason) — the names :attr:`~novaops.executor.checks.events.DomainEvent.alarming`
compares with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from novaops.executor.checks.events import EventRing
from novaops.executor.libvirt_access import (
    BLOCKED,
    CRASHED,
    PAUSED,
    PMSUSPENDED,
    RUNNING,
    SHUTDOWN,
    SHUTOFF,
    DomainStateSource,
    LibvirtGateway,
    LibvirtUnavailable,
    LifecycleSource,
)

log = logging.getLogger(__name__)

# (domain, event, detail) for the ring.
Transition = tuple[str, str, str]
# domain -> (virDomainState code, symbolic reason)
Snapshot = Mapping[str, tuple[int, str]]

_EVENT_FOR_STATE = {
    RUNNING: "started",
    BLOCKED: "started",
    PAUSED: "suspended",
    SHUTDOWN: "shutdown",
    SHUTOFF: "stopped",
    CRASHED: "crashed",
    PMSUSPENDED: "pmsuspended",
}
# The state a pushed event leaves the domain in (events not here leave it as it was).
_STATE_AFTER_EVENT = {
    "started": RUNNING,
    "resumed": RUNNING,
    "suspended": PAUSED,
    "stopped": SHUTOFF,
    "crashed": CRASHED,
    "pmsuspended": PMSUSPENDED,
}
_RUNNING_STATES = frozenset({RUNNING, BLOCKED})


def _event_for(before: int | None, after: int) -> str | None:
    """The lifecycle event of a state change as libvirt names it; None for none."""
    if before in _RUNNING_STATES and after in _RUNNING_STATES:
        return None  # blocked is running, waiting on a resource: no lifecycle change
    if after in _RUNNING_STATES and before == PAUSED:
        return "resumed"
    return _EVENT_FOR_STATE.get(after, "changed")


def state_transitions(previous: Snapshot, current: Snapshot) -> list[Transition]:
    """(domain, event, detail) for every domain whose state changed, appeared or vanished.

    The detail is the new state's reason; a new domain is ``defined added`` (then
    its state's event, unless it is shut off), a vanished one ``undefined removed``.
    """
    events: list[Transition] = []
    for name in sorted(set(previous) | set(current)):
        before, after = previous.get(name), current.get(name)
        if after is None:
            events.append((name, "undefined", "removed"))
            continue
        if before is None:
            events.append((name, "defined", "added"))
            if after[0] != SHUTOFF:
                events.append((name, _event_for(None, after[0]) or "started", after[1]))
            continue
        if before[0] != after[0]:
            event = _event_for(before[0], after[0])
            if event is not None:
                events.append((name, event, after[1]))
    return events


class DomainStateTracker:
    """What the ring should record, from polled snapshots and pushed events (pure).

    It keeps the last known state of every domain. A push updates it, so the next
    poll finds nothing new; a poll records what no push reported, and remembers
    it, so the push of the same transition arriving late is not recorded again.
    A poll whose snapshot was read before a push was applied (``since``, from
    :meth:`mark` before the read) leaves that domain to the push.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, str]] = {}
        self._polled_once = False
        self._pushes = 0
        self._last_push: dict[str, int] = {}
        # Events a poll recorded per domain that its push may still repeat.
        self._unconfirmed: dict[str, list[str]] = {}

    @property
    def known(self) -> dict[str, tuple[int, str]]:
        return dict(self._known)

    def mark(self) -> int:
        """Take before reading a snapshot; pass to :meth:`polled` with it."""
        return self._pushes

    def polled(self, current: Snapshot, since: int) -> list[Transition]:
        """Transitions of a snapshot read after :meth:`mark` returned ``since``.
        The first snapshot only sets the known states."""
        fresh = {n for n, at in self._last_push.items() if at > since}
        before = {n: s for n, s in self._known.items() if n not in fresh}
        after = {n: s for n, s in current.items() if n not in fresh}
        events = state_transitions(before, after) if self._polled_once else []
        self._polled_once = True
        for name in set(before) | set(after):
            if name in after:
                self._known[name] = after[name]
            else:
                self._known.pop(name, None)
        for name in {n for n, _, _ in events}:
            self._unconfirmed[name] = [e for n, e, _ in events if n == name]
        self._last_push = {n: at for n, at in self._last_push.items() if at > since}
        return events

    def pushed(self, domain: str, event: str, detail: str) -> list[Transition]:
        """Transitions of one pushed lifecycle event: itself, unless a poll already
        recorded it."""
        self._pushes += 1
        self._last_push[domain] = self._pushes
        target = _STATE_AFTER_EVENT.get(event)
        if target is not None:
            self._known[domain] = (target, detail)
        elif event == "defined" and domain not in self._known:
            self._known[domain] = (SHUTOFF, detail)
        elif event == "undefined" and self._known.get(domain, (SHUTOFF, ""))[0] == SHUTOFF:
            # A running domain undefined stays listed (transient) until it stops.
            self._known.pop(domain, None)
        unconfirmed = self._unconfirmed.get(domain, [])
        if event in unconfirmed:
            unconfirmed.remove(event)
            return []
        self._unconfirmed.pop(domain, None)
        return [(domain, event, detail)]


async def watch_domain_states(
    libvirt: LibvirtGateway, ring: EventRing, stop: asyncio.Event, interval: float = 5.0
) -> None:
    """Record lifecycle events into the ring until stop is set: pushed ones as they
    arrive (when libvirt can push them), polled state changes every ``interval``
    seconds; libvirt outages are skipped. The poll reads only states when the
    gateway is a :class:`DomainStateSource`, whole records otherwise."""
    loop = asyncio.get_running_loop()
    tracker = DomainStateTracker()

    def record(transitions: list[Transition]) -> None:
        for domain, event, detail in transitions:
            ring.record(domain, event, detail)

    def on_loop(domain: str, event: str, detail: str) -> None:
        record(tracker.pushed(domain, event, detail))

    def on_event_thread(domain: str, event: str, detail: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody records
            loop.call_soon_threadsafe(on_loop, domain, event, detail)

    states = libvirt if isinstance(libvirt, DomainStateSource) else None

    async def snapshot() -> Snapshot:
        if states is not None:
            return await states.domain_states()
        return {d.name: (d.state, d.reason) for d in await libvirt.list_domains()}

    source = libvirt if isinstance(libvirt, LifecycleSource) else None
    if source is not None:
        pushing = await source.add_lifecycle_listener(on_event_thread)
        how = "pushed and polled" if pushing else "polled (libvirt pushes none now)"
        log.info("domain lifecycle events of %s: %s every %gs", libvirt.uri, how, interval)
    try:
        while not stop.is_set():
            mark = tracker.mark()
            try:
                current: Snapshot | None = await snapshot()
            except LibvirtUnavailable:
                current = None
            if current is not None:
                record(tracker.polled(current, mark))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        if source is not None:
            source.remove_lifecycle_listener(on_event_thread)
