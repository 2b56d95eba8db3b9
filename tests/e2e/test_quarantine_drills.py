"""Issue #5 game-day drills on a dev cluster of real processes, through the real CLI.

Each drill follows an operator runbook: cleanup failure, quarantine drill,
resource exhaustion and cgroup backend mismatch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import DevCluster, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def dead_pid() -> int:
    """A pid that certainly belonged to a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def stale_lock(cluster: DevCluster, node: str, name: str) -> Path:
    lock = cluster.node_dir(node) / "root/var/lib/libvirt/qemu" / name
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(f"{dead_pid()}\n")
    return lock


def chattr(flag: str, path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return (
        subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False).returncode
        == 0
    )


@pytest.fixture(scope="module")
def drills(cluster_factory: Callable[..., DevCluster]) -> DevCluster:
    # Automation off: the drills are the operator's hands, not the leader's.
    cluster = cluster_factory(2, "--no-automation")
    wait_for(lambda: sum(n["state"] == "up" for n in cluster.json("node", "list")) == 2, 30, "2 up")
    return cluster


@pytest.fixture
def immutable_lock(drills: DevCluster) -> Iterator[Path]:
    lock = stale_lock(drills, "node-1", "stuck.lock")
    if not chattr("+i", lock):
        lock.unlink()
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        yield lock
    finally:
        chattr("-i", lock)
        lock.unlink(missing_ok=True)


def test_cleanup_failure_reports_partial(drills: DevCluster, immutable_lock: Path) -> None:
    removable = stale_lock(drills, "node-1", "gone.lock")
    result = drills.cli("recover", "remove-stale-locks", "--node", "node-1", "-o", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    steps = json.loads(result.stdout)
    outcomes = {s["description"]: s["outcome"] for s in steps}
    assert any("stuck.lock" in d and o == "failed" for d, o in outcomes.items()), outcomes
    assert any("gone.lock" in d and o == "done" for d, o in outcomes.items()), outcomes
    assert not removable.exists() and immutable_lock.exists()


def test_quarantine_drill(drills: DevCluster, tmp_path: Path) -> None:
    node = "node-2"
    marker = tmp_path / "hook-ran"
    hooks = drills.node_dir(node) / "state/hooks/quarantine.d"
    hooks.mkdir(parents=True, exist_ok=True)
    hook = hooks / "10-disable-scheduling"
    hook.write_text(
        "#!/bin/sh\n"
        f'echo "$NOVAOPS_NODE $NOVAOPS_SOURCE $NOVAOPS_ACTOR $NOVAOPS_REASON" > {marker}\n'
    )
    hook.chmod(0o755)

    # 1. Manual quarantine: recorded, the node enforces it, the hook ran.
    done = drills.json("quarantine", node, "--reason", "drill: bad DIMM")
    assert done["changed"] is True
    assert any("10-disable-scheduling" in line and "ok" in line for line in done["hook_results"])
    assert marker.read_text().split(" ", 3) == [node, "manual", "admin:admin", "drill: bad DIMM\n"]
    nodes = {n["name"]: n for n in drills.json("node", "list")}
    assert nodes[node]["quarantined"] is True
    wait_for(
        lambda: (
            {n["name"]: n for n in drills.json("node", "list")}[node]["health"] == "quarantined"
        ),
        10,
        "quarantined health from heartbeats",
    )

    # 2. Dirty node: unquarantine is refused while verify-clean fails.
    lock = stale_lock(drills, node, "drill.lock")
    refused = drills.cli("unquarantine", node, "--reason", "looks fine")
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "verify-clean fails" in refused.stderr and "Traceback" not in refused.stderr

    # 3. Clean it with the catalogue (allowed while quarantined), then release.
    cleaned = drills.json("health", "--node", node, "--recover", ok=(0, 1))
    assert cleaned
    assert not lock.exists()
    clean = drills.json("health", "--node", node, "--verify-clean", ok=(0, 1))
    failing = [c for report in clean for c in report.get("checks", []) if c["status"] != "ok"]
    assert failing == [], failing
    released = drills.json("unquarantine", node, "--reason", "drill: DIMM replaced")
    assert released["changed"] is True
    history = drills.json("quarantine", "history", node)
    assert [e["action"] for e in history][-2:] == ["quarantine", "unquarantine"]
    kinds = [e["kind"] for e in drills.json("events")]
    assert "quarantine" in kinds and "unquarantine" in kinds


@pytest.fixture
def full_log_filesystem(drills: DevCluster) -> Iterator[Path]:
    # /var/log/libvirt is one of the directories the host checks watch for pressure.
    target = drills.node_dir("node-1") / "root/var/log/libvirt"
    saved = target.with_name("libvirt.saved")
    shutil.copytree(target, saved)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "novaops-drill", str(target)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        shutil.rmtree(saved)
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with (target / "filler").open("wb") as out, contextlib.suppress(OSError):
            out.write(b"x" * (2 << 20))  # ENOSPC is the point
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)
        shutil.rmtree(saved)


def test_resource_exhaustion_is_found(drills: DevCluster, full_log_filesystem: Path) -> None:
    checks = drills.json("diag", "host", "--node", "node-1", ok=(1,))
    # One host.disk result per filesystem: the full one fails, the others are fine.
    disks = [c for c in checks if c.get("check_id") == "host.disk"]
    full = [c for c in disks if "/var/log/libvirt" in c["evidence"]["paths"].split(",")]
    assert [c["status"] for c in full] == ["fail"], disks
    assert full[0]["evidence"]["space_used_percent"] == "100.0"
    assert full[0]["remediation"]


@pytest.fixture
def cgroup_v1(drills: DevCluster) -> Iterator[Path]:
    cgroup = drills.node_dir("node-2") / "root/sys/fs/cgroup"
    saved = cgroup.with_name("cgroup.saved")
    cgroup.rename(saved)
    for controller in ("cpu", "cpuacct", "memory", "pids", "devices", "freezer", "systemd"):
        (cgroup / controller).mkdir(parents=True)
    try:
        yield cgroup
    finally:
        shutil.rmtree(cgroup)
        saved.rename(cgroup)


def test_cgroup_backend_mismatch_degrades_controls(drills: DevCluster, cgroup_v1: Path) -> None:
    checks = drills.json("diag", "host", "--node", "node-2", ok=(0, 1))
    cgroup = next(c for c in checks if c.get("check_id") == "host.cgroup")
    assert cgroup["status"] == "warn", cgroup
    assert cgroup["evidence"].get("backend") == "v1"
    assert "cgroup-kill" in cgroup["evidence"].get("degraded_controls", "")
    health = drills.json("health", "--node", "node-2", "--checks", ok=(0, 1))
    assert health[0]["facts"]["cgroup_backend"] == "v1"


def test_a_node_that_missed_its_quarantine_applies_it_from_heartbeats(
    drills: DevCluster, tmp_path: Path
) -> None:
    node = "node-1"
    marker = tmp_path / "late-hook"
    hooks = drills.node_dir(node) / "state/hooks/quarantine.d"
    hooks.mkdir(parents=True, exist_ok=True)
    hook = hooks / "20-late"
    hook.write_text(
        "#!/bin/sh\n"
        f'echo "$NOVAOPS_ACTOR|$NOVAOPS_SOURCE|$NOVAOPS_REASON|$NOVAOPS_SINCE" > {marker}\n'
    )
    hook.chmod(0o755)
    failing = hooks / "30-late-drain"
    failing.write_text("#!/bin/sh\necho 'drain API unreachable' >&2\nexit 4\n")
    failing.chmod(0o755)
    pid = drills.pid(node)
    os.kill(pid, signal.SIGSTOP)
    try:
        done = drills.json("quarantine", node, "--reason", "while it was frozen")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert done["changed"] is True
    assert any("next heartbeat" in line for line in done["hook_results"])
    wait_for(marker.exists, 20, "the hook run from the heartbeat sync")
    # The hook sees the operator's record, not the controller that answered the heartbeat.
    actor, source, reason, since = marker.read_text().strip().split("|")
    assert (actor, source, reason) == ("admin:admin", "manual", "while it was frozen")
    assert since[:19] == done["record"]["since"][:19]  # the record's, to the second

    # What the hooks said comes back with the node's next heartbeats, into the events.
    def synced() -> list[dict[str, Any]]:
        events = drills.json("events", "--kind", "quarantine.synced")
        return [e for e in events if e["node"] == node]

    wait_for(lambda: bool(synced()), 20, "the node's report of the hooks it ran")
    (report,) = synced()
    assert report["attributes"]["hooks"] == "failed"
    assert report["attributes"]["reason"] == "while it was frozen"
    assert "20-late: ok" in report["attributes"]["hook_results"]
    assert "30-late-drain: exit 4: drain API unreachable" in report["attributes"]["hook_results"]
    failed = [e for e in drills.json("events", "--kind", "hook.failed") if e["node"] == node]
    assert failed and failed[-1]["cause_ids"] == [report["id"]]
    assert "30-late-drain" in failed[-1]["message"]
    # The history entry says it too, not "pending"; the report points at the change.
    history = drills.json("quarantine", "history", node)
    assert history[-1]["action"] == "quarantine" and history[-1]["hooks"] == "failed"
    assert history[-1]["event_ids"][-2:] == [report["id"], failed[-1]["id"]]
    assert report["cause_ids"] == history[-1]["event_ids"][:1]  # the quarantine event
    assert report["attributes"]["actor"] == "admin:admin"
    assert report["attributes"]["source"] == "manual"
    failing.unlink()
    hook.unlink()
    released = drills.json("unquarantine", node, "--reason", "thawed", "--force")
    assert released["changed"] is True


def test_a_failing_hook_is_reported_not_swallowed(drills: DevCluster) -> None:
    node = "node-2"
    hooks = drills.node_dir(node) / "state/hooks/unquarantine.d"
    hooks.mkdir(parents=True, exist_ok=True)
    hook = hooks / "30-enable-scheduling"
    hook.write_text("#!/bin/sh\necho 'scheduler API unreachable' >&2\nexit 3\n")
    hook.chmod(0o755)
    try:
        assert drills.json("quarantine", node, "--reason", "hook drill")["changed"] is True
        released = drills.json("unquarantine", node, "--reason", "hook drill over", "--force")
    finally:
        hook.unlink()
    assert released["changed"] is True
    assert any(
        "30-enable-scheduling" in line and "scheduler API unreachable" in line
        for line in released["hook_results"]
    ), released["hook_results"]
    # In the release event, in a hook.failed event it causes, and in the history.
    unquarantine = [e for e in drills.json("events", "--kind", "unquarantine") if e["node"] == node]
    assert unquarantine[-1]["attributes"]["hooks"] == "failed"
    assert "scheduler API unreachable" in unquarantine[-1]["attributes"]["hook_results"]
    failed = [e for e in drills.json("events", "--kind", "hook.failed") if e["node"] == node]
    assert failed and failed[-1]["cause_ids"] == [unquarantine[-1]["id"]]
    assert "30-enable-scheduling" in failed[-1]["message"]
    history = drills.json("quarantine", "history", node)
    assert history[-1]["action"] == "unquarantine"
    assert history[-1]["event_ids"][-2:] == [unquarantine[-1]["id"], failed[-1]["id"]]
    assert history[-1]["hooks"] == "failed"
    assert any("scheduler API unreachable" in line for line in history[-1]["hook_results"])
    table = drills.cli("quarantine", "history", node, "--output", "table")
    assert "failed" in table.stdout and "30-enable-scheduling" in table.stdout
