"""Reading the dev-cluster node marker out of /proc/<pid>/environ bytes."""

from __future__ import annotations

import pytest

from novaops.executor.proctable import node_marker_of


def reference(environ: bytes) -> str | None:
    for entry in environ.split(b"\0"):
        if entry.startswith(b"NOVAOPS_NODE="):
            return entry.removeprefix(b"NOVAOPS_NODE=").decode(errors="replace")
    return None


@pytest.mark.parametrize(
    "environ",
    [
        b"",
        b"NOVAOPS_NODE=node-1\0",
        b"NOVAOPS_NODE=node-1",
        b"PATH=/bin\0NOVAOPS_NODE=node-7\0HOME=/root\0",
        b"PATH=/bin\0HOME=/root\0NOVAOPS_NODE=node-9",
        b"XNOVAOPS_NODE=no\0NOVAOPS_NODE=yes\0",
        b"A=NOVAOPS_NODE=inside-a-value\0",
        b"NOVAOPS_NODE=\0",
        b"NOVAOPS_NODE=first\0NOVAOPS_NODE=second\0",
        b"NOVAOPS_NODES=other\0",
        b"PATH=/bin\0NOVAOPS_NODE=caf\xc3\xa9\xff\0",
        b"\0\0NOVAOPS_NODE=after-empties\0",
    ],
)
def test_matches_splitting_the_environment(environ: bytes) -> None:
    assert node_marker_of(environ) == reference(environ)
