"""The combined bundle file, written from interleaved node streams.

Usage (client library, fed from ``FleetService.CollectBundle``)::

    with BundleWriter(Path(output), request=BundleRequestInfo(...), keep_map=flag) as writer:
        for message in stream:
            apply_fleet_message(writer, message)
        summary = writer.close()

What callers may rely on:

* Memory is bounded: each node's bytes go to its own temp file next to the
  output (``.<output name>.novaops-*``) as they arrive.
* A node is ``ok`` only when its trailer's size and sha256 match the bytes
  received, in order (offsets checked). A node that fails, sends a bad chunk,
  or never sends a trailer is ``failed`` in the manifest with the reason; the
  other nodes are unaffected.
* The output name appears only complete: the archive is written to a temp file
  in the same folder, fsynced, then renamed. Leaving the ``with`` block by an
  exception (Ctrl-C included) removes every temp file and writes nothing.
* Restart-clean, no resume: a writer holds an exclusive lock on
  ``.<output name>.lock``; a new writer for the same output removes temp files
  left by a killed one. A second concurrent writer gets :class:`BundleBusy`.
* ``keep_map`` writes the merged pseudonym map to ``<output>.map.json`` (mode
  0600), never into the archive.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from novaops.client.bundle.archive import compressed_writer, compression_for
from novaops.client.bundle.errors import BundleBusy, BundleError
from novaops.client.bundle.format import (
    BUNDLE_FORMAT,
    CHUNK_SIZE,
    MANIFEST_NAME,
    STATUS_FAILED,
    STATUS_OK,
    BundleRequestInfo,
    NodeEntry,
    json_bytes,
    node_archive_name,
)

_TEMP_MARK = ".novaops-"


def _novaops_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("novaops")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class _NodeSpool:
    entry: NodeEntry
    file: BinaryIO | None
    path: Path | None
    hash: Any = field(default_factory=hashlib.sha256)
    received: int = 0
    done: bool = False


@dataclass(frozen=True)
class BundleSummary:
    """What close() wrote: the file, its sha256 and size, the nodes, the map file."""

    path: Path
    sha256: str
    size: int
    nodes: tuple[NodeEntry, ...]
    map_path: Path | None

    @property
    def failed_nodes(self) -> list[str]:
        return [n.node for n in self.nodes if n.status != STATUS_OK]


class BundleWriter:
    """Receives node streams and writes the combined bundle file on close()."""

    def __init__(
        self,
        output: Path,
        *,
        request: BundleRequestInfo | None = None,
        keep_map: bool = False,
        novaops_version: str | None = None,
    ) -> None:
        self.output = Path(output).absolute()
        self._kind = compression_for(self.output)
        if self.output.is_dir():
            raise BundleError(f"{self.output}: is a folder; name the bundle file")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._request = request or BundleRequestInfo()
        self._keep_map = keep_map
        self._version = novaops_version or _novaops_version()
        self._nodes: dict[str, _NodeSpool] = {}
        self._maps: dict[str, dict[str, str]] = {}
        self._closed = False
        self._lock_path = self.output.parent / f".{self.output.name}.lock"
        self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise BundleBusy(f"{self.output}: another bundle is being written there") from None
        self._remove_stale_temp_files()

    # ------------------------------------------------------------------ receiving

    def start_node(self, node: str) -> None:
        """Registers node (its stream's header); idempotent."""
        self._spool(node)

    def add_chunk(self, node: str, offset: int, data: bytes) -> None:
        """Appends data at offset of node's archive; out of order marks it failed."""
        spool = self._spool(node)
        if spool.done:
            return
        if offset != spool.received:
            self._fail(spool, f"chunk at offset {offset}, expected {spool.received}")
            return
        if spool.file is None:
            fd, name = tempfile.mkstemp(
                dir=self.output.parent, prefix=f".{self.output.name}{_TEMP_MARK}", suffix=".node"
            )
            spool.file = os.fdopen(fd, "w+b")
            spool.path = Path(name)
        spool.file.write(data)
        spool.hash.update(data)
        spool.received += len(data)

    def finish_node(
        self,
        node: str,
        sha256: str,
        size: int,
        redactions: dict[str, int] | None = None,
        pseudonym_map: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """The node's trailer: verified against the bytes received."""
        spool = self._spool(node)
        if spool.done:
            return
        actual = spool.hash.hexdigest()
        if size != spool.received or sha256.lower() != actual:
            self._fail(
                spool,
                f"node archive does not match its trailer (got {spool.received} bytes "
                f"sha256 {actual[:12]}, trailer says {size} bytes sha256 {sha256[:12]})",
            )
            return
        spool.entry.status = STATUS_OK
        spool.entry.error = ""
        spool.entry.sha256 = actual
        spool.entry.size = spool.received
        spool.entry.archive = node_archive_name(node)
        spool.entry.redactions = dict(redactions or {})
        spool.done = True
        for kind, pairs in (pseudonym_map or {}).items():
            self._maps.setdefault(kind, {}).update(pairs)

    def fail_node(self, node: str, message: str) -> None:
        """Marks node failed with message (first failure wins); its bytes are dropped."""
        spool = self._spool(node)
        if not spool.done:
            self._fail(spool, message)

    def _spool(self, node: str) -> _NodeSpool:
        if self._closed:
            raise BundleError("bundle writer is closed")
        if not node or "/" in node or node in (".", ".."):
            raise BundleError(f"invalid node name {node!r}")
        spool = self._nodes.get(node)
        if spool is None:
            spool = _NodeSpool(NodeEntry(node=node, error="stream ended early"), None, None)
            self._nodes[node] = spool
        return spool

    def _fail(self, spool: _NodeSpool, message: str) -> None:
        spool.entry.status = STATUS_FAILED
        spool.entry.error = " ".join(message.split()) or "failed"
        spool.entry.archive = None
        spool.entry.sha256 = None
        spool.entry.size = 0
        spool.done = True
        self._drop(spool)

    # ------------------------------------------------------------------- writing

    def close(self) -> BundleSummary:
        """Writes the bundle (temp file, fsync, rename) and removes the spools."""
        if self._closed:
            raise BundleError("bundle writer is already closed")
        for spool in self._nodes.values():
            if not spool.done:
                self._fail(spool, "stream ended before the node's trailer")
        entries = tuple(self._nodes[name].entry for name in sorted(self._nodes))
        manifest = json_bytes(
            {
                "format": BUNDLE_FORMAT,
                "created_at": datetime.now(UTC).isoformat(),
                "novaops_version": self._version,
                "request": self._request.to_json(),
                "nodes": [entry.to_json() for entry in entries],
            }
        )
        fd, tmp_name = tempfile.mkstemp(
            dir=self.output.parent, prefix=f".{self.output.name}{_TEMP_MARK}", suffix=".out"
        )
        tmp = Path(tmp_name)
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w+b") as raw:
                self._write_archive(raw, manifest, entries)
                raw.flush()
                os.fsync(raw.fileno())
                size = raw.tell()
                raw.seek(0)
                digest = hashlib.sha256()
                while block := raw.read(CHUNK_SIZE):
                    digest.update(block)
            map_path = self._write_map() if self._keep_map else None
            tmp.replace(self.output)
            _fsync_dir(self.output.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            self.abort()
            raise
        self._cleanup()
        return BundleSummary(self.output, digest.hexdigest(), size, entries, map_path)

    def _write_archive(
        self, raw: BinaryIO, manifest: bytes, entries: tuple[NodeEntry, ...]
    ) -> None:
        now = int(time.time())
        compressed = compressed_writer(raw, self._kind)
        try:
            with tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo(MANIFEST_NAME)
                info.size, info.mtime, info.mode = len(manifest), now, 0o644
                tar.addfile(info, _BytesReader(manifest))
                for entry in entries:
                    spool = self._nodes[entry.node]
                    if entry.status != STATUS_OK or entry.archive is None:
                        continue
                    info = tarfile.TarInfo(entry.archive)
                    info.size, info.mtime, info.mode = entry.size, now, 0o644
                    if spool.file is None:
                        tar.addfile(info, _BytesReader(b""))
                        continue
                    spool.file.seek(0)
                    tar.addfile(info, spool.file)
        finally:
            compressed.close()

    def _write_map(self) -> Path:
        from novaops.pki.issue import write_atomic

        path = self.output.with_name(self.output.name + ".map.json")
        write_atomic(path, json_bytes(self._maps), mode=0o600)
        return path

    # ----------------------------------------------------------------- cleaning up

    def abort(self) -> None:
        """Drops everything received; no output is written. Idempotent."""
        for spool in self._nodes.values():
            self._drop(spool)
        self._cleanup()

    def _drop(self, spool: _NodeSpool) -> None:
        if spool.file is not None:
            spool.file.close()
            spool.file = None
        if spool.path is not None:
            spool.path.unlink(missing_ok=True)
            spool.path = None

    def _cleanup(self) -> None:
        if self._closed:
            return
        self._closed = True
        for spool in self._nodes.values():
            self._drop(spool)
        with contextlib.suppress(OSError):
            self._lock_path.unlink()
        os.close(self._lock_fd)

    def _remove_stale_temp_files(self) -> None:
        prefix = f".{self.output.name}{_TEMP_MARK}"
        for leftover in self.output.parent.glob(f"{glob_escape(prefix)}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or not self._closed:
            self.abort()


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk = bytes(self._data[self._pos : end])
        self._pos += len(chunk)
        return chunk


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply_fleet_message(writer: BundleWriter, message: Any) -> None:
    """Feeds one ``novaops.v1.FleetBundleChunk`` to writer (read by field name, no grpc)."""
    if message.WhichOneof("result") == "error":
        error = message.error
        writer.fail_node(error.node, error.message or "node failed")
        return
    chunk = message.chunk
    part = chunk.WhichOneof("part")
    if part == "header":
        writer.start_node(chunk.node)
    elif part == "data":
        writer.add_chunk(chunk.node, chunk.offset, chunk.data)
    elif part == "trailer":
        trailer = chunk.trailer
        mapping = json.loads(trailer.pseudonym_map_json) if trailer.pseudonym_map_json else None
        writer.finish_node(
            chunk.node, trailer.sha256, trailer.size, dict(trailer.redactions), mapping
        )
