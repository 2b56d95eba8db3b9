"""``diag network BRIDGE``: the bridge, its members, STP and counters.

:func:`gather_network` reads netlink (pyroute2 ``IPRoute``, inside the node's
named network namespace when one is configured) twice, ``counter_window``
seconds apart, and asks libvirt which taps running domains put on the bridge.
:func:`evaluate_network` is pure. Check ids: ``network.bridge``,
``network.members``, ``network.stp``, ``network.counters``.

Counters are deltas over the window, so a link that had errors last week but
none now is healthy. Errors fail; drops and carrier changes (a flapping link)
warn.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any

from novaops.executor.checks.domains import TAP_STATES, parse_domain_spec
from novaops.executor.checks.model import (
    CheckResult,
    Recovery,
    RemediationStep,
    Status,
    recover_command,
    result,
)
from novaops.executor.checks.sources import CheckSources
from novaops.executor.libvirt_access import LibvirtUnavailable

IFF_UP = 0x1
# IFLA_BRPORT_STATE values (include/uapi/linux/if_bridge.h BR_STATE_*).
PORT_STATES = {0: "disabled", 1: "listening", 2: "learning", 3: "forwarding", 4: "blocking"}
_BAD_PORT_STATES = frozenset({"disabled", "blocking"})
COUNTERS = ("rx_errors", "tx_errors", "rx_dropped", "tx_dropped", "carrier_changes")
_ERROR_COUNTERS = frozenset({"rx_errors", "tx_errors"})


@dataclass(frozen=True)
class PortEvidence:
    """A bridge member: admin state, STP port state (name) and counter deltas."""

    name: str
    up: bool = True
    stp_state: str = ""
    deltas: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkEvidence:
    """Everything ``diag network`` looked at. ``expected`` maps tap -> domain."""

    node: str
    bridge: str
    netlink_error: str = ""
    exists: bool = True
    kind: str = "bridge"
    admin_up: bool = True
    operstate: str = "UP"
    stp_enabled: bool | None = None
    ports: tuple[PortEvidence, ...] = ()
    bridge_deltas: dict[str, int] = field(default_factory=dict)
    window_seconds: float = 1.0
    expected: dict[str, str] = field(default_factory=dict)
    libvirt_error: str = ""
    uplinks: tuple[str, ...] = ()


# -- evaluation (pure) ----------------------------------------------------------------------


def evaluate_network(ev: NetworkEvidence) -> list[CheckResult]:
    """Every network check; a missing or down bridge stops after ``network.bridge``."""
    bridge_result = _evaluate_bridge(ev)
    if bridge_result.status in (Status.FAIL, Status.ERROR) and (
        ev.netlink_error or not ev.exists or ev.kind != "bridge"
    ):
        return [bridge_result]
    return [bridge_result, _evaluate_members(ev), _evaluate_stp(ev), _evaluate_counters(ev)]


def _repair(ev: NetworkEvidence) -> RemediationStep:
    return RemediationStep(
        f"Re-attach the domains' taps to {ev.bridge} and bring it up",
        recover_command(Recovery.REPAIR_NETWORK, ev.node, ev.bridge),
    )


def _evaluate_bridge(ev: NetworkEvidence) -> CheckResult:
    br = ev.bridge
    if ev.netlink_error:
        return result(
            "network.bridge",
            br,
            Status.ERROR,
            f"netlink unreadable: {ev.netlink_error}",
            {"error": ev.netlink_error},
            [RemediationStep("Check the executor can read links", "ip -d link show")],
        )
    if not ev.exists:
        return result(
            "network.bridge",
            br,
            Status.FAIL,
            f"bridge {br} does not exist",
            {"exists": False},
            [
                _repair(ev),
                RemediationStep("Or define and start its libvirt network", "virsh net-list --all"),
            ],
        )
    evidence = {"kind": ev.kind, "admin_up": ev.admin_up, "operstate": ev.operstate}
    if ev.kind != "bridge":
        return result(
            "network.bridge",
            br,
            Status.FAIL,
            f"{br} is a {ev.kind or 'plain'} link, not a bridge",
            evidence,
            [RemediationStep("Show the link", f"ip -d link show {br}")],
        )
    if not ev.admin_up:
        return result(
            "network.bridge",
            br,
            Status.FAIL,
            f"bridge {br} is down",
            evidence,
            [_repair(ev), RemediationStep("Or bring it up by hand", f"ip link set {br} up")],
        )
    if ev.operstate not in ("UP", "UNKNOWN"):
        return result(
            "network.bridge",
            br,
            Status.WARN,
            f"bridge {br} is up but has no carrier ({ev.operstate}): no port forwards",
            evidence,
            [RemediationStep("Show the ports' states", f"bridge link show master {br}")],
        )
    return result("network.bridge", br, Status.OK, f"bridge {br} is up", evidence)


def _evaluate_members(ev: NetworkEvidence) -> CheckResult:
    br = ev.bridge
    actual = {port.name for port in ev.ports}
    evidence: dict[str, object] = {
        "members": sorted(actual),
        "expected": sorted(ev.expected),
    }
    if ev.libvirt_error:
        evidence["error"] = ev.libvirt_error
        return result(
            "network.members",
            br,
            Status.WARN,
            f"cannot tell the expected members: libvirt unreachable: {ev.libvirt_error}",
            evidence,
            [
                RemediationStep(
                    "Reconnect to libvirt", recover_command(Recovery.RECONNECT_LIBVIRT, ev.node)
                )
            ],
        )
    missing = sorted(set(ev.expected) - actual)
    unexpected = sorted(actual - set(ev.expected) - set(ev.uplinks))
    evidence["missing"] = [f"{tap}({ev.expected[tap]})" for tap in missing]
    evidence["unexpected"] = unexpected
    if missing:
        named = ", ".join(f"{tap} of {ev.expected[tap]}" for tap in missing)
        extra = f"; unexpected: {', '.join(unexpected)}" if unexpected else ""
        steps = [_repair(ev)]
        steps += [
            RemediationStep(f"Or attach {tap} by hand", f"ip link set {tap} master {br}")
            for tap in missing
        ]
        return result(
            "network.members",
            br,
            Status.FAIL,
            f"missing from {br}: {named}{extra}",
            evidence,
            steps,
        )
    if unexpected:
        return result(
            "network.members",
            br,
            Status.WARN,
            f"members no running domain claims: {', '.join(unexpected)}",
            evidence,
            [
                RemediationStep(
                    f"Detach {name} if it does not belong", f"ip link set {name} nomaster"
                )
                for name in unexpected
            ],
        )
    return result(
        "network.members", br, Status.OK, f"{len(actual)} member(s), as expected", evidence
    )


def _evaluate_stp(ev: NetworkEvidence) -> CheckResult:
    br = ev.bridge
    states = {port.name: port.stp_state for port in ev.ports}
    evidence: dict[str, object] = {"stp_enabled": ev.stp_enabled}
    evidence |= {f"port.{name}": state for name, state in sorted(states.items())}
    if ev.stp_enabled is None:
        return result("network.stp", br, Status.OK, "STP state not reported", evidence)
    if not ev.stp_enabled:
        return result(
            "network.stp",
            br,
            Status.WARN,
            f"STP is disabled on {br}",
            evidence,
            [RemediationStep("Enable STP", f"ip link set {br} type bridge stp_state 1")],
        )
    bad = sorted(p.name for p in ev.ports if p.up and p.stp_state in _BAD_PORT_STATES)
    if bad:
        return result(
            "network.stp",
            br,
            Status.WARN,
            f"ports not forwarding: {', '.join(f'{n} ({states[n]})' for n in bad)}",
            evidence,
            [RemediationStep("Show STP port states", f"bridge -d link show master {br}")],
        )
    return result("network.stp", br, Status.OK, "STP enabled; no port blocked", evidence)


def _evaluate_counters(ev: NetworkEvidence) -> CheckResult:
    br = ev.bridge
    evidence: dict[str, object] = {"window_seconds": ev.window_seconds}
    errors: list[str] = []
    warnings: list[str] = []
    for name, deltas in [(br, ev.bridge_deltas)] + [(p.name, p.deltas) for p in ev.ports]:
        for counter in COUNTERS:
            delta = deltas.get(counter, 0)
            if delta <= 0:
                continue
            evidence[f"{name}.{counter}"] = f"+{delta}"
            (errors if counter in _ERROR_COUNTERS else warnings).append(
                f"{name} {counter} +{delta}"
            )
    show = RemediationStep("Watch the counters", f"ip -s -s link show master {br}")
    if errors:
        return result(
            "network.counters",
            br,
            Status.FAIL,
            f"errors in {ev.window_seconds:g}s: {', '.join(errors + warnings)}",
            evidence,
            [show, RemediationStep("Check the links' drivers and cabling", f"ethtool -S {br}")],
        )
    if warnings:
        return result(
            "network.counters",
            br,
            Status.WARN,
            f"in {ev.window_seconds:g}s: {', '.join(warnings)}",
            evidence,
            [show],
        )
    return result(
        "network.counters",
        br,
        Status.OK,
        f"no errors, drops or carrier changes in {ev.window_seconds:g}s",
        evidence,
    )


# -- gathering (I/O) ------------------------------------------------------------------------


@dataclass(frozen=True)
class _LinkSnapshot:
    index: int
    name: str
    kind: str
    master: int
    admin_up: bool
    operstate: str
    stp_enabled: bool | None
    counters: dict[str, int]


def _snapshot_link(msg: Any) -> _LinkSnapshot:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    stp = data.get_attr("IFLA_BR_STP_STATE") if kind == "bridge" and data is not None else None
    stats = msg.get_attr("IFLA_STATS64") or msg.get_attr("IFLA_STATS") or {}
    counters = {name: int(stats.get(name, 0) or 0) for name in COUNTERS if name in stats}
    counters["carrier_changes"] = int(msg.get_attr("IFLA_CARRIER_CHANGES") or 0)
    return _LinkSnapshot(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        kind=str(kind or ""),
        master=int(msg.get_attr("IFLA_MASTER") or 0),
        admin_up=bool(msg["flags"] & IFF_UP),
        operstate=str(msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN"),
        stp_enabled=None if stp is None else bool(stp),
        counters=counters,
    )


def _read_links(netns: str | None) -> tuple[dict[str, _LinkSnapshot], dict[str, str]]:
    """(links by name, STP port state by port name) in one netlink session."""
    from novaops.executor.netns import iproute

    with iproute(netns) as ipr:
        links = {snap.name: snap for snap in map(_snapshot_link, ipr.get_links())}
        port_states = {}
        for msg in ipr.get_links(family=socket.AF_BRIDGE):
            protinfo = msg.get_attr("IFLA_PROTINFO")
            state = protinfo.get_attr("IFLA_BRPORT_STATE") if protinfo is not None else None
            if state is not None:
                port_states[str(msg.get_attr("IFLA_IFNAME"))] = PORT_STATES.get(
                    int(state), f"state-{state}"
                )
    return links, port_states


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after if name in before}


def sample_bridge(node: str, bridge: str, netns: str | None, window: float) -> NetworkEvidence:
    """Netlink evidence about one bridge (blocking: sleeps ``window`` seconds)."""
    try:
        before, _ = _read_links(netns)
        if bridge not in before:
            return NetworkEvidence(node=node, bridge=bridge, exists=False)
        time.sleep(window)
        after, port_states = _read_links(netns)
    except OSError as exc:
        return NetworkEvidence(node=node, bridge=bridge, netlink_error=str(exc))
    if bridge not in after:
        return NetworkEvidence(node=node, bridge=bridge, exists=False)
    br = after[bridge]
    ports = tuple(
        PortEvidence(
            name=link.name,
            up=link.admin_up,
            stp_state=port_states.get(link.name, ""),
            deltas=_delta(before[link.name].counters, link.counters) if link.name in before else {},
        )
        for link in sorted(after.values(), key=lambda link: link.name)
        if link.master == br.index
    )
    return NetworkEvidence(
        node=node,
        bridge=bridge,
        kind=br.kind,
        admin_up=br.admin_up,
        operstate=br.operstate,
        stp_enabled=br.stp_enabled,
        ports=ports,
        bridge_deltas=_delta(before[bridge].counters, br.counters),
        window_seconds=window,
    )


async def expected_members(sources: CheckSources, bridge: str) -> dict[str, str]:
    """tap -> domain for every running domain's interface on bridge. LibvirtUnavailable."""
    expected = {}
    for record, xml in await sources.domains.domains_with_xml(TAP_STATES):
        for nic in parse_domain_spec(xml).interfaces:
            if nic.bridge == bridge and nic.tap:
                expected[nic.tap] = record.name
    return expected


async def gather_network(sources: CheckSources, bridge: str) -> NetworkEvidence:
    """Evidence for ``diag network``: netlink sampled over the window, libvirt's view."""
    sampled = asyncio.create_task(
        asyncio.to_thread(
            sample_bridge, sources.node, bridge, sources.netns, sources.timings.counter_window
        )
    )
    libvirt_error = ""
    expected: dict[str, str] = {}
    try:
        expected = await expected_members(sources, bridge)
    except LibvirtUnavailable as exc:
        libvirt_error = str(exc)
    evidence = await sampled
    return replace(
        evidence, expected=expected, libvirt_error=libvirt_error, uplinks=sources.bridge_uplinks
    )
