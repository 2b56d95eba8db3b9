"""Plumbing the two daemons (controller, executor) share: logging and listen probes.

grpc reports a port in use by returning 0 or raising, after printing its own
error line to stderr; probing first keeps the operator's message to one line.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import sys
from pathlib import Path

# glibc's mallopt parameter number for the arena limit (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
DAEMON_MALLOC_ARENAS = 2


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
