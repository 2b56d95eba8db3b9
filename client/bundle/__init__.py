"""Support bundles on the caller's side: the combined file and the offline tools.

Importing this package imports neither grpc nor the executor. Public API:

* :class:`BundleWriter`, :func:`apply_fleet_message`, :class:`BundleSummary`
* :func:`validate` -> list of :class:`Finding`; :func:`extract`; :func:`inspect`
  -> :class:`InspectReport`; :func:`purge`
* :class:`BundleRequestInfo`, :class:`Limits`, and the errors in
  :mod:`novaops.client.bundle.errors`.
"""

from __future__ import annotations

from novaops.client.bundle.archive import Limits, compression_for
from novaops.client.bundle.errors import (
    BundleBusy,
    BundleError,
    BundleFormatError,
    ChecksumMismatch,
    DestinationExists,
    UnsafeArchive,
    UnsupportedOutput,
)
from novaops.client.bundle.extract import extract
from novaops.client.bundle.format import DEFAULT_OUTPUT, BundleRequestInfo, NodeEntry
from novaops.client.bundle.inspect import FailingCheck, InspectReport, NodeReport, inspect
from novaops.client.bundle.purge import purge
from novaops.client.bundle.validate import Finding, validate
from novaops.client.bundle.writer import BundleSummary, BundleWriter, apply_fleet_message

__all__ = [
    "DEFAULT_OUTPUT",
    "BundleBusy",
    "BundleError",
    "BundleFormatError",
    "BundleRequestInfo",
    "BundleSummary",
    "BundleWriter",
    "ChecksumMismatch",
    "DestinationExists",
    "FailingCheck",
    "Finding",
    "InspectReport",
    "Limits",
    "NodeEntry",
    "NodeReport",
    "UnsafeArchive",
    "UnsupportedOutput",
    "apply_fleet_message",
    "compression_for",
    "extract",
    "inspect",
    "purge",
    "validate",
]
