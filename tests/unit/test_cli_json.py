"""JSON output of fleet-sized arrays: same documents as asdict and indented dumps."""

from __future__ import annotations

import dataclasses
import json

import pytest

from novaops.cli import render
from novaops.client.models import Check, Remedy


def _check(i: int, remediation: list[Remedy]) -> Check:
    return Check(
        node=f"node-{i}",
        check_id="host.orphans",
        target="host",
        status="fail" if remediation else "ok",
        summary='orphan "qemu" \u00e9 \\ pid 42',
        evidence={"pid": "42", "cmdline": "qemu-system-x86_64 -name guest=x"},
        remediation=remediation,
        observed_at=None if i % 2 else "2026-12-01T22:00:00+00:00",
        event_id=f"{i:032x}",
    )


CHECKS = [
    _check(1, []),
    _check(2, [Remedy("Stop it", "novaops recover --node n terminate-orphans"), Remedy("a", "")]),
]


@pytest.mark.parametrize("check", CHECKS)
def test_check_to_json_is_what_asdict_gives(check: Check) -> None:
    assert check.to_json() == dataclasses.asdict(check)


@pytest.mark.parametrize("items", [[], [c.to_json() for c in CHECKS], [{"a": [1, None]}]])
def test_json_array_parses_to_the_same_document(
    items: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    render.emit_json_array(items)
    out = capsys.readouterr().out
    assert json.loads(out) == items
    assert out.endswith("]\n")
    if items:  # one item per line, between the brackets
        assert len(out.splitlines()) == len(items) + 2
