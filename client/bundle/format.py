"""Names and fields of the support bundle format (docs/bundle-format.md).

Shared by the executor (which writes node archives) and the client tools
(which write the combined file and read both). Plain dicts on the wire; the
``*_FORMAT`` strings version them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

BUNDLE_FORMAT = "novaops-support-bundle/1"
NODE_FORMAT = "novaops-node-bundle/1"
MANIFEST_NAME = "manifest.json"
NODE_METADATA_NAME = "metadata.json"
NODES_DIR = "nodes"
NODE_ARCHIVE_FORMAT = "tar"
DEFAULT_OUTPUT = "novaops-support-bundle.tar.gz"
CHUNK_SIZE = 256 * 1024

GROUP_LOGS = "logs"
GROUP_SYSTEM = "system"
GROUP_LIBVIRT = "libvirt"
GROUP_DIAG = "diag"
GROUP_NETWORK = "network"
GROUP_METRICS = "metrics"
GROUP_EXPERIMENTAL = "experimental"
DEFAULT_GROUPS = frozenset({GROUP_LOGS, GROUP_SYSTEM, GROUP_LIBVIRT, GROUP_DIAG})
OPTIONAL_GROUPS = frozenset({GROUP_NETWORK, GROUP_METRICS, GROUP_EXPERIMENTAL})

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"

DIAG_CHECKS_NAME = "diag/checks.json"


def node_archive_name(node: str) -> str:
    return f"{NODES_DIR}/{node}.tar"


def json_bytes(doc: Any) -> bytes:
    """The canonical JSON encoding of bundle documents (sorted, indented, newline)."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


@dataclass
class NodeEntry:
    """One node in the top-level manifest."""

    node: str
    status: str = STATUS_FAILED
    error: str = ""
    archive: str | None = None
    sha256: str | None = None
    size: int = 0
    redactions: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "status": self.status,
            "error": self.error,
            "archive": self.archive,
            "sha256": self.sha256,
            "size": self.size,
            "redactions": dict(sorted(self.redactions.items())),
        }


@dataclass(frozen=True)
class BundleRequestInfo:
    """What the caller asked for; recorded in the top-level manifest."""

    include: tuple[str, ...] = ()
    scrub: bool = False
    since_seconds: int | None = None
    nodes: tuple[str, ...] = ()
    request_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "include": sorted(self.include),
            "scrub": self.scrub,
            "since_seconds": self.since_seconds,
            # Scrubbed: the real names stay out of the bundle (the archives go by
            # pseudonyms; the map names them), only how many were asked for.
            "nodes": [] if self.scrub else list(self.nodes),
            "nodes_requested": len(self.nodes),
            "request_id": self.request_id,
        }
