"""The offline tools and the writer on hand-made archives, hostile ones included."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from novaops.client.bundle import (
    BundleBusy,
    BundleFormatError,
    BundleRequestInfo,
    BundleWriter,
    ChecksumMismatch,
    DestinationExists,
    Limits,
    UnsafeArchive,
    UnsupportedOutput,
    extract,
    inspect,
    purge,
    validate,
)
from novaops.client.bundle.format import BUNDLE_FORMAT, NODE_FORMAT


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def node_tar(node: str, files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:  # type: ignore[assignment]
    listed = [
        {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    ]
    meta = {"format": NODE_FORMAT, "node": node, "files": listed, "collectors": []}
    members = [_file(name, data) for name, data in files.items()]
    members += [(info, b"") for info in extra]
    members.append(_file("metadata.json", json.dumps(meta).encode()))
    return _tar(members)


def write_bundle(
    path: Path,
    nodes: dict[str, bytes],
    *,
    scrub: bool = False,
    extra: list[tuple[tarfile.TarInfo, bytes]] = (),  # type: ignore[assignment]
    sha_override: str | None = None,
) -> Path:
    manifest = {
        "format": BUNDLE_FORMAT,
        "created_at": "2025-01-01T00:00:00+00:00",
        "request": {"scrub": scrub},
        "nodes": [
            {
                "node": n,
                "status": "ok",
                "archive": f"nodes/{n}.tar",
                "sha256": sha_override or hashlib.sha256(d).hexdigest(),
                "size": len(d),
                "redactions": {},
            }
            for n, d in nodes.items()
        ],
    }
    members = [_file("manifest.json", json.dumps(manifest).encode())]
    members += [_file(f"nodes/{n}.tar", d) for n, d in nodes.items()]
    members += list(extra)
    path.write_bytes(gzip.compress(_tar(members)))
    return path


GOOD_FILES = {"logs/app.log": b"2025-01-01 ERROR boom 1\n2025-01-01 ERROR boom 2\nfine\n"}


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_good_bundle_validates_extracts_and_inspects(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b.tar.gz", {"a": node_tar("a", GOOD_FILES)})
    assert validate(bundle) == []
    dest = extract(bundle, tmp_path / "out")
    assert (dest / "nodes/a/logs/app.log").read_bytes() == GOOD_FILES["logs/app.log"]
    report = inspect(bundle)
    assert report.nodes[0].top_errors == [(2, "ERROR boom #")]


def test_validate_reports_leaks_masked(tmp_path: Path) -> None:
    files = {"logs/x.log": b"ok\npassword=hunter22\nfrom 10.1.2.3\n"}
    bundle = write_bundle(tmp_path / "b.tar.gz", {"a": node_tar("a", files)}, scrub=True)
    findings = [str(f) for f in validate(bundle)]
    assert findings == [
        "nodes/a.tar:logs/x.log:2 password ******** (8 chars)",
        "nodes/a.tar:logs/x.log:3 ipv4 10****** (8 chars)",
    ]
    # Without scrub in the manifest, identifiers are expected in the bundle.
    plain = write_bundle(tmp_path / "p.tar.gz", {"a": node_tar("a", files)})
    assert [f.kind for f in validate(plain)] == ["password"]


def test_checksum_mismatch_is_found_and_blocks_extract(tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path / "b.tar.gz", {"a": node_tar("a", GOOD_FILES)}, sha_override="0" * 64
    )
    assert [f.kind for f in validate(bundle)] == ["checksum"]
    with pytest.raises(ChecksumMismatch):
        extract(bundle, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert snapshot(tmp_path) == {"b.tar.gz"}


def test_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "x.tar.gz").write_bytes(b"plain text")
    with pytest.raises(BundleFormatError):
        validate(tmp_path / "x.tar.gz")
    (tmp_path / "y.tar.gz").write_bytes(gzip.compress(_tar([_file("other.txt", b"x")])))
    with pytest.raises(BundleFormatError, match=r"not manifest\.json"):
        validate(tmp_path / "y.tar.gz")


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _special(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


HOSTILE_TOP = {
    "absolute": [_file("/tmp/novaops-evil", b"x")],
    "dotdot": [_file("nodes/../../evil", b"x")],
    "symlink": [(_link("nodes/evil", "../../../etc", tarfile.SYMTYPE), b"")],
    "hardlink": [(_link("nodes/evil", "/etc/passwd", tarfile.LNKTYPE), b"")],
    "device": [(_special("nodes/dev", tarfile.CHRTYPE), b"")],
    "fifo": [(_special("nodes/fifo", tarfile.FIFOTYPE), b"")],
    "duplicate": [_file("nodes/a.tar", b"")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TOP))
def test_hostile_top_level_members_are_refused(tmp_path: Path, case: str) -> None:
    bundle = write_bundle(
        tmp_path / "b.tar.gz", {"a": node_tar("a", GOOD_FILES)}, extra=HOSTILE_TOP[case]
    )
    (tmp_path / "dest").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchive):
        extract(bundle, tmp_path / "dest")
    assert snapshot(tmp_path) == before
    assert not Path("/tmp/novaops-evil").exists()
    assert [f.kind for f in validate(bundle)] == ["unsafe"]


HOSTILE_INNER = {
    "absolute": _file("/etc/cron.d/evil", b"x")[0],
    "dotdot": _file("logs/../../../evil", b"x")[0],
    "symlink": _link("logs/evil", "../../../../root", tarfile.SYMTYPE),
    "hardlink": _link("logs/evil", "../../../etc/shadow", tarfile.LNKTYPE),
    "device": _special("logs/sda", tarfile.BLKTYPE),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_INNER))
def test_hostile_node_members_are_refused(tmp_path: Path, case: str) -> None:
    inner = node_tar("a", GOOD_FILES, extra=[HOSTILE_INNER[case]])
    bundle = write_bundle(tmp_path / "b.tar.gz", {"a": inner})
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchive, match=r"nodes/a\.tar:"):
        extract(bundle, tmp_path / "dest")
    assert snapshot(tmp_path) == before


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    zeros = b"\0" * (8 * 1024 * 1024)
    bundle = write_bundle(tmp_path / "b.tar.gz", {"a": node_tar("a", {"logs/zero.log": zeros})})
    limits = Limits(max_ratio=20, ratio_floor_bytes=1024 * 1024)
    with pytest.raises(UnsafeArchive, match="decompression bomb"):
        extract(bundle, tmp_path / "dest", limits=limits)
    assert snapshot(tmp_path) == {"b.tar.gz"}
    with pytest.raises(UnsafeArchive):
        extract(bundle, tmp_path / "dest", limits=Limits(max_total_bytes=1024 * 1024))


def test_extract_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b.tar.gz", {"a": node_tar("a", GOOD_FILES)})
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep").write_text("mine")
    with pytest.raises(DestinationExists):
        extract(bundle, tmp_path / "dest")
    assert (tmp_path / "dest" / "keep").read_text() == "mine"


def test_purge_removes_only_old_bundles(tmp_path: Path) -> None:
    old = write_bundle(tmp_path / "old.tar.gz", {"a": node_tar("a", GOOD_FILES)})
    (tmp_path / "old.tar.gz.map.json").write_text("{}")
    new = write_bundle(tmp_path / "new.tar.gz", {"a": node_tar("a", GOOD_FILES)})
    other = tmp_path / "backup.tar.gz"
    other.write_bytes(gzip.compress(_tar([_file("etc/x", b"x")])))
    past = (datetime.now(UTC) - timedelta(days=30)).timestamp()
    for path in (old, tmp_path / "old.tar.gz.map.json", other):
        os.utime(path, (past, past))
    expected = [old, tmp_path / "old.tar.gz.map.json"]
    assert purge(tmp_path, timedelta(days=14), dry_run=True) == expected
    assert old.exists()
    assert purge(tmp_path, timedelta(days=14)) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.tar.gz", "new.tar.gz"]
    assert new.exists()


# ------------------------------------------------------------------------ writer


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_writer_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOutput, match=r"use \.tar\.gz or \.tar\.zst"):
        BundleWriter(tmp_path / "out.zip")


def test_interrupted_writer_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    data = node_tar("a", GOOD_FILES)
    with pytest.raises(KeyboardInterrupt), BundleWriter(out) as writer:
        writer.add_chunk("a", 0, data[:1000])
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_writer_is_exclusive_and_cleans_up_after_a_killed_run(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    stale = tmp_path / ".b.tar.gz.novaops-abc.node"
    stale.write_bytes(b"left by kill -9")
    writer = BundleWriter(out)
    assert not stale.exists()
    with pytest.raises(BundleBusy):
        BundleWriter(out)
    writer.abort()
    BundleWriter(out).abort()


def test_writer_checks_offsets_and_trailers(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    good = node_tar("good", GOOD_FILES)
    with BundleWriter(out, request=BundleRequestInfo(nodes=("good", "gap", "bad", "silent"))) as w:
        w.add_chunk("good", 0, good[:700])
        w.add_chunk("gap", 0, b"x" * 10)
        w.add_chunk("good", 700, good[700:])
        w.add_chunk("gap", 20, b"y")
        w.add_chunk("bad", 0, b"z" * 10)
        w.finish_node("bad", _sha(b"q" * 10), 10)
        w.add_chunk("silent", 0, b"s")
        w.finish_node("good", _sha(good), len(good), {"ipv4": 3})
        summary = w.close()
    status = {n.node: (n.status, n.error) for n in summary.nodes}
    assert status["good"] == ("ok", "")
    assert "offset 20, expected 10" in status["gap"][1]
    assert "does not match its trailer" in status["bad"][1]
    assert "ended before" in status["silent"][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.zst"]
    assert validate(out) == []
    assert summary.sha256 == _sha(out.read_bytes())


# ---------------------------------------------------------- members that inflate

SPARSE_SIZE = 300 * 1024 * 1024
# Small enough that every bomb below is over them, large enough for the good bundle.
TIGHT = Limits(max_total_bytes=2 * 1024 * 1024, max_ratio=20, ratio_floor_bytes=1024 * 1024)


def _pax_sparse(name: str, data: bytes = b"x" * 10) -> tuple[tarfile.TarInfo, bytes]:
    """A member in GNU's PAX sparse format 0.1: data bytes at 0, then a hole of zeros."""
    info = tarfile.TarInfo(name)
    info.pax_headers = {
        "GNU.sparse.map": f"0,{len(data)}",
        "GNU.sparse.realsize": str(SPARSE_SIZE),
    }
    return info, data


def _old_gnu_sparse(name: str, data: bytes = b"x" * 10) -> bytes:
    """Header and data of a member in the old GNU sparse format (type 'S'), as raw blocks."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[386:398] = b"%011o\0" % 0  # first sparse entry: offset 0 ...
    header[398:410] = b"%011o\0" % len(data)  # ... len(data) stored bytes
    header[483:495] = b"%011o\0" % SPARSE_SIZE  # the size it claims
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    padding = b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    return bytes(header) + data + padding


def _node_tar_with_raw(node: str, files: dict[str, bytes], raw_blocks: bytes) -> bytes:
    listed = [
        {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    ]
    meta = {"format": NODE_FORMAT, "node": node, "files": listed, "collectors": []}
    head = _tar([_file("metadata.json", json.dumps(meta).encode())])
    end_len = -(-len(head.rstrip(b"\0")) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return head[:end_len] + raw_blocks + b"\0" * (20 * tarfile.BLOCKSIZE)


def _write_zst_bundle(path: Path, nodes: dict[str, bytes]) -> Path:
    import zstandard

    gz = write_bundle(path.with_suffix(".tmp.gz"), nodes)
    tar_bytes = gzip.decompress(gz.read_bytes())
    gz.unlink()
    path.write_bytes(zstandard.ZstdCompressor(level=19).compress(tar_bytes))
    return path


def _hostile_bundle(case: str, folder: Path) -> Path:
    good = node_tar("a", GOOD_FILES)
    if case == "outer-sparse-pax":
        return write_bundle(folder / "b.tar.gz", {"a": good}, extra=[_pax_sparse("nodes/z.tar")])
    if case == "inner-sparse-pax":
        inner = _tar([_pax_sparse("logs/zero.log"), _file("metadata.json", b"{}")])
        return write_bundle(folder / "b.tar.gz", {"a": inner})
    if case == "outer-sparse-gnu":
        outer = write_bundle(folder / "b.tar.gz", {"a": good})
        plain = gzip.decompress(outer.read_bytes())
        end = -(-len(plain.rstrip(b"\0")) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        hostile = plain[:end] + _old_gnu_sparse("nodes/z.tar") + b"\0" * 10240
        outer.write_bytes(gzip.compress(hostile))
        return outer
    if case == "inner-sparse-gnu":
        inner = _node_tar_with_raw("a", {}, _old_gnu_sparse("logs/zero.log"))
        return write_bundle(folder / "b.tar.gz", {"a": inner})
    if case == "inner-fifo":
        return write_bundle(
            folder / "b.tar.gz",
            {"a": node_tar("a", GOOD_FILES, extra=[_special("logs/pipe", tarfile.FIFOTYPE)])},
        )
    if case == "zstd-bomb":
        zeros = {"logs/zero.log": b"\0" * (16 * 1024 * 1024)}
        return _write_zst_bundle(folder / "b.tar.zst", {"a": node_tar("a", zeros)})
    raise AssertionError(case)


INFLATING = (
    "outer-sparse-pax",
    "outer-sparse-gnu",
    "inner-sparse-pax",
    "inner-sparse-gnu",
    "inner-fifo",
    "zstd-bomb",
)


@pytest.mark.parametrize("dest_exists", [True, False], ids=["empty-dest", "new-dest"])
@pytest.mark.parametrize("case", INFLATING)
def test_inflating_and_special_members_are_refused(
    tmp_path: Path, case: str, dest_exists: bool
) -> None:
    archives = tmp_path / "archives"
    archives.mkdir()
    bundle = _hostile_bundle(case, archives)
    assert bundle.stat().st_size < 64 * 1024  # a small file claiming much more
    work = tmp_path / "work"
    work.mkdir()
    dest = work / "dest" if dest_exists else work / "new" / "parent" / "dest"
    if dest_exists:
        dest.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchive) as refused:
        extract(bundle, dest, limits=TIGHT)
    reason = str(refused.value)
    expected = {"sparse": "sparse member", "fifo": "fifo", "bomb": "decompression bomb"}
    assert next(v for k, v in expected.items() if k in case) in reason
    if case.startswith("inner"):
        assert "nodes/a.tar:" in reason
    # Nothing written anywhere, DEST (and the parents extract had to create) as before.
    assert snapshot(tmp_path) == before
    assert not (work / "new").exists()
    assert [f.kind for f in validate(bundle, limits=TIGHT)] == ["unsafe"]
    # The default limits change nothing: these members are refused by type or by ratio.
    if case != "zstd-bomb":
        assert [f.kind for f in validate(bundle)] == ["unsafe"]


def test_content_from_nothing_is_charged_to_the_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Second line of defence: were a sparse member let through, its zeros still count."""
    import novaops.client.bundle.archive as archive

    original = archive.check_member

    def lenient(member: tarfile.TarInfo, where: str) -> Any:
        if member.issparse():
            saved, member.sparse = member.sparse, None
            try:
                return original(member, where)
            finally:
                member.sparse = saved
        return original(member, where)

    monkeypatch.setattr(archive, "check_member", lenient)
    bundle = _hostile_bundle("inner-sparse-pax", tmp_path)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive, match="extracted content exceeds"):
        extract(bundle, dest, limits=TIGHT)
    assert snapshot(tmp_path) == {"b.tar.gz"}


def test_refused_extract_creates_no_parent_folders(tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path / "b.tar.gz", {"a": node_tar("a", GOOD_FILES)}, sha_override="0" * 64
    )
    with pytest.raises(ChecksumMismatch):
        extract(bundle, tmp_path / "x" / "y" / "dest")
    assert snapshot(tmp_path) == {"b.tar.gz"}


def test_extract_into_an_empty_folder_leaves_no_staging(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b.tar.gz", {"a": node_tar("a", GOOD_FILES)})
    (tmp_path / "dest").mkdir()
    extract(bundle, tmp_path / "dest")
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["manifest.json", "nodes"]
    assert snapshot(tmp_path / "dest") == {
        "manifest.json",
        "nodes",
        "nodes/a",
        "nodes/a/logs",
        "nodes/a/logs/app.log",
        "nodes/a/metadata.json",
    }
    nested = extract(bundle, tmp_path / "p" / "q")
    assert (nested / "nodes/a/logs/app.log").read_bytes() == GOOD_FILES["logs/app.log"]
