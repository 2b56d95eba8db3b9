"""Issue #4 end to end: bundles from 3 real executors, validated and extracted offline."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from novaops.client.api import NovaopsClient
from novaops.client.bundle import BundleRequestInfo, BundleWriter, apply_fleet_message, validate

from .conftest import DevCluster, novaops, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
SECRET = "hunter2-very-secret"


@pytest.fixture(scope="module")
def three(cluster_factory: Callable[..., DevCluster]) -> DevCluster:
    cluster = cluster_factory(3)
    wait_for(lambda: sum(n["state"] == "up" for n in cluster.json("node", "list")) == 3, 30, "3 up")
    # A secret and identifiers a scrubbed bundle must not carry.
    log = cluster.node_dir("node-1") / "root/var/log/libvirt/libvirtd.log"
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.000+0000")
    with log.open("a") as out:
        out.write(f"{now}: 1234: error : auth failed password={SECRET} from 10.20.30.40\n")
    return cluster


def test_scrubbed_bundle_validates_and_extracts(three: DevCluster, tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    result = three.cli(
        "support",
        "bundle",
        "--all",
        "--scrub",
        "--keep-map",
        "-o",
        str(archive),
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert [n["status"] for n in summary["nodes"]] == ["ok", "ok", "ok"]
    assert len(summary["sha256"]) == 64
    map_path = Path(summary["map"])
    assert map_path.stat().st_mode & 0o777 == 0o600
    assert "10.20.30.40" in map_path.read_text()

    checked = novaops("support", "bundle", "validate", str(archive))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    dest = tmp_path / "out"
    extracted = novaops("support", "bundle", "extract", str(archive), "--dest", str(dest))
    assert extracted.returncode == 0, extracted.stderr
    texts = [p.read_bytes() for p in dest.rglob("*") if p.is_file()]
    assert texts and not any(SECRET.encode() in t or b"10.20.30.40" in t for t in texts)
    with tarfile.open(archive) as outer:
        names = outer.getnames()
    assert "manifest.json" in names and sum(n.startswith("nodes/") for n in names) == 3

    inspected = novaops("support", "bundle", "inspect", str(archive), "--format", "json")
    assert inspected.returncode == 0, inspected.stderr
    report = json.loads(inspected.stdout)
    # Scrubbed: nodes are named by their pseudonyms; the real names are in the map only.
    pseudonym = json.loads(map_path.read_text())["hostname"]["node-1"]
    assert pseudonym != "node-1"
    assert not any(b"node-1" in t for t in texts)
    node1 = next(n for n in report["nodes"] if n["node"] == pseudonym)
    assert any("crashed" in c["message"] for c in node1["failing_checks"])
    assert sum(node1["redactions"].values()) > 0


def test_bad_extension_fails_before_any_work(three: DevCluster, tmp_path: Path) -> None:
    result = three.cli("support", "bundle", "-o", str(tmp_path / "b.zip"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "b.zip").exists()


def bundle_counts(cluster: DevCluster) -> dict[str, float]:
    """novaops_support_bundle_generated_total by outcome, scraped from the controller."""
    text = (cluster.state_dir / "controller" / "controller.toml").read_text()
    match = re.search(r'metrics_listen = "([^"]+)"', text)
    assert match, text
    with urllib.request.urlopen(f"http://{match.group(1)}/metrics", timeout=10) as answer:
        exposition = answer.read().decode()
    return {
        sample.labels["outcome"]: float(sample.value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "novaops_support_bundle_generated_total"
    }


def test_an_interrupted_bundle_is_counted_as_cancelled(three: DevCluster) -> None:
    before = bundle_counts(three).get("cancelled", 0.0)
    with NovaopsClient.from_config_file(three.config) as client:
        for message in client.collect_bundle(request_id="walk-away"):
            if message.WhichOneof("result") == "chunk":
                break  # the caller goes away mid-stream
    wait_for(
        lambda: bundle_counts(three).get("cancelled", 0.0) == before + 1,
        30,
        "the cancelled bundle counted",
    )


def test_a_node_killed_mid_stream_is_marked_failed(three: DevCluster, tmp_path: Path) -> None:
    # Enough logs on node-2 that its stream is still running when it dies.
    qemu = three.node_dir("node-2") / "root/var/log/libvirt/qemu"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.000+0000")
    line = f"{stamp}: virtio: queue {{n}} kicked, nothing unusual to report here\n"
    for part in range(4):
        with (qemu / f"bulk-{part}.log").open("w") as out:
            out.writelines(line.replace("{n}", str(i)) for i in range(120_000))
    victim = three.pid("node-2")
    output = tmp_path / "partial.tar.zst"
    killed = False
    with NovaopsClient.from_config_file(three.config) as client:
        info = BundleRequestInfo(request_id="kill-test")
        with BundleWriter(output, request=info) as writer:
            for message in client.collect_bundle(request_id="kill-test"):
                chunk = message.chunk if message.WhichOneof("result") == "chunk" else None
                if (
                    not killed
                    and chunk is not None
                    and chunk.node == "node-2"
                    and chunk.WhichOneof("part") == "data"
                ):
                    os.kill(victim, signal.SIGKILL)
                    killed = True
                apply_fleet_message(writer, message)
            summary = writer.close()
    assert killed
    statuses = {n.node: n.status for n in summary.nodes}
    assert statuses["node-1"] == "ok" and statuses["node-3"] == "ok"
    assert statuses["node-2"] != "ok"
    assert summary.failed_nodes == ["node-2"]
    assert validate(output) == []
