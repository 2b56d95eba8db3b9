"""Blocking work off the event loop: reusable daemon threads, and part threads.

:class:`DaemonThreads` runs callables on daemon threads it keeps for reuse (not
a ``concurrent.futures`` pool: a call that never returns must not keep the
process from exiting, and keeps only its own thread — the next call gets a
fresh one). At most ``max_in_flight`` calls run or wait at once; past that,
:class:`ThreadsBusy` at once, so hung calls cannot pile up without bound.

Part threads: the host parts of ``diag host`` do a little blocking I/O in
several steps (a libvirt read, then a /proc scan, ...). Sending each step to a
thread and back cost more CPU than the steps themselves (measured on a
simulated node: 5.8 ms per ``diag host`` with a hop per step, 2.3 ms with
none). :class:`PartThreads` instead runs a whole part on one thread, on
that thread's own event loop, where :func:`off_loop` runs at once instead of
hopping again (libvirt calls still go to the connection's bounded threads).
The caller bounds the part with its timeout as before; a hung part keeps its
thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

T = TypeVar("T")


class ThreadsBusy(RuntimeError):
    """Too many calls are still running or waiting (``pending`` of them)."""

    def __init__(self, pending: int) -> None:
        super().__init__(f"{pending} calls still pending")
        self.pending = pending


class DaemonThreads:
    """Daemon threads named ``name`` taking calls from one queue (see module doc).

    A thread leaves after ``idle_seconds`` without a call; ``on_exit`` then runs
    on it (to release what the thread kept for itself)."""

    def __init__(
        self,
        name: str,
        *,
        max_in_flight: int,
        idle_seconds: float = 30.0,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self._name = name
        self._max_in_flight = max_in_flight
        self._idle_seconds = idle_seconds
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = 0
        self._queue: queue.SimpleQueue[tuple[_Reply, Callable[[], Any]]] = queue.SimpleQueue()

    def submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """work() on a thread; its result (or exception) on a future of the running
        loop. Cancelling the future abandons the result, not the work.
        ThreadsBusy when max_in_flight calls are pending (or no thread starts)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._enqueue(_LoopReply(loop, future), work)
        return future

    def call(self, work: Callable[[], T], timeout: float) -> T:
        """work() on a thread, waited for here (blocking; for threads that may block,
        such as part threads: no trip through an event loop). TimeoutError after
        timeout seconds (the work goes on, abandoned); ThreadsBusy as submit."""
        reply = _BlockingReply()
        self._enqueue(reply, work)
        if not reply.wait(timeout):
            raise TimeoutError(f"no answer within {timeout:g}s")
        if reply.error is not None:
            raise reply.error
        return cast(T, reply.value)

    def _enqueue(self, reply: _Reply, work: Callable[[], Any]) -> None:
        item = (reply, work)
        with self._lock:
            if self._in_flight >= self._max_in_flight:
                raise ThreadsBusy(self._in_flight)
            self._in_flight += 1
            start_thread = self._idle == 0
            if start_thread:
                pending = self._in_flight
            else:
                # Queued under the lock, so an idle thread deciding to leave sees it.
                self._idle -= 1
                self._queue.put(item)
        if start_thread:  # the new thread takes this call first; nothing else waits for it
            try:
                threading.Thread(
                    target=self._serve, args=(item,), name=self._name, daemon=True
                ).start()
            except RuntimeError:  # can't start new thread
                with self._lock:
                    self._in_flight -= 1
                raise ThreadsBusy(pending) from None

    def _serve(self, first: tuple[_Reply, Callable[[], Any]]) -> None:
        """Run first, then take calls until none arrives for idle_seconds (then the
        thread ends)."""
        try:
            self._run(*first)
            with self._lock:
                self._idle += 1
            while True:
                try:
                    reply, work = self._queue.get(timeout=self._idle_seconds)
                except queue.Empty:
                    with self._lock:
                        # A call queued between the timeout and this lock counted on
                        # this thread being idle: serve it instead of leaving.
                        if self._queue.empty():
                            self._idle -= 1
                            return
                    continue
                self._run(reply, work)  # its submitter took our idle count
                with self._lock:
                    self._idle += 1
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _run(self, reply: _Reply, work: Callable[[], Any]) -> None:
        try:
            result = work()
        except BaseException as exc:  # the caller hears of it, whatever it is
            error: BaseException | None = exc
            result = None
        else:
            error = None
        finally:
            with self._lock:
                self._in_flight -= 1
        reply.send(result, error)  # the caller raises it; this thread serves on


class _LoopReply:
    """Delivers a call's outcome to a future of an event loop (DaemonThreads.submit)."""

    __slots__ = ("_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self._loop, self._future = loop, future

    def send(self, result: Any, error: BaseException | None) -> None:
        future = self._future

        def deliver() -> None:
            if future.done():  # the caller timed out or was cancelled
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(deliver)


class _BlockingReply:
    """Hands a call's outcome to a thread blocked in DaemonThreads.call."""

    __slots__ = ("_done", "error", "value")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self.value: Any = None
        self.error: BaseException | None = None

    def send(self, result: Any, error: BaseException | None) -> None:
        self.value, self.error = result, error
        self._done.release()

    def wait(self, timeout: float) -> bool:
        return self._done.acquire(timeout=max(0.0, timeout))


_Reply = _LoopReply | _BlockingReply


# -- part threads -------------------------------------------------------------------------

_part = threading.local()


def on_part_thread() -> bool:
    """Whether this thread is running a part (blocking calls may run right here)."""
    return getattr(_part, "active", False)


async def off_loop(function: Callable[..., T], *args: Any) -> T:
    """function(*args) where it may block: at once on a part thread, otherwise
    in a thread (``asyncio.to_thread``)."""
    if on_part_thread():
        return function(*args)
    return await asyncio.to_thread(function, *args)


def _close_part_loop() -> None:
    loop: asyncio.AbstractEventLoop | None = getattr(_part, "loop", None)
    if loop is not None:
        _part.loop = None
        loop.close()


def run_here(coroutine: Coroutine[Any, Any, T]) -> T:
    """On a part thread (inside :meth:`PartThreads.submit`'s work): run the
    coroutine to its end on this thread's own event loop."""
    assert on_part_thread(), "run_here outside a part thread"
    loop: asyncio.AbstractEventLoop | None = getattr(_part, "loop", None)
    if loop is None:
        loop = _part.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coroutine)


@contextlib.contextmanager
def shared_reads() -> Iterator[None]:
    """On a part thread: while inside, the parts run here one after another share
    what :func:`shared_read` read (one diagnosis's snapshot)."""
    _part.reads = {}
    try:
        yield
    finally:
        _part.reads = None


async def shared_read(key: str, read: Callable[[], Awaitable[T]]) -> T:
    """read()'s result, read once per :func:`shared_reads` scope (elsewhere: each
    time). Only a result is shared: after a failure the next part reads again."""
    reads: dict[str, Any] | None = getattr(_part, "reads", None) if on_part_thread() else None
    if reads is None:
        return await read()
    if key not in reads:
        reads[key] = await read()
    return cast(T, reads[key])


def _as_part(work: Callable[[], T]) -> T:
    _part.active = True
    try:
        return work()
    finally:
        _part.active = False


class PartThreads:
    """One node's part threads. Eight host parts run one after another per diag
    host, and a diagnosis and a health run may overlap: ``max_in_flight``
    pending means parts hang, and further ones fail at once (ThreadsBusy)."""

    def __init__(self, max_in_flight: int = 16) -> None:
        self._threads = DaemonThreads(
            "check-part", max_in_flight=max_in_flight, on_exit=_close_part_loop
        )

    def submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """work() on a part thread, where it may :func:`run_here` coroutines whose
        blocking steps then run at once; its result on a future of the running
        loop. ThreadsBusy when too many parts are still running (hung)."""
        return self._threads.submit(lambda: _as_part(work))

    async def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The coroutine make() returns, run to its end on a part thread."""
        return await self.submit(lambda: run_here(make()))


class PartGate:
    """Lets one holder at a time through, across every node of the process, in
    the order they came.

    Host parts are a few milliseconds of Python each, with a blocking call
    every few dozen microseconds. Run on many threads at once, every one of
    those calls hands the GIL to another thread, and the hand-offs cost more CPU
    than the parts (measured: 50 simulated nodes' ``diag host`` at once in one
    process, 12.9 ms of CPU per node on their own threads, 3.9 ms one after
    another). So part threads take turns here.

    Turns are first come, first served: a thread arriving while others wait
    queues behind them, even at the instant the gate is free, so no waiter is
    passed over for ever by newcomers (a condition variable's wake-up lets a
    newcomer take the gate before the woken waiter runs). Only the first waiter
    is woken, by its own event, so a leave costs one wake-up however many wait.

    A holder that has held the gate for ``hold_limit`` seconds (a hung or slow
    part) loses it: the first waiter goes through, and the late holder's leave
    changes nothing. A hung part so delays the others by at most that much."""

    def __init__(self, hold_limit: float) -> None:
        self.hold_limit = hold_limit
        self._lock = threading.Lock()
        self._waiting: collections.deque[tuple[int, threading.Event]] = collections.deque()
        self._holder = 0  # the token of the current holder; 0: free
        self._held_since = 0.0  # monotonic
        self._issued = 0

    @property
    def waiting(self) -> int:
        """Threads queued for the gate now."""
        with self._lock:
            return len(self._waiting)

    def enter(self) -> int:
        """Wait for the turn (the gate free, or its holder past the limit, and no
        one queued earlier); the token to leave with."""
        with self._lock:
            self._issued += 1
            token = self._issued
            if not self._holder and not self._waiting:
                self._take(token)
                return token
            turn = threading.Event()
            entry = (token, turn)
            self._waiting.append(entry)
        try:
            while True:
                with self._lock:
                    turn.clear()  # under the lock: a wake-up after this is kept
                    wait: float | None = None  # not first: woken on becoming first
                    if self._waiting[0][0] == token:
                        overrun = self._held_since + self.hold_limit - time.monotonic()
                        if not self._holder or overrun <= 0:
                            self._waiting.popleft()
                            self._take(token)
                            self._wake_first()  # to start its own wait for the limit
                            return token
                        wait = overrun
                turn.wait(wait)
        except BaseException:
            # Interrupted while queued (KeyboardInterrupt, say): leave the queue,
            # or every thread behind would wait for a turn no one takes.
            self._withdraw(entry)
            raise

    def _withdraw(self, entry: tuple[int, threading.Event]) -> None:
        with self._lock:
            if entry not in self._waiting:  # it had its turn already
                return
            first = self._waiting[0] == entry
            self._waiting.remove(entry)
            if first:
                self._wake_first()

    def _take(self, token: int) -> None:
        self._holder, self._held_since = token, time.monotonic()

    def _wake_first(self) -> None:
        if self._waiting:
            self._waiting[0][1].set()

    def leave(self, token: int) -> None:
        with self._lock:
            if self._holder == token:  # not taken over meanwhile
                self._holder = 0
                self._wake_first()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        token = self.enter()
        try:
            yield
        finally:
            self.leave(token)
