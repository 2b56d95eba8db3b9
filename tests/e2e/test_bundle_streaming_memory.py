"""Issue #4: streaming 1 GB of logs from one node keeps controller and CLI memory flat.

A 1-node dev cluster (real controller and executor processes over mTLS gRPC);
the node's QEMU log folder gets about 1 GiB of fresh log lines, then the real
CLI (``novaops support bundle --node node-1 -o X.tar.zst``) runs as a
subprocess while a thread samples the resident memory of the controller and of
the CLI, each with its children, every 20 ms.

Two sizes, so that "flat" is measured and not only bounded: the peak while
streaming 1 GiB may not exceed the peak while streaming 256 MiB by more than
:data:`GROWTH_MARGIN`, and both stay under the issue's 150 MB. Anything that
kept more than about 6 % of the bytes fails the first; holding an archive in
memory fails both.

Where the peaks come from (measured on the 2-core machine): the CLI holds
~55-90 MiB while the stream runs and peaks in ``close()``, when zstd's worker
threads compress the spooled node archive (~27 MiB of job buffers, whatever
the size); the controller stays ~90-120 MiB (a fan-out queue of a few chunks,
the gRPC windows; once 173 MiB, while other test suites kept both cores
busy). The margin covers noise of that order.

Under CPU load the CLI used to peak at 133-185 MiB now and then: gRPC grew
its receive window from its bandwidth estimate and held tens of MB the CLI
had not read yet. Channels now use a fixed 4 MiB window per stream
(:data:`novaops.client.tls.STREAM_WINDOW_BYTES`); with two busy loops on both
cores the CLI then peaked at 81-93 MiB.

The daemons cap glibc's malloc arenas themselves
(:func:`novaops.client.daemon.limit_malloc_arenas`); the test sets nothing.
Without that cap each of the controller's threads got an arena of its own and
freed chunk buffers stayed resident in them: the controller then peaked at
140-193 MiB in 8 runs out of 8 (5 over 150 MB).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from .conftest import NOVAOPS, DevCluster, novaops, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MIB = 1024 * 1024
SMALL_BYTES = 256 * MIB
BIG_BYTES = 1024 * MIB
FILE_BYTES = 60 * MIB
RSS_LIMIT = 150 * 1000 * 1000  # the "under 150 MB"
# Peaks of the same size varied by up to ~40 MiB between runs; see the docstring.
GROWTH_MARGIN = 48 * MIB
SAMPLE_SECONDS = 0.02


@dataclass(frozen=True)
class Run:
    size: int
    controller_peak: int
    cli_peak: int
    executor_peak: int  # with its redaction workers; reported, not bounded here

    def describe(self) -> str:
        return (
            f"{self.size // MIB} MiB: controller {self.controller_peak / MIB:.1f} MiB, "
            f"CLI {self.cli_peak / MIB:.1f} MiB, executor {self.executor_peak / MIB:.1f} MiB"
        )


def tree_rss(process: psutil.Process) -> int:
    """RSS of process and all its descendants (0 for any that went away)."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


class PeakSampler(threading.Thread):
    """The highest tree RSS seen for each process, sampled every SAMPLE_SECONDS."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        super().__init__(daemon=True)
        self.processes = processes
        self.peaks = dict.fromkeys(processes, 0)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            for name, process in self.processes.items():
                self.peaks[name] = max(self.peaks[name], tree_rss(process))
            if self._stop_event.wait(SAMPLE_SECONDS):
                return

    def stop(self) -> dict[str, int]:
        self._stop_event.set()
        self.join()
        return self.peaks


def pid_of_role(cluster: DevCluster, role: str) -> int:
    result = novaops("dev", "status", "--state-dir", str(cluster.state_dir), "-o", "json")
    assert result.returncode == 0, result.stderr
    return int(next(p["pid"] for p in json.loads(result.stdout) if p["role"] == role))


def place_logs(folder: Path, total: int) -> list[Path]:
    """About total bytes of fresh log lines as FILE_BYTES hard links in folder."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.000+0000")
    line = (
        f"{stamp}: 4242: info : virtio-blk queue 3 kicked, request completed, "
        "nothing unusual to report\n"
    ).encode()
    block = line * (MIB // len(line))
    first = folder / "stream-00.log"
    with first.open("wb") as out:
        for _ in range(FILE_BYTES // len(block)):
            out.write(block)
    paths = [first]
    while len(paths) * first.stat().st_size < total:
        link = folder / f"stream-{len(paths):02d}.log"
        os.link(first, link)
        paths.append(link)
    return paths


def stream_bundle(cluster: DevCluster, size: int, out: Path) -> Run:
    qemu = cluster.node_dir("node-1") / "root/var/log/libvirt/qemu"
    logs = place_logs(qemu, size)
    log_bytes = sum(p.stat().st_size for p in logs)
    controller = psutil.Process(pid_of_role(cluster, "controller"))
    executor = psutil.Process(pid_of_role(cluster, "executor"))
    command = [
        *NOVAOPS,
        "--config",
        str(cluster.config),
        "support",
        "bundle",
        "--node",
        "node-1",
        "-o",
        str(out),
        "--format",
        "json",
    ]
    user_env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=user_env)
    try:
        sampler = PeakSampler(
            {"controller": controller, "cli": psutil.Process(cli.pid), "executor": executor}
        )
        sampler.start()
        try:
            stdout, stderr = cli.communicate(timeout=240)
        finally:
            peaks = sampler.stop()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
        for path in logs:
            path.unlink()
    assert cli.returncode == 0, stdout.decode() + stderr.decode()
    summary = json.loads(stdout)
    [node] = summary["nodes"]
    assert node["status"] == "ok", node
    # Every log byte went through the stream (nothing cut, nothing skipped).
    assert node["size"] >= log_bytes
    out.unlink()
    return Run(size, peaks["controller"], peaks["cli"], peaks["executor"])


@pytest.fixture(scope="module")
def one_node(cluster_factory: Callable[..., DevCluster]) -> DevCluster:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MALLOC_ARENA_MAX", raising=False)  # the daemons' own cap is under test
        cluster = cluster_factory(1, "--no-faults")
    wait_for(lambda: [n["state"] for n in cluster.json("node", "list")] == ["up"], 30, "node up")
    return cluster


def test_streaming_1gb_keeps_controller_and_cli_memory_flat(
    one_node: DevCluster, tmp_path: Path
) -> None:
    small = stream_bundle(one_node, SMALL_BYTES, tmp_path / "small.tar.zst")
    big = stream_bundle(one_node, BIG_BYTES, tmp_path / "big.tar.zst")
    report = f"{small.describe()}; {big.describe()}"
    print(report, file=sys.stderr)
    for run in (small, big):
        assert run.controller_peak < RSS_LIMIT, report
        assert run.cli_peak < RSS_LIMIT, report
    assert big.controller_peak <= small.controller_peak + GROWTH_MARGIN, report
    assert big.cli_peak <= small.cli_peak + GROWTH_MARGIN, report
