"""Plumbing the two daemons (controller, executor) share: logging and listen probes.

grpc reports a port in use by returning 0 or raising, after printing its own
error line to stderr; probing first keeps the operator's message to one line.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import logging
import os
import socket
import sys
from pathlib import Path

# glibc's mallopt parameter number for the arena limit (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
DAEMON_MALLOC_ARENAS = 2
# Net allocations between young-generation collections in a daemon (CPython: 700).
DAEMON_GC_YOUNG_THRESHOLD = 10_000


def limit_malloc_arenas(arenas: int = DAEMON_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX`` would); True if applied.

    glibc gives each thread that allocates concurrently an arena of its own, up to
    8 per core, and keeps their freed memory. gRPC's threads each passing 256 KiB
    bundle chunks then leave a daemon tens of MB above its working set (measured:
    the controller peaked at 140-193 MiB streaming 1 GiB, ~90-120 MiB with 2
    arenas). Call it first thing, before threads start. An explicit
    ``MALLOC_ARENA_MAX`` in the environment wins; other C libraries are left alone.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


def settle_gc(young_threshold: int = DAEMON_GC_YOUNG_THRESHOLD) -> None:
    """Once a daemon has started: collect, then ``gc.freeze()`` what is left (modules,
    configuration, certificates, libvirt connections: alive for the process's
    life), and run the young-generation collection less often.

    Every call allocates futures, tasks and messages, which trigger CPython's
    cyclic collector every 700 net allocations; each older-generation pass then
    walked the whole start-up heap again. Reference counting frees nearly all
    of a call's objects anyway; the collector is only for cycles, which the
    raised threshold still collects. Measured (500 simulated nodes' ``diag host``,
    two A/B pairs in one hour): executors 2.79/2.68 -> 2.75/2.58 ms of CPU per
    node; the collector's share of an executor host's samples fell from 8.7% to
    under 1%."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, young_threshold), middle, old)


def setup_logging(log_file: Path | None) -> None:
    """INFO logging to log_file (created with its folder), or to stderr."""
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def listen_problem(listen: str) -> str | None:
    """One line saying why listen (host:port) cannot be bound now, or None.

    SO_REUSEADDR as grpc sets it, so only a live listener counts as in use.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        addresses = socket.getaddrinfo(
            host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, ValueError) as exc:
        return f"cannot listen on {listen}: {exc}"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"cannot listen on {listen}: address already in use"
                return f"cannot listen on {listen}: {exc.strerror}"
    return None
