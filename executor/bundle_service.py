"""CollectBundle on the executor: the node bundle, redacted here, streamed in chunks.

The builder (novaops.executor.bundle) does the collecting and redaction; this
module gives it the node's live sources (libvirt, diagnostics, metrics) and
turns its byte stream into BundleChunk messages: a header, data chunks produced
only as the caller consumes them (gRPC flow control is the back-pressure), and
a trailer with the checksum and redaction counts. With ``scrub`` every chunk's
``node`` is the node's pseudonym, as in its ``metadata.json``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY

from novaops.executor.bundle import (
    BundleOptions,
    BundleSources,
    InvalidBundleOptions,
    NodeBundleBuilder,
    spool_dir_for,
)
from novaops.executor.bundle.collectors import netlink_state
from novaops.executor.checks.model import CheckResult
from novaops.executor.checks.runner import DiagnoseTarget, run_diagnose, run_health_checks
from novaops.executor.libvirt_access import LibvirtUnavailable
from novaops.executor.metrics import BUNDLES_BUILT
from novaops.v1 import executor_pb2

if TYPE_CHECKING:
    from novaops.executor.server import ExecutorContext

log = logging.getLogger(__name__)

_STATE_NAMES = {
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}
_BRIDGE = re.compile(r"<source\s+bridge=['\"]([^'\"]+)['\"]")


class BundleRequestError(ValueError):
    """The bundle request is invalid; the message says what is expected."""


def check_json(result: CheckResult, kind: str) -> dict[str, Any]:
    return {
        "name": result.check_id,
        "kind": kind,
        "target": result.target,
        "status": str(result.status),
        "summary": result.summary,
        "evidence": dict(result.evidence),
        "remediation": [
            {"description": r.description, "command": r.command} for r in result.remediation
        ],
    }


class BundleService:
    """Builds and streams this node's bundle for one CollectBundle call at a time."""

    def __init__(self, ctx: ExecutorContext, executor_log: Path | None) -> None:
        self.ctx = ctx
        self.executor_log = executor_log

    # -- live sources ------------------------------------------------------------

    async def _libvirt_info(self) -> tuple[str, str]:
        info = await self.ctx.libvirt.hypervisor_info()
        caps = ""
        reader = getattr(self.ctx.libvirt, "capabilities_xml", None)
        if reader is not None:
            caps = await reader()
        return f"{info.libvirt_version} ({info.hypervisor})", caps

    async def _domains(self) -> list[tuple[str, str, str]]:
        reader = getattr(self.ctx.libvirt, "domain_xml", None)
        found = []
        for record in await self.ctx.libvirt.list_domains():
            xml = await reader(record.name) if reader is not None else ""
            found.append((record.name, _STATE_NAMES.get(record.state, "unknown"), xml))
        return found

    async def _diag_checks(self) -> list[dict[str, Any]]:
        checks = self.ctx.checks
        if checks is None:
            return []
        results = [check_json(r, "health") for r in await run_health_checks(checks)]
        async for result in run_diagnose(
            DiagnoseTarget.from_request(executor_pb2.DiagnoseRequest(host=True)), checks
        ):
            results.append(check_json(result, "host"))
        try:
            domains = await self.ctx.libvirt.list_domains()
        except LibvirtUnavailable:
            domains = []
        for domain in domains:
            target = DiagnoseTarget.from_request(executor_pb2.DiagnoseRequest(vm=domain.name))
            async for result in run_diagnose(target, checks):
                results.append(check_json(result, "vm"))
        return results

    def _netns(self) -> str | None:
        """The network namespace this node's links live in (None: the executor's own)."""
        return self.ctx.checks.netns if self.ctx.checks is not None else None

    async def _netlink(self) -> dict[str, Any]:
        # setns switches only the calling thread, so the dump runs on a worker
        # thread: never the event loop's, and never in a forked helper.
        return await asyncio.to_thread(netlink_state, self._netns())

    async def _diag_network(self) -> list[dict[str, Any]]:
        checks = self.ctx.checks
        if checks is None:
            return []
        bridges = sorted({b for _, _, xml in await self._domains() for b in _BRIDGE.findall(xml)})
        results = []
        for bridge in bridges:
            target = DiagnoseTarget.from_request(executor_pb2.DiagnoseRequest(network=bridge))
            async for result in run_diagnose(target, checks):
                results.append(check_json(result, "network"))
        return results

    # -- the stream ----------------------------------------------------------------

    def builder(self, request: executor_pb2.CollectBundleRequest) -> NodeBundleBuilder:
        """A builder for request; BundleRequestError when its options are invalid."""
        try:
            options = BundleOptions.from_request(self.ctx.node, request)
        except InvalidBundleOptions as exc:
            raise BundleRequestError(str(exc)) from None
        sources = BundleSources(
            host_root=self.ctx.host_root,
            novaops_version=self.ctx.version,
            executor_log=self.executor_log,
            registry=REGISTRY,
            libvirt_info=self._libvirt_info,
            domains=self._domains,
            diag_checks=self._diag_checks,
            diag_network=self._diag_network,
            # The node's namespace, or the real host's own; a simulated node
            # without a namespace is read from its host root's sys/class/net.
            netlink=(
                self._netlink
                if self._netns() is not None or self.ctx.host_root.is_system_root
                else None
            ),
            spool_dir=spool_dir_for(self.ctx.state_dir),
            clock=lambda: dt.datetime.now(dt.UTC),
        )
        return NodeBundleBuilder(options, sources)

    async def stream(
        self, request: executor_pb2.CollectBundleRequest, builder: NodeBundleBuilder
    ) -> AsyncIterator[executor_pb2.BundleChunk]:
        # Every chunk names the node as the archive will (its pseudonym with
        # scrub): the field leaves the node and the client names the node's
        # archive and manifest entry by it. Callers route by their own names.
        node = await asyncio.to_thread(lambda: builder.archive_node)
        yield executor_pb2.BundleChunk(
            node=node,
            header=executor_pb2.BundleHeader(format="tar", request_id=request.request_id),
        )
        offset = 0
        try:
            async for data in builder.stream():
                yield executor_pb2.BundleChunk(node=node, data=data, offset=offset)
                offset += len(data)
        except BaseException:
            BUNDLES_BUILT.labels("failed").inc()
            raise
        result = builder.result
        if result is None:  # the stream ended without a trailer: the builder failed
            BUNDLES_BUILT.labels("failed").inc()
            raise RuntimeError("bundle builder finished without a result")
        mapping = b""
        if request.return_map and result.pseudonym_map:
            mapping = json.dumps(result.pseudonym_map, sort_keys=True).encode()
        BUNDLES_BUILT.labels("ok").inc()
        log.info(
            "bundle %s streamed: %d bytes, sha256 %s, %d redactions",
            request.request_id or "-",
            result.size,
            result.sha256,
            sum(result.redactions.values()),
        )
        yield executor_pb2.BundleChunk(
            node=node,
            offset=offset,
            trailer=executor_pb2.BundleTrailer(
                sha256=result.sha256,
                size=result.size,
                redactions=result.redactions,
                pseudonym_map_json=mapping,
            ),
        )
