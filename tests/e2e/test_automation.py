"""Issue #5 end to end: the leader's automation recovers, escalates, releases, and
its circuit breaker stops it from taking the fleet out. Real processes throughout."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import DevCluster, wait_for
from .test_quarantine_drills import chattr

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FAST = (
    "--automation",
    "poll_interval_ms=300",
    "--automation",
    "per_node_timeout_ms=5000",
    "--automation",
    "failures_before_recovery=2",
    "--automation",
    "max_failed_recoveries=3",
    "--automation",
    "clean_passes_to_release=3",
)

needs_chattr = pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr (e2fsprogs)")


def events(cluster: DevCluster, kind: str, node: str = "") -> list[dict[str, Any]]:
    found = cluster.json("events", "--kind", kind)
    return [e for e in found if not node or e["node"] == node]


def host_check(cluster: DevCluster, node: str, check_id: str) -> str:
    checks = cluster.json("diag", "host", "--node", node, ok=(0, 1))
    return str(next(c["status"] for c in checks if c.get("check_id") == check_id))


def install_hook(cluster: DevCluster, node: str, marker: Path) -> None:
    hooks = cluster.node_dir(node) / "state/hooks/quarantine.d"
    hooks.mkdir(parents=True, exist_ok=True)
    hook = hooks / "10-mark"
    hook.write_text(f'#!/bin/sh\necho "$NOVAOPS_SOURCE $NOVAOPS_REASON" > {marker}\n')
    hook.chmod(0o755)


class ImmutableLocks:
    """Stale locks that remove-stale-locks cannot remove (chattr +i); undone at the end."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def add(self, cluster: DevCluster, node: str) -> Path:
        # Owned by a live process until it is immutable: a stale lock written
        # first could be removed by the automation (busy with the simulated
        # nodes' own stale locks) before chattr got to it.
        lock = cluster.node_dir(node) / "root/var/lib/libvirt/qemu/immutable.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        owner = subprocess.Popen(["sleep", "60"])
        try:
            lock.write_text(f"{owner.pid}\n")
            assert chattr("+i", lock), "chattr +i failed"
            self.paths.append(lock)
        finally:
            owner.kill()
            owner.wait()
        return lock  # stale now: its owner is gone

    def release(self, lock: Path) -> None:
        chattr("-i", lock)
        lock.unlink(missing_ok=True)

    def release_all(self) -> None:
        for lock in self.paths:
            self.release(lock)


@pytest.fixture
def immutable() -> Iterator[ImmutableLocks]:
    locks = ImmutableLocks()
    try:
        yield locks
    finally:
        locks.release_all()


def test_recoverable_faults_are_fixed_without_quarantine(
    cluster_factory: Callable[..., DevCluster],
) -> None:
    # Every simulated node starts with an orphan QEMU stand-in and a stale lock.
    cluster = cluster_factory(2, *FAST)

    def clean(node: str) -> bool:
        return all(
            host_check(cluster, node, check) == "ok" for check in ("host.orphans", "host.locks")
        )

    for node in ("node-1", "node-2"):
        wait_for(functools.partial(clean, node), 60, f"{node} recovered")
    assert cluster.json("quarantine", "list") == []
    succeeded = events(cluster, "recovery.succeeded")
    assert {e["node"] for e in succeeded} == {"node-1", "node-2"}
    started = events(cluster, "recovery.started", "node-1")
    assert "terminate-orphans" in started[0]["message"]
    assert "remove-stale-locks" in started[0]["message"]
    assert started[0]["cause_ids"], "a recovery names the events that caused it"


@needs_chattr
def test_unfixable_fault_escalates_then_clean_node_is_released(
    cluster_factory: Callable[..., DevCluster], immutable: ImmutableLocks, tmp_path: Path
) -> None:
    cluster = cluster_factory(2, *FAST)
    marker = tmp_path / "hook"
    install_hook(cluster, "node-1", marker)
    lock = immutable.add(cluster, "node-1")

    quarantined = wait_for(
        lambda: [q for q in cluster.json("quarantine", "list") if q["node"] == "node-1"],
        90,
        "automatic quarantine of node-1",
    )
    record = quarantined[0]
    assert record["source"] == "auto" and record["actor"] == "automation"
    assert "4 failed recoveries" in record["reason"]
    assert any(c["check_id"] == "host.locks" for c in record["causes"])
    assert record["event_ids"]
    wait_for(marker.exists, 10, "the quarantine hook")
    assert marker.read_text().startswith("auto automatic:")
    escalations = events(cluster, "escalation", "node-1")
    assert escalations and "host.locks" in escalations[0]["message"]
    failed = events(cluster, "recovery.failed", "node-1")
    assert len(failed) >= 4
    # The record's causes are cluster events: the failure, the failed recoveries and
    # the escalation, each one `novaops events` shows.
    by_id = {e["id"]: e for e in cluster.json("events")}
    causes = [by_id[i]["kind"] for i in record["event_ids"]]
    assert causes[0] == "check.failed" and causes[-1] == "escalation", causes
    assert causes.count("recovery.failed") >= 4
    # The hook's outcome is recorded with the quarantine, in its event and history.
    (quarantine_event,) = events(cluster, "quarantine", "node-1")
    assert quarantine_event["attributes"]["hooks"] == "ok"
    assert quarantine_event["attributes"]["hook_results"] == "10-mark: ok"
    history = cluster.json("quarantine", "history", "node-1")
    assert history[-1]["action"] == "quarantine" and history[-1]["source"] == "auto"
    assert quarantine_event["id"] in history[-1]["event_ids"]
    assert cluster.json("quarantine", "list")[0]["node"] == "node-1"
    assert all(q["node"] != "node-2" for q in cluster.json("quarantine", "list"))

    # The fault goes away: after 3 clean verify-clean passes the node is released.
    immutable.release(lock)
    wait_for(lambda: cluster.json("quarantine", "list") == [], 60, "automatic release")
    history = cluster.json("quarantine", "history", "node-1")
    assert history[-1]["action"] == "unquarantine" and history[-1]["source"] == "auto"
    assert "causing checks passed 3 consecutive times" in history[-1]["reason"]


@needs_chattr
def test_breaker_stops_automatic_quarantines_at_ten_percent(
    cluster_factory: Callable[..., DevCluster], immutable: ImmutableLocks
) -> None:
    cluster = cluster_factory(10, *FAST)
    faulty = [f"node-{i}" for i in range(1, 6)]
    for node in faulty:
        immutable.add(cluster, node)
    wait_for(
        lambda: cluster.json("automation", "status")["breaker_tripped"], 120, "breaker tripped"
    )
    # Give the other faulty nodes time to escalate too: none may be quarantined.
    wait_for(lambda: len(events(cluster, "recovery.failed")) >= 16, 60, "more failed recoveries")
    quarantined = cluster.json("quarantine", "list")
    assert len(quarantined) == 1 and quarantined[0]["node"] in faulty
    status = cluster.json("automation", "status")
    assert "would make 2 of 10 nodes quarantined" in status["breaker_reason"]
    assert cluster.json("cluster", "status")["breaker_tripped"] is True
    assert events(cluster, "breaker.tripped")
    # Reset needs an operator, and is itself recorded.
    reset = cluster.json("automation", "reset-breaker", "--reason", "investigated")
    assert reset["breaker_tripped"] is False
    assert events(cluster, "breaker.reset")
    # Pause stops automatic actions; resume restarts them.
    assert cluster.json("automation", "pause", "--reason", "maintenance")["paused"] is True
    assert cluster.json("automation", "resume")["paused"] is False
