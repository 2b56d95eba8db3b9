"""The executor for real: libvirt test driver, mTLS with certificates from our CA,
the gRPC server in-process, registration against an in-process controller stand-in,
and the ``novaops-executor`` command as a subprocess.

Every server and channel a test starts is stopped by the test's fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from novaops.client.config import TLSFiles
from novaops.client.tls import server_credentials
from novaops.executor.checks.domains import LibvirtDomainSource
from novaops.executor.config import ExecutorConfig
from novaops.executor.libvirt_access import LibvirtConnection
from novaops.executor.main import Executor
from novaops.executor.server import QUARANTINE_FLAG_FILE
from novaops.pki.identity import Identity, Role
from novaops.pki.issue import CertificateAuthority, IssuedFiles
from novaops.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    executor_pb2,
    executor_pb2_grpc,
)

CALL_TIMEOUT = 10.0
TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"


def domain_xml(name: str, runstate: int | None, devices: str = "") -> str:
    state = f"<test:runstate>{runstate}</test:runstate>" if runstate is not None else ""
    return (
        f"<domain type='test' xmlns:test='{TEST_NS}'><name>{name}</name>"
        "<memory>262144</memory><vcpu>2</vcpu><os><type>hvm</type></os>"
        f"<devices>{devices}</devices>{state}</domain>"
    )


NODE_XML = (
    "<node>"
    + domain_xml(
        "web-1",
        None,  # the test driver starts domains running
        "<disk type='file' device='disk'><source file='/var/lib/libvirt/images/web-1.qcow2'/>"
        "<target dev='vda' bus='virtio'/></disk>"
        "<interface type='bridge'><mac address='52:54:00:00:00:01'/>"
        "<source bridge='virbr0'/></interface>",
    )
    + domain_xml("db-1", 3)
    + domain_xml("cache-1", 6)
    + domain_xml("old-1", 5)
    + "</node>"
)
EXPECTED_STATES = {
    "web-1": common_pb2.DOMAIN_STATE_RUNNING,
    "db-1": common_pb2.DOMAIN_STATE_PAUSED,
    "cache-1": common_pb2.DOMAIN_STATE_CRASHED,
    "old-1": common_pb2.DOMAIN_STATE_SHUTOFF,
}


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Path
    controller: TLSFiles
    executor: TLSFiles
    operator: TLSFiles
    other_executor: TLSFiles
    foreign_controller: TLSFiles


def tls_files(ca: Path, issued: IssuedFiles) -> TLSFiles:
    return TLSFiles(ca=ca, cert=issued.cert, key=issued.key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    authority = CertificateAuthority.create()
    ca = authority.save(folder)
    foreign = CertificateAuthority.create("someone else's CA")
    foreign_ca = foreign.save(folder / "foreign")
    return Pki(
        ca=ca,
        controller=tls_files(ca, authority.issue(Identity(Role.CONTROLLER, "ctl-0"), folder)),
        executor=tls_files(ca, authority.issue(Identity(Role.EXECUTOR, "node-1"), folder)),
        operator=tls_files(ca, authority.issue(Identity(Role.OPERATOR, "alice"), folder)),
        other_executor=tls_files(ca, authority.issue(Identity(Role.EXECUTOR, "node-2"), folder)),
        foreign_controller=tls_files(
            foreign_ca, foreign.issue(Identity(Role.CONTROLLER, "ctl-x"), folder / "foreign")
        ),
    )


def write_host_root(root: Path) -> None:
    files = {
        "etc/hostname": "node-1\n",
        "proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
        "proc/cpuinfo": "processor\t: 0\nflags\t\t: fpu vmx lm\n\nprocessor\t: 1\nflags\t\t: vmx\n",
        "proc/meminfo": "MemTotal:        2048000 kB\n",
        "proc/stat": "cpu  1 2 3 4\nbtime 1717113600\n",
        "sys/fs/cgroup/cgroup.controllers": "cpu memory pids\n",
        "dev/kvm": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(
    folder: Path,
    pki: Pki,
    *,
    libvirt_uri: str,
    listen: str,
    controllers: list[str],
    extra: str = "",
) -> Path:
    (folder / "root").mkdir(exist_ok=True)
    write_host_root(folder / "root")
    path = folder / "executor.toml"
    path.write_text(
        "[executor]\n"
        'node = "node-1"\n'
        f'listen = "{listen}"\n'
        f"controllers = {controllers!r}\n".replace("'", '"')
        + 'host_root = "root"\n'
        f'libvirt_uri = "{libvirt_uri}"\n'
        'state_dir = "state"\n'
        f"{extra}"
        "[executor.labels]\n"
        'rack = "r1"\n'
        "[tls]\n"
        f'ca = "{pki.ca}"\n'
        f'cert = "{pki.executor.cert}"\n'
        f'key = "{pki.executor.key}"\n'
    )
    return path


@pytest.fixture
def node_xml(tmp_path: Path) -> Path:
    path = tmp_path / "node.xml"
    path.write_text(NODE_XML)
    return path


StartExecutor = Callable[..., Awaitable[Executor]]


@pytest.fixture
async def start_executor(tmp_path: Path, pki: Pki) -> AsyncIterator[StartExecutor]:
    """Start in-process executors (port chosen by the OS); all are stopped afterwards."""
    started: list[Executor] = []

    async def start(
        libvirt_uri: str,
        controllers: list[str] | None = None,
        name: str = "a",
        libvirt_timeout: float = 5.0,
    ) -> Executor:
        folder = tmp_path / name
        folder.mkdir()
        path = write_config(
            folder,
            pki,
            libvirt_uri=libvirt_uri,
            listen="127.0.0.1:7501",
            controllers=controllers or [f"127.0.0.1:{free_port()}"],
        )
        config = dataclasses.replace(ExecutorConfig.load(path), listen="127.0.0.1:0")
        executor = Executor(config, LibvirtDomainSource(libvirt_uri, call_timeout=libvirt_timeout))
        started.append(executor)
        await executor.start()
        return executor

    yield start
    for executor in started:
        await asyncio.wait_for(executor.stop(grace=0.5), 10)


@pytest.fixture
async def channels() -> AsyncIterator[Callable[[int, TLSFiles], grpc.aio.Channel]]:
    opened: list[grpc.aio.Channel] = []

    def open_channel(port: int, tls: TLSFiles) -> grpc.aio.Channel:
        assert tls.ca and tls.cert and tls.key
        creds = grpc.ssl_channel_credentials(
            tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()
        )
        channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        await channel.close(grace=None)


Channels = Callable[[int, TLSFiles], grpc.aio.Channel]


def stub(
    channels: Channels, executor: Executor, tls: TLSFiles
) -> executor_pb2_grpc.ExecutorServiceStub:
    return executor_pb2_grpc.ExecutorServiceStub(channels(executor.port, tls))


# -- the test driver, by hand -----------------------------------------------------------


async def test_the_test_driver_accepts_the_node_document(node_xml: Path) -> None:
    libvirt = LibvirtConnection(f"test://{node_xml}")
    try:
        states = {d.name: (d.state, d.reason) for d in await libvirt.list_domains()}
        counters = await libvirt.domain_counters("web-1")
    finally:
        await libvirt.close()
    # The test driver reports reason 0 ("unknown") whatever runstate it was given.
    assert states == {
        "web-1": (1, "unknown"),
        "db-1": (3, "unknown"),
        "cache-1": (6, "unknown"),
        "old-1": (5, "unknown"),
    }
    assert counters.cpu_time_ns > 0
    assert [b.device for b in counters.block] == ["vda"]
    # The test driver names interfaces itself (testnet0); we take it from the XML.
    assert len(counters.interfaces) == 1 and counters.interfaces[0].rx_bytes > 0


# -- the gRPC service over mTLS -----------------------------------------------------------


async def test_health_and_inventory_for_a_controller(
    node_xml: Path, pki: Pki, start_executor: StartExecutor, channels: Channels
) -> None:
    executor = await start_executor(f"test://{node_xml}")
    client = stub(channels, executor, pki.controller)

    health = await client.GetHealth(
        executor_pb2.GetHealthRequest(include_checks=True), timeout=CALL_TIMEOUT
    )
    assert health.node == "node-1"
    assert health.status == common_pb2.HEALTH_STATUS_HEALTHY
    assert not health.quarantined
    assert health.facts.libvirt_reachable
    assert health.facts.hypervisor.startswith("TEST ")
    assert health.facts.libvirt_uri == f"test://{node_xml}"
    assert (health.facts.hostname, health.facts.kernel) == ("node-1", "6.1.0-18-amd64")
    assert list(health.facts.virt_flags) == ["vmx"]
    assert health.facts.cgroup_backend == "v2"
    assert health.facts.cpu_count == 2
    assert {"host.libvirt", "host.cgroup", "host.orphans"} <= {c.check_id for c in health.checks}
    assert health.checks[0].status == common_pb2.CHECK_STATUS_OK

    inventory = await client.GetInventory(executor_pb2.GetInventoryRequest(), timeout=CALL_TIMEOUT)
    assert inventory.libvirt_error == ""
    assert {d.name: d.state for d in inventory.domains} == EXPECTED_STATES
    web = next(d for d in inventory.domains if d.name == "web-1")
    assert (web.vcpus, web.memory_kib, web.persistent) == (2, 262144, True)
    assert web.state_reason == "unknown" and len(web.uuid) == 36

    stats = await client.GetVmStats(executor_pb2.GetVmStatsRequest(vm="web-1"), timeout=10)
    assert stats.node == "node-1" and stats.cpu_time_ns > 0
    assert [b.device for b in stats.block] == ["vda"]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.GetVmStats(executor_pb2.GetVmStatsRequest(vm="nope"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing.value.details() == "no domain named 'nope' on node node-1"


async def test_applied_quarantine_is_reported_and_survives_a_restart(
    node_xml: Path, pki: Pki, start_executor: StartExecutor, channels: Channels
) -> None:
    executor = await start_executor(f"test://{node_xml}")
    client = stub(channels, executor, pki.controller)
    applied = await client.ApplyQuarantine(
        executor_pb2.ApplyQuarantineRequest(
            quarantined=True,
            reason="disk errors",
            actor="operator:alice",
            source=common_pb2.QUARANTINE_SOURCE_MANUAL,
            fence_revision=3,
        ),
        timeout=CALL_TIMEOUT,
    )
    assert applied.quarantined and applied.changed
    health = await client.GetHealth(executor_pb2.GetHealthRequest(), timeout=CALL_TIMEOUT)
    assert health.status == common_pb2.HEALTH_STATUS_QUARANTINED and health.quarantined
    # The flag file other tools read is kept in step with the persisted state.
    assert (executor.config.state_dir / QUARANTINE_FLAG_FILE).exists()
    # A restarted executor on the same state dir still knows.
    restarted = Executor(executor.config, LibvirtDomainSource(f"test://{node_xml}"))
    assert restarted.ctx.quarantined()
    await restarted.libvirt.close()


ALL_RPCS: list[tuple[str, object]] = [
    ("GetHealth", executor_pb2.GetHealthRequest()),
    ("GetInventory", executor_pb2.GetInventoryRequest()),
    ("GetVmStats", executor_pb2.GetVmStatsRequest(vm="web-1")),
    ("Diagnose", executor_pb2.DiagnoseRequest(host=True)),
    ("Recover", executor_pb2.RecoverRequest(action="reconnect-libvirt")),
    ("VerifyClean", executor_pb2.VerifyCleanRequest()),
    ("CollectBundle", executor_pb2.CollectBundleRequest()),
    ("ApplyQuarantine", executor_pb2.ApplyQuarantineRequest(quarantined=True)),
]


async def call(client: executor_pb2_grpc.ExecutorServiceStub, rpc: str, request: object) -> None:
    method = getattr(client, rpc)
    if rpc in ("Diagnose", "Recover", "CollectBundle"):
        async for _ in method(request, timeout=CALL_TIMEOUT):
            pass
    else:
        await method(request, timeout=CALL_TIMEOUT)


async def test_every_rpc_refuses_callers_that_are_not_controllers(
    node_xml: Path, pki: Pki, start_executor: StartExecutor, channels: Channels
) -> None:
    executor = await start_executor(f"test://{node_xml}")
    callers = {
        pki.operator: "user:alice (operator)",
        pki.other_executor: "executor:node-2",
    }
    for tls, described in callers.items():
        client = stub(channels, executor, tls)
        for rpc, request in ALL_RPCS:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(client, rpc, request)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, rpc
            assert refused.value.details() == (
                f"executor RPCs are for controllers; caller is {described}"
            )


async def test_a_certificate_from_another_ca_fails_the_handshake(
    node_xml: Path, pki: Pki, start_executor: StartExecutor, channels: Channels
) -> None:
    executor = await start_executor(f"test://{node_xml}")
    # Our CA to verify the server, but a client certificate the server cannot verify.
    stranger = TLSFiles(ca=pki.ca, cert=pki.foreign_controller.cert, key=pki.foreign_controller.key)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub(channels, executor, stranger).GetHealth(
            executor_pb2.GetHealthRequest(), timeout=5
        )
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_feature_rpcs_answer_a_controller(
    node_xml: Path, pki: Pki, start_executor: StartExecutor, channels: Channels
) -> None:
    executor = await start_executor(f"test://{node_xml}")
    client = stub(channels, executor, pki.controller)
    batches = [
        b async for b in client.Diagnose(executor_pb2.DiagnoseRequest(host=True), timeout=30)
    ]
    # Batched by what finished together: 8 host parts, never an empty batch.
    assert 1 <= len(batches) <= 8 and all(b.results for b in batches)
    checks = [c for b in batches for c in b.results]
    assert {c.check_id for c in checks} >= {"host.libvirt", "host.orphans", "host.locks"}
    assert all(c.node == executor.config.node and c.event_id for c in checks)
    assert len({c.event_id for c in checks}) == len(checks)
    steps = [
        s
        async for s in client.Recover(
            executor_pb2.RecoverRequest(action="reconnect-libvirt", dry_run=True), timeout=30
        )
    ]
    assert steps and all(s.outcome == "planned" for s in steps)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in client.Recover(executor_pb2.RecoverRequest(action="rm -rf /"), timeout=30):
            pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    clean = await client.VerifyClean(executor_pb2.VerifyCleanRequest(), timeout=30)
    assert clean.node == executor.config.node and clean.checks
    parts = [
        chunk.WhichOneof("part")
        async for chunk in client.CollectBundle(executor_pb2.CollectBundleRequest(), timeout=60)
    ]
    assert parts[0] == "header" and parts[-1] == "trailer" and "data" in parts


async def test_unreachable_libvirt_is_reported_not_crashed(
    pki: Pki, start_executor: StartExecutor, channels: Channels
) -> None:
    executor = await start_executor("test:///nonexistent.xml")
    client = stub(channels, executor, pki.controller)
    health = await client.GetHealth(executor_pb2.GetHealthRequest(), timeout=CALL_TIMEOUT)
    assert health.status == common_pb2.HEALTH_STATUS_UNHEALTHY
    assert not health.facts.libvirt_reachable
    assert "nonexistent.xml" in health.facts.libvirt_error
    assert health.facts.hostname == "node-1"  # host facts still come through
    inventory = await client.GetInventory(executor_pb2.GetInventoryRequest(), timeout=10)
    assert list(inventory.domains) == [] and "nonexistent.xml" in inventory.libvirt_error
    with pytest.raises(grpc.aio.AioRpcError) as unavailable:
        await client.GetVmStats(executor_pb2.GetVmStatsRequest(vm="web-1"), timeout=10)
    assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture
def silent_libvirt_socket(tmp_path: Path) -> Iterator[Path]:
    """A unix socket that accepts connections and never answers (a hung libvirtd)."""
    path = tmp_path / "hung-libvirt.sock"
    accepted: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        listener.settimeout(0.05)
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    accepted.append(listener.accept()[0])
                except TimeoutError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield path
        finally:
            stop.set()
            thread.join(timeout=5)
            for conn in accepted:
                conn.close()  # the hung libvirt calls fail and their threads end


async def test_a_hung_libvirt_is_reported_within_the_call_timeout(
    silent_libvirt_socket: Path, pki: Pki, start_executor: StartExecutor, channels: Channels
) -> None:
    uri = f"qemu+unix:///system?socket={silent_libvirt_socket}"
    executor = await start_executor(uri, libvirt_timeout=0.5)
    client = stub(channels, executor, pki.controller)
    async with asyncio.timeout(5):
        health = await client.GetHealth(executor_pb2.GetHealthRequest(), timeout=CALL_TIMEOUT)
    assert health.status == common_pb2.HEALTH_STATUS_UNHEALTHY
    assert health.facts.libvirt_error == f"libvirt at {uri} did not answer within 0.5s"


# -- registration -------------------------------------------------------------------------


class ControllerStandIn(controller_pb2_grpc.RegistryServiceServicer):
    """A RegistryService that records calls; forgets the node once when told to."""

    def __init__(self) -> None:
        self.registrations: list[controller_pb2.RegisterRequest] = []
        self.heartbeats: list[controller_pb2.HeartbeatRequest] = []
        self.forget_once = False
        self.quarantined = False
        self.changed = asyncio.Event()

    async def Register(
        self, request: controller_pb2.RegisterRequest, context: object
    ) -> controller_pb2.RegisterResponse:
        self.registrations.append(request)
        self.changed.set()
        return controller_pb2.RegisterResponse(
            heartbeat_interval_ms=50, missed_heartbeats_limit=3, controller="ctl-0"
        )

    async def Heartbeat(
        self, request: controller_pb2.HeartbeatRequest, context: object
    ) -> controller_pb2.HeartbeatResponse:
        self.heartbeats.append(request)
        self.changed.set()
        known = not self.forget_once
        self.forget_once = False
        return controller_pb2.HeartbeatResponse(known=known, quarantined=self.quarantined)


async def wait_until(condition: Callable[[], bool], event: asyncio.Event) -> None:
    async with asyncio.timeout(10):
        while not condition():
            event.clear()
            await event.wait()


async def test_registers_with_the_first_reachable_controller_and_heartbeats(
    node_xml: Path, pki: Pki, start_executor: StartExecutor
) -> None:
    stand_in = ControllerStandIn()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    controller_pb2_grpc.add_RegistryServiceServicer_to_server(stand_in, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(pki.controller))
    await server.start()
    try:
        dead = f"127.0.0.1:{free_port()}"
        executor = await start_executor(f"test://{node_xml}", [dead, f"127.0.0.1:{port}"])
        await wait_until(lambda: len(stand_in.heartbeats) >= 2, stand_in.changed)
        first = stand_in.registrations[0]
        assert (first.node, first.labels["rack"]) == ("node-1", "r1")
        assert first.facts.libvirt_reachable and first.facts.hostname == "node-1"
        assert [h.sequence for h in stand_in.heartbeats[:2]] == [1, 2]
        assert stand_in.heartbeats[0].health == common_pb2.HEALTH_STATUS_HEALTHY
        assert executor.registrar.status.controller == "ctl-0"

        stand_in.forget_once = True
        stand_in.quarantined = True
        await wait_until(lambda: len(stand_in.registrations) >= 2, stand_in.changed)
        assert executor.registrar.status.quarantined is True
    finally:
        await server.stop(None)


# -- the command ------------------------------------------------------------------------


def executor_command() -> list[str]:
    script = Path(sys.executable).parent / "novaops-executor"
    return [str(script)] if script.exists() else [sys.executable, "-m", "novaops.executor"]


def run_command(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_bad_config_exits_2_with_one_line(tmp_path: Path, pki: Pki) -> None:
    path = write_config(
        tmp_path, pki, libvirt_uri="test:///default", listen="127.0.0.1:7501", controllers=[]
    )
    result = run_command([*executor_command(), "--config", str(path)])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("novaops-executor: ")
    assert "key 'executor.controllers'" in result.stderr

    path.write_text(path.read_text().replace('node = "node-1"', 'node = "Node_1!"'))
    result = run_command([sys.executable, "-m", "novaops.executor", "--config", str(path)])
    assert result.returncode == 2
    assert "key 'executor.node'" in result.stderr and result.stderr.count("\n") == 1


def test_port_in_use_exits_2_naming_the_port(tmp_path: Path, pki: Pki) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = write_config(
            tmp_path,
            pki,
            libvirt_uri="test:///default",
            listen=f"127.0.0.1:{port}",
            controllers=[f"127.0.0.1:{free_port()}"],
        )
        result = run_command([*executor_command(), "--config", str(path)])
    assert result.returncode == 2
    assert result.stderr == (
        f"novaops-executor: cannot listen on 127.0.0.1:{port}: address already in use\n"
    )


@pytest.fixture
def executor_process(tmp_path: Path, pki: Pki) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    port = free_port()
    path = write_config(
        tmp_path,
        pki,
        libvirt_uri="test:///default",
        listen=f"127.0.0.1:{port}",
        controllers=[f"127.0.0.1:{free_port()}"],
        extra='log_file = "executor.log"\n',
    )
    process = subprocess.Popen(
        [*executor_command(), "--config", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, tmp_path / "executor.log"
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_sigterm_shuts_down_cleanly(executor_process: tuple[subprocess.Popen[str], Path]) -> None:
    process, log_file = executor_process
    deadline = 15.0
    while "serving on" not in (log_file.read_text() if log_file.exists() else ""):
        assert process.poll() is None, process.communicate()
        deadline -= 0.05
        assert deadline > 0, "executor did not start"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "Traceback" not in stderr
    assert "executor node-1 stopped" in log_file.read_text()


async def test_a_stuck_shutdown_writes_every_threads_stack_to_stderr(
    start_executor: StartExecutor,
    node_xml: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # What the executor is stuck in when it does not stop, before a supervisor's
    # SIGKILL ends it and the evidence with it.
    import novaops.executor.main as executor_main

    executor = await start_executor(f"test://{node_xml}")
    monkeypatch.setattr(executor_main, "STOP_MARGIN_SECONDS", 0.1)
    monkeypatch.setattr(executor_main, "STOP_REST_SECONDS", 0.1)
    monkeypatch.setattr(executor_main, "STOP_STACKS_AFTER_SECONDS", 0.1)
    close = executor.ctx.close

    async def stuck_close() -> None:
        time.sleep(1.5)  # noqa: ASYNC251 -- blocks the loop, as a wedged shutdown would
        await close()

    monkeypatch.setattr(executor.ctx, "close", stuck_close)
    await executor.stop(grace=0.1)
    err = capfd.readouterr().err
    assert "most recent call first" in err
    assert "stuck_close" in err  # the frame it was stuck in


async def test_a_shutdown_step_that_ignores_cancellation_is_left_behind(
    start_executor: StartExecutor,
    node_xml: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # grpc.aio's server stop was seen never to return, and not to answer its
    # cancellation either: asyncio.wait_for then waits forever for the cancel.
    import novaops.executor.main as executor_main

    executor = await start_executor(f"test://{node_xml}")
    monkeypatch.setattr(executor_main, "STOP_MARGIN_SECONDS", 0.2)
    real_stop = executor.server.stop
    release = asyncio.Event()

    async def deaf_stop(grace: float | None) -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        await real_stop(None)

    monkeypatch.setattr(executor.server, "stop", deaf_stop)
    closed: list[str] = []
    close = executor.libvirt.close

    async def recorded_close() -> None:
        closed.append("libvirt")
        await close()

    monkeypatch.setattr(executor.libvirt, "close", recorded_close)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="novaops.executor"):
        await executor.stop(grace=0.1)
    assert time.monotonic() - started < 2.0
    assert executor.abandoned == ["the gRPC server's stop"]
    assert closed == ["libvirt"]  # the rest of the shutdown ran
    messages = [r.getMessage() for r in caplog.records]
    (warning,) = [m for m in messages if "did not finish within" in m]
    assert "the gRPC server's stop did not finish within 0.3s" in warning
    assert "deaf_stop" in warning  # where it waits
    assert any("stopped with 1 shutdown step(s) unfinished" in m for m in messages)
    release.set()  # let the real server stop, for the fixture's cleanup
    await asyncio.sleep(0.2)
