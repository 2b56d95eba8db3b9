"""The store interface: node registry, leader election and quarantine state.

Three implementations keep the same contract (tests/store/test_contract.py runs
the same tests against each):

- ``MemoryStore``: in-process, driven by an injected clock; for unit tests.
- ``EmbeddedStore``: one sqlite file, one controller (the file is locked).
- ``EtcdStore``: etcd v3 through its HTTP gateway (etcd3gw); required for HA.

Values the controller keeps (node facts, quarantine records) are opaque bytes
to the store: serialization belongs to the caller. All methods are coroutines;
implementations backed by blocking clients run them in a worker thread.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field


class StoreError(Exception):
    """The store failed an operation; the message names the store and the cause."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (etcd down, file unreadable)."""


class StoreLocked(StoreError):
    """The embedded store file is held by another controller process."""


class FencingError(StoreError):
    """A mutation carried a leader revision that is no longer the current leader's."""


class QuarantineConflict(StoreError):
    """A conditional quarantine write found another record than the one expected.

    Nothing was written; the caller re-reads the record and decides again.
    """


class AnyRecord(enum.Enum):
    """``expected`` for an unconditional quarantine write."""

    ANY = "any"


ANY_RECORD = AnyRecord.ANY


class Removal(enum.Enum):
    """What :meth:`Store.remove_down_node` found, and did only for REMOVED."""

    REMOVED = "removed"
    UNKNOWN = "unknown"  # no such node (or it was removed just before)
    UP = "up"  # its liveness lease is alive
    QUARANTINED = "quarantined"  # a quarantine record exists


# What a conditional quarantine write expects the node's current record to be:
# these exact bytes, None for "no record", or ANY_RECORD for no condition.
ExpectedRecord = bytes | None | AnyRecord


def check_expected(node: str, current: bytes | None, expected: ExpectedRecord) -> None:
    """Raise QuarantineConflict unless ``current`` is what a conditional write expects."""
    if expected is ANY_RECORD or current == expected:
        return
    have = "no record" if current is None else "another record"
    want = "no record" if expected is None else "the record it read"
    raise QuarantineConflict(
        f"quarantine of {node} changed concurrently: expected {want}, found {have}; re-read"
    )


@dataclass(frozen=True)
class NodeRegistration:
    """What an executor announces when it registers."""

    name: str
    address: str
    version: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    facts: bytes = b""  # serialized novaops.v1.HostFacts


@dataclass(frozen=True)
class NodeRecord:
    """A registered node and its liveness as the store sees it now."""

    name: str
    address: str
    version: str
    labels: dict[str, str]
    facts: bytes
    registered_at: float  # wall seconds
    last_heartbeat: float | None  # wall seconds of the last heartbeat, if any
    health: int  # novaops.v1.HealthStatus value last reported
    up: bool  # liveness lease alive


@dataclass(frozen=True)
class LeaderRecord:
    """Who leads, since when, and the fencing revision of its term."""

    name: str
    address: str
    since: float  # wall seconds
    revision: int  # store revision at which the term began (fencing token)
    lease_ttl: int  # seconds


@dataclass(frozen=True)
class LeaderTerm:
    """A won election, as held by the winner: pass it back to keep or resign it."""

    record: LeaderRecord
    lease_id: int


@dataclass(frozen=True)
class HistoryEntry:
    """One append-only history entry: its sequence number and opaque payload.

    ``details`` is what was learned after the entry was appended (for a
    quarantine: the node's hook results), set by ``annotate_history``; also opaque.
    Events reuse this type and never have details.
    """

    sequence: int
    payload: bytes
    details: bytes = b""


class Store(abc.ABC):
    """Persistence for the controller. Every replica talks to the same store."""

    kind: str  # "memory" | "embedded" | "etcd"

    @property
    @abc.abstractmethod
    def endpoint(self) -> str:
        """Where the store lives (file path or endpoint list), for status output."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect or open the file. Raises StoreUnavailable or StoreLocked."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections, locks and leases held only by this process."""

    # -- node registry -------------------------------------------------------

    @abc.abstractmethod
    async def register_node(self, registration: NodeRegistration) -> None:
        """Create or update a node record (idempotent). Does not mark it up."""

    @abc.abstractmethod
    async def heartbeat(self, name: str, ttl_seconds: float, health: int) -> bool:
        """Renew the node's liveness for ttl_seconds; False if the node is unknown."""

    async def heartbeat_with_quarantine(
        self, name: str, ttl_seconds: float, health: int
    ) -> tuple[bool, bytes | None]:
        """:meth:`heartbeat`, then the node's quarantine record (None: not
        quarantined; always None for an unknown node). What the controller needs
        per heartbeat; a backend that can do both in one round trip overrides it."""
        if not await self.heartbeat(name, ttl_seconds, health):
            return False, None
        return True, (await self.get_quarantines()).get(name)

    @abc.abstractmethod
    async def list_nodes(self) -> list[NodeRecord]:
        """Every registered node with current liveness, sorted by name."""

    @abc.abstractmethod
    async def get_node(self, name: str) -> NodeRecord | None:
        """One node, or None."""

    @abc.abstractmethod
    async def remove_node(self, name: str) -> bool:
        """Forget a node (record and liveness); False if it was unknown."""

    @abc.abstractmethod
    async def remove_down_node(self, name: str) -> Removal:
        """Forget a node only if it is down and not quarantined, in one atomic step
        (no heartbeat or quarantine can land between the check and the delete)."""

    # -- leader election -----------------------------------------------------

    @abc.abstractmethod
    async def campaign(self, name: str, address: str, ttl_seconds: int) -> LeaderTerm | None:
        """Try once to become leader; return the term if won, None if another leads."""

    @abc.abstractmethod
    async def keep_leadership(self, term: LeaderTerm) -> bool:
        """Renew the term's lease; False when the term is lost (lease expired/replaced)."""

    @abc.abstractmethod
    async def resign(self, term: LeaderTerm) -> None:
        """Give up leadership now if still held (idempotent)."""

    @abc.abstractmethod
    async def get_leader(self) -> LeaderRecord | None:
        """The current leader, or None when nobody holds the lease."""

    # -- quarantine state (fenced by the leader's term) ------------------------

    @abc.abstractmethod
    async def put_quarantine(
        self,
        node: str,
        record: bytes,
        history: bytes,
        fence: LeaderTerm,
        *,
        expected: ExpectedRecord = ANY_RECORD,
    ) -> int:
        """Set a node's quarantine record and append a history entry atomically.

        With ``expected`` (the record's bytes as last read, or None for "not
        quarantined") the write is a compare-and-set: it happens only if the
        node's current record is exactly that, else QuarantineConflict and nothing
        is written. Raises FencingError when ``fence`` is not the current leader
        term (checked first). Returns the history entry's sequence number.
        """

    @abc.abstractmethod
    async def delete_quarantine(
        self,
        node: str,
        history: bytes,
        fence: LeaderTerm,
        *,
        expected: ExpectedRecord = ANY_RECORD,
    ) -> int:
        """Remove a node's quarantine record and append a history entry atomically;
        ``expected`` as for ``put_quarantine``."""

    @abc.abstractmethod
    async def annotate_history(
        self, sequence: int, details: bytes, fence: LeaderTerm, *, expected: bytes | None = None
    ) -> bool:
        """Set the ``details`` of history entry ``sequence`` (its payload never changes).

        With ``expected``, only while the details are still exactly that (a
        compare-and-set); returns whether they were set. Raises FencingError when
        ``fence`` is not the current term, StoreError when there is no such entry.
        """

    @abc.abstractmethod
    async def fill_history_details(self, sequence: int, expected: bytes, details: bytes) -> bool:
        """Set the ``details`` of history entry ``sequence`` while they are still
        ``expected``, from any replica (not fenced): for facts a node reports
        about a change, which fill an entry once instead of deciding anything.
        Returns whether they were set; StoreError when there is no such entry."""

    @abc.abstractmethod
    async def get_quarantines(self) -> dict[str, bytes]:
        """Current quarantine records by node name."""

    @abc.abstractmethod
    async def get_history(self, node: str | None = None) -> list[HistoryEntry]:
        """History entries in sequence order (payloads are opaque)."""

    # -- cluster events (bounded, ordered log) ---------------------------------

    @abc.abstractmethod
    async def append_event(self, payload: bytes, retain: int) -> int:
        """Append an event; return its sequence (increasing). Keeps about ``retain``."""

    @abc.abstractmethod
    async def list_events(self, after: int, limit: int) -> list[HistoryEntry]:
        """Events with a sequence greater than ``after``, oldest first, at most ``limit``."""

    # -- small settings kept by the leader (automation pause, breaker) --------

    @abc.abstractmethod
    async def get_setting(self, key: str) -> bytes | None:
        """A setting's value, or None."""

    @abc.abstractmethod
    async def put_setting(self, key: str, value: bytes, fence: LeaderTerm) -> None:
        """Set a setting; raises FencingError when ``fence`` is not the current term."""
