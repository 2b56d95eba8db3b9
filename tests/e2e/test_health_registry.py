"""Issue #5 on a one-node dev cluster of real processes, through the real CLI: node health
in the registry and in the controller's metrics follows the node's health checks,
`events --follow` streams a quarantine made while following, recovery shows its
outcome and audits actor and reason, and `cluster status` names why automation
does not run. A two-node cluster with automation trips the breaker: gauge, quarantine
count and worker health scraped from the controller.

The simulated node starts with an orphan QEMU stand-in and a stale lock; automation
is off, so the faults stay until the test repairs them.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import NOVAOPS, DevCluster, wait_for
from .test_automation import FAST, ImmutableLocks, immutable, needs_chattr

__all__ = ["immutable"]  # the fixture, used by name
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
NODE = "node-1"


@pytest.fixture(scope="module")
def one(cluster_factory: Callable[..., DevCluster]) -> DevCluster:
    cluster = cluster_factory(1, "--no-automation")
    wait_for(lambda: cluster.json("node", "list")[0]["state"] == "up", 30, "node-1 up")
    return cluster


def metrics_url(cluster: DevCluster) -> str:
    text = (cluster.state_dir / "controller" / "controller.toml").read_text()
    match = re.search(r'metrics_listen = "([^"]+)"', text)
    assert match, text
    return f"http://{match.group(1)}/metrics"


def scrape(cluster: DevCluster) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The controller's Prometheus exposition: (name, sorted labels) -> value."""
    with urllib.request.urlopen(metrics_url(cluster), timeout=10) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def worker_health(cluster: DevCluster) -> dict[str, float]:
    samples = scrape(cluster)
    return {
        status: samples.get(("novaops_worker_health", (("status", status),)), -1.0)
        for status in ("healthy", "unhealthy", "quarantined")
    }


def node(cluster: DevCluster) -> dict[str, Any]:
    return dict(cluster.json("node", "list")[0])


def test_an_orphan_makes_the_node_unhealthy_in_the_registry_and_the_metric(
    one: DevCluster,
) -> None:
    # Heartbeats carry the verdict of the node's background health checks.
    unhealthy = wait_for(
        lambda: (n := node(one))["health"] == "unhealthy" and "host.orphans" in n["failing_checks"],
        30,
        "node-1 unhealthy with host.orphans from its heartbeats",
    )
    assert unhealthy
    assert "host.locks" in node(one)["failing_checks"]
    assert node(one)["health_checked_at"]
    wait_for(
        lambda: worker_health(one) == {"healthy": 0, "unhealthy": 1, "quarantined": 0},
        15,
        "novaops_worker_health from the registry",
    )
    samples = scrape(one)
    assert samples[("novaops_quarantined_nodes", ())] == 0
    assert samples[("novaops_automation_breaker_tripped", ())] == 0

    # `health` runs the checks by default; --liveness answers the last verdict.
    checked = one.cli("health", "--node", NODE, "-o", "json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    [report] = json.loads(checked.stdout)
    assert report["status"] == "unhealthy"
    failing = {c["check_id"] for c in report["checks"] if c["status"] in ("fail", "error")}
    assert {"host.orphans", "host.locks"} <= failing
    assert {"host.libvirt", "host.disk"} <= {c["check_id"] for c in report["checks"]}
    cheap = one.cli("health", "--node", NODE, "--liveness", "-o", "json")
    assert cheap.returncode == 1, cheap.stdout + cheap.stderr
    [report] = json.loads(cheap.stdout)
    assert report["status"] == "unhealthy"
    assert {c["check_id"] for c in report["checks"]} == failing  # only the failing ones

    status = one.cli("cluster", "status")
    assert "automation:  disabled in the controller config (ctl-0)" in status.stdout
    assert one.json("cluster", "status")["automation_enabled"] is False


class Follower:
    """`novaops events --follow -o jsonl` as a process, its lines read by a thread."""

    def __init__(self, cluster: DevCluster) -> None:
        self.process = subprocess.Popen(
            [*NOVAOPS, "--config", str(cluster.config), "events", "--follow", "-o", "jsonl"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> Any:
        def found() -> dict[str, Any] | None:
            while not self.lines.empty():
                self.seen.append(json.loads(self.lines.get()))
            return next((e for e in self.seen if predicate(e)), None)

        return wait_for(found, timeout, "an event from events --follow")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Ctrl-C: the command ends cleanly
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process.communicate(timeout=10)
        self._reader.join(timeout=10)


@pytest.fixture
def follower(one: DevCluster) -> Iterator[Follower]:
    following = Follower(one)
    try:
        yield following
    finally:
        following.stop()


def test_events_follow_streams_a_quarantine_made_while_following(
    one: DevCluster, follower: Follower
) -> None:
    # The backlog comes first (the node came up): the stream is open before we act.
    follower.wait_for(lambda e: e["kind"] == "node.up", 20)
    done = one.json("quarantine", NODE, "--reason", "follow drill")
    assert done["changed"] is True
    event = follower.wait_for(lambda e: e["kind"] == "quarantine" and e["node"] == NODE, 20)
    assert re.fullmatch(r"\d{12}", event["id"])
    assert "follow drill" in event["message"]
    listed = one.json("events", "--kind", "quarantine")
    assert event["id"] in [e["id"] for e in listed]
    assert follower.process.poll() is None  # still following

    wait_for(
        lambda: (
            worker_health(one)["quarantined"] == 1
            and scrape(one)[("novaops_quarantined_nodes", ())] == 1
        ),
        15,
        "the quarantine in the controller's metrics",
    )
    released = one.json("unquarantine", NODE, "--reason", "follow drill over", "--force")
    assert released["changed"] is True
    follower.wait_for(lambda e: e["kind"] == "unquarantine" and e["node"] == NODE, 20)


def test_recovery_shows_its_outcome_audits_the_reason_and_heals_the_node(
    one: DevCluster,
) -> None:
    planned = one.cli("recover", "terminate-orphans", "--node", NODE, "--dry-run")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert planned.stdout.strip().splitlines()[-1] == f"{NODE}  terminate-orphans: planned"

    ran = one.cli(
        "recover", "terminate-orphans", "--node", NODE, "--grace", "1", "--reason", "e2e orphan"
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == f"{NODE}  terminate-orphans: done"
    steps = one.json("recover", "remove-stale-locks", "--node", NODE, "--reason", "e2e lock")
    assert steps and {s["action_outcome"] for s in steps} == {"done"}

    recoveries = [e for e in one.json("events", "--kind", "recovery") if e["node"] == NODE]
    orphan = next(e for e in recoveries if e["attributes"]["action"] == "terminate-orphans")
    assert orphan["attributes"]["actor"] == "admin:admin"
    assert orphan["attributes"]["reason"] == "e2e orphan"
    assert orphan["attributes"]["outcome"] == "success"
    assert int(orphan["attributes"]["fence"]) > 0

    # The node's own checks see it clean: registry and metric follow.
    wait_for(lambda: node(one)["health"] == "healthy", 30, "node-1 healthy again")
    assert node(one)["failing_checks"] == []
    wait_for(
        lambda: worker_health(one) == {"healthy": 1, "unhealthy": 0, "quarantined": 0},
        15,
        "novaops_worker_health healthy",
    )
    clean = one.cli("health", "--node", NODE)
    assert clean.returncode == 0, clean.stdout + clean.stderr


@needs_chattr
def test_a_tripped_breaker_and_the_quarantine_show_in_the_controller_metrics(
    cluster_factory: Callable[..., DevCluster], immutable: ImmutableLocks
) -> None:
    # Two nodes with a fault recovery cannot fix: at most one may be auto-quarantined
    # (10%, at least 1 node), so the second escalation trips the breaker.
    cluster = cluster_factory(2, *FAST)
    for name in ("node-1", "node-2"):
        immutable.add(cluster, name)
    wait_for(
        lambda: cluster.json("automation", "status")["breaker_tripped"], 120, "breaker tripped"
    )
    # The gauges follow the registry on the controller's watch loop: wait for them
    # together rather than read them once.
    wanted = {
        ("novaops_automation_breaker_tripped", ()): 1.0,
        ("novaops_quarantined_nodes", ()): 1.0,
        ("novaops_worker_health", (("status", "quarantined"),)): 1.0,
        ("novaops_worker_health", (("status", "unhealthy"),)): 1.0,
    }

    def gauges() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        samples = scrape(cluster)
        return {key: samples.get(key, -1.0) for key in wanted}

    wait_for(lambda: gauges() == wanted, 30, f"the controller's gauges at {wanted}")
    assert "breaker TRIPPED" in cluster.cli("cluster", "status").stdout
