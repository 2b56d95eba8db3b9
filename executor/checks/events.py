"""A bounded ring of libvirt domain lifecycle events, for "recent events" checks.

The executor records events (:mod:`novaops.executor.domain_events`: libvirt's
lifecycle callbacks and a state poll) and the vm checks read the recent ones of a
domain. Events and details are libvirt's bare symbolic names (``suspended`` /
``ioerror``, ``stopped`` / ``crashed``), the names :data:`ALARMING_DETAILS` lists.
What callers may rely on: the ring never holds more than ``capacity`` events
(the oldest are dropped first), it is safe to record from one thread while
another reads, and every event gets an id unique within the ring's lifetime.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass

DEFAULT_CAPACITY = 512

# Lifecycle details that mean something went wrong (libvirt's symbolic names of
# virDomainEvent*DetailType and of the state reasons a poll sees, lower case
# without the prefix).
ALARMING_DETAILS = frozenset(
    {
        "crashed",
        "crashloaded",
        "failed",
        "panicked",
        "ioerror",
        "watchdog",
        "api_error",
        "postcopy_failed",
    }
)


@dataclass(frozen=True)
class DomainEvent:
    """One lifecycle event: ``event`` e.g. "stopped", ``detail`` e.g. "crashed"."""

    event_id: str
    at: float
    domain: str
    event: str
    detail: str = ""

    @property
    def alarming(self) -> bool:
        return self.event == "crashed" or self.detail in ALARMING_DETAILS


class EventRing:
    """The last ``capacity`` domain events of this node."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, id_prefix: str = "ev") -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._events: deque[DomainEvent] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = id_prefix

    def record(
        self, domain: str, event: str, detail: str = "", *, at: float | None = None
    ) -> DomainEvent:
        """Append an event (dropping the oldest when full) and return it with its id."""
        with self._lock:
            recorded = DomainEvent(
                event_id=f"{self._prefix}-{next(self._ids)}",
                at=time.time() if at is None else at,
                domain=domain,
                event=event,
                detail=detail,
            )
            self._events.append(recorded)
        return recorded

    def recent(self, domain: str | None = None, limit: int = 20) -> tuple[DomainEvent, ...]:
        """The newest ``limit`` events (of one domain when given), oldest first."""
        with self._lock:
            events = [e for e in self._events if domain is None or e.domain == domain]
        return tuple(events[-limit:]) if limit > 0 else ()

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)
