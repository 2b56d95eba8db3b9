"""Everything a check reads from, injected: one :class:`CheckSources` per node.

The executor builds it once at start (node name, host root, libvirt) and
passes it to :func:`~novaops.executor.checks.runner.run_diagnose` and
:func:`~novaops.executor.checks.runner.run_health_checks`. Tests build it with
fakes or with the libvirt test driver, a temporary host root and their own
network namespace.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from novaops.executor.checks.domains import DomainSource
from novaops.executor.checks.events import EventRing
from novaops.executor.checks.links import LinkSource, links_for_node
from novaops.executor.checks.qemu_processes import ProcessScope
from novaops.executor.hostroot import HostRoot
from novaops.executor.threads import PartThreads

# Host folders whose filesystems the disk-pressure check watches.
DEFAULT_PRESSURE_PATHS = ("/var/lib/libvirt/images", "/var/log/libvirt", "/var/log")
# Name prefixes of tap devices the leaked-tap check considers. libvirt names its
# taps vnetN; simulated nodes use a per-node prefix so nodes sharing a namespace
# never call each other's taps leaked.
DEFAULT_TAP_PREFIXES = ("vnet", "tap", "macvtap")


@dataclass(frozen=True)
class ContainerLocation:
    """A container found outside runc/crun state: a libvirt-lxc domain, for example."""

    name: str
    runtime: str
    init_pid: int | None
    ports: tuple[int, ...] = ()
    running: bool = True


@dataclass(frozen=True)
class Thresholds:
    """Limits of the pressure checks, in percent used (warn below fail)."""

    disk_warn_percent: float = 85.0
    disk_fail_percent: float = 95.0
    memory_warn_percent: float = 85.0
    memory_fail_percent: float = 95.0


@dataclass(frozen=True)
class CheckTimings:
    """How long checks may take and sample, in seconds."""

    # Longest any one check (gathering + evaluation) may run before it is reported
    # as an error "timed out".
    per_check: float = 10.0
    # Window over which network counters are compared.
    counter_window: float = 1.0
    # Window over which a QEMU process's CPU use is measured.
    cpu_window: float = 0.5
    # Connect timeout per declared container port.
    connect: float = 1.0


@dataclass
class CheckSources:
    """The injected sources of one node's checks."""

    node: str
    root: HostRoot
    domains: DomainSource
    events: EventRing = field(default_factory=EventRing)
    # Named network namespace of the node's bridges and taps (None: the executor's own).
    netns: str | None = None
    links: LinkSource | None = None
    scope: ProcessScope | None = None
    lxc_containers: Callable[[], Sequence[ContainerLocation]] = lambda: ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    timings: CheckTimings = field(default_factory=CheckTimings)
    pressure_paths: tuple[str, ...] = DEFAULT_PRESSURE_PATHS
    tap_prefixes: tuple[str, ...] = DEFAULT_TAP_PREFIXES
    # Bridge members that are not domain taps and are expected (uplinks, bonds).
    bridge_uplinks: tuple[str, ...] = ()
    qemu_img: str | None = field(default_factory=lambda: shutil.which("qemu-img"))
    # Where the host parts run (novaops.executor.threads); one set per node.
    part_threads: PartThreads = field(default_factory=PartThreads)

    def __post_init__(self) -> None:
        if self.links is None:
            self.links = links_for_node(self.root, self.netns)
        if self.scope is None:
            self.scope = ProcessScope.for_node(self.node, self.root)

    @property
    def link_source(self) -> LinkSource:
        assert self.links is not None  # set in __post_init__
        return self.links

    @property
    def process_scope(self) -> ProcessScope:
        assert self.scope is not None  # set in __post_init__
        return self.scope
