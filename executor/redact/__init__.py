"""Redaction at the source: secrets always, identifiers with scrub (ADR 0003).

Public API: :class:`Redactor`, :class:`PseudonymMaps`, :func:`host_identifiers`,
:class:`HostIdentifiers` and :func:`name_forms`. The detectors themselves are shared with the
offline validator in :mod:`novaops.client.bundle.detectors`.
"""

from __future__ import annotations

from novaops.client.bundle.pseudonyms import PseudonymMaps
from novaops.executor.redact.hostids import HostIdentifiers, host_identifiers, name_forms
from novaops.executor.redact.redactor import Redactor

__all__ = ["HostIdentifiers", "PseudonymMaps", "Redactor", "host_identifiers", "name_forms"]
