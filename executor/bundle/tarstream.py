"""A tar archive produced as a sequence of bounded byte chunks.

tarfile writes push-style into a file; a bundle must be pulled chunk by chunk
by the gRPC stream (back-pressure), so members are framed here by hand with
``TarInfo.tobuf`` and their content copied in chunk-sized reads. The output is
a plain POSIX (pax) tar any tar tool reads.

What callers may rely on: no yielded chunk exceeds ``chunk_size``; memory use is
bounded by about two chunks whatever the member sizes; ``sha256`` and ``size``
cover every byte yielded so far.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


class TarStream:
    """Frames members into tar bytes and cuts them into chunks."""

    def __init__(self, chunk_size: int) -> None:
        if chunk_size < _BLOCK:
            raise ValueError(f"chunk size must be at least {_BLOCK} bytes")
        self.chunk_size = chunk_size
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def add(self, name: str, content: BinaryIO, size: int, mtime: float) -> Iterator[bytes]:
        """Chunks for one regular-file member; content must hold exactly size bytes."""
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = int(mtime)
        info.mode = 0o644
        info.type = tarfile.REGTYPE
        self._buffer += info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        copied = 0
        while True:
            yield from self._full_chunks()
            block = content.read(self.chunk_size)
            if not block:
                break
            copied += len(block)
            self._buffer += block
        if copied != size:
            raise ValueError(f"member {name!r} changed size while archived ({copied} != {size})")
        self._buffer += b"\0" * (-size % _BLOCK)
        yield from self._full_chunks()

    def finish(self) -> Iterator[bytes]:
        """The end-of-archive blocks and every byte still buffered."""
        self._buffer += b"\0" * (2 * _BLOCK)
        total = self.size + len(self._buffer)
        self._buffer += b"\0" * (-total % _RECORD)
        yield from self._full_chunks()
        if self._buffer:
            yield self._emit(bytes(self._buffer))
            self._buffer.clear()

    def _full_chunks(self) -> Iterator[bytes]:
        while len(self._buffer) >= self.chunk_size:
            chunk = bytes(self._buffer[: self.chunk_size])
            del self._buffer[: self.chunk_size]
            yield self._emit(chunk)

    def _emit(self, chunk: bytes) -> bytes:
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk
