"""The registrar over scripted controller links: failover order, backoff, retries on
one controller, and the hook reports heartbeats carry. No servers: every answer is
scripted per controller address, every sleep recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from novaops.executor.health import HealthVerdict
from novaops.executor.registration import (
    Backoff,
    ControllerLink,
    Registrar,
    RegistrationStatus,
    next_controller_index,
)
from novaops.v1 import common_pb2, controller_pb2


class LinkScript:
    """ControllerLinks whose answers are scripted per controller address."""

    def __init__(self, reachable: set[str]) -> None:
        self.reachable = reachable
        self.slow: set[str] = set()  # heartbeats there time out
        self.calls: list[str] = []
        self.heartbeats: list[controller_pb2.HeartbeatRequest] = []
        self.records_synced = True  # answers say a synced_quarantine was recorded
        self.intervals: list[int] = []  # heartbeat answers' intervals, in order (then 0)

    def connect(self, target: str) -> ControllerLink:
        script = self

        class Link:
            async def register(
                self, request: controller_pb2.RegisterRequest, timeout: float
            ) -> controller_pb2.RegisterResponse:
                script.calls.append(f"register {target}")
                if target not in script.reachable:
                    raise ConnectionRefusedError(f"{target} refused")
                return controller_pb2.RegisterResponse(heartbeat_interval_ms=1000)

            async def heartbeat(
                self, request: controller_pb2.HeartbeatRequest, timeout: float
            ) -> controller_pb2.HeartbeatResponse:
                script.calls.append(f"heartbeat {target}")
                script.heartbeats.append(request)
                if target in script.slow:
                    raise TimeoutError
                if target not in script.reachable:
                    raise ConnectionResetError(f"{target} went away")
                return controller_pb2.HeartbeatResponse(
                    known=True,
                    heartbeat_interval_ms=script.intervals.pop(0) if script.intervals else 0,
                    synced_quarantine_recorded=(
                        request.HasField("synced_quarantine") and script.records_synced
                    ),
                )

            async def close(self) -> None:
                pass

        return Link()


async def _no_facts() -> common_pb2.HostFacts:
    return common_pb2.HostFacts()


async def _healthy() -> HealthVerdict:
    return HealthVerdict(common_pb2.HEALTH_STATUS_HEALTHY)


def scripted_registrar(
    controllers: list[str],
    connect: Callable[[str], ControllerLink],
    sleep: Callable[[float], Awaitable[None]],
    **extra: Any,
) -> Registrar:
    return Registrar(
        node="node-1",
        address="127.0.0.1:7501",
        version="test",
        controllers=controllers,
        connect=connect,
        facts=_no_facts,
        health=_healthy,
        sleep=sleep,
        rand=lambda: 0.0,
        **extra,
    )


async def test_registration_fails_over_in_order_with_capped_backoff() -> None:
    script = LinkScript(reachable=set())
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 6:
            script.reachable = {"c2"}  # c2 comes back
        if len(sleeps) == 9:
            script.reachable = {"c1"}  # c2 dies while the node heartbeats there
        if len(sleeps) >= 11:
            raise asyncio.CancelledError

    registrar = scripted_registrar(
        ["c1", "c2", "c3"],
        script.connect,
        fake_sleep,
        backoff=Backoff(initial_seconds=1.0, cap_seconds=4.0, jitter=0.5),
    )
    with pytest.raises(asyncio.CancelledError):
        await registrar.run()
    assert script.calls[:7] == [
        "register c1",
        "register c2",
        "register c3",
        "register c1",
        "register c2",
        "register c3",
        "register c1",
    ]
    assert sleeps[:6] == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]  # capped
    assert script.calls[7:] == [
        "register c2",
        "heartbeat c2",  # at once: it carries the health registration lacks
        "heartbeat c2",
        "heartbeat c2",  # fails: c2 went away; move on to c3, then c1
        "register c3",
        "register c1",
        "heartbeat c1",
    ]
    assert registrar.status.controller == "c1"


async def test_hooks_run_from_a_heartbeat_are_reported_until_recorded() -> None:
    """A quarantine applied from a heartbeat response goes back with the next
    heartbeats (its hook lines) until a controller says it recorded it: through a
    heartbeat that timed out and one whose event could not be stored."""
    script = LinkScript(reachable={"c1"})
    script.records_synced = False
    synced = controller_pb2.SyncedQuarantine(
        quarantined=True, hook_results=["10-drain: exit 3: scheduler down"], reason="disk"
    )
    released = controller_pb2.SyncedQuarantine(quarantined=False, hook_results=["20-up: ok"])
    sleeps: list[float] = []
    registrar: Registrar

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            registrar.status.report_synced(synced)  # the sync loop applied a change
            script.slow = {"c1"}
        if len(sleeps) == 2:
            script.slow = set()  # answered, but the event store failed: kept
            registrar.status.report_synced(released)  # released before it was recorded
        if len(sleeps) == 3:
            script.records_synced = True
        if len(sleeps) >= 6:
            raise asyncio.CancelledError

    registrar = scripted_registrar(["c1"], script.connect, fake_sleep)
    with pytest.raises(asyncio.CancelledError):
        await registrar.run()
    sent = [
        (h.synced_quarantine.quarantined if h.HasField("synced_quarantine") else None)
        for h in script.heartbeats
    ]
    # Both reports, oldest first, each until recorded; then none.
    assert sent == [None, True, True, True, False, None]
    assert script.heartbeats[1].synced_quarantine == synced
    assert script.heartbeats[4].synced_quarantine == released
    assert registrar.status.synced == []


async def test_single_controller_heartbeat_failures_retry_without_registering_again() -> None:
    # With one controller, a slow answer is retried on the same link at the next
    # beat: no reconnect, no new registration (that was a storm at 500 nodes).
    # An unreachable one still gets a new link and a registration.
    script = LinkScript(reachable={"c1"})
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            script.slow = {"c1"}  # two beats time out
        if len(sleeps) == 4:
            script.slow = set()
        if len(sleeps) == 5:
            script.reachable = set()  # c1 goes away: the next beat fails over
        if len(sleeps) == 6:
            script.reachable = {"c1"}
        if len(sleeps) >= 7:
            raise asyncio.CancelledError

    registrar = scripted_registrar(["c1"], script.connect, fake_sleep)
    states: list[bool] = []
    original = script.connect

    def connect(target: str) -> ControllerLink:
        link = original(target)
        heartbeat = link.heartbeat

        async def watched(
            request: controller_pb2.HeartbeatRequest, timeout: float
        ) -> controller_pb2.HeartbeatResponse:
            states.append(registrar.status.registered)
            return await heartbeat(request, timeout)

        link.heartbeat = watched  # type: ignore[method-assign]
        return link

    registrar.connect = connect
    with pytest.raises(asyncio.CancelledError):
        await registrar.run()
    assert script.calls == ["register c1"] + ["heartbeat c1"] * 6 + [
        "register c1",  # at once on a new link: refused (still unreachable)
        "register c1",  # after the backoff
        "heartbeat c1",
    ]
    # the heartbeat interval while slow; a registration backoff once unreachable
    assert sleeps[:5] == [1.0] * 5 and len(sleeps) == 7
    # registered before each beat: yes, yes, no (timed out), no (timed out), yes...
    assert states == [True, True, True, False, False, True, True]
    assert registrar.status.registered and registrar.status.heartbeats_sent == 4


def test_backoff_and_failover_order_are_pure() -> None:
    backoff = Backoff(initial_seconds=0.2, cap_seconds=3.0, jitter=0.5)
    assert [backoff.delay(n, 0.0) for n in (1, 2, 3, 4, 5, 6)] == [0.2, 0.4, 0.8, 1.6, 3.0, 3.0]
    assert backoff.delay(6, 0.999) >= 1.5  # jitter takes at most half away
    assert [next_controller_index(i, 3) for i in range(3)] == [1, 2, 0]


async def test_reports_not_yet_recorded_survive_a_restart(tmp_path: Path) -> None:
    """The queue is kept in the state dir: an executor stopped before a controller
    recorded its reports sends them after it starts again, oldest first."""
    journal = tmp_path / "synced-reports.json"
    first = RegistrationStatus()
    first.restore_synced(journal)  # no file yet: nothing to take up
    synced = controller_pb2.SyncedQuarantine(quarantined=True, hook_results=["10-drain: ok"])
    synced.since.FromSeconds(1_700_000_000)
    released = controller_pb2.SyncedQuarantine(quarantined=False, reason="fixed")
    first.report_synced(synced)
    first.report_synced(released)
    await first.flush_synced()

    script = LinkScript(reachable={"c1"})
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= 3:
            raise asyncio.CancelledError

    restarted = RegistrationStatus()
    restarted.restore_synced(journal)
    assert restarted.synced == [synced, released]
    registrar = scripted_registrar(["c1"], script.connect, fake_sleep, status=restarted)
    with pytest.raises(asyncio.CancelledError):
        await registrar.run()
    await restarted.flush_synced()
    sent = [
        h.synced_quarantine if h.HasField("synced_quarantine") else None for h in script.heartbeats
    ]
    assert sent == [synced, released, None]
    again = RegistrationStatus()
    again.restore_synced(journal)
    assert again.synced == []  # recorded ones are gone from the file too


async def test_an_unreadable_journal_is_set_aside(tmp_path: Path) -> None:
    journal = tmp_path / "synced-reports.json"
    journal.write_text('{"reports": ["not base64!"]}')
    status = RegistrationStatus()
    status.restore_synced(journal)
    assert status.synced == []
    assert (tmp_path / "synced-reports.json.bad").exists()
    assert not journal.exists()
    status.report_synced(controller_pb2.SyncedQuarantine(quarantined=True))
    await status.flush_synced()
    assert journal.exists()  # the journal starts afresh


async def test_the_node_heartbeats_at_the_interval_each_answer_gives() -> None:
    # The controller stretches the interval as the fleet grows (and shrinks it
    # back); an answer without one keeps the interval the node has.
    script = LinkScript(reachable={"c1"})
    script.intervals = [1000, 10000, 0, 2500]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= 4:
            raise asyncio.CancelledError

    registrar = scripted_registrar(["c1"], script.connect, fake_sleep)
    with pytest.raises(asyncio.CancelledError):
        await registrar.run()
    # Registration said 1 s; each sleep follows the answer before it.
    assert sleeps == [1.0, 10.0, 10.0, 2.5]
