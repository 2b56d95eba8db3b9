"""What the checks ask of libvirt, and pure parsers of domain and capabilities XML.

The executor's :class:`~novaops.executor.libvirt_access.LibvirtGateway` lists
domains and reads counters; the checks also need each domain's XML (disks,
interfaces) and the host capabilities. :class:`DomainSource` is that small
interface. :class:`LibvirtDomainSource` implements it on top of
:class:`~novaops.executor.libvirt_access.LibvirtConnection` (same thread pool,
same timeouts, same error translation); :class:`FakeDomainSource` is the
in-memory twin for unit tests.

What callers may rely on: every method raises
:class:`~novaops.executor.libvirt_access.LibvirtUnavailable` when libvirt does
not answer, and ``domain_xml`` raises
:class:`~novaops.executor.libvirt_access.DomainNotFound` for an unknown name.
"""

from __future__ import annotations

import asyncio
import functools
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import (
    BLOCKED,
    CRASHED,
    DEFAULT_CALL_TIMEOUT_SECONDS,
    PAUSED,
    PMSUSPENDED,
    RUNNING,
    SHUTDOWN,
    DomainNotFound,
    DomainRecord,
    HypervisorInfo,
    LibvirtConnection,
    LibvirtUnavailable,
)
from novaops.executor.threads import on_part_thread

# States in which libvirt still holds a QEMU process for the domain (a crashed
# domain with on_crash=preserve keeps its process for post-mortem).
PROCESS_STATES = frozenset({RUNNING, BLOCKED, PAUSED, SHUTDOWN, PMSUSPENDED, CRASHED})
# States in which the domain's taps must exist and sit in their bridges.
TAP_STATES = frozenset({RUNNING, BLOCKED, PAUSED})

STATE_NAMES = {
    0: "no state",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutting down",
    5: "shut off",
    6: "crashed",
    7: "pmsuspended",
}


class DomainSource(Protocol):
    """The libvirt reads the checks make."""

    @property
    def uri(self) -> str: ...

    async def hypervisor_info(self) -> HypervisorInfo: ...

    async def list_domains(self) -> list[DomainRecord]: ...

    async def domain_xml(self, name: str) -> str:
        """The domain's live XML (inactive XML when it is not running)."""
        ...

    async def capabilities_xml(self) -> str:
        """``virConnectGetCapabilities``."""
        ...

    async def domains_with_xml(self, states: frozenset[int]) -> list[tuple[DomainRecord, str]]:
        """Every domain in one of ``states`` with its XML, sorted by name, in one read
        (a domain that goes away meanwhile is left out). The records may leave
        ``uptime_seconds`` 0: callers use it for names and states."""
        ...


class LibvirtDomainSource(LibvirtConnection):
    """:class:`DomainSource` on libvirt-python, sharing LibvirtConnection's machinery.

    Meant to fold into LibvirtConnection once the gateway grows these two reads.
    """

    def __init__(
        self,
        uri: str,
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS,
        host_root: HostRoot | None = None,
    ) -> None:
        super().__init__(uri, call_timeout=call_timeout, host_root=host_root)
        # domains_with_xml reads in flight, by states: callers meanwhile share them.
        self._xml_reads: dict[frozenset[int], asyncio.Task[list[tuple[DomainRecord, str]]]] = {}

    async def domain_xml(self, name: str) -> str:
        def read(conn: Any) -> str:
            return str(conn.lookupByName(name).XMLDesc(0))

        return await self._call(read)

    async def capabilities_xml(self) -> str:
        def read(conn: Any) -> str:
            return str(conn.getCapabilities())

        return await self._call(read)

    async def domains_with_xml(self, states: frozenset[int]) -> list[tuple[DomainRecord, str]]:
        """See :meth:`DomainSource.domains_with_xml`; the records' ``uptime_seconds``
        is 0 (its callers need only the name: uptime costs a pid-file read and a
        process lookup per domain).

        Single-flight: a call while a read for the same ``states`` is in flight
        shares that read (a diagnosis and a background health run, or two
        diagnoses, on the same node) instead of starting another; nothing is
        kept once it completes. Each caller may time out or be cancelled alone:
        the shared read goes on for the others (and is itself bounded by
        ``call_timeout``). A part thread reads on its own (its loop is not shared).
        """
        read = functools.partial(self._read_with_xml, states)
        if on_part_thread():  # reads alone: the shared read lives on another loop
            return await self._call(read)
        loop = asyncio.get_running_loop()
        shared = self._xml_reads.get(states)
        if shared is None or shared.get_loop() is not loop:
            shared = loop.create_task(self._call(read))
            self._xml_reads[states] = shared
            shared.add_done_callback(functools.partial(self._xml_read_done, states))
        return list(await asyncio.shield(shared))

    def _xml_read_done(
        self, states: frozenset[int], done: asyncio.Task[list[tuple[DomainRecord, str]]]
    ) -> None:
        if self._xml_reads.get(states) is done:
            del self._xml_reads[states]
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have given up on it

    def _read_with_xml(self, states: frozenset[int], conn: Any) -> list[tuple[DomainRecord, str]]:
        # One trip to the libvirt thread for the whole list: checks that look at
        # every domain's devices (orphans, taps, bridge members) run each round.
        # A domain not in states costs its state() call only, and the XML is read
        # on the domain object in hand (no lookup by name).
        found = []
        for dom in conn.listAllDomains(0):
            try:
                state_reason = dom.state(0)
                if state_reason[0] not in states:
                    continue
                record = self._record(dom, state_reason, uptime=False)
                found.append((record, str(dom.XMLDesc(0))))
            except self._libvirt.libvirtError as exc:
                # The domain went away between listing and reading it.
                if exc.get_error_code() != self._libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return sorted(found, key=lambda item: item[0].name)


class FakeDomainSource:
    """In-memory :class:`DomainSource`. Set ``error`` to simulate libvirt being down."""

    def __init__(
        self,
        domains: Iterable[tuple[DomainRecord, str]] = (),
        *,
        capabilities: str = "<capabilities/>",
        uri: str = "test:///fake",
        error: str | None = None,
    ) -> None:
        self.domains = {record.name: (record, xml) for record, xml in domains}
        self.capabilities = capabilities
        self.error = error
        self._uri = uri

    @property
    def uri(self) -> str:
        return self._uri

    def _check(self) -> None:
        if self.error is not None:
            raise LibvirtUnavailable(self.error)

    async def hypervisor_info(self) -> HypervisorInfo:
        self._check()
        return HypervisorInfo("9.0.0", "TEST 9.0.0")

    async def list_domains(self) -> list[DomainRecord]:
        self._check()
        return [record for record, _ in sorted(self.domains.values(), key=lambda d: d[0].name)]

    async def domain_xml(self, name: str) -> str:
        self._check()
        if name not in self.domains:
            raise DomainNotFound(f"no domain with matching name '{name}'")
        return self.domains[name][1]

    async def capabilities_xml(self) -> str:
        self._check()
        return self.capabilities

    async def domains_with_xml(self, states: frozenset[int]) -> list[tuple[DomainRecord, str]]:
        self._check()
        return [
            (record, xml)
            for record, xml in sorted(self.domains.values(), key=lambda d: d[0].name)
            if record.state in states
        ]


# -- pure XML parsers ----------------------------------------------------------------------


@dataclass(frozen=True)
class DiskSpec:
    """A disk of a domain: target device, host path of its source, image format."""

    device: str
    source: str
    format: str = ""


@dataclass(frozen=True)
class InterfaceSpec:
    """An interface of a domain: its tap (target dev, "" until started) and bridge."""

    tap: str
    bridge: str
    mac: str = ""


@dataclass(frozen=True)
class DomainSpec:
    """What a domain's XML declares that the checks verify."""

    name: str
    memory_kib: int
    vcpus: int
    disks: tuple[DiskSpec, ...]
    interfaces: tuple[InterfaceSpec, ...]


@functools.lru_cache(maxsize=1024)
def parse_domain_spec(domain_xml: str) -> DomainSpec:
    """Disks with a file/block source and interfaces with a bridge, from a domain's XML.

    Cached by the XML text (the result is immutable): every health poll reads
    every domain's XML, which changes only when the domain does.

    Network-backed disks (rbd, iscsi) and cdrom slots without media are left
    out: there is no host file to verify. ``type='network'`` interfaces are kept
    only when libvirt reports the bridge they landed on (``<source bridge=...>``).
    """
    root = ET.fromstring(domain_xml)
    disks = []
    for disk in root.iterfind("./devices/disk"):
        source = disk.find("source")
        if source is None:
            continue
        path = source.get("file") or source.get("dev") or ""
        if not path:
            continue
        target = disk.find("target")
        driver = disk.find("driver")
        disks.append(
            DiskSpec(
                device=target.get("dev", "") if target is not None else "",
                source=path,
                format=driver.get("type", "") if driver is not None else "",
            )
        )
    interfaces = []
    for nic in root.iterfind("./devices/interface"):
        source = nic.find("source")
        bridge = source.get("bridge", "") if source is not None else ""
        if not bridge:
            continue
        target = nic.find("target")
        mac = nic.find("mac")
        interfaces.append(
            InterfaceSpec(
                tap=target.get("dev", "") if target is not None else "",
                bridge=bridge,
                mac=mac.get("address", "") if mac is not None else "",
            )
        )
    return DomainSpec(
        name=root.findtext("name", ""),
        memory_kib=_memory_kib(root),
        vcpus=_int(root.findtext("vcpu", "0")),
        disks=tuple(disks),
        interfaces=tuple(interfaces),
    )


_UNIT_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "m": 1024, "mib": 1024}
_UNIT_KIB |= {"g": 1024**2, "gib": 1024**2, "kb": 1000 / 1024, "mb": 1000**2 / 1024}


def _memory_kib(root: ET.Element) -> int:
    memory = root.find("memory")
    if memory is None or not (memory.text or "").strip():
        return 0
    scale = _UNIT_KIB.get(memory.get("unit", "KiB").lower(), 1)
    return int(_int(memory.text or "0") * scale)


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return 0


def parse_capabilities(capabilities_xml: str) -> tuple[str, list[str]]:
    """(host CPU arch, sorted "arch/domain-type" pairs guests can use) from capabilities."""
    host_arch, guests = _parse_capabilities(capabilities_xml)
    return host_arch, list(guests)


@functools.lru_cache(maxsize=8)
def _parse_capabilities(capabilities_xml: str) -> tuple[str, tuple[str, ...]]:
    # Cached: the capabilities document changes only with the host's libvirt/QEMU.
    root = ET.fromstring(capabilities_xml)
    host_arch = root.findtext("./host/cpu/arch", "")
    guests = set()
    for guest in root.iterfind("./guest"):
        arch = guest.find("arch")
        if arch is None:
            continue
        for domain in arch.iterfind("domain"):
            guests.add(f"{arch.get('name', '')}/{domain.get('type', '')}")
    return host_arch, tuple(sorted(guests))
