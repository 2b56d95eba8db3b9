"""Generated protobuf code is current, and every public RPC is accounted for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from novaops.client.api import NovaopsClient
from novaops.v1 import controller_pb2

ROOT = Path(__file__).resolve().parents[2]

# Every RPC of the public services and the client method that wraps it.
WRAPPED = {
    "ClusterService.ListNodes": "list_nodes",
    "ClusterService.GetClusterStatus": "cluster_status",
    "ClusterService.GetLeader": "leader",
    "ClusterService.TransferLeadership": "transfer_leadership",
    "ClusterService.WatchEvents": "events",
    "ClusterService.RemoveNode": "remove_node",
    "FleetService.GetHealth": "health",
    "FleetService.Diagnose": "diagnose",
    "FleetService.Recover": "recover",
    "FleetService.ListVms": "list_vms",
    "FleetService.GetVmStats": "vm_stats",
    "FleetService.CollectBundle": "collect_bundle",
    "QuarantineService.Quarantine": "quarantine",
    "QuarantineService.Unquarantine": "unquarantine",
    "QuarantineService.ListQuarantines": "list_quarantines",
    "QuarantineService.GetQuarantineHistory": "quarantine_history",
    "AutomationService.GetAutomationStatus": "automation_status",
    "AutomationService.PauseAutomation": "automation_command",
    "AutomationService.ResumeAutomation": "automation_command",
    "AutomationService.ResetBreaker": "automation_command",
}


def test_generated_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_every_public_rpc_has_a_client_wrapper() -> None:
    public = {"ClusterService", "FleetService", "QuarantineService", "AutomationService"}
    rpcs = {
        f"{service.name}.{method.name}"
        for service in controller_pb2.DESCRIPTOR.services_by_name.values()
        if service.name in public
        for method in service.methods
    }
    assert rpcs == set(WRAPPED)
    for rpc, attribute in WRAPPED.items():
        assert callable(getattr(NovaopsClient, attribute)), rpc
