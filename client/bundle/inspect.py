"""inspect: what a bundle says, without unpacking it.

Per node: status, time window, collector failures, failing diagnostic checks
(from ``diag/checks.json``), redaction counts, and the most frequent error lines
of its logs (timestamps and numbers folded so repeats count together).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from novaops.client.bundle.archive import DEFAULT_LIMITS, Limits
from novaops.client.bundle.format import DIAG_CHECKS_NAME, STATUS_FAILED, STATUS_OK
from novaops.client.bundle.validate import BundleChecker, Finding

TOP_ERRORS = 10
# Distinct error shapes counted per node; past this only known shapes count.
_MAX_SHAPES = 5000
_ERROR_RE = re.compile(r"(?i)\b(?:error|err|critical|crit|fatal|failed|failure|panic|oops)\b")
_LEADING_TIME_RE = re.compile(
    r"^\s*(?:\d{4}-\d\d-\d\d(?:[T ][\d:.,]+(?:Z|[+-]\d\d:?\d\d)?)?|[A-Z][a-z]{2} +\d+ [\d:]+)\s*"
)
_NUMBER_RE = re.compile(r"\b\d+\b")
_PASSING = ("ok", "pass", "passed", "healthy", "skipped", "skip", "info", "unknown")


@dataclass(frozen=True)
class FailingCheck:
    name: str
    status: str
    message: str
    remediation: str = ""


@dataclass
class NodeReport:
    """One node of the bundle."""

    node: str
    status: str
    error: str = ""
    window_since: str | None = None
    window_until: str | None = None
    collector_failures: list[tuple[str, str]] = field(default_factory=list)
    failing_checks: list[FailingCheck] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)
    files: int = 0
    top_errors: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class InspectReport:
    """The bundle as a whole: request, nodes, and integrity problems found on the way."""

    path: Path
    created_at: str
    novaops_version: str
    request: dict[str, Any]
    nodes: list[NodeReport]
    problems: list[Finding]

    @property
    def time_window(self) -> tuple[str | None, str | None]:
        since = [n.window_since for n in self.nodes if n.window_since]
        until = [n.window_until for n in self.nodes if n.window_until]
        return (min(since) if since else None, max(until) if until else None)

    def redaction_totals(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for node in self.nodes:
            total.update(node.redactions)
        return dict(sorted(total.items()))


def error_shape(line: str) -> str:
    """line without its leading timestamp and with numbers folded to '#'."""
    text = _LEADING_TIME_RE.sub("", line.strip())
    return _NUMBER_RE.sub("#", text)[:200]


def failing_checks(doc: Any) -> list[FailingCheck]:
    """Checks of diag/checks.json whose status is not passing."""
    items = doc if isinstance(doc, list) else (doc or {}).get("checks", [])
    found: list[FailingCheck] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        status = str(item.get("status", "")).lower().removeprefix("check_status_")
        if status in _PASSING:
            continue
        found.append(
            FailingCheck(
                name=str(item.get("name") or item.get("check") or "?"),
                status=status,
                message=str(item.get("message") or item.get("summary") or ""),
                remediation=str(item.get("remediation") or ""),
            )
        )
    return found


class _Inspector(BundleChecker):
    def __init__(self) -> None:
        super().__init__()
        self.errors: dict[str, Counter[str]] = {}
        self.diag: dict[str, list[bytes]] = {}

    def wants_lines(self, node: str, path: PurePosixPath) -> bool:
        return path.parts[0] == "logs" or str(path) == DIAG_CHECKS_NAME

    def line(self, node: str, path: PurePosixPath, number: int, text: str) -> None:
        if str(path) == DIAG_CHECKS_NAME:
            self.diag.setdefault(node, []).append(text.encode("utf-8", "surrogateescape"))
            return
        if _ERROR_RE.search(text):
            counter = self.errors.setdefault(node, Counter())
            shape = error_shape(text)
            if shape in counter or len(counter) < _MAX_SHAPES:
                counter[shape] += 1


def inspect(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> InspectReport:
    """A report of the bundle at path. BundleFormatError if it is not a bundle."""
    inspector = _Inspector()
    problems = inspector.run(Path(path), limits)
    reports: list[NodeReport] = []
    names = sorted(set(inspector.entries) | set(inspector.nodes))
    for node in names:
        entry = inspector.entries.get(node, {})
        report = NodeReport(
            node=node,
            status=str(entry.get("status", STATUS_FAILED)),
            error=str(entry.get("error") or ""),
            redactions={k: int(v) for k, v in (entry.get("redactions") or {}).items()},
        )
        state = inspector.nodes.get(node)
        meta = state.metadata if state is not None else None
        if meta:
            window = meta.get("window") or {}
            report.window_since = window.get("since")
            report.window_until = window.get("until")
            report.collector_failures = [
                (str(c.get("name")), str(c.get("error") or ""))
                for c in meta.get("collectors") or []
                if c.get("status") == STATUS_FAILED
            ]
            if not report.redactions:
                report.redactions = {
                    str(r.get("kind")): int(r.get("count", 0))
                    for r in meta.get("redactions") or []
                    if isinstance(r, dict)
                }
            report.files = len(meta.get("files") or [])
        if node in inspector.diag:
            try:
                report.failing_checks = failing_checks(json.loads(b"".join(inspector.diag[node])))
            except ValueError:
                report.collector_failures.append((DIAG_CHECKS_NAME, "not valid JSON"))
        counter = inspector.errors.get(node)
        if counter:
            report.top_errors = [(n, s) for s, n in counter.most_common(TOP_ERRORS)]
        if report.status != STATUS_OK and not report.error:
            report.error = "failed"
        reports.append(report)
    doc = inspector.manifest_doc
    return InspectReport(
        path=Path(path),
        created_at=str(doc.get("created_at", "")),
        novaops_version=str(doc.get("novaops_version", "")),
        request=dict(doc.get("request") or {}),
        nodes=reports,
        problems=problems,
    )
