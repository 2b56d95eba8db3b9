"""extract: unpack a bundle into a new folder, safely, all or nothing.

Layout produced: ``DEST/manifest.json`` and ``DEST/nodes/<node>/<files>`` (each
node archive unpacked; the node ``.tar`` files themselves are not kept).

What callers may rely on:

* Nothing is written outside DEST: files are created only by this code (no
  tar extraction), below a hidden temp folder inside DEST
  (``DEST/.novaops-extract-*``), with ``O_EXCL | O_NOFOLLOW``; absolute names,
  ``..``, links, devices, fifos, sparse members and duplicate names are
  refused before anything is written for them.
* Checksums (node archives against the manifest, files against each node's
  metadata) are verified while unpacking into the temp folder; its contents
  are moved into DEST only when the whole archive verified.
* A refused archive leaves the filesystem as it was: the temp folder is
  removed, and so are DEST and any of its parents that extract created.
* Decompression is bounded by :class:`Limits` (total bytes and ratio).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO

from novaops.client.bundle.archive import DEFAULT_LIMITS, Limits
from novaops.client.bundle.errors import ChecksumMismatch, DestinationExists, UnsafeArchive
from novaops.client.bundle.format import MANIFEST_NAME, NODES_DIR
from novaops.client.bundle.validate import BundleChecker

# The hidden folder inside DEST that holds the files until everything verified.
STAGING_PREFIX = ".novaops-extract-"


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
    DestinationExists, each with a one-line reason; the filesystem is then as
    it was before the call.
    """
    dest = Path(dest).absolute()
    if dest.is_symlink() and not dest.exists():
        raise DestinationExists(f"{dest}: is a dangling symbolic link")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DestinationExists(f"{dest}: exists and is not an empty folder")
    created = _make_folders(dest)
    staging: Path | None = None
    moved: list[Path] = []
    try:
        staging = Path(tempfile.mkdtemp(dir=dest, prefix=STAGING_PREFIX))
        extractor = _Extractor(staging.resolve())
        findings = extractor.run(Path(path), limits)
        for finding in findings:
            if finding.kind == "unsafe":
                raise UnsafeArchive(finding.detail)
        if findings:
            raise ChecksumMismatch(f"{findings[0]} ({len(findings)} problem(s))")
        others = [entry.name for entry in dest.iterdir() if entry != staging]
        if others:
            raise DestinationExists(f"{dest}: {others[0]} appeared while extracting")
        for entry in sorted(staging.iterdir()):
            target = dest / entry.name
            entry.rename(target)
            moved.append(target)
        staging.rmdir()
    except BaseException:
        for target in moved:
            _remove(target)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return dest


def _make_folders(dest: Path) -> list[Path]:
    """Creates dest and its missing parents; returns the ones created, outermost first."""
    missing: list[Path] = []
    folder = dest
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
    except BaseException:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return created


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)
