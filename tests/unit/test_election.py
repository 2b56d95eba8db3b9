"""Leader election under a FakeClock: the pure state, then Elector against MemoryStore."""

from __future__ import annotations

import asyncio

import pytest

from novaops.controller.clock import FakeClock
from novaops.controller.election import MAX_BACKOFF_SECONDS, Elector, LeadershipState
from novaops.controller.store.base import (
    LeaderRecord,
    LeaderTerm,
    StoreUnavailable,
)
from novaops.controller.store.memory import MemoryStore

TTL = 6  # interval 2 s, margin 1.2 s: the term is trusted for 4.8 s after a renewal


def term(revision: int = 7) -> LeaderTerm:
    return LeaderTerm(LeaderRecord("ctl-0", "a:1", 0.0, revision, TTL), lease_id=revision)


# -- LeadershipState (pure) ----------------------------------------------------------


def test_leader_only_until_ttl_minus_margin_after_the_last_renewal() -> None:
    state = LeadershipState(TTL, safety_margin=1.0)
    change = state.campaign_won(term(), sent_at=100.0, now=100.1)
    assert change is not None
    assert change.leader
    assert state.is_leader(104.9)
    # No keepalive came back (the store call may simply be hanging): at
    # ttl - margin the replica must stop believing it leads.
    assert not state.is_leader(105.0)
    lost = state.expire(105.0)
    assert lost is not None
    assert (lost.leader, lost.term) == (False, term())
    assert state.term is None
    assert state.expire(106.0) is None


def test_a_renewal_counts_from_when_it_was_sent() -> None:
    state = LeadershipState(TTL, safety_margin=1.0)
    state.campaign_won(term(), sent_at=100.0, now=100.0)
    assert state.keepalive_ok(sent_at=102.0, now=104.0) is None
    assert state.valid_until() == 107.0  # 102 + 6 - 1, not 104 + 6 - 1
    # An answer that arrives after its own send time + ttl - margin cannot be trusted.
    late = state.keepalive_ok(sent_at=103.0, now=108.5)
    assert late is not None
    assert not late.leader


def test_slow_campaign_answer_is_already_stale() -> None:
    state = LeadershipState(TTL, safety_margin=1.0)
    assert state.campaign_won(term(), sent_at=100.0, now=105.5) is not None
    assert state.term is None


def test_keepalive_refused_and_store_errors() -> None:
    state = LeadershipState(TTL, safety_margin=1.0)
    state.campaign_won(term(), sent_at=0.0, now=0.0)
    assert state.store_failed(now=2.0) is None  # still within the lease: keep leading
    assert state.is_leader(2.0)
    refused = state.keepalive_refused()
    assert refused is not None
    assert not refused.leader
    assert state.keepalive_refused() is None
    assert state.keepalive_ok(sent_at=3.0, now=3.0) is None  # nothing held: ignored


def test_next_delay_schedules_and_backs_off() -> None:
    state = LeadershipState(TTL, safety_margin=1.0)
    assert state.next_delay(0.0) == pytest.approx(2.0)  # follower: campaign every ttl/3
    delays = []
    for _ in range(6):
        state.store_failed(now=0.0)
        delays.append(state.next_delay(0.0))
    assert delays == [4.0, 8.0, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS, 10.0, 10.0]
    state.campaign_lost()
    assert state.next_delay(0.0) == pytest.approx(2.0)

    state.campaign_won(term(), sent_at=10.0, now=10.0)
    assert state.next_delay(10.0) == pytest.approx(2.0)
    state.store_failed(now=14.0)
    assert state.next_delay(14.0) == pytest.approx(1.0)  # retry sooner while leading
    assert state.next_delay(14.5) == pytest.approx(0.5)  # never past valid_until (15)


def test_margin_must_leave_room_for_renewals() -> None:
    with pytest.raises(ValueError):
        LeadershipState(6, safety_margin=4.0)
    with pytest.raises(ValueError):
        LeadershipState(0)
    assert LeadershipState(5).safety_margin == pytest.approx(1.0)


# -- Elector against MemoryStore ----------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.changes: list[LeaderTerm | None] = []

    def __call__(self, term: LeaderTerm | None) -> None:
        self.changes.append(term)


def elector(
    store: MemoryStore, clock: FakeClock, name: str = "ctl-0", **kwargs: float
) -> tuple[Elector, Recorder]:
    recorder = Recorder()
    return Elector(store, name, f"{name}:7400", TTL, clock, recorder, **kwargs), recorder


async def test_elector_wins_keeps_and_resigns_on_stop() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    first, seen = elector(store, clock)
    assert await first.step() == pytest.approx(2.0)
    assert first.is_leader()
    assert first.term is not None
    assert seen.changes == [first.term]
    for _ in range(10):  # 20 s of keepalives: well past the 6 s lease
        clock.advance(2.0)
        await first.step()
    assert first.is_leader()
    assert len(seen.changes) == 1

    await first.stop()
    assert not first.is_leader()
    assert seen.changes[-1] is None
    assert await store.get_leader() is None


async def test_follower_takes_over_after_a_resign() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    first, _ = elector(store, clock, "ctl-0")
    second, seen = elector(store, clock, "ctl-1")
    await first.step()
    await second.step()
    assert first.is_leader()
    assert not second.is_leader()
    won = first.term
    assert won is not None

    await first.stop()
    await second.step()
    assert second.is_leader()
    assert second.term is not None
    assert second.term.record.revision > won.record.revision
    assert seen.changes == [second.term]


async def test_follower_takes_over_when_the_leader_stops_renewing() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    first, first_seen = elector(store, clock, "ctl-0")
    second, _ = elector(store, clock, "ctl-1")
    await first.step()
    clock.advance(TTL + 0.1)  # the first leader's loop is stuck; its lease runs out
    assert not first.is_leader()  # it knows without any store call
    await second.step()
    assert second.is_leader()

    await first.step()  # the stuck loop comes back
    assert not first.is_leader()
    assert first_seen.changes[-1] is None
    await first.step()  # and campaigns like any follower
    assert not first.is_leader()
    assert second.is_leader()


class HangingStore(MemoryStore):
    """A store whose keepalive or campaign never answers until released."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.hang_keepalive = False
        self.hang_campaign = False
        self.release = asyncio.Event()

    async def keep_leadership(self, term: LeaderTerm) -> bool:
        if self.hang_keepalive:
            await self.release.wait()
        return await super().keep_leadership(term)

    async def campaign(self, name: str, address: str, ttl_seconds: int) -> LeaderTerm | None:
        if self.hang_campaign:
            await self.release.wait()
        return await super().campaign(name, address, ttl_seconds)


async def test_leader_with_a_hanging_keepalive_stops_leading_at_the_deadline() -> None:
    clock = FakeClock()
    store = HangingStore(clock)
    leader, seen = elector(store, clock)
    await leader.step()
    clock.advance(2.0)
    store.hang_keepalive = True
    stuck = asyncio.create_task(leader.step())
    await asyncio.sleep(0)
    assert leader.is_leader()
    clock.advance(2.7)  # 4.7 s since the last renewal was sent: still trusted
    assert leader.is_leader()
    clock.advance(0.1)  # 4.8 s = ttl - margin, the keepalive still hanging
    assert not leader.is_leader()
    assert leader.term is None

    clock.advance(2.1)  # past the store's own lease expiry too
    store.release.set()
    await stuck
    assert not leader.is_leader()
    assert seen.changes[-1] is None


async def test_a_timed_out_keepalive_steps_down_once_past_the_deadline() -> None:
    clock = FakeClock()
    store = HangingStore(clock)
    leader, seen = elector(store, clock, call_timeout=0.005)
    await leader.step()
    store.hang_keepalive = True
    clock.advance(2.0)
    await leader.step()  # times out after 5 ms: an error, but the term is still valid
    assert leader.is_leader()
    assert leader.state.failures == 1
    clock.advance(3.0)  # 5 s since the last renewal was sent: past ttl - margin
    await leader.step()
    # It stepped down, resigned the untrusted term, and campaigned afresh: the
    # store still answers campaigns, so it leads again under a new fencing token.
    first, dropped, second = seen.changes
    assert dropped is None
    assert first is not None
    assert second is not None
    assert second.record.revision > first.record.revision


async def test_store_errors_back_off_and_never_raise() -> None:
    clock = FakeClock()

    class DownStore(MemoryStore):
        async def campaign(self, name: str, address: str, ttl_seconds: int) -> LeaderTerm | None:
            raise StoreUnavailable("etcd unreachable at http://127.0.0.1:1")

    follower, seen = elector(DownStore(clock), clock)
    delays = [await follower.step() for _ in range(4)]
    assert delays == [4.0, 8.0, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS]
    assert seen.changes == []


async def test_a_term_won_while_stopping_is_handed_back() -> None:
    clock = FakeClock()
    store = HangingStore(clock)
    store.hang_campaign = True
    candidate, seen = elector(store, clock)
    in_flight = asyncio.create_task(candidate.step())
    await asyncio.sleep(0)
    await candidate.stop()
    store.release.set()
    await in_flight
    assert not candidate.is_leader()
    assert seen.changes == []
    assert await store.get_leader() is None


async def test_run_leads_until_stopped() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    leader, seen = elector(store, clock)
    loop = asyncio.create_task(leader.run())
    for _ in range(100):
        if leader.is_leader():
            break
        await asyncio.sleep(0.001)
    assert leader.is_leader()
    await leader.stop()
    await asyncio.wait_for(loop, timeout=1.0)
    assert seen.changes == [seen.changes[0], None]
    assert await store.get_leader() is None
