"""Cluster events: an ordered, bounded log in the store, readable from any replica.

Every event has an id (its store sequence, zero-padded so ids sort as strings),
a kind, the node concerned, a message and the ids of what caused it. Events
are appended by the replica that observed them (registry transitions) or by
the leader (recovery, quarantine, breaker), and kept up to ``RETAIN`` entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from novaops.controller.store.base import Store, StoreError
from novaops.v1 import controller_pb2

log = logging.getLogger(__name__)

RETAIN = 10_000
FOLLOW_POLL_SECONDS = 0.5


def event_id(sequence: int) -> str:
    return f"{sequence:012d}"


def sequence_of(event_id_text: str) -> int:
    try:
        return int(event_id_text)
    except ValueError:
        raise ValueError(f"not an event id: {event_id_text!r} (expected digits)") from None


class EventLog:
    """Append and read cluster events through the store."""

    def __init__(self, store: Store, retain: int = RETAIN) -> None:
        self._store = store
        self._retain = retain

    async def emit(
        self,
        kind: str,
        node: str,
        message: str,
        *,
        cause_ids: Iterable[str] = (),
        attributes: Mapping[str, str] | None = None,
        at: float | None = None,
    ) -> str:
        """Append an event; returns its id. Store failures are logged, not raised:
        an event that cannot be recorded must not abort the action it describes."""
        stamp = Timestamp()
        stamp.FromNanoseconds(int((at if at is not None else time.time()) * 1e9))
        event = controller_pb2.ClusterEvent(
            kind=kind,
            node=node,
            message=message,
            at=stamp,
            attributes=dict(attributes or {}),
            cause_ids=list(cause_ids),
        )
        log.info("event %s %s: %s", kind, node or "-", message)
        try:
            sequence = await self._store.append_event(event.SerializeToString(), self._retain)
        except StoreError as exc:
            log.warning("could not record event %s for %s: %s", kind, node or "-", exc)
            return ""
        return event_id(sequence)

    async def read(self, after: int = 0, limit: int = 1000) -> list[controller_pb2.ClusterEvent]:
        events = []
        for entry in await self._store.list_events(after, limit):
            event = controller_pb2.ClusterEvent()
            event.ParseFromString(entry.payload)
            event.id = event_id(entry.sequence)
            events.append(event)
        return events

    async def follow(
        self, after: int, kinds: set[str], follow: bool, stop: asyncio.Event | None = None
    ) -> AsyncIterator[controller_pb2.ClusterEvent]:
        """The backlog after ``after``, then (with follow) new events as they land."""
        cursor = after
        while True:
            batch = await self.read(cursor)
            for event in batch:
                cursor = sequence_of(event.id)
                if not kinds or event.kind in kinds:
                    yield event
            if len(batch) == 1000:
                continue
            if not follow or (stop is not None and stop.is_set()):
                return
            if stop is None:
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), FOLLOW_POLL_SECONDS)
