"""In-process store for unit tests: the same contract as etcd, time from an injected clock.

Leases (node liveness, the leader term) are deadlines on ``clock.monotonic()``:
a lease is alive while ``now < expires_at``. Every mutation bumps one
store-wide revision, as in etcd, and a term's fencing token is the revision at
which it was won. Nothing survives the process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from novaops.controller.clock import Clock
from novaops.controller.store.base import (
    ANY_RECORD,
    ExpectedRecord,
    FencingError,
    HistoryEntry,
    LeaderRecord,
    LeaderTerm,
    NodeRecord,
    NodeRegistration,
    Removal,
    Store,
    StoreError,
    check_expected,
)


@dataclass
class _Liveness:
    expires_at: float  # monotonic
    last_heartbeat: float  # wall
    health: int


@dataclass
class _Leadership:
    record: LeaderRecord
    lease_id: int
    expires_at: float  # monotonic


class MemoryStore(Store):
    """A store held in this process's memory; safe for one event loop.

    ``open()`` and ``close()`` are optional: unit tests may use a fresh instance directly.
    """

    kind = "memory"

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._revision = 0
        self._nodes: dict[str, NodeRecord] = {}
        self._liveness: dict[str, _Liveness] = {}
        self._leader: _Leadership | None = None
        self._quarantines: dict[str, bytes] = {}
        self._history: list[tuple[str, HistoryEntry]] = []
        self._events: list[HistoryEntry] = []
        self._settings: dict[str, bytes] = {}

    @property
    def endpoint(self) -> str:
        return "memory"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        # Leases held by this process die with it, as a crashed etcd client's would
        # once they lapse; dropping the leader at once mirrors EmbeddedStore.close().
        self._leader = None

    def _bump(self) -> int:
        self._revision += 1
        return self._revision

    # -- node registry -------------------------------------------------------

    async def register_node(self, registration: NodeRegistration) -> None:
        previous = self._nodes.get(registration.name)
        self._nodes[registration.name] = NodeRecord(
            name=registration.name,
            address=registration.address,
            version=registration.version,
            labels=dict(registration.labels),
            facts=registration.facts,
            registered_at=previous.registered_at if previous else self._clock.wall(),
            last_heartbeat=None,
            health=0,
            up=False,
        )
        self._bump()

    async def heartbeat(self, name: str, ttl_seconds: float, health: int) -> bool:
        if name not in self._nodes:
            return False
        self._liveness[name] = _Liveness(
            expires_at=self._clock.monotonic() + ttl_seconds,
            last_heartbeat=self._clock.wall(),
            health=health,
        )
        self._bump()
        return True

    def _with_liveness(self, record: NodeRecord) -> NodeRecord:
        live = self._liveness.get(record.name)
        if live is None:
            return record
        return replace(
            record,
            last_heartbeat=live.last_heartbeat,
            health=live.health,
            up=self._clock.monotonic() < live.expires_at,
        )

    async def list_nodes(self) -> list[NodeRecord]:
        return [self._with_liveness(self._nodes[name]) for name in sorted(self._nodes)]

    async def get_node(self, name: str) -> NodeRecord | None:
        record = self._nodes.get(name)
        return self._with_liveness(record) if record else None

    async def remove_node(self, name: str) -> bool:
        self._liveness.pop(name, None)
        if self._nodes.pop(name, None) is None:
            return False
        self._bump()
        return True

    async def remove_down_node(self, name: str) -> Removal:
        record = self._nodes.get(name)
        if record is None:
            return Removal.UNKNOWN
        if self._with_liveness(record).up:
            return Removal.UP
        if name in self._quarantines:
            return Removal.QUARANTINED
        await self.remove_node(name)
        return Removal.REMOVED

    # -- leader election -----------------------------------------------------

    def _current_leader(self) -> _Leadership | None:
        if self._leader is not None and self._clock.monotonic() >= self._leader.expires_at:
            self._leader = None  # the lease lapsed: the key is gone, as in etcd
        return self._leader

    async def campaign(self, name: str, address: str, ttl_seconds: int) -> LeaderTerm | None:
        if self._current_leader() is not None:
            return None
        revision = self._bump()
        record = LeaderRecord(
            name=name,
            address=address,
            since=self._clock.wall(),
            revision=revision,
            lease_ttl=ttl_seconds,
        )
        self._leader = _Leadership(record, revision, self._clock.monotonic() + ttl_seconds)
        return LeaderTerm(record=record, lease_id=revision)

    def _holds(self, term: LeaderTerm) -> _Leadership | None:
        leader = self._current_leader()
        if (
            leader is None
            or leader.record.revision != term.record.revision
            or leader.lease_id != term.lease_id
        ):
            return None
        return leader

    async def keep_leadership(self, term: LeaderTerm) -> bool:
        leader = self._holds(term)
        if leader is None:
            return False
        leader.expires_at = self._clock.monotonic() + leader.record.lease_ttl
        return True

    async def resign(self, term: LeaderTerm) -> None:
        if self._holds(term) is not None:
            self._leader = None
            self._bump()

    async def get_leader(self) -> LeaderRecord | None:
        leader = self._current_leader()
        return leader.record if leader else None

    # -- quarantine state ----------------------------------------------------

    def _fence(self, fence: LeaderTerm) -> None:
        leader = self._current_leader()
        if leader is None or leader.record.revision != fence.record.revision:
            current = leader.record.revision if leader else None
            raise FencingError(
                f"term {fence.record.revision} of {fence.record.name} is not the current "
                f"leader term (current: {current})"
            )

    def _append(self, node: str, history: bytes) -> int:
        sequence = self._bump()
        self._history.append((node, HistoryEntry(sequence=sequence, payload=history)))
        return sequence

    async def put_quarantine(
        self,
        node: str,
        record: bytes,
        history: bytes,
        fence: LeaderTerm,
        *,
        expected: ExpectedRecord = ANY_RECORD,
    ) -> int:
        self._fence(fence)
        check_expected(node, self._quarantines.get(node), expected)
        self._quarantines[node] = record
        return self._append(node, history)

    async def delete_quarantine(
        self,
        node: str,
        history: bytes,
        fence: LeaderTerm,
        *,
        expected: ExpectedRecord = ANY_RECORD,
    ) -> int:
        self._fence(fence)
        check_expected(node, self._quarantines.get(node), expected)
        self._quarantines.pop(node, None)
        return self._append(node, history)

    async def annotate_history(
        self, sequence: int, details: bytes, fence: LeaderTerm, *, expected: bytes | None = None
    ) -> bool:
        self._fence(fence)
        return self._set_details(sequence, details, expected)

    async def fill_history_details(self, sequence: int, expected: bytes, details: bytes) -> bool:
        return self._set_details(sequence, details, expected)

    def _set_details(self, sequence: int, details: bytes, expected: bytes | None) -> bool:
        for index, (owner, entry) in enumerate(self._history):
            if entry.sequence == sequence:
                if expected is not None and entry.details != expected:
                    return False
                self._history[index] = (owner, replace(entry, details=details))
                self._bump()
                return True
        raise StoreError(f"memory store: no history entry {sequence}")

    async def get_quarantines(self) -> dict[str, bytes]:
        return dict(sorted(self._quarantines.items()))

    async def get_history(self, node: str | None = None) -> list[HistoryEntry]:
        return [entry for owner, entry in self._history if node is None or owner == node]

    # -- events and settings -------------------------------------------------

    async def append_event(self, payload: bytes, retain: int) -> int:
        entry = HistoryEntry(self._bump(), payload)
        self._events.append(entry)
        del self._events[: max(0, len(self._events) - retain)]
        return entry.sequence

    async def list_events(self, after: int, limit: int) -> list[HistoryEntry]:
        return [e for e in self._events if e.sequence > after][:limit]

    async def get_setting(self, key: str) -> bytes | None:
        return self._settings.get(key)

    async def put_setting(self, key: str, value: bytes, fence: LeaderTerm) -> None:
        self._fence(fence)
        self._settings[key] = value
        self._bump()
