"""``novaops dev up|status|down``: a local simulated cluster of real processes.

``up`` writes a dev CA and certificates, simulated nodes, per-process configs and
``client.toml`` under a state folder, makes each node's host side real (stand-in
QEMU processes, faults, network namespace, container: simhost.py), starts a
controller and one executor per node detached in their own sessions, records
them all in ``cluster.json`` and returns once every daemon accepts TCP
connections. It does not wait for executors to register; poll ``node list`` for
that. ``down`` stops everything recorded, in order, deletes the namespaces and
leaves no process behind.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Literal

import psutil

from novaops.devcluster import layout as cfg
from novaops.devcluster import simhost
from novaops.devcluster.errors import (
    ClusterRunningError,
    DevClusterError,
    NoClusterError,
    ProcessStartError,
    UnknownProcessError,
)
from novaops.devcluster.layout import ADMIN_USER, CONTROLLER_NAME, Layout, TomlValue, node_names
from novaops.devcluster.ports import LOOPBACK, pick_ports
from novaops.devcluster.processes import (
    ProcessStatus,
    StopOutcome,
    find_process,
    is_running,
    send_signal,
    spawn,
    spawned_processes,
    start_ticks,
    stop_group,
    wait_listening,
)
from novaops.devcluster.simnode import (
    SimHostPlan,
    SimNodePaths,
    plan_host,
    plan_node,
    write_sim_node,
)
from novaops.devcluster.state import (
    CLUSTER_ROLES,
    STOP_ORDER,
    ClusterRecord,
    ClusterStatus,
    ProcessRecord,
    ProcessRole,
    load_cluster,
    save_cluster,
)
from novaops.pki.identity import Identity, Role
from novaops.pki.issue import CertificateAuthority, write_atomic

log = logging.getLogger(__name__)

StoreKind = Literal["embedded", "etcd"]
MAX_NODES = 64


def start_timeout(nodes: int) -> float:
    """How long ``up`` waits by default for the whole cluster to listen: 30 s, plus
    a second per node (measured: 50 executors starting at once on 2 cores take
    ~35 s to all listen; one alone takes under 1 s)."""
    return 30.0 + nodes


_etcd_launchers: list[object] = []  # EtcdCluster objects; see _start_etcd


@dataclass(frozen=True)
class ClusterState:
    """What ``up`` started: the client config to use, the daemons (``processes``) and
    the simulated hosts' stand-in QEMU and container processes and namespaces."""

    state_dir: Path
    client_config: Path
    store: StoreKind
    controller_address: str
    processes: tuple[ProcessStatus, ...]
    simulated: tuple[ProcessStatus, ...] = ()
    netns: tuple[str, ...] = ()

    @property
    def nodes(self) -> list[str]:
        return [p.name for p in self.processes if p.role is ProcessRole.EXECUTOR]


# -- certificates --------------------------------------------------------------------------


def _issue_certificates(layout: Layout, nodes: list[str]) -> dict[str, dict[str, cfg.TomlValue]]:
    """A TLS table per identity name (ctl-0, node-N, admin). The CA is reused when
    the folder has one, so an old client.toml keeps trusting a new cluster."""
    if layout.ca.exists() and (layout.certs / "ca-key.pem").exists():
        ca = CertificateAuthority.load(layout.certs)
    else:
        ca = CertificateAuthority.create("novaops dev CA")
        ca.save(layout.certs)
    identities = [Identity(Role.CONTROLLER, CONTROLLER_NAME)]
    identities += [Identity(Role.EXECUTOR, node) for node in nodes]
    identities.append(Identity(Role.ADMIN, ADMIN_USER))
    tables: dict[str, dict[str, cfg.TomlValue]] = {}
    for identity in identities:
        stem = f"user-{identity.name}" if identity.role.is_user else None
        files = ca.issue(identity, layout.certs, file_stem=stem)
        tables[identity.name] = cfg.tls_table(layout.ca, files.cert, files.key)
    return tables


# -- up ------------------------------------------------------------------------------------


def _check_not_running(state_dir: Path) -> None:
    record = load_cluster(state_dir)
    if record is None:
        return
    running = [p.name for p in record.processes if is_running(p)]
    if running:
        raise ClusterRunningError(
            f"a dev cluster in {state_dir} is still running ({', '.join(running)}); "
            f"run 'novaops dev down --state-dir {state_dir}' first"
        )


def _start_etcd(layout: Layout, timeout: float) -> tuple[list[str], list[ProcessRecord]]:
    # Imported here: the etcd launcher is only needed for store="etcd".
    from novaops.devcluster.etcd import EtcdCluster

    try:
        etcd = EtcdCluster.start(layout.etcd_dir, members=1, timeout=timeout)
    except DevClusterError:
        raise
    except Exception as exc:
        raise ProcessStartError(f"etcd did not start under {layout.etcd_dir}: {exc}") from exc
    # Keep the launcher object alive: the processes outlive this call (detached
    # cluster) and are stopped by pid in down(), possibly from another process.
    _etcd_launchers.append(etcd)
    # Let down() reap the members through their Popen objects, as for the other
    # processes this Python process started (a Popen collected while its process
    # runs, or after it was reaped elsewhere, warns).
    for popen in getattr(etcd, "processes", ()):
        spawned_processes()[popen.pid] = popen
    records = []
    for i, (pid, endpoint) in enumerate(zip(etcd.pids, etcd.endpoints, strict=True)):
        try:
            proc = psutil.Process(pid)
            create_time = proc.create_time()
            own_group = proc.pid == _pgid(pid)
        except psutil.Error as exc:
            etcd.stop()
            raise ProcessStartError(f"etcd member {i} (pid {pid}) vanished after start") from exc
        records.append(
            ProcessRecord(
                role=ProcessRole.ETCD,
                name=f"etcd-{i}",
                pid=pid,
                create_time=create_time,
                start_ticks=start_ticks(pid),
                address=endpoint.removeprefix("http://"),
                own_group=own_group,
                log=etcd.log_path(i),
            )
        )
    return list(etcd.endpoints), records


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def up(
    state_dir: Path,
    nodes: int,
    store: StoreKind = "embedded",
    *,
    base_port: int | None = None,
    heartbeat_interval_ms: int = 500,
    missed_heartbeats_limit: int = 3,
    wait_timeout: float | None = None,
    seed: int = 0,
    python: str = sys.executable,
    faults: bool = True,
    automation: bool | Mapping[str, TomlValue] = True,
) -> ClusterState:
    """Start a dev cluster of ``nodes`` simulated nodes; see the module docstring.

    ``faults=False`` leaves out the host side (no stand-ins, orphan, stale lock,
    namespace or container): the libvirt documents alone. Networking and the
    container need root; without it they are skipped (logged) and the executors
    run without ``netns``. ``automation=False`` turns the controller's automation
    off, so faults it would repair by itself (orphans, stale locks) stay.

    Raises ClusterRunningError when a cluster recorded in state_dir still runs,
    ProcessStartError (naming the process, with its log tail) when a process
    exits or does not listen within wait_timeout; everything started so far is
    stopped again before raising. wait_timeout defaults to :func:`start_timeout`
    (every executor imports and binds while the others do, on the same cores).
    Ports: with base_port, the controller gets base_port, its metrics
    base_port+1 and node-i base_port+1+i.
    """
    if not 1 <= nodes <= MAX_NODES:
        raise DevClusterError(f"--nodes {nodes}: expected 1..{MAX_NODES}")
    if store not in ("embedded", "etcd"):
        raise DevClusterError(f"store {store!r}: expected embedded or etcd")
    state_dir = state_dir.expanduser().resolve()
    _check_not_running(state_dir)
    layout = Layout(state_dir)
    for folder in (state_dir, layout.logs, layout.controller_dir):
        folder.mkdir(parents=True, exist_ok=True)
    names = node_names(nodes)

    tls = _issue_certificates(layout, names)
    ports = pick_ports(2 + nodes, base=base_port)
    ctl_address = f"{LOOPBACK}:{ports[0]}"
    node_address = {node: f"{LOOPBACK}:{ports[2 + i]}" for i, node in enumerate(names)}

    network, container = _sim_support(faults)
    node_configs: dict[str, Path] = {}
    hosts: list[tuple[SimHostPlan, SimNodePaths, str | None]] = []
    for index, node in enumerate(names, start=1):
        spec = plan_node(node, index, seed)
        paths = write_sim_node(spec, layout.node_dir(node))
        (layout.node_dir(node) / "state").mkdir(exist_ok=True)
        host = plan_host(spec)
        netns = simhost.netns_name(state_dir, node) if network else None
        hosts.append((host, paths, netns))
        node_configs[node] = layout.executor_config(node)
        text = cfg.executor_config(
            layout,
            node,
            listen=node_address[node],
            controllers=[ctl_address],
            libvirt_uri=paths.libvirt_uri,
            host_root=paths.host_root,
            tls=tls[node],
            netns=netns,
            tap_prefixes=[host.tap_prefix],
        )
        _write_text(node_configs[node], text)
    _write_text(layout.client_config, cfg.client_config([ctl_address], tls[ADMIN_USER]))

    record = ClusterRecord(
        status=ClusterStatus.STARTING, store=store, client_config=layout.client_config
    )
    save_cluster(state_dir, record)
    if wait_timeout is None:
        wait_timeout = start_timeout(nodes)
    deadline = time.monotonic() + wait_timeout
    try:
        if faults:
            for host, paths, netns in hosts:
                record = _start_sim_host(state_dir, layout, record, host, paths, netns, container)
        etcd_endpoints: list[str] | None = None
        if store == "etcd":
            etcd_endpoints, etcd_records = _start_etcd(layout, wait_timeout)
            for rec in etcd_records:
                record = record.with_process(rec)
            save_cluster(state_dir, record)
        ctl_text = cfg.controller_config(
            layout,
            listen=ctl_address,
            metrics_listen=f"{LOOPBACK}:{ports[1]}",
            tls=tls[CONTROLLER_NAME],
            etcd_endpoints=etcd_endpoints,
            heartbeat_interval_ms=heartbeat_interval_ms,
            missed_heartbeats_limit=missed_heartbeats_limit,
            automation=automation,
        )
        _write_text(layout.controller_config, ctl_text)
        controller = spawn(
            ProcessRole.CONTROLLER,
            CONTROLLER_NAME,
            [python, "-m", "novaops.controller", "--config", str(layout.controller_config)],
            address=ctl_address,
            log_path=layout.log(CONTROLLER_NAME),
            cwd=layout.controller_dir,
            config=layout.controller_config,
        )
        record = record.with_process(controller)
        save_cluster(state_dir, record)
        wait_listening(controller, deadline=deadline)

        executors = []
        for node in names:
            rec = spawn(
                ProcessRole.EXECUTOR,
                node,
                [python, "-m", "novaops.executor", "--config", str(node_configs[node])],
                address=node_address[node],
                log_path=layout.log(node),
                cwd=layout.node_dir(node),
                config=node_configs[node],
            )
            record = record.with_process(rec)
            save_cluster(state_dir, record)
            executors.append(rec)
        for rec in executors:
            wait_listening(rec, deadline=deadline)
    except BaseException:
        log.error("dev cluster start failed; stopping what was started")
        _stop_all(state_dir, record, timeout=5.0)
        raise

    record = replace(record, status=ClusterStatus.UP)
    save_cluster(state_dir, record)
    daemons = [p for p in record.processes if p.role in CLUSTER_ROLES]
    simulated = [p for p in record.processes if p.role not in CLUSTER_ROLES]
    log.info(
        "dev cluster up in %s: %s (+%d simulated process(es))",
        state_dir,
        ", ".join(p.name for p in daemons),
        len(simulated),
    )
    return ClusterState(
        state_dir=state_dir,
        client_config=layout.client_config,
        store=store,
        controller_address=ctl_address,
        processes=tuple(ProcessStatus.of(p, True) for p in daemons),
        simulated=tuple(ProcessStatus.of(p, True) for p in simulated),
        netns=record.netns,
    )


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


def _sim_support(faults: bool) -> tuple[bool, bool]:
    """(networking, container) of the simulated hosts: what this process can make."""
    if not faults:
        return False, False
    network_reason = simhost.network_support()
    if network_reason is not None:
        log.warning(
            "simulated networking skipped (%s): no node namespaces, taps or bridge faults; "
            "executors run without netns",
            network_reason,
        )
    container_reason = simhost.container_support()
    if container_reason is not None:
        log.warning("simulated containers skipped (%s)", container_reason)
    return network_reason is None, container_reason is None


def _start_sim_host(
    state_dir: Path,
    layout: Layout,
    record: ClusterRecord,
    host: SimHostPlan,
    paths: SimNodePaths,
    netns: str | None,
    container: bool,
) -> ClusterRecord:
    """One node's host side. Each part is recorded before it is made (namespace) or
    as soon as it runs (process), so a failure part-way leaves nothing down() misses."""
    if netns is not None:
        record = record.with_netns(netns)
        save_cluster(state_dir, record)
        simhost.create_network(host, netns)
    started: list[ProcessRecord] = []
    try:
        # Stand-ins run on this interpreter, not up()'s ``python``: a test's fake
        # daemon executable is no Python interpreter.
        simhost.start_sim_host(
            host,
            paths,
            log_dir=layout.logs,
            started=started,
            netns=netns,
            container=container,
            python=sys.executable,
        )
    finally:
        for rec in started:
            record = record.with_process(rec)
        save_cluster(state_dir, record)
    return record


# -- status, down, kill ---------------------------------------------------------------------


def _require_record(state_dir: Path) -> ClusterRecord:
    record = load_cluster(state_dir.expanduser().resolve())
    if record is None:
        raise NoClusterError(f"no dev cluster recorded in {state_dir} (no cluster.json)")
    return record


def status(state_dir: Path) -> list[ProcessStatus]:
    """Every recorded daemon (etcd, controller, executors) and whether it is running
    (same pid, same start time, not a zombie). NoClusterError when nothing is
    recorded. The simulated hosts' processes: :func:`simulated_status`."""
    record = _require_record(state_dir)
    return [ProcessStatus.of(p, is_running(p)) for p in record.processes if p.role in CLUSTER_ROLES]


def simulated_status(state_dir: Path) -> list[ProcessStatus]:
    """The simulated hosts' stand-in QEMU and container processes, and whether each
    runs (a terminated orphan or a killed stand-in shows as not running)."""
    record = _require_record(state_dir)
    return [
        ProcessStatus.of(p, is_running(p)) for p in record.processes if p.role not in CLUSTER_ROLES
    ]


def _stop_all(state_dir: Path, record: ClusterRecord, timeout: float) -> list[ProcessStatus]:
    """Stop everything recorded and delete the namespaces; the daemons' outcomes."""
    outcomes: dict[str, StopOutcome] = {}
    for role in STOP_ORDER:
        group = [p for p in record.processes if p.role is role]
        if group:
            # The simulated workload needs no long grace: it holds no state to save.
            wait = timeout if role in CLUSTER_ROLES else min(timeout, 2.0)
            outcomes.update(stop_group(group, wait))
    for name in record.netns:
        try:
            simhost.delete_netns(name)
        except DevClusterError as exc:
            log.error("network namespace %s: %s", name, exc)
    record = replace(record, status=ClusterStatus.DOWN, stopped_at=time.time())
    save_cluster(state_dir, record)
    return [
        ProcessStatus.of(p, outcomes[p.name] is StopOutcome.SURVIVED, outcomes[p.name])
        for p in record.processes
        if p.role in CLUSTER_ROLES
    ]


def down(state_dir: Path, timeout: float = 10.0) -> list[ProcessStatus]:
    """Stop every recorded process: SIGTERM executors, then the simulated hosts'
    stand-ins and containers, then the controller, then etcd, each role waiting up
    to ``timeout`` seconds before SIGKILL; then delete the nodes' network
    namespaces. Whole process groups are signalled, so children go too. Returns
    the daemons' outcomes. Idempotent: a second call reports every process
    NOT_RUNNING. The record stays, marked down, for ``status``."""
    state_dir = state_dir.expanduser().resolve()
    record = _require_record(state_dir)
    result = _stop_all(state_dir, record, timeout)
    survivors = [p.name for p in result if p.running]
    if survivors:
        log.error("still running after SIGKILL: %s", ", ".join(survivors))
    return result


def kill_process(state_dir: Path, name: str, sig: signal.Signals = signal.SIGKILL) -> ProcessStatus:
    """Send sig to one recorded process (not its group), like ``kill -9 <pid>``; for
    SIGKILL, return once it is gone. For fault drills."""
    record = _require_record(state_dir)
    rec = record.process(name)
    if rec is None:
        known = ", ".join(p.name for p in record.processes) or "none"
        raise UnknownProcessError(f"no process named {name!r} in the dev cluster (known: {known})")
    if not send_signal(rec, sig):
        raise DevClusterError(f"{rec.role.value} {name} (pid {rec.pid}) is not running")
    return ProcessStatus.of(rec, find_process(rec) is not None)


# -- foreground -------------------------------------------------------------------------------


def wait_foreground(
    state_dir: Path,
    *,
    down_timeout: float = 10.0,
    poll_interval: float = 1.0,
    on_exit: Callable[[ProcessStatus], None] | None = None,
) -> list[ProcessStatus]:
    """Block until SIGINT or SIGTERM (or until no recorded process runs any more),
    then ``down`` the cluster and return its result. Must run in the main thread.
    ``on_exit`` is called once for each process seen to exit on its own meanwhile."""
    stop = threading.Event()

    def _handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        reported: set[str] = set()
        while not stop.wait(poll_interval):
            current = status(state_dir)
            for proc in current:
                if not proc.running and proc.name not in reported:
                    reported.add(proc.name)
                    log.warning("%s %s exited on its own", proc.role.value, proc.name)
                    if on_exit is not None:
                        on_exit(proc)
            if not any(p.running for p in current):
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return down(state_dir, timeout=down_timeout)
