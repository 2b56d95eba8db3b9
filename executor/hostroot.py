"""Every host file the executor reads goes through a :class:`HostRoot`.

The host root is the folder that stands for the host's ``/``: ``/`` in
production, ``/host`` for an executor in a container with the host mounted
there, or a simulated node's tree in the dev cluster and in tests. Callers name
files by their *host path* (``/proc/cpuinfo`` or ``proc/cpuinfo``, both mean the
same) and never see or build real paths themselves.

What callers may rely on:

* A requested path containing ``..`` is refused with :class:`HostPathError`.
* Symlinks are followed the way the host itself would see them, as if the
  process were chrooted into the root: an absolute link target (``/var/run ->
  /run``) is re-anchored at the root, so no link can point a read outside it; a
  relative target whose ``..`` climbs above the root is refused.
* The final open uses ``O_NOFOLLOW``, so a link swapped in after resolution
  fails the read instead of escaping.
* :class:`HostPathError` is a :class:`PermissionError` (an ``OSError``), so code
  that treats unreadable evidence as "unknown" handles it with the same
  ``except OSError``.
"""

# Real paths are handled as strings with os.* on purpose: every host file read
# resolves its path here, one lstat per component, and pathlib objects per
# component were a measurable share of the executor's CPU.
# ruff: noqa: PTH110, PTH112, PTH115, PTH208

from __future__ import annotations

import errno
import fnmatch
import os
import stat
import sys
from pathlib import Path, PurePosixPath
from typing import Literal

# Enough for any /proc or config file we read; bounds memory if a host file is huge.
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
# Same bound as the kernel's own symlink resolution (ELOOP after 40).
_MAX_SYMLINKS = 40
_READ_CHUNK = 64 * 1024


class HostPathError(PermissionError):
    """A host path would leave the host root (``..`` or a link climbing above it)."""


HostPathLike = str | PurePosixPath
# What a folder entry is, not following links (HostRoot.scan_dir).
EntryKind = Literal["dir", "file", "link", "other"]


def _components(host_path: HostPathLike) -> list[str]:
    return [part for part in str(host_path).split("/") if part not in ("", ".")]


# What Path.is_symlink() treats as "not a link" rather than an error.
_NOT_A_LINK_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})


def _is_symlink(real: str) -> bool:
    """``Path(real).is_symlink()`` without building a Path (this runs per component)."""
    try:
        return stat.S_ISLNK(os.lstat(real).st_mode)
    except OSError as exc:
        if exc.errno not in _NOT_A_LINK_ERRNOS:
            raise
        return False
    except ValueError:  # an embedded NUL: the later open reports it
        return False


class _Walk:
    """Where a resolution stands: the real path so far and the links followed."""

    __slots__ = ("depth", "links", "real")

    def __init__(self, real: str, depth: int, links: int) -> None:
        self.real = real  # the root's real path, then "/<component>" per level
        self.depth = depth  # components below the root in real
        self.links = links


class HostRoot:
    """Read-only, confined access to the files of one host."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).resolve()

    @property
    def is_system_root(self) -> bool:
        """True when the host root is this machine's own ``/``."""
        return self.path == Path("/")

    def __repr__(self) -> str:
        return f"HostRoot({str(self.path)!r})"

    def resolve(self, host_path: HostPathLike) -> Path:
        """The real path of host_path inside the root, symlinks resolved chroot-style.

        The path need not exist. Raises HostPathError if it would leave the root.
        """
        return Path(self._real(host_path))

    def _real(self, host_path: HostPathLike) -> str:
        """:meth:`resolve` as a string (what os.* calls take)."""
        requested = _components(host_path)
        if ".." in requested:
            raise HostPathError(errno.EACCES, "'..' is not allowed in host paths", str(host_path))
        return self._follow(self._start(), requested, host_path).real or "/"

    def _start(self) -> _Walk:
        # "" for "/", so real paths never start with "//".
        root = str(self.path)
        return _Walk("" if root == "/" else root, 0, 0)

    def _follow(self, walk: _Walk, parts: list[str], host_path: HostPathLike) -> _Walk:
        """walk extended by parts (host path components), symlinks resolved.

        Strings and os.lstat rather than pathlib: this is the executor's hottest
        file-system code, one lstat per component of every host path read.
        """
        base = self._start().real
        real, depth, links = walk.real, walk.depth, walk.links
        pending = list(reversed(parts))
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not depth:
                    raise HostPathError(
                        errno.EACCES, "a symlink climbs above the host root", str(host_path)
                    )
                real = real[: real.rindex("/")]
                depth -= 1
                continue
            candidate = f"{real}/{part}"
            if not _is_symlink(candidate):
                real, depth = candidate, depth + 1
                continue
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", str(host_path))
            target = os.readlink(candidate)
            if target.startswith("/"):
                real, depth = base, 0
            pending.extend(reversed(target.split("/")))
        return _Walk(real, depth, links)

    def read_bytes(self, host_path: HostPathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """At most max_bytes of a host file (the beginning). OSError if unreadable."""
        fd = os.open(self._real(host_path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            # /proc files report size 0, so read up to the bound rather than by size;
            # in chunks, as a buffered read(max_bytes) allocates all of max_bytes
            # first (4 MiB for every pid file) and that cost more than the read.
            chunks = []
            left = max_bytes if max_bytes >= 0 else sys.maxsize  # < 0: all, as read(-1)
            while left > 0:
                chunk = os.read(fd, min(left, _READ_CHUNK))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_text(self, host_path: HostPathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
        """A host file as text; undecodable bytes are replaced, never an error."""
        return self.read_bytes(host_path, max_bytes=max_bytes).decode("utf-8", errors="replace")

    def exists(self, host_path: HostPathLike) -> bool:
        """True when host_path exists inside the root; False also when it would escape."""
        try:
            return os.path.exists(self._real(host_path))
        except OSError:
            return False

    def is_dir(self, host_path: HostPathLike) -> bool:
        try:
            return os.path.isdir(self._real(host_path))
        except OSError:
            return False

    def list_dir(self, host_path: HostPathLike) -> list[str]:
        """Sorted entry names of a host folder. OSError if it is not a readable folder."""
        return sorted(os.listdir(self._real(host_path)))

    def scan_dir(self, host_path: HostPathLike) -> list[tuple[str, EntryKind]]:
        """(name, kind) of every entry of a host folder, sorted by name; OSError if it
        is not a readable folder. Kinds come from the directory listing itself (no
        stat per entry where the filesystem reports types) and are not followed: a
        symlink is "link" whatever it points at. An entry that is not a link lies
        inside the folder, so walking into "dir" entries stays inside the root.
        """
        entries = []
        with os.scandir(self._real(host_path)) as listing:
            for entry in listing:
                try:
                    if entry.is_symlink():
                        kind: EntryKind = "link"
                    elif entry.is_dir(follow_symlinks=False):
                        kind = "dir"
                    elif entry.is_file(follow_symlinks=False):
                        kind = "file"
                    else:
                        kind = "other"
                except OSError:
                    continue  # removed while we looked
                entries.append((entry.name, kind))
        return sorted(entries)

    def can_open_read_write(self, host_path: HostPathLike) -> bool:
        """Whether this process may open host_path read-write (e.g. ``/dev/kvm``).

        Opening /dev/kvm creates nothing; the descriptor is closed at once.
        """
        try:
            fd = os.open(self._real(host_path), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        os.close(fd)
        return True

    def glob(self, pattern: str) -> list[PurePosixPath]:
        """Host paths matching a shell pattern, one component at a time, sorted.

        ``*``, ``?`` and ``[...]`` are supported within a component; ``**`` and
        ``..`` are not. Names starting with a dot match only a pattern component
        that starts with a dot. Every folder listed is resolved through the root.
        """
        parts = _components(pattern)
        if ".." in parts or "**" in parts:
            raise HostPathError(errno.EACCES, "'..' and '**' are not allowed in patterns", pattern)
        # (host path, its resolution, a listed name not yet resolved or ""): a match
        # is resolved once and extended, not resolved again from the root per part.
        matches: list[tuple[str, _Walk, str]] = [("", self._start(), "")]
        for part in parts:
            found: list[tuple[str, _Walk, str]] = []
            for host, walk, listed in matches:
                try:
                    if listed:
                        walk = self._follow(walk, [listed], host)
                    if not any(ch in part for ch in "*?["):
                        child = self._follow(walk, [part], f"{host}/{part}")
                        if os.path.exists(child.real or "/"):
                            found.append((f"{host}/{part}", child, ""))
                        continue
                    names = sorted(os.listdir(walk.real or "/"))
                except OSError:
                    continue
                found.extend(
                    (f"{host}/{name}", walk, name)
                    for name in names
                    if fnmatch.fnmatchcase(name, part)
                    and (not name.startswith(".") or part.startswith("."))
                )
            matches = found
        return [PurePosixPath(host or "/") for host, _, _ in matches]
