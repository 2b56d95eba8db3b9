#!/usr/bin/env python3
"""Shared helpers of the fan-out and quarantine benchmarks (bench/fanout.py, bench/quarantine.py).

- :class:`DevCluster`: ``novaops.devcluster.up`` (one real ``novaops-executor``
  process per simulated node), waiting for registration, restarting the
  controller with extra config sections, ``down`` on exit.
- :class:`MultiCluster`: for hundreds of nodes: a controller process plus a few
  *host* processes, each running many in-process ``Executor`` servers, every one
  a simulated node with its own certificate (issued from the cluster's CA).
- :class:`TrivialServers` and :func:`floor_fanout`: the floor, bare grpc.aio
  servers with a trivial unary handler over the same mTLS, called with one
  ``asyncio.gather``.
- statistics and markdown helpers.

Every process started here is stopped when its context manager exits, also on
failure. Run as a script, it is the body of the helper processes
(``serve-executors``, ``serve-trivial``); nothing else calls that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
NOVAOPS = str(Path(sys.executable).with_name("novaops"))
LOOPBACK = "127.0.0.1"
TRIVIAL_METHOD = "/bench.Trivial/Ping"
# The simulated fleet's processes (in-process executors, the floor's trivial servers)
# run at this CPU priority. On a real fleet each node's work runs on its own CPU,
# not the controller's; at equal priority 500 simulated nodes took the controller's
# CPU (its event loop lagged up to 3 s), it missed its lease and heartbeats, and
# nodes were declared down in the middle of a run. See benchmarks-method.md.
FLEET_NICE = 19

log = logging.getLogger("bench")


# -- statistics and markdown -------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of samples; nan when empty."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Series:
    """Latency samples (seconds) of one measurement, with its failures."""

    name: str
    samples: list[float] = field(default_factory=list)
    node_errors: int = 0  # per-node errors seen over all runs
    note: str = ""

    @property
    def p50_ms(self) -> float:
        return percentile(self.samples, 50) * 1000

    @property
    def p95_ms(self) -> float:
        return percentile(self.samples, 95) * 1000


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def ratio(value: float, floor: float) -> str:
    if math.isnan(value) or math.isnan(floor) or floor <= 0:
        return "n/a"
    return f"{value / floor:.2f}"


def series_table(rows: Sequence[Series], floor: Series | None) -> str:
    head = "| measurement | runs | p50 ms | p95 ms | p50 x floor | p95 x floor | node errors |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for row in rows:
        f50 = floor.p50_ms if floor else math.nan
        f95 = floor.p95_ms if floor else math.nan
        name = f"{row.name} ({row.note})" if row.note else row.name
        lines.append(
            f"| {name} | {len(row.samples)} | {ms(row.p50_ms)} | {ms(row.p95_ms)} "
            f"| {ratio(row.p50_ms, f50)} | {ratio(row.p95_ms, f95)} | {row.node_errors} |"
        )
    return "\n".join(lines)


def verdict(met: bool | None) -> str:
    if met is None:
        return "NOT MEASURED"
    return "MET" if met else "NOT MET"


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Python {sys.version.split()[0]}"


# -- processes ---------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """count distinct free loopback ports (all held bound until every one is chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def accepts(address: str, timeout: float = 0.25) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def stop_popen(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process group of proc (started with start_new_session), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def run_cli(config: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    """``novaops --config CONFIG ARGS...`` as a new process (the console script)."""
    return subprocess.run(
        [NOVAOPS, "--config", str(config), *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def wait_registered(client_config: Path, nodes: int, timeout: float) -> None:
    """Until the controller lists ``nodes`` nodes as up."""
    from novaops.client import NovaopsClient
    from novaops.client.errors import NovaopsError

    with NovaopsClient.from_config_file(client_config) as client:

        def ready() -> bool:
            try:
                return sum(n.state == "up" for n in client.list_nodes()) >= nodes
            except NovaopsError:
                return False

        wait_until(ready, timeout, f"{nodes} nodes to register", interval=0.25)


def automation_toml(automation: dict[str, Any]) -> str:
    lines = ["", "[automation]"]
    for key, value in automation.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"


# -- a dev cluster (one executor process per node) ---------------------------------------


class DevCluster:
    """``novaops.devcluster.up`` for the duration of a with-block.

    ``automation``: when given, the controller is restarted at once with an
    ``[automation]`` section of these keys (devcluster writes none, so its
    controller runs the default automation, polling every 10 s).
    """

    def __init__(
        self,
        state_dir: Path,
        nodes: int,
        *,
        faults: bool = True,
        heartbeat_interval_ms: int = 1000,
        automation: dict[str, Any] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.nodes = nodes
        self.faults = faults
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.automation = automation
        self.client_config = state_dir / "client.toml"
        self.start_seconds = math.nan
        self._up = False

    def __enter__(self) -> DevCluster:
        from novaops import devcluster

        started = time.monotonic()
        try:
            state = devcluster.up(
                self.state_dir,
                nodes=self.nodes,
                store="embedded",
                faults=self.faults,
                heartbeat_interval_ms=self.heartbeat_interval_ms,
                wait_timeout=max(60.0, 2.0 * self.nodes),
            )
            self._up = True
            self.client_config = state.client_config
            if self.automation is not None:
                self.restart_controller(self.automation)
            wait_registered(self.client_config, self.nodes, timeout=60 + self.nodes)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from novaops import devcluster

        if (self.state_dir / "cluster.json").exists():
            try:
                devcluster.down(self.state_dir, timeout=10.0)
            except Exception as error:  # never mask the benchmark's own failure
                log.error("bench: dev cluster down failed: %s", error)
        self._up = False

    @property
    def controller_pid(self) -> int:
        from novaops.devcluster.state import ProcessRole, load_cluster

        record = load_cluster(self.state_dir)
        assert record is not None
        for proc in record.processes:
            if proc.role is ProcessRole.CONTROLLER:
                return proc.pid
        raise RuntimeError("bench: no controller recorded")

    def node_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node

    def restart_controller(self, automation: dict[str, Any]) -> None:
        """Stop the controller, append ``[automation]`` to its config, start it again
        (recorded in cluster.json, so ``down`` stops the new one)."""
        from novaops.devcluster.processes import spawn, stop_group, wait_listening
        from novaops.devcluster.state import ProcessRole, load_cluster, save_cluster

        record = load_cluster(self.state_dir)
        assert record is not None
        old = next(p for p in record.processes if p.role is ProcessRole.CONTROLLER)
        stop_group([old], 10.0)
        assert old.config is not None
        text = old.config.read_text()
        if "[automation]" in text:
            text = text[: text.index("\n[automation]")] + "\n"
        old.config.write_text(text + automation_toml(automation))
        assert old.log is not None and old.address is not None
        new = spawn(
            ProcessRole.CONTROLLER,
            old.name,
            [PYTHON, "-m", "novaops.controller", "--config", str(old.config)],
            address=old.address,
            log_path=old.log,
            cwd=old.config.parent,
            config=old.config,
        )
        save_cluster(self.state_dir, record.with_process(new))
        wait_listening(new, deadline=time.monotonic() + 30)


# -- many executors per process ----------------------------------------------------------


def _toml_str(value: str) -> str:
    return json.dumps(value)


def _tls_toml(ca: Path, cert: Path, key: Path) -> str:
    return (
        f"[tls]\nca = {_toml_str(str(ca))}\ncert = {_toml_str(str(cert))}\n"
        f"key = {_toml_str(str(key))}\n"
    )


class MultiCluster:
    """A controller process (embedded store) and ``nodes`` simulated nodes served by
    ``processes`` host processes, each running ``nodes / processes`` in-process
    ``Executor`` servers. Each node has its own simulated host (libvirt test-driver
    document and host root, no stand-in processes), its own port and its own
    executor certificate, since the controller binds a node's name to its
    certificate's name at registration."""

    def __init__(
        self,
        base: Path,
        nodes: int,
        processes: int,
        *,
        heartbeat_interval_ms: int = 1000,
        automation: dict[str, Any] | None = None,
        health_check_interval_ms: int | None = None,
    ) -> None:
        self.base = base
        self.health_check_interval_ms = health_check_interval_ms
        self.nodes = nodes
        self.processes = processes
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.automation = automation if automation is not None else {"enabled": False}
        self.client_config = base / "client.toml"
        self.certs = base / "certs"
        self.controller: subprocess.Popen[bytes] | None = None
        self.hosts: list[subprocess.Popen[bytes]] = []
        self.node_addresses: dict[str, str] = {}
        self.start_seconds = math.nan
        self.setup_seconds = math.nan

    @property
    def controller_pid(self) -> int:
        assert self.controller is not None
        return self.controller.pid

    def __enter__(self) -> MultiCluster:
        started = time.monotonic()
        try:
            configs = self._write()
            self.setup_seconds = time.monotonic() - started
            self._start(configs)
            wait_registered(self.client_config, self.nodes, timeout=120 + self.nodes / 2)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for host in self.hosts:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(host.pid, signal.SIGTERM)
        for host in self.hosts:
            stop_popen(host, timeout=20)
        if self.controller is not None:
            stop_popen(self.controller)

    def _write(self) -> list[list[Path]]:
        from novaops.devcluster.simnode import plan_node, write_sim_node
        from novaops.pki.identity import Identity, Role
        from novaops.pki.issue import CertificateAuthority

        self.base.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.create("novaops bench CA")
        ca_path = ca.save(self.certs)
        ctl = ca.issue(Identity(Role.CONTROLLER, "ctl-0"), self.certs)
        admin = ca.issue(Identity(Role.ADMIN, "admin"), self.certs, file_stem="user-admin")
        ports = free_ports(1 + self.nodes)
        ctl_address = f"{LOOPBACK}:{ports[0]}"
        ctl_dir = self.base / "controller"
        ctl_dir.mkdir(exist_ok=True)
        (ctl_dir / "controller.toml").write_text(
            "[controller]\n"
            'name = "ctl-0"\n'
            f"listen = {_toml_str(ctl_address)}\n"
            f"heartbeat_interval_ms = {self.heartbeat_interval_ms}\n"
            f"log_file = {_toml_str(str(self.base / 'controller.log'))}\n\n"
            + _tls_toml(ca_path, ctl.cert, ctl.key)
            + f'\n[store]\nkind = "embedded"\npath = {_toml_str(str(ctl_dir / "novaops.db"))}\n'
            + automation_toml(self.automation)
        )
        self.client_config.write_text(
            f"controllers = [{_toml_str(ctl_address)}]\ntimeout_seconds = 30\n\n"
            + _tls_toml(ca_path, admin.cert, admin.key)
        )
        per_host: list[list[Path]] = [[] for _ in range(self.processes)]
        for i in range(self.nodes):
            name = f"node-{i + 1}"
            node_dir = self.base / "nodes" / name
            paths = write_sim_node(plan_node(name, i + 1), node_dir)
            files = ca.issue(Identity(Role.EXECUTOR, name), self.certs)
            address = f"{LOOPBACK}:{ports[1 + i]}"
            self.node_addresses[name] = address
            config = node_dir / "executor.toml"
            config.write_text(
                "[executor]\n"
                f"node = {_toml_str(name)}\n"
                f"listen = {_toml_str(address)}\n"
                f"controllers = [{_toml_str(ctl_address)}]\n"
                f"host_root = {_toml_str(str(paths.host_root))}\n"
                f"libvirt_uri = {_toml_str(paths.libvirt_uri)}\n"
                f"state_dir = {_toml_str(str(node_dir / 'state'))}\n"
                f'tap_prefixes = ["vtap{i + 1}-"]\n'
                + (
                    ""
                    if self.health_check_interval_ms is None
                    else f"health_check_interval_ms = {self.health_check_interval_ms}\n"
                )
                + "\n"
                + _tls_toml(ca_path, files.cert, files.key)
            )
            per_host[i % self.processes].append(config)
        self._ctl_address = ctl_address
        return per_host

    def _start(self, per_host: list[list[Path]]) -> None:
        ctl_dir = self.base / "controller"
        with (self.base / "controller.out").open("ab") as out:
            self.controller = subprocess.Popen(
                [PYTHON, "-m", "novaops.controller", "--config", str(ctl_dir / "controller.toml")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ctl_dir,
                start_new_session=True,
            )
        wait_until(lambda: accepts(self._ctl_address), 30, "the controller to listen")
        for index, configs in enumerate(per_host):
            with (self.base / f"host-{index}.log").open("ab") as out:
                self.hosts.append(
                    subprocess.Popen(
                        [
                            PYTHON,
                            __file__,
                            "serve-executors",
                            f"--nice={FLEET_NICE}",
                            *map(str, configs),
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=self.base,
                        start_new_session=True,
                    )
                )

        def all_listen() -> bool:
            for host in self.hosts:
                if host.poll() is not None:
                    raise RuntimeError(
                        f"bench: executor host {host.pid} exited ({host.returncode})"
                    )
            return all(accepts(a) for a in self.node_addresses.values())

        wait_until(all_listen, 60 + self.nodes / 5, "every executor to listen", interval=0.5)


async def _serve_executors(configs: list[Path]) -> None:
    from novaops.client.daemon import settle_gc
    from novaops.executor.config import ExecutorConfig
    from novaops.executor.main import Executor

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    executors: list[Executor] = []
    try:
        for path in configs:
            executor = Executor(ExecutorConfig.load(path))
            await executor.start()
            executors.append(executor)
        settle_gc()  # as novaops-executor does once started
        print(f"serving {len(executors)} executors", flush=True)
        await stop.wait()
    finally:
        await asyncio.gather(*(e.stop(grace=1.0) for e in executors), return_exceptions=True)
    if any(e.abandoned for e in executors):
        # As novaops-executor does: asyncio.run would wait on the steps left behind.
        logging.shutdown()
        os._exit(0)


# -- the floor: trivial grpc.aio servers over the same mTLS ---------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


async def _serve_trivial(tls: TlsFiles, ports: list[int]) -> None:
    import grpc

    def ping(request: bytes, context: object) -> bytes:
        return b""

    handler = grpc.method_handlers_generic_handler(
        "bench.Trivial",
        {
            "Ping": grpc.unary_unary_rpc_method_handler(
                ping, request_deserializer=None, response_serializer=None
            )
        },
    )
    credentials = grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=tls.ca.read_bytes(),
        require_client_auth=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers = []
    try:
        for port in ports:
            server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            server.add_generic_rpc_handlers((handler,))
            server.add_secure_port(f"{LOOPBACK}:{port}", credentials)
            await server.start()
            servers.append(server)
        print(f"serving {len(servers)} trivial servers", flush=True)
        await stop.wait()
    finally:
        await asyncio.gather(*(s.stop(None) for s in servers), return_exceptions=True)


class TrivialServers:
    """``count`` trivial mTLS gRPC servers spread over ``processes`` processes."""

    def __init__(self, base: Path, count: int, processes: int, server_tls: TlsFiles) -> None:
        self.base = base
        self.count = count
        self.processes = processes
        self.tls = server_tls
        self.addresses: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> TrivialServers:
        try:
            ports = free_ports(self.count)
            self.addresses = [f"{LOOPBACK}:{p}" for p in ports]
            self.base.mkdir(parents=True, exist_ok=True)
            for index in range(self.processes):
                mine = ports[index :: self.processes]
                if not mine:
                    continue
                with (self.base / f"trivial-{index}.log").open("ab") as out:
                    self.procs.append(
                        subprocess.Popen(
                            [
                                PYTHON,
                                __file__,
                                "serve-trivial",
                                f"--nice={FLEET_NICE}",
                                str(self.tls.ca),
                                str(self.tls.cert),
                                str(self.tls.key),
                                *map(str, mine),
                            ],
                            stdin=subprocess.DEVNULL,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            wait_until(lambda: all(accepts(a) for a in self.addresses), 60, "trivial servers", 0.2)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in self.procs:
            stop_popen(proc)


def floor_fanout(
    addresses: Sequence[str], client_tls: TlsFiles, runs: int, warmup: int = 2
) -> Series:
    """Latency of one asyncio.gather of a unary call to every address, warm channels
    (the controller also keeps one channel per executor)."""
    import grpc

    from novaops.client.tls import CHANNEL_OPTIONS

    async def main() -> list[float]:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=client_tls.ca.read_bytes(),
            private_key=client_tls.key.read_bytes(),
            certificate_chain=client_tls.cert.read_bytes(),
        )
        channels = [
            grpc.aio.secure_channel(a, credentials, options=CHANNEL_OPTIONS) for a in addresses
        ]
        try:
            calls = [
                c.unary_unary(TRIVIAL_METHOD, request_serializer=None, response_deserializer=None)
                for c in channels
            ]
            samples = []
            for i in range(warmup + runs):
                started = time.perf_counter()
                await asyncio.gather(*(call(b"", timeout=10) for call in calls))
                if i >= warmup:
                    samples.append(time.perf_counter() - started)
            return samples
        finally:
            await asyncio.gather(*(c.close(None) for c in channels))

    return Series(
        f"floor: bare grpc.aio unary fan-out to {len(addresses)} endpoints", asyncio.run(main())
    )


def timed_series(name: str, action: Callable[[], int], runs: int, warmup: int = 1) -> Series:
    """Run action (returning its count of per-node errors) warmup + runs times."""
    series = Series(name)
    for i in range(warmup + runs):
        started = time.perf_counter()
        errors = action()
        elapsed = time.perf_counter() - started
        if i >= warmup:
            series.samples.append(elapsed)
            series.node_errors += errors
    return series


@contextlib.contextmanager
def cpu_meter(pid: int) -> Iterator[list[float]]:
    """Yields a list that receives the CPU seconds pid used inside the block."""
    out: list[float] = []
    before = cpu_seconds(pid)
    try:
        yield out
    finally:
        out.append(cpu_seconds(pid) - before)


def with_note(series: Series, note: str) -> Series:
    return replace(series, note=note)


# -- helper process entry point -------------------------------------------------------------


def lower_priority(nice: int) -> None:
    """This process at a lower CPU priority than the controller's. Each helper is
    the leader of its own session, and with the kernel's autogroup scheduling
    (sched_autogroup_enabled) a process's nice value only ranks it inside its
    session: the autogroup's nice is what counts against other sessions. That is
    the whole session's priority: only for helpers started with
    start_new_session=True (not from an interactive shell)."""
    os.nice(nice)
    with contextlib.suppress(OSError):  # no autogroup support: os.nice is enough
        Path("/proc/self/autogroup").write_text(f"{nice}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bench helper processes")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("serve-executors")
    ex.add_argument("--nice", type=int, default=0)
    ex.add_argument("configs", nargs="+", type=Path)
    tr = sub.add_parser("serve-trivial")
    tr.add_argument("--nice", type=int, default=0)
    tr.add_argument("ca", type=Path)
    tr.add_argument("cert", type=Path)
    tr.add_argument("key", type=Path)
    tr.add_argument("ports", nargs="+", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.nice:
        lower_priority(args.nice)
    if args.command == "serve-executors":
        asyncio.run(_serve_executors(args.configs))
    else:
        asyncio.run(_serve_trivial(TlsFiles(args.ca, args.cert, args.key), args.ports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
