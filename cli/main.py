"""The ``novaops`` command: parses arguments, calls the client library, renders.

This module imports only click at start-up; grpc, rich and the client library
are imported inside commands so that ``novaops --help`` stays fast. The CLI
never imports controller or executor code (tests/unit/test_boundaries.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from novaops.cli.options import client as _client
from novaops.cli.options import (
    exit_if_unknown_nodes,
    handle_errors,
    ms,
    node_options,
    output_option,
    selection,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=None, prog_name="novaops", package_name="novaops")
@click.option(
    "--config",
    metavar="FILE",
    envvar="NOVAOPS_CONFIG",
    help="Client config (default: $NOVAOPS_CONFIG, then ~/.config/novaops/config.toml).",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """novaops: the support plane for fleets of libvirt/QEMU hypervisor nodes.

    \b
    Exit codes: 0 ok, 1 a check failed, 2 usage or bad input,
    3 some nodes unreachable, 4 cannot reach or authenticate to the controller,
    5 the controller refused the request (permission, not built yet).
    """
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


# -- cluster views -------------------------------------------------------------


@cli.group()
def node() -> None:
    """Registered hypervisor nodes."""


@node.command("list")
@output_option
@click.pass_context
@handle_errors
def node_list(ctx: click.Context, output: str) -> None:
    """List nodes with liveness (up/down) and quarantine."""
    from novaops.cli import render

    nodes = _client(ctx).list_nodes()
    if output == "json":
        render.emit_json_array([n.to_json() for n in nodes])
    else:
        render.nodes_table(nodes)


@node.command("remove")
@click.argument("name")
@click.option("--reason", required=True, help="Why (recorded in the node.removed event).")
@click.option("--dry-run", is_flag=True, help="Check the preconditions only.")
@output_option
@click.pass_context
@handle_errors
def node_remove(ctx: click.Context, name: str, reason: str, dry_run: bool, output: str) -> None:
    """Forget a decommissioned node, so `--all` stops reaching for it (admin).

    Refused while NAME is up (stop its executor first) or quarantined (lift it
    with `unquarantine --force`). Its history and events stay.
    """
    from novaops.cli import render

    removal = _client(ctx).remove_node(name, reason, dry_run=dry_run)
    if output == "json":
        render.emit_json(removal.to_json())
    else:
        render.message(removal.message)


@cli.group()
def cluster() -> None:
    """The cluster as a whole."""


@cluster.command("status")
@output_option
@click.pass_context
@handle_errors
def cluster_status(ctx: click.Context, output: str) -> None:
    """Node counts, leader, store and automation state."""
    from novaops.cli import render

    status = _client(ctx).cluster_status()
    if output == "json":
        render.emit_json(status.to_json())
    else:
        render.cluster_status(status)


@cli.group()
def leader() -> None:
    """Controller leadership."""


@leader.command("status")
@output_option
@click.pass_context
@handle_errors
def leader_status(ctx: click.Context, output: str) -> None:
    """Which controller replica leads, since when, and its fencing revision."""
    from novaops.cli import render

    current = _client(ctx).leader()
    if output == "json":
        render.emit_json(current.to_json())
    else:
        render.leader_status(current)


# -- fleet views -----------------------------------------------------------------


@cli.group()
def vm() -> None:
    """Virtual machines across the fleet."""


@vm.command("list")
@node_options
@output_option
@click.pass_context
@handle_errors
def vm_list(
    ctx: click.Context,
    nodes: tuple[str, ...],
    all_nodes: bool,
    node_timeout: float | None,
    overall_timeout: float | None,
    output: str,
) -> None:
    """Every domain on the selected nodes (default: all): node, name, state, vCPUs, memory."""
    from novaops.cli import render
    from novaops.client.errors import EXIT_NODES_UNREACHABLE
    from novaops.client.models import NodeFailure, Vm

    vms: list[Vm] = []
    failures: list[NodeFailure] = []
    stream = _client(ctx).list_vms(
        selection(nodes, all_nodes),
        per_node_ms=ms(node_timeout),
        overall_ms=ms(overall_timeout),
    )
    for item in stream:
        if isinstance(item, NodeFailure):
            failures.append(item)
        else:
            vms.extend(item)
    vms.sort(key=lambda v: (v.node, v.name))
    if output == "json":
        render.emit_json_array([v.to_json() for v in vms] + [f.to_json() for f in failures])
    else:
        render.vms_table(vms, failures)
    exit_if_unknown_nodes(failures)
    if failures:
        sys.exit(EXIT_NODES_UNREACHABLE)


@cli.command("health")
@node_options
@click.option(
    "--checks/--liveness",
    " /--no-checks",
    "checks",
    default=True,
    help="Run the health checks now (default), or --liveness: only liveness, facts and "
    "the last background verdict (cheap).",
)
@click.option("--recover", is_flag=True, help="Run the matching recovery for failing checks.")
@click.option("--verify-clean", is_flag=True, help="Check the clean baseline.")
@click.option("--dry-run", is_flag=True, help="With --recover: plan only, change nothing.")
@click.option("--reason", default="", help="With --recover: why (recorded with who asked).")
@output_option
@click.pass_context
@handle_errors
def health(
    ctx: click.Context,
    nodes: tuple[str, ...],
    all_nodes: bool,
    node_timeout: float | None,
    overall_timeout: float | None,
    checks: bool,
    recover: bool,
    verify_clean: bool,
    dry_run: bool,
    reason: str,
    output: str,
) -> None:
    """Health of the selected nodes (default: all). Exit 1 if any is unhealthy.

    A node is unhealthy when libvirt does not answer or a health check fails or
    cannot tell (fail or error). --recover runs on the leader controller only
    (unless --dry-run).
    """
    from novaops.cli import render
    from novaops.client.errors import EXIT_CHECK_FAILED, EXIT_NODES_UNREACHABLE
    from novaops.client.models import NodeFailure, NodeHealthReport

    reports: list[NodeHealthReport] = []
    failures: list[NodeFailure] = []
    stream = _client(ctx).health(
        selection(nodes, all_nodes),
        include_checks=checks,
        recover=recover,
        verify_clean=verify_clean,
        dry_run=dry_run,
        reason=reason,
        per_node_ms=ms(node_timeout),
        overall_ms=ms(overall_timeout),
    )
    for item in stream:
        if isinstance(item, NodeFailure):
            failures.append(item)
        else:
            reports.append(item)
    reports.sort(key=lambda r: r.node)
    if output == "json":
        render.emit_json_array([r.to_json() for r in reports] + [f.to_json() for f in failures])
    else:
        render.health_table(reports, failures)
    exit_if_unknown_nodes(failures)
    if any(r.status != "healthy" for r in reports):
        sys.exit(EXIT_CHECK_FAILED)
    if failures:
        sys.exit(EXIT_NODES_UNREACHABLE)


# -- certificates --------------------------------------------------------------


@cli.group()
def certs() -> None:
    """Certificates for mTLS."""


@certs.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--controller",
    "controllers",
    multiple=True,
    default=["ctl-0"],
    show_default=True,
    help="Controller replica name (repeatable).",
)
@click.option("--node", "nodes", multiple=True, help="Executor node name (repeatable).")
@click.option(
    "--user",
    "users",
    multiple=True,
    default=["admin:admin"],
    show_default=True,
    metavar="NAME:ROLE",
    help="User certificate, ROLE viewer|operator|admin (repeatable).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    default=["localhost", "127.0.0.1", "::1"],
    show_default=True,
    help="DNS name or IP the servers are reached at (repeatable).",
)
@click.option("--force", is_flag=True, help="Replace an existing CA in DIRECTORY.")
@output_option
@handle_errors
def certs_init(
    directory: Path,
    controllers: tuple[str, ...],
    nodes: tuple[str, ...],
    users: tuple[str, ...],
    hosts: tuple[str, ...],
    force: bool,
    output: str,
) -> None:
    """Create a CA and controller, executor and user certificates in DIRECTORY."""
    from novaops.cli import render
    from novaops.client.errors import InvalidRequest
    from novaops.pki.identity import Identity, Role, valid_name
    from novaops.pki.issue import CertificateAuthority

    identities: list[Identity] = []
    for name in controllers:
        identities.append(Identity(Role.CONTROLLER, name))
    for name in nodes:
        identities.append(Identity(Role.EXECUTOR, name))
    for spec in users:
        name, _, role = spec.partition(":")
        if role not in ("viewer", "operator", "admin"):
            raise InvalidRequest(
                f"--user {spec!r}: expected NAME:ROLE with ROLE viewer|operator|admin"
            )
        identities.append(Identity(Role(role), name))
    for identity in identities:
        if not valid_name(identity.name):
            raise InvalidRequest(
                f"name {identity.name!r}: expected 1-63 lowercase letters, digits, '-' or '.'"
            )
    if (directory / "ca.pem").exists() and not force:
        raise InvalidRequest(f"{directory / 'ca.pem'} exists; pass --force to replace the CA")
    ca = CertificateAuthority.create()
    written = [str(ca.save(directory))]
    for identity in identities:
        files = ca.issue(identity, directory, hosts=hosts)
        written += [str(files.cert), str(files.key)]
    if output == "json":
        render.emit_json({"directory": str(directory), "files": written})
    else:
        render.message(f"wrote CA and {len(identities)} certificate(s) to {directory}")
        for path in written:
            render.message(f"  {path}")


def main() -> int:
    """Console-script entry point."""
    from novaops.cli.bundle import support
    from novaops.cli.dev import dev
    from novaops.cli.diag import diag, vm_health_report, vm_stats
    from novaops.cli.operations import (
        automation,
        events,
        leader_transfer,
        quarantine,
        recover,
        unquarantine,
    )

    for command in (dev, diag, recover, quarantine, unquarantine, automation, events, support):
        cli.add_command(command)
    vm.add_command(vm_stats)
    vm.add_command(vm_health_report)
    leader.add_command(leader_transfer)
    cli(prog_name="novaops")
    return 0
