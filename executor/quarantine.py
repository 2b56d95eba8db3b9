"""The node's own record of its quarantine, and the operator hooks it runs.

The controller's store is the source of truth; the executor keeps a local copy so
that a restarted executor still refuses work while quarantined, even before any
controller reaches it.

What callers may rely on:

* State lives in ``state_dir/quarantine.json``, replaced atomically (temp file,
  fsync, rename, fsync of the folder). ``state_dir/quarantined`` exists exactly
  while the node is quarantined (the flag :class:`ExecutorContext` reads).
* An unreadable or corrupt state file is read as *quarantined* (fail closed), with
  a reason saying so; the next ApplyQuarantine replaces it.
* :meth:`NodeQuarantine.apply` is idempotent and fenced: a request whose
  ``fence_revision`` is older than the newest fence this node has seen is ignored
  (``stale``); one that matches the current state changes nothing and runs no
  hooks. A change is persisted *before* its hooks run (enforcement first), and
  marked done after them, so an executor that died mid-hooks re-runs them on the
  controller's retry.
* The newest fence seen is one per node, kept in ``fence_revision`` of the state
  file: quarantine decisions and recoveries (:meth:`NodeQuarantine.admit_fence`)
  both raise it, and both are refused below it, so a deposed leader can neither
  repair nor (un)quarantine a node a newer leader has acted on. Fence 0 means
  "unfenced" and is neither recorded nor refused.
* Hooks are executables in ``hooks_dir/quarantine.d`` or ``hooks_dir/unquarantine.d``
  run in name order, without a shell, with stdin closed, a minimal environment
  (``PATH``, ``LANG`` and ``NOVAOPS_NODE``, ``NOVAOPS_REASON``, ``NOVAOPS_ACTOR``,
  ``NOVAOPS_SOURCE`` (manual|auto), ``NOVAOPS_ACTION`` (quarantine|unquarantine),
  ``NOVAOPS_SINCE`` (ISO 8601), ``NOVAOPS_FENCE_REVISION``) and a timeout each.
  Reason, actor, source and since are the controller's record of the decision,
  also when the node learns it from a heartbeat (:func:`sync_with_controller`).
  Only regular files (not links) owned by root or this process's user, not
  group/world-writable and executable are run; others are reported refused.
  Every hook yields one line in ``hook_results``: ``"name: ok"``,
  ``"name: exit 3: <last stderr line>"``, ``"name: timed out after 30s"``,
  ``"name: refused: <why>"``. One failing hook does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import stat
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from novaops.pki.issue import write_atomic
from novaops.v1 import common_pb2

log = logging.getLogger(__name__)

STATE_FILE = "quarantine.json"
# Kept in step with the JSON: ExecutorContext.quarantined() looks for this file.
FLAG_FILE = "quarantined"
QUARANTINE_HOOKS = "quarantine.d"
UNQUARANTINE_HOOKS = "unquarantine.d"
DEFAULT_HOOK_TIMEOUT_SECONDS = 30.0
SOURCES = ("manual", "auto")
_HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Enough for the last lines of a hook's complaint, bounded whatever it prints.
_STDERR_TAIL_BYTES = 4096
_FORMAT_VERSION = 1


def source_from_proto(value: int) -> str:
    """QuarantineSource (1 manual, 2 auto) as the name apply() takes; ValueError otherwise."""
    names: dict[int, str] = {
        common_pb2.QUARANTINE_SOURCE_MANUAL: "manual",
        common_pb2.QUARANTINE_SOURCE_AUTO: "auto",
    }
    if value not in names:
        raise ValueError(f"quarantine source must be manual or auto (got {value})")
    return names[value]


class NodeQuarantined(Exception):
    """A mutating RPC was refused because the node is quarantined (FAILED_PRECONDITION)."""


class StaleFence(Exception):
    """A fenced action carried a fence older than the newest this node has seen
    (FAILED_PRECONDITION): it comes from a leader that has been replaced."""


@dataclass(frozen=True)
class QuarantineState:
    """The node's local quarantine record; ``hooks_pending`` while hooks have not
    finished for the last change."""

    quarantined: bool = False
    reason: str = ""
    actor: str = ""
    source: str = ""
    # The newest fence seen from any fenced decision (quarantine or recovery).
    fence_revision: int = 0
    since: str = ""  # ISO 8601, when the current state began
    hooks_pending: bool = False


@dataclass(frozen=True)
class ApplyResult:
    """``changed``: the state flipped. ``stale``: ignored as older than the last
    applied fence revision. ``quarantined``: the state after applying."""

    quarantined: bool
    changed: bool
    hook_results: tuple[str, ...] = ()
    stale: bool = False


class NodeQuarantine:
    """Local quarantine state of one node. Not safe across processes: one executor
    owns a state_dir."""

    def __init__(
        self,
        state_dir: Path,
        node: str,
        *,
        hooks_dir: Path | None = None,
        hook_timeout: float = DEFAULT_HOOK_TIMEOUT_SECONDS,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.node = node
        self.hooks_dir = Path(hooks_dir) if hooks_dir is not None else self.state_dir / "hooks"
        self.hook_timeout = hook_timeout
        self._lock = asyncio.Lock()
        self._state = self._load()
        self._sync_flag(self._state)

    @property
    def state(self) -> QuarantineState:
        return self._state

    def is_quarantined(self) -> bool:
        return self._state.quarantined

    def refuse_if_quarantined(self, operation: str) -> None:
        """Raise NodeQuarantined for a non-recovery mutating operation while quarantined.

        The executor calls it for every RPC its table classifies as mutating
        (``novaops.executor.server.EXECUTOR_RPCS``). Recovery (Recover), reads
        (VerifyClean among them) and ApplyQuarantine itself stay allowed: they are
        how a quarantined node gets clean and comes back.
        """
        state = self._state
        if state.quarantined:
            raise NodeQuarantined(
                f"{operation} refused: node {self.node} is quarantined since {state.since} "
                f"by {state.actor or 'unknown'} ({state.source or 'unknown'}): {state.reason}"
            )

    async def admit_fence(self, fence_revision: int, operation: str) -> None:
        """Record fence_revision as the newest seen (persisted), or raise StaleFence
        when it is older than that. 0 (unfenced) is neither recorded nor refused.

        Serialised with :meth:`apply`: it waits while a quarantine change runs its hooks.
        """
        if fence_revision == 0:
            return
        async with self._lock:
            current = self._state
            if fence_revision < current.fence_revision:
                raise StaleFence(
                    f"{operation} refused: fence revision {fence_revision} is older than "
                    f"{current.fence_revision}, the newest this node has seen (a newer "
                    "leader has acted on it since)"
                )
            if fence_revision > current.fence_revision:
                await asyncio.to_thread(self._save, replace(current, fence_revision=fence_revision))

    async def apply(
        self,
        quarantined: bool,
        reason: str,
        actor: str,
        source: str,
        fence_revision: int,
        *,
        since: str = "",
    ) -> ApplyResult:
        """Apply a controller decision; see the module docstring for the guarantees.

        ``since`` (ISO 8601) is when the controller's record says the state began;
        empty: now.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)} (got {source!r})")
        async with self._lock:
            current = self._state
            if fence_revision < current.fence_revision:
                log.warning(
                    "ignoring stale quarantine decision (fence %d < %d)",
                    fence_revision,
                    current.fence_revision,
                )
                return ApplyResult(current.quarantined, changed=False, stale=True)
            if current.quarantined == quarantined:
                # A repeat. The newest decision's record wins (an operator taking
                # over an automatic quarantine changes source, actor and reason),
                # without running the hooks again; hooks left pending by a crash
                # mid-change run now.
                updated = replace(current, fence_revision=fence_revision)
                if quarantined and fence_revision >= current.fence_revision and reason:
                    updated = replace(
                        updated,
                        reason=reason,
                        actor=actor,
                        source=source,
                        since=since or current.since,
                    )
                if updated != current:
                    await asyncio.to_thread(self._save, updated)
                if not current.hooks_pending:
                    return ApplyResult(quarantined, changed=False)
                results = await self._run_hooks(current)
                await asyncio.to_thread(self._save, replace(updated, hooks_pending=False))
                return ApplyResult(quarantined, changed=False, hook_results=results)
            new = QuarantineState(
                quarantined=quarantined,
                reason=reason,
                actor=actor,
                source=source,
                fence_revision=fence_revision,
                since=since or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                hooks_pending=True,
            )
            await asyncio.to_thread(self._save, new)
            results = await self._run_hooks(new)
            await asyncio.to_thread(self._save, replace(new, hooks_pending=False))
            return ApplyResult(quarantined, changed=True, hook_results=results)

    # -- persistence ---------------------------------------------------------------------

    def _load(self) -> QuarantineState:
        path = self.state_dir / STATE_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return _state_from_json(doc)
        except FileNotFoundError:
            return QuarantineState()
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # Fail closed: a node that cannot tell must not take work.
            log.error(
                "local quarantine state %s is unreadable, assuming quarantined: %s", path, exc
            )
            return QuarantineState(
                quarantined=True,
                reason=f"local quarantine state unreadable: {exc}",
                actor="executor",
                source="auto",
            )

    def _save(self, state: QuarantineState) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        doc = {"version": _FORMAT_VERSION, "node": self.node, **asdict(state)}
        write_atomic(
            self.state_dir / STATE_FILE, json.dumps(doc, indent=2).encode() + b"\n", mode=0o600
        )
        self._sync_flag(state)
        self._state = state

    def _sync_flag(self, state: QuarantineState) -> None:
        flag = self.state_dir / FLAG_FILE
        if state.quarantined and not flag.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(flag, f"{state.reason}\n".encode(), mode=0o600)
        elif not state.quarantined:
            flag.unlink(missing_ok=True)

    # -- hooks ---------------------------------------------------------------------------

    async def _run_hooks(self, state: QuarantineState) -> tuple[str, ...]:
        action = "quarantine" if state.quarantined else "unquarantine"
        folder = self.hooks_dir / (QUARANTINE_HOOKS if state.quarantined else UNQUARANTINE_HOOKS)
        env = {
            "PATH": _HOOK_PATH,
            "LANG": "C.UTF-8",
            "NOVAOPS_NODE": self.node,
            "NOVAOPS_REASON": state.reason,
            "NOVAOPS_ACTOR": state.actor,
            "NOVAOPS_SOURCE": state.source,
            "NOVAOPS_ACTION": action,
            "NOVAOPS_SINCE": state.since,
            "NOVAOPS_FENCE_REVISION": str(state.fence_revision),
        }
        results = []
        for name, refusal in await asyncio.to_thread(list_hooks, folder):
            if refusal:
                results.append(f"{name}: refused: {refusal}")
            else:
                results.append(await run_hook(folder / name, env, self.hook_timeout))
        for line in results:
            log.info("%s hook %s", action, line)
        return tuple(results)


def list_hooks(folder: Path) -> list[tuple[str, str]]:
    """(name, refusal) for each hook in folder, sorted by name; refusal is "" for a
    hook that may run. Hidden files are ignored; a missing folder has no hooks."""
    try:
        names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        folder_stat = folder.stat()
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [(str(folder), f"cannot list hooks: {exc.strerror}")]
    if folder_stat.st_mode & stat.S_IWOTH:
        # Anyone could drop a hook in: run none of them.
        return [(name, f"hooks folder {folder} is world-writable") for name in names]
    return [(name, hook_refusal(folder / name)) for name in names]


def hook_refusal(path: Path) -> str:
    """Why this hook must not run, or "" when it may."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return exc.strerror or "cannot stat"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link (hooks must be regular files)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid} (must be root or uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
        return "group- or world-writable"
    if not st.st_mode & stat.S_IXUSR or not os.access(path, os.X_OK):
        return "not executable"
    return ""


async def run_hook(path: Path, env: dict[str, str], timeout: float) -> str:
    """Run one hook (argv ``[path]``, no shell); its one-line result."""
    name = path.name
    try:
        proc = await asyncio.create_subprocess_exec(
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd="/",
            # Its own process group, so a timeout also stops whatever it started.
            start_new_session=True,
        )
    except OSError as exc:
        return f"{name}: cannot start: {exc.strerror or exc}"
    assert proc.stderr is not None
    tail = bytearray()

    async def drain() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            tail.extend(chunk)
            del tail[:-_STDERR_TAIL_BYTES]

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(drain(), proc.wait())
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return f"{name}: timed out after {timeout:g}s"
    code = proc.returncode
    if code == 0:
        return f"{name}: ok"
    last = _last_line(bytes(tail))
    what = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
    return f"{name}: {what}: {last}" if last else f"{name}: {what}"


def _last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1][:200] if lines else ""


def _state_from_json(doc: Any) -> QuarantineState:
    if not isinstance(doc, dict) or doc.get("version") != _FORMAT_VERSION:
        raise ValueError("not a version 1 quarantine state")
    names = [f.name for f in dataclasses.fields(QuarantineState)]
    values = {k: doc[k] for k in names if k in doc}
    state = QuarantineState(**values)
    if not isinstance(state.quarantined, bool) or not isinstance(state.fence_revision, int):
        raise ValueError("malformed quarantine state")
    return state


@dataclass(frozen=True)
class StoredDecision:
    """The controllers' stored quarantine decision for this node, as a heartbeat
    response carries it: the record (quarantined) or the last history entry
    (released), and the leader's fence. Empty strings / 0 when not sent."""

    quarantined: bool
    reason: str = ""
    actor: str = ""
    source: str = ""  # "manual" | "auto" | "" (not sent)
    since: str = ""  # ISO 8601
    fence_revision: int = 0


async def sync_with_controller(
    quarantine: NodeQuarantine,
    stored: bool | None,
    controller: str | None,
    decision: StoredDecision | None = None,
) -> ApplyResult | None:
    """Apply the controllers' stored quarantine state when it differs from ours.

    The controller tells a node directly (ApplyQuarantine); this catches the case
    where it could not (the node was unreachable then) from the state every
    heartbeat response carries. ``decision`` (when it agrees with ``stored``)
    gives the hooks the record's reason, actor, source and since, and fences the
    change with the leader's revision; without one the reason says it was
    synchronised and the actor is ``controller:<name>``. None when there is
    nothing to do; a result with ``stale`` when the decision's fence is older
    than the newest this node has seen.
    """
    if stored is None or stored == quarantine.is_quarantined():
        return None
    state = quarantine.state
    reason = "synchronised from the controller's record (heartbeat)"
    actor = f"controller:{controller or 'unknown'}"
    source = state.source if state.source in SOURCES else "manual"
    since = ""
    fence = state.fence_revision
    if decision is not None and decision.quarantined == stored:
        reason = decision.reason or reason
        actor = decision.actor or actor
        source = decision.source if decision.source in SOURCES else source
        since = decision.since
        fence = decision.fence_revision or fence
    return await quarantine.apply(stored, reason, actor, source, fence, since=since)
