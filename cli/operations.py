"""Commands that change things: recover, quarantine, automation, leader transfer; events.

Every mutating command takes --dry-run where the controller can plan it, and the
controller records who did what (the name in our certificate) and why.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from novaops.cli.options import (
    client,
    exit_if_unknown_nodes,
    handle_errors,
    ms,
    node_options,
    output_option,
)

RECOVERY_ACTIONS = (
    "restart-domain",
    "resume-domain",
    "repair-network",
    "remove-stale-locks",
    "terminate-orphans",
    "reconnect-libvirt",
)


@click.command("recover")
@click.argument("action", type=click.Choice(RECOVERY_ACTIONS))
@node_options
@click.option("--target", default="", help="Domain or bridge the action works on.")
@click.option("--dry-run", is_flag=True, help="Plan only; change nothing.")
@click.option("--reason", default="", help="Why (recorded with who asked in the audit event).")
@click.option(
    "--grace",
    type=click.FloatRange(0, 600),
    default=0.0,
    help="Seconds between TERM and KILL (terminate-orphans).",
)
@output_option
@click.pass_context
@handle_errors
def recover(
    ctx: click.Context,
    action: str,
    nodes: tuple[str, ...],
    all_nodes: bool,
    node_timeout: float | None,
    overall_timeout: float | None,
    target: str,
    dry_run: bool,
    reason: str,
    grace: float,
    output: str,
) -> None:
    """Run one action of the fixed recovery catalogue on --node N (or --all).

    Runs on the leader controller only (a dry run anywhere); ends with each node's
    outcome: done, partial (some items failed) or failed. Exit 1 unless all done.
    """
    from novaops.cli import render
    from novaops.client.errors import EXIT_CHECK_FAILED, EXIT_NODES_UNREACHABLE, InvalidRequest
    from novaops.client.models import NodeFailure, RecoveryStepView, recovery_outcomes

    if not nodes and not all_nodes:
        raise InvalidRequest("name the nodes with --node NAME (repeatable) or --all")
    steps: list[RecoveryStepView] = []
    failures: list[NodeFailure] = []
    stream = client(ctx).recover(
        action,
        list(nodes),
        all_nodes=all_nodes,
        target=target,
        dry_run=dry_run,
        reason=reason,
        grace_seconds=grace,
        per_node_ms=ms(node_timeout),
        overall_ms=ms(overall_timeout),
    )
    for item in stream:
        if isinstance(item, NodeFailure):
            failures.append(item)
        else:
            steps.append(item)
    outcomes = recovery_outcomes(steps)
    if output == "json":
        overall = {(o.node, o.action): o.outcome for o in outcomes}
        render.emit_json(
            [{**s.to_json(), "action_outcome": overall[(s.node, s.action)]} for s in steps]
            + [f.to_json() for f in failures]
        )
    else:
        render.recovery_steps(steps, failures, outcomes)
    exit_if_unknown_nodes(failures)
    if any(s.outcome == "failed" for s in steps):
        sys.exit(EXIT_CHECK_FAILED)
    if failures:
        sys.exit(EXIT_NODES_UNREACHABLE)


class NodeOrCommandGroup(click.Group):
    """A group whose first argument is a subcommand, or else a node for ``set``.

    ``novaops quarantine NODE --reason R`` and ``novaops quarantine list`` both work.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["set", *args]
        return super().parse_args(ctx, args)


def _render_change(change: Any, output: str) -> None:
    from novaops.cli import render

    if output == "json":
        render.emit_json(change.to_json())
        return
    render.message(change.message)
    for line in change.hook_results:
        render.message(f"  hook {line}")


@click.group("quarantine", cls=NodeOrCommandGroup)
def quarantine() -> None:
    """Take a node out of service: `quarantine NODE --reason TEXT`, or list / history."""


@quarantine.command("set", hidden=True)
@click.argument("node")
@click.option("--reason", required=True, help="Why (recorded in the history).")
@click.option("--dry-run", is_flag=True, help="Show what would happen.")
@output_option
@click.pass_context
@handle_errors
def quarantine_set(ctx: click.Context, node: str, reason: str, dry_run: bool, output: str) -> None:
    """Quarantine NODE."""
    _render_change(client(ctx).quarantine(node, reason, dry_run=dry_run), output)


@quarantine.command("list")
@output_option
@click.pass_context
@handle_errors
def quarantine_list(ctx: click.Context, output: str) -> None:
    """Quarantined nodes with reason, actor, source and since."""
    from novaops.cli import render

    records = client(ctx).list_quarantines()
    if output == "json":
        render.emit_json([r.to_json() for r in records])
    else:
        render.quarantines_table(records)


@quarantine.command("history")
@click.argument("node", required=False, default="")
@click.option("--limit", type=click.IntRange(0), default=0, help="Most recent N entries.")
@output_option
@click.pass_context
@handle_errors
def quarantine_history(ctx: click.Context, node: str, limit: int, output: str) -> None:
    """The append-only quarantine history (of NODE, or all)."""
    from novaops.cli import render

    entries = client(ctx).quarantine_history(node, limit)
    if output == "json":
        render.emit_json([e.to_json() for e in entries])
    else:
        render.history_table(entries)


@click.command("unquarantine")
@click.argument("node")
@click.option("--reason", required=True, help="Why (recorded in the history).")
@click.option("--force", is_flag=True, help="Lift it even though verify-clean fails.")
@click.option("--dry-run", is_flag=True, help="Check and show what would happen.")
@output_option
@click.pass_context
@handle_errors
def unquarantine(
    ctx: click.Context, node: str, reason: str, force: bool, dry_run: bool, output: str
) -> None:
    """Put NODE back in service (refused while verify-clean fails, unless --force)."""
    _render_change(client(ctx).unquarantine(node, reason, force=force, dry_run=dry_run), output)


@click.group()
def automation() -> None:
    """The leader's health automation and its circuit breaker."""


def _automation(ctx: click.Context, command: str | None, reason: str, output: str) -> None:
    from novaops.cli import render

    api = client(ctx)
    state = api.automation_status() if command is None else api.automation_command(command, reason)
    if output == "json":
        render.emit_json(state.to_json())
    else:
        render.automation_state(state)


@automation.command("status")
@output_option
@click.pass_context
@handle_errors
def automation_status(ctx: click.Context, output: str) -> None:
    """Running, paused, breaker state, automatic quarantines."""
    _automation(ctx, None, "", output)


@automation.command("pause")
@click.option("--reason", default="", help="Why (logged and recorded as an event).")
@output_option
@click.pass_context
@handle_errors
def automation_pause(ctx: click.Context, reason: str, output: str) -> None:
    """Stop automatic recovery and quarantine (observations continue)."""
    _automation(ctx, "pause", reason, output)


@automation.command("resume")
@click.option("--reason", default="")
@output_option
@click.pass_context
@handle_errors
def automation_resume(ctx: click.Context, reason: str, output: str) -> None:
    """Resume automatic recovery and quarantine."""
    _automation(ctx, "resume", reason, output)


@automation.command("reset-breaker")
@click.option("--reason", default="")
@output_option
@click.pass_context
@handle_errors
def automation_reset_breaker(ctx: click.Context, reason: str, output: str) -> None:
    """Re-arm automatic quarantines after the circuit breaker tripped."""
    _automation(ctx, "reset-breaker", reason, output)


@click.command("events")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming new events (Ctrl-C stops).")
@click.option("--after", "after_id", default="", metavar="ID", help="Only events after this id.")
@click.option("--kind", "kinds", multiple=True, help="Only this kind (repeatable).")
@click.option("-o", "--output", type=click.Choice(["table", "json", "jsonl"]), default="table")
@click.pass_context
@handle_errors
def events(
    ctx: click.Context, follow: bool, after_id: str, kinds: tuple[str, ...], output: str
) -> None:
    """Cluster events: node up/down, check failures, recoveries, quarantines, breaker."""
    from novaops.cli import render

    collected = []
    try:
        for event in client(ctx).events(follow=follow, after_id=after_id, kinds=kinds):
            if output == "json" and not follow:
                collected.append(event.to_json())
            elif output in ("json", "jsonl"):
                render.emit_jsonl(event.to_json())
            else:
                render.event_line(event)
    except KeyboardInterrupt:
        return
    if output == "json" and not follow:
        render.emit_json(collected)


@click.command("transfer")
@click.option("--reason", default="", help="Why (recorded as an event).")
@click.option("--dry-run", is_flag=True)
@output_option
@click.pass_context
@handle_errors
def leader_transfer(ctx: click.Context, reason: str, dry_run: bool, output: str) -> None:
    """Ask the leader to resign so another controller replica takes over."""
    from novaops.cli import render

    message = client(ctx).transfer_leadership(reason=reason, dry_run=dry_run)
    if output == "json":
        render.emit_json({"message": message, "dry_run": dry_run})
    else:
        render.message(message)
