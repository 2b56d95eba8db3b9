"""Container checks against a real "container": a process in its own namespaces.

``unshare --fork --pid --net --mount-proc --uts --ipc`` runs a Python service
that brings up its loopback and listens on one port inside its own network
namespace. A runc-style ``state.json`` under a tmp host root points at its
init pid and declares that port plus one nothing listens on.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from novaops.executor.checks.domains import FakeDomainSource
from novaops.executor.checks.model import CheckResult, Status
from novaops.executor.checks.runner import DiagnoseTarget, TargetKind, run_diagnose
from novaops.executor.checks.sources import CheckSources, CheckTimings, ContainerLocation
from novaops.executor.hostroot import HostRoot
from novaops.v1 import executor_pb2

OPEN_PORT, CLOSED_PORT = 8080, 9090

SERVICE = textwrap.dedent(
    f"""
    import socket, subprocess, sys, time
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    listener = socket.create_server(("127.0.0.1", {OPEN_PORT}))
    listener.settimeout(0.2)
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn, _ = listener.accept()
            conn.close()
        except TimeoutError:
            pass
    """
)

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None or shutil.which("nsenter") is None,
    reason="needs util-linux unshare and nsenter",
)


def _init_pid(unshare: subprocess.Popen[str]) -> int:
    """The container's init: the child unshare --fork started in the new pid namespace."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = psutil.Process(unshare.pid).children()
        if children:
            return children[0].pid
        time.sleep(0.02)
    raise AssertionError("unshare started no child")


@pytest.fixture
def container(tmp_path: Path) -> Iterator[tuple[CheckSources, int]]:
    unshare = subprocess.Popen(
        [
            "unshare",
            "--fork",
            "--pid",
            "--net",
            "--mount-proc",
            "--uts",
            "--ipc",
            sys.executable,
            "-c",
            SERVICE,
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert unshare.stdout is not None
        assert unshare.stdout.readline().strip() == "ready"
        init_pid = _init_pid(unshare)
        state_dir = tmp_path / "root/run/runc/web"
        state_dir.mkdir(parents=True)
        (state_dir / "state.json").write_text(
            json.dumps(
                {
                    "ociVersion": "1.0.2",
                    "id": "web",
                    "status": "running",
                    "pid": init_pid,
                    "bundle": "/srv/containers/web",
                    "annotations": {"novaops.ports": f"{OPEN_PORT},{CLOSED_PORT}"},
                }
            )
        )
        sources = CheckSources(
            node="n1",
            root=HostRoot(tmp_path / "root"),
            domains=FakeDomainSource(),
            lxc_containers=lambda: [
                ContainerLocation("web-lxc", "libvirt-lxc", init_pid, ports=(OPEN_PORT,))
            ],
            timings=CheckTimings(per_check=20, connect=1.0),
        )
        yield sources, init_pid
    finally:
        # Killing unshare's child (pid 1 of the namespace) takes the namespace down.
        for proc in psutil.Process(unshare.pid).children(recursive=True):
            proc.kill()
        unshare.kill()
        unshare.wait(timeout=30)
        if unshare.stdout is not None:
            unshare.stdout.close()


async def _diag(sources: CheckSources, name: str) -> list[CheckResult]:
    target = DiagnoseTarget(TargetKind.CONTAINER, name)
    return [r async for r in run_diagnose(target, sources)]


async def test_runc_container_namespaces_and_ports(container: tuple[CheckSources, int]) -> None:
    sources, init_pid = container
    results = await _diag(sources, "web")
    by_id = {r.check_id: r for r in results}
    assert by_id["container.locate"].evidence["init_pid"] == str(init_pid)
    assert by_id["container.process"].status is Status.OK
    namespaces = by_id["container.namespaces"]
    assert namespaces.status is Status.OK, namespaces.summary
    for ns in ("net", "pid", "mnt", "uts", "ipc"):
        assert namespaces.evidence[f"{ns}_isolated"] == "true"
    ports = {r.evidence["port"]: r for r in results if r.check_id == "container.port"}
    assert ports[str(OPEN_PORT)].status is Status.OK
    assert ports[str(CLOSED_PORT)].status is Status.FAIL
    assert (
        f"nsenter --net=/proc/{init_pid}/ns/net" in ports[str(CLOSED_PORT)].remediation[0].command
    )


async def test_libvirt_lxc_container_is_located(container: tuple[CheckSources, int]) -> None:
    sources, _ = container
    results = await _diag(sources, "web-lxc")
    statuses = {r.check_id: r.status for r in results}
    assert statuses == {
        "container.locate": Status.OK,
        "container.process": Status.OK,
        "container.namespaces": Status.OK,
        "container.port": Status.OK,
    }


async def test_unknown_and_exited_containers(
    container: tuple[CheckSources, int], tmp_path: Path
) -> None:
    sources, _ = container
    assert [(r.check_id, r.status) for r in await _diag(sources, "ghost")] == [
        ("container.locate", Status.FAIL)
    ]
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    state_dir = tmp_path / "root/run/crun/gone"
    state_dir.mkdir(parents=True)
    (state_dir / "state.json").write_text(
        json.dumps({"id": "gone", "init_process_pid": dead.pid, "init_process_start": 1})
    )
    results = await _diag(sources, "gone")
    assert [(r.check_id, r.status) for r in results] == [
        ("container.locate", Status.OK),
        ("container.process", Status.FAIL),
    ]
    assert "unexpected exit" in results[1].summary


async def test_libvirt_lxc_domain_found_from_its_host_state(
    container: tuple[CheckSources, int], tmp_path: Path
) -> None:
    """libvirt keeps /run/libvirt/lxc/<name>.pid (the libvirt_lxc controller, whose
    child is the container's init) and the live XML beside it; here unshare plays
    the controller."""
    from dataclasses import replace

    from novaops.executor.checks.lxc import libvirt_lxc_containers

    sources, init_pid = container
    controller = psutil.Process(init_pid).parent()
    assert controller is not None
    run = tmp_path / "root/run/libvirt/lxc"
    run.mkdir(parents=True)
    (run / "shop.pid").write_text(f"{controller.pid}\n")
    (run / "shop.xml").write_text(
        "<domain type='lxc'><name>shop</name><metadata>"
        "<novaops:ports xmlns:novaops='https://novaops.dev/xmlns/1'>"
        f"{OPEN_PORT},{CLOSED_PORT}</novaops:ports></metadata></domain>"
    )
    root = sources.root
    located = libvirt_lxc_containers(root)
    assert [(c.name, c.runtime, c.init_pid) for c in located] == [("shop", "libvirt-lxc", init_pid)]
    results = await _diag(replace(sources, lxc_containers=lambda: located), "shop")
    ports = {r.evidence["port"]: r.status for r in results if r.check_id == "container.port"}
    assert ports == {str(OPEN_PORT): Status.OK, str(CLOSED_PORT): Status.FAIL}


async def test_a_fleet_search_skips_only_a_container_that_is_not_there(
    container: tuple[CheckSources, int], tmp_path: Path
) -> None:
    """skip_absent (the controller's search of every node): no result where the
    container is not found; where it is, or its state is unreadable, the same
    results as a diagnosis of that node."""
    sources, _ = container

    async def search(name: str) -> list[tuple[str, Status]]:
        target = DiagnoseTarget(TargetKind.CONTAINER, name, skip_absent=True)
        return [(r.check_id, r.status) async for r in run_diagnose(target, sources)]

    assert await search("ghost") == []
    assert await search("web") == [(r.check_id, r.status) for r in await _diag(sources, "web")]
    assert ("container.port", Status.FAIL) in await search("web")
    broken = tmp_path / "root/run/runc/broken"
    broken.mkdir(parents=True)
    (broken / "state.json").write_text("{not json")
    assert await search("broken") == [("container.locate", Status.ERROR)]


def test_skip_absent_is_read_for_containers_only() -> None:
    def target(**fields: object) -> DiagnoseTarget:
        return DiagnoseTarget.from_request(executor_pb2.DiagnoseRequest(**fields))  # type: ignore[arg-type]

    assert target(container="web", skip_absent=True).skip_absent
    assert not target(container="web").skip_absent
    assert not target(vm="web", skip_absent=True).skip_absent
    assert not target(host=True, skip_absent=True).skip_absent
