"""The controller daemon's bad-input paths, as a real process: one line, exit code 2."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from novaops.pki.identity import Identity, Role
from novaops.pki.issue import CertificateAuthority

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    ca = CertificateAuthority.create()
    ca.save(tmp_path)
    ca.issue(Identity(Role.CONTROLLER, "ctl-0"), tmp_path)
    return tmp_path


def config(folder: Path, listen: str, store: str, extra: str = "") -> Path:
    path = folder / "controller.toml"
    path.write_text(
        f'[controller]\nname = "ctl-0"\nlisten = "{listen}"\nlog_file = "ctl.log"\n{extra}'
        f'[tls]\nca = "ca.pem"\ncert = "controller-ctl-0.pem"\nkey = "controller-ctl-0-key.pem"\n'
        f"[store]\n{store}\n"
    )
    return path


def run(path: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "novaops.controller", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_port_in_use_is_one_line_and_exit_2(certs: Path, busy_port: int) -> None:
    path = config(certs, f"127.0.0.1:{busy_port}", 'kind = "embedded"\npath = "n.db"')
    result = run(path)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{busy_port}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_names_file_and_key(certs: Path) -> None:
    path = config(
        certs, "127.0.0.1:7400", 'kind = "embedded"', extra="heartbeat_interval_ms = 'x'\n"
    )
    result = run(path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"novaops-controller: {path}: key 'controller.heartbeat_interval_ms': "
        "expected an integer, got 'x'"
    )


def test_unreachable_etcd_is_retried_with_backoff_and_logged(certs: Path) -> None:
    dead = free_port()
    path = config(
        certs, f"127.0.0.1:{free_port()}", f'kind = "etcd"\nendpoints = ["http://127.0.0.1:{dead}"]'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "novaops.controller", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        log = certs / "ctl.log"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if log.exists() and log.read_text().count("store not reachable yet") >= 2:
                break
            time.sleep(0.2)
        text = log.read_text()
        assert text.count("store not reachable yet") >= 2, text
        assert f"127.0.0.1:{dead}" in text and "Traceback" not in text
        assert process.poll() is None  # still trying, not crashed
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "Traceback" not in err
