"""``novaops support bundle``: collect a redacted bundle from nodes; offline tools.

``support bundle`` (no subcommand) collects; ``validate``, ``extract``, ``inspect``
and ``purge`` work on archives offline, with no cluster and no grpc import.
For this command ``-o/--output`` names the archive (the seed's flag); the
rendering format is ``--format``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from novaops.cli.options import client, handle_errors

INCLUDE_GROUPS = ("experimental", "network", "metrics")
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def parse_duration(text: str, flag: str) -> int:
    """'24h' -> 86400; a one-line error naming the flag otherwise."""
    from novaops.client.errors import InvalidRequest

    match = _DURATION.match(text.strip())
    if not match:
        raise InvalidRequest(f"{flag} {text!r}: expected a number and a unit s|m|h|d, like 24h")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class _Progress:
    """Per-node progress bars on a terminal (stderr); nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import DownloadColumn, Progress, SpinnerColumn, TextColumn

            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                DownloadColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()

    def update(self, message: Any) -> None:
        if self._bar is None:
            return
        if message.WhichOneof("result") == "error":
            node = message.error.node
            task = self._tasks.setdefault(node, self._bar.add_task(node))
            self._bar.update(task, description=f"{node} [red]failed[/]")
            return
        chunk = message.chunk
        task = self._tasks.setdefault(chunk.node, self._bar.add_task(chunk.node, total=None))
        if chunk.WhichOneof("part") == "data":
            self._bar.update(task, completed=chunk.offset + len(chunk.data))
        elif chunk.WhichOneof("part") == "trailer":
            size = chunk.trailer.size
            self._bar.update(task, completed=size, total=size, description=f"{chunk.node} done")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@click.group()
def support() -> None:
    """Support bundles for vendors and post-mortems."""


@support.group("bundle", invoke_without_command=True)
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="A node (repeatable).")
@click.option("--all", "all_nodes", is_flag=True, help="Every registered node (the default).")
@click.option(
    "-o",
    "--output",
    "output_path",
    default=None,
    metavar="FILE",
    help="Archive to write: .tar.gz (default ./novaops-support-bundle.tar.gz) or .tar.zst.",
)
@click.option(
    "--include",
    "include",
    multiple=True,
    type=click.Choice(INCLUDE_GROUPS),
    help="Extra groups (repeatable).",
)
@click.option(
    "--scrub",
    is_flag=True,
    help="Also pseudonymize IPs, MACs, hostnames, domains, usernames, emails.",
)
@click.option("--since", default="24h", show_default=True, help="Only logs newer than this.")
@click.option(
    "--keep-map",
    is_flag=True,
    help="With --scrub: write the original-to-pseudonym map beside the archive (0600).",
)
@click.option(
    "--node-timeout",
    type=click.FloatRange(1),
    default=None,
    help="Seconds one node may take (default 600).",
)
@FORMAT
@click.pass_context
@handle_errors
def bundle(
    ctx: click.Context,
    nodes: tuple[str, ...],
    all_nodes: bool,
    output_path: str | None,
    include: tuple[str, ...],
    scrub: bool,
    since: str,
    keep_map: bool,
    node_timeout: float | None,
    fmt: str,
) -> None:
    """Collect a support bundle, redacted on each node before it leaves it."""
    if ctx.invoked_subcommand is not None:
        return
    import uuid

    from novaops.client.daemon import limit_malloc_arenas

    # Before any gRPC thread starts: with one malloc arena per thread, the 256 KiB
    # chunks of a large bundle left the CLI 60 MB above its working set (154 MiB
    # peak streaming 1 GiB, measured in a CI run; ~80-100 MiB with the cap).
    limit_malloc_arenas()
    from novaops.cli import render
    from novaops.client.bundle import (
        DEFAULT_OUTPUT,
        BundleRequestInfo,
        BundleWriter,
        apply_fleet_message,
        compression_for,
    )
    from novaops.client.errors import EXIT_NODES_UNREACHABLE, InvalidRequest

    if nodes and all_nodes:
        raise InvalidRequest("--node and --all exclude each other; give one")
    if keep_map and not scrub:
        raise InvalidRequest("--keep-map needs --scrub (without it nothing is pseudonymized)")
    output = Path(output_path or DEFAULT_OUTPUT)
    compression_for(output)  # a bad extension fails here, before any work
    since_seconds = parse_duration(since, "--since")
    request_id = uuid.uuid4().hex
    info = BundleRequestInfo(
        include=include,
        scrub=scrub,
        since_seconds=since_seconds,
        nodes=nodes,
        request_id=request_id,
    )
    stream = client(ctx).collect_bundle(
        list(nodes) or None,
        include=include,
        scrub=scrub,
        since_seconds=since_seconds,
        return_map=keep_map,
        request_id=request_id,
        per_node_ms=int(node_timeout * 1000) if node_timeout else 0,
    )
    progress = _Progress(sys.stderr.isatty() and fmt == "table")
    try:
        with BundleWriter(output, request=info, keep_map=keep_map) as writer:
            for message in stream:
                progress.update(message)
                apply_fleet_message(writer, message)
            summary = writer.close()
    finally:
        progress.stop()
    document = {
        "path": str(summary.path),
        "sha256": summary.sha256,
        "size": summary.size,
        "nodes": [n.to_json() for n in summary.nodes],
        "map": str(summary.map_path) if summary.map_path else None,
    }
    if fmt == "json":
        render.emit_json(document)
    else:
        render.bundle_summary(summary)
    if summary.failed_nodes:
        sys.exit(EXIT_NODES_UNREACHABLE)


@bundle.command("validate")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@FORMAT
@handle_errors
def bundle_validate(archive: Path, fmt: str) -> None:
    """Check manifests and checksums, and scan for leaked secrets (exit 1 on findings)."""
    from novaops.cli import render
    from novaops.client.bundle import validate
    from novaops.client.errors import EXIT_CHECK_FAILED

    findings = validate(archive)
    if fmt == "json":
        render.emit_json(
            [{"file": f.file, "line": f.line, "kind": f.kind, "detail": f.detail} for f in findings]
        )
    else:
        for finding in findings:
            render.message(str(finding))
        render.message(f"{archive}: {len(findings)} finding(s)" if findings else f"{archive}: ok")
    if findings:
        sys.exit(EXIT_CHECK_FAILED)


@bundle.command("extract")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--dest",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to extract into (nothing is ever written outside it).",
)
@handle_errors
def bundle_extract(archive: Path, dest: Path) -> None:
    """Verify, then extract safely (no absolute paths, .., escaping links, devices, bombs)."""
    from novaops.cli import render
    from novaops.client.bundle import extract

    written = extract(archive, dest)
    render.message(f"extracted {archive} into {written}")


@bundle.command("inspect")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@FORMAT
@handle_errors
def bundle_inspect(archive: Path, fmt: str) -> None:
    """Nodes, time window, failing checks, top errors, collector failures, redactions."""
    from dataclasses import asdict

    from novaops.cli import render
    from novaops.client.bundle import inspect

    report = inspect(archive)
    if fmt == "json":
        document = asdict(report)
        document["path"] = str(report.path)
        document["time_window"] = report.time_window
        render.emit_json(document)
    else:
        render.bundle_inspect(report)


@bundle.command("purge")
@click.option("--older-than", required=True, help="Age like 14d, 12h.")
@click.option(
    "--dir",
    "folder",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
)
@click.option("--dry-run", is_flag=True, help="List what would be removed.")
@handle_errors
def bundle_purge(older_than: str, folder: Path, dry_run: bool) -> None:
    """Remove stored bundles (and their maps) older than --older-than."""
    import datetime as dt

    from novaops.cli import render
    from novaops.client.bundle import purge

    age = dt.timedelta(seconds=parse_duration(older_than, "--older-than"))
    removed = purge(folder, age, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for path in removed:
        render.message(f"{verb} {path}")
    render.message(f"{verb} {len(removed)} file(s)")
