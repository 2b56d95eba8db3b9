"""A real executor (libvirt test driver, mTLS, in-process server) keeps its guards:
recovery fenced by the newest leader revision it has seen, mutating RPCs refused while
quarantined, health from its background checks in every heartbeat, and the counters
behind novaops_recovery_total / novaops_cleanup_total read from its Prometheus output.

Every process, server and channel a test starts is stopped by it (fixtures from
test_executor.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from novaops.executor import server
from novaops.executor.main import Executor
from novaops.executor.server import RpcKind
from novaops.v1 import common_pb2, controller_pb2_grpc, executor_pb2

from .test_executor import (
    CALL_TIMEOUT,
    Channels,
    ControllerStandIn,
    Pki,
    StartExecutor,
    channels,
    free_port,
    node_xml,
    pki,
    start_executor,
    stub,
    wait_until,
)

__all__ = ["channels", "node_xml", "pki", "start_executor"]  # fixtures, used by name

SLEEPER = "import sys, time\nprint('ready', flush=True)\ntime.sleep(120)\n"


def scrape(name: str, labels: dict[str, str]) -> float:
    """A sample of this process's Prometheus exposition (what /metrics would serve)."""
    text = generate_latest(REGISTRY).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    return child.pid


def stale_lock(executor: Executor, name: str = "stale.lock") -> Path:
    lock = Path(executor.config.host_root) / "var/lib/libvirt/qemu" / name
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(f"{dead_pid()}\n")
    return lock


async def recover(
    client: object, action: str, fence: int, dry_run: bool = False
) -> list[executor_pb2.RecoveryStep]:
    request = executor_pb2.RecoverRequest(
        action=action, dry_run=dry_run, actor="controller:ctl-0", fence_revision=fence
    )
    stream = client.Recover(request, timeout=CALL_TIMEOUT)  # type: ignore[attr-defined]
    return [step async for step in stream]


async def test_a_stale_fence_is_refused_and_the_newest_survives_a_restart(
    node_xml: Path, pki: Pki, start_executor: StartExecutor, channels: Channels
) -> None:
    executor = await start_executor(f"test://{node_xml}")
    client = stub(channels, executor, pki.controller)
    assert [s.outcome for s in await recover(client, "reconnect-libvirt", 7)] == ["done"]

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await recover(client, "reconnect-libvirt", 5)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == (
        "recovery reconnect-libvirt refused: fence revision 5 is older than 7, the newest "
        "this node has seen (a newer leader has acted on it since)"
    )
    # No fence at all: not from a leader.
    with pytest.raises(grpc.aio.AioRpcError) as unfenced:
        await recover(client, "reconnect-libvirt", 0)
    assert unfenced.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no fence_revision" in (unfenced.value.details() or "")
    # A dry run changes nothing: no fence needed, none checked.
    assert [s.outcome for s in await recover(client, "reconnect-libvirt", 0, dry_run=True)] == [
        "planned"
    ]
    planned = await recover(client, "reconnect-libvirt", 5, dry_run=True)
    assert [s.outcome for s in planned] == ["planned"]
    # A quarantine decision of the old leader is as stale as its recovery.
    applied = await client.ApplyQuarantine(
        executor_pb2.ApplyQuarantineRequest(
            quarantined=True,
            reason="old",
            actor="automation",
            source=common_pb2.QUARANTINE_SOURCE_AUTO,
            fence_revision=6,
        ),
        timeout=CALL_TIMEOUT,
    )
    assert not applied.changed and not applied.quarantined

    # The newest fence is kept with the quarantine state: a restarted executor
    # still refuses the old leader.
    restarted = Executor(executor.config, executor.libvirt)
    assert restarted.ctx.quarantine is not None
    assert restarted.ctx.quarantine.state.fence_revision == 7


async def test_a_mutating_rpc_is_refused_while_quarantined(
    node_xml: Path,
    pki: Pki,
    start_executor: StartExecutor,
    channels: Channels,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No RPC is mutating today; classify one so, to prove the guard is wired.
    table = dict(server.EXECUTOR_RPCS, GetVmStats=RpcKind.MUTATING)
    monkeypatch.setattr(server, "EXECUTOR_RPCS", table)
    executor = await start_executor(f"test://{node_xml}")
    client = stub(channels, executor, pki.controller)
    stats = executor_pb2.GetVmStatsRequest(vm="web-1")
    assert (await client.GetVmStats(stats, timeout=CALL_TIMEOUT)).vm == "web-1"
    await client.ApplyQuarantine(
        executor_pb2.ApplyQuarantineRequest(
            quarantined=True,
            reason="bad DIMM",
            actor="operator:alice",
            source=common_pb2.QUARANTINE_SOURCE_MANUAL,
            fence_revision=3,
        ),
        timeout=CALL_TIMEOUT,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.GetVmStats(stats, timeout=CALL_TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = refused.value.details() or ""
    assert details.startswith("GetVmStats refused: node node-1 is quarantined")
    assert "by operator:alice (manual): bad DIMM" in details
    # Reads and recovery stay allowed: they are how the node gets back.
    await client.GetHealth(executor_pb2.GetHealthRequest(), timeout=CALL_TIMEOUT)
    assert [s.outcome for s in await recover(client, "reconnect-libvirt", 3)] == ["done"]


@pytest.fixture
def orphans() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def start_orphan(started: list[subprocess.Popen[str]], host_root: Path) -> int:
    """A QEMU stand-in of this node only (its command line names the node's host
    root) for a domain libvirt does not have: an orphan."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SLEEPER, "-name", "guest=gone-vm", str(host_root)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    started.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc.pid


async def test_heartbeats_carry_the_health_check_verdict(
    node_xml: Path,
    pki: Pki,
    start_executor: StartExecutor,
    channels: Channels,
    orphans: list[subprocess.Popen[str]],
) -> None:
    stand_in = ControllerStandIn()
    registry = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    controller_pb2_grpc.add_RegistryServiceServicer_to_server(stand_in, registry)
    from novaops.client.tls import server_credentials

    port = registry.add_secure_port("127.0.0.1:0", server_credentials(pki.controller))
    await registry.start()
    try:
        executor = await start_executor(
            f"test://{node_xml}", [f"127.0.0.1:{free_port()}", f"127.0.0.1:{port}"]
        )
        start_orphan(orphans, Path(executor.config.host_root))

        def unhealthy() -> bool:
            last = stand_in.heartbeats[-1] if stand_in.heartbeats else None
            return (
                last is not None
                and last.health == common_pb2.HEALTH_STATUS_UNHEALTHY
                and "host.orphans" in last.failing_checks
            )

        await wait_until(unhealthy, stand_in.changed)
        assert stand_in.heartbeats[-1].HasField("checked_at")
        # The cheap GetHealth answers the same verdict with the cached failing checks.
        client = stub(channels, executor, pki.controller)
        cheap = await client.GetHealth(executor_pb2.GetHealthRequest(), timeout=CALL_TIMEOUT)
        assert cheap.status == common_pb2.HEALTH_STATUS_UNHEALTHY
        assert "host.orphans" in {c.check_id for c in cheap.checks}
        assert all(c.status in (3, 4) for c in cheap.checks)  # FAIL or ERROR only

        # Repaired: the next runs clear it.
        assert [s.outcome for s in await recover(client, "terminate-orphans", 1)] == ["done"]
        await wait_until(
            lambda: stand_in.heartbeats[-1].health == common_pb2.HEALTH_STATUS_HEALTHY,
            stand_in.changed,
        )
        assert list(stand_in.heartbeats[-1].failing_checks) == []
    finally:
        await registry.stop(None)


async def test_recovery_and_verify_clean_counters(
    node_xml: Path, pki: Pki, start_executor: StartExecutor, channels: Channels
) -> None:
    executor = await start_executor(f"test://{node_xml}")
    client = stub(channels, executor, pki.controller)
    success = {"outcome": "success"}
    failure = {"outcome": "failure"}
    removed = {"action": "remove-stale-locks", "outcome": "success"}
    before = {
        "cleanup_success": scrape("novaops_cleanup_total", success),
        "cleanup_failure": scrape("novaops_cleanup_total", failure),
        "recovery": scrape("novaops_recovery_total", removed),
    }

    stale_lock(executor)
    dirty = await client.VerifyClean(
        executor_pb2.VerifyCleanRequest(record_outcome=True), timeout=CALL_TIMEOUT
    )
    assert not dirty.clean
    assert scrape("novaops_cleanup_total", failure) == before["cleanup_failure"] + 1
    # The checks made for an unquarantine or by automation do not count.
    await client.VerifyClean(executor_pb2.VerifyCleanRequest(), timeout=CALL_TIMEOUT)
    assert scrape("novaops_cleanup_total", failure) == before["cleanup_failure"] + 1

    steps = await recover(client, "remove-stale-locks", 1)
    assert [s.outcome for s in steps] == ["done"] and not any(s.fatal for s in steps)
    assert scrape("novaops_recovery_total", removed) == before["recovery"] + 1
    assert scrape("novaops_cleanup_total", success) == before["cleanup_success"] + 1
    clean = await client.VerifyClean(
        executor_pb2.VerifyCleanRequest(record_outcome=True), timeout=CALL_TIMEOUT
    )
    assert clean.clean
    assert scrape("novaops_cleanup_total", success) == before["cleanup_success"] + 2
    await asyncio.sleep(0)
