"""Recovery runs on the leader only: a follower replica (etcd, two controllers) refuses
it naming the leader, plans dry runs itself, and the CLI fails over to the leader."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import DevCluster, wait_for
from .test_ha import Replica, replicas, second_controller

__all__ = ["replicas"]  # the fixture, used by name
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def client_config(cluster: DevCluster, tmp_path: Path, name: str, controllers: list[str]) -> Path:
    text = cluster.config.read_text()
    listed = ", ".join(f'"{c}"' for c in controllers)
    path = tmp_path / f"{name}.toml"
    path.write_text(re.sub(r"controllers = \[[^\]]*\]", f"controllers = [{listed}]", text))
    return path


def test_a_follower_refuses_recovery_and_the_client_goes_to_the_leader(
    cluster_factory: Callable[..., DevCluster], replicas: list[Replica], tmp_path: Path
) -> None:
    cluster = cluster_factory(1, "--store", "etcd", "--no-automation")
    config, follower_address = second_controller(cluster, "ctl-1", tmp_path)
    replicas.append(Replica(config))
    leader_address = re.search(r'controllers = \["([^"]+)"', cluster.config.read_text())
    assert leader_address
    wait_for(lambda: cluster.json("leader", "status")["name"] == "ctl-0", 20, "ctl-0 leads")
    only_follower = DevCluster(cluster.state_dir)
    only_follower.config = client_config(cluster, tmp_path, "follower", [follower_address])
    wait_for(lambda: only_follower.cli("node", "list").returncode == 0, 20, "ctl-1 answering reads")

    refused = only_follower.cli("recover", "remove-stale-locks", "--node", "node-1")
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "ctl-1 is not the leader (the leader is ctl-0 at" in refused.stderr
    assert "Traceback" not in refused.stderr
    refused = only_follower.cli("health", "--node", "node-1", "--recover")
    assert refused.returncode == 5 and "is not the leader" in refused.stderr

    planned = only_follower.cli("recover", "remove-stale-locks", "--node", "node-1", "--dry-run")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert planned.stdout.strip().splitlines()[-1] == "node-1  remove-stale-locks: planned"

    # Follower first, then the leader: the client library retries on the leader.
    both = DevCluster(cluster.state_dir)
    both.config = client_config(
        cluster, tmp_path, "both", [follower_address, leader_address.group(1)]
    )
    ran = both.cli("recover", "remove-stale-locks", "--node", "node-1", "--reason", "failover")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "node-1  remove-stale-locks: done"
    audited = [e for e in both.json("events", "--kind", "recovery") if e["node"] == "node-1"]
    assert audited[-1]["attributes"]["reason"] == "failover"
    leader_term = both.json("leader", "status")["revision"]
    assert audited[-1]["attributes"]["fence"] == str(leader_term)
