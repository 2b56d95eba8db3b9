"""Issue #3 end to end: diagnostics fan out to 5 real executors with per-node deadlines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from novaops.client.api import NovaopsClient
from novaops.client.models import Check, NodeFailure
from novaops.devcluster import simhost
from novaops.devcluster.simnode import plan_node

from .conftest import NOVAOPS, DevCluster, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
NODES = [f"node-{i}" for i in range(1, 6)]


@pytest.fixture(scope="module")
def five(cluster_factory: Callable[..., DevCluster]) -> DevCluster:
    cluster = cluster_factory(5)
    wait_for(lambda: sum(n["state"] == "up" for n in cluster.json("node", "list")) == 5, 30, "5 up")
    return cluster


def test_diag_host_all_returns_results_for_all_five(five: DevCluster) -> None:
    result = five.cli("diag", "host", "--all", "--output", "json")
    assert result.returncode in (0, 1), result.stderr
    checks = json.loads(result.stdout)
    assert {c["node"] for c in checks} == set(NODES)
    for node in NODES:
        ids = {c["check_id"] for c in checks if c["node"] == node}
        assert {"host.kernel", "host.libvirt", "host.orphans", "host.locks"} <= ids
    failing = [c for c in checks if c["status"] in ("fail", "error")]
    assert all(c["remediation"] for c in failing)
    assert (result.returncode == 1) == bool(failing)


def test_diag_vm_finds_its_node_and_the_crash(five: DevCluster) -> None:
    result = five.cli("diag", "vm", "node-3-db-1", "--output", "json")
    assert result.returncode == 1, result.stderr
    checks = json.loads(result.stdout)
    assert {c["node"] for c in checks} == {"node-3"}
    domain = next(c for c in checks if c["check_id"] == "vm.domain")
    assert domain["status"] == "fail" and "crashed" in domain["summary"]
    commands = [r["command"] for r in domain["remediation"]]
    assert "novaops recover restart-domain --node node-3 --target node-3-db-1" in commands


def test_table_output_ends_with_a_summary_line(five: DevCluster) -> None:
    result = five.cli("diag", "vm", "node-1-cache-1")
    assert result.returncode == 1
    last = result.stdout.strip().splitlines()[-1]
    assert "ok" in last and "fail" in last


def test_a_hung_node_gets_a_deadline_error_while_others_complete(five: DevCluster) -> None:
    pid = five.pid("node-4")
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        result = five.cli("diag", "host", "--all", "--node-timeout", "3", "--output", "json")
        elapsed = time.monotonic() - start
    finally:
        os.kill(pid, signal.SIGCONT)
    items = json.loads(result.stdout)
    errors = [i for i in items if "error" in i]
    assert [e["node"] for e in errors] == ["node-4"]
    assert errors[0]["error"]["kind"] == "deadline_exceeded"
    assert {i["node"] for i in items if "check_id" in i} == set(NODES) - {"node-4"}
    assert elapsed < 3 + 6  # the deadline plus process start-up, never the hung node's pace
    assert result.returncode in (1, 3)


def test_jsonl_streams_each_result_as_it_arrives(five: DevCluster) -> None:
    """Hung nodes hold back only their own lines: node-1's results are printed (one
    JSON object per line, flushed each) while the others' deadline still runs."""
    wait_for(lambda: sum(n["state"] == "up" for n in five.json("node", "list")) == 5, 30, "5 up")
    deadline = 5.0
    hung = NODES[1:]  # node-1's few results fit in a pipe buffer: unflushed, they would wait
    pids = [five.pid(node) for node in hung]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        args = ["diag", "host", "--all", "--node-timeout", str(deadline), "-o", "jsonl"]
        with subprocess.Popen(
            [*NOVAOPS, "--config", str(five.config), *args],
            stdout=subprocess.PIPE,
            text=True,
            # As an operator's pipe into jq: block-buffered unless the CLI flushes.
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        ) as proc:
            assert proc.stdout is not None
            lines = [(time.monotonic() - started, line) for line in proc.stdout]
            code = proc.wait(timeout=60)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    items = [json.loads(line) for _, line in lines]
    assert all(isinstance(i, dict) for i in items)
    assert {i["node"] for i in items if "check_id" in i} == {"node-1"}
    errors = [(at, i) for (at, _), i in zip(lines, items, strict=True) if "error" in i]
    assert sorted(i["node"] for _, i in errors) == hung
    assert all(i["error"]["kind"] == "deadline_exceeded" for _, i in errors)
    first_at = lines[0][0]
    assert first_at < errors[0][0] - deadline / 2, (first_at, errors[0][0])
    assert code in (1, 3)


def test_vm_health_report_is_one_fan_out_over_every_vm(five: DevCluster) -> None:
    # The hung-node test before this one may leave its node marked down for a moment.
    wait_for(lambda: sum(n["state"] == "up" for n in five.json("node", "list")) == 5, 30, "5 up")
    result = five.cli("vm", "health-report", "--output", "json")
    assert result.returncode == 1, result.stderr
    items = json.loads(result.stdout)
    assert all(i.get("status") in ("fail", "error") for i in items), items
    domain_failures = {(i["node"], i["target"]) for i in items if i["check_id"] == "vm.domain"}
    for node in NODES:  # every simulated node has a crashed and a paused domain
        assert (node, f"{node}-db-1") in domain_failures
        assert (node, f"{node}-cache-1") in domain_failures
    healthy = five.cli("diag", "vm", "node-2-web-1", "--output", "json")
    assert healthy.returncode == 0, healthy.stdout
    assert not any(i["target"] == "node-2-web-1" for i in items)
    table = five.cli("vm", "health-report")
    assert "VM(s) failing" in table.stdout.strip().splitlines()[-1]


def test_diag_vm_hosted_on_a_hung_node_names_that_node(five: DevCluster) -> None:
    pid = five.pid("node-2")
    os.kill(pid, signal.SIGSTOP)
    try:
        result = five.cli("diag", "vm", "node-2-web-1", "--node-timeout", "2", "--output", "json")
    finally:
        os.kill(pid, signal.SIGCONT)
    # The nodes that answered do not have it; the one that did not is named.
    items = json.loads(result.stdout)
    assert result.returncode == 3, result.stderr
    assert [i["node"] for i in items] == ["node-2"]
    assert items[0]["error"]["kind"] in ("deadline_exceeded", "down")


@pytest.mark.skipif(
    simhost.container_support() is not None,
    reason=f"no simulated containers: {simhost.container_support()}",
)
def test_diag_container_without_a_node_searches_every_node(five: DevCluster) -> None:
    # Each simulated node runs <node>-app-1, one of whose two declared ports is closed.
    for selection in ((), ("--all",)):
        result = five.cli("diag", "container", "node-4-app-1", *selection, "--output", "json")
        assert result.returncode == 1, result.stderr
        checks = json.loads(result.stdout)
        assert {c["node"] for c in checks} == {"node-4"}, selection
        statuses = [(c["check_id"], c["status"]) for c in checks]
        assert statuses[0] == ("container.locate", "ok")
        assert ("container.port", "fail") in statuses
    missing = five.cli("diag", "container", "no-such-app")
    assert missing.returncode == 5, missing.stdout
    assert missing.stderr.strip() == "novaops: no node runs a container named 'no-such-app'"
    # A node named with --node still says the container is not there.
    named = five.cli("diag", "container", "no-such-app", "--node", "node-2", "--output", "json")
    assert named.returncode == 1, named.stderr
    assert [(c["node"], c["check_id"], c["status"]) for c in json.loads(named.stdout)] == [
        ("node-2", "container.locate", "fail")
    ]
    # A node that cannot answer is named: the container may be there.
    pid = five.pid("node-2")
    os.kill(pid, signal.SIGSTOP)
    try:
        hung = [
            five.cli("diag", "container", name, "--node-timeout", "2", "--output", "json")
            for name in ("node-4-app-1", "no-such-app")
        ]
    finally:
        os.kill(pid, signal.SIGCONT)
    found, absent = hung
    assert found.returncode == 1, found.stderr
    items = json.loads(found.stdout)
    assert {i["node"] for i in items if "check_id" in i} == {"node-4"}
    assert [i["node"] for i in items if "error" in i] == ["node-2"]
    assert absent.returncode == 3, absent.stderr
    assert [i["node"] for i in json.loads(absent.stdout)] == ["node-2"]


def test_vm_stats_finds_the_node_and_reads_libvirt_counters(five: DevCluster) -> None:
    stats = five.json("vm", "stats", "node-3-web-1")  # running
    assert (stats["node"], stats["running"]) == ("node-3", True)
    assert stats["cpu_time_ns"] > 0 and stats["memory_kib"] > 0
    assert [b["device"] for b in stats["block"]] == ["vda"]
    assert [i["device"] for i in stats["interfaces"]] == ["vtap3-0"]
    table = five.cli("vm", "stats", "node-3-web-1").stdout
    assert "cpu time:" in table and "disk vda: read" in table
    off = five.json("vm", "stats", "node-3-batch-1")  # shut off: only its memory
    assert (off["running"], off["cpu_time_ns"], off["block"]) == (False, 0, [])
    assert off["memory_kib"] > 0
    assert (
        "not running: no CPU, disk or interface counters"
        in five.cli("vm", "stats", "node-3-batch-1").stdout
    )
    missing = five.cli("vm", "stats", "no-such-vm")
    assert missing.returncode == 5, missing.stdout
    assert missing.stderr.strip() == "novaops: no node lists a domain named 'no-such-vm'"
    elsewhere = five.cli("vm", "stats", "node-3-web-1", "--node", "node-1")
    assert elsewhere.returncode == 5, elsewhere.stdout
    assert "no domain named 'node-3-web-1' on node node-1" in elsewhere.stderr


def test_vm_list_is_the_fleet_view_of_every_planned_domain(five: DevCluster) -> None:
    wait_for(lambda: sum(n["state"] == "up" for n in five.json("node", "list")) == 5, 30, "5 up")
    vms = five.json("vm", "list")
    expected = {
        (node, d.name): d for i, node in enumerate(NODES, 1) for d in plan_node(node, i).domains
    }
    assert {(v["node"], v["name"]) for v in vms} == set(expected)
    assert [(v["node"], v["name"]) for v in vms] == sorted(expected)  # grouped by node
    for vm in vms:
        planned = expected[(vm["node"], vm["name"])]
        assert (vm["uuid"], vm["vcpus"]) == (planned.uuid, planned.vcpus)
        assert vm["memory_mib"] * 1024 == planned.memory_kib
        assert vm["state"] == planned.state.name.lower()
        # Uptime is the age of the QEMU process, which the simulated host starts
        # for running and paused domains (a crashed one has lost its process).
        has_process = vm["state"] in ("running", "paused")
        assert (0 < vm["uptime_seconds"] < 3600) == has_process, vm
        assert vm["state_reason"], vm  # libvirt's reason name ("unknown" from the test driver)

    one = five.json("vm", "list", "--node", "node-2")
    assert {v["node"] for v in one} == {"node-2"} and len(one) == sum(
        node == "node-2" for node, _ in expected
    )
    table = five.cli("vm", "list", "--node", "node-2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"{len(one)} VM(s)")
    assert any("node-2-web-1" in line and "running" in line and "iB" in line for line in lines)

    pid = five.pid("node-5")
    os.kill(pid, signal.SIGSTOP)
    try:
        hung = five.cli("vm", "list", "--node-timeout", "2", "-o", "json")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert hung.returncode == 3, hung.stderr  # the others listed, one node unreachable
    items = json.loads(hung.stdout)
    assert [i["node"] for i in items if "error" in i] == ["node-5"]
    assert {i["node"] for i in items if "name" in i} == set(NODES) - {"node-5"}


def test_an_unknown_node_name_is_a_usage_error(five: DevCluster) -> None:
    result = five.cli("diag", "host", "--node", "node-1", "--node", "node-99")
    assert result.returncode == 2, result.stdout
    assert result.stdout.strip().splitlines()[-1].endswith("1 unknown node name")


def test_an_executor_killed_mid_fan_out_is_an_explicit_error(five: DevCluster) -> None:
    victim = five.pid("node-5")
    # Stopped first, so the kill lands while its call is certainly in flight.
    os.kill(victim, signal.SIGSTOP)
    killer = threading.Timer(0.5, os.kill, (victim, signal.SIGKILL))
    with NovaopsClient.from_config_file(five.config) as client:
        killer.start()
        start = time.monotonic()
        try:
            results = list(client.diagnose(host=True, all_nodes=True, per_node_ms=8000))
        finally:
            killer.cancel()
        elapsed = time.monotonic() - start
    failures = [r for r in results if isinstance(r, NodeFailure)]
    checks = [r for r in results if isinstance(r, Check)]
    assert [f.node for f in failures] == ["node-5"]
    assert failures[0].kind in ("unreachable", "failed")
    assert elapsed < 8  # the dead node's error came before its deadline
    assert not any(c.node == "node-5" for c in checks)
    for node in set(NODES) - {"node-5"}:
        assert any(c.node == node and c.check_id == "host.kernel" for c in checks)
    # Later fan-outs report it at once as down, without trying it.
    wait_for(
        lambda: any(
            n["name"] == "node-5" and n["state"] == "down" for n in five.json("node", "list")
        ),
        15,
        "node-5 down",
    )
    with NovaopsClient.from_config_file(five.config) as client:
        after = list(client.diagnose(host=True, all_nodes=True))
    down = [r for r in after if isinstance(r, NodeFailure)]
    assert [(f.node, f.kind) for f in down] == [("node-5", "down")]


def test_a_plain_grpc_client_gets_one_result_per_message(five: DevCluster) -> None:
    """Batching is opt-in: a gRPC client that does not ask for it gets ``check``
    messages; the library asks and gets ``checks`` batches with the same results."""
    from novaops.client.config import ClientConfig
    from novaops.client.tls import secure_channel
    from novaops.v1 import common_pb2, controller_pb2, controller_pb2_grpc, executor_pb2

    config = ClientConfig.load(five.config)
    request = controller_pb2.FleetDiagnoseRequest(
        # node-5 may have been killed by an earlier test.
        selector=common_pb2.NodeSelector(nodes=NODES[:4]),
        diagnose=executor_pb2.DiagnoseRequest(host=True),
    )
    channel = secure_channel(config.controllers[0], config.tls)
    try:
        stub = controller_pb2_grpc.FleetServiceStub(channel)
        plain = list(stub.Diagnose(request, timeout=60))
        request.batched = True
        batched = list(stub.Diagnose(request, timeout=60))
    finally:
        channel.close()
    assert {m.WhichOneof("result") for m in plain} == {"check"}
    assert {m.WhichOneof("result") for m in batched} == {"checks"}
    in_batches = [r for m in batched for r in m.checks.results]
    assert len(batched) < len(in_batches)  # results travelled together

    def keys(results: list[common_pb2.CheckResult]) -> list[tuple[str, str, str]]:
        return sorted((r.node, r.check_id, r.target) for r in results)

    assert keys([m.check for m in plain]) == keys(in_batches)
    assert {r.node for r in in_batches} == set(NODES[:4])
