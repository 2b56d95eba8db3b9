"""In-memory libvirt for tests and simulations: :class:`FakeLibvirt` implements
:class:`~novaops.executor.libvirt_access.LibvirtGateway`, ``LifecycleSource`` and
``DomainStateSource`` the way :class:`~novaops.executor.libvirt_access.LibvirtConnection`
does on libvirt-python."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from novaops.executor.libvirt_access import (
    ACTIVE_STATES,
    BLOCKED,
    CRASHED,
    PAUSED,
    RUNNING,
    DomainCounters,
    DomainNotFound,
    DomainRecord,
    DomainStates,
    HypervisorInfo,
    LibvirtUnavailable,
    LifecycleListener,
)

# What a FakeLibvirt reports about itself unless told otherwise.
DEFAULT_INFO = HypervisorInfo("9.0.0", "TEST 9.0.0")


@dataclass
class FakeDomain:
    """A domain of :class:`FakeLibvirt`; mutate it in tests to change what is seen."""

    name: str
    state: int = RUNNING
    reason: str = "unknown"
    uuid: str = "00000000-0000-0000-0000-000000000000"
    vcpus: int = 1
    memory_kib: int = 1_048_576
    persistent: bool = True
    autostart: bool = False
    uptime_seconds: int = 0
    counters: DomainCounters = field(default_factory=DomainCounters)


class FakeLibvirt:
    """In-memory :class:`LibvirtGateway`, :class:`LifecycleSource` and
    :class:`DomainStateSource`. Set ``error`` to simulate libvirt being down;
    :meth:`push_lifecycle` plays a lifecycle event (``pushes_events=False``: a
    driver without events)."""

    def __init__(
        self,
        domains: Iterable[FakeDomain] = (),
        *,
        uri: str = "test:///fake",
        info: HypervisorInfo = DEFAULT_INFO,
        error: str | None = None,
        pushes_events: bool = True,
    ) -> None:
        self.domains = {d.name: d for d in domains}
        self.info = info
        self.error = error
        self.closed = False
        self.pushes_events = pushes_events
        self.listeners: list[LifecycleListener] = []
        self._uri = uri

    @property
    def uri(self) -> str:
        return self._uri

    def _check(self) -> None:
        if self.error is not None:
            raise LibvirtUnavailable(self.error)

    async def hypervisor_info(self) -> HypervisorInfo:
        self._check()
        return self.info

    async def list_domains(self) -> list[DomainRecord]:
        self._check()
        return [
            DomainRecord(
                name=d.name,
                uuid=d.uuid,
                state=d.state,
                reason=d.reason,
                vcpus=d.vcpus,
                memory_kib=d.memory_kib,
                persistent=d.persistent,
                autostart=d.autostart,
                uptime_seconds=d.uptime_seconds if d.state in ACTIVE_STATES else 0,
            )
            for d in sorted(self.domains.values(), key=lambda d: d.name)
        ]

    async def domain_states(self) -> DomainStates:
        self._check()
        return {
            d.name: (d.state, d.reason) for d in sorted(self.domains.values(), key=lambda d: d.name)
        }

    async def add_lifecycle_listener(self, listener: LifecycleListener) -> bool:
        self.listeners.append(listener)
        return self.pushes_events and self.error is None

    def remove_lifecycle_listener(self, listener: LifecycleListener) -> None:
        with contextlib.suppress(ValueError):
            self.listeners.remove(listener)

    def push_lifecycle(self, domain: str, event: str, detail: str) -> None:
        """Call every listener, as libvirt's event thread would (from any thread)."""
        if self.pushes_events:
            for listener in list(self.listeners):
                listener(domain, event, detail)

    async def domain_counters(self, name: str) -> DomainCounters:
        self._check()
        domain = self.domains.get(name)
        if domain is None:
            raise DomainNotFound(f"Domain not found: no domain with matching name '{name}'")
        if domain.state not in (RUNNING, PAUSED, BLOCKED, CRASHED):
            return DomainCounters(memory_kib=domain.memory_kib, active=False)
        return replace(domain.counters)

    async def close(self) -> None:
        self.closed = True
