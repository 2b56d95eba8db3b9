"""Real etcd processes on loopback ports, for tests and ``novaops dev up --store etcd``.

``EtcdCluster.start(data_dir, members=3)`` starts the Debian ``etcd`` binary once
per member, each with its data in ``data_dir/<member>`` and its log in
``data_dir/<member>.log``, and returns once every member reports healthy.
Members can be killed and restarted (same ports, same data) for failover tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from novaops.devcluster.errors import DevClusterError

ETCD_CANDIDATES = ("/usr/bin/etcd", "/usr/local/bin/etcd")
STOP_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 15


class EtcdError(DevClusterError):
    """etcd is missing, or a member did not start or become healthy; one line plus log tail."""


def find_etcd_binary() -> Path:
    """The etcd server binary (``$NOVAOPS_ETCD``, PATH, Debian's path), or EtcdError."""
    override = os.environ.get("NOVAOPS_ETCD")
    if override:
        if os.access(override, os.X_OK):
            return Path(override)
        raise EtcdError(f"NOVAOPS_ETCD={override} is not an executable etcd")
    found = shutil.which("etcd")
    if found:
        return Path(found)
    for candidate in ETCD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    raise EtcdError("etcd not found; apt-get install etcd-server")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    # All sockets stay bound until every port is picked, so no port repeats. The
    # ports are released before etcd binds them; on loopback in a test run the
    # window for another process to take one is negligible.
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class _Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty log)"


class EtcdCluster:
    """A running etcd cluster on 127.0.0.1; use ``start()`` and ``stop()`` (or ``with``)."""

    def __init__(
        self,
        binary: Path,
        data_dir: Path,
        members: list[_Member],
        heartbeat_ms: int,
        election_ms: int,
    ) -> None:
        self._binary = binary
        self._data_dir = data_dir
        self._members = members
        self._heartbeat_ms = heartbeat_ms
        self._election_ms = election_ms
        self._token = f"novaops-{uuid.uuid4().hex[:12]}"

    @classmethod
    def start(
        cls,
        data_dir: Path,
        members: int = 1,
        timeout: float = 20.0,
        *,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
    ) -> EtcdCluster:
        """Start ``members`` etcd processes and wait until each is healthy.

        Smaller ``heartbeat_ms``/``election_ms`` make etcd accept shorter lease
        TTLs (its minimum is 1.5 election timeouts, rounded up to a second):
        tests pass 50/500 to use 1 s leases. Raises EtcdError, after stopping
        whatever it started, with the failing member's log tail.
        """
        if members < 1:
            raise ValueError("an etcd cluster needs at least one member")
        binary = find_etcd_binary()
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(2 * members)
        specs = [
            _Member(
                name=f"etcd-{index}",
                client_port=ports[2 * index],
                peer_port=ports[2 * index + 1],
                data_dir=data_dir / f"etcd-{index}",
                log_path=data_dir / f"etcd-{index}.log",
            )
            for index in range(members)
        ]
        cluster = cls(binary, data_dir, specs, heartbeat_ms, election_ms)
        try:
            for index in range(members):
                cluster._spawn(index)
            cluster._wait_healthy(range(members), timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    # -- what callers read ---------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of every member (running or not), in member order."""
        return [member.client_url for member in self._members]

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The members' Popen objects (for callers that reap them later)."""
        return [m.process for m in self._members if m.process is not None]

    @property
    def pids(self) -> list[int]:
        """Pids of the members that are running now, in member order."""
        return [m.process.pid for m in self._members if m.process and m.process.poll() is None]

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    def log_path(self, index: int) -> Path:
        return self._members[index].log_path

    # -- lifecycle -----------------------------------------------------------

    def _spawn(self, index: int) -> None:
        member = self._members[index]
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self._members)
        existing = (member.data_dir / "member").is_dir()
        command = [
            str(self._binary),
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-token={self._token}",
            f"--initial-cluster-state={'existing' if existing else 'new'}",
            f"--heartbeat-interval={self._heartbeat_ms}",
            f"--election-timeout={self._election_ms}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        # The child writes through its own copy of the descriptor; ours is closed
        # at once, so a detached member (dev up) leaves no open file behind.
        with member.log_path.open("ab") as log_file:
            try:
                member.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C meant for the caller does not reach
                    # etcd before the caller's ordered shutdown does.
                    start_new_session=True,
                )
            except OSError as exc:
                raise EtcdError(f"cannot start {self._binary}: {exc.strerror}") from None

    def _healthy(self, member: _Member) -> bool:
        try:
            with urllib.request.urlopen(f"{member.client_url}/health", timeout=1.0) as reply:
                body = json.loads(reply.read() or b"{}")
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return str(body.get("health")) == "true"

    def _wait_healthy(self, indexes: range | list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(indexes)
        while pending:
            for index in list(pending):
                member = self._members[index]
                assert member.process is not None
                if member.process.poll() is not None:
                    raise EtcdError(
                        f"etcd member {member.name} exited with status "
                        f"{member.process.returncode}; log {member.log_path}:\n"
                        f"{member.log_tail()}"
                    )
                if self._healthy(member):
                    pending.remove(index)
            if not pending:
                return
            if time.monotonic() > deadline:
                member = self._members[pending[0]]
                raise EtcdError(
                    f"etcd member {member.name} not healthy at {member.client_url} after "
                    f"{timeout:g}s; log {member.log_path}:\n{member.log_tail()}"
                )
            time.sleep(0.05)

    def _terminate(self, member: _Member, sig: signal.Signals, grace: float) -> None:
        process = member.process
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
                try:
                    process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    process.wait()
            member.process = None

    def kill_member(self, index: int) -> None:
        """SIGKILL one member (a crash, not a clean stop) and reap it."""
        self._terminate(self._members[index], signal.SIGKILL, STOP_GRACE_SECONDS)

    def restart_member(self, index: int, timeout: float = 20.0) -> None:
        """Start a stopped member again on the same ports and data; wait until healthy."""
        member = self._members[index]
        if member.process is not None and member.process.poll() is None:
            raise EtcdError(f"etcd member {member.name} is still running")
        self._terminate(member, signal.SIGKILL, 0)  # reap and close the old log handle
        self._spawn(index)
        self._wait_healthy([index], timeout)

    def stop(self) -> None:
        """SIGTERM every member, SIGKILL after a grace, and reap them. Idempotent."""
        for member in self._members:
            if member.process is not None and member.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    member.process.terminate()
        for member in self._members:
            self._terminate(member, signal.SIGTERM, STOP_GRACE_SECONDS)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
