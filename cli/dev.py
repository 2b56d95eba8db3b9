"""``novaops dev``: a local simulated cluster (placeholder until devcluster lands)."""

from __future__ import annotations

import click


@click.group()
def dev() -> None:
    """A local simulated cluster on loopback, with mTLS."""
