"""A simulated node's host side, made real without controller or executor, checked by
the real checks library and repaired by the real recovery catalogue.

The node is one ``plan_node`` + ``plan_host`` brought up by simhost in a temporary
state folder: stand-in QEMU processes, an orphan, a stale lock and, as root, its own
network namespace (bridge, taps, one off the bridge) and a container with a closed
port. The parts that need root are skipped with the reason when not root.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from prometheus_client import CollectorRegistry

from novaops.devcluster import simhost
from novaops.devcluster.simnode import (
    Fault,
    SimHostPlan,
    SimNodePaths,
    SimNodeSpec,
    host_path,
    plan_host,
    plan_node,
    write_sim_node,
)
from novaops.devcluster.state import ProcessRecord, ProcessRole
from novaops.executor.checks.domains import LibvirtDomainSource
from novaops.executor.checks.model import CheckResult, Status
from novaops.executor.checks.runner import (
    DiagnoseTarget,
    TargetKind,
    run_diagnose,
    run_health_checks,
)
from novaops.executor.checks.sources import CheckSources, CheckTimings
from novaops.executor.cleanliness import ChecksFinders
from novaops.executor.hostroot import HostRoot
from novaops.executor.recovery import (
    ConnectionDomainControl,
    NetlinkLinks,
    RecoveryCatalogue,
    Step,
)

pytest.importorskip("libvirt")
pytestmark = pytest.mark.timeout(120)

NODE = "node-1"
NETWORK_SKIP = simhost.network_support()
CONTAINER_SKIP = simhost.container_support()
needs_network = pytest.mark.skipif(
    NETWORK_SKIP is not None, reason=f"simulated networking needs root: {NETWORK_SKIP}"
)
needs_container = pytest.mark.skipif(
    CONTAINER_SKIP is not None, reason=f"simulated container needs root: {CONTAINER_SKIP}"
)


@dataclass
class SimNode:
    spec: SimNodeSpec
    plan: SimHostPlan
    paths: SimNodePaths
    netns: str | None
    records: list[ProcessRecord] = field(default_factory=list)

    def pid(self, name: str) -> int:
        return next(rec.pid for rec in self.records if rec.name == name)


def _bring_up(state_dir: Path) -> SimNode:
    spec = plan_node(NODE, 1, seed=5)
    paths = write_sim_node(spec, state_dir / "nodes" / NODE)
    plan = plan_host(spec)
    netns = simhost.netns_name(state_dir, NODE) if NETWORK_SKIP is None else None
    node = SimNode(spec, plan, paths, netns)
    try:
        if netns is not None:
            simhost.create_network(plan, netns)
        simhost.start_sim_host(
            plan,
            paths,
            log_dir=state_dir / "logs",
            started=node.records,
            netns=netns,
            container=CONTAINER_SKIP is None,
        )
    except BaseException:
        _tear_down(node)
        raise
    return node


def _tear_down(node: SimNode) -> None:
    simhost.stop_sim_host(node.records, [node.netns] if node.netns else [], timeout=2.0)


def _leftovers(node: SimNode) -> list[str]:
    """Processes of the node that still run (zombies excluded), and its namespace."""
    left = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if str(node.paths.node_dir) in " ".join(proc.cmdline()):
                left.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:80]}")
        except psutil.Error:
            continue
    if node.netns is not None and simhost.netns_exists(node.netns):
        left.append(f"netns {node.netns}")
    return left


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimNode]:
    node = _bring_up(tmp_path_factory.mktemp("faults"))
    try:
        yield node
    finally:
        _tear_down(node)


def _sources(node: SimNode) -> CheckSources:
    return CheckSources(
        node=NODE,
        root=HostRoot(node.paths.host_root),
        domains=LibvirtDomainSource(node.paths.libvirt_uri),
        netns=node.netns,
        tap_prefixes=(node.plan.tap_prefix,),
        timings=CheckTimings(per_check=20.0, counter_window=0.2, cpu_window=0.05),
    )


@pytest.fixture
async def sources(sim: SimNode) -> AsyncIterator[CheckSources]:
    src = _sources(sim)
    try:
        yield src
    finally:
        await src.domains.close()  # type: ignore[attr-defined]


async def _diag(sources: CheckSources, kind: TargetKind, name: str = "host") -> list[CheckResult]:
    return [r async for r in run_diagnose(DiagnoseTarget(kind, name), sources)]


def _by_id(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check_id: r for r in results}


def _summaries(results: list[CheckResult]) -> str:
    return "; ".join(f"{r.check_id}={r.status.value}: {r.summary}" for r in results)


# -- the faults are found ---------------------------------------------------------------------


async def test_health_finds_the_orphan_and_the_stale_lock(
    sim: SimNode, sources: CheckSources
) -> None:
    results = _by_id(await run_health_checks(sources))
    text = _summaries(list(results.values()))
    assert results["host.libvirt"].status is Status.OK, text
    orphans = results["host.orphans"]
    assert orphans.status is Status.FAIL, text
    assert orphans.evidence["orphans"] == "1"
    ghost = sim.pid(sim.plan.orphan.guest)
    assert f"{ghost} ({sim.plan.orphan.guest})" in orphans.summary
    locks = results["host.locks"]
    assert locks.status is Status.FAIL, text
    assert str(sim.plan.stale_lock) in locks.summary and locks.evidence["stale"] == "1"
    # The stand-ins' pid files are lock files too: every one names a live owner.
    assert int(locks.evidence["files"]) == len(sim.plan.standins) + 1
    # Taps: all claimed by running domains (or no taps at all without a namespace).
    assert results["host.taps"].status is Status.OK, text


async def test_every_domain_shows_its_own_fault(sim: SimNode, sources: CheckSources) -> None:
    for standin in sim.plan.standins:
        vm = _by_id(await _diag(sources, TargetKind.VM, standin.guest))
        process = vm["vm.process"]
        assert process.status is Status.OK, _summaries(list(vm.values()))
        assert process.evidence["found_via"] == "pid-file"
        assert process.evidence["pid"] == str(sim.pid(standin.guest))
    paused = _by_id(await _diag(sources, TargetKind.VM, sim.spec.with_fault(Fault.PAUSED).name))
    assert paused["vm.domain"].status is not Status.OK
    crashed = _by_id(await _diag(sources, TargetKind.VM, sim.spec.with_fault(Fault.CRASHED).name))
    assert crashed["vm.domain"].status is Status.FAIL
    assert "vm.process" not in crashed  # on_crash preserve, no process: vm.domain says it
    broken = sim.spec.with_fault(Fault.MISSING_DISK).name
    missing = _by_id(await _diag(sources, TargetKind.VM, broken))
    assert missing["vm.disk"].status is Status.FAIL, missing["vm.disk"].summary


async def test_the_overlay_without_its_backing_file_fails_with_remediation(
    sim: SimNode, sources: CheckSources
) -> None:
    dom = sim.spec.with_fault(Fault.MISSING_BACKING)
    assert dom.backing is not None
    results = _by_id(await _diag(sources, TargetKind.VM, dom.name))
    disk = results["vm.disk"]
    assert disk.status is Status.FAIL, _summaries(list(results.values()))
    assert disk.summary == f"vda: backing file (depth 1) {dom.backing} is missing"
    assert disk.evidence["broken"] == str(dom.backing)
    assert disk.evidence["chain"] == f"{dom.disk},{dom.backing}"
    assert [step.command for step in disk.remediation] == [
        f"ls -l {dom.backing}",
        f"qemu-img info --backing-chain -U {dom.disk}",
    ]
    assert all(step.description for step in disk.remediation)
    # The domain itself is only shut off; its QEMU log says why it cannot start.
    assert results["vm.domain"].status is Status.WARN
    assert "Could not open backing file" in results["vm.events"].summary


@needs_network
async def test_network_finds_the_tap_off_its_bridge(sim: SimNode, sources: CheckSources) -> None:
    detached = sim.plan.detached_tap
    results = _by_id(await _diag(sources, TargetKind.NETWORK, sim.plan.bridge))
    text = _summaries(list(results.values()))
    assert results["network.bridge"].status is not Status.FAIL, text
    members = results["network.members"]
    assert members.status is Status.FAIL, text
    assert f"{detached.name} of {detached.domain}" in members.summary
    attached = sorted(t.name for t in sim.plan.taps if t.attached)
    assert members.evidence["members"] == ",".join(attached)
    assert results["network.stp"].evidence["stp_enabled"] == "true"

    vm = _by_id(await _diag(sources, TargetKind.VM, detached.domain))
    assert vm["vm.interface"].status is Status.FAIL
    assert "not in virbr0" in vm["vm.interface"].summary
    other = next(t for t in sim.plan.taps if t.attached)
    ok = _by_id(await _diag(sources, TargetKind.VM, other.domain))
    assert ok["vm.interface"].status is Status.OK, ok["vm.interface"].summary


@needs_container
async def test_container_has_one_closed_port(sim: SimNode, sources: CheckSources) -> None:
    container = sim.plan.container
    results = await _diag(sources, TargetKind.CONTAINER, container.id)
    by_id = _by_id(results)
    text = _summaries(results)
    assert by_id["container.locate"].status is Status.OK, text
    assert by_id["container.process"].status is Status.OK, text
    assert by_id["container.namespaces"].status is Status.OK, text
    ports = {r.status for r in results if r.check_id == "container.port"}
    assert ports == {Status.OK, Status.FAIL}, text
    closed = [r for r in results if r.check_id == "container.port" and r.status is Status.FAIL]
    assert [str(p) in closed[0].summary for p in container.closed_ports] == [True], text


def test_every_stand_in_is_scoped_to_its_node(sim: SimNode) -> None:
    root = str(sim.paths.host_root.resolve())
    for rec in sim.records:
        proc = psutil.Process(rec.pid)
        assert os.getpgid(rec.pid) == rec.pid  # own group: down signals the group
        # No NOVAOPS_NODE: it names a node, not a cluster (see simhost's docstring).
        assert "NOVAOPS_NODE" not in proc.environ()
        if rec.role is ProcessRole.STANDIN:
            cmdline = " ".join(proc.cmdline())
            assert f"guest={rec.name}," in cmdline and root in cmdline
    pid_dir = host_path(sim.paths.host_root, sim.spec.domains[0].pid_file).parent
    assert sorted(p.stem for p in pid_dir.glob("*.pid")) == sorted(
        s.guest for s in sim.plan.standins
    )


# -- the fixes fix them, and down leaves nothing ---------------------------------------------


def _outcomes(steps: list[Step]) -> list[str]:
    return [step.outcome.value for step in steps]


async def test_recoveries_fix_the_faults_and_teardown_leaves_nothing(tmp_path: Path) -> None:
    node = _bring_up(tmp_path)
    try:
        sources = _sources(node)
        connection = sources.domains
        assert isinstance(connection, LibvirtDomainSource)
        try:
            control = ConnectionDomainControl(connection)
            catalogue = RecoveryCatalogue(
                sources.root,
                control,
                ChecksFinders(sources, control),
                links=NetlinkLinks(node.netns) if node.netns else None,
                registry=CollectorRegistry(),
            )
            orphan = node.pid(node.plan.orphan.guest)
            steps = [s async for s in catalogue.run("terminate-orphans", grace=1.0)]
            assert _outcomes(steps) == ["done"], steps
            assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == "zombie"
            steps = [s async for s in catalogue.run("remove-stale-locks")]
            assert _outcomes(steps) == ["done"], steps
            assert not host_path(node.paths.host_root, node.plan.stale_lock).exists()
            health = _by_id(await run_health_checks(sources))
            for check in ("host.orphans", "host.locks", "host.taps"):
                assert health[check].status is Status.OK, health[check].summary
            if node.netns is not None:
                steps = [s async for s in catalogue.run("repair-network", node.plan.bridge)]
                assert "done" in _outcomes(steps), steps
                network = _by_id(await _diag(sources, TargetKind.NETWORK, node.plan.bridge))
                members = network["network.members"]
                assert members.status is Status.OK, members.summary
        finally:
            await connection.close()
        # A stand-in that crashed before down: down still cleans everything up.
        victim = node.records[0]
        os.kill(victim.pid, 9)
    finally:
        _tear_down(node)
    assert _leftovers(node) == []
    # Idempotent: a second teardown finds nothing to do and does not fail.
    _tear_down(node)
