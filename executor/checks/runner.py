"""Run checks with per-check timeouts: ``Diagnose`` and ``GetHealth(include_checks)``.

What callers may rely on:

* Neither entry point raises for a failing, crashing or hung check: a check
  that overruns ``sources.timings.per_check`` yields one ``error`` result
  "timed out after N s", and one that raises yields an ``error`` result naming
  the exception (also logged with its traceback).
* Blocking I/O runs in threads; the event loop is never blocked. Host parts
  run together on one part thread, their blocking steps inline there except
  libvirt calls (decision 0007).
  A hung thread cannot be killed, so it keeps its worker until the I/O
  returns — the result was already reported as timed out.
* :func:`run_diagnose` yields results as each part finishes (``diag host`` runs
  its parts one after another, the next one starting at the latest
  :data:`PART_STAGGER_SECONDS` after the one before, so a hung part does not hold
  up the rest); :func:`run_diagnose_batches` yields the same results
  grouped by what finished together (what ``Diagnose`` streams);
  :func:`run_health_checks` returns them in the fixed order of :data:`HEALTH_PARTS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from novaops.executor.checks import container, host, leftovers, network, vm
from novaops.executor.checks.model import CheckResult, error_result
from novaops.executor.checks.sources import CheckSources
from novaops.executor.libvirt_access import LibvirtUnavailable
from novaops.executor.threads import PartGate, ThreadsBusy, off_loop, run_here, shared_reads
from novaops.v1 import executor_pb2

log = logging.getLogger(__name__)

CheckRun = Callable[[CheckSources], Coroutine[Any, Any, list[CheckResult]]]


class TargetKind(enum.StrEnum):
    VM = "vm"
    CONTAINER = "container"
    NETWORK = "network"
    HOST = "host"
    ALL_VMS = "all_vms"


@dataclass(frozen=True)
class DiagnoseTarget:
    """What to diagnose; ``name`` is "host" for the host. skip_absent: a
    container that is not on this node yields no result (a fleet-wide search)."""

    kind: TargetKind
    name: str = "host"
    skip_absent: bool = False

    @staticmethod
    def from_request(request: executor_pb2.DiagnoseRequest) -> DiagnoseTarget:
        """The target of a DiagnoseRequest. ValueError when none (or an empty name) is set."""
        which = request.WhichOneof("target")
        if which is None:
            raise ValueError("DiagnoseRequest names no target")
        if which == "host":
            return DiagnoseTarget(TargetKind.HOST)
        if which == "all_vms":
            return DiagnoseTarget(TargetKind.ALL_VMS, "")
        name = str(getattr(request, which))
        if not name:
            raise ValueError(f"DiagnoseRequest.{which} is empty")
        kind = TargetKind(which)
        return DiagnoseTarget(kind, name, kind is TargetKind.CONTAINER and request.skip_absent)


# -- the parts of each target ----------------------------------------------------------------


async def _vm(sources: CheckSources, name: str) -> list[CheckResult]:
    return vm.evaluate_vm(await vm.gather_vm(sources, name))


async def _container(sources: CheckSources, name: str) -> list[CheckResult]:
    return container.evaluate_container(await container.gather_container(sources, name))


async def _container_if_present(sources: CheckSources, name: str) -> list[CheckResult]:
    evidence = await container.gather_container(sources, name)
    return container.evaluate_container(evidence) if evidence.found else []


async def _network(sources: CheckSources, name: str) -> list[CheckResult]:
    return network.evaluate_network(await network.gather_network(sources, name))


async def _basics(sources: CheckSources) -> list[CheckResult]:
    return host.evaluate_basics(await off_loop(host.gather_basics, sources))


async def _libvirt(sources: CheckSources) -> list[CheckResult]:
    return host.evaluate_libvirt(await host.gather_libvirt(sources))


async def _cgroup(sources: CheckSources) -> list[CheckResult]:
    return host.evaluate_cgroup(await off_loop(host.gather_cgroup, sources))


async def _disk(sources: CheckSources) -> list[CheckResult]:
    return host.evaluate_disk(await off_loop(host.gather_disk, sources))


async def _memory(sources: CheckSources) -> list[CheckResult]:
    return host.evaluate_memory(await off_loop(host.gather_memory, sources))


async def _orphans(sources: CheckSources) -> list[CheckResult]:
    return leftovers.evaluate_orphans(await leftovers.gather_orphans(sources))


async def _locks(sources: CheckSources) -> list[CheckResult]:
    return leftovers.evaluate_locks(await off_loop(leftovers.gather_locks, sources))


async def _taps(sources: CheckSources) -> list[CheckResult]:
    return leftovers.evaluate_taps(await leftovers.gather_taps(sources))


# check id reported when a part times out or crashes -> the part.
HOST_PARTS: dict[str, CheckRun] = {
    "host.facts": _basics,
    "host.libvirt": _libvirt,
    "host.cgroup": _cgroup,
    "host.disk": _disk,
    "host.memory": _memory,
    "host.orphans": _orphans,
    "host.locks": _locks,
    "host.taps": _taps,
}
# Node health (issue 5): what GetHealth(include_checks) and the automation use.
HEALTH_PARTS = (
    "host.libvirt",
    "host.cgroup",
    "host.disk",
    "host.orphans",
    "host.locks",
    "host.taps",
)
# A host part that has not finished after this long no longer holds up the next
# ones, which then start alongside it. Host parts take about a millisecond each
# and run one after another: started all at once, their threads cost twice the
# CPU in GIL hand-offs (measured: 2.6 vs 5.7 ms per diag host). A hung part so
# delays the rest by this much, not by its timeout.
PART_STAGGER_SECONDS = 0.2
# Part threads of every node in this process take turns (see PartGate).
PART_GATE = PartGate(hold_limit=PART_STAGGER_SECONDS)
# How many domains ``all_vms`` checks at once.
VM_CONCURRENCY = 4
# The clean baseline of verify-clean: no leftovers.
CLEAN_BASELINE_PARTS = ("host.orphans", "host.locks", "host.taps")


async def _on_part_thread(
    check_id: str, part: CheckRun, sources: CheckSources
) -> list[CheckResult]:
    """A host part run whole on a part thread (novaops.executor.threads): its
    blocking steps then need no thread hop each."""
    try:
        # Not through PART_GATE: these run once the loop took over from a slow
        # part, and on a wedged node each would hold up every other node's turn.
        return await sources.part_threads.run(lambda: part(sources))
    except ThreadsBusy as busy:
        return [error_result(check_id, "host", _stuck(busy))]


def _stuck(busy: ThreadsBusy) -> str:
    return f"host checks are stuck ({busy.pending} parts still running)"


async def _bounded(
    check_id: str, target: str, timeout: float, run: Awaitable[list[CheckResult]]
) -> list[CheckResult]:
    try:
        async with asyncio.timeout(timeout):  # no task of its own, unlike wait_for
            return await run
    except TimeoutError:
        return [error_result(check_id, target, f"timed out after {timeout:g}s")]
    except Exception as exc:  # a check must never take the stream down
        log.exception("check %s on %s crashed", check_id, target)
        return [error_result(check_id, target, _crashed(exc))]


async def run_diagnose(target: DiagnoseTarget, sources: CheckSources) -> AsyncIterator[CheckResult]:
    """Results of ``diag <kind> <name>`` as they become available (see module doc)."""
    async for batch in run_diagnose_batches(target, sources):
        for item in batch:
            yield item


HostPartsDone = Callable[[dict[str, list[CheckResult]], float], None]
"""(results by part, monotonic start) of a ``diag host`` whose every part finished."""


async def run_diagnose_batches(
    target: DiagnoseTarget,
    sources: CheckSources,
    *,
    on_host_parts: HostPartsDone | None = None,
) -> AsyncGenerator[list[CheckResult], None]:
    """:func:`run_diagnose` in batches: each batch holds the results that were
    ready together (one part's, or every part that finished by the time the
    consumer asked again); never an empty batch.

    on_host_parts: called once a ``diag host`` has run every part (not when the
    consumer went away first), with each part's results: the health monitor takes
    the health parts from there instead of running them again."""
    timeout = sources.timings.per_check
    single = {
        TargetKind.VM: ("vm", _vm),
        TargetKind.CONTAINER: (
            "container",
            _container_if_present if target.skip_absent else _container,
        ),
        TargetKind.NETWORK: ("network", _network),
    }
    if target.kind in single:
        check_id, part = single[target.kind]
        batch = await _bounded(check_id, target.name, timeout, part(sources, target.name))
        if batch:
            yield batch
        return
    if target.kind is TargetKind.ALL_VMS:
        async for batch in _every_vm(sources, timeout):
            yield batch
        return
    started = time.monotonic()
    by_part: dict[str, list[CheckResult]] = {}
    parts = list(HOST_PARTS.items())
    async with contextlib.aclosing(_sequenced(parts, sources, timeout)) as groups:
        async for group in groups:
            batch = []
            for check_id, results in group:
                by_part[check_id] = results
                batch.extend(results)
            if batch:
                yield batch
    if on_host_parts is not None:
        on_host_parts(by_part, started)


@dataclass
class _Sequence:
    """Host parts run in order on one part thread (see :func:`_sequenced`); the
    state is shared between that thread and the event loop, under ``lock``."""

    parts: Sequence[tuple[str, CheckRun]]
    sources: CheckSources
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: dict[int, list[CheckResult]] = field(default_factory=dict)
    current: int = 0
    current_started: float = 0.0  # monotonic; 0 until the first part starts
    abandoned: bool = False  # the loop took over the parts not yet started

    def run(self) -> None:
        """On the part thread: every part in order, until abandoned; through the
        process's PART_GATE (not even waiting for it once abandoned)."""
        with self.lock:
            if self.abandoned:
                return
        with PART_GATE.held(), shared_reads():  # the parts share a domain listing
            run_here(self._run_parts())  # one trip through the thread's loop for all

    async def _run_parts(self) -> None:
        for index, (check_id, part) in enumerate(self.parts):
            with self.lock:
                if self.abandoned:
                    return
                self.current, self.current_started = index, time.monotonic()
            try:
                results = await part(self.sources)
            except Exception as exc:  # a check must never take the stream down
                log.exception("check %s on host crashed", check_id)
                results = [error_result(check_id, "host", _crashed(exc))]
            with self.lock:
                self.finished[index] = results


def _crashed(exc: BaseException) -> str:
    return f"check crashed: {type(exc).__name__}: {exc}"


async def _sequenced(
    parts: Sequence[tuple[str, CheckRun]],
    sources: CheckSources,
    timeout: float,
    stagger: float | None = None,
) -> AsyncGenerator[list[tuple[str, list[CheckResult]]], None]:
    """The host parts as :func:`_staggered` runs them, in groups the same way,
    but all on one part thread one after another: one thread hop for the whole
    run instead of one per blocking step (each hop cost ~0.1 ms of CPU here, more
    than most parts). Once a part has run for ``stagger`` seconds, the loop takes
    over: the parts not started yet then run as :func:`_staggered` runs them,
    each on its own part thread, and the slow part's results follow when it
    finishes or reaches ``timeout``."""
    stagger = PART_STAGGER_SECONDS if stagger is None else stagger
    sequence = _Sequence(parts, sources)
    try:
        done = sources.part_threads.submit(sequence.run)
    except ThreadsBusy as busy:
        yield [(check_id, [error_result(check_id, "host", _stuck(busy))]) for check_id, _ in parts]
        return
    submitted = time.monotonic()
    try:
        while not done.done():
            with sequence.lock:
                started = sequence.current_started
                if not started and time.monotonic() - submitted >= timeout:
                    sequence.abandoned = True  # the thread never began: it starts nothing
            if sequence.abandoned:
                timed_out = f"timed out after {timeout:g}s"
                yield [
                    (check_id, [error_result(check_id, "host", timed_out)]) for check_id, _ in parts
                ]
                return
            hold = (
                max(0.0, started + stagger - time.monotonic())
                if started
                else min(stagger, max(0.0, submitted + timeout - time.monotonic()))
            )
            await asyncio.wait({done}, timeout=hold)
            with sequence.lock:
                if done.done() or not sequence.current_started:
                    continue
                if time.monotonic() - sequence.current_started < stagger:
                    continue  # the next part has just started
                sequence.abandoned = True
                slow, started = sequence.current, sequence.current_started
                ready = [(parts[i][0], sequence.finished[i]) for i in range(slow)]
            if ready:
                yield ready
            rest: list[tuple[str, Awaitable[list[CheckResult]]]] = [
                (parts[slow][0], _slow_part(sequence, done, slow, timeout, started))
            ]
            rest += [
                (
                    check_id,
                    _bounded(check_id, "host", timeout, _on_part_thread(check_id, part, sources)),
                )
                for check_id, part in parts[slow + 1 :]
            ]
            async with contextlib.aclosing(_staggered(rest, stagger, first_stagger=0)) as groups:
                async for group in groups:
                    yield group
            return
        failure = done.exception()  # only what run() does not catch
        with sequence.lock:
            finished = dict(sequence.finished)
        yield [
            (check_id, finished.get(i) or [error_result(check_id, "host", _crashed(failure))])
            if failure is not None
            else (check_id, finished[i])
            for i, (check_id, _) in enumerate(parts)
        ]
    finally:
        with sequence.lock:  # done, or the consumer went away: start nothing more
            sequence.abandoned = True


async def _slow_part(
    sequence: _Sequence, done: asyncio.Future[None], index: int, timeout: float, started: float
) -> list[CheckResult]:
    """The results of the part the part thread is stuck in, once it finishes
    (the thread then stops: abandoned), or a time-out error at ``timeout``."""
    check_id = sequence.parts[index][0]
    try:
        async with asyncio.timeout(max(0.0, started + timeout - time.monotonic())):
            await asyncio.shield(done)
    except TimeoutError:
        return [error_result(check_id, "host", f"timed out after {timeout:g}s")]
    except Exception as exc:
        return [error_result(check_id, "host", _crashed(exc))]
    with sequence.lock:
        return sequence.finished[index]


async def _staggered(
    parts: Sequence[tuple[str, Awaitable[list[CheckResult]]]],
    stagger: float | None = None,
    *,
    first_stagger: float | None = None,
) -> AsyncGenerator[list[tuple[str, list[CheckResult]]], None]:
    """Run the parts one after another, each starting when the one before has
    finished or has run for ``stagger`` seconds (PART_STAGGER_SECONDS), whichever
    comes first. Yield finished parts as (check id, results) in groups: what has
    finished so far whenever a part is slow, the rest as they finish; in start
    order within a group. Cancels what is still running when the consumer stops.
    first_stagger: how long the first part holds up the rest (default stagger)."""
    stagger = PART_STAGGER_SECONDS if stagger is None else stagger
    order: list[tuple[str, asyncio.Future[list[CheckResult]]]] = []
    running: set[asyncio.Future[list[CheckResult]]] = set()
    ready: list[tuple[str, list[CheckResult]]] = []

    def take_done() -> None:
        for check_id, future in order:
            if future in running and future.done():
                running.discard(future)
                ready.append((check_id, future.result()))

    try:
        for check_id, run in parts:
            future = asyncio.ensure_future(run)
            order.append((check_id, future))
            running.add(future)
            hold = stagger if first_stagger is None or len(order) > 1 else first_stagger
            await asyncio.wait({future}, timeout=hold)
            take_done()
            if not future.done() and ready:  # a slow part: hand over what is there
                yield ready
                ready = []
        while running:
            if ready:
                yield ready
                ready = []
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            take_done()
        if ready:
            yield ready
    finally:
        for left in running:  # the consumer went away (RPC cancelled): stop the rest
            left.cancel()
        for _, run in parts[len(order) :]:  # never started
            if asyncio.iscoroutine(run):
                run.close()


async def _as_ready(
    pending: Sequence[asyncio.Future[list[CheckResult]]],
) -> AsyncGenerator[list[asyncio.Future[list[CheckResult]]], None]:
    """The futures in groups, as they finish: each group is every future done at
    that moment, in the order given. Cancels the rest when the consumer stops."""
    waiting = set(pending)
    try:
        while waiting:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            done = [f for f in pending if f in waiting and f.done()]
            waiting.difference_update(done)
            yield done
    finally:
        for future in waiting:  # the consumer went away (RPC cancelled): stop the rest
            future.cancel()


async def _every_vm(sources: CheckSources, timeout: float) -> AsyncIterator[list[CheckResult]]:
    """The vm checks of every domain, at most VM_CONCURRENCY at once, each domain's
    results together as soon as it is done (a domain's checks sample CPU over a
    window, so running them one after another would take domains x window)."""
    try:
        records = await sources.domains.list_domains()
    except LibvirtUnavailable as exc:
        yield [error_result("vm.domain", "", f"cannot list domains: {exc}")]
        return
    gate = asyncio.Semaphore(VM_CONCURRENCY)

    async def one(name: str) -> list[CheckResult]:
        async with gate:
            return await _bounded("vm", name, timeout, _vm(sources, name))

    pending: list[asyncio.Future[list[CheckResult]]] = [
        asyncio.ensure_future(one(record.name)) for record in records
    ]
    async with contextlib.aclosing(_as_ready(pending)) as ready:
        async for done in ready:
            batch = [item for future in done for item in future.result()]
            if batch:
                yield batch


async def run_parts(parts: tuple[str, ...], sources: CheckSources) -> list[CheckResult]:
    """The named host parts (keys of :data:`HOST_PARTS`), staggered as ``diag host``
    runs them, results in the order named."""
    timeout = sources.timings.per_check
    by_part: dict[str, list[CheckResult]] = {}
    runs = [(part, HOST_PARTS[part]) for part in parts]
    async with contextlib.aclosing(_sequenced(runs, sources, timeout)) as groups:
        async for group in groups:
            by_part.update(group)
    return [item for part in parts for item in by_part[part]]


async def run_health_checks(sources: CheckSources) -> list[CheckResult]:
    """The node-health checks (:data:`HEALTH_PARTS`), in that order."""
    return await run_parts(HEALTH_PARTS, sources)


async def run_clean_baseline(sources: CheckSources) -> list[CheckResult]:
    """The verify-clean checks (:data:`CLEAN_BASELINE_PARTS`): orphans, locks, taps."""
    return await run_parts(CLEAN_BASELINE_PARTS, sources)
