"""LibvirtDomainSource and LibvirtConnection.domain_states on the libvirt test driver:
the cheap reads give what the full records give, and concurrent domains_with_xml
calls share one read."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from novaops.executor.checks.domains import PROCESS_STATES, TAP_STATES, LibvirtDomainSource
from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import (
    CRASHED,
    PAUSED,
    SHUTOFF,
    DomainRecord,
    DomainStateSource,
    LibvirtUnavailable,
)

libvirt = pytest.importorskip("libvirt")
pytestmark = pytest.mark.timeout(60)

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"


def _domain(name: str, runstate: int | None = None) -> str:
    state = f"<test:runstate>{runstate}</test:runstate>" if runstate is not None else ""
    return (
        f"<domain type='test' xmlns:test='{TEST_NS}'><name>{name}</name>"
        f"<memory>262144</memory><vcpu>1</vcpu><os><type>hvm</type></os>"
        f"<devices><interface type='bridge'><source bridge='br0'/>"
        f"<target dev='vtap-{name}'/></interface></devices>{state}</domain>"
    )


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[LibvirtDomainSource]:
    xml = tmp_path / "node.xml"
    xml.write_text(
        "<node>"
        + _domain("web-2")
        + _domain("web-1")
        + _domain("old-1", SHUTOFF)
        + _domain("db-1", CRASHED)
        + _domain("cache-1", PAUSED)
        + "</node>"
    )
    # The running domains' pid files name this process: list_domains has uptimes.
    pid_dir = tmp_path / "root/run/libvirt/qemu"
    pid_dir.mkdir(parents=True)
    for name in ("web-1", "web-2", "db-1", "cache-1"):
        (pid_dir / f"{name}.pid").write_text(f"{os.getpid()}\n")
    conn = LibvirtDomainSource(f"test://{xml}", host_root=HostRoot(tmp_path / "root"))
    try:
        yield conn
    finally:
        await conn.close()


async def _expected(
    source: LibvirtDomainSource, states: frozenset[int]
) -> list[tuple[DomainRecord, str]]:
    """domains_with_xml as it was: full records, then a lookup by name per domain."""
    return [
        (replace(record, uptime_seconds=0), await source.domain_xml(record.name))
        for record in await source.list_domains()
        if record.state in states
    ]


@pytest.mark.parametrize("states", [PROCESS_STATES, TAP_STATES, frozenset({SHUTOFF}), frozenset()])
async def test_domains_with_xml_gives_the_full_records_without_uptime(
    source: LibvirtDomainSource, states: frozenset[int]
) -> None:
    got = await source.domains_with_xml(states)
    assert got == await _expected(source, states)
    assert [record.name for record, _ in got] == sorted(record.name for record, _ in got)


def _gate(source: LibvirtDomainSource) -> tuple[list[frozenset[int]], threading.Event]:
    """Count the reads domains_with_xml makes; each waits for the returned event."""
    reads: list[frozenset[int]] = []
    release = threading.Event()
    real = source._read_with_xml

    def gated(states: frozenset[int], conn: Any) -> list[tuple[DomainRecord, str]]:
        reads.append(states)
        assert release.wait(10)
        return real(states, conn)

    source._read_with_xml = gated  # type: ignore[method-assign]
    return reads, release


async def test_concurrent_calls_share_one_read_and_nothing_is_cached(
    source: LibvirtDomainSource,
) -> None:
    reads, release = _gate(source)
    first = asyncio.create_task(source.domains_with_xml(PROCESS_STATES))
    second = asyncio.create_task(source.domains_with_xml(PROCESS_STATES))
    other = asyncio.create_task(source.domains_with_xml(TAP_STATES))
    await asyncio.sleep(0.1)
    release.set()
    a, b, c = await asyncio.gather(first, second, other)
    assert a == b and a is not b  # each caller gets its own list
    assert sorted(reads, key=len) == [TAP_STATES, PROCESS_STATES]  # one read per key
    assert source._xml_reads == {}
    await source.domains_with_xml(PROCESS_STATES)  # after completion: a fresh read
    assert len(reads) == 3
    assert c == await _expected(source, TAP_STATES)


async def test_a_caller_giving_up_does_not_cancel_the_read_for_the_other(
    source: LibvirtDomainSource,
) -> None:
    reads, release = _gate(source)
    patient = asyncio.create_task(source.domains_with_xml(PROCESS_STATES))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(source.domains_with_xml(PROCESS_STATES), 0.1)
    impatient = asyncio.create_task(source.domains_with_xml(PROCESS_STATES))
    await asyncio.sleep(0.05)
    impatient.cancel()
    release.set()
    assert await patient == await _expected(source, PROCESS_STATES)
    assert impatient.cancelled()
    assert len(reads) == 1


async def test_a_failed_shared_read_fails_every_caller_and_the_next_call_retries(
    source: LibvirtDomainSource,
) -> None:
    reads: list[frozenset[int]] = []
    release = threading.Event()

    def failing(states: frozenset[int], conn: Any) -> list[tuple[DomainRecord, str]]:
        reads.append(states)
        assert release.wait(10)
        raise LibvirtUnavailable("libvirt at test:///x did not answer")

    real = source._read_with_xml
    source._read_with_xml = failing  # type: ignore[method-assign]
    calls = [asyncio.create_task(source.domains_with_xml(TAP_STATES)) for _ in range(2)]
    await asyncio.sleep(0.05)
    release.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(o) for o in outcomes] == [LibvirtUnavailable, LibvirtUnavailable]
    assert len(reads) == 1
    source._read_with_xml = real  # type: ignore[method-assign]
    assert await source.domains_with_xml(TAP_STATES) == await _expected(source, TAP_STATES)


async def test_domain_states_are_the_list_domains_pairs(source: LibvirtDomainSource) -> None:
    assert isinstance(source, DomainStateSource)
    # Change some states on this connection so reasons are not all "unknown".
    await source._call(lambda conn: conn.lookupByName("web-1").suspend())
    await source._call(lambda conn: conn.lookupByName("web-2").destroy())
    expected = {r.name: (r.state, r.reason) for r in await source.list_domains()}
    assert expected["web-1"] == (PAUSED, "user")
    assert expected["web-2"] == (SHUTOFF, "destroyed")
    got = await source.domain_states()
    assert got == expected and list(got) == sorted(got)
    assert not source._no_domain_stats  # the test driver has getAllDomainStats


_LibvirtError: Any = libvirt.libvirtError


class _Unsupported(_LibvirtError):  # type: ignore[misc]
    def get_error_code(self) -> int:
        return int(libvirt.VIR_ERR_NO_SUPPORT)


class _NoDomainStats:
    """A connection whose driver lacks getAllDomainStats."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.tried = 0

    def getAllDomainStats(self, _stats: int) -> Any:
        self.tried += 1
        raise _Unsupported("this function is not supported by the connection driver")

    def listAllDomains(self, flags: int) -> Any:
        return self._conn.listAllDomains(flags)


async def test_domain_states_fall_back_to_per_domain_reads(source: LibvirtDomainSource) -> None:
    expected = {r.name: (r.state, r.reason) for r in await source.list_domains()}
    unsupported = await source._call(lambda conn: _NoDomainStats(conn))
    assert await source._call(lambda _conn: source._domain_states(unsupported)) == expected
    assert source._no_domain_stats
    assert await source._call(lambda _conn: source._domain_states(unsupported)) == expected
    assert unsupported.tried == 1  # not asked again on this connection
