#!/usr/bin/env python3
"""Run the novaops benchmarks and write docs/benchmarks.md.

    make bench            # or: .venv/bin/python bench/run.py [--repeat N]

Figures are medians (and p95) of repeated runs, compared side by side with a
floor measured in the same run, because these machines are noisy: ratios are
more telling than absolute numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks.md"
NOVAOPS = [sys.executable, "-m", "novaops.cli"]


@dataclass
class Figure:
    name: str
    samples: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000


def timed(action: Callable[[], object], repeat: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def run_quiet(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
        f"{mem_gib:.0f} GiB RAM, Python {platform.python_version()}"
    )


def bench_cli_start(repeat: int) -> list[Figure]:
    python = [sys.executable, "-c", "pass"]
    help_cmd = [*NOVAOPS, "--help"]
    script = shutil.which("novaops") or str(Path(sys.executable).with_name("novaops"))
    return [
        Figure("python -c pass (floor)", timed(lambda: run_quiet(python), repeat)),
        Figure(
            "novaops --help (console script)", timed(lambda: run_quiet([script, "--help"]), repeat)
        ),
        Figure("python -m novaops.cli --help", timed(lambda: run_quiet(help_cmd), repeat)),
    ]


def bench_node_list(repeat: int, nodes: int) -> list[Figure]:
    from novaops.client.api import NovaopsClient
    from novaops.client.config import ClientConfig
    from novaops.client.tls import secure_channel
    from novaops.v1 import controller_pb2, controller_pb2_grpc

    with tempfile.TemporaryDirectory(prefix="novaops-bench-") as tmp:
        state = Path(tmp) / "cluster"
        run_quiet(
            [*NOVAOPS, "dev", "up", "--nodes", str(nodes), "--state-dir", str(state), "--detach"]
        )
        try:
            config_path = state / "client.toml"
            config = ClientConfig.load(config_path)
            with NovaopsClient(config) as client:
                deadline = time.monotonic() + 30
                while sum(n.state == "up" for n in client.list_nodes()) < nodes:
                    if time.monotonic() > deadline:
                        raise SystemExit("bench: nodes did not come up")
                    time.sleep(0.2)
                library = timed(client.list_nodes, repeat * 5)
            with secure_channel(config.controllers[0], config.tls) as channel:
                stub = controller_pb2_grpc.ClusterServiceStub(channel)
                leader = timed(
                    lambda: stub.GetLeader(controller_pb2.GetLeaderRequest(), timeout=10),
                    repeat * 5,
                )
            cli = timed(
                lambda: run_quiet(
                    [*NOVAOPS, "--config", str(config_path), "node", "list", "-o", "json"]
                ),
                repeat,
            )
        finally:
            run_quiet([*NOVAOPS, "dev", "down", "--state-dir", str(state)])
    return [
        Figure("GetLeader, raw stub, warm channel (floor)", leader),
        Figure(f"client.list_nodes(), warm channel, {nodes} nodes", library),
        Figure(f"novaops node list -o json (new process), {nodes} nodes", cli),
    ]


def table(figures: list[Figure], floor: Figure) -> str:
    rows = ["| measurement | runs | median ms | p95 ms | x floor |", "|---|---|---|---|---|"]
    for fig in figures:
        ratio = fig.median_ms / floor.median_ms if floor.median_ms else float("nan")
        rows.append(
            f"| {fig.name} | {len(fig.samples)} | {fig.median_ms:.1f} | {fig.p95_ms:.1f} "
            f"| {ratio:.2f} |"
        )
    return "\n".join(rows)


# Before each benchmark: wait (up to QUIET_MAX_SECONDS) until the machine's CPUs
# were busy less than QUIET_BUSY of a QUIET_WINDOW_SECONDS window, so a benchmark
# does not measure the previous one's teardown (50 executor processes exiting,
# say). Measured from /proc/stat, not the load average: that lags by minutes
# (a run once started at load 5 after 120 s of waiting).
QUIET_BUSY = 0.10
QUIET_WINDOW_SECONDS = 2.0
QUIET_MAX_SECONDS = 120.0


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])


def busy_share(window: float) -> float:
    """The share of all CPUs' time spent busy over the next ``window`` seconds."""
    idle_before, total_before = _cpu_times()
    time.sleep(window)
    idle_after, total_after = _cpu_times()
    total = max(1, total_after - total_before)
    return 1.0 - (idle_after - idle_before) / total


def wait_for_quiet() -> float:
    """Seconds waited for the machine to settle; the busy share is printed."""
    start = time.perf_counter()
    busy = busy_share(QUIET_WINDOW_SECONDS)
    while busy >= QUIET_BUSY and time.perf_counter() - start < QUIET_MAX_SECONDS:
        busy = busy_share(QUIET_WINDOW_SECONDS)
    waited = time.perf_counter() - start
    print(
        f"bench: CPUs {busy:.0%} busy (load {os.getloadavg()[0]:.2f}) after waiting {waited:.0f}s",
        flush=True,
    )
    return waited


def section(title: str, produce: Callable[[], str]) -> str:
    """One benchmark's markdown; a benchmark that fails says so instead of aborting the run."""
    wait_for_quiet()
    start = time.perf_counter()
    try:
        body = produce()
    except Exception as exc:
        body = f"## {title}\n\nThis benchmark failed: `{type(exc).__name__}: {exc}`\n"
    print(f"bench: {title} done in {time.perf_counter() - start:.0f}s", flush=True)
    return body.rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        choices=["cli", "fanout", "quarantine", "redaction", "bundles"],
        help="run only these benchmarks (repeatable)",
    )
    args = parser.parse_args()
    chosen = set(args.only or ["cli", "fanout", "quarantine", "redaction", "bundles"])
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    sections: list[str] = []
    if "cli" in chosen:

        def cli() -> str:
            start = bench_cli_start(args.repeat)
            listing = bench_node_list(args.repeat, args.nodes)
            return (
                "## CLI start-up (`novaops --help` must stay well under 500 ms, no grpc import)\n\n"
                f"{table(start, start[0])}\n\n"
                "## `node list` against a local dev cluster (embedded store, mTLS)\n\n"
                f"{table(listing, listing[0])}\n"
            )

        sections.append(section("cli", cli))
    for name in ("fanout", "quarantine", "redaction", "bundles"):
        if name in chosen:
            # Sibling modules of this script, each with run(quick) -> markdown.
            module = importlib.import_module(name)
            runner: Callable[[], str] = functools.partial(module.run, args.quick)
            sections.append(section(name, runner))
    mode = " --quick" if args.quick else ""
    only = "".join(f" --only {name}" for name in sorted(args.only or []))
    command = f"make bench  (.venv/bin/python bench/run.py{mode}{only})"
    text = f"""# Benchmarks

Written by `bench/run.py`; do not edit by hand. Figures are wall-clock medians
and p95 over repeated runs; each group has a floor or a peer measured in the same
run, and ratios are given against it (machines here are noisy: compare ratios).
How each figure is measured: [benchmarks-method.md](benchmarks-method.md).

- command: `{command}`
- machine: {machine()}
- date: {dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}

""" + "\n".join(sections)
    if args.only:
        print(text)
        return 0
    OUT.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
