"""End to end: the heartbeat interval grows with the fleet (max_heartbeats_per_second).

A 3-node dev cluster (heartbeat 500 ms) whose controller is restarted with
``max_heartbeats_per_second = 2``: 3 nodes may then send 2 beats a second, so the
controller hands out 1.5 s. The executors take it from their next answer, the
metric shows it, the registry sees beats that far apart, and a killed executor
goes down after 3 missed beats of 1.5 s (not of 500 ms).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from novaops.controller.registry import liveness_ttl

from .conftest import DevCluster, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
PACED_MS = 1500  # 3 nodes at 2 beats/s


@pytest.fixture(scope="module")
def paced(cluster_factory: Callable[..., DevCluster]) -> Iterator[DevCluster]:
    cluster = cluster_factory(3, "--no-faults", "--no-automation")
    config = cluster.state_dir / "controller" / "controller.toml"
    text = config.read_text()
    config.write_text(
        text.replace("[controller]\n", "[controller]\nmax_heartbeats_per_second = 2.0\n", 1)
    )
    dev_controller = cluster.pid("ctl-0")
    os.kill(dev_controller, signal.SIGTERM)
    wait_for(lambda: not psutil.pid_exists(dev_controller), 30, "the dev controller to exit")
    log = (cluster.state_dir / "logs" / "ctl-0-paced.log").open("ab")
    controller = subprocess.Popen(
        [sys.executable, "-m", "novaops.controller", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield cluster
    finally:
        controller.terminate()
        try:
            controller.wait(timeout=30)
        except subprocess.TimeoutExpired:
            controller.kill()
            controller.wait(timeout=30)
        log.close()


def interval_metric(cluster: DevCluster) -> float | None:
    text = (cluster.state_dir / "controller" / "controller.toml").read_text()
    match = re.search(r'metrics_listen = "([^"]+)"', text)
    assert match, text
    try:
        with urllib.request.urlopen(f"http://{match.group(1)}/metrics", timeout=5) as answer:
            exposition = answer.read().decode()
    except OSError:
        return None  # not listening yet
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "novaops_heartbeat_interval_seconds":
                return float(sample.value)
    return None


def last_heartbeats(cluster: DevCluster) -> dict[str, dt.datetime]:
    return {
        n["name"]: dt.datetime.fromisoformat(n["last_heartbeat"].replace("Z", "+00:00"))
        for n in cluster.json("node", "list")
        if n.get("last_heartbeat")
    }


def test_the_fleet_heartbeats_at_the_paced_interval(paced: DevCluster) -> None:
    wait_for(lambda: interval_metric(paced) == PACED_MS / 1000, 60, "the paced interval metric")
    log = paced.state_dir / "logs" / "node-1.log"
    wait_for(
        lambda: "heartbeat every 1.50s" in log.read_text(),  # registration or a beat
        30,
        "node-1 to take the paced interval",
    )
    # The beats the registry records for node-1 are now ~1.5 s apart.
    seen: list[dt.datetime] = []
    deadline = time.monotonic() + 7
    while time.monotonic() < deadline:
        beat = last_heartbeats(paced).get("node-1")
        if beat is not None and (not seen or beat != seen[-1]):
            seen.append(beat)
        time.sleep(0.1)
    # The first value seen may be any time since the last beat: gaps from the second.
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(seen[1:])]
    assert gaps, seen
    assert all(1.3 <= gap <= 2.5 for gap in gaps), gaps


def test_a_killed_node_goes_down_after_missed_paced_beats(paced: DevCluster) -> None:
    wait_for(lambda: interval_metric(paced) == PACED_MS / 1000, 60, "the paced interval metric")
    log = paced.state_dir / "logs" / "node-2.log"
    wait_for(lambda: "heartbeat every 1.50s" in log.read_text(), 30, "node-2 paced")
    time.sleep(PACED_MS / 1000 + 0.5)  # a beat at the paced interval has set its TTL
    os.kill(paced.pid("node-2"), signal.SIGKILL)
    slowest = 0.0
    while True:
        started = time.monotonic()
        nodes = {n["name"]: n for n in paced.json("node", "list")}
        slowest = max(slowest, time.monotonic() - started)
        seen_at = dt.datetime.now(dt.UTC)
        if nodes["node-2"]["state"] == "down":
            break
        assert slowest < 30
        time.sleep(0.1)
    last = dt.datetime.fromisoformat(nodes["node-2"]["last_heartbeat"].replace("Z", "+00:00"))
    waited = (seen_at - last).total_seconds()
    # Down after 3 missed beats of 1.5 s plus the grace, not after 3 of 500 ms.
    assert waited > liveness_ttl(500, 3) + 1.0, waited
    assert waited <= liveness_ttl(PACED_MS, 3) + slowest + 0.5 + 0.5, waited
    assert nodes["node-1"]["state"] == "up" and nodes["node-3"]["state"] == "up"
