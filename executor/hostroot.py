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

from __future__ import annotations

import errno
import fnmatch
import os
from pathlib import Path, PurePosixPath

# Enough for any /proc or config file we read; bounds memory if a host file is huge.
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
# Same bound as the kernel's own symlink resolution (ELOOP after 40).
_MAX_SYMLINKS = 40


class HostPathError(PermissionError):
    """A host path would leave the host root (``..`` or a link climbing above it)."""


HostPathLike = str | PurePosixPath


def _components(host_path: HostPathLike) -> list[str]:
    return [part for part in str(host_path).split("/") if part not in ("", ".")]


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
        requested = _components(host_path)
        if ".." in requested:
            raise HostPathError(errno.EACCES, "'..' is not allowed in host paths", str(host_path))
        resolved: list[str] = []
        pending = list(reversed(requested))
        links = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise HostPathError(
                        errno.EACCES, "a symlink climbs above the host root", str(host_path)
                    )
                resolved.pop()
                continue
            candidate = self.path.joinpath(*resolved, part)
            if not candidate.is_symlink():
                resolved.append(part)
                continue
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", str(host_path))
            target = str(candidate.readlink())
            if target.startswith("/"):
                resolved = []
            pending.extend(reversed(target.split("/")))
        return self.path.joinpath(*resolved)

    def read_bytes(self, host_path: HostPathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """At most max_bytes of a host file (the beginning). OSError if unreadable."""
        real = self.resolve(host_path)
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            # /proc files report size 0, so read up to the bound rather than by size.
            return fh.read(max_bytes)

    def read_text(self, host_path: HostPathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
        """A host file as text; undecodable bytes are replaced, never an error."""
        return self.read_bytes(host_path, max_bytes=max_bytes).decode("utf-8", errors="replace")

    def exists(self, host_path: HostPathLike) -> bool:
        """True when host_path exists inside the root; False also when it would escape."""
        try:
            return self.resolve(host_path).exists()
        except OSError:
            return False

    def is_dir(self, host_path: HostPathLike) -> bool:
        try:
            return self.resolve(host_path).is_dir()
        except OSError:
            return False

    def list_dir(self, host_path: HostPathLike) -> list[str]:
        """Sorted entry names of a host folder. OSError if it is not a readable folder."""
        return sorted(entry.name for entry in self.resolve(host_path).iterdir())

    def can_open_read_write(self, host_path: HostPathLike) -> bool:
        """Whether this process may open host_path read-write (e.g. ``/dev/kvm``).

        Opening /dev/kvm creates nothing; the descriptor is closed at once.
        """
        try:
            fd = os.open(self.resolve(host_path), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
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
        matches = [PurePosixPath("/")]
        for part in parts:
            found: list[PurePosixPath] = []
            for base in matches:
                if not any(ch in part for ch in "*?["):
                    if self.exists(base / part):
                        found.append(base / part)
                    continue
                try:
                    names = self.list_dir(base)
                except OSError:
                    continue
                found.extend(
                    base / name
                    for name in names
                    if fnmatch.fnmatchcase(name, part)
                    and (not name.startswith(".") or part.startswith("."))
                )
            matches = found
        return matches
