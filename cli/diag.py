"""``novaops diag ...`` and the VM reports: checks across the fleet, with remediation."""

from __future__ import annotations

import sys
from typing import Any

import click

from novaops.cli.options import client, exit_if_unknown_nodes, handle_errors, ms, node_options

# vm health-report checks every domain of a node: more than one diag's default.
HEALTH_REPORT_NODE_SECONDS = 60.0
HEALTH_REPORT_OVERALL_SECONDS = 120.0

DIAG_OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "jsonl"]),
    default="table",
    show_default=True,
    help="table; json: one array after completion; jsonl: one object per result as it arrives.",
)


def run_diagnose(
    ctx: click.Context,
    output: str,
    *,
    nodes: tuple[str, ...],
    all_nodes: bool,
    node_timeout: float | None,
    overall_timeout: float | None,
    **target: Any,
) -> None:
    """Stream one diagnosis, render it, exit 1 on failed checks, 3 on unreachable nodes."""
    from novaops.cli import render
    from novaops.client.errors import EXIT_CHECK_FAILED, EXIT_NODES_UNREACHABLE, InvalidRequest
    from novaops.client.models import Check, NodeFailure

    if nodes and all_nodes:
        raise InvalidRequest("--node and --all exclude each other; give one")
    checks: list[Check] = []
    failures: list[NodeFailure] = []
    stream = client(ctx).diagnose(
        nodes=list(nodes),
        all_nodes=all_nodes,
        per_node_ms=ms(node_timeout),
        overall_ms=ms(overall_timeout),
        **target,
    )
    for item in stream:
        if isinstance(item, NodeFailure):
            failures.append(item)
        else:
            checks.append(item)
        if output == "jsonl":
            render.emit_jsonl(item.to_json())
    if output == "json":
        render.emit_json_array([c.to_json() for c in checks] + [f.to_json() for f in failures])
    elif output == "table":
        render.checks_report(checks, failures)
    exit_if_unknown_nodes(failures)
    if any(c.status in ("fail", "error") for c in checks):
        sys.exit(EXIT_CHECK_FAILED)
    if failures:
        sys.exit(EXIT_NODES_UNREACHABLE)


@click.group()
def diag() -> None:
    """Diagnose VMs, containers, bridges or hosts; failures print their remediation."""


@diag.command("vm")
@click.argument("name")
@node_options
@DIAG_OUTPUT
@click.pass_context
@handle_errors
def diag_vm(ctx: click.Context, /, name: str, output: str, **selection: Any) -> None:
    """A VM: libvirt state, QEMU process, disks and backing chain, events, taps.

    Without --node, the controller finds the node hosting NAME.
    """
    run_diagnose(ctx, output, vm=name, **selection)


@diag.command("container")
@click.argument("name")
@node_options
@DIAG_OUTPUT
@click.pass_context
@handle_errors
def diag_container(ctx: click.Context, /, name: str, output: str, **selection: Any) -> None:
    """A container: runtime state, namespaces, process tree, service reachability.

    Without --node (or with --all), every node is searched and only the nodes
    running NAME report; exit 5 when every node answered and none runs it.
    """
    run_diagnose(ctx, output, container=name, **selection)


@diag.command("network")
@click.argument("bridge")
@node_options
@DIAG_OUTPUT
@click.pass_context
@handle_errors
def diag_network(ctx: click.Context, /, bridge: str, output: str, **selection: Any) -> None:
    """A bridge: membership vs running VMs, STP and port states, counter deltas."""
    run_diagnose(ctx, output, network=bridge, **selection)


@diag.command("host")
@node_options
@DIAG_OUTPUT
@click.pass_context
@handle_errors
def diag_host(ctx: click.Context, /, output: str, **selection: Any) -> None:
    """Hosts: kernel, KVM, libvirt, cgroups, pressure, orphans, stale locks."""
    run_diagnose(ctx, output, host=True, **selection)


@click.command("stats")
@click.argument("name")
@click.option("--node", default="", help="The node hosting NAME (found when omitted).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@handle_errors
def vm_stats(ctx: click.Context, name: str, node: str, output: str) -> None:
    """CPU time, memory, block and interface counters of one VM, from libvirt."""
    from novaops.cli import render

    stats = client(ctx).vm_stats(name, node)
    if output == "json":
        render.emit_json(stats.to_json())
    else:
        render.vm_stats(stats)


@click.command("health-report")
@node_options
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@handle_errors
def vm_health_report(
    ctx: click.Context,
    nodes: tuple[str, ...],
    all_nodes: bool,
    node_timeout: float | None,
    overall_timeout: float | None,
    output: str,
) -> None:
    """Every VM with a failing check, grouped by node (exit 1 when there is one)."""
    from novaops.cli import render
    from novaops.client.errors import EXIT_CHECK_FAILED, EXIT_NODES_UNREACHABLE, InvalidRequest
    from novaops.client.models import Check, NodeFailure

    if nodes and all_nodes:
        raise InvalidRequest("--node and --all exclude each other; give one")
    failures: list[NodeFailure] = []
    failing: list[Check] = []
    checked: set[tuple[str, str]] = set()
    # One fan-out: each node checks all of its domains concurrently.
    for result in client(ctx).diagnose(
        all_vms=True,
        nodes=list(nodes),
        all_nodes=not nodes,
        per_node_ms=ms(node_timeout or HEALTH_REPORT_NODE_SECONDS),
        overall_ms=ms(overall_timeout or HEALTH_REPORT_OVERALL_SECONDS),
    ):
        if isinstance(result, NodeFailure):
            failures.append(result)
            continue
        checked.add((result.node, result.target))
        if result.status in ("fail", "error"):
            failing.append(result)
    if output == "json":
        render.emit_json_array([c.to_json() for c in failing] + [f.to_json() for f in failures])
    else:
        sick = len({(c.node, c.target) for c in failing})
        summary = f"{sick} of {len(checked)} VM(s) failing, {len(failing)} failing check(s)"
        unreachable = render.check_summary_line([], failures).removeprefix("0 ok, 0 fail")
        render.checks_report(failing, failures, summary + unreachable)
    exit_if_unknown_nodes(failures)
    if failing:
        sys.exit(EXIT_CHECK_FAILED)
    if failures:
        sys.exit(EXIT_NODES_UNREACHABLE)
