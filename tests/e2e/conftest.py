"""Helpers for end-to-end tests: dev clusters of real processes, driven through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

NOVAOPS = [sys.executable, "-m", "novaops.cli"]


def novaops(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the real CLI; never raises on a non-zero exit."""
    return subprocess.run(
        [*NOVAOPS, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def recorded_pids(state_dir: Path) -> list[int]:
    path = state_dir / "cluster.json"
    if not path.exists():
        return []
    return [p["pid"] for p in json.loads(path.read_text()).get("processes", [])]


def process_of(state_dir: Path, name: str) -> int:
    result = novaops("dev", "status", "--state-dir", str(state_dir), "-o", "json")
    assert result.returncode == 0, result.stderr
    return int(next(p["pid"] for p in json.loads(result.stdout) if p["name"] == name))


class DevCluster:
    """A running dev cluster and the CLI pointed at it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.config = state_dir / "client.toml"

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return novaops("--config", str(self.config), *args, timeout=timeout)

    def json(self, *args: str, ok: tuple[int, ...] = (0,)) -> Any:
        result = self.cli(*args, "-o", "json")
        assert result.returncode in ok, result.stdout + result.stderr
        return json.loads(result.stdout)

    def pid(self, name: str) -> int:
        return process_of(self.state_dir, name)

    def node_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node


def start_cluster(state_dir: Path, nodes: int, *extra: str) -> DevCluster:
    up = novaops(
        "dev",
        "up",
        "--nodes",
        str(nodes),
        "--state-dir",
        str(state_dir),
        "--detach",
        *extra,
        timeout=180,
    )
    if up.returncode != 0:
        stop_cluster(state_dir)
        raise AssertionError(f"dev up failed: {up.stdout}{up.stderr}")
    return DevCluster(state_dir)


def stop_cluster(state_dir: Path) -> None:
    pids = recorded_pids(state_dir)
    for pid in pids:  # a SIGSTOPped process must be able to take SIGTERM
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGCONT)
    down = novaops("dev", "down", "--state-dir", str(state_dir), timeout=60)
    for pid in pids:
        if psutil.pid_exists(pid):
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    os.kill(pid, signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
    assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def cluster_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., DevCluster]]:
    started: list[Path] = []

    def make(nodes: int, *extra: str) -> DevCluster:
        state_dir = tmp_path_factory.mktemp("dev") / "cluster"
        started.append(state_dir)
        return start_cluster(state_dir, nodes, *extra)

    yield make
    for state_dir in started:
        stop_cluster(state_dir)
