"""The Redactor: applies the detectors to text and replaces what they find.

Secrets are always replaced by a fixed marker ``[REDACTED:<kind>]``; with scrub
on, identifiers are replaced by pseudonyms from :class:`PseudonymMaps`.

What callers may rely on:

* Idempotent: redacting already redacted text returns it unchanged and counts
  nothing (markers, pseudonyms and exempt values are not detected).
* One Redactor is one bundle: its pseudonym maps and counts accumulate over
  every file it redacts; ``counts()`` never contains values, ``mapping()`` does
  (it is the private --keep-map content and must not go into the archive).
* PEM private key blocks spanning lines are removed whole within one call of
  :meth:`redact_text` or one :meth:`redact_lines` / :meth:`redact_stream`
  stream; an unterminated block removes everything to the end of the stream.
* Lines longer than ``max_line`` characters are redacted in pieces; a secret
  straddling a piece boundary may then be missed (documented in ADR 0003).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from novaops.client.bundle.detectors import (
    PEM_BEGIN_RE,
    PEM_END_RE,
    Hit,
    IdentifierDetector,
    find_secrets,
    marker,
)
from novaops.executor.redact.pseudonyms import PseudonymMaps

DEFAULT_MAX_LINE = 1024 * 1024
_ENCODING = "utf-8"
# surrogateescape round-trips bytes that are not UTF-8, so binary noise in a log
# survives redaction byte for byte instead of turning into U+FFFD.
_ERRORS = "surrogateescape"


class Redactor:
    """Redaction of one bundle.

    scrub: also pseudonymize identifiers. key: the bundle's scrub key (HMAC key
    of the pseudonyms); an empty key with scrub on gets a random one, so the
    pseudonyms are consistent on this node only. known_users / known_hosts:
    literal names from the host (see :func:`host_identifiers`), found wherever
    they appear as whole words; system_users: accounts never pseudonymized.
    """

    def __init__(
        self,
        *,
        scrub: bool,
        key: bytes = b"",
        known_users: Iterable[str] = (),
        known_hosts: Iterable[str] = (),
        system_users: Iterable[str] = (),
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self.scrub = scrub
        self._maps = PseudonymMaps(key or os.urandom(32))
        self._identifiers = (
            IdentifierDetector(
                known_users=known_users,
                known_hosts=known_hosts,
                extra_exempt_users=system_users,
            )
            if scrub
            else None
        )
        self._counts: Counter[str] = Counter()
        self._max_line = max_line

    def counts(self) -> dict[str, int]:
        """Replacements made so far, per kind (never values)."""
        return dict(sorted(self._counts.items()))

    def mapping(self) -> dict[str, dict[str, str]]:
        """kind -> {original: pseudonym} of every identifier replaced so far."""
        return self._maps.as_dict()

    def redact_text(self, text: str) -> str:
        """text with secrets (and, with scrub, identifiers) replaced."""
        return "".join(self.redact_lines(text.splitlines(keepends=True)))

    def redact_lines(self, lines: Iterable[str]) -> Iterator[str]:
        """Redacts a stream of lines (line endings kept), lazily, one at a time."""
        in_pem = False
        for line in lines:
            if in_pem:
                end = PEM_END_RE.search(line)
                if end is None:
                    continue
                in_pem = False
                # The block's text is gone; what follows END on that line stays.
                line = line[end.end() :]
                if not line.strip():
                    continue
            begin = PEM_BEGIN_RE.search(line)
            if begin is not None and PEM_END_RE.search(line, begin.end()) is None:
                in_pem = True
                self._counts["private_key"] += 1
                yield line[: begin.start()] + marker("private_key") + "\n"
                continue
            yield self.redact_line(line)

    def redact_line(self, line: str) -> str:
        """One line (no PEM state kept across calls)."""
        line = self._replace(line, find_secrets(line), pseudonymize=False)
        if self._identifiers is not None:
            line = self._replace(line, self._identifiers.find(line), pseudonymize=True)
        return line

    def redact_stream(self, source: BinaryIO, sink: BinaryIO) -> int:
        """Copies source to sink redacted, line by line; returns bytes written."""
        written = 0
        for line in self.redact_lines(self._decoded_lines(source)):
            data = line.encode(_ENCODING, _ERRORS)
            sink.write(data)
            written += len(data)
        return written

    def redact_bytes(self, data: bytes) -> bytes:
        return self.redact_text(data.decode(_ENCODING, _ERRORS)).encode(_ENCODING, _ERRORS)

    def _decoded_lines(self, source: BinaryIO) -> Iterator[str]:
        while True:
            raw = source.readline(self._max_line)
            if not raw:
                return
            yield raw.decode(_ENCODING, _ERRORS)

    def _replace(self, line: str, hits: list[Hit], *, pseudonymize: bool) -> str:
        if not hits:
            return line
        pieces: list[str] = []
        position = 0
        for hit in hits:
            pieces.append(line[position : hit.start])
            value = line[hit.start : hit.end]
            if pseudonymize:
                pieces.append(self._maps.pseudonym(hit.kind, value))
            else:
                pieces.append(marker(hit.kind))
            self._counts[hit.kind] += 1
            position = hit.end
        pieces.append(line[position:])
        return "".join(pieces)
