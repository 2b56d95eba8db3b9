"""What the CLI shows of a recovery's overall outcome and of the automation's state."""

from __future__ import annotations

import dataclasses

import pytest

from novaops.cli import render
from novaops.client.models import ClusterStatus, Leader, RecoveryStepView, recovery_outcomes


def step(node: str, action: str, outcome: str, fatal: bool = False) -> RecoveryStepView:
    return RecoveryStepView(node, action, f"{action} step", outcome, "", None, fatal)


def test_overall_outcome_per_node_and_action() -> None:
    steps = [
        step("n1", "remove-stale-locks", "done"),
        step("n1", "remove-stale-locks", "failed"),
        step("n2", "remove-stale-locks", "skipped"),
        step("n1", "terminate-orphans", "failed", fatal=True),
        step("n3", "terminate-orphans", "planned"),
        step("n3", "terminate-orphans", "skipped"),
    ]
    found = {(o.node, o.action): (o.outcome, o.failed_steps) for o in recovery_outcomes(steps)}
    assert found == {
        ("n1", "remove-stale-locks"): ("partial", 1),
        ("n2", "remove-stale-locks"): ("done", 0),
        ("n1", "terminate-orphans"): ("failed", 1),
        ("n3", "terminate-orphans"): ("planned", 0),
    }


def test_recovery_table_ends_with_the_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    steps = [step("n1", "remove-stale-locks", "done"), step("n1", "remove-stale-locks", "failed")]
    render.recovery_steps(steps, (), recovery_outcomes(steps))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "n1  remove-stale-locks: partial (1 of 2 steps failed)"


STATUS = ClusterStatus(
    nodes_total=1,
    nodes_up=1,
    nodes_down=0,
    nodes_quarantined=0,
    leader=Leader("ctl-0", "127.0.0.1:7400", None, 3, 5),
    store="embedded",
    store_endpoint="/tmp/x.db",
    answered_by="ctl-0",
    automation_paused=False,
    breaker_tripped=False,
    version="0.1.0",
    automation_enabled=True,
)


@pytest.mark.parametrize(
    ("enabled", "paused", "wording"),
    [
        (False, False, "disabled in the controller config (ctl-0)"),
        (False, True, "disabled in the controller config (ctl-0)"),
        (True, True, "paused by an operator"),
        (True, False, "active on the leader"),
    ],
)
def test_automation_wording(
    enabled: bool, paused: bool, wording: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = dataclasses.replace(STATUS, automation_enabled=enabled, automation_paused=paused)
    assert render.automation_wording(status) == wording
    render.cluster_status(status)
    assert f"automation:  {wording}; breaker ok" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (4 * 1024**3, "4.0 GiB"),
        (89816174304427, "81.7 TiB"),
        (3 * 1024**5, "3.0 PiB"),
    ],
)
def test_byte_sizes_read_in_binary_units(count: int, text: str) -> None:
    assert render.byte_size(count) == text


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (0, "0.0 s"),
        (12_345_000_000, "12.3 s"),
        (125 * 10**9, "2m 05s"),
        ((2 * 3600 + 5 * 60 + 7) * 10**9, "2h 05m 07s"),
        (1796323486 * 10**9, "498978h 44m 46s"),
    ],
)
def test_cpu_time_reads_as_hours_minutes_seconds(nanoseconds: int, text: str) -> None:
    assert render.cpu_time(nanoseconds) == text
