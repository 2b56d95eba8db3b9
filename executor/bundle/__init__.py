"""The node support bundle: collectors, redaction at the source, chunked tar stream.

Public API: :class:`NodeBundleBuilder`, :class:`BundleOptions`,
:class:`BundleSources`, :class:`BundleResult`, :class:`InvalidBundleOptions`,
and for custom collectors :class:`CollectorSpec`, :class:`CollectorContext`,
:class:`Member`. The archive layout is in docs/bundle-format.md.
"""

from __future__ import annotations

from novaops.executor.bundle.builder import (
    BundleOptions,
    BundleResult,
    BundleSources,
    CollectorContext,
    CollectorSpec,
    InvalidBundleOptions,
    Member,
    NodeBundleBuilder,
    spool_dir_for,
)

__all__ = [
    "BundleOptions",
    "BundleResult",
    "BundleSources",
    "CollectorContext",
    "CollectorSpec",
    "InvalidBundleOptions",
    "Member",
    "NodeBundleBuilder",
    "spool_dir_for",
]
