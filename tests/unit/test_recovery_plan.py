"""Recovery catalogue and clean baseline against fakes: plans, idempotence, outcomes.

Fakes: an in-memory libvirt, process table, netlink and clock; the finders are the
real HostScanner over a tmp host root, so plan and verify-clean see the same files.
"""

from __future__ import annotations

import datetime as dt
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from novaops.executor.cleanliness import (
    HostScanner,
    ProcessInfo,
    check_to_proto,
    parse_pid_file,
    qemu_guest_name,
    scope_domain_name,
    verify_clean,
)
from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import (
    CRASHED,
    PAUSED,
    RUNNING,
    SHUTOFF,
    DomainNotFound,
    DomainRecord,
    LibvirtUnavailable,
)
from novaops.executor.recovery import (
    CATALOGUE,
    ActionOutcome,
    LinkState,
    Outcome,
    RecoveryCatalogue,
    Step,
    TargetNotAccepted,
    TargetRequired,
    UnknownAction,
    action_outcome,
)
from novaops.executor.recovery.catalogue import DomainOp, decide_restart, decide_resume
from novaops.v1 import common_pb2

# -- fakes -------------------------------------------------------------------------------


def domain_xml(name: str, taps: dict[str, str]) -> str:
    interfaces = "".join(
        f"<interface type='bridge'><source bridge='{bridge}'/><target dev='{tap}'/></interface>"
        for tap, bridge in taps.items()
    )
    return f"<domain type='test'><name>{name}</name><devices>{interfaces}</devices></domain>"


@dataclass
class FakeDomain:
    state: int
    taps: dict[str, str] = field(default_factory=dict)


class FakeControl:
    def __init__(self, domains: dict[str, FakeDomain]) -> None:
        self.domains = domains
        self.error: str | None = None
        self.calls: list[str] = []

    @property
    def uri(self) -> str:
        return "test:///fake"

    def _check(self) -> None:
        if self.error:
            raise LibvirtUnavailable(self.error)

    async def list_domains(self) -> list[DomainRecord]:
        self._check()
        return [
            DomainRecord(name, "uuid", d.state, "unknown", 1, 1024, True, False)
            for name, d in sorted(self.domains.items())
        ]

    async def domain_xml(self, name: str) -> str:
        self._check()
        if name not in self.domains:
            raise DomainNotFound(name)
        return domain_xml(name, self.domains[name].taps)

    async def start_domain(self, name: str) -> None:
        self._check()
        self.calls.append(f"start {name}")
        self.domains[name].state = RUNNING

    async def resume_domain(self, name: str) -> None:
        self._check()
        self.calls.append(f"resume {name}")
        self.domains[name].state = RUNNING

    async def reconnect(self) -> None:
        self.calls.append("reconnect")
        self._check()


class FakeProcesses:
    """Processes die on TERM unless listed in ignores_term; on KILL unless unkillable."""

    def __init__(self) -> None:
        self.table: dict[int, ProcessInfo] = {}
        self.ignores_term: set[int] = set()
        self.unkillable: set[int] = set()
        self.signals: list[tuple[int, int]] = []

    def add(self, pid: int, name: str = "qemu-system-x86_64", created: float = 1000.0) -> None:
        self.table[pid] = ProcessInfo(pid, created, name)

    def get(self, pid: int) -> ProcessInfo | None:
        return self.table.get(pid)

    def qemu_processes(self) -> list[ProcessInfo]:
        return [p for p in self.table.values() if p.name.startswith("qemu")]

    def signal(self, pid: int, create_time: float, sig: int) -> bool:
        info = self.table.get(pid)
        if info is None or info.create_time != create_time:
            return False
        self.signals.append((pid, sig))
        survives = self.ignores_term if sig == signal.SIGTERM else self.unkillable
        if pid not in survives:
            del self.table[pid]
        return True


class FakeLinks:
    def __init__(self, links: list[LinkState]) -> None:
        self.state = {link.name: link for link in links}
        self.changes: list[str] = []

    async def links(self) -> dict[str, LinkState]:
        return dict(self.state)

    async def set_master(self, device: str, bridge: str) -> None:
        self.changes.append(f"master {device} {bridge}")
        link = self.state[device]
        self.state[device] = LinkState(
            link.name, link.index, link.kind, link.up, self.state[bridge].index
        )

    async def set_up(self, device: str) -> None:
        self.changes.append(f"up {device}")
        link = self.state[device]
        self.state[device] = LinkState(link.name, link.index, link.kind, True, link.master)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept = 0.0

    def now(self) -> dt.datetime:
        return dt.datetime(2024, 6, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.slept += seconds


@dataclass
class Node:
    root: Path
    libvirt: FakeControl
    processes: FakeProcesses
    clock: FakeClock
    registry: CollectorRegistry
    catalogue: RecoveryCatalogue
    scanner: HostScanner

    def write(self, host_path: str, text: str) -> Path:
        path = self.root / host_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def count(self, action: str, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "novaops_recovery_total", {"action": action, "outcome": outcome}
        )
        return value or 0.0

    def cleanups(self, outcome: str) -> float:
        return self.registry.get_sample_value("novaops_cleanup_total", {"outcome": outcome}) or 0.0


def make_node(tmp_path: Path, links: FakeLinks | None = None) -> Node:
    libvirt = FakeControl(
        {
            "web-1": FakeDomain(RUNNING, {"vtap1": "br0"}),
            "db-1": FakeDomain(CRASHED, {"vtap2": "br0"}),
            "cache-1": FakeDomain(PAUSED, {"vtap3": "br0", "vtap9": "br-other"}),
            "build-1": FakeDomain(SHUTOFF),
        }
    )
    processes = FakeProcesses()
    clock = FakeClock()
    registry = CollectorRegistry()
    root = tmp_path / "root"
    root.mkdir(parents=True)
    host_root = HostRoot(root)
    scanner = HostScanner(host_root, libvirt, processes)
    catalogue = RecoveryCatalogue(
        host_root,
        libvirt,
        scanner,
        links=links,
        processes=processes,
        clock=clock,
        registry=registry,
        default_grace=2.0,
    )
    return Node(root, libvirt, processes, clock, registry, catalogue, scanner)


async def run(node: Node, action: str, target: str = "", **kw: object) -> list[Step]:
    return [s async for s in node.catalogue.run(action, target, **kw)]  # type: ignore[arg-type]


def outcomes(steps: list[Step]) -> list[str]:
    return [s.outcome.value for s in steps]


# -- validation --------------------------------------------------------------------------


def test_unknown_action_lists_the_catalogue(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with pytest.raises(UnknownAction) as err:
        node.catalogue.run("rm-rf", "")
    for action in CATALOGUE:
        assert action in str(err.value)


def test_target_rules_are_checked_before_anything_runs(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with pytest.raises(TargetRequired, match="domain name"):
        node.catalogue.run("restart-domain", "")
    with pytest.raises(TargetNotAccepted):
        node.catalogue.run("remove-stale-locks", "/etc/passwd")
    assert node.libvirt.calls == []


# -- pure decisions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "op"),
    [
        (RUNNING, DomainOp.NONE),
        (SHUTOFF, DomainOp.START),
        (CRASHED, DomainOp.DESTROY_AND_START),
        (PAUSED, DomainOp.REFUSE),
    ],
)
def test_decide_restart(state: int, op: DomainOp) -> None:
    assert decide_restart(state)[0] is op


@pytest.mark.parametrize(
    ("state", "op"),
    [(PAUSED, DomainOp.RESUME), (RUNNING, DomainOp.NONE), (CRASHED, DomainOp.REFUSE)],
)
def test_decide_resume(state: int, op: DomainOp) -> None:
    assert decide_resume(state)[0] is op


def test_action_outcome() -> None:
    at = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    done = Step("a", "x", Outcome.DONE, at)
    item_failed = Step("a", "x", Outcome.FAILED, at, "e")
    fatal = Step("a", "x", Outcome.FAILED, at, "e", fatal=True)
    assert action_outcome([done]) is ActionOutcome.SUCCESS
    assert action_outcome([done, item_failed]) is ActionOutcome.PARTIAL
    assert action_outcome([item_failed]) is ActionOutcome.PARTIAL
    assert action_outcome([fatal]) is ActionOutcome.FAILURE


def test_parsers() -> None:
    assert parse_pid_file("4242\n") == 4242
    assert parse_pid_file("      77\n") == 77
    assert parse_pid_file("") is None
    assert parse_pid_file("not-a-pid") is None
    assert qemu_guest_name(["qemu", "-name", "guest=web-1,debug-threads=on"]) == "web-1"
    assert qemu_guest_name(["qemu", "-m", "1024"]) is None
    assert scope_domain_name("machine-qemu\\x2d3\\x2dweb\\x2d1.scope") == "web-1"
    assert scope_domain_name("session-1.scope") is None


# -- domain actions ----------------------------------------------------------------------


async def test_restart_crashed_domain_plan_then_run_then_idempotent(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    plan = await node.catalogue.plan("restart-domain", "db-1")
    assert outcomes(plan) == ["planned"]
    assert "destroy the crashed domain and start it" in plan[0].description
    assert node.libvirt.domains["db-1"].state == CRASHED  # a plan changes nothing
    assert node.count("restart-domain", "success") == 0  # nor is it counted

    assert outcomes(await run(node, "restart-domain", "db-1")) == ["done"]
    assert node.libvirt.domains["db-1"].state == RUNNING
    second = await run(node, "restart-domain", "db-1")
    assert outcomes(second) == ["skipped"]
    assert "already running" in second[0].description
    assert node.libvirt.calls == ["start db-1"]
    assert node.count("restart-domain", "success") == 2


async def test_restart_refuses_a_paused_domain_and_names_the_right_action(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    steps = await run(node, "restart-domain", "cache-1")
    assert outcomes(steps) == ["failed"]
    assert "resume-domain" in steps[0].error
    assert node.count("restart-domain", "failure") == 1


async def test_resume_paused_domain_is_idempotent(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    assert outcomes(await node.catalogue.plan("resume-domain", "cache-1")) == ["planned"]
    assert outcomes(await run(node, "resume-domain", "cache-1")) == ["done"]
    assert outcomes(await run(node, "resume-domain", "cache-1")) == ["skipped"]
    assert node.libvirt.calls == ["resume cache-1"]


async def test_missing_domain_and_unreachable_libvirt_fail(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    steps = await run(node, "resume-domain", "nope")
    assert outcomes(steps) == ["failed"] and "nope" in steps[0].error
    node.libvirt.error = "cannot connect to libvirt"
    steps = await run(node, "restart-domain", "db-1")
    assert outcomes(steps) == ["failed"] and "cannot connect" in steps[0].error
    assert node.count("restart-domain", "failure") == 1


async def test_reconnect_libvirt(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    assert outcomes(await node.catalogue.plan("reconnect-libvirt")) == ["planned"]
    assert node.libvirt.calls == []
    assert outcomes(await run(node, "reconnect-libvirt")) == ["done"]
    node.libvirt.error = "libvirtd is down"
    assert outcomes(await run(node, "reconnect-libvirt")) == ["failed"]


# -- stale locks -------------------------------------------------------------------------


async def test_remove_stale_locks(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.processes.add(500, "libvirtd")
    dead = node.write("/run/lock/dead.lock", "4242\n")
    live = node.write("/run/lock/live.lock", "500\n")
    junk = node.write("/run/lock/junk.lock", "no pid here\n")
    qemu_pid = node.write("/run/libvirt/qemu/db-1.pid", "4343")
    other = node.write("/etc/keep.lock", "4242\n")  # not a lock location

    plan = await node.catalogue.plan("remove-stale-locks")
    assert outcomes(plan) == ["planned", "planned"]
    assert "/run/libvirt/qemu/db-1.pid" in plan[0].description
    assert "/run/lock/dead.lock" in plan[1].description
    assert dead.exists() and qemu_pid.exists()

    assert outcomes(await run(node, "remove-stale-locks")) == ["done", "done"]
    assert not dead.exists() and not qemu_pid.exists()
    assert live.exists() and junk.exists() and other.exists()
    assert outcomes(await run(node, "remove-stale-locks")) == ["skipped"]
    assert node.cleanups("success") == 2


async def test_lock_owned_again_before_removal_is_kept(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    lock = node.write("/run/lock/x.lock", "4242\n")
    locks = await node.scanner.stale_locks()
    node.processes.add(4242, "restarted-owner")
    assert node.catalogue._remove_lock(locks[0]) is False
    assert lock.exists()


# -- orphans -----------------------------------------------------------------------------


async def test_terminate_orphans_term_then_kill_after_grace(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.processes.add(101)  # QEMU of crashed db-1: an orphan
    node.processes.add(102)  # QEMU of a domain libvirt no longer knows; ignores TERM
    node.processes.add(103)  # QEMU of running web-1: not an orphan
    node.processes.add(104)  # a QEMU no pid file attributes to this node
    node.processes.ignores_term.add(102)
    node.write("/run/libvirt/qemu/db-1.pid", "101\n")
    node.write("/run/libvirt/qemu/ghost.pid", "102\n")
    node.write("/run/libvirt/qemu/web-1.pid", "103\n")

    plan = await node.catalogue.plan("terminate-orphans")
    assert outcomes(plan) == ["planned", "planned"]
    assert "pid 101" in plan[0].description and "KILL after 2s" in plan[0].description
    assert node.processes.signals == []

    steps = await run(node, "terminate-orphans")
    assert outcomes(steps) == ["done", "done"]
    assert "exited on TERM" in steps[0].description
    assert "killed after grace" in steps[1].description
    assert node.processes.signals == [
        (101, signal.SIGTERM),
        (102, signal.SIGTERM),
        (102, signal.SIGKILL),
    ]
    assert node.clock.slept == pytest.approx(2.0)
    assert set(node.processes.table) == {103, 104}
    assert outcomes(await run(node, "terminate-orphans")) == ["skipped"]


async def test_unkillable_orphan_makes_the_cleanup_partial(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.processes.add(101)
    node.processes.add(102)
    node.processes.ignores_term.add(102)
    node.processes.unkillable.add(102)
    node.write("/run/libvirt/qemu/db-1.pid", "101\n")
    node.write("/run/libvirt/qemu/ghost.pid", "102\n")
    steps = await run(node, "terminate-orphans", grace=0.5)
    assert outcomes(steps) == ["done", "failed"]
    assert "after KILL" in steps[1].error
    assert node.count("terminate-orphans", "partial") == 1
    assert node.cleanups("partial") == 1


async def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.processes.add(101, created=1000.0)
    node.write("/run/libvirt/qemu/db-1.pid", "101\n")
    orphans = await node.scanner.orphans()
    node.processes.add(101, name="sshd", created=2000.0)  # pid recycled
    assert node.processes.signal(101, orphans[0].create_time, signal.SIGTERM) is False
    assert 101 in node.processes.table


async def test_process_table_scan_only_on_a_real_host(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.processes.table[200] = ProcessInfo(
        200, 1.0, "qemu-system-x86_64", ("qemu-system-x86_64", "-name", "guest=ghost")
    )
    assert await node.scanner.orphans() == []  # simulated host root: no attribution
    scanner = HostScanner(
        HostRoot(node.root), node.libvirt, node.processes, scan_process_table=True
    )
    assert [o.pid for o in await scanner.orphans()] == [200]


# -- network -----------------------------------------------------------------------------


def br0_links() -> FakeLinks:
    return FakeLinks(
        [
            LinkState("br0", 10, "bridge", up=False, master=None),
            LinkState("vtap1", 11, "tun", up=False, master=None),
            LinkState("vtap3", 13, "tun", up=True, master=10),
            LinkState("vtap2", 12, "tun", up=False, master=None),  # crashed db-1: not touched
        ]
    )


async def test_repair_network_plan_run_and_idempotence(tmp_path: Path) -> None:
    links = br0_links()
    node = make_node(tmp_path, links)
    plan = await node.catalogue.plan("repair-network", "br0")
    assert [(s.description, s.outcome.value) for s in plan] == [
        ("bring bridge br0 up", "planned"),
        ("attach tap vtap3 of domain cache-1 to bridge br0", "skipped"),
        ("bring tap vtap3 up", "skipped"),
        ("attach tap vtap1 of domain web-1 to bridge br0", "planned"),
        ("bring tap vtap1 up", "planned"),
    ]
    assert links.changes == []
    assert outcomes(await run(node, "repair-network", "br0")) == [
        "done",
        "skipped",
        "skipped",
        "done",
        "done",
    ]
    assert links.changes == ["up br0", "master vtap1 br0", "up vtap1"]
    assert set(outcomes(await run(node, "repair-network", "br0"))) == {"skipped"}
    assert links.state["vtap2"].master is None


async def test_repair_network_missing_tap_is_partial(tmp_path: Path) -> None:
    links = br0_links()
    del links.state["vtap1"]
    node = make_node(tmp_path, links)
    steps = await run(node, "repair-network", "br0")
    assert "failed" in outcomes(steps)
    assert "restart the domain" in next(s.error for s in steps if s.outcome is Outcome.FAILED)
    assert node.count("repair-network", "partial") == 1


async def test_repair_network_without_netlink_or_bridge_fails(tmp_path: Path) -> None:
    node = make_node(tmp_path, links=None)
    steps = await run(node, "repair-network", "br0")
    assert outcomes(steps) == ["failed"] and "simulated" in steps[0].error
    node = make_node(tmp_path / "b", br0_links())
    steps = await run(node, "repair-network", "br-missing")
    assert outcomes(steps) == ["failed"] and "does not exist" in steps[0].error
    steps = await run(node, "repair-network", "vtap1")
    assert outcomes(steps) == ["failed"] and "not a bridge" in steps[0].error


# -- verify-clean ------------------------------------------------------------------------


async def test_verify_clean_reports_each_leftover_then_clean(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    report = await verify_clean("n1", node.scanner)
    assert report.clean, report.checks

    node.processes.add(101)
    node.write("/run/libvirt/qemu/db-1.pid", "101\n")
    node.write("/run/lock/dead.lock", "4242\n")
    node.write("/sys/class/net/vtap1/tun_flags", "0x1002\n")  # web-1's tap
    node.write("/sys/class/net/vtapx/tun_flags", "0x1002\n")  # nobody's tap
    node.write("/sys/class/net/tun0/tun_flags", "0x1001\n")  # a TUN (VPN): not ours
    (node.root / "sys/fs/cgroup/machine.slice/machine-qemu\\x2d1\\x2dweb\\x2d1.scope").mkdir(
        parents=True
    )
    (node.root / "sys/fs/cgroup/machine.slice/machine-qemu\\x2d2\\x2ddb\\x2d1.scope").mkdir()
    report = await verify_clean("n1", node.scanner)
    assert not report.clean
    status = {c.check_id: c.status for c in report.checks}
    assert status == {
        "clean.orphans": "fail",
        "clean.stale-locks": "fail",
        "clean.leaked-taps": "fail",
        "clean.cgroups": "fail",
    }
    by_id = {c.check_id: c for c in report.checks}
    assert "vtapx" in by_id["clean.leaked-taps"].summary
    assert "vtap1" not in by_id["clean.leaked-taps"].summary
    assert "db-1" in by_id["clean.cgroups"].summary
    assert "web-1" not in by_id["clean.cgroups"].summary
    assert by_id["clean.orphans"].remediation[0].command == (
        "novaops recover terminate-orphans --node n1"
    )

    await run(node, "terminate-orphans")
    await run(node, "remove-stale-locks")
    report = await verify_clean("n1", node.scanner)
    status = {c.check_id: c.status for c in report.checks}
    assert status["clean.orphans"] == status["clean.stale-locks"] == "ok"


async def test_verify_clean_unavailable_evidence_is_an_error_not_clean(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.libvirt.error = "libvirt down"
    report = await verify_clean("n1", node.scanner)
    assert not report.clean
    assert {c.status for c in report.checks} >= {"error"}


# -- wire conversions --------------------------------------------------------------------


async def test_steps_and_checks_convert_to_proto(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    (step,) = await node.catalogue.plan("restart-domain", "db-1")
    message = step.to_proto("n1")
    assert (message.node, message.action, message.outcome) == ("n1", "restart-domain", "planned")
    assert message.at.ToDatetime(tzinfo=dt.UTC) == node.clock.now()

    node.write("/run/lock/dead.lock", "4242\n")
    report = await verify_clean("n1", node.scanner)
    check = next(c for c in report.checks if c.check_id == "clean.stale-locks")
    result = check_to_proto("n1", check, report.observed_at, event_id="ev-1")
    assert result.status == common_pb2.CHECK_STATUS_FAIL
    assert result.remediation[0].command == "novaops recover remove-stale-locks --node n1"
    assert result.evidence["/run/lock/dead.lock"] == "owner pid 4242 is gone"
    assert result.event_id == "ev-1"
