"""The dev cluster's record of itself: ``<state_dir>/cluster.json``.

The record is written atomically (temp file, fsync, rename) after every change,
so an interrupted ``up`` or ``down`` never leaves a half-written file. Each
process is recorded with its start time as psutil reports it, so a pid the
kernel has since given to another process is never taken for ours.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from novaops.devcluster.errors import StateFileError
from novaops.pki.issue import write_atomic

STATE_FILE = "cluster.json"
FORMAT_VERSION = 1


class ProcessRole(enum.StrEnum):
    ETCD = "etcd"
    CONTROLLER = "controller"
    EXECUTOR = "executor"
    # Parts of the simulated hosts (simhost.py): stand-in QEMU processes, containers.
    STANDIN = "standin"
    CONTAINER = "container"


# The novaops daemons and their store: what ``dev status`` lists. Stand-ins and
# containers are recorded and stopped too, but they simulate the hosts' workload.
CLUSTER_ROLES = frozenset({ProcessRole.ETCD, ProcessRole.CONTROLLER, ProcessRole.EXECUTOR})
SIM_ROLES = frozenset({ProcessRole.STANDIN, ProcessRole.CONTAINER})

# Shutdown order: executors first (they still reach a controller to say goodbye),
# then the simulated workload (no executor watches it any more), then controllers
# (they can still reach the store to resign), then etcd.
STOP_ORDER = (
    ProcessRole.EXECUTOR,
    ProcessRole.STANDIN,
    ProcessRole.CONTAINER,
    ProcessRole.CONTROLLER,
    ProcessRole.ETCD,
)


class ClusterStatus(enum.StrEnum):
    STARTING = "starting"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class ProcessRecord:
    """One process the dev cluster started.

    ``create_time`` is psutil's start time (epoch seconds, for people and as a
    fallback); ``start_ticks`` is the exact start time in clock ticks since boot
    that identity checks use. ``own_group`` is true when the process leads its
    own session and process group (``start_new_session=True``): then stopping it
    signals the whole group, so children it started go too.
    """

    role: ProcessRole
    name: str
    pid: int
    create_time: float
    address: str
    own_group: bool = True
    start_ticks: int | None = None
    config: Path | None = None
    log: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "name": self.name,
            "pid": self.pid,
            "create_time": self.create_time,
            "address": self.address,
            "own_group": self.own_group,
            "start_ticks": self.start_ticks,
            "config": None if self.config is None else str(self.config),
            "log": None if self.log is None else str(self.log),
        }

    @staticmethod
    def from_json(data: Any) -> ProcessRecord:
        if not isinstance(data, dict):
            raise ValueError("a process entry is not an object")
        config, log = data.get("config"), data.get("log")
        pid, create_time = data["pid"], data["create_time"]
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ValueError(f"bad pid {pid!r}")
        if not isinstance(create_time, int | float):
            raise ValueError(f"bad create_time {create_time!r}")
        ticks = data.get("start_ticks")
        if ticks is not None and (not isinstance(ticks, int) or isinstance(ticks, bool)):
            raise ValueError(f"bad start_ticks {ticks!r}")
        return ProcessRecord(
            role=ProcessRole(data["role"]),
            name=str(data["name"]),
            pid=pid,
            create_time=float(create_time),
            address=str(data["address"]),
            own_group=bool(data.get("own_group", True)),
            start_ticks=ticks,
            config=None if config is None else Path(config),
            log=None if log is None else Path(log),
        )


@dataclass(frozen=True)
class ClusterRecord:
    """What ``up`` started and where its files are. ``netns``: network namespaces
    made for the simulated nodes, deleted by ``down``."""

    status: ClusterStatus
    store: str
    client_config: Path
    processes: tuple[ProcessRecord, ...] = ()
    created_at: float = field(default_factory=time.time)
    stopped_at: float | None = None
    netns: tuple[str, ...] = ()

    def process(self, name: str) -> ProcessRecord | None:
        for rec in self.processes:
            if rec.name == name:
                return rec
        return None

    def with_process(self, rec: ProcessRecord) -> ClusterRecord:
        others = tuple(p for p in self.processes if p.name != rec.name)
        return replace(self, processes=(*others, rec))

    def with_netns(self, name: str) -> ClusterRecord:
        if name in self.netns:
            return self
        return replace(self, netns=(*self.netns, name))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "status": self.status.value,
            "store": self.store,
            "client_config": str(self.client_config),
            "created_at": self.created_at,
            "stopped_at": self.stopped_at,
            "processes": [p.to_json() for p in self.processes],
            "netns": list(self.netns),
        }

    @staticmethod
    def from_json(data: Any) -> ClusterRecord:
        if not isinstance(data, dict):
            raise ValueError("top level is not an object")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('version')!r}, expected {FORMAT_VERSION}")
        stopped_at = data.get("stopped_at")
        return ClusterRecord(
            status=ClusterStatus(data["status"]),
            store=str(data["store"]),
            client_config=Path(data["client_config"]),
            processes=tuple(ProcessRecord.from_json(p) for p in data["processes"]),
            created_at=float(data["created_at"]),
            stopped_at=None if stopped_at is None else float(stopped_at),
            # Absent in records written before simulated networking existed.
            netns=tuple(str(name) for name in data.get("netns") or ()),
        )


def state_file(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def load_cluster(state_dir: Path) -> ClusterRecord | None:
    """The recorded cluster, or None when the folder holds no record."""
    path = state_file(state_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return ClusterRecord.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        # JSONDecodeError is a ValueError.
        raise StateFileError(f"{path}: not a dev cluster record: {exc}") from None


def save_cluster(state_dir: Path, record: ClusterRecord) -> None:
    data = json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n"
    write_atomic(state_file(state_dir), data.encode())
