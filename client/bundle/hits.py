"""The span type every detector returns (secrets and identifiers alike)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hit:
    """A sensitive value found in text: its kind and its [start, end) span."""

    kind: str
    start: int
    end: int
