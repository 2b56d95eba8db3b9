"""Listening addresses of the daemons: probe before gRPC binds.

grpc reports a port in use by returning 0 or raising, after printing its own
error line to stderr; probing first keeps the operator's message to one line.
"""

from __future__ import annotations

import errno
import socket


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
