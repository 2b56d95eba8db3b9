"""All terminal output of the CLI: tables with rich, or JSON documents.

Commands hand their results here; nothing else in the CLI prints results.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, Protocol


class JsonModel(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def emit_json(document: Any) -> None:
    """One JSON document on stdout."""
    json.dump(document, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _state_style(state: str) -> str:
    return {"up": "green", "down": "red", "healthy": "green", "unhealthy": "yellow"}.get(
        state, "white"
    )


def nodes_table(nodes: Sequence[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(nodes)} node(s)", title_justify="left")
    for column in (
        "NAME",
        "ADDRESS",
        "STATE",
        "QUARANTINED",
        "HEALTH",
        "LIBVIRT",
        "LAST HEARTBEAT",
    ):
        table.add_column(column)
    for node in nodes:
        libvirt = "-"
        if node.facts is not None:
            libvirt = node.facts.libvirt_version if node.facts.libvirt_reachable else "unreachable"
        table.add_row(
            node.name,
            node.address,
            f"[{_state_style(node.state)}]{node.state}[/]",
            "[red]yes[/]" if node.quarantined else "no",
            f"[{_state_style(node.health)}]{node.health}[/]",
            libvirt,
            node.last_heartbeat or "-",
        )
    _console().print(table)


def cluster_status(status: Any) -> None:
    console = _console()
    leader = status.leader.name or "[red]none[/]"
    console.print(f"[bold]novaops cluster[/] (answered by {status.answered_by}, v{status.version})")
    console.print(f"  store:       {status.store} ({status.store_endpoint})")
    console.print(
        f"  leader:      {leader}" + (f" at {status.leader.address}" if status.leader.name else "")
    )
    console.print(
        f"  nodes:       {status.nodes_total} total, [green]{status.nodes_up} up[/], "
        f"[{'red' if status.nodes_down else 'white'}]{status.nodes_down} down[/], "
        f"{status.nodes_quarantined} quarantined"
    )
    automation = "paused" if status.automation_paused else "not running (issue #5)"
    console.print(
        f"  automation:  {automation}; breaker {'TRIPPED' if status.breaker_tripped else 'ok'}"
    )


def leader_status(leader: Any) -> None:
    console = _console()
    if not leader.name:
        console.print("[red]no leader[/] (no controller holds the leader lease)")
        return
    console.print(f"leader:   {leader.name} at {leader.address}")
    console.print(f"since:    {leader.since}")
    console.print(
        f"term:     revision {leader.revision} (fencing token), lease {leader.lease_ttl_seconds}s"
    )


def processes_table(processes: Sequence[Any]) -> None:
    from rich.table import Table

    table = Table()
    for column in ("ROLE", "NAME", "PID", "ADDRESS", "RUNNING"):
        table.add_column(column)
    for proc in processes:
        table.add_row(
            proc.role,
            proc.name,
            str(proc.pid),
            proc.address or "-",
            "[green]yes[/]" if proc.running else "[red]no[/]",
        )
    _console().print(table)


def message(text: str) -> None:
    _console().print(text)


def error(text: str) -> None:
    """One line on stderr, prefixed with the program name."""
    sys.stderr.write(f"novaops: {text}\n")


def _failures(failures: Sequence[Any]) -> None:
    console = _console()
    for failure in failures:
        console.print(f"[red]{failure.node}: {failure.kind}[/]: {failure.message}")


def _mib(value: int) -> str:
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value} MiB"


def _uptime(seconds: int) -> str:
    if not seconds:
        return "-"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d{hours}h" if days else f"{hours}h{rest // 60}m"


_VM_STYLE = {"running": "green", "paused": "yellow", "crashed": "red", "shutoff": "dim"}


def vms_table(vms: Sequence[Any], failures: Sequence[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(vms)} VM(s)", title_justify="left")
    for column in ("NODE", "NAME", "STATE", "REASON", "VCPUS", "MEMORY", "UPTIME"):
        table.add_column(column)
    for vm in vms:
        style = _VM_STYLE.get(vm.state, "white")
        table.add_row(
            vm.node,
            vm.name,
            f"[{style}]{vm.state}[/]",
            vm.state_reason or "-",
            str(vm.vcpus),
            _mib(vm.memory_mib),
            _uptime(vm.uptime_seconds),
        )
    _console().print(table)
    _failures(failures)


def health_table(reports: Sequence[Any], failures: Sequence[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(reports)} node(s) answered", title_justify="left")
    for column in ("NODE", "STATUS", "KERNEL", "KVM", "CGROUP", "LIBVIRT", "FAILING CHECKS"):
        table.add_column(column)
    for report in reports:
        facts = report.facts
        libvirt = facts.libvirt_version if facts.libvirt_reachable else "[red]unreachable[/]"
        table.add_row(
            report.node,
            f"[{_state_style(report.status)}]{report.status}[/]",
            facts.kernel or "?",
            "yes" if facts.kvm_accessible else ("present" if facts.kvm_present else "[red]no[/]"),
            facts.cgroup_backend,
            libvirt,
            ", ".join(c["check_id"] for c in report.failing_checks) or "-",
        )
    _console().print(table)
    _failures(failures)
    unhealthy = sum(r.status != "healthy" for r in reports)
    _console().print(
        f"{len(reports) - unhealthy} healthy, {unhealthy} not healthy, "
        f"{len(failures)} node(s) unreachable"
    )
