"""A scrubbed bundle names a failed node by its pseudonym, as its archive would be."""

from __future__ import annotations

from novaops.client.bundle.format import BundleRequestInfo
from novaops.client.bundle.pseudonyms import PseudonymMaps
from novaops.controller.fleet import _bundle_error_naming
from novaops.v1 import common_pb2, executor_pb2

KEY = b"k" * 32


def test_failed_node_is_named_by_its_pseudonym_when_scrubbed() -> None:
    error = common_pb2.NodeError(
        node="compute-07",
        kind=common_pb2.NODE_ERROR_KIND_UNREACHABLE,
        message="node compute-07 down",
    )
    scrubbed = _bundle_error_naming(executor_pb2.CollectBundleRequest(scrub=True, scrub_key=KEY))
    named = scrubbed(error)
    pseudonym = PseudonymMaps(KEY).pseudonym("hostname", "compute-07")
    assert named.node == pseudonym and pseudonym.startswith("host-")
    assert named.message == f"node {pseudonym} down" and "compute-07" not in named.message
    assert named.kind == error.kind
    plain = _bundle_error_naming(executor_pb2.CollectBundleRequest())
    assert plain(error) is error


def test_scrubbed_manifest_request_keeps_no_node_names() -> None:
    doc = BundleRequestInfo(scrub=True, nodes=("compute-07",)).to_json()
    assert doc["nodes"] == [] and doc["nodes_requested"] == 1
    assert BundleRequestInfo(nodes=("compute-07",)).to_json()["nodes"] == ["compute-07"]
