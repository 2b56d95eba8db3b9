"""Network checks in a network namespace made by the test (pyroute2).

The namespace holds bridge ``br0`` with STP on; veth ``vnet0`` (web-1's tap) and
``stray0`` (no domain's) are in it; ``vnet1`` (web-2's tap) exists but is not.
A thread flaps vnet0's peer during the counter window to produce carrier
changes; a tap ``vnet9`` no domain claims is the leaked tap. The namespace is
removed in the fixture's finally, whatever happens.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from novaops.executor.checks import leftovers
from novaops.executor.checks.domains import FakeDomainSource
from novaops.executor.checks.model import CheckResult, Status
from novaops.executor.checks.runner import DiagnoseTarget, TargetKind, run_diagnose
from novaops.executor.checks.sources import CheckSources, CheckTimings
from novaops.executor.hostroot import HostRoot
from novaops.executor.libvirt_access import PAUSED, RUNNING, SHUTOFF, DomainRecord

pytestmark = pytest.mark.netns

pyroute2 = pytest.importorskip("pyroute2")


def _record(name: str, state: int) -> DomainRecord:
    return DomainRecord(name, "", state, "unknown", 1, 1024, True, False)


def _xml(name: str, tap: str) -> str:
    return (
        f"<domain type='kvm'><name>{name}</name><devices><interface type='bridge'>"
        f"<source bridge='br0'/><target dev='{tap}'/></interface></devices></domain>"
    )


DOMAINS = FakeDomainSource(
    [
        (_record("web-1", RUNNING), _xml("web-1", "vnet0")),
        (_record("web-2", PAUSED), _xml("web-2", "vnet1")),
        (_record("old-1", SHUTOFF), _xml("old-1", "vnet5")),  # not running: not expected
    ]
)


@pytest.fixture
def netns() -> Iterator[str]:
    from pyroute2 import IPRoute, netns

    name = f"novaops-test-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        with IPRoute(netns=name) as ipr:
            ipr.link("add", ifname="br0", kind="bridge", br_stp_state=1, br_forward_delay=200)
            bridge = ipr.link_lookup(ifname="br0")[0]
            for tap, peer in (("vnet0", "vnet0-p"), ("vnet1", "vnet1-p"), ("stray0", "stray0-p")):
                ipr.link("add", ifname=tap, kind="veth", peer=peer)
                ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], state="up")
                ipr.link("set", index=ipr.link_lookup(ifname=tap)[0], state="up")
            for member in ("vnet0", "stray0"):
                ipr.link("set", index=ipr.link_lookup(ifname=member)[0], master=bridge)
            ipr.link("add", ifname="vnet9", kind="tuntap", mode="tap")
            ipr.link("set", index=bridge, state="up")
        yield name
    finally:
        netns.remove(name)


def _sources(name: str, tmp_root: HostRoot) -> CheckSources:
    return CheckSources(
        node="n1",
        root=tmp_root,
        domains=DOMAINS,
        netns=name,
        timings=CheckTimings(per_check=20, counter_window=0.2),
    )


async def _diag(sources: CheckSources, bridge: str) -> list[CheckResult]:
    return [r async for r in run_diagnose(DiagnoseTarget(TargetKind.NETWORK, bridge), sources)]


def _flap(name: str, link: str, stop: threading.Event) -> None:
    from pyroute2 import IPRoute

    with IPRoute(netns=name) as ipr:
        index = ipr.link_lookup(ifname=link)[0]
        while not stop.is_set():
            ipr.link("set", index=index, state="down")
            time.sleep(0.02)
            ipr.link("set", index=index, state="up")
            time.sleep(0.02)


async def test_bridge_members_stp_and_counters(netns: str, tmp_path: object) -> None:
    sources = _sources(netns, HostRoot("/"))
    stop = threading.Event()
    flapper = threading.Thread(target=_flap, args=(netns, "vnet0-p", stop), daemon=True)
    flapper.start()
    try:
        results = {r.check_id: r for r in await _diag(sources, "br0")}
    finally:
        stop.set()
        flapper.join(timeout=10)
    assert results["network.bridge"].status in (Status.OK, Status.WARN)  # carrier needs STP time
    assert results["network.bridge"].evidence["admin_up"] == "true"
    members = results["network.members"]
    assert members.status is Status.FAIL
    assert members.evidence["missing"] == "vnet1(web-2)"
    assert members.evidence["unexpected"] == "stray0"
    assert "vnet1 of web-2" in members.summary
    assert members.remediation[0].command == "novaops recover repair-network --node n1 --target br0"
    stp = results["network.stp"]
    assert stp.evidence["stp_enabled"] == "true"
    assert {"port.vnet0", "port.stray0"} <= set(stp.evidence)
    counters = results["network.counters"]
    assert counters.status is Status.WARN, counters.summary
    assert int(counters.evidence["vnet0.carrier_changes"].lstrip("+")) > 0


async def test_missing_bridge_and_a_plain_link(netns: str) -> None:
    sources = _sources(netns, HostRoot("/"))
    assert [(r.check_id, r.status) for r in await _diag(sources, "br9")] == [
        ("network.bridge", Status.FAIL)
    ]
    plain = await _diag(sources, "stray0")
    assert [(r.check_id, r.status) for r in plain] == [("network.bridge", Status.FAIL)]
    assert "not a bridge" in plain[0].summary


async def test_leaked_tap_via_netlink_in_the_namespace(netns: str) -> None:
    sources = _sources(netns, HostRoot("/"))
    taps = leftovers.evaluate_taps(await leftovers.gather_taps(sources))
    assert [(r.check_id, r.status) for r in taps] == [("host.taps", Status.FAIL)]
    # vnet0 and vnet1 belong to domains with processes; stray0 is not tap-named.
    assert taps[0].evidence["leaked"] == "vnet9"
