"""The executor follows the controller's stored quarantine state when it missed the call."""

from __future__ import annotations

from pathlib import Path

from novaops.executor.quarantine import NodeQuarantine, sync_with_controller


async def test_sync_applies_only_a_difference(tmp_path: Path) -> None:
    node = NodeQuarantine(tmp_path, "node-1")
    assert await sync_with_controller(node, None, "ctl-0") is None
    assert await sync_with_controller(node, False, "ctl-0") is None
    applied = await sync_with_controller(node, True, "ctl-0")
    assert applied is not None and applied.changed and node.is_quarantined()
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
