"""``diag container NAME``: locate it, compare namespaces, walk its processes, probe ports.

Locating: runc and crun keep ``/run/runc/<id>/state.json`` and
``/run/crun/<id>/state.json`` on the host (read through the host root); a
container matches by id or by the annotation ``novaops.name``. libvirt-lxc
domains come from the injected ``CheckSources.lxc_containers``.

Declared ports (convention): the annotation ``novaops.ports`` — e.g.
``"8080,9090"`` or ``"8080/tcp"`` — in the state's annotations (OCI state
``annotations``, or runc's ``config.labels`` as ``key=value``), or in the
bundle's ``config.json`` annotations. Ports are probed on 127.0.0.1 inside the
container's network namespace.

Probing: a short-lived ``nsenter --net=/proc/<pid>/ns/net python -I -S -c ...``
child connects to every port and prints one JSON line. A subprocess rather than
``setns`` in this process: setns applies to the calling thread only, a thread of
the executor's pool would stay in the container's namespace if anything failed
before switching back, and ``fork`` from the multi-threaded gRPC server is
unsafe. The child is bounded by a timeout and killed when it overruns.

Processes and namespaces come from the real ``/proc`` (the process table is
global, not part of a simulated host root). Check ids: ``container.locate``,
``container.process``, ``container.namespaces``, ``container.port``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from novaops.executor.checks.model import CheckResult, RemediationStep, Status, result
from novaops.executor.checks.sources import CheckSources, ContainerLocation
from novaops.executor.hostroot import HostRoot

RUNTIME_STATE_DIRS = {"runc": "/run/runc", "crun": "/run/crun"}
PORTS_ANNOTATION = "novaops.ports"
NAME_ANNOTATION = "novaops.name"
NAMESPACES = ("mnt", "pid", "net", "uts", "ipc", "cgroup", "user")
# A container must isolate at least one of these; sharing some of them warns.
_ISOLATING = ("mnt", "pid", "net")

_PROBE_SCRIPT = """
import json, socket, sys
timeout = float(sys.argv[1])
answers = {}
for port in sys.argv[2:]:
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=timeout):
            answers[port] = "open"
    except OSError as exc:
        answers[port] = exc.strerror or type(exc).__name__
print(json.dumps(answers))
"""


@dataclass(frozen=True)
class RuntimeState:
    """What a runtime's state.json says about a container."""

    id: str
    pid: int | None
    bundle: str = ""
    status: str = ""
    start_ticks: int | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PortProbe:
    port: int
    open: bool
    detail: str = ""


@dataclass(frozen=True)
class ContainerEvidence:
    """Everything ``diag container`` looked at."""

    node: str
    name: str
    found: bool = True
    runtime: str = ""
    location: str = ""
    state_error: str = ""
    status: str = ""
    init_pid: int | None = None
    init_alive: bool = True
    init_status: str = ""
    pid_reused: bool = False
    # namespace -> True when it differs from the host's; absent: unreadable. The
    # host's are pid 1's, or the executor's own where pid 1's are hidden.
    namespaces_differ: dict[str, bool] = field(default_factory=dict)
    namespace_reference: str = "pid 1"
    process_count: int = 0
    zombies: tuple[int, ...] = ()
    declared_ports: tuple[int, ...] = ()
    probes: tuple[PortProbe, ...] = ()
    probe_error: str = ""


# -- pure parsers ----------------------------------------------------------------------------


def parse_runtime_state(text: str) -> RuntimeState:
    """A runc (``init_process_pid``, ``config.labels``) or OCI (``pid``, ``bundle``,
    ``annotations``) state document. ValueError when it is not one."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or "id" not in doc:
        raise ValueError("not a container state document (no id)")
    pid = doc.get("init_process_pid", doc.get("pid"))
    annotations: dict[str, str] = {}
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    for label in (config or {}).get("labels") or []:
        key, sep, value = str(label).partition("=")
        if sep:
            annotations[key] = value
    for key, value in (doc.get("annotations") or {}).items():
        annotations[str(key)] = str(value)
    start = doc.get("init_process_start")
    return RuntimeState(
        id=str(doc["id"]),
        pid=int(pid) if isinstance(pid, int) and pid > 0 else None,
        bundle=str(doc.get("bundle") or annotations.get("bundle", "")),
        status=str(doc.get("status", "")),
        start_ticks=int(start) if isinstance(start, int) else None,
        annotations=annotations,
    )


def parse_ports(text: str) -> tuple[int, ...]:
    """``"8080,9090/tcp"`` -> (8080, 9090); tokens that are not TCP ports are ignored."""
    ports = []
    for token in text.replace(" ", ",").split(","):
        number, _, proto = token.strip().partition("/")
        if number.isdigit() and 0 < int(number) < 65536 and proto in ("", "tcp"):
            ports.append(int(number))
    return tuple(dict.fromkeys(ports))


def parse_stat_start_ticks(stat: str) -> int | None:
    """Field 22 (starttime) of /proc/<pid>/stat; the command name may hold spaces."""
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


# -- evaluation (pure) ----------------------------------------------------------------------


def evaluate_container(ev: ContainerEvidence) -> list[CheckResult]:
    """Every container check; not found or an unreadable state stops after locate."""
    name = ev.name
    if not ev.found:
        return [
            result(
                "container.locate",
                name,
                Status.FAIL,
                f"no container {name} (runc/crun state or libvirt-lxc domain)",
                {"found": False},
                [
                    RemediationStep("List runc containers", "runc list"),
                    RemediationStep("List libvirt-lxc domains", "virsh -c lxc:/// list --all"),
                ],
            )
        ]
    located = {"runtime": ev.runtime, "location": ev.location, "init_pid": ev.init_pid}
    if ev.state_error:
        return [
            result(
                "container.locate",
                name,
                Status.ERROR,
                f"{ev.runtime} state unreadable: {ev.state_error}",
                located,
                [RemediationStep("Ask the runtime", f"{ev.runtime} state {name}")],
            )
        ]
    results = [
        result("container.locate", name, Status.OK, f"{ev.runtime} container {name}", located)
    ]
    process = _evaluate_process(ev)
    results.append(process)
    if process.status is not Status.OK and (not ev.init_alive or ev.pid_reused):
        return results
    results.append(_evaluate_namespaces(ev))
    results += _evaluate_ports(ev)
    return results


def _runtime_steps(ev: ContainerEvidence) -> list[RemediationStep]:
    if ev.runtime == "libvirt-lxc":
        return [
            RemediationStep("Restart the container", f"virsh -c lxc:/// start {ev.name}"),
        ]
    return [
        RemediationStep("See the runtime's view", f"{ev.runtime} state {ev.name}"),
        RemediationStep("Remove the dead container's state", f"{ev.runtime} delete {ev.name}"),
        RemediationStep("Start it again through its manager", f"systemctl status {ev.name}"),
    ]


def _evaluate_process(ev: ContainerEvidence) -> CheckResult:
    name = ev.name
    evidence: dict[str, object] = {
        "init_pid": ev.init_pid,
        "init_status": ev.init_status,
        "status": ev.status,
        "processes": ev.process_count,
        "zombies": list(ev.zombies),
    }
    if ev.init_pid is None or not ev.init_alive:
        what = f"init process {ev.init_pid} exited" if ev.init_pid else "no init process"
        if ev.status in ("stopped", "created"):
            return result(
                "container.process",
                name,
                Status.WARN,
                f"container is {ev.status}",
                evidence,
                _runtime_steps(ev),
            )
        return result(
            "container.process",
            name,
            Status.FAIL,
            f"{what} (unexpected exit)",
            evidence,
            _runtime_steps(ev),
        )
    if ev.pid_reused:
        return result(
            "container.process",
            name,
            Status.FAIL,
            f"init process exited; pid {ev.init_pid} now belongs to another process",
            evidence,
            _runtime_steps(ev),
        )
    if ev.init_status == psutil.STATUS_ZOMBIE:
        return result(
            "container.process",
            name,
            Status.FAIL,
            f"init process {ev.init_pid} is a zombie",
            evidence,
            _runtime_steps(ev),
        )
    if ev.zombies:
        return result(
            "container.process",
            name,
            Status.WARN,
            f"{len(ev.zombies)} zombie process(es): {', '.join(map(str, ev.zombies))}",
            evidence,
            [
                RemediationStep(
                    "See who should reap them", f"ps -o pid,ppid,stat,cmd --ppid {ev.init_pid}"
                )
            ],
        )
    return result(
        "container.process",
        name,
        Status.OK,
        f"init {ev.init_pid} and {max(ev.process_count - 1, 0)} other process(es) alive",
        evidence,
    )


def _evaluate_namespaces(ev: ContainerEvidence) -> CheckResult:
    name = ev.name
    evidence: dict[str, object] = {
        f"{ns}_isolated": differs for ns, differs in sorted(ev.namespaces_differ.items())
    }
    evidence["compared_with"] = ev.namespace_reference
    if not ev.namespaces_differ:
        return result(
            "container.namespaces",
            name,
            Status.ERROR,
            f"namespaces of pid {ev.init_pid} unreadable",
            evidence,
            [RemediationStep("Read them by hand", f"ls -l /proc/{ev.init_pid}/ns")],
        )
    shared = [ns for ns in _ISOLATING if not ev.namespaces_differ.get(ns, True)]
    inspect = RemediationStep("Compare with the host's", f"lsns -p {ev.init_pid}")
    if len(shared) == len(_ISOLATING):
        return result(
            "container.namespaces",
            name,
            Status.FAIL,
            "shares the host's mount, pid and network namespaces: not isolated",
            evidence,
            [inspect],
        )
    if shared:
        return result(
            "container.namespaces",
            name,
            Status.WARN,
            f"shares the host's {', '.join(shared)} namespace(s)",
            evidence,
            [inspect],
        )
    own = [ns for ns, differs in sorted(ev.namespaces_differ.items()) if differs]
    return result(
        "container.namespaces", name, Status.OK, f"own namespaces: {', '.join(own)}", evidence
    )


def _evaluate_ports(ev: ContainerEvidence) -> list[CheckResult]:
    name = ev.name
    if not ev.declared_ports:
        return [
            result(
                "container.port",
                name,
                Status.OK,
                "no declared ports",
                {"hint": f"declare ports with the annotation {PORTS_ANNOTATION}"},
            )
        ]
    if ev.probe_error:
        return [
            result(
                "container.port",
                name,
                Status.ERROR,
                f"ports not probed: {ev.probe_error}",
                {"ports": list(ev.declared_ports), "error": ev.probe_error},
                [
                    RemediationStep(
                        "Probe by hand", f"nsenter --net=/proc/{ev.init_pid}/ns/net ss -ltn"
                    )
                ],
            )
        ]
    results = []
    for probe in ev.probes:
        evidence = {"port": probe.port, "open": probe.open, "detail": probe.detail}
        if probe.open:
            results.append(
                result("container.port", name, Status.OK, f"port {probe.port} accepts", evidence)
            )
            continue
        results.append(
            result(
                "container.port",
                name,
                Status.FAIL,
                f"port {probe.port} refuses inside the container ({probe.detail})",
                evidence,
                [
                    RemediationStep(
                        "See what listens inside",
                        f"nsenter --net=/proc/{ev.init_pid}/ns/net ss -ltnp",
                    ),
                    RemediationStep("Read the service's log", f"journalctl -u {name} --since -1h"),
                ],
            )
        )
    return results


# -- gathering (I/O) ------------------------------------------------------------------------


def _find_runtime_state(root: HostRoot, name: str) -> tuple[str, str, RuntimeState | str] | None:
    """(runtime, state host path, state or its parse error) of the container, if any."""
    for runtime, folder in RUNTIME_STATE_DIRS.items():
        try:
            ids = root.list_dir(folder)
        except OSError:
            continue
        for container_id in ids:
            path = f"{folder}/{container_id}/state.json"
            try:
                text = root.read_text(path)
            except OSError:
                continue
            try:
                state = parse_runtime_state(text)
            except ValueError as exc:
                if container_id == name:
                    return runtime, path, str(exc)
                continue
            if name in (container_id, state.id, state.annotations.get(NAME_ANNOTATION)):
                return runtime, path, state
    return None


def _declared_ports(root: HostRoot, state: RuntimeState) -> tuple[int, ...]:
    if PORTS_ANNOTATION in state.annotations:
        return parse_ports(state.annotations[PORTS_ANNOTATION])
    if not state.bundle:
        return ()
    try:
        config: Any = json.loads(root.read_text(f"{state.bundle}/config.json"))
    except (OSError, ValueError):
        return ()
    annotations = config.get("annotations") if isinstance(config, dict) else None
    if isinstance(annotations, Mapping) and PORTS_ANNOTATION in annotations:
        return parse_ports(str(annotations[PORTS_ANNOTATION]))
    return ()


def namespaces_differ(pid: int) -> tuple[dict[str, bool], str]:
    """(namespace -> differs from the host's, which process stood for the host).

    Compared by (device, inode) of /proc/<pid>/ns/<ns> in the real /proc. The
    host is pid 1; where pid 1's namespaces cannot be read (a sandbox hiding
    them), the executor's own — it runs in the host's namespaces.
    """
    differ = {}
    reference = "pid 1"
    for ns in NAMESPACES:
        try:
            mine = Path(f"/proc/{pid}/ns/{ns}").stat()
        except OSError:
            continue
        try:
            host = Path(f"/proc/1/ns/{ns}").stat()
        except OSError:
            try:
                host = Path(f"/proc/self/ns/{ns}").stat()
            except OSError:
                continue
            reference = "executor"
        differ[ns] = (mine.st_dev, mine.st_ino) != (host.st_dev, host.st_ino)
    return differ, reference


def probe_ports(pid: int, ports: tuple[int, ...], connect_timeout: float) -> tuple[PortProbe, ...]:
    """TCP connects to 127.0.0.1:<port> inside pid's network namespace (see module doc).

    Raises OSError (nsenter missing, child failed or overran) with a one-line message.
    """
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        raise OSError("nsenter (util-linux) is not installed")
    command = [
        nsenter,
        f"--net=/proc/{pid}/ns/net",
        "--",
        sys.executable,
        "-I",
        "-S",
        "-c",
        _PROBE_SCRIPT,
        str(connect_timeout),
        *map(str, ports),
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=connect_timeout * len(ports) + 5,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OSError("the probe in the container's namespace overran its timeout") from None
    if done.returncode != 0:
        raise OSError(" ".join(done.stderr.split())[:200] or f"probe exited {done.returncode}")
    answers: dict[str, str] = json.loads(done.stdout)
    return tuple(
        PortProbe(port, answers.get(str(port)) == "open", answers.get(str(port), ""))
        for port in ports
    )


def _start_ticks(pid: int) -> int | None:
    try:
        # The global process table, not a host file: no HostRoot.
        return parse_stat_start_ticks(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return None


def _inspect_processes(
    ev: ContainerEvidence, start_ticks: int | None, timings_connect: float
) -> ContainerEvidence:
    pid = ev.init_pid
    if pid is None:
        return replace(ev, init_alive=False)
    try:
        init = psutil.Process(pid)
        init_status = init.status()
        children = init.children(recursive=True)
    except psutil.Error:
        return replace(ev, init_alive=False)
    if start_ticks is not None and _start_ticks(pid) not in (None, start_ticks):
        return replace(ev, pid_reused=True, init_status=init_status)
    differ, reference = namespaces_differ(pid)
    zombies = []
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                zombies.append(child.pid)
        except psutil.Error:
            continue
    ev = replace(
        ev,
        init_status=init_status,
        process_count=len(children) + 1,
        zombies=tuple(sorted(zombies)),
        namespaces_differ=differ,
        namespace_reference=reference,
    )
    if ev.declared_ports and init_status != psutil.STATUS_ZOMBIE:
        try:
            ev = replace(ev, probes=probe_ports(pid, ev.declared_ports, timings_connect))
        except (OSError, ValueError) as exc:
            ev = replace(ev, probe_error=str(exc))
    return ev


def _locate(
    root: HostRoot, name: str, node: str, lxc: list[ContainerLocation]
) -> tuple[ContainerEvidence, int | None]:
    found = _find_runtime_state(root, name)
    if found is not None:
        runtime, path, state = found
        if isinstance(state, str):
            return ContainerEvidence(
                node, name, runtime=runtime, location=path, state_error=state
            ), None
        evidence = ContainerEvidence(
            node,
            name,
            runtime=runtime,
            location=path,
            status=state.status,
            init_pid=state.pid,
            declared_ports=_declared_ports(root, state),
        )
        return evidence, state.start_ticks
    for location in lxc:
        if location.name == name:
            evidence = ContainerEvidence(
                node,
                name,
                runtime=location.runtime,
                location=f"{location.runtime}:{name}",
                status="running" if location.running else "stopped",
                init_pid=location.init_pid,
                declared_ports=location.ports,
            )
            return evidence, None
    return ContainerEvidence(node, name, found=False), None


def _gather_blocking(sources: CheckSources, name: str) -> ContainerEvidence:
    lxc = list(sources.lxc_containers())
    evidence, start_ticks = _locate(sources.root, name, sources.node, lxc)
    if not evidence.found or evidence.state_error:
        return evidence
    return _inspect_processes(evidence, start_ticks, sources.timings.connect)


async def gather_container(sources: CheckSources, name: str) -> ContainerEvidence:
    """Evidence for ``diag container`` (blocking work runs in a thread)."""
    return await asyncio.to_thread(_gather_blocking, sources, name)
