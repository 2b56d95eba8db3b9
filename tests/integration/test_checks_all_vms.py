"""``Diagnose(all_vms)``: every domain of a node checked concurrently, per domain results."""

from __future__ import annotations

from novaops.executor.checks.model import Status
from novaops.executor.checks.runner import DiagnoseTarget, TargetKind, run_diagnose
from novaops.executor.checks.sources import CheckSources
from novaops.v1 import executor_pb2

from .test_checks_vm_host import node  # noqa: F401 (the fixture)


async def test_all_vms_checks_every_domain_of_the_node(
    node: tuple[CheckSources, dict[str, int]],  # noqa: F811
) -> None:
    sources, _ = node
    target = DiagnoseTarget.from_request(executor_pb2.DiagnoseRequest(all_vms=True))
    assert target.kind is TargetKind.ALL_VMS
    results = [r async for r in run_diagnose(target, sources)]
    names = [r.name for r in await sources.domains.list_domains()]
    assert {r.target for r in results} == set(names)
    for name in names:  # each domain's results arrive together, as one vm diagnosis
        ids = [r.check_id for r in results if r.target == name]
        assert ids[0] == "vm.domain" and "vm.disk" in ids
        positions = [i for i, r in enumerate(results) if r.target == name]
        assert positions == list(range(positions[0], positions[0] + len(positions)))
    by_target = {(r.target, r.check_id): r for r in results}
    assert by_target[("db-1", "vm.domain")].status is Status.FAIL
    assert by_target[("web-1", "vm.domain")].status is Status.OK
