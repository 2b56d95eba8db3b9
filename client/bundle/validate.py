"""validate: a bundle's manifests agree, every checksum matches, and nothing leaks.

What callers may rely on:

* :func:`validate` returns findings and raises only when the file is not a
  bundle at all (:class:`BundleFormatError`); an unsafe member is a finding.
* Findings print as ``file:line kind detail``; values are masked, never shown.
* The leak scan always looks for secrets; when the manifest says the bundle was
  scrubbed it also looks for raw identifiers (IPs, MACs, emails, host names,
  contextual user names) that are neither exempt nor pseudonyms.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from novaops.client.bundle.archive import DEFAULT_LIMITS, Limits, walk_bundle
from novaops.client.bundle.detectors import (
    SECRET_KINDS,
    IdentifierDetector,
    find_secrets,
)
from novaops.client.bundle.errors import UnsafeArchive
from novaops.client.bundle.format import (
    MANIFEST_NAME,
    NODE_FORMAT,
    NODE_METADATA_NAME,
    NODES_DIR,
    STATUS_OK,
)

_MAX_LINE = 1024 * 1024
_READ = 256 * 1024


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: where (archive file and line; 0 for the whole file), kind, detail."""

    file: str
    line: int
    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.kind} {self.detail}".rstrip()


def mask(kind: str, value: str) -> str:
    """value with all but a hint hidden (nothing at all of a secret)."""
    if kind in SECRET_KINDS or len(value) <= 4:
        return "*" * min(len(value), 8) + f" ({len(value)} chars)"
    return value[:2] + "*" * min(len(value) - 2, 10) + f" ({len(value)} chars)"


@dataclass
class _NodeState:
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None


class BundleChecker:
    """Walks a bundle checking integrity; subclasses add line consumers and sinks.

    Hooks: :meth:`wants_lines` / :meth:`line` see every decoded line of the
    node files they want; :meth:`open_sink` may return a binary file that gets
    every byte of a node file (extract).
    """

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.manifest_doc: dict[str, Any] = {}
        self.entries: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, _NodeState] = {}
        self.scrubbed = False

    # --- hooks for subclasses
    def wants_lines(self, node: str, path: PurePosixPath) -> bool:
        return False

    def line(self, node: str, path: PurePosixPath, number: int, text: str) -> None:
        pass

    def open_sink(self, node: str, path: PurePosixPath) -> IO[bytes] | None:
        return None

    def manifest_sink(self, data: bytes) -> None:
        pass

    # --- visitor
    def manifest(self, doc: dict[str, Any]) -> None:
        self.manifest_doc = doc
        self.manifest_sink(json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
        request = doc.get("request") or {}
        self.scrubbed = bool(request.get("scrub"))
        for entry in doc.get("nodes") or []:
            node = str(entry.get("node", ""))
            if not node or node in self.entries:
                self.add(MANIFEST_NAME, 0, "manifest", f"bad or duplicate node entry {node!r}")
                continue
            self.entries[node] = entry

    def node_member(self, node: str, path: PurePosixPath, content: IO[bytes]) -> None:
        state = self.nodes.setdefault(node, _NodeState())
        digest = hashlib.sha256()
        size = 0
        sink = self.open_sink(node, path)
        lines = self.wants_lines(node, path)
        keep_json = str(path) == NODE_METADATA_NAME
        json_parts: list[bytes] = []
        number = 0
        try:
            while True:
                raw = content.readline(_MAX_LINE) if lines or keep_json else content.read(_READ)
                if not raw:
                    break
                digest.update(raw)
                size += len(raw)
                if sink is not None:
                    sink.write(raw)
                if keep_json:
                    json_parts.append(raw)
                if lines:
                    number += 1
                    self.line(node, path, number, raw.decode("utf-8", "surrogateescape"))
        finally:
            if sink is not None:
                sink.close()
        state.files[str(path)] = (digest.hexdigest(), size)
        if keep_json:
            try:
                state.metadata = json.loads(b"".join(json_parts))
            except ValueError:
                self.add(self._where(node, path), 0, "metadata", "not valid JSON")

    def node_end(self, node: str, sha256: str, size: int) -> None:
        where = f"{NODES_DIR}/{node}.tar"
        entry = self.entries.get(node)
        if entry is None:
            self.add(where, 0, "manifest", "node archive not listed in the manifest")
        elif entry.get("status") != STATUS_OK:
            self.add(where, 0, "manifest", "archive present for a node marked failed")
        elif entry.get("sha256") != sha256 or entry.get("size") != size:
            self.add(where, 0, "checksum", "node archive does not match the manifest")
        self._check_metadata(node)

    def _check_metadata(self, node: str) -> None:
        state = self.nodes.setdefault(node, _NodeState())
        where = f"{NODES_DIR}/{node}.tar:{NODE_METADATA_NAME}"
        meta = state.metadata
        if meta is None:
            self.add(where, 0, "metadata", "missing")
            return
        if meta.get("format") != NODE_FORMAT or meta.get("node") != node:
            self.add(where, 0, "metadata", "wrong format or node name")
        listed = {str(f.get("path")): f for f in meta.get("files") or []}
        for name, (sha, size) in sorted(state.files.items()):
            if name == NODE_METADATA_NAME:
                continue
            item = listed.pop(name, None)
            if item is None:
                self.add(self._where(node, name), 0, "metadata", "file not listed in metadata")
            elif item.get("sha256") != sha or item.get("size") != size:
                self.add(self._where(node, name), 0, "checksum", "file does not match metadata")
        for name in sorted(listed):
            self.add(self._where(node, name), 0, "metadata", "listed file missing")

    def finish(self) -> None:
        for node, entry in sorted(self.entries.items()):
            if entry.get("status") == STATUS_OK and node not in self.nodes:
                self.add(f"{NODES_DIR}/{node}.tar", 0, "manifest", "archive missing")

    def add(self, file: str, line: int, kind: str, detail: str = "") -> None:
        self.findings.append(Finding(file, line, kind, detail))

    @staticmethod
    def _where(node: str, path: PurePosixPath | str) -> str:
        return f"{NODES_DIR}/{node}.tar:{path}"

    def run(self, path: Path, limits: Limits) -> list[Finding]:
        try:
            walk_bundle(path, self, limits)
        except UnsafeArchive as exc:
            self.add(str(path.name), 0, "unsafe", str(exc))
            return self.findings
        self.finish()
        return self.findings


class LeakScanner(BundleChecker):
    """Integrity checks plus the leak scan of every node file."""

    def __init__(self) -> None:
        super().__init__()
        self._identifiers: IdentifierDetector | None = None

    def manifest(self, doc: dict[str, Any]) -> None:
        super().manifest(doc)
        self._identifiers = IdentifierDetector() if self.scrubbed else None

    def wants_lines(self, node: str, path: PurePosixPath) -> bool:
        return True

    def line(self, node: str, path: PurePosixPath, number: int, text: str) -> None:
        where = self._where(node, path)
        for hit in find_secrets(text):
            self.add(where, number, hit.kind, mask(hit.kind, text[hit.start : hit.end]))
        if self._identifiers is not None:
            for hit in self._identifiers.find(text):
                self.add(where, number, hit.kind, mask(hit.kind, text[hit.start : hit.end]))


def validate(
    path: Path, *, limits: Limits = DEFAULT_LIMITS, leak_scan: bool = True
) -> list[Finding]:
    """Every finding in the bundle at path (empty: valid). BundleFormatError if unreadable."""
    checker = LeakScanner() if leak_scan else BundleChecker()
    return checker.run(Path(path), limits)
