"""etcd v3 store through etcd's HTTP/JSON gateway (etcd3gw); the store for HA controllers.

Key layout under ``prefix`` (default ``/novaops``):

- ``nodes/{name}``       JSON node record (address, version, labels, facts, registered_at)
- ``alive/{name}``       JSON {lease, last_heartbeat, health}, attached to a lease of the
                         liveness TTL: the node is up while this key exists
- ``seen/{name}``        JSON {last_heartbeat, health} without a lease, so a down node
                         still shows when it was last heard from
- ``leader``             JSON {name, address, since, lease_ttl}, attached to the leader
                         lease and created only if absent; its create_revision is the
                         term's fencing token
- ``quarantine/{node}``  the caller's opaque record
- ``history/{seq:020d}`` JSON {node, payload, write[, details]}; ``history-seq`` holds
                         the last seq

Every quarantine write is one transaction guarded by "the leader key was created
at the fencing revision", so a deposed leader cannot write. etcd3gw is blocking:
each public method runs its requests on a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import ConnectionFailedError, ConnectionTimeoutError, Etcd3Exception
from etcd3gw.lease import Lease

from novaops.controller.clock import Clock, SystemClock
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
    StoreUnavailable,
    check_expected,
)

T = TypeVar("T")
Op = dict[str, Any]

# Attempts at appending history when the sequence counter moved under us; only
# the leader writes, so losing more than a couple of races means something is wrong.
_EVENT_TRIM_EVERY = 100
_APPEND_ATTEMPTS = 8


class _LeaseNotFound(StoreError):
    """A put named a lease that has expired in the meantime."""


@dataclass(frozen=True)
class _KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _prefix_end(key: str) -> str:
    """The range end covering every key that starts with ``key``."""
    raw = bytearray(key.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


def _put(key: str, value: bytes, lease: int | None = None) -> Op:
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        request["lease"] = lease
    return {"request_put": request}


def _range(key: str, *, prefix: bool = False) -> Op:
    request: dict[str, Any] = {"key": _b64(key)}
    if prefix:
        request["range_end"] = _prefix_end(key)
    return {"request_range": request}


def _delete(key: str) -> Op:
    return {"request_delete_range": {"key": _b64(key)}}


def _compare(key: str, target: str, value: int, result: str = "EQUAL") -> Op:
    field = {"CREATE": "create_revision", "MOD": "mod_revision"}[target]
    return {"key": _b64(key), "target": target, "result": result, field: value}


def _compare_value(key: str, value: bytes) -> Op:
    return {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}


def _expect(key: str, expected: ExpectedRecord) -> list[Op]:
    """The compare that makes a write conditional on ``key`` holding ``expected``."""
    if expected is ANY_RECORD:
        return []
    if expected is None:
        return [_compare(key, "CREATE", 0)]  # absent: a missing key has create_revision 0
    return [_compare_value(key, expected)]


def _kvs(response: Op) -> list[_KV]:
    """The key-values of one ``response_range`` inside a transaction response."""
    found = []
    for item in response.get("response_range", {}).get("kvs", []):
        found.append(
            _KV(
                key=base64.b64decode(item["key"]).decode(),
                value=base64.b64decode(item.get("value", "")),
                create_revision=int(item.get("create_revision", 0)),
                mod_revision=int(item.get("mod_revision", 0)),
                lease=int(item.get("lease", 0)),
            )
        )
    return found


def _one(response: Op) -> _KV | None:
    kvs = _kvs(response)
    return kvs[0] if kvs else None


def _error_text(exc: Etcd3Exception) -> str:
    """etcd's own error message from a gateway error body, on one line."""
    detail = exc.detail_text or str(exc) or type(exc).__name__
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        detail = json.loads(detail).get("error") or detail
    return " ".join(str(detail).split())[:200]


class EtcdStore(Store):
    """The store in etcd; any number of controllers may share one prefix."""

    kind = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = "/novaops",
        clock: Clock | None = None,
        timeout: float = 5.0,
        ca: Path | str | None = None,
        cert: Path | str | None = None,
        key: Path | str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        self._endpoints = list(endpoints)
        for url in self._endpoints:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an etcd client URL (http[s]://host:port): {url!r}")
        self._prefix = prefix.rstrip("/")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._timeout = timeout
        self._tls = (ca, cert, key)
        # requests sessions are not documented as thread-safe: each worker thread
        # gets its own clients; all sessions are closed together on close().
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._generation = 0
        self._preferred = 0  # index of the endpoint that answered last
        self._node_leases: dict[str, tuple[int, int]] = {}  # name -> (lease id, ttl)
        self._appended_events = 0

    @property
    def endpoint(self) -> str:
        return ",".join(self._endpoints)

    @property
    def prefix(self) -> str:
        return self._prefix

    def _key(self, *parts: str) -> str:
        return "/".join((self._prefix, *parts))

    # -- connections ---------------------------------------------------------

    def _make_client(self, url: str) -> Etcd3Client:
        parts = urlsplit(url)
        ca, cert, key = self._tls
        session = requests.Session()
        if ca is not None:
            session.verify = str(ca)
        if cert is not None and key is not None:
            session.cert = (str(cert), str(key))
        with self._sessions_lock:
            self._sessions.append(session)
        return Etcd3Client(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (443 if parts.scheme == "https" else 2379),
            protocol=parts.scheme,
            timeout=self._timeout,
            api_path="/v3/",  # etcd >= 3.4; skips a version probe per client
            session=session,
        )

    def _clients(self) -> list[Etcd3Client]:
        cached: tuple[int, list[Etcd3Client]] | None = getattr(self._local, "clients", None)
        if cached is None or cached[0] != self._generation:
            cached = (self._generation, [self._make_client(url) for url in self._endpoints])
            self._local.clients = cached
        return cached[1]

    def _call(self, operation: Callable[[Etcd3Client], T]) -> T:
        """Run ``operation`` against the endpoints, starting with the last one that answered.

        Fails over on connection errors and timeouts. Callers make their
        writes safe to repeat, since a timed-out request may have been applied.
        """
        clients = self._clients()
        last_error = ""
        for step in range(len(clients)):
            index = (self._preferred + step) % len(clients)
            try:
                result = operation(clients[index])
            except ConnectionTimeoutError:
                last_error = f"timed out after {self._timeout:g}s"
                continue
            except ConnectionFailedError as exc:
                # A body from etcd (503) says why; otherwise nothing answered.
                answered = (exc.detail_text or "").lstrip().startswith("{")
                last_error = _error_text(exc) if answered else "connection refused or reset"
                continue
            except Etcd3Exception as exc:
                text = _error_text(exc)
                if "lease not found" in text:
                    raise _LeaseNotFound(f"etcd at {self._endpoints[index]}: {text}") from None
                raise StoreError(f"etcd at {self._endpoints[index]}: {text}") from None
            except requests.RequestException as exc:  # e.g. TLS errors etcd3gw does not map
                last_error = type(exc).__name__
                continue
            self._preferred = index
            return result
        raise StoreUnavailable(f"etcd unreachable at {self.endpoint} ({last_error})")

    def _txn(
        self, success: list[Op], compare: list[Op] | None = None, failure: list[Op] | None = None
    ) -> Op:
        body = {"compare": compare or [], "success": success, "failure": failure or []}
        return dict(self._call(lambda client: client.transaction(body)))

    def _grant(self, ttl_seconds: int) -> int:
        return self._call(lambda client: client.lease(ttl_seconds).id)

    def _refresh(self, lease_id: int) -> int:
        """The lease's TTL after a keepalive, or <= 0 when it has expired."""
        try:
            return self._call(lambda client: Lease(lease_id, client).refresh())
        except _LeaseNotFound:
            return -1

    def _revoke_quietly(self, lease_id: int) -> None:
        with contextlib.suppress(StoreError):
            self._call(lambda client: Lease(lease_id, client).revoke())

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        # A linearizable read proves a member with quorum answers.
        await asyncio.to_thread(self._txn, [_range(self._key("leader"))])

    async def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
            self._generation += 1
        for session in sessions:
            session.close()

    # -- node registry -------------------------------------------------------

    async def register_node(self, registration: NodeRegistration) -> None:
        await asyncio.to_thread(self._register_sync, registration)

    def _register_sync(self, registration: NodeRegistration) -> None:
        key = self._key("nodes", registration.name)
        previous = _one(self._txn([_range(key)])["responses"][0])
        registered_at = self._clock.wall()
        if previous is not None:
            registered_at = json.loads(previous.value).get("registered_at", registered_at)
        value = {
            "name": registration.name,
            "address": registration.address,
            "version": registration.version,
            "labels": registration.labels,
            "facts": _b64(registration.facts),
            "registered_at": registered_at,
        }
        self._txn([_put(key, json.dumps(value, sort_keys=True).encode())])

    async def heartbeat(self, name: str, ttl_seconds: float, health: int) -> bool:
        return await asyncio.to_thread(self._heartbeat_sync, name, ttl_seconds, health)

    async def heartbeat_with_quarantine(
        self, name: str, ttl_seconds: float, health: int
    ) -> tuple[bool, bytes | None]:
        return await asyncio.to_thread(
            self._heartbeat_with_quarantine_sync, name, ttl_seconds, health
        )

    def _heartbeat_with_quarantine_sync(
        self, name: str, ttl_seconds: float, health: int
    ) -> tuple[bool, bytes | None]:
        # One thread hop, and only this node's key (the default reads every record).
        if not self._heartbeat_sync(name, ttl_seconds, health):
            return False, None
        record = _one(self._txn([_range(self._key("quarantine", name))])["responses"][0])
        return True, None if record is None else record.value

    def _heartbeat_sync(self, name: str, ttl_seconds: float, health: int) -> bool:
        # etcd leases have whole-second TTLs; rounding up never declares a live node down.
        ttl = max(1, math.ceil(ttl_seconds))
        alive_key = self._key("alive", name)
        cached = self._node_leases.get(name)
        if cached is None:
            # Another replica may have served this node before: reuse its lease.
            current = _one(self._txn([_range(alive_key)])["responses"][0])
            if current is not None:
                cached = (current.lease, int(json.loads(current.value).get("ttl", 0)))
        lease_id: int | None = None
        # etcd may raise a lease's TTL to its minimum, so the TTL we asked for is
        # compared, not the one a keepalive reports.
        if cached is not None and cached[1] == ttl and self._refresh(cached[0]) > 0:
            lease_id = cached[0]
        for _ in range(2):
            granted = not lease_id
            if not lease_id:
                lease_id = self._grant(ttl)
            now = self._clock.wall()
            alive = {"lease": lease_id, "ttl": ttl, "last_heartbeat": now, "health": health}
            seen = {"last_heartbeat": now, "health": health}
            try:
                response = self._txn(
                    compare=[_compare(self._key("nodes", name), "CREATE", 0, "GREATER")],
                    success=[
                        _put(alive_key, json.dumps(alive).encode(), lease_id),
                        _put(self._key("seen", name), json.dumps(seen).encode()),
                    ],
                )
            except _LeaseNotFound:
                lease_id = None  # lapsed between the keepalive and the put
                continue
            if not response.get("succeeded"):
                self._node_leases.pop(name, None)
                if granted:
                    self._revoke_quietly(lease_id)
                return False
            self._node_leases[name] = (lease_id, ttl)
            return True
        raise StoreError(f"etcd at {self.endpoint}: lease for node {name} keeps expiring")

    def _node(self, record: _KV, alive: _KV | None, seen: _KV | None) -> NodeRecord:
        doc = json.loads(record.value)
        latest = alive or seen
        beat = json.loads(latest.value) if latest is not None else {}
        return NodeRecord(
            name=doc["name"],
            address=doc["address"],
            version=doc.get("version", ""),
            labels=dict(doc.get("labels", {})),
            facts=base64.b64decode(doc.get("facts", "")),
            registered_at=float(doc["registered_at"]),
            last_heartbeat=beat.get("last_heartbeat"),
            health=int(beat.get("health", 0)),
            up=alive is not None,
        )

    async def list_nodes(self) -> list[NodeRecord]:
        return await asyncio.to_thread(self._list_nodes_sync)

    def _list_nodes_sync(self) -> list[NodeRecord]:
        # One transaction: records and liveness from the same revision.
        groups = [self._key("nodes", ""), self._key("alive", ""), self._key("seen", "")]
        responses = self._txn([_range(key, prefix=True) for key in groups])["responses"]
        nodes, alive, seen = (
            {kv.key[len(key) :]: kv for kv in _kvs(response)}
            for key, response in zip(groups, responses, strict=True)
        )
        return [self._node(nodes[n], alive.get(n), seen.get(n)) for n in sorted(nodes)]

    async def get_node(self, name: str) -> NodeRecord | None:
        return await asyncio.to_thread(self._get_node_sync, name)

    def _get_node_sync(self, name: str) -> NodeRecord | None:
        keys = [self._key(group, name) for group in ("nodes", "alive", "seen")]
        record, alive, seen = (_one(r) for r in self._txn([_range(k) for k in keys])["responses"])
        return None if record is None else self._node(record, alive, seen)

    async def remove_node(self, name: str) -> bool:
        return await asyncio.to_thread(self._remove_node_sync, name)

    def _remove_node_sync(self, name: str) -> bool:
        keys = [self._key(group, name) for group in ("nodes", "alive", "seen")]
        response = self._txn([_delete(key) for key in keys])
        self._node_leases.pop(name, None)
        deleted = response["responses"][0].get("response_delete_range", {}).get("deleted", 0)
        return int(deleted) > 0

    async def remove_down_node(self, name: str) -> Removal:
        return await asyncio.to_thread(self._remove_down_node_sync, name)

    def _remove_down_node_sync(self, name: str) -> Removal:
        keys = [self._key(group, name) for group in ("nodes", "alive", "seen")]
        quarantine_key = self._key("quarantine", name)
        response = self._txn(
            compare=[
                _compare(keys[0], "CREATE", 0, "GREATER"),  # registered
                _compare(keys[1], "CREATE", 0),  # no live lease key: down
                _compare(quarantine_key, "CREATE", 0),  # no quarantine record
            ],
            success=[_delete(key) for key in keys],
            failure=[_range(keys[0]), _range(keys[1]), _range(quarantine_key)],
        )
        if response.get("succeeded"):
            self._node_leases.pop(name, None)
            return Removal.REMOVED
        record, alive, quarantine = (_one(r) for r in response["responses"])
        if record is None:
            return Removal.UNKNOWN
        if alive is not None:
            return Removal.UP
        if quarantine is not None:
            return Removal.QUARANTINED
        raise StoreError(f"removing {name}: the transaction failed but no condition did")

    # -- leader election -----------------------------------------------------

    def _leader_record(self, kv: _KV) -> LeaderRecord:
        doc = json.loads(kv.value)
        return LeaderRecord(
            name=doc["name"],
            address=doc["address"],
            since=float(doc["since"]),
            revision=kv.create_revision,
            lease_ttl=int(doc["lease_ttl"]),
        )

    async def campaign(self, name: str, address: str, ttl_seconds: int) -> LeaderTerm | None:
        return await asyncio.to_thread(self._campaign_sync, name, address, ttl_seconds)

    def _campaign_sync(self, name: str, address: str, ttl_seconds: int) -> LeaderTerm | None:
        key = self._key("leader")
        if _one(self._txn([_range(key)])["responses"][0]) is not None:
            return None  # someone leads: no need to grant and revoke a lease
        lease_id = self._grant(ttl_seconds)
        since = self._clock.wall()
        value = {"name": name, "address": address, "since": since, "lease_ttl": ttl_seconds}
        try:
            response = self._txn(
                compare=[_compare(key, "CREATE", 0)],
                success=[_put(key, json.dumps(value).encode(), lease_id)],
                failure=[_range(key)],
            )
        except StoreError:
            self._revoke_quietly(lease_id)
            raise
        if response.get("succeeded"):
            # The put created the key, so its create_revision is this txn's revision.
            revision = int(response["header"]["revision"])
            record = LeaderRecord(name, address, since, revision, ttl_seconds)
            return LeaderTerm(record=record, lease_id=lease_id)
        current = _one(response["responses"][0])
        # A retried request whose first attempt was applied finds our own key.
        if current is not None and current.lease == lease_id:
            return LeaderTerm(record=self._leader_record(current), lease_id=lease_id)
        self._revoke_quietly(lease_id)
        return None

    async def keep_leadership(self, term: LeaderTerm) -> bool:
        return await asyncio.to_thread(self._keep_sync, term)

    def _keep_sync(self, term: LeaderTerm) -> bool:
        if self._refresh(term.lease_id) <= 0:
            return False
        current = _one(self._txn([_range(self._key("leader"))])["responses"][0])
        return (
            current is not None
            and current.create_revision == term.record.revision
            and current.lease == term.lease_id
        )

    async def resign(self, term: LeaderTerm) -> None:
        await asyncio.to_thread(self._resign_sync, term)

    def _resign_sync(self, term: LeaderTerm) -> None:
        key = self._key("leader")
        self._txn(compare=[_compare(key, "CREATE", term.record.revision)], success=[_delete(key)])
        self._revoke_quietly(term.lease_id)

    async def get_leader(self) -> LeaderRecord | None:
        return await asyncio.to_thread(self._get_leader_sync)

    def _get_leader_sync(self) -> LeaderRecord | None:
        current = _one(self._txn([_range(self._key("leader"))])["responses"][0])
        return None if current is None else self._leader_record(current)

    # -- quarantine state ----------------------------------------------------

    async def put_quarantine(
        self,
        node: str,
        record: bytes,
        history: bytes,
        fence: LeaderTerm,
        *,
        expected: ExpectedRecord = ANY_RECORD,
    ) -> int:
        write = _put(self._key("quarantine", node), record)
        return await asyncio.to_thread(self._fenced_write, node, write, history, fence, expected)

    async def delete_quarantine(
        self,
        node: str,
        history: bytes,
        fence: LeaderTerm,
        *,
        expected: ExpectedRecord = ANY_RECORD,
    ) -> int:
        write = _delete(self._key("quarantine", node))
        return await asyncio.to_thread(self._fenced_write, node, write, history, fence, expected)

    def _fenced_write(
        self, node: str, write: Op, history: bytes, fence: LeaderTerm, expected: ExpectedRecord
    ) -> int:
        """Apply ``write`` and append one history entry in one fenced transaction,
        conditional on the node's record being ``expected``."""
        leader_key, counter_key = self._key("leader"), self._key("history-seq")
        record_key = self._key("quarantine", node)
        # The write id makes the append safe to repeat after a timeout: a retry
        # that finds its own entry under the sequence reports it, not a duplicate.
        write_id = uuid.uuid4().hex
        entry = json.dumps({"node": node, "payload": _b64(history), "write": write_id}).encode()
        counter = _one(self._txn([_range(counter_key)])["responses"][0])
        for _ in range(_APPEND_ATTEMPTS):
            sequence = int(counter.value) + 1 if counter else 1
            history_key = self._key("history", f"{sequence:020d}")
            response = self._txn(
                compare=[
                    _compare(leader_key, "CREATE", fence.record.revision),
                    _compare(counter_key, "MOD", counter.mod_revision if counter else 0),
                    *_expect(record_key, expected),
                ],
                success=[
                    write,
                    _put(counter_key, str(sequence).encode()),
                    _put(history_key, entry),
                ],
                failure=[
                    _range(leader_key),
                    _range(counter_key),
                    _range(history_key),
                    _range(record_key),
                ],
            )
            if response.get("succeeded"):
                return sequence
            leader, counter, existing, record = (_one(r) for r in response["responses"])
            if existing is not None and json.loads(existing.value).get("write") == write_id:
                return sequence
            if leader is None or leader.create_revision != fence.record.revision:
                current = leader.create_revision if leader else None
                raise FencingError(
                    f"term {fence.record.revision} of {fence.record.name} is not the current "
                    f"leader term (current: {current})"
                )
            check_expected(node, record.value if record else None, expected)
        raise StoreError(f"etcd at {self.endpoint}: history sequence kept changing; retry")

    async def annotate_history(
        self, sequence: int, details: bytes, fence: LeaderTerm, *, expected: bytes | None = None
    ) -> bool:
        return await asyncio.to_thread(self._annotate_sync, sequence, details, fence, expected)

    async def fill_history_details(self, sequence: int, expected: bytes, details: bytes) -> bool:
        return await asyncio.to_thread(self._annotate_sync, sequence, details, None, expected)

    def _annotate_sync(
        self, sequence: int, details: bytes, fence: LeaderTerm | None, expected: bytes | None
    ) -> bool:
        leader_key = self._key("leader")
        history_key = self._key("history", f"{sequence:020d}")
        for _ in range(_APPEND_ATTEMPTS):
            found = _one(self._txn([_range(history_key)])["responses"][0])
            if found is None:
                raise StoreError(f"etcd at {self.endpoint}: no history entry {sequence}")
            doc = json.loads(found.value)
            if expected is not None and base64.b64decode(doc.get("details", "")) != expected:
                return False
            doc["details"] = _b64(details)
            compare = [_compare(history_key, "MOD", found.mod_revision)]
            if fence is not None:
                compare.append(_compare(leader_key, "CREATE", fence.record.revision))
            response = self._txn(
                compare=compare,
                success=[_put(history_key, json.dumps(doc).encode())],
                failure=[_range(leader_key)],
            )
            if response.get("succeeded"):
                return True
            if fence is None:
                continue  # the entry changed since the read: read it again
            leader = _one(response["responses"][0])
            if leader is None or leader.create_revision != fence.record.revision:
                current = leader.create_revision if leader else None
                raise FencingError(
                    f"term {fence.record.revision} of {fence.record.name} is not the current "
                    f"leader term (current: {current})"
                )
        raise StoreError(f"etcd at {self.endpoint}: history entry {sequence} kept changing")

    async def get_quarantines(self) -> dict[str, bytes]:
        return await asyncio.to_thread(self._get_quarantines_sync)

    def _get_quarantines_sync(self) -> dict[str, bytes]:
        base = self._key("quarantine", "")
        response = self._txn([_range(base, prefix=True)])["responses"][0]
        return {kv.key[len(base) :]: kv.value for kv in _kvs(response)}

    async def get_history(self, node: str | None = None) -> list[HistoryEntry]:
        return await asyncio.to_thread(self._get_history_sync, node)

    def _get_history_sync(self, node: str | None) -> list[HistoryEntry]:
        base = self._key("history", "")
        response = self._txn([_range(base, prefix=True)])["responses"][0]
        entries = []
        for kv in _kvs(response):  # etcd returns ranges in key order = sequence order
            doc = json.loads(kv.value)
            if node is None or doc["node"] == node:
                entries.append(
                    HistoryEntry(
                        int(kv.key[len(base) :]),
                        base64.b64decode(doc["payload"]),
                        base64.b64decode(doc.get("details", "")),
                    )
                )
        return entries

    # -- events and settings -------------------------------------------------
    # An event's sequence is the etcd revision that created its key: globally
    # increasing without a counter to contend on, and directly usable as the
    # range filter min_create_revision.

    async def append_event(self, payload: bytes, retain: int) -> int:
        return await asyncio.to_thread(self._append_event_sync, payload, retain)

    def _append_event_sync(self, payload: bytes, retain: int) -> int:
        key = self._key("events", uuid.uuid4().hex)
        response = self._txn([_put(key, payload)])
        sequence = int(response["header"]["revision"])
        self._appended_events += 1
        if self._appended_events % _EVENT_TRIM_EVERY == 0:
            self._trim_events(retain)
        return sequence

    def _trim_events(self, retain: int) -> None:
        base = self._key("events", "")
        request = _range(base, prefix=True)
        request["request_range"].update(
            {"keys_only": True, "sort_order": "ASCEND", "sort_target": "CREATE"}
        )
        kvs = _kvs(self._txn([request])["responses"][0])
        excess = kvs[: max(0, len(kvs) - retain)]
        for start in range(0, len(excess), 64):
            self._txn([_delete(kv.key) for kv in excess[start : start + 64]])

    async def list_events(self, after: int, limit: int) -> list[HistoryEntry]:
        return await asyncio.to_thread(self._list_events_sync, after, limit)

    def _list_events_sync(self, after: int, limit: int) -> list[HistoryEntry]:
        request = _range(self._key("events", ""), prefix=True)
        request["request_range"].update(
            {
                "sort_order": "ASCEND",
                "sort_target": "CREATE",
                "min_create_revision": after + 1,
                "limit": limit,
            }
        )
        kvs = _kvs(self._txn([request])["responses"][0])
        return [HistoryEntry(kv.create_revision, kv.value) for kv in kvs]

    async def get_setting(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get_setting_sync, key)

    def _get_setting_sync(self, key: str) -> bytes | None:
        found = _one(self._txn([_range(self._key("settings", key))])["responses"][0])
        return found.value if found else None

    async def put_setting(self, key: str, value: bytes, fence: LeaderTerm) -> None:
        await asyncio.to_thread(self._put_setting_sync, key, value, fence)

    def _put_setting_sync(self, key: str, value: bytes, fence: LeaderTerm) -> None:
        leader_key = self._key("leader")
        response = self._txn(
            compare=[_compare(leader_key, "CREATE", fence.record.revision)],
            success=[_put(self._key("settings", key), value)],
            failure=[_range(leader_key)],
        )
        if not response.get("succeeded"):
            leader = _one(response["responses"][0])
            current = leader.create_revision if leader else None
            raise FencingError(
                f"term {fence.record.revision} of {fence.record.name} is not the current "
                f"leader term (current: {current})"
            )
