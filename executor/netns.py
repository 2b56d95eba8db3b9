"""Netlink sockets inside a named network namespace, without forking.

pyroute2's ``IPRoute(netns=...)`` forks a helper to open the socket in the
namespace. Forking a process that runs gRPC's threads is unsafe (gRPC aborts
the child), so the executor instead switches only the calling thread into the
namespace with setns(2), opens the socket there and switches back: a netlink
socket stays bound to the namespace it was created in. Call it from a worker
thread (asyncio.to_thread), never from the event loop's thread.

:func:`call_cached` runs one netlink operation on a socket kept open between
calls (one per thread and namespace, see there); :func:`close_cached` closes
every such socket.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

NETNS_RUN_DIR = Path("/run/netns")
THREAD_NETNS = Path("/proc/thread-self/ns/net")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
log = logging.getLogger(__name__)
T = TypeVar("T")


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
    own = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
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


# -- sockets kept open between calls -------------------------------------------------------
#
# Opening an IPRoute costs more CPU than a link dump on it: pyroute2 0.9 builds a
# new asyncio event loop and transport for every socket. So reads reuse sockets.
#
# Why one socket per (thread, namespace), not one per namespace shared by all
# threads: the synchronous IPRoute of pyroute2 0.9 (iproute/linux.py IPRoute,
# netlink/core.py AsyncCoreSocket and SyncAPI) keeps its event loop, its netlink
# socket ("prime"), message queue and transport in a threading.local; every sync
# call is run_until_complete on the calling thread's loop. Used from a second
# thread, it finds none of them there and silently builds a new loop and a new
# netlink socket *in that thread's current namespace* -- so an IPRoute opened in
# namespace "x" by one worker thread dumps the executor's own namespace when a
# later call lands on another worker (seen with 0.9.7), leaks a socket per thread
# and closes and rebuilds that thread's loop on every call. It cannot be shared
# across threads, not even serially under a lock. asyncio.to_thread reuses the
# pool's threads, so a socket per (thread, namespace) still removes the per-call
# creation.
#
# Bookkeeping: each thread finds its sockets in a threading.local; a process-wide
# registry (under _registry_lock) holds every open one, so close_cached() can
# close them all, and sockets of threads that have ended are closed when a new
# socket is opened. Each socket has its own lock, held while it is used or
# closed, so a close from another thread never cuts a read short.
#
# Staleness: a named namespace is identified by (st_dev, st_ino) of
# /run/netns/<name>, the thread's own by that of /proc/thread-self/ns/net (the
# namespace IPRoute() binds to is the calling thread's, which need not be the
# process's /proc/self/ns/net). Both are compared before every use with their
# value when the socket was opened, so a namespace deleted and recreated under
# the same name is never read through the old one's socket. The inode of the old
# namespace cannot have been reused meanwhile: the open socket holds a
# reference to it, which also means a cached socket keeps a deleted namespace
# alive until the next call for it or close_cached().
#
# The sync IPRoute does not bind to multicast groups unless asked (bind()), so a
# socket kept open does not accumulate notifications between calls.

MAX_CACHED_PER_THREAD = 8  # LRU bound: at most this many namespaces' sockets per thread


class _StaleSocket(Exception):
    """The cached socket was closed by another thread before it could be used."""


class _CachedSocket:
    """One IPRoute kept open, owned by the thread that opened it."""

    def __init__(self, netns: str | None, ipr: Any, identity: tuple[int, int]) -> None:
        self.netns = netns
        self.ipr = ipr
        self.identity = identity
        self.owner = threading.current_thread()
        self.lock = threading.Lock()
        self.closed = False
        # The owner thread's loop and transport (pyroute2 keeps them in its
        # threading.local): a close from another thread needs them. Read here, on
        # the owner thread, right after opening.
        core = getattr(ipr, "asyncore", None)
        local = getattr(core, "local", None)
        self.loop: asyncio.AbstractEventLoop | None = getattr(local, "event_loop", None)
        self.transport: Any = getattr(local, "transport", None)

    def current(self) -> bool:
        """Open, and its namespace is still the one it was opened in."""
        if self.closed:
            return False
        try:
            return namespace_identity(self.netns) == self.identity
        except OSError:
            return False

    def run(self, operation: Callable[[Any], T]) -> T:
        with self.lock:
            if self.closed:
                raise _StaleSocket
            return operation(self.ipr)

    def close(self) -> None:
        """Close it (idempotent). A thread with a running event loop must not call this."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if threading.current_thread() is self.owner:
                self.ipr.close()  # pyroute2 closes this thread's transport and loop itself
            else:
                self._close_foreign()

    def _close_foreign(self) -> None:
        # What IPRoute.close() does on the owner thread, for the owner's loop from
        # here: abort the transport, let the loop run its connection_lost (or the
        # transport is reported unclosed when collected), close the loop, then let
        # pyroute2 close the netlink socket (this thread has none of its state).
        loop, transport = self.loop, self.transport
        try:
            if loop is not None and not loop.is_closed():
                if transport is not None:
                    transport.abort()
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
        finally:
            self.ipr.close()


_registry_lock = threading.Lock()
_registry: set[_CachedSocket] = set()  # every open cached socket, of any thread
_local = threading.local()  # .sockets: this thread's dict netns -> _CachedSocket, LRU order


def namespace_identity(netns: str | None) -> tuple[int, int]:
    """(st_dev, st_ino) of named namespace netns, or of this thread's when None; OSError."""
    info = (THREAD_NETNS if netns is None else NETNS_RUN_DIR / netns).stat()
    return info.st_dev, info.st_ino


def _thread_sockets() -> dict[str | None, _CachedSocket]:
    sockets: dict[str | None, _CachedSocket] | None = getattr(_local, "sockets", None)
    if sockets is None:
        sockets = _local.sockets = {}
    return sockets


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _close_all(entries: list[_CachedSocket]) -> None:
    """Close entries; from a helper thread if this one runs an event loop (the
    owner's loop cannot be run, nor IPRoute.close() run, from such a thread)."""
    if not entries:
        return

    def close() -> None:
        for entry in entries:
            try:
                entry.close()
            except Exception:  # one bad socket must not keep the others open
                log.warning("closing a cached netlink socket failed", exc_info=True)

    if _loop_running():
        helper = threading.Thread(target=close, name="netns-close")
        helper.start()
        helper.join()
    else:
        close()


def _discard(entry: _CachedSocket) -> None:
    with _registry_lock:
        _registry.discard(entry)
    _close_all([entry])


def _open_cached(netns: str | None) -> _CachedSocket:
    """A new socket for this thread in netns; raises as :func:`iproute` does."""
    from pyroute2 import IPRoute

    if netns is None:
        identity = namespace_identity(None)
        ipr = IPRoute()
    else:
        with entered(netns):
            # The namespace actually entered (/run/netns/<name> may change meanwhile).
            identity = namespace_identity(None)
            ipr = IPRoute()
    entry = _CachedSocket(netns, ipr, identity)
    with _registry_lock:
        # Sockets of ended threads can never be used again: close them now.
        ended = [e for e in _registry if not e.owner.is_alive()]
        _registry.difference_update(ended)
        _registry.add(entry)
    _close_all(ended)
    return entry


def call_cached(netns: str | None, operation: Callable[[Any], T]) -> T:
    """operation(ipr) on this thread's kept-open IPRoute in netns (see above).

    A socket whose namespace changed (deleted, or recreated under the same name)
    is replaced before use. If the operation fails on a reused socket, that socket
    is closed and the operation retried once on a new one; what a new socket
    raises (NetnsError when the namespace does not exist, OSError, NetlinkError)
    propagates, as with a socket opened for the call. Blocking: worker threads.
    """
    sockets = _thread_sockets()
    cached = sockets.pop(netns, None)
    if cached is not None:
        if cached.current():
            try:
                result = cached.run(operation)
            except _StaleSocket:
                pass  # closed by close_cached() meanwhile
            except Exception as exc:
                # Not only OSError/NetlinkError: after any failure the socket's
                # state is unknown (a dump cut short, pyroute2's loop broken).
                log.debug("cached netlink socket (netns %s) failed: %r; retrying", netns, exc)
                _discard(cached)
            except BaseException:
                _discard(cached)
                raise
            else:
                sockets[netns] = cached  # most recently used last
                return result
        else:
            _discard(cached)
    fresh = _open_cached(netns)
    try:
        result = fresh.run(operation)
    except BaseException:
        _discard(fresh)
        raise
    sockets[netns] = fresh
    for key in [key for key, entry in sockets.items() if entry.closed]:
        del sockets[key]  # closed by close_cached() and not used since
    while len(sockets) > MAX_CACHED_PER_THREAD:
        _discard(sockets.pop(next(iter(sockets))))
    return result


def close_cached() -> int:
    """Close every kept-open socket of every thread; how many were open.

    Later calls open new ones. Safe from any thread, also one running an event
    loop (the closing then runs on a helper thread, blocking this one briefly);
    prefer ``await asyncio.to_thread(close_cached)`` there.
    """
    with _registry_lock:
        entries = list(_registry)
        _registry.clear()
    _close_all(entries)
    return len(entries)
