"""The span type every detector returns (secrets and identifiers alike), and the
lines that hold given positions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hit:
    """A sensitive value found in text: its kind and its [start, end) span."""

    kind: str
    start: int
    end: int


def lines_at(text: str, positions: list[int]) -> list[tuple[int, int]]:
    """The [start, end) of every line holding one of positions (end excludes the newline)."""
    lines: list[tuple[int, int]] = []
    end = -1
    for position in sorted(positions):
        if position <= end:
            continue
        start = text.rfind("\n", 0, position) + 1
        end = text.find("\n", position)
        if end < 0:
            end = len(text)
        lines.append((start, end))
    return lines
