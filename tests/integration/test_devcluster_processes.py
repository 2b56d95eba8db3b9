"""The dev cluster supervisor with stand-in processes in place of controller and executor.

``up(python=...)`` runs a stand-in interpreter that reads the generated config and
listens on its address, so these tests cover certificates, configs, ports, the
process record, status, kill and down without the real daemons.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from novaops.client.config import ClientConfig
from novaops.controller.config import ControllerConfig
from novaops.devcluster import (
    ClusterRunningError,
    NoClusterError,
    ProcessRole,
    ProcessStartError,
    StopOutcome,
    UnknownProcessError,
    down,
    kill_process,
    simhost,
    simulated_status,
    status,
    up,
    wait_foreground,
)
from novaops.devcluster.errors import StateFileError
from novaops.devcluster.processes import group_members, spawn
from novaops.devcluster.state import (
    ClusterRecord,
    ClusterStatus,
    ProcessRecord,
    load_cluster,
    save_cluster,
    state_file,
)
from novaops.pki.identity import Identity, Role, identity_from_pem

# Stands in for `python -m novaops.controller|executor --config FILE`. STANDIN_MODE:
# listen (default), fail (exit 3 with a message), stubborn (also start a child in
# the same process group that ignores SIGTERM).
STANDIN = textwrap.dedent(
    """\
    #!{python}
    import os, signal, socket, subprocess, sys, time, tomllib
    args = sys.argv[1:]
    with open(args[args.index("--config") + 1], "rb") as fh:
        cfg = tomllib.load(fh)
    section = cfg.get("controller") or cfg["executor"]
    mode = os.environ.get("STANDIN_MODE", "listen")
    if mode == "fail":
        print("standin: cannot open the store: boom", flush=True)
        sys.exit(3)
    if mode == "stubborn":
        subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    host, port = section["listen"].rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen()
    print("standin listening on", section["listen"], flush=True)
    while True:
        conn, _ = sock.accept()
        conn.close()
    """
)


@pytest.fixture
def standin(tmp_path: Path) -> str:
    path = tmp_path / "standin-python"
    path.write_text(STANDIN.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "cluster"
    yield folder
    # Whatever a test left running goes, and nothing of ours may survive.
    record = load_cluster(folder)
    if record is not None:
        down(folder, timeout=2.0)
        for rec in record.processes:
            assert group_members(rec) == [], f"{rec.name} left processes behind"


def _sleeper(tmp_path: Path, name: str = "sleeper") -> ProcessRecord:
    return spawn(
        ProcessRole.EXECUTOR,
        name,
        ["sleep", "300"],
        address="127.0.0.1:1",
        log_path=tmp_path / f"{name}.log",
        cwd=tmp_path,
    )


def test_record_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    rec = ProcessRecord(
        role=ProcessRole.CONTROLLER,
        name="ctl-0",
        pid=4242,
        create_time=1717200000.25,
        start_ticks=123456,
        address="127.0.0.1:7400",
        config=tmp_path / "c.toml",
        log=tmp_path / "c.log",
    )
    record = ClusterRecord(
        status=ClusterStatus.UP, store="embedded", client_config=tmp_path / "client.toml"
    ).with_process(rec)
    save_cluster(tmp_path, record)
    assert load_cluster(tmp_path) == record
    assert json.loads(state_file(tmp_path).read_text())["processes"][0]["pid"] == 4242
    assert not list(tmp_path.glob(".cluster.json.*")), "temp file left behind"

    state_file(tmp_path).write_text("{not json")
    with pytest.raises(StateFileError, match=r"cluster.json: not a dev cluster record"):
        load_cluster(tmp_path)
    assert load_cluster(tmp_path / "empty") is None
    with pytest.raises(NoClusterError):
        status(tmp_path / "empty")


def test_status_detects_dead_and_recycled_pids(tmp_path: Path, state_dir: Path) -> None:
    alive = _sleeper(tmp_path, "alive")
    dead = _sleeper(tmp_path, "dead")
    other = _sleeper(tmp_path, "other")
    # A pid that the kernel "gave to another process": same pid, other start time,
    # exact (clock ticks) or, for a record without ticks, psutil's epoch seconds.
    assert other.start_ticks is not None
    recycled = replace(other, name="recycled", start_ticks=other.start_ticks - 1)
    legacy = replace(other, name="legacy", start_ticks=None, create_time=other.create_time - 1000.0)
    record = ClusterRecord(ClusterStatus.UP, "embedded", state_dir / "client.toml")
    for rec in (alive, dead, recycled, legacy):
        record = record.with_process(rec)
    save_cluster(state_dir, record)
    kill_process(state_dir, "dead", signal.SIGKILL)

    running = {p.name: p.running for p in status(state_dir)}
    assert running == {"alive": True, "dead": False, "recycled": False, "legacy": False}

    outcomes = {p.name: p.stop for p in down(state_dir, timeout=5.0)}
    assert outcomes == {
        "alive": StopOutcome.TERMINATED,
        "dead": StopOutcome.NOT_RUNNING,
        "recycled": StopOutcome.NOT_RUNNING,
        "legacy": StopOutcome.NOT_RUNNING,
    }
    # down never touched the process that merely reuses a recorded pid.
    assert psutil.Process(other.pid).is_running()
    down_other = ClusterRecord(ClusterStatus.UP, "embedded", tmp_path / "x").with_process(other)
    save_cluster(tmp_path, down_other)
    assert [p.stop for p in down(tmp_path, timeout=5.0)] == [StopOutcome.TERMINATED]


def test_up_status_kill_down_with_standins(standin: str, state_dir: Path) -> None:
    cluster = up(state_dir, 2, python=standin, wait_timeout=20.0)
    assert cluster.nodes == ["node-1", "node-2"]
    assert [(p.role, p.name) for p in cluster.processes] == [
        (ProcessRole.CONTROLLER, "ctl-0"),
        (ProcessRole.EXECUTOR, "node-1"),
        (ProcessRole.EXECUTOR, "node-2"),
    ]
    assert all(p.running for p in status(state_dir))

    # The generated configs load with the real parsers, and the certificates carry
    # the identities the roles expect.
    client = ClientConfig.load(cluster.client_config)
    assert client.controllers == [cluster.controller_address]
    assert client.tls.cert is not None
    assert identity_from_pem(client.tls.cert.read_bytes()) == Identity(Role.ADMIN, "admin")
    ctl = ControllerConfig.load(state_dir / "controller" / "controller.toml")
    assert ctl.name == "ctl-0" and ctl.store.kind == "embedded"
    assert ctl.heartbeat_interval_ms == 500
    assert ctl.store.path == state_dir / "controller" / "novaops.db"
    executor_toml = (state_dir / "nodes" / "node-2" / "executor.toml").read_text()
    assert f'libvirt_uri = "test://{state_dir}/nodes/node-2/libvirt.xml"' in executor_toml
    assert f'host_root = "{state_dir}/nodes/node-2/root"' in executor_toml
    node_cert = (state_dir / "certs" / "executor-node-2.pem").read_bytes()
    assert identity_from_pem(node_cert) == Identity(Role.EXECUTOR, "node-2")
    assert 'tap_prefixes = ["vtap2-"]' in executor_toml

    # The simulated hosts' processes are recorded and run, but dev status lists the
    # daemons only; as root each node has its own network namespace.
    simulated = simulated_status(state_dir)
    assert {p.role for p in simulated} <= {ProcessRole.STANDIN, ProcessRole.CONTAINER}
    assert {"node-1-ghost-1", "node-2-ghost-1"} <= {p.name for p in simulated}
    assert all(p.running for p in simulated)
    if simhost.network_support() is None:
        assert cluster.netns == tuple(simhost.netns_name(state_dir, n) for n in cluster.nodes)
        assert all(simhost.netns_exists(name) for name in cluster.netns)
        assert f'netns = "{cluster.netns[1]}"' in executor_toml
    else:
        assert cluster.netns == () and "netns" not in executor_toml

    with pytest.raises(ClusterRunningError, match="still running"):
        up(state_dir, 2, python=standin)

    killed = kill_process(state_dir, "node-1", signal.SIGKILL)
    assert not killed.running
    assert {p.name: p.running for p in status(state_dir)} == {
        "ctl-0": True,
        "node-1": False,
        "node-2": True,
    }
    with pytest.raises(UnknownProcessError):
        kill_process(state_dir, "node-9")

    stopped = {p.name: p.stop for p in down(state_dir, timeout=5.0)}
    assert stopped == {
        "ctl-0": StopOutcome.TERMINATED,
        "node-1": StopOutcome.NOT_RUNNING,
        "node-2": StopOutcome.TERMINATED,
    }
    assert not any(p.running for p in status(state_dir))
    assert not any(p.running for p in simulated_status(state_dir))
    assert not any(simhost.netns_exists(name) for name in cluster.netns)
    record = load_cluster(state_dir)
    assert record is not None and record.status is ClusterStatus.DOWN
    # Idempotent.
    assert {p.stop for p in down(state_dir)} == {StopOutcome.NOT_RUNNING}

    # A downed cluster can come up again in the same folder, with the same CA.
    ca_before = (state_dir / "certs" / "ca.pem").read_bytes()
    up(state_dir, 1, python=standin, wait_timeout=20.0)
    assert (state_dir / "certs" / "ca.pem").read_bytes() == ca_before
    assert [p.name for p in status(state_dir) if p.running] == ["ctl-0", "node-1"]


def test_down_kills_a_group_whose_child_ignores_sigterm(
    standin: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_MODE", "stubborn")
    up(state_dir, 1, python=standin, wait_timeout=20.0)
    record = load_cluster(state_dir)
    assert record is not None
    node = record.process("node-1")
    assert node is not None
    deadline = time.monotonic() + 10
    # Both groups' children must ignore SIGTERM already (not merely exist), or
    # the SIGTERM of down() can still kill one during its interpreter start-up.
    stubborn = [rec for rec in record.processes if rec.name in ("ctl-0", "node-1")]
    while not all(_ignores_sigterm(group_members(rec)) for rec in stubborn):
        assert time.monotonic() < deadline, "the stand-ins' children did not start"
        time.sleep(0.05)
    members = group_members(node)
    assert len(members) == 2

    started = time.monotonic()
    outcomes = {p.name: p.stop for p in down(state_dir, timeout=1.0)}
    assert outcomes == {"ctl-0": StopOutcome.KILLED, "node-1": StopOutcome.KILLED}
    assert time.monotonic() - started < 8
    for proc in members:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    for rec in record.processes:
        assert group_members(rec) == []


def _ignores_sigterm(members: list[psutil.Process]) -> bool:
    """Whether some process among members ignores SIGTERM (SigIgn in its status)."""
    for proc in members:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("SigIgn:") and int(line.split()[1], 16) & (1 << (15 - 1)):
                return True
    return False


def test_down_reaches_children_after_the_leader_was_killed(
    standin: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_MODE", "stubborn")
    up(state_dir, 1, python=standin, wait_timeout=20.0)
    record = load_cluster(state_dir)
    assert record is not None
    node = record.process("node-1")
    assert node is not None
    deadline = time.monotonic() + 10
    # The child must ignore SIGTERM already, not merely exist (see above).
    while not _ignores_sigterm(group_members(node)):
        assert time.monotonic() < deadline, "the stand-in's child did not start"
        time.sleep(0.05)
    kill_process(state_dir, "node-1")  # kill -9 the executor alone: its child stays
    assert {p.name: p.running for p in status(state_dir)}["node-1"] is False
    orphans = group_members(node)
    assert len(orphans) == 1 and orphans[0].pid != node.pid

    outcomes = {p.name: p.stop for p in down(state_dir, timeout=0.5)}
    assert outcomes["node-1"] is StopOutcome.KILLED
    assert group_members(node) == []


class FakeEtcdCluster:
    """Stands in for novaops.devcluster.etcd.EtcdCluster: one listening process,
    started in the caller's process group (as a launcher might)."""

    def __init__(self, popen: subprocess.Popen[bytes], port: int) -> None:
        self.popen = popen
        self.endpoints = [f"http://127.0.0.1:{port}"]
        self.pids = [popen.pid]

    @staticmethod
    def start(data_dir: Path, members: int = 1, timeout: float = 20.0) -> FakeEtcdCluster:
        import socket

        data_dir.mkdir(parents=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        code = (
            "import socket; s = socket.socket(); "
            f"s.bind(('127.0.0.1', {port})); s.listen(); s.accept()"
        )
        popen = subprocess.Popen([sys.executable, "-c", code])
        FakeEtcdCluster.started.append(popen)
        return FakeEtcdCluster(popen, port)

    def log_path(self, index: int) -> Path:
        return Path(f"/nonexistent/etcd-{index}.log")

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait(5)

    started: list[subprocess.Popen[bytes]] = []


def test_up_with_etcd_store_records_and_stops_etcd(
    standin: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("novaops.devcluster.etcd")
    fake.EtcdCluster = FakeEtcdCluster  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "novaops.devcluster.etcd", fake)
    try:
        cluster = up(state_dir, 1, store="etcd", python=standin, wait_timeout=20.0)
        assert [p.name for p in cluster.processes] == ["etcd-0", "ctl-0", "node-1"]
        etcd = load_cluster(state_dir).process("etcd-0")  # type: ignore[union-attr]
        assert etcd is not None and not etcd.own_group  # shares the test's group
        ctl = ControllerConfig.load(state_dir / "controller" / "controller.toml")
        assert ctl.store.kind == "etcd"
        assert ctl.store.endpoints == (f"http://{etcd.address}",)
        assert all(p.running for p in status(state_dir))
        outcomes = {p.name: p.stop for p in down(state_dir, timeout=5.0)}
        assert set(outcomes.values()) == {StopOutcome.TERMINATED}
        assert not psutil.pid_exists(etcd.pid)  # stopped and reaped
    finally:
        for popen in FakeEtcdCluster.started:
            if popen.poll() is None:
                popen.kill()
                popen.wait(5)


@pytest.mark.etcd
@pytest.mark.skipif(not Path("/usr/bin/etcd").exists(), reason="needs /usr/bin/etcd")
def test_up_with_real_etcd(standin: str, state_dir: Path) -> None:
    cluster = up(state_dir, 1, store="etcd", python=standin, wait_timeout=30.0)
    record = load_cluster(state_dir)
    assert record is not None
    etcd = record.process("etcd-0")
    assert etcd is not None and etcd.log is not None and etcd.log.exists()
    assert [p.name for p in cluster.processes] == ["etcd-0", "ctl-0", "node-1"]
    ctl = ControllerConfig.load(state_dir / "controller" / "controller.toml")
    assert ctl.store.endpoints == (f"http://{etcd.address}",)
    outcomes = {p.name: p.stop for p in down(state_dir, timeout=10.0)}
    assert outcomes == dict.fromkeys(("etcd-0", "ctl-0", "node-1"), StopOutcome.TERMINATED)
    assert group_members(etcd) == []


def test_up_reports_a_process_that_dies_and_cleans_up(
    standin: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_MODE", "fail")
    with pytest.raises(ProcessStartError) as info:
        up(state_dir, 1, python=standin, wait_timeout=20.0)
    message = str(info.value)
    assert message.splitlines()[0].startswith("controller ctl-0 (pid ")
    assert "exited with code 3" in message
    assert "cannot open the store: boom" in message
    assert not any(p.running for p in status(state_dir))


def test_up_refuses_busy_base_port(standin: str, state_dir: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(Exception, match=f"ports already in use on 127.0.0.1: {port}"):
            up(state_dir, 1, base_port=port, python=standin)


def test_wait_foreground_downs_on_sigint(standin: str, state_dir: Path) -> None:
    up(state_dir, 1, python=standin, wait_timeout=20.0)
    # The handler is installed on entry; the timer fires while wait_foreground polls.
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        result = wait_foreground(state_dir, down_timeout=5.0, poll_interval=0.1)
    finally:
        timer.cancel()
    assert {p.stop for p in result} == {StopOutcome.TERMINATED}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_wait_foreground_returns_when_everything_exited(standin: str, state_dir: Path) -> None:
    up(state_dir, 1, python=standin, wait_timeout=20.0)
    exited: list[str] = []
    for name in ("node-1", "ctl-0"):
        kill_process(state_dir, name)
    result = wait_foreground(state_dir, poll_interval=0.05, on_exit=lambda p: exited.append(p.name))
    assert sorted(exited) == ["ctl-0", "node-1"]
    assert {p.stop for p in result} == {StopOutcome.NOT_RUNNING}


def test_spawned_process_is_its_own_session(tmp_path: Path) -> None:
    rec = _sleeper(tmp_path)
    try:
        assert os.getsid(rec.pid) == rec.pid and os.getpgid(rec.pid) == rec.pid
    finally:
        record = ClusterRecord(ClusterStatus.UP, "embedded", tmp_path / "c").with_process(rec)
        save_cluster(tmp_path, record)
        down(tmp_path, timeout=5.0)
    assert subprocess.run(["kill", "-0", str(rec.pid)], capture_output=True).returncode != 0
