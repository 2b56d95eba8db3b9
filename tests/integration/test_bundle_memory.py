"""Streaming a large node bundle keeps memory flat (issue 4: 1 GB from one node).

A generated hypervisor log tree (``NOVAOPS_BUNDLE_MEMORY_MB``, default 48 MiB so
the suite stays quick; 1 GiB through real processes and gRPC is
``tests/e2e/test_bundle_streaming_memory.py``, and the benchmark is in
``bench/bundles.py``) goes through the
real :class:`NodeBundleBuilder` (default rules, two redaction workers) and the
client's :class:`BundleWriter` writing a ``.tar.zst``, in this process. A
thread samples this process's RSS; its growth must stay under a bound that does
not depend on the size of the logs.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import psutil

from novaops.client.bundle import BundleRequestInfo, BundleWriter, validate
from novaops.executor.bundle import BundleOptions, BundleSources, NodeBundleBuilder
from novaops.executor.hostroot import HostRoot

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bench.logtree import make_log_tree  # noqa: E402

MIB = 1024 * 1024
SIZE_MB = float(os.environ.get("NOVAOPS_BUNDLE_MEMORY_MB", "48"))
# Chunks, a few 1 MiB redaction blocks, zstd windows, Python allocator slack.
GROWTH_BOUND = 48 * MIB


class RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def test_streaming_a_large_bundle_keeps_memory_flat(tmp_path: Path) -> None:
    tree = make_log_tree(tmp_path / "host", SIZE_MB, seeds_per_kind=5)
    out = tmp_path / "bundle.tar.zst"
    options = BundleOptions(node="node-a", request_id="r", workers=2)
    builder = NodeBundleBuilder(options, BundleSources(host_root=HostRoot(tree.root)))
    baseline = psutil.Process().memory_info().rss
    sampler = RssSampler()
    sampler.start()
    streamed = 0
    try:
        with BundleWriter(out, request=BundleRequestInfo(nodes=("node-a",))) as writer:
            writer.start_node("node-a")
            for chunk in builder.chunks():
                writer.add_chunk("node-a", streamed, chunk)
                streamed += len(chunk)
            result = builder.result
            assert result is not None
            writer.finish_node("node-a", result.sha256, result.size, result.redactions)
            summary = writer.close()
    finally:
        peak = sampler.stop()
    assert streamed >= tree.log_bytes
    assert summary.failed_nodes == []
    growth = peak - baseline
    assert growth < GROWTH_BOUND, f"RSS grew {growth / MIB:.1f} MiB for {SIZE_MB} MiB of logs"
    assert [f for f in validate(out) if f.kind in ("checksum", "metadata", "manifest")] == []
