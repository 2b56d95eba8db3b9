"""``novaops dev``: a local simulated cluster on loopback, with mTLS.

The work is done by ``novaops.devcluster`` (imported inside the commands so
``novaops --help`` stays light); this module parses flags and renders.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Any

import click

STATE_DIR = click.option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding the cluster's certificates, configs, nodes and logs.",
)
OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Render as a table or one JSON document.",
)
# Mirrors novaops.devcluster.cluster.MAX_NODES (checked by a test), which this
# module does not import at start-up.
MAX_NODES = 64


def _fail(message: str, code: int = 2) -> None:
    from novaops.cli import render

    render.error(message)
    sys.exit(code)


def _require_devcluster() -> None:
    """Exit with a one-line error when this install cannot import the dev-cluster package.

    It runs executors and a controller, so it needs their extras (psutil,
    libvirt-python, pyroute2, ...); a base install (client and CLI) has none.
    """
    try:
        importlib.import_module("novaops.devcluster")
    except ImportError as exc:
        _fail(
            f"novaops dev needs the executor and controller extras (missing: {exc.name}); "
            "install them with: pip install 'novaops[all]'"
        )


def _setting(item: str) -> tuple[str, str | int | float | bool]:
    """KEY=VALUE with VALUE as a TOML-ish scalar (int, float, true/false, else text)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        _fail(f"--automation {item!r}: expected KEY=VALUE, like poll_interval_ms=1000")
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return key.strip(), lowered == "true"
    for kind in (int, float):
        try:
            return key.strip(), kind(raw)
        except ValueError:
            continue
    return key.strip(), raw


def _process_json(proc: Any) -> dict[str, Any]:
    return {
        "role": str(proc.role.value),
        "name": proc.name,
        "pid": proc.pid,
        "address": proc.address,
        "running": proc.running,
        "log": str(proc.log) if proc.log else None,
    }


def registration_timeout(nodes: int) -> float:
    """How long ``dev up`` waits for every node to register once all listen:
    30 s plus 0.5 s per node (first registrations queue at one controller)."""
    return 30.0 + nodes / 2


def _wait_registered(client_config: Path, nodes: int) -> list[str]:
    """Wait until every node is up in the registry; return the names still missing."""
    from novaops.client.api import NovaopsClient
    from novaops.client.errors import NovaopsError

    deadline = time.monotonic() + registration_timeout(nodes)
    missing: list[str] = [f"node-{i}" for i in range(1, nodes + 1)]
    with NovaopsClient.from_config_file(client_config) as client:
        while time.monotonic() < deadline:
            try:
                up = {n.name for n in client.list_nodes() if n.state == "up"}
            except NovaopsError:
                up = set()
            missing = [name for name in missing if name not in up]
            if not missing:
                return []
            time.sleep(0.2)
    return missing


@click.group()
def dev() -> None:
    """A local simulated cluster on loopback, with mTLS."""


@dev.command("up")
@click.option("--nodes", type=click.IntRange(1, MAX_NODES), default=3, show_default=True)
@STATE_DIR
@click.option(
    "--store",
    type=click.Choice(["embedded", "etcd"]),
    default="embedded",
    show_default=True,
    help="embedded: one sqlite file; etcd: a local etcd member.",
)
@click.option(
    "--detach", is_flag=True, help="Return once the cluster runs (stop it with dev down)."
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=None,
    help="Controller port; node-i gets base+1+i (default: free ports).",
)
@click.option("--no-faults", is_flag=True, help="Simulated nodes without injected host faults.")
@click.option(
    "--no-automation",
    is_flag=True,
    help="Controller automation off (injected faults stay until fixed by hand).",
)
@click.option(
    "--automation",
    "automation_settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="An [automation] setting of the controller, e.g. poll_interval_ms=1000.",
)
def dev_up(
    nodes: int,
    state_dir: Path,
    store: str,
    detach: bool,
    base_port: int | None,
    no_faults: bool,
    no_automation: bool,
    automation_settings: tuple[str, ...],
) -> None:
    """Start a controller and N simulated hypervisor nodes (their faults included)."""
    _require_devcluster()
    from novaops import devcluster
    from novaops.cli import render

    automation: bool | dict[str, str | int | float | bool] = not no_automation
    if automation_settings:
        if no_automation:
            _fail("--automation and --no-automation exclude each other")
        automation = dict(_setting(item) for item in automation_settings)
    try:
        state = devcluster.up(
            state_dir,
            nodes,
            store,  # type: ignore[arg-type]
            base_port=base_port,
            faults=not no_faults,
            automation=automation,
        )
    except devcluster.DevClusterError as exc:
        _fail(str(exc))
        return
    missing = _wait_registered(state.client_config, nodes)
    if missing:
        render.error(
            f"nodes not registered within {registration_timeout(nodes):.0f}s: "
            f"{', '.join(missing)}; "
            f"see the logs in {state.state_dir / 'logs'}"
        )
    config = state.client_config
    render.message(
        f"dev cluster up: controller {state.controller_address}, {nodes} node(s), "
        f"store {store}, mTLS\n"
        f"  point the CLI at it:  export NOVAOPS_CONFIG={config}\n"
        f"  or per command:       novaops --config {config} node list\n"
        f"  stop it:              novaops dev down --state-dir {state.state_dir}"
    )
    if missing:
        sys.exit(1)
    if detach:
        return
    render.message("running in the foreground; Ctrl-C stops the cluster")
    devcluster.wait_foreground(state_dir)


@dev.command("status")
@STATE_DIR
@OUTPUT
def dev_status(state_dir: Path, output: str) -> None:
    """Each process of the dev cluster: role, name, pid, address, running."""
    _require_devcluster()
    from novaops import devcluster
    from novaops.cli import render

    try:
        processes = devcluster.status(state_dir)
    except devcluster.DevClusterError as exc:
        _fail(str(exc))
        return
    if output == "json":
        render.emit_json([_process_json(p) for p in processes])
    else:
        render.processes_table(processes)


@dev.command("down")
@STATE_DIR
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 120),
    default=10.0,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
@OUTPUT
def dev_down(state_dir: Path, timeout: float, output: str) -> None:
    """Stop every process of the dev cluster (executors, controller, etcd)."""
    _require_devcluster()
    from novaops import devcluster
    from novaops.cli import render

    try:
        stopped = devcluster.down(state_dir, timeout=timeout)
    except devcluster.NoClusterError as exc:
        _fail(str(exc))
        return
    except devcluster.DevClusterError as exc:
        _fail(str(exc))
        return
    if output == "json":
        render.emit_json(
            [_process_json(p) | {"stop": p.stop.value if p.stop else None} for p in stopped]
        )
    else:
        outcomes = ", ".join(f"{p.name}: {p.stop.value if p.stop else '-'}" for p in stopped)
        render.message(f"dev cluster down ({outcomes or 'nothing was running'})")
