"""Domain lifecycle events, recorded by watching libvirt's domain states.

libvirt can push lifecycle events, but only through an event loop the process
must run for it, and the test driver emits them only for changes made on the
same connection. Polling the states every few seconds works with every driver;
``state_transitions`` (pure) turns two snapshots into events for the ring that
``diag vm`` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from novaops.executor.checks.events import EventRing
from novaops.executor.libvirt_access import (
    CRASHED,
    PAUSED,
    RUNNING,
    SHUTDOWN,
    SHUTOFF,
    LibvirtGateway,
    LibvirtUnavailable,
)

log = logging.getLogger(__name__)

_EVENT_FOR_STATE = {
    RUNNING: "started",
    PAUSED: "suspended",
    SHUTDOWN: "shutdown",
    SHUTOFF: "stopped",
    CRASHED: "crashed",
}


def state_transitions(
    previous: dict[str, tuple[int, str]], current: dict[str, tuple[int, str]]
) -> list[tuple[str, str, str]]:
    """(domain, event, detail) for every domain whose state changed, appeared or vanished."""
    events = []
    for name in sorted(set(previous) | set(current)):
        before, after = previous.get(name), current.get(name)
        if after is None:
            events.append((name, "undefined", "domain no longer listed"))
        elif before is None or before[0] != after[0]:
            event = _EVENT_FOR_STATE.get(after[0], "changed")
            detail = f"reason {after[1]}" if after[1] else ""
            events.append((name, event, detail if before is not None else f"first seen; {detail}"))
    return events


async def watch_domain_states(
    libvirt: LibvirtGateway, ring: EventRing, stop: asyncio.Event, interval: float = 5.0
) -> None:
    """Record state changes into the ring until stop is set; libvirt outages are skipped."""
    previous: dict[str, tuple[int, str]] | None = None
    while not stop.is_set():
        try:
            current = {d.name: (d.state, d.reason) for d in await libvirt.list_domains()}
        except LibvirtUnavailable:
            current = None
        if current is not None:
            if previous is not None:
                for domain, event, detail in state_transitions(previous, current):
                    ring.record(domain, event, detail)
            previous = current
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
