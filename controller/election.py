"""Leader election: a pure state machine and the thin async loop that drives it.

``LeadershipState`` decides, from events and the monotonic time they happened,
whether this replica leads. Its key rule: a leader whose last successful
keepalive was *sent* more than ``ttl - safety_margin`` ago is not leader any
more, even while the store call that would renew it is still hanging — the
store may already have expired the lease and let another replica win.

``Elector`` runs it: campaign every ttl/3 while follower, renew every ttl/3
while leader, back off on store errors (logged, never fatal), and resign in a
``finally`` on ``stop()`` so a peer takes over without waiting for the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from novaops.controller.clock import Clock, SystemClock
from novaops.controller.store.base import LeaderTerm, Store, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BACKOFF_SECONDS = 10.0


@dataclass(frozen=True)
class LeadershipChange:
    """This replica became leader (``leader=True``, the term won) or stopped leading."""

    leader: bool
    term: LeaderTerm
    reason: str


class LeadershipState:
    """What this replica believes about its own leadership; pure, time passed in.

    ``now`` and ``sent_at`` are monotonic seconds. A renewal counts from when
    its request was sent, not when the answer came: the store renewed the
    lease somewhere in between, so the send time is the safe lower bound.
    """

    def __init__(self, ttl_seconds: float, safety_margin: float | None = None) -> None:
        if ttl_seconds <= 0:
            raise ValueError("the leader lease TTL must be positive")
        margin = ttl_seconds / 5 if safety_margin is None else safety_margin
        if not 0 <= margin < ttl_seconds * 2 / 3:
            # Renewals come every ttl/3; the margin must leave room for them.
            raise ValueError(f"safety margin {margin} must be in [0, 2/3 of ttl {ttl_seconds})")
        self.ttl = float(ttl_seconds)
        self.safety_margin = float(margin)
        self.interval = self.ttl / 3
        self.term: LeaderTerm | None = None
        self.renewed_at: float | None = None
        self.failures = 0  # consecutive store errors, for backoff

    def valid_until(self) -> float | None:
        """The monotonic time after which the held term must not be trusted."""
        if self.term is None or self.renewed_at is None:
            return None
        return self.renewed_at + self.ttl - self.safety_margin

    def is_leader(self, now: float) -> bool:
        until = self.valid_until()
        return until is not None and now < until

    def campaign_won(self, term: LeaderTerm, sent_at: float, now: float) -> LeadershipChange | None:
        self.term, self.renewed_at, self.failures = term, sent_at, 0
        # An answer that took longer than the lease is already stale.
        return self.expire(now) or LeadershipChange(True, term, "won the election")

    def campaign_lost(self) -> None:
        self.failures = 0

    def keepalive_ok(self, sent_at: float, now: float) -> LeadershipChange | None:
        if self.term is None:
            return None
        self.renewed_at = max(self.renewed_at or sent_at, sent_at)
        self.failures = 0
        return self.expire(now)

    def keepalive_refused(self) -> LeadershipChange | None:
        """The store says the term is gone (lease expired or key replaced)."""
        return self.step_down("the store no longer holds our term")

    def store_failed(self, now: float) -> LeadershipChange | None:
        self.failures += 1
        return self.expire(now)

    def expire(self, now: float) -> LeadershipChange | None:
        if self.term is not None and not self.is_leader(now):
            return self.step_down(
                f"no successful keepalive for {self.ttl - self.safety_margin:g}s "
                f"(lease {self.ttl:g}s - margin {self.safety_margin:g}s)"
            )
        return None

    def step_down(self, reason: str) -> LeadershipChange | None:
        term, self.term, self.renewed_at = self.term, None, None
        return None if term is None else LeadershipChange(False, term, reason)

    def next_delay(self, now: float) -> float:
        """Seconds until the loop should act again (campaign or keepalive)."""
        until = self.valid_until()
        if until is not None:
            # After an error retry sooner, but never past the point of stepping down.
            delay = self.interval / 2 if self.failures else self.interval
            return max(0.0, min(delay, until - now))
        if self.failures:
            return min(self.interval * 2.0 ** min(self.failures, 16), MAX_BACKOFF_SECONDS)
        return self.interval


OnChange = Callable[[LeaderTerm | None], object]


class Elector:
    """Keeps campaigning for, or holding, leadership of ``store`` for replica ``name``.

    ``on_change`` is called with the new term when this replica becomes leader
    and with None when it stops; exceptions it raises are logged. Tests drive
    ``step()`` directly under a FakeClock; ``run()`` loops over it.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        address: str,
        ttl_seconds: int,
        clock: Clock | None = None,
        on_change: OnChange | None = None,
        *,
        safety_margin: float | None = None,
        call_timeout: float | None = None,
    ) -> None:
        self._store = store
        self._name = name
        self._address = address
        self._ttl = int(ttl_seconds)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._on_change = on_change
        self._state = LeadershipState(self._ttl, safety_margin)
        # Real seconds a store call may take; a keepalive also never waits past
        # the point where the term stops being trusted.
        self._call_timeout = float(call_timeout if call_timeout is not None else self._ttl)
        self._stale: list[LeaderTerm] = []  # terms given up locally, still to resign
        self._hold_off_until = 0.0  # monotonic; no campaigning before (leader transfer)
        self._stopping = asyncio.Event()
        self._running = False
        self._stopped = asyncio.Event()

    @property
    def state(self) -> LeadershipState:
        return self._state

    def is_leader(self) -> bool:
        """True only while the term is renewed recently enough to be trusted now."""
        return self._state.is_leader(self._clock.monotonic())

    @property
    def term(self) -> LeaderTerm | None:
        """The held term (pass it as the fence of mutations), or None when not leader."""
        return self._state.term if self.is_leader() else None

    async def step(self) -> float:
        """Do whatever is due once (campaign or keepalive); return seconds until the next step."""
        self._emit(self._state.expire(self._clock.monotonic()))
        await self._resign_stale()
        if not self._stopping.is_set():
            if self._state.term is None:
                if self._clock.monotonic() < self._hold_off_until:
                    return max(0.05, self._hold_off_until - self._clock.monotonic())
                await self._campaign()
            else:
                await self._keepalive(self._state.term)
        return self._state.next_delay(self._clock.monotonic())

    async def run(self) -> None:
        """Step until ``stop()``; store errors are logged and retried, never raised."""
        self._running = True
        self._stopped.clear()
        try:
            while not self._stopping.is_set():
                try:
                    delay = await self.step()
                except Exception:
                    log.exception("election step failed; retrying")
                    delay = self._state.interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        finally:
            self._running = False
            self._stopped.set()
            if self._state.term is not None or self._stale:
                # Cancelled without stop(): still hand the lease back.
                await self._give_up("election loop ended")

    async def hand_over(self, hold_off_seconds: float) -> bool:
        """Resign now and stay out of elections for hold_off_seconds (leader transfer).

        Returns False when this replica was not the leader. Another replica wins
        the next campaign; if none does within the hold-off, this one may again.
        """
        if self._state.term is None:
            return False
        self._hold_off_until = self._clock.monotonic() + hold_off_seconds
        await self._give_up("leadership handed over")
        return True

    async def stop(self) -> None:
        """Stop campaigning and resign if leading; returns once the resign was attempted."""
        self._stopping.set()
        try:
            if self._running:
                # Let an in-flight campaign or keepalive finish, so its outcome
                # is known and can be resigned below.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), timeout=self._call_timeout)
        finally:
            await self._give_up("controller stopping")

    # -- the steps -----------------------------------------------------------

    async def _call(self, call: Awaitable[T], timeout: float) -> T:
        return await asyncio.wait_for(call, timeout=max(timeout, 0.001))

    async def _campaign(self) -> None:
        sent_at = self._clock.monotonic()
        try:
            term = await self._call(
                self._store.campaign(self._name, self._address, self._ttl), self._call_timeout
            )
        except (StoreError, TimeoutError) as exc:
            self._state.store_failed(self._clock.monotonic())
            self._log_failure("campaign", exc)
            return
        if term is None:
            self._state.campaign_lost()
            return
        if self._stopping.is_set():
            self._stale.append(term)  # won while stopping: give it straight back
            await self._resign_stale()
            return
        self._emit(self._state.campaign_won(term, sent_at, self._clock.monotonic()))

    async def _keepalive(self, term: LeaderTerm) -> None:
        sent_at = self._clock.monotonic()
        until = self._state.valid_until()
        timeout = self._call_timeout if until is None else min(self._call_timeout, until - sent_at)
        try:
            kept = await self._call(self._store.keep_leadership(term), timeout)
        except (StoreError, TimeoutError) as exc:
            change = self._state.store_failed(self._clock.monotonic())
            self._log_failure("keepalive", exc)
            self._emit(change)
            return
        if self._state.term != term:
            return  # given up while the call was in flight
        if kept:
            self._emit(self._state.keepalive_ok(sent_at, self._clock.monotonic()))
        else:
            self._emit(self._state.keepalive_refused())

    async def _resign_stale(self) -> None:
        while self._stale:
            term = self._stale.pop(0)
            try:
                await self._call(self._store.resign(term), self._call_timeout)
            except (StoreError, TimeoutError) as exc:
                # The lease runs out by itself; resigning only makes handover faster.
                log.warning("could not resign term %d: %s", term.record.revision, exc or "timeout")

    async def _give_up(self, reason: str) -> None:
        self._emit(self._state.step_down(reason))
        await self._resign_stale()

    def _emit(self, change: LeadershipChange | None) -> None:
        if change is None:
            return
        revision = change.term.record.revision
        if change.leader:
            log.info("%s is leader (term %d): %s", self._name, revision, change.reason)
        else:
            log.warning("%s is no longer leader (term %d): %s", self._name, revision, change.reason)
            self._stale.append(change.term)
        if self._on_change is not None:
            try:
                self._on_change(change.term if change.leader else None)
            except Exception:
                log.exception("leadership change callback failed")

    def _log_failure(self, what: str, exc: BaseException) -> None:
        detail = str(exc) or type(exc).__name__
        log.warning(
            "election %s failed (%d in a row; next try in %.1fs): %s",
            what,
            self._state.failures,
            self._state.next_delay(self._clock.monotonic()),
            detail,
        )
