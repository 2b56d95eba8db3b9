"""The recovery catalogue: a fixed set of repair actions, never arbitrary commands.

Actions (:data:`CATALOGUE`): ``restart-domain`` and ``resume-domain`` (target: a
domain), ``repair-network`` (target: a bridge), ``remove-stale-locks``,
``terminate-orphans`` and ``reconnect-libvirt`` (no target).

What callers may rely on:

* :meth:`RecoveryCatalogue.run` validates ``action`` and ``target`` *before* it
  returns its iterator: an unknown action raises :class:`UnknownAction` (the message
  lists the catalogue), a missing or unexpected target :class:`TargetRequired` /
  :class:`TargetNotAccepted`. Nothing has happened when those are raised.
* Every action yields at least one :class:`Step`. With ``dry_run`` the steps are the
  plan (outcome ``planned``) and nothing changes; without it each step is ``done``,
  ``skipped`` (already in the wanted state) or ``failed`` (with ``error``).
* Every action is idempotent: running it again once it succeeded yields only
  ``skipped`` steps (``reconnect-libvirt`` always reconnects; that is its job).
* Failures are steps, not exceptions. A *fatal* failure (target missing, libvirt
  unreachable, evidence unavailable) ends the action; its outcome is ``failure``.
  A failure on one item of several (a lock that cannot be removed, a process that
  survives KILL, a missing tap) lets the action go on; its outcome is ``partial``.
  See :func:`action_outcome`.
* Processes are found by the injected :class:`~novaops.executor.cleanliness.HostFinders`
  only; a process they do not attribute to this node is never signalled, and a pid
  is signalled only while it is still the process that was found (start time).
* Each non-dry run counts ``novaops_recovery_total{action,outcome}``; the two cleanup
  actions also count ``novaops_cleanup_total{outcome}``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import errno
import os
import signal
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from novaops.executor.cleanliness import (
    LIVE_STATES,
    DomainSource,
    HostFinders,
    OrphanProcess,
    ProcessTable,
    PsutilProcessTable,
    StaleLock,
    cleanup_counter,
    domain_interfaces,
    parse_pid_file,
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
from novaops.executor.recovery.netlink import LinkControl, LinkState, NetlinkUnavailable
from novaops.v1 import executor_pb2

RESTART_DOMAIN = "restart-domain"
RESUME_DOMAIN = "resume-domain"
REPAIR_NETWORK = "repair-network"
REMOVE_STALE_LOCKS = "remove-stale-locks"
TERMINATE_ORPHANS = "terminate-orphans"
RECONNECT_LIBVIRT = "reconnect-libvirt"

# action -> what its target names ("" = takes none). The whole catalogue.
CATALOGUE: dict[str, str] = {
    RESTART_DOMAIN: "domain",
    RESUME_DOMAIN: "domain",
    REPAIR_NETWORK: "bridge",
    REMOVE_STALE_LOCKS: "",
    TERMINATE_ORPHANS: "",
    RECONNECT_LIBVIRT: "",
}
CLEANUP_ACTIONS = frozenset({REMOVE_STALE_LOCKS, TERMINATE_ORPHANS})

DEFAULT_GRACE_SECONDS = 10.0
# After KILL the kernel needs a moment to tear a process down (large QEMU guests
# take longer to unmap); past this the step fails rather than hanging the RPC.
KILL_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.05

_STATE_NAMES = {
    0: "no state",
    RUNNING: "running",
    2: "blocked",
    PAUSED: "paused",
    4: "shutting down",
    SHUTOFF: "shut off",
    CRASHED: "crashed",
    7: "suspended",
}


class RecoveryError(ValueError):
    """A request the catalogue refuses before doing anything (maps to INVALID_ARGUMENT)."""


class UnknownAction(RecoveryError):
    def __init__(self, action: str) -> None:
        super().__init__(
            f"unknown recovery action {action!r}; the catalogue is: {', '.join(CATALOGUE)}"
        )


class TargetRequired(RecoveryError):
    def __init__(self, action: str) -> None:
        super().__init__(f"{action} needs a target ({CATALOGUE[action]} name)")


class TargetNotAccepted(RecoveryError):
    def __init__(self, action: str, target: str) -> None:
        super().__init__(f"{action} takes no target (got {target!r})")


class Outcome(enum.StrEnum):
    PLANNED = "planned"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class ActionOutcome(enum.StrEnum):
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILURE = "failure"


@dataclass(frozen=True)
class Step:
    """One step of an action. ``fatal`` marks a failure that ended the action."""

    action: str
    description: str
    outcome: Outcome
    at: dt.datetime
    error: str = ""
    fatal: bool = False

    def to_proto(self, node: str) -> executor_pb2.RecoveryStep:
        step = executor_pb2.RecoveryStep(
            node=node,
            action=self.action,
            description=self.description,
            outcome=self.outcome.value,
            error=self.error,
            fatal=self.fatal,
        )
        step.at.FromDatetime(self.at)
        return step


def action_outcome(steps: Sequence[Step]) -> ActionOutcome:
    """success: no step failed; failure: a fatal step failed; partial: otherwise."""
    failed = [s for s in steps if s.outcome is Outcome.FAILED]
    if not failed:
        return ActionOutcome.SUCCESS
    if any(s.fatal for s in failed):
        return ActionOutcome.FAILURE
    return ActionOutcome.PARTIAL


class DomainControl(DomainSource, Protocol):
    """The libvirt operations recovery needs. Raise DomainNotFound / LibvirtUnavailable."""

    @property
    def uri(self) -> str: ...

    async def start_domain(self, name: str) -> None:
        """Start a shut-off domain; for an active crashed one, destroy it first."""
        ...

    async def resume_domain(self, name: str) -> None: ...

    async def reconnect(self) -> None:
        """Drop the connection and open a new one; raise LibvirtUnavailable if it fails."""
        ...


class Clock(Protocol):
    def now(self) -> dt.datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# -- pure decisions ----------------------------------------------------------------------


class DomainOp(enum.Enum):
    NONE = "none"  # already in the wanted state
    START = "start"
    DESTROY_AND_START = "destroy-and-start"
    RESUME = "resume"
    REFUSE = "refuse"  # the wrong action for this state


def decide_restart(state: int) -> tuple[DomainOp, str]:
    """What restart-domain does for a domain in state (a virDomainState code)."""
    name = _STATE_NAMES.get(state, f"state {state}")
    if state in (RUNNING, 2):
        return DomainOp.NONE, f"domain is already {name}"
    if state == SHUTOFF:
        return DomainOp.START, "start the shut-off domain"
    if state == CRASHED:
        # A crashed domain may still hold its resources; libvirt refuses to start
        # it until it is destroyed.
        return DomainOp.DESTROY_AND_START, "destroy the crashed domain and start it"
    if state == PAUSED:
        return DomainOp.REFUSE, "domain is paused: use resume-domain"
    return DomainOp.REFUSE, f"domain is {name}: restart-domain handles crashed or shut-off"


def decide_resume(state: int) -> tuple[DomainOp, str]:
    """What resume-domain does for a domain in state."""
    name = _STATE_NAMES.get(state, f"state {state}")
    if state == PAUSED:
        return DomainOp.RESUME, "resume the paused domain"
    if state in (RUNNING, 2):
        return DomainOp.NONE, f"domain is already {name}"
    return DomainOp.REFUSE, f"domain is {name}, not paused: use restart-domain"


@dataclass(frozen=True)
class LinkOp:
    """One netlink change network repair makes (or found unnecessary)."""

    kind: str  # "bridge-up" | "attach" | "tap-up" | "missing"
    device: str
    description: str
    needed: bool


def plan_network_repair(
    bridge: str, links: dict[str, LinkState], taps: Sequence[tuple[str, str]]
) -> list[LinkOp]:
    """Link changes that put every (domain, tap) on bridge and bring all of them up.

    ``links`` maps names to their current state; a missing tap is a "missing" op
    (libvirt creates taps when a domain starts: restart the domain). Pure.
    """
    bridge_link = links[bridge]
    ops = [LinkOp("bridge-up", bridge, f"bring bridge {bridge} up", needed=not bridge_link.up)]
    for domain, tap in taps:
        link = links.get(tap)
        if link is None:
            ops.append(LinkOp("missing", tap, f"tap {tap} of domain {domain} does not exist", True))
            continue
        ops.append(
            LinkOp(
                "attach",
                tap,
                f"attach tap {tap} of domain {domain} to bridge {bridge}",
                needed=link.master != bridge_link.index,
            )
        )
        ops.append(LinkOp("tap-up", tap, f"bring tap {tap} up", needed=not link.up))
    return ops


# -- metrics -----------------------------------------------------------------------------

_recovery_counters: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = (
    weakref.WeakKeyDictionary()
)


def recovery_counter(registry: CollectorRegistry | None = None) -> Counter:
    """``novaops_recovery_total{action,outcome}``, registered once per registry."""
    registry = registry if registry is not None else REGISTRY
    counter = _recovery_counters.get(registry)
    if counter is None:
        counter = Counter(
            "novaops_recovery_total",
            "Recovery actions run (not dry runs), by action and outcome.",
            ["action", "outcome"],
            registry=registry,
        )
        _recovery_counters[registry] = counter
    return counter


# -- the catalogue -----------------------------------------------------------------------

Emit = Callable[[str, Outcome, str, bool], Step]


class RecoveryCatalogue:
    """Plans and runs catalogue actions on one node.

    ``links`` is None when this node has no netlink to repair (a simulated node
    without its own network namespace); repair-network then fails with a step
    saying so. ``processes`` must be the table the finders read.
    """

    def __init__(
        self,
        host_root: HostRoot,
        libvirt: DomainControl,
        finders: HostFinders,
        *,
        links: LinkControl | None = None,
        processes: ProcessTable | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        default_grace: float = DEFAULT_GRACE_SECONDS,
        kill_wait: float = KILL_WAIT_SECONDS,
    ) -> None:
        self.host_root = host_root
        self.libvirt = libvirt
        self.finders = finders
        self.links = links
        self.processes = processes if processes is not None else PsutilProcessTable()
        self.clock = clock if clock is not None else SystemClock()
        self.default_grace = default_grace
        self.kill_wait = kill_wait
        self._recovery_total = recovery_counter(registry)
        self._cleanup_total = cleanup_counter(registry)

    @staticmethod
    def validate(action: str, target: str) -> None:
        """Raise the RecoveryError run() would raise, without running anything."""
        if action not in CATALOGUE:
            raise UnknownAction(action)
        if CATALOGUE[action] and not target:
            raise TargetRequired(action)
        if not CATALOGUE[action] and target:
            raise TargetNotAccepted(action, target)

    async def plan(self, action: str, target: str = "") -> list[Step]:
        """The dry-run plan of an action (raises RecoveryError like run())."""
        return [step async for step in self.run(action, target, dry_run=True)]

    def run(
        self,
        action: str,
        target: str = "",
        *,
        dry_run: bool = False,
        grace: float | None = None,
    ) -> AsyncIterator[Step]:
        """Validate now, then return the steps as they happen. ``grace`` (seconds
        between TERM and KILL) applies to terminate-orphans; None = the default."""
        self.validate(action, target)
        if grace is not None and grace < 0:
            raise RecoveryError(f"grace must not be negative (got {grace:g})")
        return self._run(action, target, dry_run, self.default_grace if grace is None else grace)

    async def _run(
        self, action: str, target: str, dry_run: bool, grace: float
    ) -> AsyncIterator[Step]:
        steps: list[Step] = []

        def emit(description: str, outcome: Outcome, error: str = "", fatal: bool = False) -> Step:
            if dry_run and outcome is Outcome.DONE:
                outcome = Outcome.PLANNED
            step = Step(action, description, outcome, self.clock.now(), error, fatal)
            steps.append(step)
            return step

        actions: dict[str, Callable[[], AsyncIterator[Step]]] = {
            RESTART_DOMAIN: lambda: self._domain(target, decide_restart, dry_run, emit),
            RESUME_DOMAIN: lambda: self._domain(target, decide_resume, dry_run, emit),
            REPAIR_NETWORK: lambda: self._repair_network(target, dry_run, emit),
            REMOVE_STALE_LOCKS: lambda: self._remove_stale_locks(dry_run, emit),
            TERMINATE_ORPHANS: lambda: self._terminate_orphans(dry_run, grace, emit),
            RECONNECT_LIBVIRT: lambda: self._reconnect(dry_run, emit),
        }
        try:
            async for step in actions[action]():
                yield step
        finally:
            if not dry_run and steps:
                outcome = action_outcome(steps)
                self._recovery_total.labels(action=action, outcome=outcome.value).inc()
                if action in CLEANUP_ACTIONS:
                    self._cleanup_total.labels(outcome=outcome.value).inc()

    async def _domain(
        self,
        name: str,
        decide: Callable[[int], tuple[DomainOp, str]],
        dry_run: bool,
        emit: Emit,
    ) -> AsyncIterator[Step]:
        try:
            record = await self._find_domain(name)
        except (LibvirtUnavailable, DomainNotFound) as exc:
            yield emit(f"look up domain {name}", Outcome.FAILED, _one_line(exc), True)
            return
        op, why = decide(record.state)
        description = f"{name}: {why}"
        if op is DomainOp.NONE:
            yield emit(description, Outcome.SKIPPED, "", False)
            return
        if op is DomainOp.REFUSE:
            yield emit(description, Outcome.FAILED, why, True)
            return
        if dry_run:
            yield emit(description, Outcome.PLANNED, "", False)
            return
        try:
            if op is DomainOp.RESUME:
                await self.libvirt.resume_domain(name)
            else:
                await self.libvirt.start_domain(name)
        except (LibvirtUnavailable, DomainNotFound) as exc:
            yield emit(description, Outcome.FAILED, _one_line(exc), True)
            return
        yield emit(description, Outcome.DONE, "", False)

    async def _find_domain(self, name: str) -> DomainRecord:
        for record in await self.libvirt.list_domains():
            if record.name == name:
                return record
        raise DomainNotFound(f"no domain named {name!r} on this node")

    async def _repair_network(self, bridge: str, dry_run: bool, emit: Emit) -> AsyncIterator[Step]:
        if self.links is None:
            yield emit(
                f"repair bridge {bridge}",
                Outcome.FAILED,
                "network repair needs this node's netlink: the host root "
                f"{self.host_root.path} is simulated and no network namespace is configured",
                True,
            )
            return
        try:
            taps = await self._bridge_taps(bridge)
            links = await self.links.links()
        except (LibvirtUnavailable, NetlinkUnavailable, OSError) as exc:
            yield emit(f"read the state of bridge {bridge}", Outcome.FAILED, _one_line(exc), True)
            return
        if bridge not in links or links[bridge].kind != "bridge":
            what = "does not exist" if bridge not in links else f"is a {links[bridge].kind!r} link"
            yield emit(
                f"repair bridge {bridge}", Outcome.FAILED, f"{bridge} {what}, not a bridge", True
            )
            return
        for op in plan_network_repair(bridge, links, taps):
            if op.kind == "missing":
                # Non-fatal: the other taps are still worth fixing.
                yield emit(
                    op.description,
                    Outcome.FAILED,
                    "libvirt creates taps when a domain starts: restart the domain",
                    False,
                )
                continue
            if not op.needed:
                yield emit(op.description, Outcome.SKIPPED, "", False)
                continue
            if dry_run:
                yield emit(op.description, Outcome.PLANNED, "", False)
                continue
            try:
                if op.kind == "attach":
                    await self.links.set_master(op.device, bridge)
                else:
                    await self.links.set_up(op.device)
            except (NetlinkUnavailable, OSError) as exc:
                yield emit(op.description, Outcome.FAILED, _one_line(exc), op.kind == "bridge-up")
                if op.kind == "bridge-up":
                    return
                continue
            yield emit(op.description, Outcome.DONE, "", False)
        if not taps:
            yield emit(
                f"no running domain has an interface on bridge {bridge}",
                Outcome.SKIPPED,
                "",
                False,
            )

    async def _bridge_taps(self, bridge: str) -> list[tuple[str, str]]:
        taps: list[tuple[str, str]] = []
        for record in await self.libvirt.list_domains():
            if record.state not in LIVE_STATES:
                continue
            try:
                xml = await self.libvirt.domain_xml(record.name)
            except DomainNotFound:
                continue  # went away meanwhile
            taps.extend(
                (record.name, dev) for dev, source in domain_interfaces(xml) if source == bridge
            )
        return taps

    async def _remove_stale_locks(self, dry_run: bool, emit: Emit) -> AsyncIterator[Step]:
        try:
            locks = await self.finders.stale_locks()
        except (OSError, LibvirtUnavailable) as exc:
            yield emit("find stale lock files", Outcome.FAILED, _one_line(exc), True)
            return
        if not locks:
            yield emit("no stale lock files", Outcome.SKIPPED, "", False)
            return
        for lock in locks:
            description = f"remove stale lock {lock.path} (owner pid {lock.pid} is gone)"
            if dry_run:
                yield emit(description, Outcome.PLANNED, "", False)
                continue
            try:
                removed = await asyncio.to_thread(self._remove_lock, lock)
            except OSError as exc:
                yield emit(description, Outcome.FAILED, _os_error(exc), False)
                continue
            if removed:
                yield emit(description, Outcome.DONE, "", False)
            else:
                yield emit(f"{lock.path}: gone or owned again", Outcome.SKIPPED, "", False)

    def _remove_lock(self, lock: StaleLock) -> bool:
        """Unlink the lock if it still names the same dead pid; False if not (any more)."""
        try:
            current = parse_pid_file(self.host_root.read_text(lock.path, max_bytes=64))
        except FileNotFoundError:
            return False
        # Re-checked right before unlinking: the owner may have been restarted.
        if current != lock.pid or self.processes.get(lock.pid) is not None:
            return False
        real = self.host_root.resolve(lock.path)
        # Unlink relative to a folder opened without following links, so a folder
        # swapped for a symlink after resolution cannot redirect the unlink.
        dir_fd = os.open(real.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.unlink(real.name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        finally:
            os.close(dir_fd)
        return True

    async def _terminate_orphans(
        self, dry_run: bool, grace: float, emit: Emit
    ) -> AsyncIterator[Step]:
        try:
            orphans = await self.finders.orphans()
        except (OSError, LibvirtUnavailable) as exc:
            yield emit("find orphan processes", Outcome.FAILED, _one_line(exc), True)
            return
        if not orphans:
            yield emit("no orphan processes", Outcome.SKIPPED, "", False)
            return

        def describe(o: OrphanProcess) -> str:
            return (
                f"terminate pid {o.pid} ({o.name}, domain {o.domain} not running; {o.evidence}): "
                f"TERM, KILL after {grace:g}s"
            )

        if dry_run:
            for orphan in orphans:
                yield emit(describe(orphan), Outcome.PLANNED, "", False)
            return
        # TERM all first, then one shared grace period: n orphans cost one grace, not n.
        termed = [o for o in orphans if self.processes.signal(o.pid, o.create_time, signal.SIGTERM)]
        for orphan in orphans:
            if orphan not in termed:
                yield emit(describe(orphan), Outcome.SKIPPED, "", False)  # exited meanwhile
        survivors = await self._wait_gone(termed, grace)
        for orphan in termed:
            if orphan not in survivors:
                yield emit(describe(orphan) + " (exited on TERM)", Outcome.DONE, "", False)
        killed = [
            o for o in survivors if self.processes.signal(o.pid, o.create_time, signal.SIGKILL)
        ]
        remaining = await self._wait_gone(killed, self.kill_wait)
        for orphan in survivors:
            if orphan in remaining:
                yield emit(
                    describe(orphan),
                    Outcome.FAILED,
                    f"still running {self.kill_wait:g}s after KILL (uninterruptible sleep?)",
                    False,
                )
            else:
                yield emit(describe(orphan) + " (killed after grace)", Outcome.DONE, "", False)

    def _alive(self, orphan: OrphanProcess) -> bool:
        info = self.processes.get(orphan.pid)
        return info is not None and info.create_time == orphan.create_time

    async def _wait_gone(
        self, processes: Sequence[OrphanProcess], seconds: float
    ) -> list[OrphanProcess]:
        """The processes still alive after waiting up to seconds for them to exit."""
        deadline = self.clock.monotonic() + seconds
        alive = [p for p in processes if self._alive(p)]
        while alive and self.clock.monotonic() < deadline:
            await self.clock.sleep(min(_POLL_SECONDS, max(deadline - self.clock.monotonic(), 0)))
            alive = [p for p in alive if self._alive(p)]
        return alive

    async def _reconnect(self, dry_run: bool, emit: Emit) -> AsyncIterator[Step]:
        description = f"drop and reopen the libvirt connection to {self.libvirt.uri}"
        if dry_run:
            yield emit(description, Outcome.PLANNED, "", False)
            return
        try:
            await self.libvirt.reconnect()
        except LibvirtUnavailable as exc:
            yield emit(description, Outcome.FAILED, _one_line(exc), True)
            return
        yield emit(description, Outcome.DONE, "", False)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _os_error(exc: OSError) -> str:
    if exc.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
        return f"cannot remove: {exc.strerror} (immutable file or read-only filesystem?)"
    return _one_line(exc)
