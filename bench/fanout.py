#!/usr/bin/env python3
"""Benchmark of issue #3: ``novaops diag host --all`` end to end, against its floor and peer.

    .venv/bin/python bench/fanout.py [--quick]      # prints the markdown section

For each fleet size, in the same run:

- novaops: ``diag host --all`` through the controller (embedded store, mTLS), as
  the CLI in a new process (``novaops diag host --all -o json``) and as the client
  library call on a warm channel (``NovaopsClient.diagnose(host=True, all_nodes=True)``);
  p50/p95 latency and the controller's CPU per node and run (psutil cpu_times of
  the controller process over the library runs; gross, and net of the idle rate
  measured just before — heartbeats — over the same time);
- the floor: a bare grpc.aio unary fan-out (``asyncio.gather``) with a trivial
  handler to the same number of mTLS endpoints, warm channels;
- the peer (10 and 50 nodes): ``ansible all -m ping -f 50`` over sshd on loopback.

10 and 50 nodes are dev clusters (``novaops.devcluster.up``: one
``novaops-executor`` process per simulated node, with the simulated host side:
stand-in QEMU processes, orphan, stale lock, container). 500 nodes are 10 host
processes x 50 in-process ``Executor`` servers, each its own simulated node
(libvirt test-driver document and host root, its own port and certificate, no
stand-in processes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy runs from the repository root; the scripts run from bench/
    from bench import harness
    from bench.harness import Series, TlsFiles
else:
    import harness
    from harness import Series, TlsFiles

ANSIBLE_FORKS = 50
# Generous deadlines, the same for every size, so every run measures complete results
# (the defaults, 5 s per node, cut off nodes when 500 simulated nodes share 2 cores).
PER_NODE_MS = 30_000
OVERALL_MS = 60_000
# The 500 simulated nodes' background health checks (see benchmarks-method.md).
MULTI_HEALTH_CHECK_MS = 60_000


@dataclass
class SizeResult:
    nodes: int
    kind: str
    start_seconds: float
    cli: Series
    library: Series
    floor: Series
    liveness: Series | None = None
    ansible: Series | None = None
    ansible_note: str = ""
    cpu_gross_ms: float = math.nan  # controller CPU ms per node per run
    cpu_net_ms: float = math.nan
    idle_cpu_share: float = math.nan  # controller CPU seconds per second while idle
    extra: list[str] = field(default_factory=list)


# -- novaops -----------------------------------------------------------------------------


def _library_errors(config: Path, nodes: int) -> int:
    from novaops.client import NovaopsClient
    from novaops.client.models import NodeFailure

    with NovaopsClient.from_config_file(config) as client:
        return _diag_once(client, nodes, NodeFailure)


def _diag_once(client: object, nodes: int, failure_type: type) -> int:
    seen: set[str] = set()
    errors = 0
    for item in client.diagnose(  # type: ignore[attr-defined]
        host=True, all_nodes=True, per_node_ms=PER_NODE_MS, overall_ms=OVERALL_MS
    ):
        if isinstance(item, failure_type):
            errors += 1
        else:
            seen.add(item.node)
            errors += _overloaded(item.summary)
    return errors + max(0, nodes - len(seen) - errors)


def _overloaded(summary: str) -> bool:
    """A check that did not run its course (counted as an error of the run)."""
    return summary.startswith(("timed out after", "host checks are stuck"))


def _cli_once(config: Path, nodes: int) -> int:
    done = harness.run_cli(
        config,
        "diag",
        "host",
        "--all",
        "--node-timeout",
        str(PER_NODE_MS / 1000),
        "--overall-timeout",
        str(OVERALL_MS / 1000),
        "-o",
        "json",
    )
    if done.returncode not in (0, 1, 3):
        raise RuntimeError(
            f"novaops diag host --all exited {done.returncode}: {done.stderr.decode()[-500:]}"
        )
    items = json.loads(done.stdout)
    errors = sum(1 for item in items if "error" in item or _overloaded(item.get("summary", "")))
    seen = {item["node"] for item in items if "error" not in item}
    return errors + max(0, nodes - len(seen) - errors)


def measure_novaops(
    config: Path, controller_pid: int, nodes: int, runs: int, idle_window: float
) -> tuple[Series, Series, Series, float, float, float]:
    """(cli, library, liveness, cpu gross ms/node/run, cpu net ms/node/run, idle share)."""
    from novaops.client import NovaopsClient
    from novaops.client.models import NodeFailure

    with NovaopsClient.from_config_file(config) as client:
        for _ in range(2):  # warm the controller's channels to every executor
            _diag_once(client, nodes, NodeFailure)
        idle_before = harness.cpu_seconds(controller_pid)
        time.sleep(idle_window)
        idle_share = (harness.cpu_seconds(controller_pid) - idle_before) / idle_window
        started = time.perf_counter()
        with harness.cpu_meter(controller_pid) as used:
            library = harness.timed_series(
                f"novaops client library diagnose(host, all), {nodes} nodes",
                lambda: _diag_once(client, nodes, NodeFailure),
                runs,
                warmup=0,
            )
        elapsed = time.perf_counter() - started

        def liveness_once() -> int:
            items = list(
                client.health(include_checks=False, per_node_ms=PER_NODE_MS, overall_ms=OVERALL_MS)
            )
            return sum(isinstance(i, NodeFailure) for i in items) + max(0, nodes - len(items))

        liveness = harness.timed_series(
            f"reference: client library health() without checks (liveness), {nodes} nodes",
            liveness_once,
            runs,
        )
    gross = used[0] / (nodes * runs) * 1000
    net = max(0.0, used[0] - idle_share * elapsed) / (nodes * runs) * 1000
    cli = harness.timed_series(
        f"novaops diag host --all -o json (CLI, new process), {nodes} nodes",
        lambda: _cli_once(config, nodes),
        runs,
    )
    return cli, library, liveness, gross, net, idle_share


def measure_floor(base: Path, certs: Path, nodes: int, processes: int, runs: int) -> Series:
    server = TlsFiles(
        certs / "ca.pem", certs / "executor-node-1.pem", certs / "executor-node-1-key.pem"
    )
    client = TlsFiles(
        certs / "ca.pem", certs / "controller-ctl-0.pem", certs / "controller-ctl-0-key.pem"
    )
    with harness.TrivialServers(base / "trivial", nodes, processes, server) as servers:
        floor = harness.floor_fanout(servers.addresses, client, runs)
    floor.note = f"{processes} server processes"
    return floor


# -- ansible -------------------------------------------------------------------------------


SSHD_MAX_LISTEN = 16  # OpenSSH's MAX_LISTEN_SOCKS


def _ensure_ansible() -> str | None:
    """None when ansible and sshd are usable, else why not (after trying to install)."""
    venv_bin = Path(harness.PYTHON).parent
    if not (venv_bin / "ansible").exists():
        done = subprocess.run(
            [harness.PYTHON, "-m", "pip", "install", "-q", "ansible-core"],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            return f"pip install ansible-core failed: {done.stderr.decode()[-300:]}"
    if not Path("/usr/sbin/sshd").exists():
        done = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"],
            capture_output=True,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if done.returncode != 0 or not Path("/usr/sbin/sshd").exists():
            return f"apt-get install openssh-server failed: {done.stderr.decode()[-300:]}"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "ssh or ssh-keygen missing"
    return None


def measure_ansible(nodes: int, runs: int) -> tuple[Series | None, str]:
    """``ansible all -m ping -f 50`` against ``nodes`` inventory hosts, all sshd on
    127.0.0.1 (one port per host so each host gets its own ssh ControlMaster, as
    distinct machines would; ceil(nodes/16) sshd processes)."""
    reason = _ensure_ansible()
    if reason is not None:
        return None, reason
    base = Path(tempfile.mkdtemp(prefix="nb-", dir="/tmp"))  # short: ssh socket paths
    sshds: list[subprocess.Popen[bytes]] = []
    try:
        key = base / "id"
        host_key = base / "hostkey"
        for path in (key, host_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True
            )
        (base / "authorized_keys").write_text((base / "id.pub").read_text())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        ports = harness.free_ports(nodes)
        for index in range(0, nodes, SSHD_MAX_LISTEN):
            mine = ports[index : index + SSHD_MAX_LISTEN]
            config = base / f"sshd-{index}.conf"
            config.write_text(
                "".join(f"ListenAddress 127.0.0.1:{p}\n" for p in mine) + f"HostKey {host_key}\n"
                f"AuthorizedKeysFile {base / 'authorized_keys'}\n"
                f"PidFile {base / f'sshd-{index}.pid'}\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                "MaxStartups 200\nMaxSessions 200\nUseDNS no\nLogLevel ERROR\n"
                "Subsystem sftp internal-sftp\n"
            )
            with (base / f"sshd-{index}.log").open("ab") as out:
                sshds.append(
                    subprocess.Popen(
                        ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        harness.wait_until(
            lambda: all(harness.accepts(f"127.0.0.1:{p}") for p in ports), 20, "sshd"
        )
        inventory = base / "hosts"
        inventory.write_text(
            "[all]\n"
            + "".join(
                f"node-{i + 1} ansible_host=127.0.0.1 ansible_port={p}\n"
                for i, p in enumerate(ports)
            )
        )
        (base / "cp").mkdir()
        env = {
            **os.environ,
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PRIVATE_KEY_FILE": str(key),
            "ANSIBLE_REMOTE_USER": "root",
            "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
            "ANSIBLE_HOME": str(base / "home"),
            "ANSIBLE_LOCAL_TEMP": str(base / "tmp"),
            "ANSIBLE_REMOTE_TMP": str(base / "rtmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(base / "cp"),
            "ANSIBLE_NOCOLOR": "1",
        }
        ansible = str(Path(harness.PYTHON).with_name("ansible"))
        command = [ansible, "all", "-i", str(inventory), "-m", "ping", "-f", str(ANSIBLE_FORKS)]

        def once() -> int:
            done = subprocess.run(command, capture_output=True, env=env, timeout=600, check=False)
            ok = done.stdout.decode().count("SUCCESS")
            if ok == 0:
                raise RuntimeError(
                    f"ansible ping failed (exit {done.returncode}): "
                    f"{(done.stdout + done.stderr).decode()[-600:]}"
                )
            return nodes - ok

        cold = harness.timed_series("cold", once, 1, warmup=0)
        warm = harness.timed_series(
            f"peer: ansible all -m ping -f {ANSIBLE_FORKS} (ssh loopback), {nodes} hosts",
            once,
            runs,
            warmup=0,
        )
        warm.note = "warm ssh ControlPersist; interpreter /usr/bin/python3; defaults otherwise"
        note = (
            f"first (cold, new ssh connections) run at {nodes} hosts: "
            f"{cold.samples[0] * 1000:.0f} ms, {cold.node_errors} host errors"
        )
        return warm, note
    finally:
        for proc in sshds:
            harness.stop_popen(proc)
        # ssh ControlMaster processes ansible left behind (ControlPersist), ours only
        for path in (base / "cp").glob("*") if (base / "cp").exists() else []:
            subprocess.run(
                ["ssh", "-o", f"ControlPath={path}", "-O", "exit", "x"],
                capture_output=True,
                check=False,
                timeout=10,
            )
        shutil.rmtree(base, ignore_errors=True)


# -- sizes -----------------------------------------------------------------------------------


def bench_dev(nodes: int, runs: int, with_ansible: bool, ansible_runs: int) -> SizeResult:
    with tempfile.TemporaryDirectory(prefix="novaops-bench-fanout-") as tmp:
        base = Path(tmp)
        # Automation off: its 10 s health polls and recoveries would run during the
        # measurement; this benchmark is about the fan-out alone.
        with harness.DevCluster(base / "cluster", nodes, automation={"enabled": False}) as dev:
            cli, library, liveness, gross, net, idle = measure_novaops(
                dev.client_config, dev.controller_pid, nodes, runs, idle_window=5.0
            )
            floor = measure_floor(base, dev.state_dir / "certs", nodes, min(nodes, 10), runs)
            result = SizeResult(
                nodes,
                f"dev cluster: {nodes} novaops-executor processes (simulated host side on)",
                dev.start_seconds,
                cli,
                library,
                floor,
                liveness=liveness,
                cpu_gross_ms=gross,
                cpu_net_ms=net,
                idle_cpu_share=idle,
            )
        if with_ansible:
            try:
                result.ansible, result.ansible_note = measure_ansible(nodes, ansible_runs)
            except Exception as exc:  # reported, not fatal: the section says why
                result.ansible_note = f"ansible run failed: {type(exc).__name__}: {exc}"
    return result


def _heartbeat_note(heartbeat_ms: int, nodes: int) -> str:
    """The heartbeat the controller hands out: configured, paced for the fleet."""
    from novaops.controller.config import ControllerConfig
    from novaops.controller.registry import paced_interval_ms

    rate = ControllerConfig.max_heartbeats_per_second  # the controller's default
    paced = paced_interval_ms(heartbeat_ms, nodes, rate)
    if paced == heartbeat_ms:
        return f"{heartbeat_ms / 1000:g} s"
    return (
        f"{heartbeat_ms / 1000:g} s configured, {paced / 1000:g} s handed out "
        f"(max_heartbeats_per_second = {rate:g}, the default)"
    )


def bench_multi(nodes: int, processes: int, runs: int, heartbeat_ms: int) -> SizeResult:
    with tempfile.TemporaryDirectory(prefix="novaops-bench-fanout-") as tmp:
        base = Path(tmp)
        with harness.MultiCluster(
            base / "cluster",
            nodes,
            processes,
            heartbeat_interval_ms=heartbeat_ms,
            health_check_interval_ms=MULTI_HEALTH_CHECK_MS,
        ) as multi:
            executors_before = sum(harness.cpu_seconds(h.pid) for h in multi.hosts)
            cli, library, liveness, gross, net, idle = measure_novaops(
                multi.client_config, multi.controller_pid, nodes, runs, idle_window=5.0
            )
            executor_cpu = sum(harness.cpu_seconds(h.pid) for h in multi.hosts) - executors_before
            floor = measure_floor(base, multi.certs, nodes, processes, runs)
            cores = os.cpu_count() or 1
            # Library and CLI runs plus the 2 warm-up runs, heartbeats included.
            rounds = 2 * runs + 3
            bound = executor_cpu / rounds / cores
            return SizeResult(
                nodes,
                f"{processes} host processes x {nodes // processes} in-process executors "
                "(libvirt documents and host roots; no stand-in processes; heartbeat "
                f"{_heartbeat_note(heartbeat_ms, nodes)}; background health checks every "
                f"{MULTI_HEALTH_CHECK_MS / 1000:.0f} s; fleet at nice {harness.FLEET_NICE})",
                multi.start_seconds,
                cli,
                library,
                floor,
                liveness=liveness,
                cpu_gross_ms=gross,
                cpu_net_ms=net,
                idle_cpu_share=idle,
                extra=[
                    f"all executors on this machine used {executor_cpu:.1f} CPU s over the "
                    f"{rounds} diag rounds measured (heartbeats included): "
                    f"~{executor_cpu / rounds:.2f} CPU s per round, so no round can finish in "
                    f"under ~{bound * 1000:.0f} ms on {cores} cores here; on a real fleet "
                    "each node's checks run on its own CPU"
                ],
            )


# -- report ----------------------------------------------------------------------------------


def render(results: list[SizeResult], quick: bool, runs: int, ansible_runs: int) -> str:
    lines = [
        "## Fan-out: `novaops diag host --all` (issue #3)",
        "",
        f"- mode: {'quick' if quick else 'full'}; {runs} measured runs per novaops and floor "
        f"figure (after warm-up), {ansible_runs} warm ansible runs; machine: {harness.machine()}",
        "- controller: embedded store, mTLS, automation disabled; fan-out deadlines "
        f"per node {PER_NODE_MS / 1000:.0f} s, overall {OVERALL_MS / 1000:.0f} s (passed by "
        "the caller); executors heartbeat every 1 s unless said otherwise",
        "- CLI: `novaops --config client.toml diag host --all -o json`, a new process per run "
        "(includes interpreter start-up); library: `NovaopsClient.diagnose(host=True, "
        "all_nodes=True)` on one warm client",
        "- floor: bare grpc.aio unary calls with an empty handler to the same number of mTLS "
        "endpoints (executor certificate on the servers, controller certificate on the "
        "client), one `asyncio.gather`, warm channels",
        "- peer: `ansible all -m ping -f 50`, every inventory host an sshd port on 127.0.0.1",
        "- reference row: `health` without checks (executor answers from its facts, no "
        "checks run), to separate the fan-out's own cost from the executors' check work",
        "- controller CPU: psutil user+system of the controller process over the library "
        "runs, per node per run; net = minus the idle rate (heartbeats) measured over 5 s "
        "just before",
        "",
    ]
    for r in results:
        lines += [
            f"### {r.nodes} nodes — {r.kind}",
            "",
            f"cluster start to all nodes registered: {r.start_seconds:.1f} s; "
            f"controller CPU per node per `diag host` run: {r.cpu_gross_ms:.2f} ms gross, "
            f"{r.cpu_net_ms:.2f} ms net of idle (idle: {r.idle_cpu_share * 100:.1f}% of a core)",
            "",
        ]
        lines += [f"{line}" for line in r.extra] + ([""] if r.extra else [])
        rows = [r.floor, r.library, r.cli] + ([r.liveness] if r.liveness else [])
        if r.ansible is not None:
            rows.append(r.ansible)
        lines.append(harness.series_table(rows, r.floor))
        if r.ansible_note:
            lines += ["", f"ansible: {r.ansible_note}"]
        lines.append("")
    lines += ["### Targets", ""]
    lines += targets(results)
    return "\n".join(lines) + "\n"


def targets(results: list[SizeResult]) -> list[str]:
    out = []
    by_size = {r.nodes: r for r in results}
    big = by_size.get(500)
    if big is None:
        out.append("- p95 under 1 s at 500 nodes: NOT MEASURED (quick mode)")
    else:
        out.append(
            f"- p95 under 1 s at 500 nodes: CLI p95 {harness.ms(big.cli.p95_ms)} ms, library "
            f"p95 {harness.ms(big.library.p95_ms)} ms -> CLI "
            f"{harness.verdict(big.cli.p95_ms < 1000)}, library "
            f"{harness.verdict(big.library.p95_ms < 1000)}"
        )
    for r in results:
        lib = r.library.p50_ms / r.floor.p50_ms
        cli = r.cli.p50_ms / r.floor.p50_ms
        out.append(
            f"- within 2x of the bare gRPC floor at {r.nodes} nodes (p50): library {lib:.1f}x "
            f"-> {harness.verdict(lib <= 2)}; CLI {cli:.1f}x -> {harness.verdict(cli <= 2)}"
            + (
                f" (reference, liveness fan-out without checks: "
                f"{r.liveness.p50_ms / r.floor.p50_ms:.1f}x)"
                if r.liveness
                else ""
            )
        )
    fifty = by_size.get(50)
    if fifty is None or fifty.ansible is None:
        why = "no 50-node run" if fifty is None else (fifty.ansible_note or "no ansible run")
        out.append(f"- at least 50x faster than Ansible at 50 nodes: NOT MEASURED ({why})")
    else:
        speed = fifty.ansible.p50_ms / fifty.cli.p50_ms
        speed_lib = fifty.ansible.p50_ms / fifty.library.p50_ms
        out.append(
            f"- at least 50x faster than Ansible at 50 nodes (p50, ansible ping vs diag host): "
            f"CLI {speed:.1f}x -> {harness.verdict(speed >= 50)}; library {speed_lib:.1f}x "
            f"-> {harness.verdict(speed_lib >= 50)}"
        )
    return out


def run(quick: bool) -> str:
    """Run the benchmark; the markdown section for docs/benchmarks.md.

    quick: 10 executor processes (+ ansible at 10) and 50 in-process executors in
    2 processes, 5 runs. Full: 10 and 50 executor processes (+ ansible), 20
    runs; 500 in-process executors in 10 processes (the default 1 s heartbeat,
    paced to 10 s by the controller), 10 runs.
    """
    runs = 5 if quick else 20
    ansible_runs = 3 if quick else 5
    results = [bench_dev(10, runs, True, ansible_runs)]
    if quick:
        results.append(bench_multi(50, 2, runs, heartbeat_ms=1000))
    else:
        results.append(bench_dev(50, runs, True, ansible_runs))
        results.append(bench_multi(500, 10, 10, heartbeat_ms=1000))
    return render(results, quick, runs, ansible_runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few runs")
    args = parser.parse_args()
    print(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
