"""Single-file store for one controller: stdlib sqlite3 in WAL mode, locked with flock.

Only one controller may use a file: ``open()`` takes an exclusive, non-blocking
``flock`` on ``<path>.lock`` (which records the holder's pid) and raises
StoreLocked when another process holds it. The lock is released by the kernel
when the holder dies, so a crashed controller never leaves the file stuck.

Leadership keeps the etcd contract (a lease that lapses, a second candidate that
loses while the first holds) although one controller always wins in practice.
Fencing tokens come from a revision counter kept in the file, so terms won after
a restart are still greater than every earlier term. Lease expiry uses wall
time, since expiries are written to the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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
    StoreLocked,
    StoreUnavailable,
    check_expected,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    labels TEXT NOT NULL,
    facts BLOB NOT NULL,
    registered_at REAL NOT NULL,
    last_heartbeat REAL,
    health INTEGER NOT NULL DEFAULT 0,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    since REAL NOT NULL,
    revision INTEGER NOT NULL,
    lease_id INTEGER NOT NULL,
    lease_ttl INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (node TEXT PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    payload BLOB NOT NULL,
    details BLOB NOT NULL DEFAULT x''
);
"""


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a file written by an older novaops up to the current schema."""
    columns = {str(row[1]) for row in db.execute("PRAGMA table_info(history)")}
    if "details" not in columns:
        db.execute("ALTER TABLE history ADD COLUMN details BLOB NOT NULL DEFAULT x''")


class _LeaseFirstLock:
    """A mutex where a waiter holding it ``first`` goes before the others.

    threading.Lock is not fair: a thread that releases it and asks again at once
    (the registry worker, call after call) usually wins, and the lease's thread
    could wait out a whole burst."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._held = False
        self._first_waiting = 0

    @contextlib.contextmanager
    def hold(self, *, first: bool = False) -> Iterator[None]:
        with self._cond:
            if first:
                self._first_waiting += 1
            try:
                while self._held or (not first and self._first_waiting):
                    self._cond.wait()
            finally:
                if first:
                    self._first_waiting -= 1
                    if self._first_waiting == 0:
                        # Waiters held back for us look again (also if we never
                        # take it: an exception while waiting).
                        self._cond.notify_all()
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()


def _workers() -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
    """The registry's and the lease's worker threads (see EmbeddedStore)."""
    return (
        ThreadPoolExecutor(1, thread_name_prefix="embedded-store"),
        ThreadPoolExecutor(1, thread_name_prefix="embedded-store-lease"),
    )


class EmbeddedStore(Store):
    """The store in one sqlite file, used by exactly one controller process at a time."""

    kind = "embedded"

    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        self._path = Path(path)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        # One connection shared by two worker threads; sqlite3 objects are not safe
        # for concurrent use, and the calls are short, so they are serialized.
        self._mutex = _LeaseFirstLock()
        # Registry traffic (a call per heartbeat) queues on one thread; the
        # leadership lease has its own and goes first at the mutex, so a keepalive
        # waits for at most the call in progress, never behind a burst of
        # heartbeats (measured at 500 nodes on a loaded controller: heartbeat calls
        # queued 1.7 s, long enough for keepalives to miss the lease).
        self._worker, self._lease_worker = _workers()

    @property
    def endpoint(self) -> str:
        return str(self._path)

    @property
    def lock_path(self) -> Path:
        """The flock file next to the database: ``<path>.lock``."""
        return self._path.with_name(self._path.name + ".lock")

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return
        await asyncio.get_running_loop().run_in_executor(self._worker, self._open_sync)

    def _open_sync(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreUnavailable(
                f"embedded store {self._path}: cannot open {self.lock_path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StoreLocked(
                f"embedded store {self._path} is in use by another controller "
                f"(pid {holder or 'unknown'}); run one controller per file or use etcd for HA"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            db = sqlite3.connect(
                self._path, timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            os.close(fd)
            raise StoreUnavailable(f"embedded store {self._path}: {exc}") from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a power cut may lose the last commits but never
            # corrupts the file; FULL would fsync every heartbeat.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            _migrate(db)
            # We hold the flock, so any leader row was left by a controller that
            # died: its term is over. Dropping it lets us win at once.
            db.execute("DELETE FROM leader")
        except sqlite3.Error as exc:
            db.close()
            os.close(fd)
            raise StoreUnavailable(f"embedded store {self._path}: {exc}") from None
        self._db, self._lock_fd = db, fd

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker, self._close_sync)
        # Let the idle threads go; a later open() gets fresh ones (started lazily).
        for worker in (self._worker, self._lease_worker):
            worker.shutdown(wait=False)
        self._worker, self._lease_worker = _workers()

    def _close_sync(self) -> None:
        with self._mutex.hold():
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("DELETE FROM leader")
                self._db.close()
                self._db = None
            if self._lock_fd is not None:
                # Closing the descriptor releases the flock.
                os.close(self._lock_fd)
                self._lock_fd = None

    async def _run(self, operation: Callable[[sqlite3.Connection], T], *, lease: bool = False) -> T:
        """Run ``operation`` in one transaction on the worker thread (the lease's
        own thread when ``lease``)."""

        def call() -> T:
            with self._mutex.hold(first=lease):
                if self._db is None:
                    raise StoreError(f"embedded store {self._path} is not open")
                db = self._db
                try:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        result = operation(db)
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
                    db.execute("COMMIT")
                except sqlite3.Error as exc:
                    raise StoreError(f"embedded store {self._path}: {exc}") from None
                return result

        worker = self._lease_worker if lease else self._worker
        return await asyncio.get_running_loop().run_in_executor(worker, call)

    # -- node registry -------------------------------------------------------

    async def register_node(self, registration: NodeRegistration) -> None:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO nodes (name, address, version, labels, facts, registered_at)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET address = excluded.address,"
                " version = excluded.version, labels = excluded.labels, facts = excluded.facts",
                (
                    registration.name,
                    registration.address,
                    registration.version,
                    json.dumps(registration.labels, sort_keys=True),
                    registration.facts,
                    now,
                ),
            )

        await self._run(op)

    async def heartbeat(self, name: str, ttl_seconds: float, health: int) -> bool:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> bool:
            return self._renew(db, name, now, ttl_seconds, health)

        return await self._run(op)

    @staticmethod
    def _renew(
        db: sqlite3.Connection, name: str, now: float, ttl_seconds: float, health: int
    ) -> bool:
        cursor = db.execute(
            "UPDATE nodes SET last_heartbeat = ?, health = ?, expires_at = ? WHERE name = ?",
            (now, health, now + ttl_seconds, name),
        )
        return cursor.rowcount > 0

    async def heartbeat_with_quarantine(
        self, name: str, ttl_seconds: float, health: int
    ) -> tuple[bool, bytes | None]:
        # One transaction (the default is two calls, each through the worker).
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> tuple[bool, bytes | None]:
            if not self._renew(db, name, now, ttl_seconds, health):
                return False, None
            row = db.execute("SELECT record FROM quarantine WHERE node = ?", (name,)).fetchone()
            return True, None if row is None else bytes(row[0])

        return await self._run(op)

    @staticmethod
    def _node(row: tuple[Any, ...], now: float) -> NodeRecord:
        name, address, version, labels, facts, registered, last_hb, health, expires = row
        return NodeRecord(
            name=name,
            address=address,
            version=version,
            labels=json.loads(labels),
            facts=bytes(facts),
            registered_at=float(registered),
            last_heartbeat=None if last_hb is None else float(last_hb),
            health=int(health),
            up=expires is not None and now < float(expires),
        )

    _NODE_COLUMNS = (
        "name, address, version, labels, facts, registered_at, last_heartbeat, health, expires_at"
    )

    async def list_nodes(self) -> list[NodeRecord]:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> list[NodeRecord]:
            rows = db.execute(f"SELECT {self._NODE_COLUMNS} FROM nodes ORDER BY name").fetchall()
            return [self._node(row, now) for row in rows]

        return await self._run(op)

    async def get_node(self, name: str) -> NodeRecord | None:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> NodeRecord | None:
            row = db.execute(
                f"SELECT {self._NODE_COLUMNS} FROM nodes WHERE name = ?", (name,)
            ).fetchone()
            return None if row is None else self._node(row, now)

        return await self._run(op)

    async def remove_node(self, name: str) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM nodes WHERE name = ?", (name,)).rowcount > 0

        return await self._run(op)

    async def remove_down_node(self, name: str) -> Removal:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> Removal:  # one transaction: check, then delete
            row = db.execute("SELECT expires_at FROM nodes WHERE name = ?", (name,)).fetchone()
            if row is None:
                return Removal.UNKNOWN
            if row[0] is not None and now < float(row[0]):
                return Removal.UP
            if db.execute("SELECT 1 FROM quarantine WHERE node = ?", (name,)).fetchone():
                return Removal.QUARANTINED
            db.execute("DELETE FROM nodes WHERE name = ?", (name,))
            return Removal.REMOVED

        return await self._run(op)

    # -- leader election -----------------------------------------------------

    @staticmethod
    def _leader_row(db: sqlite3.Connection, now: float) -> tuple[LeaderRecord, int] | None:
        row = db.execute(
            "SELECT name, address, since, revision, lease_id, lease_ttl, expires_at FROM leader"
        ).fetchone()
        if row is None:
            return None
        name, address, since, revision, lease_id, lease_ttl, expires_at = row
        if now >= expires_at:
            db.execute("DELETE FROM leader")  # the lease lapsed
            return None
        return LeaderRecord(name, address, since, revision, lease_ttl), lease_id

    @staticmethod
    def _next_revision(db: sqlite3.Connection) -> int:
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('revision', 1)"
            " ON CONFLICT (key) DO UPDATE SET value = value + 1"
        )
        row = db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0])

    async def campaign(self, name: str, address: str, ttl_seconds: int) -> LeaderTerm | None:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> LeaderTerm | None:
            if self._leader_row(db, now) is not None:
                return None
            revision = self._next_revision(db)
            db.execute(
                "INSERT INTO leader (id, name, address, since, revision, lease_id, lease_ttl,"
                " expires_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                (name, address, now, revision, revision, ttl_seconds, now + ttl_seconds),
            )
            record = LeaderRecord(name, address, now, revision, ttl_seconds)
            return LeaderTerm(record=record, lease_id=revision)

        return await self._run(op, lease=True)

    @classmethod
    def _holds(cls, db: sqlite3.Connection, term: LeaderTerm, now: float) -> bool:
        current = cls._leader_row(db, now)
        return (
            current is not None
            and current[0].revision == term.record.revision
            and current[1] == term.lease_id
        )

    async def keep_leadership(self, term: LeaderTerm) -> bool:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> bool:
            if not self._holds(db, term, now):
                return False
            db.execute("UPDATE leader SET expires_at = ?", (now + term.record.lease_ttl,))
            return True

        return await self._run(op, lease=True)

    async def resign(self, term: LeaderTerm) -> None:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> None:
            if self._holds(db, term, now):
                db.execute("DELETE FROM leader")

        await self._run(op, lease=True)

    async def get_leader(self) -> LeaderRecord | None:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> LeaderRecord | None:
            current = self._leader_row(db, now)
            return current[0] if current else None

        return await self._run(op)

    # -- quarantine state ----------------------------------------------------

    def _fence(self, db: sqlite3.Connection, fence: LeaderTerm, now: float) -> None:
        current = self._leader_row(db, now)
        if current is None or current[0].revision != fence.record.revision:
            raise FencingError(
                f"term {fence.record.revision} of {fence.record.name} is not the current "
                f"leader term (current: {current[0].revision if current else None})"
            )

    @staticmethod
    def _append(db: sqlite3.Connection, node: str, history: bytes) -> int:
        cursor = db.execute("INSERT INTO history (node, payload) VALUES (?, ?)", (node, history))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @staticmethod
    def _check_expected(db: sqlite3.Connection, node: str, expected: ExpectedRecord) -> None:
        if expected is ANY_RECORD:
            return
        row = db.execute("SELECT record FROM quarantine WHERE node = ?", (node,)).fetchone()
        check_expected(node, bytes(row[0]) if row else None, expected)

    async def put_quarantine(
        self,
        node: str,
        record: bytes,
        history: bytes,
        fence: LeaderTerm,
        *,
        expected: ExpectedRecord = ANY_RECORD,
    ) -> int:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> int:
            self._fence(db, fence, now)
            self._check_expected(db, node, expected)
            db.execute(
                "INSERT INTO quarantine (node, record) VALUES (?, ?)"
                " ON CONFLICT (node) DO UPDATE SET record = excluded.record",
                (node, record),
            )
            return self._append(db, node, history)

        return await self._run(op)

    async def delete_quarantine(
        self,
        node: str,
        history: bytes,
        fence: LeaderTerm,
        *,
        expected: ExpectedRecord = ANY_RECORD,
    ) -> int:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> int:
            self._fence(db, fence, now)
            self._check_expected(db, node, expected)
            db.execute("DELETE FROM quarantine WHERE node = ?", (node,))
            return self._append(db, node, history)

        return await self._run(op)

    async def annotate_history(
        self, sequence: int, details: bytes, fence: LeaderTerm, *, expected: bytes | None = None
    ) -> bool:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> bool:
            self._fence(db, fence, now)
            return self._set_details(db, sequence, details, expected)

        return await self._run(op)

    async def fill_history_details(self, sequence: int, expected: bytes, details: bytes) -> bool:
        return await self._run(lambda db: self._set_details(db, sequence, details, expected))

    def _set_details(
        self, db: sqlite3.Connection, sequence: int, details: bytes, expected: bytes | None
    ) -> bool:
        row = db.execute("SELECT details FROM history WHERE sequence = ?", (sequence,)).fetchone()
        if row is None:
            raise StoreError(f"embedded store {self._path}: no history entry {sequence}")
        if expected is not None and bytes(row[0]) != expected:
            return False
        db.execute("UPDATE history SET details = ? WHERE sequence = ?", (details, sequence))
        return True

    async def get_quarantines(self) -> dict[str, bytes]:
        def op(db: sqlite3.Connection) -> dict[str, bytes]:
            rows = db.execute("SELECT node, record FROM quarantine ORDER BY node").fetchall()
            return {str(node): bytes(record) for node, record in rows}

        return await self._run(op)

    async def get_history(self, node: str | None = None) -> list[HistoryEntry]:
        def op(db: sqlite3.Connection) -> list[HistoryEntry]:
            if node is None:
                rows = db.execute(
                    "SELECT sequence, payload, details FROM history ORDER BY sequence"
                )
            else:
                rows = db.execute(
                    "SELECT sequence, payload, details FROM history WHERE node = ?"
                    " ORDER BY sequence",
                    (node,),
                )
            return [
                HistoryEntry(int(seq), bytes(payload), bytes(details))
                for seq, payload, details in rows.fetchall()
            ]

        return await self._run(op)

    # -- events and settings -------------------------------------------------

    async def append_event(self, payload: bytes, retain: int) -> int:
        def op(db: sqlite3.Connection) -> int:
            cursor = db.execute("INSERT INTO events (payload) VALUES (?)", (payload,))
            assert cursor.lastrowid is not None
            db.execute("DELETE FROM events WHERE sequence <= ?", (cursor.lastrowid - retain,))
            return cursor.lastrowid

        return await self._run(op)

    async def list_events(self, after: int, limit: int) -> list[HistoryEntry]:
        def op(db: sqlite3.Connection) -> list[HistoryEntry]:
            rows = db.execute(
                "SELECT sequence, payload FROM events WHERE sequence > ? ORDER BY sequence LIMIT ?",
                (after, limit),
            ).fetchall()
            return [HistoryEntry(int(seq), bytes(payload)) for seq, payload in rows]

        return await self._run(op)

    async def get_setting(self, key: str) -> bytes | None:
        def op(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            return bytes(row[0]) if row else None

        return await self._run(op)

    async def put_setting(self, key: str, value: bytes, fence: LeaderTerm) -> None:
        now = self._clock.wall()

        def op(db: sqlite3.Connection) -> None:
            self._fence(db, fence, now)
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

        await self._run(op)


def _read_pid(fd: int) -> int | None:
    """The pid the lock holder wrote, or None if it has not written it yet."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
