#!/usr/bin/env python3
"""End-to-end node bundle throughput (raw log MB/s) vs ``tar czf`` / ``tar --zstd``.

    python bench/bundles.py [--quick]

In-process, not a dev cluster: the executor side (NodeBundleBuilder, default
rules, two redaction worker processes) feeds the client's BundleWriter writing
``.tar.zst`` in this same process (the controller only forwards chunks and is
not exercised here). Peak RSS of this process (builder + writer) and of the
redaction workers is sampled with psutil. 1 GiB of logs; 64 MiB with --quick.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.logtree import make_log_tree  # noqa: E402

MB = 1e6


class _Peak(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.main = self.me.memory_info().rss
        self.workers = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.main = max(self.main, self.me.memory_info().rss)
            for child in self.me.children():
                try:
                    self.workers = max(self.workers, child.memory_info().rss)
                except psutil.Error:
                    continue


def _novaops(root: Path, out: Path) -> tuple[float, int, int]:
    from novaops.client.bundle import BundleRequestInfo, BundleWriter
    from novaops.executor.bundle import BundleOptions, BundleSources, NodeBundleBuilder
    from novaops.executor.hostroot import HostRoot

    builder = NodeBundleBuilder(BundleOptions(node="n"), BundleSources(host_root=HostRoot(root)))
    peak = _Peak()
    peak.start()
    start = time.perf_counter()
    with BundleWriter(out, request=BundleRequestInfo(nodes=("n",))) as writer:
        offset = 0
        for chunk in builder.chunks():
            writer.add_chunk("n", offset, chunk)
            offset += len(chunk)
        assert builder.result is not None
        writer.finish_node("n", builder.result.sha256, builder.result.size)
        writer.close()
    elapsed = time.perf_counter() - start
    peak.done.set()
    peak.join()
    return elapsed, peak.main, peak.workers


def _tar(root: Path, out: Path, flag: str) -> float:
    start = time.perf_counter()
    subprocess.run(["tar", flag, "-cf", str(out), "-C", str(root), "var", "etc"], check=True)
    return time.perf_counter() - start


def run(quick: bool) -> str:
    size = 64.0 if quick else 1024.0
    with tempfile.TemporaryDirectory(prefix="novaops-bench-bundle-") as tmp:
        work = Path(tmp)
        tree = make_log_tree(work / "host", size, seeds_per_kind=20)
        raw = tree.log_bytes / MB
        ours, main_rss, worker_rss = _novaops(tree.root, work / "b.tar.zst")
        gz = _tar(tree.root, work / "t.tar.gz", "-z")
        zst = _tar(tree.root, work / "t.tar.zst", "--zstd") if shutil.which("zstd") else None
    zst_cell = f"{raw / zst:.0f}" if zst else "zstd missing"
    met = "met" if raw / ours >= 100 else "NOT met"
    mem = "met" if main_rss < 150 * 2**20 else "NOT met"
    return f"""## Support bundle end to end, one node ({raw:.0f} MB of raw logs)

In-process (builder with 2 redaction workers -> BundleWriter `.tar.zst`); no dev
cluster, so controller and CLI are not separate processes here.

| path | raw log MB/s (wall) |
|---|---|
| novaops default rules, .tar.zst | {raw / ours:.0f} |
| tar czf (no redaction) | {raw / gz:.0f} |
| tar --zstd (no redaction, the ceiling) | {zst_cell} |

Peak RSS: builder + writer process {main_rss / 2**20:.0f} MiB; each redaction worker
{worker_rss / 2**20:.0f} MiB.

Targets: default-rules bundle >= 100 MB/s per node with zstd: {raw / ours:.0f} MB/s, **{met}**;
writer side < 150 MB RSS while streaming {raw:.0f} MB: **{mem}** (in-process figure,
controller not measured).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(run(parser.parse_args().quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
