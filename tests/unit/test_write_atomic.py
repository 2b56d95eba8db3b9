"""write_atomic (pki/issue.py), the one way novaops replaces a file: whole or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from novaops.pki.issue import write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_file_gets_the_data_and_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "state" / "quarantine.json"  # the folder is made
    write_atomic(target, b"first\n", mode=0o600)
    assert target.read_bytes() == b"first\n" and _mode(target) == 0o600
    write_atomic(target, b"second\n")
    assert target.read_bytes() == b"second\n" and _mode(target) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["quarantine.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "ca-key.pem"
    write_atomic(target, b"old", mode=0o600)

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new", mode=0o600)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ca-key.pem"]
