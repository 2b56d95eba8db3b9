"""One contract for every store: memory, embedded (sqlite) and etcd (a real etcd).

Then what only one backend has: the embedded file lock and restart, and etcd's
endpoint failover and behaviour when a cluster member dies.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

import novaops.devcluster.etcd as devcluster_etcd
from novaops.controller.clock import FakeClock
from novaops.controller.store.base import (
    FencingError,
    HistoryEntry,
    NodeRegistration,
    QuarantineConflict,
    Removal,
    StoreError,
    StoreLocked,
    StoreUnavailable,
)
from novaops.controller.store.embedded import EmbeddedStore
from novaops.controller.store.etcd import EtcdStore
from novaops.devcluster.etcd import EtcdCluster, EtcdError, find_etcd_binary

from .conftest import LEASE_TTL, Backend, etcd_available

HEALTHY = 1
UNHEALTHY = 2


def registration(name: str, address: str = "10.0.0.1:7501", **extra: object) -> NodeRegistration:
    return NodeRegistration(name=name, address=address, **extra)  # type: ignore[arg-type]


# -- node registry -------------------------------------------------------------


async def test_register_is_idempotent_and_updates(backend: Backend) -> None:
    store = backend.store
    first = NodeRegistration("node-1", "10.0.0.1:7501", "0.1", {"rack": "r1"}, b"\x00facts")
    await store.register_node(first)
    await store.register_node(first)
    created = await store.get_node("node-1")
    assert created is not None
    assert (created.address, created.version, created.labels, created.facts) == (
        "10.0.0.1:7501",
        "0.1",
        {"rack": "r1"},
        b"\x00facts",
    )
    assert (created.up, created.last_heartbeat) == (False, None)

    await backend.elapse(0.01)
    await store.register_node(NodeRegistration("node-1", "10.0.0.9:7501", "0.2", {}, b""))
    updated = await store.get_node("node-1")
    assert updated is not None
    assert (updated.address, updated.version, updated.labels) == ("10.0.0.9:7501", "0.2", {})
    assert updated.registered_at == created.registered_at
    assert [n.name for n in await store.list_nodes()] == ["node-1"]


async def test_heartbeat_of_unknown_node_is_refused(backend: Backend) -> None:
    assert await backend.store.heartbeat("ghost", LEASE_TTL, HEALTHY) is False
    assert await backend.store.get_node("ghost") is None
    assert await backend.store.list_nodes() == []


async def test_node_is_up_after_heartbeat_and_down_after_its_ttl(backend: Backend) -> None:
    store = backend.store
    await store.register_node(registration("node-1"))
    assert await store.heartbeat("node-1", LEASE_TTL, UNHEALTHY) is True
    node = await store.get_node("node-1")
    assert node is not None
    assert (node.up, node.health) == (True, UNHEALTHY)
    assert node.last_heartbeat is not None

    async def down() -> bool:
        current = await store.get_node("node-1")
        return current is not None and not current.up

    await backend.until(down, LEASE_TTL + 0.01, "node-1 should be down after its TTL")
    node = await store.get_node("node-1")
    assert node is not None
    # A down node still shows when it was last heard from and what it said.
    assert node.last_heartbeat is not None
    assert node.health == UNHEALTHY

    assert await store.heartbeat("node-1", LEASE_TTL, HEALTHY) is True
    node = await store.get_node("node-1")
    assert node is not None
    assert (node.up, node.health) == (True, HEALTHY)


async def test_heartbeats_keep_a_node_up(backend: Backend) -> None:
    store = backend.store
    await store.register_node(registration("node-1"))
    for _ in range(4):
        assert await store.heartbeat("node-1", LEASE_TTL, HEALTHY)
        await backend.elapse(LEASE_TTL * 0.4)
    node = await store.get_node("node-1")
    assert node is not None
    assert node.up


async def test_list_is_sorted_and_remove_forgets(backend: Backend) -> None:
    store = backend.store
    for name in ("node-c", "node-a", "node-b"):
        await store.register_node(registration(name))
    await store.heartbeat("node-b", LEASE_TTL, HEALTHY)
    nodes = await store.list_nodes()
    assert [n.name for n in nodes] == ["node-a", "node-b", "node-c"]
    assert [n.up for n in nodes] == [False, True, False]

    assert await store.remove_node("node-b") is True
    assert await store.remove_node("node-b") is False
    assert await store.get_node("node-b") is None
    assert await store.heartbeat("node-b", LEASE_TTL, HEALTHY) is False
    assert [n.name for n in await store.list_nodes()] == ["node-a", "node-c"]


# -- leader election -------------------------------------------------------------


async def test_campaign_keep_resign(backend: Backend) -> None:
    store, peer = backend.store, await backend.peer()
    assert await store.get_leader() is None
    term = await store.campaign("ctl-0", "127.0.0.1:7400", 5)
    assert term is not None
    assert (term.record.name, term.record.address, term.record.lease_ttl) == (
        "ctl-0",
        "127.0.0.1:7400",
        5,
    )
    assert await peer.get_leader() == term.record
    assert await store.keep_leadership(term) is True

    assert await peer.campaign("ctl-1", "127.0.0.1:7401", 5) is None
    assert await store.get_leader() == term.record

    await store.resign(term)
    await store.resign(term)  # idempotent
    assert await peer.get_leader() is None
    assert await store.keep_leadership(term) is False

    second = await peer.campaign("ctl-1", "127.0.0.1:7401", 5)
    assert second is not None
    assert second.record.revision > term.record.revision
    await store.resign(term)  # a stale resign leaves the new leader alone
    assert await store.get_leader() == second.record
    await peer.resign(second)


async def test_keepalive_holds_leadership_past_the_ttl(backend: Backend) -> None:
    store, peer = backend.store, await backend.peer()
    term = await store.campaign("ctl-0", "a:1", LEASE_TTL)
    assert term is not None
    for _ in range(4):
        await backend.elapse(LEASE_TTL * 0.4)
        assert await store.keep_leadership(term) is True
    assert await peer.campaign("ctl-1", "b:1", LEASE_TTL) is None
    leader = await peer.get_leader()
    assert leader is not None
    assert leader.revision == term.record.revision


async def test_leadership_is_lost_when_the_lease_lapses(backend: Backend) -> None:
    store, peer = backend.store, await backend.peer()
    term = await store.campaign("ctl-0", "a:1", LEASE_TTL)
    assert term is not None

    async def no_leader() -> bool:
        return await peer.get_leader() is None

    await backend.until(no_leader, LEASE_TTL + 0.01, "the lapsed term should be gone")
    assert await store.keep_leadership(term) is False

    successor = await peer.campaign("ctl-1", "b:1", LEASE_TTL)
    assert successor is not None
    assert successor.record.revision > term.record.revision
    with pytest.raises(FencingError):
        await store.put_quarantine("node-1", b"q", b"h", term)
    assert await store.put_quarantine("node-1", b"q", b"h", successor) > 0


# -- quarantine state ------------------------------------------------------------


async def test_quarantine_is_fenced_by_the_current_term(backend: Backend) -> None:
    store, peer = backend.store, await backend.peer()
    old = await store.campaign("ctl-0", "a:1", 5)
    assert old is not None
    assert await store.put_quarantine("node-1", b"record-1", b"hist-1", old) > 0
    await store.resign(old)
    with pytest.raises(FencingError, match="not the current leader term"):
        await store.put_quarantine("node-2", b"record-2", b"hist-2", old)

    new = await peer.campaign("ctl-1", "b:1", 5)
    assert new is not None
    with pytest.raises(FencingError):
        await store.put_quarantine("node-2", b"record-2", b"hist-2", old)
    with pytest.raises(FencingError):
        await store.delete_quarantine("node-1", b"hist-3", old)
    # A refused write changes nothing, neither the record nor the history.
    assert await peer.get_quarantines() == {"node-1": b"record-1"}
    assert [e.payload for e in await peer.get_history()] == [b"hist-1"]

    assert await peer.delete_quarantine("node-1", b"hist-4", new) > 0
    assert await peer.get_quarantines() == {}
    await peer.resign(new)


async def test_history_is_ordered_and_filtered_by_node(backend: Backend) -> None:
    store = backend.store
    term = await store.campaign("ctl-0", "a:1", 5)
    assert term is not None
    sequences = [
        await store.put_quarantine("node-a", b"qa", b"a-in", term),
        await store.put_quarantine("node-b", b"qb", b"b-in", term),
        await store.put_quarantine("node-a", b"qa2", b"a-again", term),
        await store.delete_quarantine("node-a", b"a-out", term),
    ]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 4

    history = await store.get_history()
    assert history == [
        HistoryEntry(sequences[0], b"a-in"),
        HistoryEntry(sequences[1], b"b-in"),
        HistoryEntry(sequences[2], b"a-again"),
        HistoryEntry(sequences[3], b"a-out"),
    ]
    assert [e.payload for e in await store.get_history("node-a")] == [
        b"a-in",
        b"a-again",
        b"a-out",
    ]
    assert [e.sequence for e in await store.get_history("node-b")] == [sequences[1]]
    assert await store.get_history("node-z") == []
    assert await store.get_quarantines() == {"node-b": b"qb"}


async def test_conditional_quarantine_writes_only_over_the_expected_record(
    backend: Backend,
) -> None:
    store, peer = backend.store, await backend.peer()
    term = await store.campaign("ctl-0", "a:1", 5)
    assert term is not None
    # "Not quarantined" expected: the first writer wins, the second conflicts.
    first = await store.put_quarantine("node-1", b"manual", b"h-manual", term, expected=None)
    with pytest.raises(QuarantineConflict, match="node-1"):
        await peer.put_quarantine("node-1", b"auto", b"h-auto", term, expected=None)
    # Over a record: only over exactly the bytes that were read.
    with pytest.raises(QuarantineConflict):
        await peer.put_quarantine("node-1", b"auto", b"h-auto", term, expected=b"other")
    with pytest.raises(QuarantineConflict):
        await peer.delete_quarantine("node-1", b"h-out", term, expected=b"auto")
    # A refused write changes neither the record nor the history.
    assert await peer.get_quarantines() == {"node-1": b"manual"}
    assert [e.sequence for e in await peer.get_history()] == [first]
    converted = await peer.put_quarantine(
        "node-1", b"manual-2", b"h-convert", term, expected=b"manual"
    )
    assert converted > first
    assert await peer.delete_quarantine("node-1", b"h-out", term, expected=b"manual-2") > 0
    assert await peer.get_quarantines() == {}
    with pytest.raises(QuarantineConflict):
        await peer.delete_quarantine("node-1", b"h-again", term, expected=b"manual-2")
    # Fencing is checked before the record: a deposed leader gets FencingError.
    await store.resign(term)
    with pytest.raises(FencingError):
        await store.put_quarantine("node-1", b"x", b"x", term, expected=b"not-it")


async def test_history_details_are_set_after_the_append(backend: Backend) -> None:
    store, peer = backend.store, await backend.peer()
    term = await store.campaign("ctl-0", "a:1", 5)
    assert term is not None
    first = await store.put_quarantine("node-1", b"q", b"hist-in", term)
    second = await store.delete_quarantine("node-1", b"hist-out", term)
    assert [e.details for e in await peer.get_history()] == [b"", b""]
    await store.annotate_history(first, b"hooks: ok", term)
    await store.annotate_history(first, b"hooks: failed", term)  # the latest wins
    assert await peer.get_history("node-1") == [
        HistoryEntry(first, b"hist-in", b"hooks: failed"),
        HistoryEntry(second, b"hist-out"),
    ]
    with pytest.raises(StoreError, match="no history entry"):
        await store.annotate_history(second + 1000, b"x", term)
    await store.resign(term)
    with pytest.raises(FencingError):
        await store.annotate_history(second, b"late", term)
    assert (await peer.get_history())[1].details == b""


async def test_history_details_fill_once_from_any_replica(backend: Backend) -> None:
    store, peer = backend.store, await backend.peer()
    term = await store.campaign("ctl-0", "a:1", 5)
    assert term is not None
    first = await store.put_quarantine("node-1", b"q", b"hist-in", term)
    # The leader's note is conditional too: it never overwrites what is there.
    assert await store.annotate_history(first, b"pending", term, expected=b"")
    assert not await store.annotate_history(first, b"other", term, expected=b"")
    # Any replica (the peer holds no term) fills what it expects, once.
    assert await peer.fill_history_details(first, b"pending", b"hooks: ok")
    assert not await peer.fill_history_details(first, b"pending", b"hooks: failed")
    assert await store.get_history("node-1") == [HistoryEntry(first, b"hist-in", b"hooks: ok")]
    with pytest.raises(StoreError, match="no history entry"):
        await peer.fill_history_details(first + 1000, b"", b"x")
    await store.resign(term)  # no leader at all: filling is not fenced
    assert await peer.fill_history_details(first, b"hooks: ok", b"hooks: none")
    assert (await store.get_history("node-1"))[0].details == b"hooks: none"


# -- events and settings ----------------------------------------------------------


async def test_events_are_ordered_bounded_and_read_after_a_cursor(backend: Backend) -> None:
    store = backend.store
    sequences = [await store.append_event(f"e{i}".encode(), 1000) for i in range(5)]
    assert sequences == sorted(sequences) and len(set(sequences)) == 5
    events = await store.list_events(0, 100)
    assert [e.payload for e in events] == [b"e0", b"e1", b"e2", b"e3", b"e4"]
    assert [e.sequence for e in events] == sequences
    after = await store.list_events(sequences[2], 100)
    assert [e.payload for e in after] == [b"e3", b"e4"]
    assert [e.payload for e in await store.list_events(0, 2)] == [b"e0", b"e1"]
    assert await store.list_events(sequences[-1], 100) == []


async def test_events_keep_only_the_retained_count(backend: Backend) -> None:
    store = backend.store
    for i in range(120):
        await store.append_event(f"e{i}".encode(), 10)
    kept = [e.payload for e in await store.list_events(0, 1000)]
    # Trimming may lag by up to one batch (etcd trims every 100 appends).
    assert kept[-1] == b"e119"
    assert 10 <= len(kept) <= 30


async def test_a_node_counters_setting_can_be_cleared(backend: Backend) -> None:
    """The automation keeps one setting per node (automation.node.NAME) and clears
    it with an empty value once the node has nothing left to remember."""
    store, peer = backend.store, await backend.peer()
    term = await store.campaign("ctl-0", "a:1", 5)
    assert term is not None
    key = "automation.node.node-7.example"
    await store.put_setting(key, b'{"failed_recoveries": 2}', term)
    assert await peer.get_setting(key) == b'{"failed_recoveries": 2}'
    assert await peer.get_setting("automation") is None  # keys are exact, not prefixes
    await store.put_setting(key, b"", term)
    assert await peer.get_setting(key) == b""


async def test_settings_are_fenced(backend: Backend) -> None:
    store, peer = backend.store, await backend.peer()
    assert await store.get_setting("automation") is None
    term = await store.campaign("ctl-0", "a:1", 5)
    assert term is not None
    await store.put_setting("automation", b'{"paused": true}', term)
    assert await peer.get_setting("automation") == b'{"paused": true}'
    await store.resign(term)
    with pytest.raises(FencingError):
        await store.put_setting("automation", b"{}", term)
    assert await peer.get_setting("automation") == b'{"paused": true}'


# -- embedded only ----------------------------------------------------------------


async def test_embedded_second_open_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "novaops.db"
    first = EmbeddedStore(path, FakeClock())
    await first.open()
    try:
        with pytest.raises(StoreLocked) as caught:
            await EmbeddedStore(path, FakeClock()).open()
        message = str(caught.value)
        assert "\n" not in message
        assert str(path) in message
        assert f"(pid {os.getpid()})" in message
        assert "use etcd for HA" in message
    finally:
        await first.close()
    second = EmbeddedStore(path, FakeClock())
    await second.open()  # the lock went with the first store
    await second.close()


CHILD_OPENS = """
import asyncio, sys
from pathlib import Path
from novaops.controller.store.base import StoreLocked
from novaops.controller.store.embedded import EmbeddedStore

async def main() -> int:
    store = EmbeddedStore(Path(sys.argv[1]))
    try:
        await store.open()
    except StoreLocked as exc:
        print(exc, flush=True)
        return 3
    print("opened", flush=True)
    sys.stdin.read()  # hold the store until the parent closes our stdin
    await store.close()
    return 0

sys.exit(asyncio.run(main()))
"""


async def test_embedded_lock_holds_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "novaops.db"
    child = [sys.executable, "-c", CHILD_OPENS, str(path)]
    store = EmbeddedStore(path)
    await store.open()
    try:
        refused = await asyncio.create_subprocess_exec(
            *child, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
        )
        output, _ = await asyncio.wait_for(refused.communicate(), timeout=30)
    finally:
        await store.close()
    assert refused.returncode == 3
    assert f"is in use by another controller (pid {os.getpid()})" in output.decode()

    holder = await asyncio.create_subprocess_exec(
        *child, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        ready = await asyncio.wait_for(holder.stdout.readline(), timeout=30)
        assert ready.strip() == b"opened"
        with pytest.raises(StoreLocked, match=rf"\(pid {holder.pid}\)"):
            await EmbeddedStore(path).open()
    finally:
        holder.stdin.close()
        await asyncio.wait_for(holder.wait(), timeout=30)
    assert holder.returncode == 0
    after = EmbeddedStore(path)
    await after.open()
    await after.close()


async def test_embedded_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "novaops.db"
    clock = FakeClock()
    store = EmbeddedStore(path, clock)
    await store.open()
    await store.register_node(registration("node-1", labels={"rack": "r1"}))
    await store.heartbeat("node-1", 30, HEALTHY)
    term = await store.campaign("ctl-0", "a:1", 5)
    assert term is not None
    sequence = await store.put_quarantine("node-1", b"record", b"hist", term)
    await store.close()

    reopened = EmbeddedStore(path, clock)
    await reopened.open()
    try:
        node = await reopened.get_node("node-1")
        assert node is not None
        assert (node.labels, node.up, node.health) == ({"rack": "r1"}, True, HEALTHY)
        assert await reopened.get_quarantines() == {"node-1": b"record"}
        assert await reopened.get_history() == [HistoryEntry(sequence, b"hist")]
        # The old term ended with its process; the counter keeps fencing tokens rising.
        assert await reopened.get_leader() is None
        with pytest.raises(FencingError):
            await reopened.put_quarantine("node-1", b"late", b"late", term)
        again = await reopened.campaign("ctl-0", "a:1", 5)
        assert again is not None
        assert again.record.revision > term.record.revision
        assert await reopened.delete_quarantine("node-1", b"out", again) > sequence
    finally:
        await reopened.close()


async def test_embedded_file_of_an_older_schema_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "novaops.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE history (sequence INTEGER PRIMARY KEY AUTOINCREMENT,"
        " node TEXT NOT NULL, payload BLOB NOT NULL);"
        "INSERT INTO history (node, payload) VALUES ('node-1', x'01');"
    )
    old.commit()
    old.close()
    store = EmbeddedStore(path, FakeClock())
    await store.open()
    try:
        assert await store.get_history() == [HistoryEntry(1, b"\x01")]
        term = await store.campaign("ctl-0", "a:1", 5)
        assert term is not None
        await store.annotate_history(1, b"details", term)
        assert (await store.get_history())[0].details == b"details"
    finally:
        await store.close()


# -- etcd only --------------------------------------------------------------------


def _unused_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.etcd
async def test_etcd_unreachable_endpoints_fail_fast_with_a_clear_message() -> None:
    endpoints = [f"http://127.0.0.1:{port}" for port in _unused_ports(2)]
    store = EtcdStore(endpoints, timeout=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.open()
    finally:
        await store.close()
    assert time.monotonic() - started < 2.0
    message = str(caught.value)
    assert "\n" not in message
    assert all(url in message for url in endpoints)


def _raft_leader_index(cluster: EtcdCluster) -> int:
    """Which member etcd's own raft elected (not the novaops leader)."""
    for index, url in enumerate(cluster.endpoints):
        request = urllib.request.Request(f"{url}/v3/maintenance/status", data=b"{}")
        with urllib.request.urlopen(request, timeout=2) as reply:
            status = json.loads(reply.read())
        if status["header"]["member_id"] == status["leader"]:
            return index
    raise AssertionError("no etcd member reports itself as raft leader")


@pytest.mark.etcd
@pytest.mark.skipif(not etcd_available(), reason="etcd not found; apt-get install etcd-server")
async def test_etcd_three_members_survive_losing_one(tmp_path: Path) -> None:
    cluster = await asyncio.to_thread(EtcdCluster.start, tmp_path / "etcd", 3)
    stores: list[EtcdStore] = []
    try:
        store = EtcdStore(cluster.endpoints, prefix="/ha", timeout=2.0)
        stores.append(store)
        await store.open()
        term = await store.campaign("ctl-0", "a:1", 5)
        assert term is not None

        victim = (_raft_leader_index(cluster) + 1) % 3
        await asyncio.to_thread(cluster.kill_member, victim)
        assert len(cluster.pids) == 2

        # The leader key lives on in the remaining quorum ...
        assert await store.keep_leadership(term) is True
        leader = await store.get_leader()
        assert leader is not None
        assert leader.revision == term.record.revision

        # ... and a client whose first endpoint is the dead member fails over.
        dead_first = [cluster.endpoints[victim]] + [
            url for i, url in enumerate(cluster.endpoints) if i != victim
        ]
        other = EtcdStore(dead_first, prefix="/ha", timeout=2.0)
        stores.append(other)
        await other.open()
        assert await other.keep_leadership(term) is True
        assert await other.campaign("ctl-1", "b:1", 5) is None
        await other.resign(term)
        successor = await other.campaign("ctl-1", "b:1", 5)
        assert successor is not None
        assert await other.keep_leadership(successor) is True
        assert await other.put_quarantine("node-1", b"q", b"h", successor) > 0

        await asyncio.to_thread(cluster.restart_member, victim)
        assert len(cluster.pids) == 3
        assert await store.get_quarantines() == {"node-1": b"q"}
    finally:
        for opened in stores:
            await opened.close()
        await asyncio.to_thread(cluster.stop)
    assert cluster.pids == []


# -- the dev cluster's etcd harness ---------------------------------------------------


def test_etcd_cluster_reports_a_member_that_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "etcd"
    fake.write_text("#!/bin/sh\necho 'etcdmain: listen tcp: address already in use' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("NOVAOPS_ETCD", str(fake))
    with pytest.raises(EtcdError) as caught:
        EtcdCluster.start(tmp_path / "data", timeout=5.0)
    message = str(caught.value)
    assert "etcd member etcd-0 exited with status 1" in message
    assert "address already in use" in message  # the log tail


def test_missing_etcd_binary_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOVAOPS_ETCD", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(devcluster_etcd, "ETCD_CANDIDATES", ())
    with pytest.raises(EtcdError, match=r"etcd not found; apt-get install etcd-server"):
        find_etcd_binary()


async def test_embedded_keepalive_does_not_queue_behind_heartbeats(tmp_path: Path) -> None:
    # A burst of registry calls (a heartbeat each on the controller) must not
    # delay the leadership lease: it has its own thread and goes first at the
    # connection, so it waits only for the call in progress. The order is read
    # from sqlite's own statement trace, so a slow event loop cannot blur it.
    store = EmbeddedStore(tmp_path / "novaops.db", FakeClock())
    await store.open()
    try:
        await store.register_node(registration("node-1"))
        term = await store.campaign("ctl-0", "a:1", 5)
        assert term is not None
        in_progress = threading.Event()
        release = threading.Event()

        def call_in_progress(db: sqlite3.Connection) -> None:
            in_progress.set()
            release.wait(10)

        blocking = asyncio.ensure_future(store._run(call_in_progress))
        await _wait_for(in_progress.is_set)
        statements: list[str] = []
        assert store._db is not None
        store._db.set_trace_callback(statements.append)
        burst = [asyncio.ensure_future(store.heartbeat("node-1", 30, HEALTHY)) for _ in range(400)]
        keepalive = asyncio.ensure_future(store.keep_leadership(term))
        await _wait_for(lambda: store._mutex._first_waiting > 0)  # the lease is waiting
        release.set()
        assert await keepalive
        assert all(await asyncio.gather(*burst))
        await blocking
        renewals = [s for s in statements if s.startswith(("UPDATE nodes", "UPDATE leader"))]
        assert len(renewals) == 401
        overtaken_by = renewals.index(next(s for s in renewals if s.startswith("UPDATE leader")))
        assert overtaken_by == 0, f"{overtaken_by} heartbeats went before the keepalive"
    finally:
        await store.close()


async def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def test_heartbeat_with_quarantine_answers_the_nodes_own_record(backend: Backend) -> None:
    store = backend.store
    assert await store.heartbeat_with_quarantine("ghost", LEASE_TTL, HEALTHY) == (False, None)
    await store.register_node(registration("node-1"))
    await store.register_node(registration("node-2"))
    assert await store.heartbeat_with_quarantine("node-1", LEASE_TTL, UNHEALTHY) == (True, None)
    node = await store.get_node("node-1")
    assert node is not None and (node.up, node.health) == (True, UNHEALTHY)
    term = await store.campaign("ctl-0", "a:1", 5)
    assert term is not None
    await store.put_quarantine("node-2", b"record-2", b"hist-2", term)
    assert await store.heartbeat_with_quarantine("node-1", LEASE_TTL, HEALTHY) == (True, None)
    assert await store.heartbeat_with_quarantine("node-2", LEASE_TTL, HEALTHY) == (
        True,
        b"record-2",
    )


async def test_remove_down_node_checks_and_deletes_in_one_step(backend: Backend) -> None:
    store = backend.store
    for name in ("node-up", "node-down", "node-held"):
        await store.register_node(registration(name))
    await store.heartbeat("node-up", LEASE_TTL, HEALTHY)
    term = await store.campaign("ctl-0", "127.0.0.1:1", LEASE_TTL)
    assert term is not None
    await store.put_quarantine("node-held", b"record", b"history", term)

    assert await store.remove_down_node("node-up") is Removal.UP
    assert await store.remove_down_node("node-held") is Removal.QUARANTINED
    assert await store.remove_down_node("ghost") is Removal.UNKNOWN
    assert await store.remove_down_node("node-down") is Removal.REMOVED
    assert await store.remove_down_node("node-down") is Removal.UNKNOWN
    assert [n.name for n in await store.list_nodes()] == ["node-held", "node-up"]
    assert await store.heartbeat("node-down", LEASE_TTL, HEALTHY) is False

    # Once its lease lapses, a node that was up is down and may go.
    async def removed() -> bool:
        return await store.remove_down_node("node-up") is Removal.REMOVED

    await backend.until(removed, LEASE_TTL * 5, "node-up's lease should lapse")
    assert [n.name for n in await store.list_nodes()] == ["node-held"]
