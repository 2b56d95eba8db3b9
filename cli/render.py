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


def emit_json_array(items: list[Any]) -> None:
    """A JSON array on stdout, one item per line. Indenting (emit_json) runs the
    pure-Python encoder; a fleet's thousands of results go through the C one."""
    if not items:
        sys.stdout.write("[]\n")
        return
    sys.stdout.write("[\n")
    sys.stdout.write(",\n".join(json.dumps(item, default=str) for item in items))
    sys.stdout.write("\n]\n")


def escape(text: str) -> str:
    """Text from nodes and users, safe to print through rich markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _console() -> Any:
    from rich.console import Console

    # Off a terminal (pipes, CI logs) nothing should be cut to 80 columns.
    width = None if sys.stdout.isatty() else 160
    return Console(highlight=False, width=width)


def _state_style(state: str) -> str:
    return {"up": "green", "down": "red", "healthy": "green", "unhealthy": "yellow"}.get(
        state, "white"
    )


def _age(iso: str | None) -> str:
    """'2.1s ago' for an ISO timestamp (the table is read by people, JSON keeps the time)."""
    if not iso:
        return "-"
    import datetime as dt

    then = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = (dt.datetime.now(dt.UTC) - then).total_seconds()
    if seconds < 120:
        return f"{max(seconds, 0):.1f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


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
        failing = f" ({', '.join(node.failing_checks)})" if node.failing_checks else ""
        table.add_row(
            node.name,
            node.address,
            f"[{_state_style(node.state)}]{node.state}[/]",
            "[red]yes[/]" if node.quarantined else "no",
            f"[{_state_style(node.health)}]{node.health}[/]{escape(failing)}",
            libvirt,
            _age(node.last_heartbeat),
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
    console.print(
        f"  automation:  {automation_wording(status)}; "
        f"breaker {'TRIPPED' if status.breaker_tripped else 'ok'}"
    )


def automation_wording(status: Any) -> str:
    """How `cluster status` names the automation's state: config, then operator."""
    if not status.automation_enabled:
        return f"disabled in the controller config ({status.answered_by})"
    if status.automation_paused:
        return "paused by an operator"
    return "active on the leader"


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
    _console().print(escape(text))


def error(text: str) -> None:
    """One line on stderr, prefixed with the program name."""
    sys.stderr.write(f"novaops: {text}\n")


def _failures(failures: Sequence[Any]) -> None:
    console = _console()
    for failure in failures:
        console.print(f"[red]{failure.node}: {failure.kind}[/]: {escape(failure.message)}")


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
            byte_size(vm.memory_mib * 1024 * 1024),
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
            ", ".join(c.check_id for c in report.failing_checks) or "-",
        )
    _console().print(table)
    _failures(failures)
    steps = [step for r in reports for step in r.recovery]
    if steps:
        from novaops.client.models import recovery_outcomes

        recovery_steps(steps, (), recovery_outcomes(steps))
    unhealthy = sum(r.status != "healthy" for r in reports)
    _console().print(
        f"{len(reports) - unhealthy} healthy, {unhealthy} not healthy, "
        f"{len(failures)} node(s) unreachable"
    )


_CHECK_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "error": "magenta"}


def check_summary_line(checks: Sequence[Any], failures: Sequence[Any]) -> str:
    counts = {status: 0 for status in ("ok", "warn", "fail", "error")}
    for check in checks:
        counts[check.status] = counts.get(check.status, 0) + 1
    parts = [f"{n} {status}" for status, n in counts.items() if n or status in ("ok", "fail")]
    unknown = sum(f.kind == "unknown_node" for f in failures)
    unreachable = len(failures) - unknown
    if unreachable:
        parts.append(f"{unreachable} node{'s' if unreachable != 1 else ''} unreachable")
    if unknown:
        parts.append(f"{unknown} unknown node name{'s' if unknown != 1 else ''}")
    return ", ".join(parts)


def checks_report(
    checks: Sequence[Any], failures: Sequence[Any], summary: str | None = None
) -> None:
    """Results grouped by node, colour by status, remediation under each failure;
    then ``summary`` (default: counts per status and unreachable nodes)."""
    console = _console()
    nodes = sorted({c.node for c in checks} | {f.node for f in failures})
    for node in nodes:
        console.print(f"[bold]{node}[/]")
        for failure in (f for f in failures if f.node == node):
            console.print(f"  [red]UNREACHABLE[/] {failure.kind}: {escape(failure.message)}")
        for check in (c for c in checks if c.node == node):
            style = _CHECK_STYLE.get(check.status, "white")
            target = f" ({check.target})" if check.target else ""
            text = escape(f"{check.check_id}{target}: {check.summary}")
            console.print(f"  [{style}]{check.status.upper():5}[/] {text}")
            if check.status in ("warn", "fail", "error"):
                for number, step in enumerate(check.remediation, 1):
                    command = f"\n          $ {step.command}" if step.command else ""
                    console.print(escape(f"        {number}. {step.description}{command}"))
    console.print(summary if summary is not None else check_summary_line(checks, failures))


def emit_jsonl(document: Any) -> None:
    """One JSON object on one line, flushed (for streaming consumers)."""
    sys.stdout.write(json.dumps(document, default=str) + "\n")
    sys.stdout.flush()


def recovery_steps(
    steps: Sequence[Any], failures: Sequence[Any], outcomes: Sequence[Any] = ()
) -> None:
    """Each step, then one line per node and action with its overall outcome."""
    console = _console()
    style = {
        "done": "green",
        "planned": "cyan",
        "skipped": "dim",
        "failed": "red",
        "partial": "yellow",
    }
    for step in steps:
        colour = style.get(step.outcome, "white")
        error = f" — {step.error}" if step.error else ""
        text = escape(f"{step.action}: {step.description}{error}")
        console.print(f"{step.node}  [{colour}]{step.outcome:8}[/] {text}")
    for outcome in outcomes:
        colour = style.get(outcome.outcome, "white")
        failed = f" ({outcome.failed_steps} of {outcome.steps} steps failed)"
        console.print(
            f"{outcome.node}  {escape(outcome.action)}: [bold {colour}]{outcome.outcome}[/]"
            + (failed if outcome.failed_steps else "")
        )
    _failures(failures)


def quarantines_table(records: Sequence[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(records)} quarantined node(s)", title_justify="left")
    for column in ("NODE", "SOURCE", "SINCE", "ACTOR", "REASON"):
        table.add_column(column)
    for record in records:
        table.add_row(record.node, record.source, record.since or "-", record.actor, record.reason)
    _console().print(table)


def history_table(entries: Sequence[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    for column in ("SEQ", "AT", "NODE", "ACTION", "SOURCE", "ACTOR", "REASON", "HOOKS"):
        table.add_column(column)
    for entry in entries:
        action = entry.action + (" (forced)" if entry.forced else "")
        hooks = entry.hooks or "-"
        if entry.hooks == "failed":
            failed = [line for line in entry.hook_results if ": ok" not in line]
            hooks = "[red]failed[/]: " + escape("; ".join(failed))
        table.add_row(
            str(entry.sequence),
            entry.at or "-",
            entry.node,
            action,
            entry.source,
            entry.actor,
            entry.reason,
            hooks,
        )
    _console().print(table)


def event_line(event: Any) -> None:
    causes = f" (caused by {', '.join(event.cause_ids)})" if event.cause_ids else ""
    node = f" {event.node}" if event.node else ""
    _console().print(
        f"{event.id} {event.at or '-'} [bold]{event.kind}[/]{node}: {event.message}{causes}"
    )


def automation_state(state: Any) -> None:
    console = _console()
    running = "[green]running[/]" if state.running else "[yellow]not running[/]"
    console.print(f"automation: {running} on leader {state.leader or '-'}")
    console.print(f"  paused:           {'yes' if state.paused else 'no'}")
    breaker = f"[red]TRIPPED[/]: {state.breaker_reason}" if state.breaker_tripped else "ok"
    console.print(f"  circuit breaker:  {breaker}")
    console.print(f"  auto-quarantined: {state.auto_quarantined}")


def byte_size(count: int) -> str:
    """count bytes in binary units, e.g. "512 B", "1.5 KiB", "81.7 TiB"."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def cpu_time(nanoseconds: int) -> str:
    """CPU time as an operator reads it: "12.3 s" under a minute, else "2h 05m 07s"."""
    seconds = nanoseconds / 1e9
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def vm_stats(stats: Any) -> None:
    """One VM's counters, in readable units (``-o json`` has the exact figures)."""
    console = _console()
    console.print(f"[bold]{stats.vm}[/] on {stats.node} (at {stats.observed_at})")
    if not stats.running:
        console.print("  not running: no CPU, disk or interface counters")
        console.print(f"  memory:   {byte_size(stats.memory_kib * 1024)} configured")
        return
    console.print(f"  cpu time: {cpu_time(stats.cpu_time_ns)}")
    rss = byte_size(stats.rss_kib * 1024) if stats.rss_kib else "-"  # not reported
    console.print(f"  memory:   {byte_size(stats.memory_kib * 1024)} current, rss {rss}")
    for block in stats.block:
        console.print(
            f"  disk {block['device']}: read {byte_size(block['read_bytes'])} "
            f"({block['read_requests']} requests), write {byte_size(block['write_bytes'])} "
            f"({block['write_requests']} requests), errors {block['errors']}"
        )
    for nic in stats.interfaces:
        errors = nic["rx_errors"] + nic["tx_errors"]
        drops = nic["rx_drops"] + nic["tx_drops"]
        console.print(
            f"  nic {nic['device']}: rx {byte_size(nic['rx_bytes'])} "
            f"({nic['rx_packets']} packets), tx {byte_size(nic['tx_bytes'])} "
            f"({nic['tx_packets']} packets), errors {errors}, drops {drops}"
        )


def bundle_summary(summary: Any) -> None:
    console = _console()
    console.print(f"wrote {summary.path} ({summary.size} bytes)")
    console.print(f"sha256 {summary.sha256}")
    for node in summary.nodes:
        if node.status == "ok":
            console.print(f"  [green]{node.node}[/]: ok, {node.size} bytes")
        else:
            console.print(f"  [red]{node.node}[/]: {node.status}: {node.error}")
    if summary.map_path:
        console.print(f"pseudonym map (private, never inside the archive): {summary.map_path}")
    console.print(
        "before uploading: run `novaops support bundle validate "
        f"{summary.path}`, send the sha256 separately from the file, and upload only over "
        "an authenticated, encrypted channel (HTTPS/SFTP); never attach the map"
    )


def bundle_inspect(report: Any) -> None:
    console = _console()
    since, until = report.time_window
    console.print(f"[bold]{report.path}[/] (novaops {report.novaops_version}, {report.created_at})")
    console.print(f"  window: {since or '?'} .. {until or '?'}")
    for node in report.nodes:
        colour = "green" if node.status == "ok" else "red"
        console.print(f"[bold]{node.node}[/]: [{colour}]{node.status}[/] {node.error}")
        for check in node.failing_checks:
            console.print(f"  [red]{check.status}[/] {check.name}: {check.message}")
        for collector, error in node.collector_failures:
            console.print(f"  [yellow]collector {collector} failed[/]: {error}")
        for count, line in node.top_errors[:5]:
            console.print(f"  {count:5}x {line}")
        if node.redactions:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(node.redactions.items()))
            console.print(f"  redactions: {counts}")
    for problem in report.problems:
        console.print(f"[red]problem[/] {problem}")
