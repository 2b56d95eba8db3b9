"""HostRoot path resolution: chroot-style symlinks, confinement, and equivalence with
the pathlib version it replaced (kept below as the reference).

The basic reads and refusals are also covered in test_facts.py; these are the edge
cases of the resolver itself.
"""

from __future__ import annotations

import errno
import fnmatch
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from novaops.executor.hostroot import HostPathError, HostRoot

# -- the reference: HostRoot.resolve/glob as they were written on pathlib ---------------


def _reference_resolve(root: Path, host_path: str) -> Path:
    requested = [p for p in str(host_path).split("/") if p not in ("", ".")]
    if ".." in requested:
        raise HostPathError(errno.EACCES, "'..' is not allowed in host paths", host_path)
    resolved: list[str] = []
    pending = list(reversed(requested))
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise HostPathError(errno.EACCES, "a symlink climbs above the host root", host_path)
            resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if not candidate.is_symlink():
            resolved.append(part)
            continue
        links += 1
        if links > 40:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", host_path)
        target = str(candidate.readlink())
        if target.startswith("/"):
            resolved = []
        pending.extend(reversed(target.split("/")))
    return root.joinpath(*resolved)


def _reference_exists(root: Path, host_path: str) -> bool:
    try:
        return _reference_resolve(root, host_path).exists()
    except OSError:
        return False


def _reference_glob(root: Path, pattern: str) -> list[PurePosixPath]:
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    matches = [PurePosixPath("/")]
    for part in parts:
        found: list[PurePosixPath] = []
        for base in matches:
            if not any(ch in part for ch in "*?["):
                if _reference_exists(root, str(base / part)):
                    found.append(base / part)
                continue
            try:
                names = sorted(e.name for e in _reference_resolve(root, str(base)).iterdir())
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


def _outcome(call: Callable[..., object], *args: object) -> object:
    try:
        return call(*args)
    except HostPathError:
        return "HostPathError"
    except OSError as exc:
        return f"OSError({errno.errorcode.get(exc.errno or 0, exc.errno)})"


# -- a tree with every kind of link ------------------------------------------------------

LINKS = {
    "var/run": "/run",  # absolute: re-anchored at the root
    "var/lock": "../run/lock",  # relative with ..
    "etc/alt": "./../etc//conf/.",  # odd spellings: ./, //, trailing /.
    "etc/climb": "../../outside",  # climbs above the root
    "etc/deep/climb": "../../../outside",
    "etc/chain1": "chain2",
    "etc/chain2": "/etc/chain3",
    "etc/chain3": "conf",
    "etc/dangling": "missing/file",
    "etc/through-file": "conf/settings/nope",  # a file used as a folder
    "loop/a": "b",
    "loop/b": "a",
    "loop/self": "self",
    "loop/dir": "/loop",  # a folder link to its parent: fine, not a loop
    "abs-root": "/",
    "abs-outside": "/../..",  # .. at the root after re-anchoring climbs: refused
}
FILES = ("etc/conf/settings", "run/lock/a.lock", "run/libvirt/qemu/web-1.pid", ".hidden")
PATHS = [
    "/",
    "",
    "etc",
    "/etc/conf/settings",
    "etc/conf/settings/",
    "/var/run/libvirt/qemu/web-1.pid",
    "/var/run/libvirt/qemu/missing.pid",
    "/var/lock/a.lock",
    "/etc/alt/settings",
    "/etc/climb",
    "/etc/deep/climb",
    "/etc/chain1/settings",
    "/etc/dangling",
    "/etc/through-file",
    "/etc/conf/settings/below-a-file",
    "/loop/a",
    "/loop/self/x",
    "/loop/dir/dir/dir/a",
    "/abs-root/etc/conf/settings",
    "/abs-outside",
    "/missing/deeper/still",
    "/./etc/./conf",
    "/etc/../outside",
    "..",
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "outside").write_text("do not read")
    root = tmp_path / "root"
    for name in FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    for name, target in LINKS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    return root


@pytest.mark.parametrize("host_path", PATHS)
def test_resolve_matches_the_pathlib_reference(tree: Path, host_path: str) -> None:
    root = HostRoot(tree)
    assert _outcome(root.resolve, host_path) == _outcome(_reference_resolve, tree, host_path)
    assert root.exists(host_path) == _reference_exists(tree, host_path)


@pytest.mark.parametrize("host_path", [p for p in PATHS if ".." not in p])
def test_resolve_from_the_system_root_matches_the_reference(tree: Path, host_path: str) -> None:
    # Root "/": real paths must come out as "/x", never "//x".
    absolute = f"{tree}/{host_path}"
    expected = _outcome(_reference_resolve, Path("/"), absolute)
    assert _outcome(HostRoot("/").resolve, absolute) == expected
    assert str(HostRoot("/").resolve("/")) == "/"


@pytest.mark.parametrize(
    "pattern",
    [
        "/*",
        "/.*",
        "/etc/*",
        "/var/run/libvirt/qemu/*.pid",
        "/var/*/*.lock",
        "/loop/*",
        "/loop/dir/*/a",
        "/etc/*/settings",
        "/etc/c*",
        "/nowhere/*",
        "/abs-root/run/lock/*",
    ],
)
def test_glob_matches_the_pathlib_reference(tree: Path, pattern: str) -> None:
    assert HostRoot(tree).glob(pattern) == _reference_glob(tree, pattern)


def test_absolute_link_is_re_anchored_at_the_root(tree: Path) -> None:
    root = HostRoot(tree)
    assert root.resolve("/var/run/libvirt") == tree / "run/libvirt"
    assert root.read_text("/var/run/libvirt/qemu/web-1.pid") == "run/libvirt/qemu/web-1.pid"
    assert root.resolve("/etc/chain1/settings") == tree / "etc/conf/settings"


def test_relative_link_with_dot_dot_stays_inside(tree: Path) -> None:
    root = HostRoot(tree)
    assert root.resolve("/var/lock/a.lock") == tree / "run/lock/a.lock"
    assert root.list_dir("/var/lock") == ["a.lock"]
    for climbing in ("/etc/climb", "/etc/deep/climb", "/abs-outside"):
        with pytest.raises(HostPathError):
            root.resolve(climbing)
        assert not root.exists(climbing)


def test_loops_end_in_eloop(tree: Path) -> None:
    root = HostRoot(tree)
    for looping in ("/loop/a", "/loop/self/x"):
        with pytest.raises(OSError) as raised:
            root.resolve(looping)
        assert raised.value.errno == errno.ELOOP
        assert not root.exists(looping)


def test_forty_links_are_followed_and_the_41st_is_eloop(tmp_path: Path) -> None:
    for i in range(41):
        (tmp_path / f"l{i}").symlink_to(f"l{i + 1}")
    (tmp_path / "l41").write_text("end")
    root = HostRoot(tmp_path)
    assert root.read_text("/l1") == "end"  # l1 .. l40: 40 links
    with pytest.raises(OSError) as raised:
        root.resolve("/l0")
    assert raised.value.errno == errno.ELOOP


def test_dot_dot_in_the_request_is_refused_even_when_harmless(tree: Path) -> None:
    with pytest.raises(HostPathError):
        HostRoot(tree).resolve("/etc/conf/../conf/settings")


def test_missing_and_non_folder_components_are_not_links(tree: Path) -> None:
    root = HostRoot(tree)
    assert root.resolve("/missing/deeper") == tree / "missing/deeper"
    assert root.resolve("/etc/conf/settings/below") == tree / "etc/conf/settings/below"
    assert not root.is_dir("/etc/conf/settings") and root.is_dir("/var/run")
    with pytest.raises(NotADirectoryError):
        root.list_dir("/etc/conf/settings")


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 200_000])
@pytest.mark.parametrize("max_bytes", [0, 10, 65_536, 100_000, 4 * 1024 * 1024, -1])
def test_read_bytes_returns_the_first_max_bytes(tmp_path: Path, size: int, max_bytes: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    expected = data if max_bytes < 0 else data[:max_bytes]
    assert HostRoot(tmp_path).read_bytes("/f", max_bytes=max_bytes) == expected


def test_read_bytes_of_proc_files_reads_to_the_end(tmp_path: Path) -> None:
    # /proc files report size 0 and may return short reads: read until EOF.
    first_line = Path("/proc/self/status").read_bytes().split(b"\n")[0]
    text = HostRoot("/").read_bytes("/proc/self/status")
    assert text.startswith(first_line) and b"\nPid:" in text and text.endswith(b"\n")


def test_read_bytes_of_a_folder_or_link_fails(tree: Path) -> None:
    root = HostRoot(tree)
    with pytest.raises(IsADirectoryError):
        root.read_bytes("/etc")
    with pytest.raises(FileNotFoundError):
        root.read_bytes("/etc/dangling")


def test_scan_dir_reports_kinds_without_following_links(tmp_path: Path) -> None:
    import socket

    (tmp_path / "run/libvirt/qemu").mkdir(parents=True)
    (tmp_path / "run/libvirt/a.lock").write_text("1\n")
    (tmp_path / "run/libvirt/to-file").symlink_to("a.lock")
    (tmp_path / "run/libvirt/to-dir").symlink_to("qemu")
    (tmp_path / "run/libvirt/dangling").symlink_to("/nowhere")
    (tmp_path / "var").mkdir()
    (tmp_path / "var/run").symlink_to("/run")  # the folder itself may be reached by a link
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "run/libvirt/s.sock"))
        assert HostRoot(tmp_path).scan_dir("/var/run/libvirt") == [
            ("a.lock", "file"),
            ("dangling", "link"),
            ("qemu", "dir"),
            ("s.sock", "other"),
            ("to-dir", "link"),
            ("to-file", "link"),
        ]
    finally:
        sock.close()
    with pytest.raises(OSError):
        HostRoot(tmp_path).scan_dir("/run/libvirt/a.lock")
    with pytest.raises(HostPathError):
        HostRoot(tmp_path).scan_dir("/run/../..")
