"""Netlink sockets inside a named network namespace, without forking.

pyroute2's ``IPRoute(netns=...)`` forks a helper to open the socket in the
namespace. Forking a process that runs gRPC's threads is unsafe (gRPC aborts
the child), so the executor instead switches only the calling thread into the
namespace with setns(2), opens the socket there and switches back: a netlink
socket stays bound to the namespace it was created in. Call it from a worker
thread (asyncio.to_thread), never from the event loop's thread.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NETNS_RUN_DIR = Path("/run/netns")
THREAD_NETNS = Path("/proc/thread-self/ns/net")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(OSError):
    """The namespace does not exist or the thread could not enter or leave it."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NetnsError(errno, os.strerror(errno))


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block with this thread inside network namespace ``name``."""
    path = NETNS_RUN_DIR / name
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(exc.errno, f"network namespace {name!r}: {exc.strerror}") from None
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            # Failing to return would leave a pooled worker thread in the wrong
            # namespace for every later task: that must not pass silently.
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def iproute(netns: str | None = None) -> Any:
    """A pyroute2 IPRoute bound to netns (this thread's namespace when None)."""
    from pyroute2 import IPRoute

    if netns is None:
        return IPRoute()
    with entered(netns):
        return IPRoute()


def namespace_identity(netns: str | None) -> tuple[int, int]:
    """(st_dev, st_ino) of named namespace netns, or of this thread's when None; OSError."""
    info = (THREAD_NETNS if netns is None else NETNS_RUN_DIR / netns).stat()
    return info.st_dev, info.st_ino
