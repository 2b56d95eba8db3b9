"""Node-side quarantine: persistence, idempotence, fencing, hooks and the guard."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from novaops.executor.quarantine import (
    FLAG_FILE,
    STATE_FILE,
    NodeQuarantine,
    NodeQuarantined,
    StaleFence,
    hook_refusal,
    source_from_proto,
)
from novaops.v1 import common_pb2


def write_hook(folder: Path, name: str, body: str, mode: int = 0o755) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(mode)
    return path


def env_dump_hook(folder: Path, name: str, out: Path) -> None:
    write_hook(
        folder,
        name,
        "import json, os\n"
        f"with open({str(out)!r}, 'a') as fh:\n"
        "    fh.write(json.dumps(dict(os.environ)) + '\\n')\n",
    )


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def write_state(state_dir: Path, text: str) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / STATE_FILE).write_text(text)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


async def test_starts_unquarantined_and_persists_across_instances(state_dir: Path) -> None:
    q = NodeQuarantine(state_dir, "n1")
    assert not q.is_quarantined()
    result = await q.apply(True, "disk errors", "user:alice", "manual", 7)
    assert result.changed and result.quarantined and not result.stale
    assert (state_dir / FLAG_FILE).exists()
    doc = json.loads((state_dir / STATE_FILE).read_text())
    assert doc["quarantined"] is True and doc["fence_revision"] == 7

    restarted = NodeQuarantine(state_dir, "n1")
    assert restarted.is_quarantined()
    assert restarted.state.reason == "disk errors"
    assert restarted.state.actor == "user:alice"
    assert not restarted.state.hooks_pending

    result = await restarted.apply(False, "fixed", "user:alice", "manual", 8)
    assert result.changed and not result.quarantined
    assert not (state_dir / FLAG_FILE).exists()
    assert not NodeQuarantine(state_dir, "n1").is_quarantined()
    assert temp_files(state_dir) == []


async def test_repeat_is_idempotent_and_runs_no_hooks(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "env.jsonl"
    env_dump_hook(state_dir / "hooks" / "quarantine.d", "10-record", out)
    q = NodeQuarantine(state_dir, "n1")
    first = await q.apply(True, "r", "a", "auto", 3)
    again = await q.apply(True, "r", "a", "auto", 3)
    assert first.changed and first.hook_results == ("10-record: ok",)
    assert not again.changed and again.hook_results == ()
    # An operator takes the automatic quarantine over: the node's record follows
    # (and survives a restart), the hooks do not run again.
    later = await q.apply(True, "keep out: disk swap", "user:alice", "manual", 4)
    assert not later.changed and later.hook_results == ()
    restarted = NodeQuarantine(state_dir, "n1").state
    assert (restarted.reason, restarted.actor, restarted.source) == (
        "keep out: disk swap",
        "user:alice",
        "manual",
    )
    assert q.state.fence_revision == 4
    assert len(out.read_text().splitlines()) == 1


async def test_older_fence_revision_is_ignored(state_dir: Path) -> None:
    q = NodeQuarantine(state_dir, "n1")
    await q.apply(True, "r", "a", "manual", 10)
    stale = await q.apply(False, "late lift from an old leader", "a", "manual", 9)
    assert stale.stale and not stale.changed and stale.quarantined
    assert q.is_quarantined()
    assert NodeQuarantine(state_dir, "n1").state.fence_revision == 10
    lifted = await q.apply(False, "fixed", "a", "manual", 11)
    assert lifted.changed and not q.is_quarantined()


async def test_recovery_fences_share_the_newest_fence_with_quarantine(state_dir: Path) -> None:
    q = NodeQuarantine(state_dir, "n1")
    await q.admit_fence(0, "recovery terminate-orphans")  # unfenced: neither kept nor refused
    assert q.state.fence_revision == 0
    await q.admit_fence(12, "recovery terminate-orphans")
    assert NodeQuarantine(state_dir, "n1").state.fence_revision == 12  # persisted
    await q.admit_fence(12, "recovery terminate-orphans")  # the same leader again
    with pytest.raises(StaleFence, match="recovery remove-stale-locks refused: fence revision 9"):
        await q.admit_fence(9, "recovery remove-stale-locks")
    # A quarantine decision from before the recovery's leader is stale too ...
    stale = await q.apply(True, "old leader", "automation", "auto", 11)
    assert stale.stale and not q.is_quarantined()
    # ... and one from a newer leader raises the fence recoveries are held to.
    await q.apply(True, "new leader", "operator:alice", "manual", 15)
    with pytest.raises(StaleFence):
        await q.admit_fence(12, "recovery terminate-orphans")
    assert q.state.quarantined and q.state.fence_revision == 15


async def test_since_comes_from_the_controller_record(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "env.jsonl"
    env_dump_hook(state_dir / "hooks" / "quarantine.d", "10-record", out)
    q = NodeQuarantine(state_dir, "n1")
    await q.apply(True, "r", "a", "manual", 1, since="2024-06-01T10:00:00+00:00")
    assert q.state.since == "2024-06-01T10:00:00+00:00"
    assert json.loads(out.read_text())["NOVAOPS_SINCE"] == "2024-06-01T10:00:00+00:00"


async def test_hooks_run_without_a_shell_in_name_order_with_the_env(
    state_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "env.jsonl"
    hooks = state_dir / "hooks"
    env_dump_hook(hooks / "quarantine.d", "20-second", out)
    env_dump_hook(hooks / "quarantine.d", "10-first", out)
    env_dump_hook(hooks / "unquarantine.d", "10-lift", out)
    # A name a shell would expand: run literally, so it must not be interpreted.
    marker = tmp_path / "pwned"
    env_dump_hook(hooks / "quarantine.d", f"30-$(touch {marker.name})", out)
    (hooks / "quarantine.d" / ".hidden").write_text("ignored")

    os.environ["NOVAOPS_TEST_SECRET"] = "must-not-leak"
    try:
        q = NodeQuarantine(state_dir, "n1")
        result = await q.apply(True, "bad disk; rm -rf /", "user:alice", "manual", 1)
    finally:
        del os.environ["NOVAOPS_TEST_SECRET"]
    assert result.hook_results == (
        "10-first: ok",
        "20-second: ok",
        f"30-$(touch {marker.name}): ok",
    )
    assert not marker.exists()
    envs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(envs) == 3
    for env in envs:
        assert env["NOVAOPS_NODE"] == "n1"
        assert env["NOVAOPS_REASON"] == "bad disk; rm -rf /"
        assert env["NOVAOPS_ACTOR"] == "user:alice"
        assert env["NOVAOPS_SOURCE"] == "manual"
        assert env["NOVAOPS_ACTION"] == "quarantine"
        assert env["NOVAOPS_SINCE"] == q.state.since != ""
        assert "NOVAOPS_TEST_SECRET" not in env

    result = await q.apply(False, "clean", "automation", "auto", 2)
    assert result.hook_results == ("10-lift: ok",)
    lift_env = json.loads(out.read_text().splitlines()[-1])
    assert lift_env["NOVAOPS_ACTION"] == "unquarantine"
    assert lift_env["NOVAOPS_SOURCE"] == "auto"


async def test_failing_and_timing_out_hooks_are_reported_and_do_not_stop_others(
    state_dir: Path, tmp_path: Path
) -> None:
    hooks = state_dir / "hooks" / "quarantine.d"
    write_hook(
        hooks,
        "10-fails",
        "import sys\nprint('first', file=sys.stderr)\n"
        "print('scheduler refused: host unknown', file=sys.stderr)\nsys.exit(3)\n",
    )
    write_hook(hooks, "20-hangs", "import time\ntime.sleep(60)\n")
    done = tmp_path / "ran"
    write_hook(hooks, "30-runs", f"open({str(done)!r}, 'w').close()\n")
    q = NodeQuarantine(state_dir, "n1", hook_timeout=0.5)
    result = await q.apply(True, "r", "a", "manual", 1)
    assert result.changed
    assert result.hook_results == (
        "10-fails: exit 3: scheduler refused: host unknown",
        "20-hangs: timed out after 0.5s",
        "30-runs: ok",
    )
    assert done.exists()
    assert q.is_quarantined()  # hook failures never undo enforcement


async def test_unsafe_hooks_are_refused(state_dir: Path, tmp_path: Path) -> None:
    hooks = state_dir / "hooks" / "quarantine.d"
    ran = tmp_path / "ran"
    body = f"open({str(ran)!r}, 'a').write('x')\n"
    write_hook(hooks, "10-not-executable", body, mode=0o644)
    world = write_hook(hooks, "20-world-writable", body, mode=0o755)
    world.chmod(0o757)
    write_hook(hooks, "30-good", body)
    (hooks / "40-link").symlink_to(hooks / "30-good")
    (hooks / "50-dir").mkdir()
    q = NodeQuarantine(state_dir, "n1")
    result = await q.apply(True, "r", "a", "manual", 1)
    assert result.hook_results == (
        "10-not-executable: refused: not executable",
        "20-world-writable: refused: group- or world-writable",
        "30-good: ok",
        "40-link: refused: a symbolic link (hooks must be regular files)",
        "50-dir: refused: not a regular file",
    )
    assert ran.read_text() == "x"


async def test_world_writable_hooks_folder_runs_nothing(state_dir: Path, tmp_path: Path) -> None:
    hooks = state_dir / "hooks" / "quarantine.d"
    ran = tmp_path / "ran"
    write_hook(hooks, "10-good", f"open({str(ran)!r}, 'w').close()\n")
    hooks.chmod(0o777)
    result = await NodeQuarantine(state_dir, "n1").apply(True, "r", "a", "manual", 1)
    assert result.hook_results == (
        "10-good: refused: hooks folder " + str(hooks) + " is world-writable",
    )
    assert not ran.exists()


def test_hook_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    hook = write_hook(tmp_path, "hook", "pass\n")
    os.chown(hook, 65534, 65534)
    assert "owned by uid 65534" in hook_refusal(hook)


async def test_hooks_pending_after_a_crash_run_on_the_retry(
    state_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "env.jsonl"
    env_dump_hook(state_dir / "hooks" / "quarantine.d", "10-record", out)
    # What an executor killed between persisting a change and finishing its hooks leaves.
    write_state(
        state_dir,
        json.dumps(
            {
                "version": 1,
                "node": "n1",
                "quarantined": True,
                "reason": "r",
                "actor": "a",
                "source": "manual",
                "fence_revision": 5,
                "since": "2024-06-01T00:00:00+00:00",
                "hooks_pending": True,
            }
        ),
    )
    q = NodeQuarantine(state_dir, "n1")
    assert q.is_quarantined() and (state_dir / FLAG_FILE).exists()
    retry = await q.apply(True, "r", "a", "manual", 5)
    assert not retry.changed and retry.hook_results == ("10-record: ok",)
    assert not NodeQuarantine(state_dir, "n1").state.hooks_pending


def test_corrupt_state_fails_closed(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    (state_dir / STATE_FILE).write_text("{not json")
    q = NodeQuarantine(state_dir, "n1")
    assert q.is_quarantined()
    assert "unreadable" in q.state.reason


async def test_guard_refuses_while_quarantined(state_dir: Path) -> None:
    q = NodeQuarantine(state_dir, "n1")
    q.refuse_if_quarantined("StartDomain")  # not quarantined: allowed
    await q.apply(True, "disk errors", "user:alice", "manual", 1)
    with pytest.raises(NodeQuarantined, match="StartDomain refused: node n1 is quarantined"):
        q.refuse_if_quarantined("StartDomain")
    await q.apply(False, "ok", "user:alice", "manual", 2)
    q.refuse_if_quarantined("StartDomain")


async def test_source_is_validated(state_dir: Path) -> None:
    assert source_from_proto(common_pb2.QUARANTINE_SOURCE_AUTO) == "auto"
    assert source_from_proto(common_pb2.QUARANTINE_SOURCE_MANUAL) == "manual"
    with pytest.raises(ValueError):
        source_from_proto(common_pb2.QUARANTINE_SOURCE_UNSPECIFIED)
    with pytest.raises(ValueError):
        await NodeQuarantine(state_dir, "n1").apply(True, "r", "a", "cron", 1)
