"""Make a simulated node's host side real: stand-in QEMU processes, an orphan, a stale
lock, a network namespace with bridge and taps, and a container.

:func:`~novaops.devcluster.simnode.plan_host` decides what a node gets (pure); this
module does the I/O. What the executor's checks then find, by design:

* every domain with a process (running, paused) has a stand-in QEMU: a sleeping
  Python script whose command line carries ``-name guest=<domain>`` and writing
  its pid to the domain's pid file ``<root>/run/libvirt/qemu/<domain>.pid`` once
  it is ready, as QEMU's ``-pidfile`` does;
* one more stand-in, ``<node>-ghost-1``, that no domain and no pid file claims:
  ``host.orphans`` fails;
* ``<root>/run/libvirt/qemu/<crashed domain>.lock`` names a pid no process can
  have: ``host.locks`` fails;
* as root, a network namespace of the node's own with ``virbr0`` (STP on) and a
  persistent tap per domain with a process, each opened by its stand-in so it has
  carrier, like QEMU holds its tap; one tap is left off the bridge:
  ``network.members`` and that domain's ``vm.interface`` fail;
* as root, ``<node>-app-1``: a process in its own net, pid and mount namespaces
  (``unshare``) listening on 8080 of the declared 8080 and 8081, with a
  runc-style ``<root>/run/runc/<id>/state.json``: ``container.port`` fails for
  8081.

Scoping: simulated nodes share this machine's process table, and two dev clusters
(or tests) may both have a ``node-1``. So stand-ins do not carry ``NOVAOPS_NODE``
(it names a node, not a cluster: each cluster's ``node-1`` would claim the other's
stand-ins and ``terminate-orphans`` kill them). They are this node's by its pid
files and by its host root path on their command line (the monitor socket
``-chardev ...,path=<root>/var/lib/libvirt/qemu/domain-<guest>/monitor.sock``),
which is unique per state folder.

Every process leads its own process group and is returned as a
:class:`~novaops.devcluster.state.ProcessRecord`, so the cluster records it and
``down`` stops it like the daemons.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from novaops.devcluster.errors import DevClusterError, ProcessStartError
from novaops.devcluster.processes import StopOutcome, find_process, spawn, start_ticks, stop_group
from novaops.devcluster.simnode import SimHostPlan, SimNodePaths, StandIn, host_path
from novaops.devcluster.state import ProcessRecord, ProcessRole
from novaops.pki.issue import write_atomic

log = logging.getLogger(__name__)

NETNS_ENV = "NOVAOPS_SIM_NETNS"
NETNS_DIR = Path("/run/netns")
STANDIN_SCRIPT = "qemu-standin.py"
APP_SCRIPT = "container-app.py"
_POLL = 0.02
_IP_TIMEOUT = 10.0

# The stand-in QEMU. Only the standard library, run with -I -S: it must not depend on
# the venv. It opens its taps by name (TUNSETIFF) inside the node's namespace, which
# gives them carrier, and writes its pid file last, so a pid file means "ready".
STANDIN_SOURCE = '''\
"""Stand-in for a QEMU process of a novaops simulated node (written by novaops dev up)."""
import ctypes, fcntl, os, signal, struct, sys, time

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
PR_SET_NAME = 15


def values(flag):
    args = sys.argv[1:]
    return [args[i + 1] for i in range(len(args) - 1) if args[i] == flag]


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, b"qemu-system-x86", 0, 0, 0)  # what ps and top show
    taps = [
        opt[len("ifname="):]
        for value in values("-netdev")
        for opt in value.split(",")
        if opt.startswith("ifname=")
    ]
    netns = os.environ.get("NOVAOPS_SIM_NETNS")
    held = []
    if netns and taps:
        fd = os.open("/run/netns/" + netns, os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            sys.exit("stand-in: setns %s: %s" % (netns, os.strerror(err)))
        os.close(fd)
        for tap in taps:
            tun = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", tap.encode(), IFF_TAP | IFF_NO_PI))
            held.append(tun)
    for path in values("-pidfile"):
        with open(path + ".tmp", "w") as fh:
            fh.write("%d\\n" % os.getpid())
        os.replace(path + ".tmp", path)
    while True:
        time.sleep(3600)


main()
'''

# The container's only process. pid 1 of its pid namespace ignores signals it has no
# handler for, so it installs one for SIGTERM (down sends it).
APP_SOURCE = '''\
"""A container service of a novaops simulated node: listens on 127.0.0.1:<port>..."""
import fcntl, signal, socket, struct, sys

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    loopback_up()
    servers = []
    for port in sys.argv[1:]:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", int(port)))
        server.listen(16)
        servers.append(server)
    while True:
        conn, _ = servers[0].accept()
        conn.close()


main()
'''


# -- network namespaces -------------------------------------------------------------------


def netns_name(state_dir: Path, node: str) -> str:
    """The node's namespace name: unique per state folder, so two dev clusters (or
    tests) on one machine never collide, and stable, so a rerun finds its leftovers."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
    return f"novaops-{digest}-{node}"


def network_support() -> str | None:
    """None when this process can make network namespaces and taps; else why not."""
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing"
    return None


def container_support() -> str | None:
    """None when a container (unshare into new namespaces) can be started; else why not."""
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    return None


def _ip(args: Sequence[str], stdin: str | None = None) -> None:
    ip = shutil.which("ip") or "ip"
    try:
        done = subprocess.run(
            [ip, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_IP_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevClusterError(f"ip {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        why = " ".join(done.stderr.split())[:300]
        raise DevClusterError(f"ip {' '.join(args)} failed: {why}")


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def delete_netns(name: str) -> bool:
    """Delete a named namespace (its links go with it); False when there was none."""
    if not netns_exists(name):
        return False
    _ip(["netns", "delete", name])
    log.info("deleted network namespace %s", name)
    return True


def create_network(plan: SimHostPlan, netns: str) -> None:
    """The node's namespace with its bridge (STP on) and taps, replacing a leftover
    namespace of the same name (ours: the name is derived from our state folder)."""
    delete_netns(netns)
    _ip(["netns", "add", netns])
    # One batch: a node's links in one ip call. forward_delay 2 s is the kernel's
    # minimum with STP on (libvirt's delay='0' means the same).
    lines = [
        "link set lo up",
        f"link add {plan.bridge} type bridge stp_state 1 forward_delay 200",
    ]
    for tap in plan.taps:
        lines.append(f"tuntap add dev {tap.name} mode tap")
        if tap.attached:
            lines.append(f"link set {tap.name} master {plan.bridge}")
        lines.append(f"link set {tap.name} up")
    lines.append(f"link set {plan.bridge} up")
    try:
        _ip(["-n", netns, "-batch", "-"], stdin="\n".join(lines) + "\n")
    except DevClusterError:
        delete_netns(netns)
        raise
    log.info(
        "network namespace %s: %s with %d tap(s), %s off the bridge",
        netns,
        plan.bridge,
        len(plan.taps),
        plan.detached_tap.name,
    )


# -- processes ----------------------------------------------------------------------------


def _env(netns: str | None) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    if netns is not None:
        env[NETNS_ENV] = netns
    return env


def _wait_pid_file(rec: ProcessRecord, pid_file: Path, deadline: float) -> None:
    while True:
        try:
            if pid_file.read_text().strip() == str(rec.pid):
                return
        except OSError:
            pass
        if find_process(rec) is None:
            raise ProcessStartError(_failure(rec, "exited before writing its pid file"))
        if time.monotonic() >= deadline:
            raise ProcessStartError(_failure(rec, f"did not write {pid_file} in time"))
        time.sleep(_POLL)


def _failure(rec: ProcessRecord, what: str) -> str:
    tail = ""
    if rec.log is not None and rec.log.exists():
        lines = rec.log.read_text(errors="replace").splitlines()[-5:]
        tail = "; log: " + " | ".join(lines) if lines else ""
    return f"{rec.role.value} {rec.name} (pid {rec.pid}) {what}{tail}"


def monitor_socket(host_root: Path, guest: str) -> Path:
    """Where libvirt would put the guest's QEMU monitor socket (never created here)."""
    return host_root.resolve() / "var/lib/libvirt/qemu" / f"domain-{guest}" / "monitor.sock"


def start_standin(
    standin: StandIn,
    *,
    paths: SimNodePaths,
    sim_dir: Path,
    log_dir: Path,
    netns: str | None,
    python: str,
    deadline: float,
) -> ProcessRecord:
    """Start one stand-in QEMU; with a pid file, return once it wrote it (taps open)."""
    monitor = monitor_socket(paths.host_root, standin.guest)
    argv = [python, "-I", "-S", str(sim_dir / STANDIN_SCRIPT), *standin.args]
    argv += ["-chardev", f"socket,id=charmonitor,path={monitor},server=on,wait=off"]
    pid_file = None if standin.pid_file is None else host_path(paths.host_root, standin.pid_file)
    if pid_file is not None:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        argv += ["-pidfile", str(pid_file)]
    rec = spawn(
        ProcessRole.STANDIN,
        standin.guest,
        argv,
        address="",
        log_path=log_dir / f"{standin.guest}.log",
        cwd=sim_dir,
        env=_env(netns if standin.taps else None),
    )
    if pid_file is not None:
        _wait_pid_file(rec, pid_file, deadline)
    return rec


def _listening(pid: int, port: int) -> bool:
    """Whether 127.0.0.1:port listens in pid's network namespace (/proc/<pid>/net/tcp
    shows the namespace of that process)."""
    try:
        text = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return False
    wanted = f"0100007F:{port:04X}"
    return any(
        fields[1] == wanted and fields[3] == "0A"  # 0A: TCP_LISTEN
        for fields in (line.split() for line in text.splitlines()[1:])
        if len(fields) > 3
    )


def _container_init(rec: ProcessRecord, ports: Sequence[int], deadline: float) -> int:
    """The pid of the container's process (unshare's child) once it listens."""
    while True:
        leader = find_process(rec)
        if leader is None:
            raise ProcessStartError(_failure(rec, "exited while starting"))
        try:
            children = leader.children()
        except psutil.Error:
            children = []
        for child in children:
            if all(_listening(child.pid, port) for port in ports):
                return child.pid
        if time.monotonic() >= deadline:
            raise ProcessStartError(_failure(rec, f"did not listen on {list(ports)} in time"))
        time.sleep(_POLL)


def _runc_state(container_id: str, init_pid: int, node: str, ports: Sequence[int]) -> str:
    """A state.json the way runc keeps it (plus the OCI ``status`` and ``annotations``)."""
    ticks = start_ticks(init_pid)
    created = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    bundle = f"/run/containers/{container_id}/userdata"
    doc = {
        "ociVersion": "1.0.2",
        "id": container_id,
        "init_process_pid": init_pid,
        "init_process_start": ticks,
        "created": created,
        "status": "running",
        "bundle": bundle,
        "rootfs": "/",
        "annotations": {"novaops.ports": ",".join(map(str, ports)), "novaops.node": node},
        "config": {"rootfs": "/", "labels": [f"bundle={bundle}"]},
    }
    return json.dumps(doc, indent=2) + "\n"


def start_container(
    plan: SimHostPlan,
    *,
    paths: SimNodePaths,
    sim_dir: Path,
    log_dir: Path,
    python: str,
    deadline: float,
) -> ProcessRecord:
    """Start the node's container and write its runc state once it listens."""
    container = plan.container
    unshare = shutil.which("unshare") or "unshare"
    argv = [
        unshare,
        "--net",
        "--pid",
        "--mount",
        "--fork",
        "--kill-child",  # the service dies with unshare, even on SIGKILL
        python,
        "-I",
        "-S",
        str(sim_dir / APP_SCRIPT),
        *map(str, container.listening),
    ]
    rec = spawn(
        ProcessRole.CONTAINER,
        container.id,
        argv,
        address="",
        log_path=log_dir / f"{container.id}.log",
        cwd=sim_dir,
        env=_env(None),
    )
    init_pid = _container_init(rec, container.listening, deadline)
    state = _runc_state(container.id, init_pid, plan.node, container.ports)
    write_atomic(host_path(paths.host_root, container.state_dir / "state.json"), state.encode())
    return rec


# -- a whole node ---------------------------------------------------------------------------


def write_stale_lock(plan: SimHostPlan, paths: SimNodePaths) -> Path:
    path = host_path(paths.host_root, plan.stale_lock)
    write_atomic(path, f"{plan.stale_lock_pid}\n".encode())
    return path


def start_sim_host(
    plan: SimHostPlan,
    paths: SimNodePaths,
    *,
    log_dir: Path,
    started: list[ProcessRecord],
    netns: str | None = None,
    container: bool = True,
    python: str = sys.executable,
    timeout: float = 20.0,
) -> None:
    """Make plan real on paths' host root. Each process is appended to ``started`` as
    soon as it runs, so a caller can stop what was started when this raises
    (ProcessStartError, DevClusterError). ``netns``: an existing namespace made by
    :func:`create_network` (None: no taps). ``container``: start the container."""
    deadline = time.monotonic() + timeout
    sim_dir = paths.node_dir / "sim"
    write_atomic(sim_dir / STANDIN_SCRIPT, STANDIN_SOURCE.encode())
    write_atomic(sim_dir / APP_SCRIPT, APP_SOURCE.encode())
    write_stale_lock(plan, paths)
    for standin in (*plan.standins, plan.orphan):
        started.append(
            start_standin(
                standin,
                paths=paths,
                sim_dir=sim_dir,
                log_dir=log_dir,
                netns=netns,
                python=python,
                deadline=deadline,
            )
        )
    if container:
        started.append(
            start_container(
                plan,
                paths=paths,
                sim_dir=sim_dir,
                log_dir=log_dir,
                python=python,
                deadline=deadline,
            )
        )


def stop_sim_host(
    records: Sequence[ProcessRecord], netns: Sequence[str] = (), timeout: float = 5.0
) -> dict[str, StopOutcome]:
    """Stop the processes of start_sim_host and delete the namespaces (idempotent)."""
    outcomes = stop_group(records, timeout) if records else {}
    for name in netns:
        delete_netns(name)
    return outcomes
