"""The executor follows the controller's stored quarantine state when it missed the
call, with the record's reason, actor, source and since, fenced by the leader."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from novaops.executor.quarantine import NodeQuarantine, StoredDecision, sync_with_controller
from novaops.executor.registration import stored_decision
from novaops.v1 import common_pb2, controller_pb2


async def test_sync_applies_only_a_difference(tmp_path: Path) -> None:
    node = NodeQuarantine(tmp_path, "node-1")
    assert await sync_with_controller(node, None, "ctl-0") is None
    assert await sync_with_controller(node, False, "ctl-0") is None
    applied = await sync_with_controller(node, True, "ctl-0")
    assert applied is not None and applied.changed and node.is_quarantined()
    # Without the record (an older controller) the actor names the controller.
    assert node.state.actor == "controller:ctl-0"
    assert await sync_with_controller(node, True, "ctl-0") is None
    lifted = await sync_with_controller(node, False, "ctl-1")
    assert lifted is not None and not node.is_quarantined()


async def test_sync_keeps_the_last_fence(tmp_path: Path) -> None:
    node = NodeQuarantine(tmp_path, "node-1")
    await node.apply(True, "disk", "admin:admin", "manual", 7)
    await sync_with_controller(node, False, "ctl-0")
    assert not node.is_quarantined()
    # An older decision is still refused after a sync.
    stale = await node.apply(True, "old", "admin:admin", "manual", 6)
    assert stale.stale and not node.is_quarantined()


def record_hook(folder: Path, out: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    hook = folder / "10-record"
    hook.write_text(
        f"#!{sys.executable}\nimport json, os\n"
        f"open({str(out)!r}, 'a').write(json.dumps(dict(os.environ)) + '\\n')\n"
    )
    hook.chmod(0o755)


async def test_hooks_from_a_heartbeat_get_the_record(tmp_path: Path) -> None:
    out = tmp_path / "env.jsonl"
    record_hook(tmp_path / "state/hooks/quarantine.d", out)
    record_hook(tmp_path / "state/hooks/unquarantine.d", out)
    node = NodeQuarantine(tmp_path / "state", "node-1")

    response = controller_pb2.HeartbeatResponse(known=True, quarantined=True, fence_revision=8)
    response.quarantine.reason = "bad DIMM"
    response.quarantine.actor = "operator:alice"
    response.quarantine.source = common_pb2.QUARANTINE_SOURCE_AUTO
    response.quarantine.since.FromSeconds(1_717_236_000)  # 2024-06-01T10:00:00Z
    decision = stored_decision(response)
    assert decision == StoredDecision(
        True, "bad DIMM", "operator:alice", "auto", "2024-06-01T10:00:00+00:00", 8
    )
    applied = await sync_with_controller(node, True, "ctl-0", decision)
    assert applied is not None and applied.changed
    env = json.loads(out.read_text().splitlines()[-1])
    assert env["NOVAOPS_REASON"] == "bad DIMM"
    assert env["NOVAOPS_ACTOR"] == "operator:alice"
    assert env["NOVAOPS_SOURCE"] == "auto"
    assert env["NOVAOPS_SINCE"] == "2024-06-01T10:00:00+00:00"
    assert env["NOVAOPS_FENCE_REVISION"] == "8"

    released = controller_pb2.HeartbeatResponse(known=True, quarantined=False, fence_revision=9)
    released.released.action = "unquarantine"
    released.released.reason = "DIMM replaced"
    released.released.actor = "operator:bob"
    released.released.source = common_pb2.QUARANTINE_SOURCE_MANUAL
    lifted = await sync_with_controller(node, False, "ctl-0", stored_decision(released))
    assert lifted is not None and lifted.changed and not node.is_quarantined()
    env = json.loads(out.read_text().splitlines()[-1])
    assert (env["NOVAOPS_ACTION"], env["NOVAOPS_REASON"]) == ("unquarantine", "DIMM replaced")
    assert (env["NOVAOPS_ACTOR"], env["NOVAOPS_SOURCE"]) == ("operator:bob", "manual")


async def test_a_heartbeat_decision_from_an_old_leader_is_stale(tmp_path: Path) -> None:
    node = NodeQuarantine(tmp_path, "node-1")
    await node.admit_fence(20, "recovery terminate-orphans")
    old = StoredDecision(True, "old", "automation", "auto", "", fence_revision=19)
    result = await sync_with_controller(node, True, "ctl-0", old)
    assert result is not None and result.stale and not node.is_quarantined()
