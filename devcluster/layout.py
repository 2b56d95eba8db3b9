"""Where everything of a dev cluster lives under its state folder, and its configs.

::

    <state_dir>/cluster.json            process record (state.py)
    <state_dir>/client.toml             for ``novaops --config``
    <state_dir>/certs/                  dev CA, controller, executor and admin certificates
    <state_dir>/controller/controller.toml, novaops.db (embedded store)
    <state_dir>/etcd/                   etcd data (store = "etcd")
    <state_dir>/nodes/<node>/executor.toml, libvirt.xml, root/, state/,
                                        sim/ (stand-in QEMU and container scripts)
    <state_dir>/logs/<process>.log      log_file and stdout/stderr of each process

Config files use absolute paths (docs/configuration.md allows both).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CONTROLLER_NAME = "ctl-0"
ADMIN_USER = "admin"

TomlValue = str | int | float | bool | Sequence[str] | Mapping[str, "TomlValue"]


@dataclass(frozen=True)
class Layout:
    state_dir: Path

    @property
    def certs(self) -> Path:
        return self.state_dir / "certs"

    @property
    def ca(self) -> Path:
        return self.certs / "ca.pem"

    @property
    def client_config(self) -> Path:
        return self.state_dir / "client.toml"

    @property
    def controller_dir(self) -> Path:
        return self.state_dir / "controller"

    @property
    def controller_config(self) -> Path:
        return self.controller_dir / "controller.toml"

    @property
    def embedded_db(self) -> Path:
        return self.controller_dir / "novaops.db"

    @property
    def etcd_dir(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def log(self, process_name: str) -> Path:
        return self.logs / f"{process_name}.log"

    def node_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node

    def executor_config(self, node: str) -> Path:
        return self.node_dir(node) / "executor.toml"


def node_names(count: int) -> list[str]:
    return [f"node-{i}" for i in range(1, count + 1)]


# -- TOML ----------------------------------------------------------------------------------


def _toml_scalar(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes).
        return json.dumps(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    raise TypeError(f"not a TOML scalar: {value!r}")


def to_toml(doc: Mapping[str, TomlValue], _table: str = "") -> str:
    """TOML text for a document of strings, numbers, booleans, string lists and
    nested tables (enough for novaops configs; keys must be bare keys)."""
    lines = [f"{key} = {_toml_scalar(v)}" for key, v in doc.items() if not isinstance(v, Mapping)]
    out = ""
    if _table:
        out += f"[{_table}]\n"
    out += "".join(line + "\n" for line in lines)
    for key, value in doc.items():
        if isinstance(value, Mapping):
            name = f"{_table}.{key}" if _table else key
            out += ("\n" if out else "") + to_toml(value, name)
    return out


# -- the three config files ---------------------------------------------------------------


def tls_table(ca: Path, cert: Path, key: Path) -> dict[str, TomlValue]:
    return {"ca": str(ca), "cert": str(cert), "key": str(key)}


def controller_config(
    layout: Layout,
    *,
    listen: str,
    metrics_listen: str,
    tls: Mapping[str, TomlValue],
    etcd_endpoints: Sequence[str] | None,
    heartbeat_interval_ms: int,
    missed_heartbeats_limit: int,
    automation: bool | Mapping[str, TomlValue] = True,
) -> str:
    """``automation=False`` writes ``[automation] enabled = false``: the simulated
    faults then stay until fixed by hand (the leader would repair some on its own).
    A mapping is written as the ``[automation]`` table (docs/configuration.md)."""
    store: dict[str, TomlValue]
    if etcd_endpoints is None:
        store = {"kind": "embedded", "path": str(layout.embedded_db)}
    else:
        store = {"kind": "etcd", "endpoints": list(etcd_endpoints), "prefix": "/novaops"}
    doc: dict[str, TomlValue] = {
        "controller": {
            "name": CONTROLLER_NAME,
            "listen": listen,
            "advertise": listen,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "missed_heartbeats_limit": missed_heartbeats_limit,
            "metrics_listen": metrics_listen,
            "log_file": str(layout.log(CONTROLLER_NAME)),
        },
        "tls": tls,
        "store": store,
    }
    if isinstance(automation, Mapping):
        doc["automation"] = dict(automation)
    elif not automation:
        doc["automation"] = {"enabled": False}
    return "# Written by novaops dev up.\n" + to_toml(doc)


def executor_config(
    layout: Layout,
    node: str,
    *,
    listen: str,
    controllers: Sequence[str],
    libvirt_uri: str,
    host_root: Path,
    tls: Mapping[str, TomlValue],
    netns: str | None = None,
    tap_prefixes: Sequence[str] = (),
) -> str:
    """``netns``: the node's own network namespace (None: the executor's, and no
    taps to look at); ``tap_prefixes``: the node's tap names (default: the
    executor's production default)."""
    executor: dict[str, TomlValue] = {
        "node": node,
        "listen": listen,
        "advertise": listen,
        "controllers": list(controllers),
        "host_root": str(host_root),
        "libvirt_uri": libvirt_uri,
        "state_dir": str(layout.node_dir(node) / "state"),
        "log_file": str(layout.log(node)),
    }
    if netns is not None:
        executor["netns"] = netns
    if tap_prefixes:
        executor["tap_prefixes"] = list(tap_prefixes)
    executor["labels"] = {"simulated": "true"}
    doc: dict[str, TomlValue] = {"executor": executor, "tls": tls}
    return "# Written by novaops dev up.\n" + to_toml(doc)


def client_config(
    controllers: Sequence[str], tls: Mapping[str, TomlValue], timeout_seconds: float = 10.0
) -> str:
    doc: dict[str, TomlValue] = {
        "controllers": list(controllers),
        "timeout_seconds": timeout_seconds,
        "tls": tls,
    }
    return "# Written by novaops dev up; use with: novaops --config <this file>\n" + to_toml(doc)
