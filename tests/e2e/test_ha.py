"""Quarantine state survives a controller restart (embedded store) and a leader change
(etcd, two replicas); leadership can be handed over."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from novaops.pki.identity import Identity, Role
from novaops.pki.issue import CertificateAuthority

from .conftest import DevCluster, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Replica:
    """An extra controller process started by the test (and stopped by it)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.process = subprocess.Popen(
            [sys.executable, "-m", "novaops.controller", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.stop()


def second_controller(cluster: DevCluster, name: str, tmp_path: Path) -> tuple[Path, str]:
    """A controller config like ctl-0's for replica `name`, with its own cert and port."""
    ca = CertificateAuthority.load(cluster.state_dir / "certs")
    files = ca.issue(Identity(Role.CONTROLLER, name), tmp_path)
    address = f"127.0.0.1:{free_port()}"
    text = (cluster.state_dir / "controller" / "controller.toml").read_text()
    text = text.replace('name = "ctl-0"', f'name = "{name}"')
    text = re.sub(r'listen = "[^"]+"', f'listen = "{address}"', text)
    text = re.sub(r'advertise = "[^"]+"', f'advertise = "{address}"', text)
    text = re.sub(r'metrics_listen = "[^"]+"\n', "", text)
    text = re.sub(r'log_file = "[^"]+"', f'log_file = "{tmp_path / name}.log"', text)
    text = re.sub(r'cert = "[^"]+"', f'cert = "{files.cert}"', text)
    text = re.sub(r'key = "[^"]+"', f'key = "{files.key}"', text)
    config = tmp_path / f"{name}.toml"
    config.write_text(text)
    return config, address


def test_quarantine_survives_a_controller_restart(
    cluster_factory: Callable[..., DevCluster], replicas: list[Replica]
) -> None:
    cluster = cluster_factory(1, "--no-automation", "--no-faults")
    wait_for(lambda: cluster.json("node", "list")[0]["state"] == "up", 30, "node up")
    cluster.json("quarantine", "node-1", "--reason", "before restart")
    os.kill(cluster.pid("ctl-0"), signal.SIGTERM)
    wait_for(lambda: cluster.cli("node", "list").returncode == 4, 15, "controller gone")
    replicas.append(Replica(cluster.state_dir / "controller" / "controller.toml"))
    wait_for(lambda: cluster.cli("node", "list").returncode == 0, 30, "controller back")
    records = cluster.json("quarantine", "list")
    assert [(q["node"], q["reason"]) for q in records] == [("node-1", "before restart")]
    assert cluster.json("node", "list")[0]["quarantined"] is True
    wait_for(lambda: cluster.json("node", "list")[0]["state"] == "up", 30, "node back up")
    released = cluster.json("unquarantine", "node-1", "--reason", "after restart")
    assert released["changed"] is True
    history = cluster.json("quarantine", "history")
    assert [h["action"] for h in history] == ["quarantine", "unquarantine"]


def test_quarantine_survives_a_leader_change_on_etcd(
    cluster_factory: Callable[..., DevCluster], replicas: list[Replica], tmp_path: Path
) -> None:
    cluster = cluster_factory(1, "--store", "etcd", "--no-automation", "--no-faults")
    wait_for(lambda: cluster.json("node", "list")[0]["state"] == "up", 30, "node up")
    config, address = second_controller(cluster, "ctl-1", tmp_path)
    replicas.append(Replica(config))
    # The CLI knows both replicas; mutations find the leader.
    client = cluster.config.read_text()
    client = re.sub(r"controllers = \[([^\]]*)\]", rf'controllers = [\1, "{address}"]', client)
    cluster.config.write_text(client)
    assert cluster.json("leader", "status")["name"] == "ctl-0"
    wait_for(lambda: cluster.cli("cluster", "status").returncode == 0, 10, "both answer")

    cluster.json("quarantine", "node-1", "--reason", "before failover")
    os.kill(cluster.pid("ctl-0"), signal.SIGKILL)
    leader = wait_for(
        lambda: (s := cluster.json("leader", "status"))["name"] == "ctl-1" and s, 30, "ctl-1 leads"
    )
    assert leader["revision"] > 0
    records = cluster.json("quarantine", "list")
    assert [(q["node"], q["reason"]) for q in records] == [("node-1", "before failover")]
    # The new leader's term fences its own writes.
    released = cluster.json("unquarantine", "node-1", "--reason", "after failover")
    assert released["changed"] is True
    assert [h["action"] for h in cluster.json("quarantine", "history")] == [
        "quarantine",
        "unquarantine",
    ]


def test_leadership_hand_over(
    cluster_factory: Callable[..., DevCluster], replicas: list[Replica], tmp_path: Path
) -> None:
    cluster = cluster_factory(1, "--store", "etcd", "--no-automation", "--no-faults")
    config, address = second_controller(cluster, "ctl-1", tmp_path)
    replicas.append(Replica(config))
    client = cluster.config.read_text()
    client = re.sub(r"controllers = \[([^\]]*)\]", rf'controllers = [\1, "{address}"]', client)
    cluster.config.write_text(client)
    wait_for(lambda: cluster.json("leader", "status")["name"] == "ctl-0", 10, "ctl-0 leads")
    planned = cluster.cli("leader", "transfer", "--dry-run")
    assert planned.returncode == 0 and "dry run" in planned.stdout
    assert cluster.json("leader", "status")["name"] == "ctl-0"
    moved = cluster.cli("leader", "transfer", "--reason", "kernel upgrade on ctl-0")
    assert moved.returncode == 0, moved.stderr
    wait_for(lambda: cluster.json("leader", "status")["name"] == "ctl-1", 20, "ctl-1 leads")
    found = cluster.json("events")
    assert "leader.transfer" in [e["kind"] for e in found]
    changes = [e for e in found if e["kind"] == "leader.changed"]
    assert [e["attributes"]["leader"] for e in changes][-2:] == ["ctl-0", "ctl-1"]


def test_a_follower_takes_the_hook_report_into_the_history(
    cluster_factory: Callable[..., DevCluster], replicas: list[Replica], tmp_path: Path
) -> None:
    """The node heartbeats a follower only. The leader quarantines it while it is
    frozen ("pending"); the node applies it from the follower's heartbeat answer,
    reports its hooks there, and the history entry gets them, not "pending"."""
    cluster = cluster_factory(1, "--store", "etcd", "--no-automation", "--no-faults")
    wait_for(lambda: cluster.json("node", "list")[0]["state"] == "up", 30, "node up")
    config, address = second_controller(cluster, "ctl-1", tmp_path)
    replicas.append(Replica(config))
    node_config = cluster.node_dir("node-1") / "executor.toml"
    os.kill(cluster.pid("node-1"), signal.SIGTERM)
    text = re.sub(
        r"controllers = \[[^\]]*\]", f'controllers = ["{address}"]', node_config.read_text()
    )
    node_config.write_text(text)
    hooks = cluster.node_dir("node-1") / "state/hooks/quarantine.d"
    hooks.mkdir(parents=True, exist_ok=True)
    (hooks / "10-mark").write_text("#!/bin/sh\nexit 0\n")
    (hooks / "10-mark").chmod(0o755)
    executor = subprocess.Popen(
        [sys.executable, "-m", "novaops.executor", "--config", str(node_config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cluster.node_dir("node-1"),
    )
    try:
        log = cluster.state_dir / "logs" / "node-1.log"

        def via_follower() -> bool:
            return "registered node node-1 with controller ctl-1" in log.read_text()

        wait_for(via_follower, 30, "node-1 registered through ctl-1")
        assert cluster.json("leader", "status")["name"] == "ctl-0"
        os.kill(executor.pid, signal.SIGSTOP)
        try:
            done = cluster.json("quarantine", "node-1", "--reason", "frozen")
        finally:
            os.kill(executor.pid, signal.SIGCONT)
        assert any("next heartbeat" in line for line in done["hook_results"])

        def filled() -> dict[str, object] | None:
            entry: dict[str, object] = cluster.json("quarantine", "history", "node-1")[-1]
            return entry if entry["hooks"] != "pending" else None

        entry = wait_for(filled, 30, "the follower to record the node's hook report")
        assert entry["hooks"] == "ok"
        assert entry["hook_results"] == ["10-mark: ok"]
        (report,) = cluster.json("events", "--kind", "quarantine.synced")
        assert report["cause_ids"] == entry["event_ids"][:1]
        assert report["attributes"]["actor"] == "admin:admin"
    finally:
        executor.terminate()
        try:
            executor.wait(15)
        except subprocess.TimeoutExpired:
            executor.kill()
            executor.wait()
