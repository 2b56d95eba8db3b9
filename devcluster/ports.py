"""Loopback ports for the dev cluster: choosing free ones and waiting for listeners."""

from __future__ import annotations

import contextlib
import socket

from novaops.devcluster.errors import DevClusterError

LOOPBACK = "127.0.0.1"


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_ports(count: int, *, base: int | None = None, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct free ports on host.

    With ``base``, the ports are base, base+1, ... and each must be free (so a
    fixed layout fails loudly instead of drifting). Without it the kernel picks
    them: every socket stays bound until all are chosen, so no port is handed out
    twice. Another program can still take a port before our process binds it;
    ``up`` then fails with the process's log naming the address in use.
    """
    if base is not None:
        if base < 1 or base + count - 1 > 65535:
            raise DevClusterError(
                f"base port {base}: ports {base}..{base + count - 1} must lie within 1..65535"
            )
        ports = list(range(base, base + count))
        busy = [p for p in ports if not port_is_free(p, host)]
        if busy:
            raise DevClusterError(
                f"ports already in use on {host}: {', '.join(map(str, busy))} "
                f"(needed {base}..{base + count - 1}); pick another base port"
            )
        return ports
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def accepts_connections(address: str, timeout: float = 0.25) -> bool:
    """True when a TCP connection to host:port succeeds."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
