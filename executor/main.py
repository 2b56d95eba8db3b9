"""``novaops-executor --config FILE``: the node agent daemon.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 when it cannot start
(bad configuration, listen address in use, unusable state folder). Expected
failures print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import faulthandler
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import grpc

from novaops.client.config import ConfigError
from novaops.client.daemon import limit_malloc_arenas, listen_problem, settle_gc, setup_logging
from novaops.client.tls import SERVER_OPTIONS, server_credentials
from novaops.executor.bundle_service import BundleService
from novaops.executor.checks.domains import LibvirtDomainSource
from novaops.executor.checks.lxc import libvirt_lxc_containers
from novaops.executor.checks.sources import CheckSources
from novaops.executor.cleanliness import ChecksFinders
from novaops.executor.config import ExecutorConfig
from novaops.executor.domain_events import watch_domain_states
from novaops.executor.facts import gather_host_facts
from novaops.executor.health import HealthVerdict
from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import LibvirtGateway
from novaops.executor.proctable import PROCESS_TABLE
from novaops.executor.quarantine import NodeQuarantine, sync_with_controller
from novaops.executor.recovery import ConnectionDomainControl, NetlinkLinks, RecoveryCatalogue
from novaops.executor.registration import GrpcControllerLink, Registrar
from novaops.executor.server import ExecutorContext, add_executor_service, heartbeat_health
from novaops.v1 import common_pb2, controller_pb2

log = logging.getLogger("novaops.executor")

PROG = "novaops-executor"
EXIT_CANNOT_START = 2
QUARANTINE_SYNC_SECONDS = 2.0
SHUTDOWN_GRACE_SECONDS = 5.0
# How much longer than the grace the gRPC server may take to stop (see stop()).
STOP_MARGIN_SECONDS = 2.0
# What the steps after the server's stop (tasks, checks, libvirt) may take together.
STOP_REST_SECONDS = 1.5
# A shutdown still going this long after every step's bound writes every
# thread's stack to stderr (the log file under dev up): what it is stuck in,
# before a supervisor's SIGKILL ends it.
STOP_STACKS_AFTER_SECONDS = 0.5
HEARTBEAT_HEALTH_TIMEOUT_SECONDS = 1.0


# Synced-quarantine reports not yet recorded by a controller (RegistrationStatus).
SYNCED_REPORTS_FILE = "synced-reports.json"


class StartupError(Exception):
    """The executor cannot start; the message is one line for the operator."""


def novaops_version() -> str:
    try:
        return package_version("novaops")
    except PackageNotFoundError:
        return "0+unknown"


def check_port_free(listen: str) -> None:
    """StartupError if listen (host:port) cannot be bound (see novaops.client.listen)."""
    problem = listen_problem(listen)
    if problem is not None:
        raise StartupError(problem)


def bind(server: grpc.aio.Server, config: ExecutorConfig) -> int:
    """Bind the listen address; the bound port. StartupError if it cannot be bound."""
    check_port_free(config.listen)
    try:
        if config.tls.insecure:
            port = server.add_insecure_port(config.listen)
        else:
            port = server.add_secure_port(config.listen, server_credentials(config.tls))
    except RuntimeError:
        # grpc raises instead of returning 0 for some failures (1.85: in-use ports).
        port = 0
    if port == 0:
        raise StartupError(f"cannot listen on {config.listen}: address already in use")
    return port


class Executor:
    """The daemon's parts, started and stopped in order.

    Tests run it in-process: ``await Executor(config).start()``, then ``stop()``.
    """

    def __init__(self, config: ExecutorConfig, libvirt: LibvirtGateway | None = None) -> None:
        self.config = config
        # One connection for inventory, checks and recovery: the libvirt test driver
        # keeps one in-memory host per connection, so a second one would not see
        # (or make) the same changes.
        host_root = HostRoot(config.host_root)
        # The host root holds libvirt's pid files, which give domains their uptime.
        self.libvirt = libvirt or LibvirtDomainSource(config.libvirt_uri, host_root=host_root)
        self.ctx = ExecutorContext(
            node=config.node,
            version=novaops_version(),
            host_root=host_root,
            libvirt=self.libvirt,
            state_dir=config.state_dir,
            insecure=config.tls.insecure,
            quarantine=NodeQuarantine(config.state_dir, config.node, hooks_dir=config.hooks_dir),
            health_check_interval=config.health_check_interval_ms / 1000,
        )
        if isinstance(self.libvirt, LibvirtDomainSource):
            self._wire_features(host_root)
        self._stop_watch = asyncio.Event()
        # Shutdown steps that did not finish in time (see stop()), and their tasks.
        self.abandoned: list[str] = []
        self._left_behind: set[asyncio.Future[object]] = set()
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        add_executor_service(self.server, self.ctx)
        self.registrar = Registrar(
            node=config.node,
            address=config.advertise,
            version=self.ctx.version,
            controllers=config.controllers,
            connect=lambda target: GrpcControllerLink(target, config.tls),
            facts=self._facts,
            health=self._health,
            labels=dict(config.labels),
        )
        self.port = 0
        self._registration: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._sync: asyncio.Task[None] | None = None

    def _wire_features(self, host_root: HostRoot) -> None:
        """Checks, recovery, verify-clean and bundles over the shared libvirt connection."""
        assert isinstance(self.libvirt, LibvirtDomainSource)
        config = self.config
        checks = CheckSources(
            node=config.node,
            root=host_root,
            domains=self.libvirt,
            netns=config.netns,
            tap_prefixes=config.tap_prefixes,
            bridge_uplinks=config.bridge_uplinks,
            lxc_containers=lambda: libvirt_lxc_containers(host_root),
        )
        control = ConnectionDomainControl(self.libvirt)
        finders = ChecksFinders(checks, control)
        # Links are changed only where they are this node's: its own namespace, or
        # the real host. A simulated node without a namespace never touches ours.
        links = None
        if config.netns is not None:
            links = NetlinkLinks(config.netns)
        elif host_root.is_system_root:
            links = NetlinkLinks()
        self.ctx.checks = checks
        self.ctx.finders = finders
        self.ctx.catalogue = RecoveryCatalogue(host_root, control, finders, links=links)
        self.ctx.bundles = BundleService(self.ctx, config.log_file)

    async def _sync_quarantine(self) -> None:
        """Follow the quarantine state heartbeat responses carry (see sync_with_controller)."""
        assert self.ctx.quarantine is not None
        mismatch_seen = False
        while not self._stop_watch.is_set():
            status = self.registrar.status
            mismatch = (
                status.quarantined is not None
                and status.quarantined != self.ctx.quarantine.is_quarantined()
            )
            # Act only on a mismatch seen twice in a row: the controller's own
            # ApplyQuarantine (with its fence and the operator's reason) lands
            # milliseconds after the store changes, and must win that race.
            result = None
            if mismatch and mismatch_seen:
                result = await sync_with_controller(
                    self.ctx.quarantine, status.quarantined, status.controller, status.decision
                )
            mismatch_seen = mismatch
            if result is not None and result.changed:
                log.warning(
                    "quarantine %s from the controller's record; hooks: %s",
                    "applied" if result.quarantined else "lifted",
                    ", ".join(result.hook_results) or "none",
                )
                state = self.ctx.quarantine.state
                synced = controller_pb2.SyncedQuarantine(
                    quarantined=result.quarantined,
                    hook_results=list(result.hook_results),
                    reason=state.reason,
                )
                synced.applied_at.GetCurrentTime()
                with contextlib.suppress(ValueError):  # no record came: since stays unset
                    synced.since.FromDatetime(dt.datetime.fromisoformat(state.since))
                self.registrar.status.report_synced(synced)  # the next heartbeats carry it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_watch.wait(), QUARANTINE_SYNC_SECONDS)

    async def _facts(self) -> common_pb2.HostFacts:
        return await gather_host_facts(self.ctx.host_root, self.libvirt)

    async def _health(self) -> HealthVerdict:
        # The last health-check verdict (checks run in the background), see heartbeat_health.
        return await heartbeat_health(self.ctx, HEARTBEAT_HEALTH_TIMEOUT_SECONDS)

    async def start(self) -> None:
        """Bind, serve and start registering. StartupError if it cannot serve."""
        try:
            self.config.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(
                f"cannot create state_dir {self.config.state_dir}: {exc.strerror}"
            ) from None
        self.registrar.status.restore_synced(self.config.state_dir / SYNCED_REPORTS_FILE)
        if self.ctx.checks is not None:
            problem = PROCESS_TABLE.subscribe()
            if problem is not None:
                log.warning(
                    "process events unavailable (%s): every QEMU process scan reads "
                    "every process's command line",
                    problem,
                )
        if self.config.tls.insecure:
            log.warning(
                "INSECURE: serving without TLS and without caller checks on %s "
                "(tls.insecure = true)",
                self.config.listen,
            )
        self.port = bind(self.server, self.config)
        await self.server.start()
        log.info(
            "executor %s serving on %s (host root %s, libvirt %s)",
            self.config.node,
            self.config.listen,
            self.config.host_root,
            self.config.libvirt_uri,
        )
        self._registration = asyncio.create_task(self.registrar.run(), name="registration")
        self._sync = asyncio.create_task(self._sync_quarantine(), name="quarantine-sync")
        if self.ctx.checks is not None:
            self._watch = asyncio.create_task(
                watch_domain_states(self.libvirt, self.ctx.checks.events, self._stop_watch),
                name="domain-events",
            )
        if self.config.metrics_listen:
            from prometheus_client import start_http_server

            host, _, port = self.config.metrics_listen.rpartition(":")
            start_http_server(int(port), addr=host)

    async def abandon_start(self) -> None:
        """Release what a failed start() acquired, quietly."""
        await self.server.stop(None)
        await self.libvirt.close()

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Ordered shutdown: stop accepting and drain RPCs, stop registering, close libvirt.

        Bounded: every step gets a deadline, and a step past it is left behind with
        a warning naming where it waits (``abandoned`` lists them), so the rest
        still runs. A step is not waited for after its cancellation either: a
        coroutine that ignores cancellation (grpc.aio's server stop was seen to)
        would otherwise hold the shutdown as surely as no deadline at all."""
        log.info("shutting down: draining for up to %.0fs", grace)
        try:
            faulthandler.dump_traceback_later(
                grace + STOP_MARGIN_SECONDS + STOP_REST_SECONDS + STOP_STACKS_AFTER_SECONDS,
                file=sys.stderr,
            )
        except (AttributeError, ValueError, OSError, RuntimeError):  # stderr without a descriptor
            log.debug("no stack dump for a stuck shutdown: stderr has no file descriptor")
        try:
            await self._stop(grace)
        finally:
            faulthandler.cancel_dump_traceback_later()
        if self.abandoned:
            log.warning(
                "executor %s stopped with %d shutdown step(s) unfinished: %s",
                self.config.node,
                len(self.abandoned),
                ", ".join(self.abandoned),
            )
        else:
            log.info("executor %s stopped", self.config.node)

    async def _stop(self, grace: float) -> None:
        await self._step(
            "the gRPC server's stop", self.server.stop(grace), grace + STOP_MARGIN_SECONDS
        )
        self._stop_watch.set()
        rest = time.monotonic() + STOP_REST_SECONDS
        for name, task in (
            ("registration", self._registration),
            ("domain event watch", self._watch),
            ("quarantine sync", self._sync),
        ):
            if task is not None:
                task.cancel()
                await self._step(f"the {name} task", task, rest - time.monotonic())
        await self._step("closing the checks", self.ctx.close(), rest - time.monotonic())
        # libvirt's close gets a moment of its own, whatever the steps above used.
        await self._step("closing libvirt", self.libvirt.close(), max(rest - time.monotonic(), 0.5))

    async def _step(self, what: str, step: Awaitable[object], timeout: float) -> None:
        """Await step for at most timeout seconds (at least a moment); past that,
        cancel it without waiting and go on (see stop())."""
        task = asyncio.ensure_future(step)
        done, _ = await asyncio.wait({task}, timeout=max(timeout, 0.05))
        if task in done:
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                log.warning("shutdown: %s failed: %s: %s", what, type(exc).__name__, exc)
            return
        log.warning(
            "shutdown: %s did not finish within %.1fs; going on without it (waiting in %s)",
            what,
            max(timeout, 0.05),
            waiting_in(task),
        )
        task.cancel()
        self._left_behind.add(task)  # referenced, so it is not collected mid-flight
        self.abandoned.append(what)


def waiting_in(task: asyncio.Future[object]) -> str:
    """Where a pending task's coroutine chain waits: its innermost Python frames,
    outermost first ("?" when it exposes none, e.g. compiled coroutines)."""
    frames: list[str] = []
    coro: Any = task.get_coro() if isinstance(task, asyncio.Task) else None
    while coro is not None and len(frames) < 32:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(
                f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}"
            )
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(frames[-4:]) or "?"


async def serve(config: ExecutorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    executor = Executor(config)
    try:
        await executor.start()
    except BaseException:
        await executor.abandon_start()
        raise
    settle_gc()
    try:
        await stop.wait()
    finally:
        await executor.stop()
    if executor.abandoned:
        # asyncio.run would now cancel the steps left behind and wait for them,
        # which is what they do not answer: end the process here instead.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="executor TOML file")
    parser.add_argument("--version", action="version", version=novaops_version())
    args = parser.parse_args(argv)
    limit_malloc_arenas()
    try:
        config = ExecutorConfig.load(Path(args.config))
        setup_logging(config.log_file)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except OSError as exc:
        print(f"{PROG}: cannot open log file: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    try:
        asyncio.run(serve(config))
    except StartupError as exc:
        if config.log_file is not None:  # on stderr, the print below is the one line
            log.error("%s", exc)
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
