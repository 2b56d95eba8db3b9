"""Log selection on the executor: the per-file cap, the since window, journald.

Everything goes through the real :class:`NodeBundleBuilder` over a temp host
root, with a fixed clock; the archive is read back with tarfile. journald is
a fake ``journalctl`` on PATH (its arguments recorded, its output and exit
status chosen by the test), and the real ``journalctl`` where the machine has
one, to check it accepts the command line the executor builds.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from novaops.client.bundle.format import GROUP_LOGS, STATUS_FAILED, STATUS_OK
from novaops.executor.bundle import (
    BundleOptions,
    BundleSources,
    NodeBundleBuilder,
    collectors,
    logs,
)
from novaops.executor.bundle.builder import CollectorContext, CollectorSpec, Member
from novaops.executor.hostroot import HostRoot

NOW = datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def write(root: Path, host_path: str, text: str | bytes, mtime: datetime = NOW) -> Path:
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    return path


class Built:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.metadata: dict[str, Any] = json.loads(files.pop("metadata.json"))
        self.files = files

    def entry(self, name: str) -> dict[str, Any]:
        return next(f for f in self.metadata["files"] if f["path"] == name)

    def collector(self, name: str) -> dict[str, Any]:
        return next(c for c in self.metadata["collectors"] if c["name"] == name)


def build(
    root: Path,
    specs: list[CollectorSpec],
    *,
    since: timedelta | None = None,
    max_file_bytes: int = 0,
) -> Built:
    options = BundleOptions(node="n", since=since, max_file_bytes=max_file_bytes, workers=0)
    sources = BundleSources(host_root=HostRoot(root), clock=lambda: NOW)
    data = b"".join(NodeBundleBuilder(options, sources, specs).chunks())
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            content = tar.extractfile(member)
            assert content is not None
            files[member.name] = content.read()
    return Built(files)


LIBVIRT = CollectorSpec("logs.libvirt", GROUP_LOGS, collectors.collect_libvirt_logs)
ALL_LOGS = [
    LIBVIRT,
    CollectorSpec("logs.qemu", GROUP_LOGS, collectors.collect_qemu_logs),
    CollectorSpec("logs.containers", GROUP_LOGS, collectors.collect_container_logs),
    CollectorSpec("logs.services", GROUP_LOGS, collectors.collect_service_logs),
    CollectorSpec("logs.system", GROUP_LOGS, collectors.collect_system_log),
]


# ------------------------------------------------------------------ per-file cap


def numbered(count: int) -> bytes:
    # Lines of different lengths, so a cut can fall anywhere in a line.
    return b"".join(
        b"2025-03-10 11:%02d:00.000+0000: 42: info : line %05d %s\n" % (n % 60, n, b"x" * (n % 17))
        for n in range(count)
    )


def expected_tail(data: bytes, cap: int) -> bytes:
    """The newest whole lines that fit in cap bytes (computed independently)."""
    kept: list[bytes] = []
    used = 0
    for line in reversed(data.splitlines(keepends=True)):
        if used + len(line) > cap:
            break
        kept.append(line)
        used += len(line)
    return b"".join(reversed(kept))


@pytest.mark.parametrize("cut", ["mid-line", "on-a-line-start"])
def test_the_cap_keeps_the_newest_whole_lines(tmp_path: Path, cut: str) -> None:
    data = numbered(2000)
    cap = 20_000
    if cut == "on-a-line-start":
        # A cap that ends exactly where a line starts: that whole line fits and stays.
        starts = [i + 1 for i, byte in enumerate(data) if byte == 0x0A][:-1]
        cap = len(data) - next(s for s in starts if len(data) - s <= cap)
    write(tmp_path, "/var/log/libvirt/libvirtd.log", data)
    write(tmp_path, "/var/log/libvirt/virtqemud.log", b"small file, under the cap\n")
    built = build(tmp_path, [LIBVIRT], max_file_bytes=cap)
    kept = built.files["logs/libvirt/libvirtd.log"]
    assert kept == expected_tail(data, cap)
    assert 0 < len(kept) <= cap and data.endswith(kept)
    assert kept.startswith(b"2025-03-10 ")  # starts at a line start
    if cut == "on-a-line-start":
        assert len(kept) == cap
    assert built.entry("logs/libvirt/libvirtd.log")["truncated"] is True
    assert built.files["logs/libvirt/virtqemud.log"] == b"small file, under the cap\n"
    assert built.entry("logs/libvirt/virtqemud.log")["truncated"] is False
    assert built.metadata["max_file_bytes"] == cap


def test_a_line_longer_than_the_cap_keeps_its_tail(tmp_path: Path) -> None:
    data = b"short first line\n" + b"y" * 5000 + b"\n"
    write(tmp_path, "/var/log/libvirt/libvirtd.log", data)
    kept = build(tmp_path, [LIBVIRT], max_file_bytes=1000).files["logs/libvirt/libvirtd.log"]
    assert kept == data[-1000:]


# ----------------------------------------------------------------- since window


def test_the_since_window_by_every_timestamp_style(tmp_path: Path) -> None:
    # NOW is 12:00 UTC; the window starts at 11:00 UTC.
    write(
        tmp_path,
        "/var/log/libvirt/libvirtd.log",
        "2025-03-10 10:30:00.000+0000: 1: info : old\n"
        # 12:30 at +02:00 is 10:30 UTC: outside (a parser ignoring zones keeps it).
        "2025-03-10 12:30:00.000+0200: 1: info : old, in another zone\n"
        "2025-03-10 13:30:00.000+02:00: 1: info : first inside (11:30 UTC)\n"
        "Traceback (most recent call last):\n"
        "  stays with its line\n"
        "2025-03-10 11:45:00.000+0000: 1: info : newer\n",
    )
    write(
        tmp_path,
        "/var/log/libvirt/qemu/instance-1.log",
        "2025-03-10T10:59:59Z qemu: old\n2025-03-10T11:00:00Z qemu: exactly at the start\n",
    )
    write(
        tmp_path,
        "/var/log/nova/nova-compute.log",
        # No zone: UTC.
        "2025-03-10 10:59:00.123 77 INFO nova.compute.manager old\n"
        "2025-03-10 11:00:01.456 77 INFO nova.compute.manager new\n",
    )
    write(
        tmp_path,
        "/var/log/syslog",
        # No year: Dec 31 is the past December, outside; read as this year it would be inside.
        "Dec 31 23:00:00 hv kernel: last year\n"
        "Mar 10 10:00:00 hv kernel: old\n"
        "Mar 10 11:30:00 hv kernel: new\n",
    )
    docker_id = "ab" * 32
    write(
        tmp_path,
        f"/var/lib/docker/containers/{docker_id}/{docker_id}-json.log",
        '{"log":"old\\n","stream":"stdout","time":"2025-03-10T10:00:00.123456789Z"}\n'
        '{"log":"new\\n","stream":"stdout","time":"2025-03-10T11:10:00.5Z"}\n',
    )
    # Timestamps decide over mtime: every line is old, the file was touched just now.
    write(tmp_path, "/var/log/auth.log", "Mar 10 09:00:00 hv sshd[1]: old\n", mtime=NOW)
    # No timestamps at all: the mtime decides.
    write(tmp_path, "/var/log/nova/plain.log", "no time here\n", mtime=NOW - HOUR / 2)
    write(tmp_path, "/var/log/nova/stale.log", "no time here\n", mtime=NOW - 2 * HOUR)
    write(tmp_path, "/var/log/kern.log", "all old\n", mtime=NOW - 3 * HOUR)

    built = build(tmp_path, ALL_LOGS, since=HOUR)
    files = {name: data.decode() for name, data in built.files.items()}
    assert files["logs/libvirt/libvirtd.log"] == (
        "2025-03-10 13:30:00.000+02:00: 1: info : first inside (11:30 UTC)\n"
        "Traceback (most recent call last):\n"
        "  stays with its line\n"
        "2025-03-10 11:45:00.000+0000: 1: info : newer\n"
    )
    assert (
        files["logs/libvirt/qemu/instance-1.log"]
        == "2025-03-10T11:00:00Z qemu: exactly at the start\n"
    )
    assert files["logs/services/nova/nova-compute.log"] == (
        "2025-03-10 11:00:01.456 77 INFO nova.compute.manager new\n"
    )
    assert files["logs/system/syslog"] == "Mar 10 11:30:00 hv kernel: new\n"
    assert files[f"logs/containers/docker/{docker_id[:12]}.log"] == (
        '{"log":"new\\n","stream":"stdout","time":"2025-03-10T11:10:00.5Z"}\n'
    )
    assert files["logs/services/nova/plain.log"] == "no time here\n"
    for absent in ("logs/system/auth.log", "logs/services/nova/stale.log", "logs/system/kern.log"):
        assert absent not in files
    assert built.metadata["window"]["since"] == (NOW - HOUR).isoformat()


def test_without_since_every_file_is_whole(tmp_path: Path) -> None:
    text = "Mar 10 01:00:00 hv kernel: old\n"
    write(tmp_path, "/var/log/syslog", text, mtime=NOW - 48 * HOUR)
    built = build(tmp_path, ALL_LOGS)
    assert built.files["logs/system/syslog"] == text.encode()


# --------------------------------------------------------------------- journald

FAKE_JOURNALCTL = """#!/bin/sh
# A stand-in journalctl: records its arguments and pid, then acts as told.
printf '%s\\n' "$@" > "$FAKE_JOURNAL_DIR/args"
echo $$ > "$FAKE_JOURNAL_DIR/pid"
case "$FAKE_JOURNAL_MODE" in
  ok) cat "$FAKE_JOURNAL_DIR/output" ;;
  fail) cat "$FAKE_JOURNAL_DIR/output"; echo "Failed to open journal: Bad message" >&2; exit 1 ;;
  hang) exec sleep 60 ;;
esac
"""

SystemCollector = Callable[[CollectorContext], Iterator[Member]]
# The collector as it is, and the composition logs.py offers it.
SYSTEM_COLLECTORS: dict[str, SystemCollector] = {
    "collect_system_log": collectors.collect_system_log,
    "system_log_members": logs.system_log_members,
}


@pytest.fixture
def fake_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "fake-journal"
    (folder / "bin").mkdir(parents=True)
    script = folder / "bin" / "journalctl"
    script.write_text(FAKE_JOURNALCTL)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_JOURNAL_DIR", str(folder))
    # journald is read only for the machine's own root; here the temp root stands in.
    monkeypatch.setattr(logs, "journal_available", lambda root: True)
    return folder


def system_build(root: Path, name: str, **kwargs: Any) -> Built:
    return build(
        root, [CollectorSpec("logs.system", GROUP_LOGS, SYSTEM_COLLECTORS[name])], **kwargs
    )


def plain_system_logs(root: Path) -> dict[str, bytes]:
    files = {"syslog": b"Mar 10 11:59:00 hv kernel: plain syslog line\n"}
    files["auth.log"] = b"Mar 10 11:58:00 hv sshd[9]: plain auth line\n"
    for name, data in files.items():
        write(root, f"/var/log/{name}", data)
    return {f"logs/system/{name}": data for name, data in files.items()}


@pytest.mark.parametrize("collector", sorted(SYSTEM_COLLECTORS))
def test_the_journal_is_read_with_since_capped_and_redacted(
    tmp_path: Path, fake_journal: Path, monkeypatch: pytest.MonkeyPatch, collector: str
) -> None:
    monkeypatch.setenv("FAKE_JOURNAL_MODE", "ok")
    lines = [
        f"2025-03-10T11:{n % 60:02d}:00+0000 hv systemd[1]: entry {n:05d}\n" for n in range(400)
    ]
    lines[-1] = "2025-03-10T11:59:59+0000 hv app[2]: login password=hunter22secret\n"
    journal = "".join(lines).encode()
    (fake_journal / "output").write_bytes(journal)
    root = tmp_path / "host"
    plain = plain_system_logs(root)

    built = system_build(root, collector, since=HOUR, max_file_bytes=4000)

    args = (fake_journal / "args").read_text().splitlines()
    assert args[:6] == [
        "--no-pager",
        "--utc",
        "-o",
        "short-iso",
        "-q",
        f"--since=@{int((NOW - HOUR).timestamp())}",
    ]
    assert args == logs.journal_command(NOW - HOUR)[1:]
    kept = built.files["logs/system/journal.log"]
    assert kept.endswith(
        b"entry 00398\n2025-03-10T11:59:59+0000 hv app[2]: login password=[REDACTED:password]\n"
    )
    assert b"hunter22secret" not in kept
    assert len(kept) <= 4000 and kept.startswith(b"2025-03-10T11:")
    assert built.entry("logs/system/journal.log")["truncated"] is True
    assert built.entry("logs/system/journal.log")["source"] == "journalctl"
    for name, data in plain.items():
        assert built.files[name] == data
    assert built.collector("logs.system")["status"] == STATUS_OK


@pytest.mark.parametrize("collector", sorted(SYSTEM_COLLECTORS))
@pytest.mark.parametrize(
    "output",
    [b"", b"2025-03-10T11:00:00+0000 hv kernel: read before it broke\n"],
    ids=["no-output", "partial-output"],
)
def test_a_failing_journalctl_keeps_the_plain_system_logs(
    tmp_path: Path,
    fake_journal: Path,
    monkeypatch: pytest.MonkeyPatch,
    collector: str,
    output: bytes,
) -> None:
    monkeypatch.setenv("FAKE_JOURNAL_MODE", "fail")
    (fake_journal / "output").write_bytes(output)
    root = tmp_path / "host"
    plain = plain_system_logs(root)

    built = system_build(root, collector, since=HOUR)

    for name, data in plain.items():
        assert built.files[name] == data, f"{name} lost with the failing journal"
    record = built.collector("logs.system")
    assert record["status"] == STATUS_FAILED
    assert "journalctl exited with status 1: Failed to open journal: Bad message" in record["error"]
    assert record["files"] == len(plain) + (1 if output else 0)
    if output:
        assert built.files["logs/system/journal.log"] == output
    else:
        assert "logs/system/journal.log" not in built.files


@pytest.mark.parametrize("collector", sorted(SYSTEM_COLLECTORS))
def test_a_hanging_journalctl_is_stopped_and_the_plain_logs_stay(
    tmp_path: Path, fake_journal: Path, monkeypatch: pytest.MonkeyPatch, collector: str
) -> None:
    monkeypatch.setenv("FAKE_JOURNAL_MODE", "hang")
    monkeypatch.setattr(logs, "JOURNALCTL_TIMEOUT_SECONDS", 1.0)
    root = tmp_path / "host"
    plain = plain_system_logs(root)

    built = system_build(root, collector)

    pid = int((fake_journal / "pid").read_text())
    assert not psutil.pid_exists(pid), "the timed-out journalctl is still running"
    for name, data in plain.items():
        assert built.files[name] == data
    record = built.collector("logs.system")
    assert record["status"] == STATUS_FAILED
    assert "journalctl did not finish within 1s" in record["error"]


@pytest.mark.skipif(shutil.which("journalctl") is None, reason="no journalctl on this machine")
def test_the_real_journalctl_accepts_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = logs.journal_command(NOW - HOUR)
    done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    # Through the collector: the real journal (maybe empty here) plus the plain files.
    monkeypatch.setattr(logs, "journal_available", lambda root: True)
    root = tmp_path / "host"
    plain = plain_system_logs(root)
    built = system_build(root, "system_log_members", since=HOUR)
    assert built.collector("logs.system")["status"] == STATUS_OK
    assert "logs/system/journal.log" in built.files
    for name, data in plain.items():
        assert built.files[name] == data
