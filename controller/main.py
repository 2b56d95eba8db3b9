"""``novaops-controller --config FILE``: the controller daemon.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 when it cannot start
(bad config, port in use, embedded store held by another controller).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import sys
from importlib.metadata import version as package_version
from pathlib import Path

import grpc

from novaops.client.config import ConfigError
from novaops.client.daemon import limit_malloc_arenas, listen_problem, settle_gc, setup_logging
from novaops.client.tls import SERVER_OPTIONS, server_credentials
from novaops.controller.automation import Automation, verify_clean_on
from novaops.controller.config import ControllerConfig
from novaops.controller.context import ControllerContext
from novaops.controller.election import Elector
from novaops.controller.events import EventLog
from novaops.controller.executors import ExecutorPool
from novaops.controller.metrics import MetricsInterceptor
from novaops.controller.quarantine import QuarantineManager
from novaops.controller.services import add_servicers
from novaops.controller.store.base import LeaderTerm, Store, StoreLocked, StoreUnavailable
from novaops.controller.store.embedded import EmbeddedStore
from novaops.controller.store.etcd import EtcdStore
from novaops.controller.watch import watch_registry
from novaops.v1 import common_pb2

log = logging.getLogger("novaops.controller")

EXIT_CANNOT_START = 2
SHUTDOWN_GRACE_SECONDS = 5.0


class StartupError(Exception):
    """The controller cannot start; the message is one line for the operator."""


def make_store(config: ControllerConfig) -> Store:
    if config.store.kind == "embedded":
        assert config.store.path is not None
        return EmbeddedStore(config.store.path)
    return EtcdStore(
        list(config.store.endpoints),
        prefix=config.store.prefix,
        ca=config.store.etcd_ca,
        cert=config.store.etcd_cert,
        key=config.store.etcd_key,
    )


async def open_store_with_retry(store: Store, stop: asyncio.Event) -> bool:
    """Open the store, retrying with capped exponential backoff while it is unreachable.

    Returns False if asked to stop before the store answered.
    """
    delay = 0.5
    while not stop.is_set():
        try:
            await store.open()
            return True
        except StoreLocked as exc:
            raise StartupError(str(exc)) from None
        except StoreUnavailable as exc:
            log.warning("store not reachable yet, retrying in %.1fs: %s", delay, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, 10.0)
    return False


def bind(server: grpc.aio.Server, config: ControllerConfig) -> None:
    problem = listen_problem(config.listen)
    if problem is not None:
        raise StartupError(problem)
    try:
        if config.tls.insecure:
            log.warning("INSECURE: serving without TLS on %s (tls.insecure = true)", config.listen)
            port = server.add_insecure_port(config.listen)
        else:
            port = server.add_secure_port(config.listen, server_credentials(config.tls))
    except RuntimeError:
        port = 0
    if port == 0:
        raise StartupError(f"cannot listen on {config.listen}: address already in use or invalid")


async def serve(config: ControllerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    store = make_store(config)
    if not await open_store_with_retry(store, stop):
        return
    try:
        events = EventLog(store)
        background: set[asyncio.Task[str]] = set()

        # Set once built (below): the elector's callback may not fire before then.
        automation_ref: list[Automation] = []

        def leadership_changed(term: LeaderTerm | None) -> None:
            # A lost (or new) term cancels the automation's tasks of other terms at
            # once, instead of at its next poll.
            for automation in automation_ref:
                automation.leadership_changed(term)
            # Only a new leader records the change: a replica that lost its lease
            # may not be able to reach the store at all.
            if term is None:
                log.warning("%s is no longer the leader", config.name)
                return
            log.info("%s is the leader (term %d)", config.name, term.record.revision)
            task = asyncio.ensure_future(
                events.emit(
                    "leader.changed",
                    "",
                    f"{config.name} became the leader (term {term.record.revision})",
                    attributes={"leader": config.name, "term": str(term.record.revision)},
                )
            )
            background.add(task)
            task.add_done_callback(background.discard)

        elector = Elector(
            store,
            config.name,
            config.advertise,
            config.lease_ttl_seconds,
            on_change=leadership_changed,
        )
        executors = ExecutorPool(config.tls)

        async def verify_clean(node: str) -> tuple[bool, list[common_pb2.CheckResult]]:
            record = await store.get_node(node)
            return await verify_clean_on(executors, record.address if record else None)

        def term() -> LeaderTerm | None:
            return elector.term if elector.is_leader() else None

        quarantines = QuarantineManager(store, term, executors, events, verify_clean)
        automation = Automation(config.automation, store, executors, events, quarantines, term)
        automation_ref.append(automation)
        ctx = ControllerContext(
            config,
            store,
            elector,
            package_version("novaops"),
            executors,
            events,
            quarantines,
            automation,
        )
        server = grpc.aio.server(interceptors=[MetricsInterceptor()], options=SERVER_OPTIONS)
        add_servicers(server, ctx)
        bind(server, config)
        if config.metrics_listen:
            from prometheus_client import start_http_server

            host, _, port = config.metrics_listen.rpartition(":")
            start_http_server(int(port), addr=host)
        await server.start()
        log.info(
            "controller %s serving on %s (store %s %s)",
            config.name,
            config.listen,
            store.kind,
            store.endpoint,
        )
        settle_gc()
        election = asyncio.create_task(elector.run(), name="election")
        watcher = asyncio.create_task(
            watch_registry(
                store,
                config.heartbeat_interval_ms / 1000,
                stop,
                elector.is_leader,
                events,
                ctx.pacing,
            ),
            name="registry-watch",
        )
        automating = asyncio.create_task(automation.run(stop), name="automation")
        try:
            await stop.wait()
        finally:
            # Ordered shutdown: stop accepting and drain in-flight calls, then
            # resign leadership so a peer takes over without waiting for the lease.
            log.info("shutting down: draining for up to %.0fs", SHUTDOWN_GRACE_SECONDS)
            await server.stop(SHUTDOWN_GRACE_SECONDS)
            await elector.stop()
            await executors.close()
            for task in (election, watcher, automating):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await store.close()
        log.info("controller %s stopped", config.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="novaops-controller", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="controller TOML file")
    parser.add_argument("--version", action="version", version=package_version("novaops"))
    args = parser.parse_args(argv)
    limit_malloc_arenas()
    try:
        config = ControllerConfig.load(Path(args.config))
    except ConfigError as exc:
        print(f"novaops-controller: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    setup_logging(config.log_file)
    try:
        asyncio.run(serve(config))
    except StartupError as exc:
        log.error("%s", exc)
        print(f"novaops-controller: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
