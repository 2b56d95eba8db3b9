"""LibvirtConnection on the libvirt test driver: uptimes from a real stand-in process
behind a pid file under a tmp host root, and lifecycle events pushed by libvirt."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from novaops.executor.checks.events import DomainEvent, EventRing
from novaops.executor.domain_events import watch_domain_states
from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import PAUSED, RUNNING, SHUTOFF, LibvirtConnection

pytest.importorskip("libvirt")
pytestmark = pytest.mark.timeout(60)

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"


def _domain(name: str, runstate: int | None = None) -> str:
    state = f"<test:runstate>{runstate}</test:runstate>" if runstate is not None else ""
    return (
        f"<domain type='test' xmlns:test='{TEST_NS}'><name>{name}</name>"
        f"<memory>262144</memory><vcpu>1</vcpu><os><type>hvm</type></os>{state}</domain>"
    )


@pytest.fixture
def node_xml(tmp_path: Path) -> Path:
    path = tmp_path / "node.xml"
    path.write_text(
        "<node>"
        + _domain("web-1")
        + _domain("web-2")
        + _domain("old-1", SHUTOFF)
        + _domain("db-1", PAUSED)
        + "</node>"
    )
    return path


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in QEMU for web-1, at least a second old, its pid in libvirt's pid file;
    old-1 (shut off) has a pid file too, left behind, naming the same live process."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-name", "guest=web-1"],
        stdin=subprocess.DEVNULL,
    )
    try:
        pid_dir = tmp_path / "root/run/libvirt/qemu"
        pid_dir.mkdir(parents=True)
        (pid_dir / "web-1.pid").write_text(f"{proc.pid}\n")
        (pid_dir / "old-1.pid").write_text(f"{proc.pid}\n")
        (pid_dir / "db-1.pid").write_text("not a pid\n")
        started = psutil.Process(proc.pid).create_time()
        time.sleep(max(started + 1.2 - time.time(), 0))
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
async def connection(node_xml: Path, tmp_path: Path) -> AsyncIterator[LibvirtConnection]:
    conn = LibvirtConnection(f"test://{node_xml}", host_root=HostRoot(tmp_path / "root"))
    try:
        yield conn
    finally:
        await conn.close()


async def test_uptime_comes_from_the_pid_file_process(
    connection: LibvirtConnection, standin: subprocess.Popen[bytes]
) -> None:
    before = time.time() - psutil.Process(standin.pid).create_time()
    records = {r.name: r for r in await connection.list_domains()}
    after = time.time() - psutil.Process(standin.pid).create_time()
    web = records["web-1"]
    assert web.state == RUNNING
    assert web.uptime_seconds >= 1
    assert int(before) <= web.uptime_seconds <= int(after) + 1
    assert records["web-2"].uptime_seconds == 0  # running, but no pid file
    assert records["old-1"].state == SHUTOFF
    assert records["old-1"].uptime_seconds == 0  # shut off: a left-over pid file is no uptime
    assert records["db-1"].uptime_seconds == 0  # paused, unparsable pid file


async def test_no_host_root_means_no_uptime(
    node_xml: Path, standin: subprocess.Popen[bytes]
) -> None:
    conn = LibvirtConnection(f"test://{node_xml}")
    try:
        assert {r.uptime_seconds for r in await conn.list_domains()} == {0}
    finally:
        await conn.close()


class SignallingRing(EventRing):
    """An EventRing that tells the test each time something is recorded (on the loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def record(
        self, domain: str, event: str, detail: str = "", *, at: float | None = None
    ) -> DomainEvent:
        recorded = super().record(domain, event, detail, at=at)
        self.changed.set()
        return recorded


async def _wait_for(ring: SignallingRing, count: int) -> None:
    async with asyncio.timeout(10):
        while len(ring) < count:
            ring.changed.clear()
            await ring.changed.wait()


async def test_suspend_and_resume_on_the_own_connection_are_pushed(
    connection: LibvirtConnection,
) -> None:
    ring = SignallingRing()
    stop = asyncio.Event()
    # A poll interval far beyond the test: what lands in the ring was pushed.
    watch = asyncio.create_task(watch_domain_states(connection, ring, stop, interval=3600))
    try:
        await asyncio.sleep(0.2)  # the first (silent) poll has read every state
        await connection._call(lambda conn: conn.lookupByName("web-1").suspend())
        await connection._call(lambda conn: conn.lookupByName("web-1").resume())
        await connection._call(lambda conn: conn.lookupByName("web-2").destroy())
        await _wait_for(ring, 3)
        got = [(e.domain, e.event, e.detail) for e in ring.recent()]
        assert got == [
            ("web-1", "suspended", "paused"),
            ("web-1", "resumed", "unpaused"),
            ("web-2", "stopped", "destroyed"),
        ]
        assert not any(e.alarming for e in ring.recent())
    finally:
        stop.set()
        await asyncio.wait_for(watch, 10)


async def test_pushed_events_survive_a_reconnect_and_the_poll_adds_no_duplicates(
    connection: LibvirtConnection,
) -> None:
    ring = SignallingRing()
    stop = asyncio.Event()
    watch = asyncio.create_task(watch_domain_states(connection, ring, stop, interval=0.05))
    try:
        await asyncio.sleep(0.2)

        def reopen(_stale: object) -> None:
            with connection._lock:
                connection._close_locked()
            connection._connection()

        # A fresh test-driver connection is a fresh host: web-1 runs again there.
        await connection._call(reopen)
        await asyncio.sleep(0.2)
        await connection._call(lambda conn: conn.lookupByName("web-1").suspend())
        await _wait_for(ring, 1)
        await asyncio.sleep(0.3)  # several polls: none repeats the pushed suspension
        got = [(e.domain, e.event, e.detail) for e in ring.recent()]
        assert got == [("web-1", "suspended", "paused")]
    finally:
        stop.set()
        await asyncio.wait_for(watch, 10)
