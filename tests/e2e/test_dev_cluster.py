"""End to end: a dev cluster of real processes driven through the real CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from novaops.controller.registry import liveness_ttl
from novaops.pki.identity import Identity, Role
from novaops.pki.issue import CertificateAuthority

pytestmark = pytest.mark.e2e
NOVAOPS = [sys.executable, "-m", "novaops.cli"]


def novaops(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NOVAOPS, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def node_list(state_dir: Path, config: Path | None = None) -> list[dict[str, Any]]:
    result = novaops(
        "--config", str(config or state_dir / "client.toml"), "node", "list", "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    nodes: list[dict[str, Any]] = json.loads(result.stdout)
    return nodes


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def dev_processes(state_dir: Path) -> list[dict[str, Any]]:
    result = novaops("dev", "status", "--state-dir", str(state_dir), "-o", "json")
    assert result.returncode == 0, result.stderr
    processes: list[dict[str, Any]] = json.loads(result.stdout)
    return processes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state_dir = tmp_path_factory.mktemp("dev") / "cluster"
    up = novaops("dev", "up", "--nodes", "3", "--state-dir", str(state_dir), "--detach")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield state_dir
    finally:
        pids = (
            [p["pid"] for p in json.loads((state_dir / "cluster.json").read_text())["processes"]]
            if (state_dir / "cluster.json").exists()
            else []
        )
        down = novaops("dev", "down", "--state-dir", str(state_dir))
        for pid in pids:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
        assert down.returncode == 0, down.stderr


@pytest.mark.timeout(180)
def test_three_nodes_up_then_one_killed_goes_down(cluster: Path) -> None:
    nodes = wait_for(
        lambda: (n := node_list(cluster)) and sum(x["state"] == "up" for x in n) == 3 and n,
        30,
        "3 nodes up",
    )
    assert sorted(n["name"] for n in nodes) == ["node-1", "node-2", "node-3"]
    for node in nodes:
        assert set(node) >= {"name", "address", "state", "quarantined"}
        assert node["quarantined"] is False
        assert node["facts"]["libvirt_reachable"] is True

    status = novaops("--config", str(cluster / "client.toml"), "cluster", "status", "-o", "json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["nodes_up"] == 3 and doc["store"] == "embedded"
    assert doc["leader"]["name"] == "ctl-0"

    victim = next(p for p in dev_processes(cluster) if p["name"] == "node-2")
    os.kill(victim["pid"], signal.SIGKILL)
    # dev up's registry: heartbeat every 500 ms, down after 3 missed (+ grace).
    window = liveness_ttl(500, 3)
    slowest_poll = 0.0
    while True:
        started = time.monotonic()
        nodes = node_list(cluster)
        slowest_poll = max(slowest_poll, time.monotonic() - started)
        seen_at = dt.datetime.now(dt.UTC)
        states = {n["name"]: n["state"] for n in nodes}
        if states["node-2"] == "down":
            break
        assert slowest_poll < 30, "node-2 never went down"
        time.sleep(0.1)
    victim_record = next(n for n in nodes if n["name"] == "node-2")
    last = dt.datetime.fromisoformat(victim_record["last_heartbeat"].replace("Z", "+00:00"))
    # Down within the configured window after its last heartbeat; the only slack
    # is how long one `node list` took to observe it.
    assert (seen_at - last).total_seconds() <= window + slowest_poll + 0.2 + 0.5
    assert states == {"node-1": "up", "node-2": "down", "node-3": "up"}


def test_leader_status_names_the_controller(cluster: Path) -> None:
    result = novaops("--config", str(cluster / "client.toml"), "leader", "status", "-o", "json")
    assert result.returncode == 0, result.stderr
    leader = json.loads(result.stdout)
    assert leader["name"] == "ctl-0" and leader["revision"] >= 1


def test_client_certificate_from_another_ca_is_refused(cluster: Path, tmp_path: Path) -> None:
    other = CertificateAuthority.create("some other CA")
    files = other.issue(Identity(Role.ADMIN, "mallory"), tmp_path)
    config = tmp_path / "client.toml"
    original = (cluster / "client.toml").read_text()
    controllers = next(line for line in original.splitlines() if line.startswith("controllers"))
    config.write_text(
        f'{controllers}\n[tls]\nca = "{cluster}/certs/ca.pem"\ncert = "{files.cert}"\n'
        f'key = "{files.key}"\n'
    )
    result = novaops("--config", str(config), "node", "list")
    assert result.returncode == 4, result.stderr
    assert "TLS handshake" in result.stderr and "Traceback" not in result.stderr
    assert "does not accept our client certificate" in result.stderr


def test_roles_are_enforced(cluster: Path, tmp_path: Path) -> None:
    ca = CertificateAuthority.load(cluster / "certs")
    files = ca.issue(Identity(Role.VIEWER, "vera"), tmp_path)
    original = (cluster / "client.toml").read_text()
    controllers = next(line for line in original.splitlines() if line.startswith("controllers"))
    config = tmp_path / "viewer.toml"
    config.write_text(
        f'{controllers}\n[tls]\nca = "{cluster}/certs/ca.pem"\ncert = "{files.cert}"\n'
        f'key = "{files.key}"\n'
    )
    allowed = novaops("--config", str(config), "node", "list", "-o", "json")
    assert allowed.returncode == 0, allowed.stderr
    refused = novaops("--config", str(config), "quarantine", "node-1", "--reason", "x")
    assert refused.returncode == 5
    assert "needs the operator role; caller is viewer:vera" in refused.stderr


def test_second_controller_on_the_same_embedded_store_is_refused(cluster: Path) -> None:
    config = cluster / "controller" / "controller.toml"
    text = config.read_text()
    second = config.with_name("second.toml")
    # A different listen port, the same store file.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    text = re.sub(r'listen = "127.0.0.1:\d+"', f'listen = "127.0.0.1:{free}"', text)
    text = re.sub(r'metrics_listen = "127.0.0.1:\d+"', "", text)
    second.write_text(text.replace("log_file", "# log_file"))
    result = subprocess.run(
        [sys.executable, "-m", "novaops.controller", "--config", str(second)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "in use by another controller" in result.stderr
    assert "Traceback" not in result.stderr


def _processes_of(state_dir: Path) -> list[int]:
    """Every live process whose command line or environment names the cluster's folder:
    daemons, QEMU stand-ins, the orphan, container init and app processes."""
    needle = str(state_dir)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        try:
            text = " ".join(proc.info["cmdline"] or []) + " ".join(proc.environ().values())
        except psutil.Error:
            continue
        if needle in text:
            found.append(proc.pid)
    return found


def test_dev_down_leaves_no_process(tmp_path: Path) -> None:
    state_dir = tmp_path / "c"
    up = novaops("dev", "up", "--nodes", "3", "--state-dir", str(state_dir), "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    daemons = [p["pid"] for p in dev_processes(state_dir)]
    assert len(daemons) == 4 and all(psutil.pid_exists(pid) for pid in daemons)
    namespaces = json.loads((state_dir / "cluster.json").read_text())["netns"]
    assert len(namespaces) == 3
    before = _processes_of(state_dir)
    # The daemons plus each node's stand-ins, orphan and container.
    assert set(daemons) < set(before), before
    down = novaops("dev", "down", "--state-dir", str(state_dir))
    try:
        assert down.returncode == 0, down.stderr
        assert _processes_of(state_dir) == []
        assert all(p["running"] is False for p in dev_processes(state_dir))
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
        assert not set(namespaces) & set(netns.stdout.split()), netns.stdout
    finally:
        for pid in _processes_of(state_dir):
            os.kill(pid, signal.SIGKILL)
