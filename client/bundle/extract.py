"""extract: unpack a bundle into a new folder, safely, all or nothing.

Layout produced: ``DEST/manifest.json`` and ``DEST/nodes/<node>/<files>`` (each
node archive unpacked; the node ``.tar`` files themselves are not kept).

What callers may rely on:

* Nothing is written outside DEST: files are created only by this code (no
  tar extraction), below a temp folder next to DEST, with ``O_EXCL |
  O_NOFOLLOW``; absolute names, ``..``, links, devices, fifos and duplicate
  names are refused before anything is written for them.
* Checksums (node archives against the manifest, files against each node's
  metadata) are verified while unpacking into the temp folder; DEST appears
  (by rename) only when the whole archive verified, so a refused archive
  leaves DEST exactly as it was.
* Decompression is bounded by :class:`Limits` (total bytes and ratio).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO

from novaops.client.bundle.archive import DEFAULT_LIMITS, Limits
from novaops.client.bundle.errors import ChecksumMismatch, DestinationExists, UnsafeArchive
from novaops.client.bundle.format import MANIFEST_NAME, NODES_DIR
from novaops.client.bundle.validate import BundleChecker


class _Extractor(BundleChecker):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def manifest_sink(self, data: bytes) -> None:
        with self._create(PurePosixPath(MANIFEST_NAME)) as fh:
            fh.write(data)

    def open_sink(self, node: str, path: PurePosixPath) -> IO[bytes] | None:
        if node in ("", ".", ".."):
            raise UnsafeArchive(f"invalid node name {node!r}")
        return self._create(PurePosixPath(NODES_DIR, node, path))

    def _create(self, relative: PurePosixPath) -> IO[bytes]:
        target = self.root.joinpath(*relative.parts)
        # Belt and braces: the walker already refused '..' and absolute names.
        if os.path.commonpath([self.root, os.path.normpath(target)]) != str(self.root):
            raise UnsafeArchive(f"{relative}: would be written outside the destination")
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.fdopen(os.open(target, flags, 0o644), "wb")


def extract(path: Path, dest: Path, *, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Unpacks the bundle at path into dest (new or empty); returns dest.

    Raises UnsafeArchive, ChecksumMismatch, BundleFormatError or
    DestinationExists, each with a one-line reason; dest is then untouched.
    """
    dest = Path(dest).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DestinationExists(f"{dest}: exists and is not an empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
    try:
        extractor = _Extractor(staging.resolve())
        findings = extractor.run(Path(path), limits)
        for finding in findings:
            if finding.kind == "unsafe":
                raise UnsafeArchive(finding.detail)
        if findings:
            raise ChecksumMismatch(f"{findings[0]} ({len(findings)} problem(s))")
        staging.chmod(0o755)
        if dest.exists():
            dest.rmdir()
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest
