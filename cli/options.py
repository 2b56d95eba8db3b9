"""Options and plumbing shared by the CLI's command modules (click only at import)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

OUTPUT_CHOICES = click.Choice(["table", "json"])


def version() -> str:
    from importlib.metadata import version

    return version("novaops")


def output_option(func: F) -> F:
    return click.option(
        "-o",
        "--output",
        type=OUTPUT_CHOICES,
        default="table",
        show_default=True,
        help="Render as a table or one JSON document.",
    )(func)


def handle_errors(func: F) -> F:
    """Turn library errors into one line on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from novaops.client.errors import NovaopsError

        try:
            return func(*args, **kwargs)
        except NovaopsError as exc:
            from novaops.cli import render

            render.error(str(exc))
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def client(ctx: click.Context) -> Any:
    # gRPC core logs handshake failures on stderr itself; the CLI reports them in
    # one line of its own, so silence the library unless the user asked for it.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from novaops.client.api import NovaopsClient
    from novaops.client.config import resolve_client_config_path

    path = resolve_client_config_path(ctx.obj.get("config"))
    client = NovaopsClient.from_config_file(path)
    ctx.call_on_close(client.close)
    return client


def node_options(func: F) -> F:
    """--node NAME (repeatable) / --all, and the fan-out deadlines."""
    func = click.option(
        "--overall-timeout",
        type=click.FloatRange(min=0.01),
        default=None,
        help="Seconds the whole fan-out may take (default: controller's).",
    )(func)
    func = click.option(
        "--node-timeout",
        type=click.FloatRange(min=0.01),
        default=None,
        help="Seconds any one node may take (default: controller's).",
    )(func)
    func = click.option("--all", "all_nodes", is_flag=True, help="Every registered node.")(func)
    return click.option(
        "--node", "nodes", multiple=True, metavar="NAME", help="A node (repeatable)."
    )(func)


def selection(nodes: tuple[str, ...], all_nodes: bool) -> list[str] | None:
    from novaops.client.errors import InvalidRequest

    if nodes and all_nodes:
        raise InvalidRequest("--node and --all exclude each other; give one")
    return list(nodes) or None


def ms(seconds: float | None) -> int:
    return int(seconds * 1000) if seconds else 0


def exit_if_unknown_nodes(failures: Any) -> None:
    """Exit 2 (usage) when a named node is not registered: a typo, not an outage.

    Called after rendering, before the check/unreachable exit codes, which it
    takes precedence over.
    """
    from novaops.client.errors import EXIT_USAGE

    if any(getattr(f, "kind", "") == "unknown_node" for f in failures):
        sys.exit(EXIT_USAGE)
