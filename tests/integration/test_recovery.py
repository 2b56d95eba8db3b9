"""The recovery catalogue against real parts: the libvirt test driver, real processes,
real files (an immutable lock) and a network namespace made by the test.

Every process and namespace a test creates is removed in its ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client import CollectorRegistry

from novaops.executor.cleanliness import ChecksFinders, HostScanner, verify_clean
from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import PAUSED, RUNNING, LibvirtConnection
from novaops.executor.recovery import (
    ConnectionDomainControl,
    NetlinkLinks,
    RecoveryCatalogue,
    Step,
)

BRIDGE = "br-rt"
TAPS = ("vtaprt1", "vtaprt2")  # one real tap, one veth end standing in for a tap

NODE_XML = f"""<node>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>db-1</name><memory>1024</memory><os><type>hvm</type></os>
    <test:runstate>6</test:runstate>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>cache-1</name><memory>1024</memory><os><type>hvm</type></os>
    <test:runstate>3</test:runstate>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>web-1</name><memory>1024</memory><os><type>hvm</type></os>
    <devices>
      <interface type='bridge'><source bridge='{BRIDGE}'/><target dev='{TAPS[0]}'/></interface>
      <interface type='bridge'><source bridge='{BRIDGE}'/><target dev='{TAPS[1]}'/></interface>
    </devices>
    <test:runstate>1</test:runstate>
  </domain>
</node>
"""

SLEEPER = """
import signal, sys, time
if sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(120)
"""


def outcomes(steps: list[Step]) -> list[str]:
    return [s.outcome.value for s in steps]


async def run(
    catalogue: RecoveryCatalogue, action: str, target: str = "", grace: float | None = None
) -> list[Step]:
    return [s async for s in catalogue.run(action, target, grace=grace)]


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "run/libvirt/qemu").mkdir(parents=True)
    (root / "run/lock").mkdir(parents=True)
    return root


@pytest.fixture
def libvirt_uri(tmp_path: Path) -> str:
    path = tmp_path / "node.xml"
    path.write_text(NODE_XML)
    return f"test://{path}"


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def start_sleeper(
    started: list[subprocess.Popen[str]],
    mode: str = "normal",
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", SLEEPER, mode, *extra_args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    started.append(proc)
    assert proc.stdout is not None
    # Signals sent before the handler is installed would test nothing.
    assert proc.stdout.readline().strip() == "ready"
    return proc.pid


def make_catalogue(
    root: Path, connection: LibvirtConnection, registry: CollectorRegistry, **kw: object
) -> RecoveryCatalogue:
    control = ConnectionDomainControl(connection)
    host = HostRoot(root)
    return RecoveryCatalogue(
        host,
        control,
        HostScanner(host, control),
        registry=registry,
        **kw,  # type: ignore[arg-type]
    )


async def test_restart_and_resume_change_the_domain_state(
    host_root: Path, libvirt_uri: str
) -> None:
    connection = LibvirtConnection(libvirt_uri)
    try:
        catalogue = make_catalogue(host_root, connection, CollectorRegistry())
        assert outcomes(await catalogue.plan("restart-domain", "db-1")) == ["planned"]
        assert outcomes(await run(catalogue, "restart-domain", "db-1")) == ["done"]
        assert outcomes(await run(catalogue, "resume-domain", "cache-1")) == ["done"]
        states = {d.name: d.state for d in await connection.list_domains()}
        assert states == {"db-1": RUNNING, "cache-1": RUNNING, "web-1": RUNNING}
        assert outcomes(await run(catalogue, "restart-domain", "db-1")) == ["skipped"]
        assert outcomes(await run(catalogue, "resume-domain", "cache-1")) == ["skipped"]

        # The test driver keeps one in-memory host per connection: a reconnect
        # re-reads the node XML, so the paused domain is back. It proves the
        # connection was really dropped and reopened.
        assert outcomes(await run(catalogue, "reconnect-libvirt")) == ["done"]
        states = {d.name: d.state for d in await connection.list_domains()}
        assert states["cache-1"] == PAUSED
    finally:
        await connection.close()


async def test_terminate_orphans_term_then_kill(
    host_root: Path, libvirt_uri: str, sleepers: list[subprocess.Popen[str]]
) -> None:
    polite = start_sleeper(sleepers)
    stubborn = start_sleeper(sleepers, "ignore-term")
    web_qemu = start_sleeper(sleepers)  # stand-in QEMU of running web-1
    stranger = start_sleeper(sleepers)  # attributed to no node
    qemu_dir = host_root / "run/libvirt/qemu"
    (qemu_dir / "db-1.pid").write_text(f"{polite}\n")  # crashed domain: orphan
    (qemu_dir / "gone-vm.pid").write_text(f"{stubborn}\n")  # unknown domain: orphan
    (qemu_dir / "web-1.pid").write_text(f"{web_qemu}\n")
    registry = CollectorRegistry()
    connection = LibvirtConnection(libvirt_uri)
    try:
        catalogue = make_catalogue(host_root, connection, registry)
        plan = await catalogue.plan("terminate-orphans")
        assert [f"pid {polite}" in plan[0].description, f"pid {stubborn}" in plan[1].description]
        assert outcomes(plan) == ["planned", "planned"]

        steps = await run(catalogue, "terminate-orphans", grace=0.5)
        assert outcomes(steps) == ["done", "done"], steps
        assert "exited on TERM" in steps[0].description
        assert "killed after grace" in steps[1].description
        by_pid = {p.pid: p for p in sleepers}
        assert by_pid[polite].wait(timeout=5) == -signal.SIGTERM
        assert by_pid[stubborn].wait(timeout=5) == -signal.SIGKILL
        assert by_pid[web_qemu].poll() is None
        assert by_pid[stranger].poll() is None
        assert outcomes(await run(catalogue, "terminate-orphans")) == ["skipped"]
        assert registry.get_sample_value("novaops_cleanup_total", {"outcome": "success"}) == 2
    finally:
        await connection.close()


def chattr(flag: str, path: Path) -> bool:
    chattr_bin = shutil.which("chattr")
    if chattr_bin is None:
        return False
    done = subprocess.run([chattr_bin, flag, str(path)], capture_output=True, timeout=10)
    return done.returncode == 0


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    assert not psutil.pid_exists(proc.pid)
    return proc.pid


async def test_stale_locks_removed_and_an_immutable_one_makes_it_partial(
    host_root: Path, libvirt_uri: str
) -> None:
    pid = dead_pid()
    removable = host_root / "run/lock/dead.lock"
    immutable = host_root / "run/lock/stuck.lock"
    live = host_root / "run/lock/live.lock"
    removable.write_text(f"{pid}\n")
    immutable.write_text(f"{pid}\n")
    live.write_text(f"{os.getpid()}\n")
    # chattr +i: unlink fails with EPERM even for root (a write-less folder would not).
    if not chattr("+i", immutable):
        pytest.skip("chattr +i is not supported on the filesystem of the test's tmp dir")
    registry = CollectorRegistry()
    connection = LibvirtConnection(libvirt_uri)
    try:
        catalogue = make_catalogue(host_root, connection, registry)
        steps = await run(catalogue, "remove-stale-locks")
        assert outcomes(steps) == ["done", "failed"]
        assert "stuck.lock" in steps[1].description
        assert "cannot remove" in steps[1].error
        assert not removable.exists() and immutable.exists() and live.exists()
        assert registry.get_sample_value("novaops_cleanup_total", {"outcome": "partial"}) == 1
        assert (
            registry.get_sample_value(
                "novaops_recovery_total", {"action": "remove-stale-locks", "outcome": "partial"}
            )
            == 1
        )
        report = await verify_clean("n1", catalogue.finders)
        assert not report.clean
        assert [c.check_id for c in report.checks if c.status == "fail"] == ["clean.stale-locks"]

        chattr("-i", immutable)
        assert outcomes(await run(catalogue, "remove-stale-locks")) == ["done"]
        assert (await verify_clean("n1", catalogue.finders)).clean
    finally:
        chattr("-i", immutable)
        await connection.close()


@pytest.fixture
def netns_name() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    from pyroute2 import IPRoute, netns

    name = f"novaops-rt-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        ipr = IPRoute(netns=name, flags=0)
        try:
            ipr.link("add", ifname=BRIDGE, kind="bridge")
            ipr.link("add", ifname=TAPS[0], kind="tuntap", mode="tap")
            ipr.link("add", ifname=TAPS[1], kind="veth", peer="vtaprt2-peer")
            # Attached and up, then detached and down: the state a bridge restart leaves.
            bridge = ipr.link_lookup(ifname=BRIDGE)[0]
            tap = ipr.link_lookup(ifname=TAPS[0])[0]
            ipr.link("set", index=tap, master=bridge)
            ipr.link("set", index=tap, master=0)
        finally:
            ipr.close()
        yield name
    finally:
        netns.remove(name)


def netns_links(name: str) -> dict[str, tuple[bool, str | None]]:
    """name -> (admin up, master's name) inside the namespace. Blocking: pyroute2's
    sync API runs its own event loop, so async tests call it through to_thread."""
    from pyroute2 import IPRoute

    ipr = IPRoute(netns=name, flags=0)
    try:
        links = ipr.get_links()
    finally:
        ipr.close()
    names = {link["index"]: link.get("ifname") for link in links}
    return {
        link.get("ifname"): (bool(link["flags"] & 1), names.get(link.get("master")))
        for link in links
    }


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


@pytest.mark.netns
async def test_repair_network_in_a_namespace(
    host_root: Path, libvirt_uri: str, netns_name: str
) -> None:
    before = await asyncio.to_thread(netns_links, netns_name)
    assert before[BRIDGE][0] is False and before[TAPS[0]] == (False, None)
    connection = LibvirtConnection(libvirt_uri)
    try:
        catalogue = make_catalogue(
            host_root, connection, CollectorRegistry(), links=NetlinkLinks(netns_name)
        )
        plan = await catalogue.plan("repair-network", BRIDGE)
        assert outcomes(plan) == ["planned"] * 5
        assert await asyncio.to_thread(netns_links, netns_name) == before

        assert outcomes(await run(catalogue, "repair-network", BRIDGE)) == ["done"] * 5
        after = await asyncio.to_thread(netns_links, netns_name)
        assert after[BRIDGE][0] is True
        for tap in TAPS:
            assert after[tap] == (True, BRIDGE)
        assert set(outcomes(await run(catalogue, "repair-network", BRIDGE))) == {"skipped"}
    finally:
        await connection.close()


async def test_netlink_never_creates_a_missing_namespace(host_root: Path, libvirt_uri: str) -> None:
    name = f"novaops-absent-{uuid.uuid4().hex[:8]}"
    connection = LibvirtConnection(libvirt_uri)
    try:
        catalogue = make_catalogue(
            host_root, connection, CollectorRegistry(), links=NetlinkLinks(name)
        )
        steps = await run(catalogue, "repair-network", BRIDGE)
        assert outcomes(steps) == ["failed"] and "does not exist" in steps[0].error
        assert not netns_exists(name)
    finally:
        await connection.close()


async def test_checks_finders_drive_recovery(
    host_root: Path, libvirt_uri: str, sleepers: list[subprocess.Popen[str]]
) -> None:
    from novaops.executor.checks.domains import LibvirtDomainSource
    from novaops.executor.checks.sources import CheckSources

    # A dev-cluster style stand-in: QEMU-like by its -name argument, this node's by
    # its NOVAOPS_NODE marker, and for a domain libvirt does not run.
    pid = start_sleeper(
        sleepers, "normal", ("-name", "guest=gone-vm"), {**os.environ, "NOVAOPS_NODE": "n-checks"}
    )
    # One connection for checks and recovery, as in the executor.
    connection = LibvirtDomainSource(libvirt_uri)
    try:
        control = ConnectionDomainControl(connection)
        host = HostRoot(host_root)
        finders = ChecksFinders(CheckSources("n-checks", host, connection), control)
        catalogue = RecoveryCatalogue(host, control, finders, registry=CollectorRegistry())
        assert [o.pid for o in await finders.orphans()] == [pid]
        steps = await run(catalogue, "terminate-orphans", grace=0.5)
        assert outcomes(steps) == ["done"]
        assert sleepers[-1].wait(timeout=5) == -signal.SIGTERM
        assert (await verify_clean("n-checks", finders)).clean
    finally:
        await connection.close()


# -- signalling: through a pidfd, or by pid (degraded) ----------------------------------


def test_signals_go_through_a_pidfd_when_the_kernel_has_them(
    sleepers: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from novaops.executor import cleanliness

    if not cleanliness.pidfd_signalling_available():
        pytest.skip("this kernel or Python has no pidfd_open/pidfd_send_signal")
    sent: list[tuple[int, int]] = []
    real_send = signal.pidfd_send_signal

    def recording_send(fd: int, sig: int) -> None:
        sent.append((fd, sig))
        real_send(fd, sig)

    monkeypatch.setattr(signal, "pidfd_send_signal", recording_send)
    degraded: list[str] = []
    table = cleanliness.PsutilProcessTable(count_degraded=degraded.append)
    assert table.use_pidfd
    pid = start_sleeper(sleepers)
    info = table.get(pid)
    assert info is not None
    # Another start time is another process: nothing is sent.
    assert table.signal(pid, info.create_time + 1.0, signal.SIGTERM) is False
    assert sent == []
    assert table.signal(pid, info.create_time, signal.SIGTERM) is True
    assert [sig for _, sig in sent] == [signal.SIGTERM]
    assert sleepers[-1].wait(timeout=5) == -signal.SIGTERM
    assert table.signal(pid, info.create_time, signal.SIGKILL) is False  # gone
    assert degraded == []


def test_without_pidfd_signals_go_by_pid_and_count_as_degraded(
    sleepers: list[subprocess.Popen[str]],
) -> None:
    from prometheus_client import REGISTRY

    from novaops.executor.cleanliness import PsutilProcessTable

    def degraded_total() -> float:
        value = REGISTRY.get_sample_value(
            "novaops_control_degraded_total", {"control": "pidfd-signal"}
        )
        return value or 0.0

    before = degraded_total()
    table = PsutilProcessTable(use_pidfd=False)  # forced fallback, the real counter
    pid = start_sleeper(sleepers)
    info = table.get(pid)
    assert info is not None
    assert table.signal(pid, info.create_time + 1.0, signal.SIGTERM) is False
    assert table.signal(pid, info.create_time, signal.SIGTERM) is True
    assert sleepers[-1].wait(timeout=5) == -signal.SIGTERM
    assert degraded_total() == before + 1  # per signal sent the degraded way
