"""The node bundle builder: runs the collectors and streams a redacted tar.

Usage (executor servicer)::

    builder = NodeBundleBuilder(BundleOptions.from_request(node, request), sources)
    async for chunk in builder.stream():      # <= 256 KiB each, produced on demand
        ...
    builder.result                              # sha256, size, redactions, map

What callers may rely on:

* Every byte of every member went through one :class:`Redactor` for the whole
  node bundle (counts and pseudonyms accumulate across files).
* A collector that raises is recorded ``failed`` with its error in
  ``metadata.json`` and the bundle goes on; members it completed before failing
  stay. A collector that calls ``ctx.skip(reason)`` is recorded ``skipped``.
* Memory stays bounded: each member is redacted into an anonymous temp file
  (``spool_dir``; unlinked at creation, so nothing is left behind even after
  a crash), then framed and read out in chunks only as the consumer asks.
* Default-rules bundles redact large log files in two worker processes
  (:mod:`novaops.executor.bundle.parallel`) while the builder collects and
  frames the others; members are framed in collector order, so the archive is
  the same bytes as with one process. Scrubbed bundles use one process.
* ``metadata.json`` is the last member and lists every other member with size
  and sha256 of the bytes in the archive.
* With scrub, the node's own names (its node name, the host's /etc/hostname,
  and their short forms) are pseudonymized like any host name wherever they
  appear, also inside paths and member names; ``metadata.json``'s ``node`` is
  the pseudonym (:attr:`BundleResult.archive_node`), and the real name is only
  in the pseudonym map (``return_map``, for ``--keep-map``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import inspect
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from novaops.client.bundle.format import (
    CHUNK_SIZE,
    DEFAULT_GROUPS,
    NODE_FORMAT,
    NODE_METADATA_NAME,
    OPTIONAL_GROUPS,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    json_bytes,
)
from novaops.executor.bundle.logs import DEFAULT_MAX_FILE_BYTES
from novaops.executor.bundle.parallel import (
    PARALLEL_MIN_BYTES,
    RedactedFile,
    RedactionPool,
    open_spool,
    remove_stale_spools,
)
from novaops.executor.hostroot import HostRoot
from novaops.executor.redact import Redactor, host_identifiers, name_forms

DEFAULT_SOURCE_TIMEOUT_SECONDS = 60.0


class InvalidBundleOptions(ValueError):
    """The request names an unknown group or an impossible limit (one line)."""


class CollectorSkipped(Exception):
    """Raised by a collector (through ``ctx.skip``) when it does not apply here."""


@dataclass(frozen=True)
class BundleOptions:
    """What one node bundle contains (from ``CollectBundleRequest``)."""

    node: str
    request_id: str = ""
    include: frozenset[str] = frozenset()
    scrub: bool = False
    scrub_key: bytes = b""
    since: timedelta | None = None
    max_file_bytes: int = 0
    return_map: bool = False
    chunk_size: int = CHUNK_SIZE
    # Worker processes for large files (default rules only); 0 or 1: none.
    workers: int = 2

    def __post_init__(self) -> None:
        unknown = sorted(set(self.include) - OPTIONAL_GROUPS)
        if unknown:
            allowed = "|".join(sorted(OPTIONAL_GROUPS))
            raise InvalidBundleOptions(f"unknown include group {unknown[0]!r} (use {allowed})")
        if self.since is not None and self.since <= timedelta(0):
            raise InvalidBundleOptions("since must be a positive duration")

    @property
    def groups(self) -> frozenset[str]:
        return DEFAULT_GROUPS | self.include

    @classmethod
    def from_request(cls, node: str, request: Any) -> BundleOptions:
        """From a ``novaops.v1.CollectBundleRequest`` (read by field name)."""
        since = request.since.ToTimedelta() if request.HasField("since") else None
        return cls(
            node=node,
            request_id=request.request_id,
            include=frozenset(request.include),
            scrub=request.scrub,
            scrub_key=bytes(request.scrub_key),
            since=since if since else None,
            max_file_bytes=int(request.max_file_bytes),
            return_map=request.return_map,
        )


# An injected source: called without arguments, may return a value or an
# awaitable (then only stream() can use it), may raise.
Source = Callable[[], Any]


@dataclass
class BundleSources:
    """Where collectors get what is not a host file. Every callable may be None or raise.

    libvirt_info: returns ``(version, capabilities_xml)``. domains: returns
    ``[(name, state, xml), ...]``. diag_checks: JSON-able list of check results
    (dicts with at least ``name`` and ``status``). diag_network: JSON-able
    results of ``diag network``. netlink: JSON-able dump of links, addresses,
    routes and bridges; when None and the host root is ``/`` pyroute2 is used.
    registry: a prometheus_client ``CollectorRegistry``.
    """

    host_root: HostRoot
    novaops_version: str = "unknown"
    executor_log: Path | None = None
    registry: Any = None
    libvirt_info: Source | None = None
    domains: Source | None = None
    diag_checks: Source | None = None
    diag_network: Source | None = None
    netlink: Source | None = None
    image_dirs: Sequence[str] = ("/var/lib/libvirt/images",)
    spool_dir: Path | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    source_timeout_seconds: float = DEFAULT_SOURCE_TIMEOUT_SECONDS


@dataclass(frozen=True)
class BundleResult:
    """The trailer of a finished node bundle.

    archive_node: the name the node goes by inside the bundle (its pseudonym
    when scrubbed, as in ``metadata.json``); the caller should name the node's
    archive and manifest entry by it.
    """

    sha256: str
    size: int
    redactions: dict[str, int]
    pseudonym_map: dict[str, dict[str, str]] | None
    archive_node: str = ""


@dataclass
class Member:
    """One redacted file ready to be archived (content rewound to its start)."""

    name: str
    content: BinaryIO
    size: int
    sha256: str
    mtime: float
    source: str = ""
    truncated: bool = False
    # Being redacted by a worker: content, size and sha256 are set by resolve().
    pending: Future[RedactedFile] | None = None

    def resolve(self, redactor: Redactor) -> None:
        """Waits for a worker's result (if any) and takes its spool file and counts."""
        if self.pending is None:
            return
        result = self.pending.result()
        self.pending = None
        self.content.close()
        self.content = os.fdopen(open_spool(result), "rb")
        self.size = result.size
        self.sha256 = result.sha256
        redactor.add_counts(result.counts)

    def discard(self) -> None:
        """Closes the content; a pending worker's spool file is removed."""
        self.content.close()
        if self.pending is not None:
            with contextlib.suppress(Exception):
                Path(self.pending.result().spool).unlink()


class _HashingWriter:
    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.sink.write(data)


class CollectorContext:
    """What a collector gets: options, host root, sources, and member factories."""

    def __init__(
        self,
        options: BundleOptions,
        sources: BundleSources,
        redactor: Redactor,
        now: datetime,
        resolved: dict[str, tuple[bool, Any]],
    ) -> None:
        self.options = options
        self.sources = sources
        self.root = sources.host_root
        self.redactor = redactor
        self.now = now
        self.since_time = now - options.since if options.since else None
        self.max_file_bytes = options.max_file_bytes or DEFAULT_MAX_FILE_BYTES
        self.spool_dir = sources.spool_dir
        self._resolved = resolved
        self.pool: RedactionPool | None = None

    def skip(self, reason: str) -> NoReturn:
        raise CollectorSkipped(reason)

    def source(self, name: str) -> Any:
        """The value of an injected source; skips when it is absent, raises what it raised."""
        if name in self._resolved:
            ok, value = self._resolved[name]
            if not ok:
                raise value
            return value
        function = getattr(self.sources, name)
        if function is None:
            self.skip(f"no {name} source on this executor")
        value = function()
        if inspect.isawaitable(value):
            close = getattr(value, "close", None)
            if close is not None:
                close()
            raise RuntimeError(f"source {name} is async; build with stream()")
        return value

    def redacted_member(
        self,
        name: str,
        content: BinaryIO,
        *,
        source: str = "",
        mtime: float | None = None,
        truncated: bool = False,
    ) -> Member:
        """Redacts content (from its current position) into a spool file.

        A large regular file (``content.name`` a path) of a default-rules bundle
        goes to a worker process: the member is returned pending.
        """
        path = getattr(content, "name", None)
        if self.pool is not None and isinstance(path, str):
            with contextlib.suppress(OSError):
                offset = content.tell()
                remaining = os.fstat(content.fileno()).st_size - offset
                if remaining >= PARALLEL_MIN_BYTES:
                    return Member(
                        name=self.redactor.redact_line(name),
                        content=tempfile.TemporaryFile(dir=self.spool_dir),
                        size=0,
                        sha256="",
                        mtime=self.now.timestamp() if mtime is None else mtime,
                        source=source,
                        truncated=truncated,
                        pending=self.pool.submit(path, offset, self.spool_dir),
                    )
        spool = tempfile.TemporaryFile(dir=self.spool_dir)  # noqa: SIM115 - returned open
        try:
            writer = _HashingWriter(spool)
            size = self.redactor.redact_stream(content, writer)  # type: ignore[arg-type]
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return Member(
            name=self.redactor.redact_line(name),
            content=spool,
            size=size,
            sha256=writer.hash.hexdigest(),
            mtime=self.now.timestamp() if mtime is None else mtime,
            source=source,
            truncated=truncated,
        )

    def text_member(self, name: str, text: str | bytes, *, source: str = "") -> Member:
        data = text.encode() if isinstance(text, str) else text
        with tempfile.TemporaryFile(dir=self.spool_dir) as raw:
            raw.write(data)
            raw.seek(0)
            return self.redacted_member(name, raw, source=source)

    def json_member(self, name: str, doc: Any, *, source: str = "") -> Member:
        return self.text_member(name, json_bytes(doc), source=source)


Collector = Callable[[CollectorContext], Iterator[Member]]


@dataclass(frozen=True)
class CollectorSpec:
    name: str
    group: str
    collect: Collector


class NodeBundleBuilder:
    """Builds one node's bundle; iterate :meth:`chunks` or async-iterate :meth:`stream` once."""

    def __init__(
        self,
        options: BundleOptions,
        sources: BundleSources,
        collectors: Sequence[CollectorSpec] | None = None,
    ) -> None:
        from novaops.executor.bundle.collectors import default_collectors

        self.options = options
        self.sources = sources
        self.collectors = list(collectors) if collectors is not None else default_collectors()
        self.result: BundleResult | None = None
        self._resolved: dict[str, tuple[bool, Any]] = {}
        self._bundle_redactor: Redactor | None = None
        self._archive_name = options.node

    @property
    def archive_node(self) -> str:
        """The node's name in the archive: its pseudonym when scrubbed, else its name.

        Known before streaming (a server sends it with the first chunk). The
        first call builds the bundle's Redactor, which reads the host's /etc
        files and compiles its patterns: call it off the event loop.
        """
        self._redactor_of_bundle()
        return self._archive_name

    def _redactor_of_bundle(self) -> Redactor:
        if self._bundle_redactor is None:
            redactor = self._redactor()
            if self.options.scrub and self.options.node:
                # The node's pseudonym is the map's first: never re-derived after a collision.
                self._archive_name = redactor.pseudonym("hostname", self.options.node)
            self._bundle_redactor = redactor
        return self._bundle_redactor

    def _redactor(self) -> Redactor:
        ids = host_identifiers(self.sources.host_root)
        return Redactor(
            scrub=self.options.scrub,
            key=self.options.scrub_key,
            known_users=ids.users,
            known_hosts=ids.hosts,
            system_users=ids.system_users,
            node_names=name_forms(self.options.node) | ids.own_names,
        )

    def chunks(self) -> Generator[bytes, None, None]:
        """The node tar as chunks, produced lazily; sets ``result`` at the end."""
        from novaops.executor.bundle.tarstream import TarStream

        now = self.sources.clock()
        redactor = self._redactor_of_bundle()
        ctx = CollectorContext(self.options, self.sources, redactor, now, self._resolved)
        tar = TarStream(self.options.chunk_size)
        records: list[dict[str, Any]] = []
        files: list[dict[str, Any]] = []
        names: set[str] = set()
        if self.options.workers > 1 and not self.options.scrub:
            ctx.pool = RedactionPool(self.options.workers)
        # Members not yet framed, in order: a pending one is being redacted by a
        # worker while the collectors go on (at most `lookahead` of them).
        queue: collections.deque[tuple[Member, CollectorSpec, dict[str, Any]]] = collections.deque()
        lookahead = max(self.options.workers, 1)

        def frame(item: tuple[Member, CollectorSpec, dict[str, Any]]) -> Iterator[bytes]:
            member, spec, record = item
            try:
                member.resolve(redactor)
                member.name = _unique(member.name, names)
                yield from tar.add(member.name, member.content, member.size, member.mtime)
            except Exception as exc:
                # As if the collector had raised: recorded, and the bundle goes on.
                record.update(status=STATUS_FAILED, error=redactor.redact_line(_one_line(exc)))
                return
            finally:
                member.discard()
            record["files"] += 1
            member.source = redactor.redact_line(member.source)
            files.append(_file_entry(member, spec.name))

        try:
            for spec in self.collectors:
                record: dict[str, Any] = {"name": spec.name, "group": spec.group, "files": 0}
                records.append(record)
                if spec.group not in self.options.groups:
                    record.update(status=STATUS_SKIPPED, error="group not included", duration_s=0.0)
                    continue
                started = time.monotonic()
                try:
                    for member in spec.collect(ctx):
                        queue.append((member, spec, record))
                        while queue and (
                            len(queue) > lookahead
                            or queue[0][0].pending is None
                            or queue[0][0].pending.done()
                        ):
                            yield from frame(queue.popleft())
                    record.update(status=STATUS_OK, error="")
                except CollectorSkipped as skipped:
                    record.update(status=STATUS_SKIPPED, error=redactor.redact_line(str(skipped)))
                except Exception as exc:
                    # Error texts can quote paths and addresses: they are redacted too.
                    record.update(status=STATUS_FAILED, error=redactor.redact_line(_one_line(exc)))
                record["duration_s"] = round(time.monotonic() - started, 3)
            while queue:
                yield from frame(queue.popleft())
        finally:
            for member, _, _ in queue:
                member.discard()
            if ctx.pool is not None:
                ctx.pool.close()
        metadata = self._metadata(now, ctx, records, files, redactor)
        with tempfile.TemporaryFile(dir=self.sources.spool_dir) as meta:
            meta.write(metadata)
            meta.seek(0)
            yield from tar.add(NODE_METADATA_NAME, meta, len(metadata), now.timestamp())
        yield from tar.finish()
        self.result = BundleResult(
            sha256=tar.sha256,
            size=tar.size,
            redactions=redactor.counts(),
            pseudonym_map=redactor.mapping() if self.options.return_map else None,
            archive_node=self.archive_node,
        )

    async def stream(self) -> AsyncIterator[bytes]:
        """chunks() driven from a worker thread, one chunk per request (back-pressure).

        Injected sources are called first, on the event loop (awaited when they
        return an awaitable), each bounded by ``source_timeout_seconds``.
        """
        await self._resolve_sources()
        iterator = self.chunks()
        try:
            while True:
                chunk = await asyncio.to_thread(next, iterator, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            # ValueError: cancelled while the worker thread is inside next(); that
            # thread finishes its step and the generator is then collected.
            with contextlib.suppress(ValueError):
                iterator.close()

    async def _resolve_sources(self) -> None:
        for name in ("libvirt_info", "domains", "diag_checks", "diag_network", "netlink"):
            function = getattr(self.sources, name)
            if function is None:
                continue
            try:
                value = function()
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(
                        value, timeout=self.sources.source_timeout_seconds
                    )
                self._resolved[name] = (True, value)
            except Exception as exc:
                self._resolved[name] = (False, exc)

    def _metadata(
        self,
        now: datetime,
        ctx: CollectorContext,
        records: list[dict[str, Any]],
        files: list[dict[str, Any]],
        redactor: Redactor,
    ) -> bytes:
        return json_bytes(
            {
                "format": NODE_FORMAT,
                "novaops_version": self.sources.novaops_version,
                "node": self.archive_node,
                "request_id": redactor.redact_line(self.options.request_id),
                "created_at": now.isoformat(),
                "window": {
                    "since": ctx.since_time.isoformat() if ctx.since_time else None,
                    "until": now.isoformat(),
                },
                "scrub": self.options.scrub,
                "include": sorted(self.options.include),
                "groups": sorted(self.options.groups),
                "max_file_bytes": ctx.max_file_bytes,
                "collectors": records,
                "files": files,
                # A list, not {kind: count}: "password": 3 would read as a leaked secret.
                "redactions": [
                    {"kind": kind, "count": count} for kind, count in redactor.counts().items()
                ],
            }
        )


def _file_entry(member: Member, collector: str) -> dict[str, Any]:
    return {
        "path": member.name,
        "size": member.size,
        "sha256": member.sha256,
        "collector": collector,
        "source": member.source,
        "truncated": member.truncated,
    }


def _unique(name: str, taken: set[str]) -> str:
    candidate = name
    counter = 1
    while candidate in taken or candidate == NODE_METADATA_NAME:
        counter += 1
        stem, dot, ext = name.rpartition(".")
        candidate = f"{stem}.{counter}{dot}{ext}" if dot else f"{name}.{counter}"
    taken.add(candidate)
    return candidate


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def spool_dir_for(state_dir: Path) -> Path:
    """A spool folder under the executor's state folder (created)."""
    path = state_dir / "bundle-spool"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    remove_stale_spools(path)
    return path
