"""Pure registry rules: the liveness TTL and the heartbeat interval for a fleet."""

from __future__ import annotations

import pytest

from novaops.controller.registry import HeartbeatPacing, liveness_ttl, paced_interval_ms


@pytest.mark.parametrize(
    ("base_ms", "nodes", "rate", "expected"),
    [
        (1000, 0, 50.0, 1000),  # no fleet yet: the configured interval
        (1000, 50, 50.0, 1000),  # 50 beats/s at 1 s: within the rate
        (1000, 51, 50.0, 1020),  # one more node stretches it
        (1000, 500, 50.0, 10_000),
        (5000, 100, 50.0, 5000),  # a slower configured interval is kept
        (1000, 500, 0.0, 1000),  # 0: never stretched
        (1000, 3, 0.5, 6000),
    ],
)
def test_the_interval_keeps_the_fleet_under_the_rate(
    base_ms: int, nodes: int, rate: float, expected: int
) -> None:
    assert paced_interval_ms(base_ms, nodes, rate) == expected
    if rate and nodes:
        assert nodes / (paced_interval_ms(base_ms, nodes, rate) / 1000) <= rate + 1e-9


def test_pacing_follows_the_fleet_both_ways_and_its_ttl_goes_with_it() -> None:
    pacing = HeartbeatPacing(1000, 3, 50.0)
    assert (pacing.interval_ms, pacing.ttl) == (1000, liveness_ttl(1000, 3))
    pacing.observe(1000)
    assert pacing.interval_ms == 20_000
    assert pacing.ttl == liveness_ttl(20_000, 3) == 62.0  # 3 x 20 s + the 2 s grace cap
    pacing.observe(10)  # nodes removed: back to the configured interval
    assert (pacing.interval_ms, pacing.ttl) == (1000, 3.5)
