"""`novaops node remove` on a 3-node dev cluster of real processes, through the real
CLI: a decommissioned node leaves the registry and every `--all` fan-out, with an
audited event; a node that is up, unknown or quarantined is refused, and nothing
changes then."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from novaops.pki.identity import Identity, Role
from novaops.pki.issue import CertificateAuthority

from .conftest import DevCluster, novaops, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def three(cluster_factory: Callable[..., DevCluster]) -> DevCluster:
    cluster = cluster_factory(3, "--no-automation")
    wait_for(lambda: len(up_nodes(cluster)) == 3, 60, "3 nodes up")
    return cluster


def nodes(cluster: DevCluster) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in cluster.json("node", "list")}


def up_nodes(cluster: DevCluster) -> set[str]:
    return {name for name, n in nodes(cluster).items() if n["state"] == "up"}


def stop_executor(cluster: DevCluster, node: str) -> None:
    """Stop a node's executor for good (as decommissioning does), and wait until
    the registry calls it down."""
    pid = cluster.pid(node)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not psutil.pid_exists(pid) or _zombie(pid), 30, f"{node} executor gone")
    wait_for(lambda: nodes(cluster)[node]["state"] == "down", 60, f"{node} down")


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def diag_nodes(cluster: DevCluster) -> tuple[set[str], set[str]]:
    """(nodes with check results, nodes with an error result) of diag host --all."""
    items = cluster.json("diag", "host", "--all", ok=(0, 1, 3))
    errors = {item["node"] for item in items if "error" in item}
    return {item["node"] for item in items if "error" not in item}, errors


def test_a_node_that_is_up_is_not_removed(three: DevCluster) -> None:
    refused = three.cli("node", "remove", "node-1", "--reason", "decommissioned")
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "node-1 is up" in refused.stderr and "stop its executor first" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert "node-1" in nodes(three)


def test_only_an_admin_removes_nodes(three: DevCluster, tmp_path: Path) -> None:
    ca = CertificateAuthority.load(three.state_dir / "certs")
    files = ca.issue(Identity(Role.OPERATOR, "olga"), tmp_path)
    controllers = next(
        line for line in three.config.read_text().splitlines() if line.startswith("controllers")
    )
    config = tmp_path / "operator.toml"
    config.write_text(
        f'{controllers}\n[tls]\nca = "{three.state_dir}/certs/ca.pem"\n'
        f'cert = "{files.cert}"\nkey = "{files.key}"\n'
    )
    refused = novaops("--config", str(config), "node", "remove", "node-1", "--reason", "x")
    assert refused.returncode == 5, refused.stderr
    assert "needs the admin role; caller is operator:olga" in refused.stderr
    assert "node-1" in nodes(three)


def test_a_reason_and_a_registered_node_are_required(three: DevCluster) -> None:
    empty = three.cli("node", "remove", "node-1", "--reason", " ")
    assert empty.returncode == 2, empty.stderr
    assert "non-empty reason" in empty.stderr
    unknown = three.cli("node", "remove", "ghost", "--reason", "typo")
    assert unknown.returncode == 5, unknown.stderr
    assert "no node named 'ghost' is registered" in unknown.stderr
    assert set(nodes(three)) == {"node-1", "node-2", "node-3"}


def test_a_stopped_node_leaves_the_registry_and_the_fan_out(three: DevCluster) -> None:
    stop_executor(three, "node-3")
    answered, failed = diag_nodes(three)
    assert "node-3" in failed and "node-3" not in answered  # unreachable, every run

    dry = three.cli("node", "remove", "node-3", "--reason", "decommissioned", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: would remove node-3" in dry.stdout
    assert "node-3" in nodes(three)

    removal = three.json("node", "remove", "node-3", "--reason", "decommissioned")
    assert removal["removed"] is True and removal["event_id"]
    assert set(nodes(three)) == {"node-1", "node-2"}
    answered, failed = diag_nodes(three)
    assert answered == {"node-1", "node-2"} and not failed

    events = [e for e in three.json("events") if e["kind"] == "node.removed"]
    assert [e["id"] for e in events] == [removal["event_id"]]
    assert events[0]["node"] == "node-3"
    assert events[0]["attributes"]["reason"] == "decommissioned"
    assert events[0]["attributes"]["actor"].startswith("admin:")

    # Again (a retry after a deadline, or someone else was first): refused, naming
    # the removal that happened.
    again = three.cli("node", "remove", "node-3", "--reason", "decommissioned")
    assert again.returncode == 5 and "no node named 'node-3' is registered" in again.stderr
    assert " by admin:" in again.stderr and f"(decommissioned; event {removal['event_id']})" in (
        again.stderr
    )
    assert len(again.stderr.strip().splitlines()) == 1


def test_a_quarantined_node_is_released_before_it_is_removed(three: DevCluster) -> None:
    assert three.cli("quarantine", "node-2", "--reason", "bad dimm").returncode == 0
    stop_executor(three, "node-2")
    refused = three.cli("node", "remove", "node-2", "--reason", "decommissioned")
    assert refused.returncode == 5, refused.stderr
    assert "node-2 is quarantined" in refused.stderr and "unquarantine node-2" in refused.stderr
    assert nodes(three)["node-2"]["quarantined"] is True

    released = three.cli("unquarantine", "node-2", "--reason", "decommissioned", "--force")
    assert released.returncode == 0, released.stderr
    assert three.json("node", "remove", "node-2", "--reason", "decommissioned")["removed"]
    assert set(nodes(three)) == {"node-1"}
    history = [h["action"] for h in three.json("quarantine", "history", "node-2")]
    assert history == ["quarantine", "unquarantine"]  # the history stays
