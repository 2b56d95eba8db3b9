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
* Lines are separated by ``\n`` only (a lone ``\r`` or form feed is not a line end).

How it is fast: text is redacted in blocks of many lines (``block_size`` bytes
from a stream). The detectors' line gates pick the few lines of a block that can
hold a secret (or an identifier of one family) with regexes that start with a
literal, run over the whole block; only those lines are matched and rewritten,
and replacements are spliced into the block. Pseudonyms and classifications are
cached per value.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from novaops.client.bundle.detectors import (
    PEM_BEGIN_RE,
    PEM_END_RE,
    Hit,
    IdentifierDetector,
    find_secrets_in,
    marker,
)
from novaops.client.bundle.pseudonyms import PseudonymMaps

DEFAULT_MAX_LINE = 1024 * 1024
DEFAULT_BLOCK_SIZE = 1024 * 1024
_ENCODING = "utf-8"
# surrogateescape round-trips bytes that are not UTF-8, so binary noise in a log
# survives redaction byte for byte instead of turning into U+FFFD.
_ERRORS = "surrogateescape"
_PEM_HINT = "-----"


class Redactor:
    """Redaction of one bundle.

    scrub: also pseudonymize identifiers. key: the bundle's scrub key (HMAC key
    of the pseudonyms); an empty key with scrub on gets a random one, so the
    pseudonyms are consistent on this node only. known_users / known_hosts:
    literal names from the host (see :func:`host_identifiers`), found wherever
    they appear as whole words; system_users: accounts never pseudonymized;
    node_names: the node's own names (node name, hostname, FQDN, short forms),
    pseudonymized as host names wherever they appear as whole words.
    """

    def __init__(
        self,
        *,
        scrub: bool,
        key: bytes = b"",
        known_users: Iterable[str] = (),
        known_hosts: Iterable[str] = (),
        system_users: Iterable[str] = (),
        node_names: Iterable[str] = (),
        max_line: int = DEFAULT_MAX_LINE,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> None:
        self.scrub = scrub
        self._maps = PseudonymMaps(key or os.urandom(32))
        self._identifiers = (
            IdentifierDetector(
                known_users=known_users,
                known_hosts=known_hosts,
                extra_exempt_users=system_users,
                node_names=node_names,
            )
            if scrub
            else None
        )
        self._counts: Counter[str] = Counter()
        self._max_line = max_line
        self._block_size = max(block_size, 1)

    def counts(self) -> dict[str, int]:
        """Replacements made so far, per kind (never values)."""
        return dict(sorted(self._counts.items()))

    def add_counts(self, counts: dict[str, int]) -> None:
        """Adds counts made elsewhere for this bundle (a worker process)."""
        self._counts.update(counts)

    def mapping(self) -> dict[str, dict[str, str]]:
        """kind -> {original: pseudonym} of every identifier replaced so far."""
        return self._maps.as_dict()

    def pseudonym(self, kind: str, value: str) -> str:
        """The pseudonym of value as an identifier of kind (recorded in :meth:`mapping`)."""
        return self._maps.pseudonym(kind, value)

    def redact_text(self, text: str) -> str:
        """text with secrets (and, with scrub, identifiers) replaced."""
        return self._redact_block(text, _PemState())

    def redact_lines(self, lines: Iterable[str]) -> Iterator[str]:
        """Redacts a stream of lines (line endings kept), lazily, one at a time."""
        pem = _PemState()
        for line in lines:
            out = self._redact_block(line, pem)
            if out:
                yield out

    def redact_line(self, line: str) -> str:
        """One line (no PEM state kept across calls)."""
        return self._redact_block(line, _PemState())

    def redact_stream(self, source: BinaryIO, sink: BinaryIO) -> int:
        """Copies source to sink redacted, block by block; returns bytes written."""
        written = 0
        pem = _PemState()
        pending = b""
        while True:
            data = source.read(self._block_size)
            if data:
                pending += data
                cut = pending.rfind(b"\n") + 1
                if cut == 0:
                    if len(pending) < self._max_line:
                        continue
                    cut = self._max_line  # a very long line: redacted in pieces
                block, pending = pending[:cut], pending[cut:]
            elif pending:
                block, pending = pending, b""
            else:
                return written
            out = self._redact_block(block.decode(_ENCODING, _ERRORS), pem)
            encoded = out.encode(_ENCODING, _ERRORS)
            sink.write(encoded)
            written += len(encoded)

    def redact_bytes(self, data: bytes) -> bytes:
        return self.redact_text(data.decode(_ENCODING, _ERRORS)).encode(_ENCODING, _ERRORS)

    # ---------------------------------------------------------------- internals

    def _redact_block(self, text: str, pem: _PemState) -> str:
        if not pem.open and _PEM_HINT not in text:
            return self._redact_lines_block(text)
        # Private key blocks span lines: walk this block line by line, handing the
        # runs of ordinary lines between key blocks to the block redactor.
        out: list[str] = []
        run: list[str] = []
        for line in text.splitlines(keepends=True) if "\n" in text else [text]:
            if pem.open:
                end = PEM_END_RE.search(line)
                if end is None:
                    continue
                pem.open = False
                # The block's text is gone; what follows END on that line stays.
                line = line[end.end() :]
                if not line.strip():
                    continue
            begin = PEM_BEGIN_RE.search(line) if _PEM_HINT in line else None
            if begin is not None and PEM_END_RE.search(line, begin.end()) is None:
                pem.open = True
                self._counts["private_key"] += 1
                if run:
                    out.append(self._redact_lines_block("".join(run)))
                    run = []
                out.append(self._redact_lines_block(line[: begin.start()]))
                out.append(marker("private_key") + "\n")
                continue
            run.append(line)
        if run:
            out.append(self._redact_lines_block("".join(run)))
        return "".join(out)

    def _redact_lines_block(self, text: str) -> str:
        if not text:
            return text
        low = text.lower()
        hits = find_secrets_in(text, low)
        if hits:
            same_length = len(low) == len(text)
            text = _splice(text, hits, marker)
            low = _splice(low, hits, _lower_marker) if same_length else text.lower()
            self._counts.update(hit.kind for hit in hits)
        if self._identifiers is not None:
            text, kinds = self._identifiers.substitute(text, self._maps.pseudonym, low)
            self._counts.update(kinds)
        return text


def _splice(text: str, hits: list[Hit], replacement: Callable[[str], str]) -> str:
    """text with each hit replaced by replacement(kind)."""
    pieces: list[str] = []
    position = 0
    for hit in hits:
        pieces.append(text[position : hit.start])
        pieces.append(replacement(hit.kind))
        position = hit.end
    pieces.append(text[position:])
    return "".join(pieces)


def _lower_marker(kind: str) -> str:
    # A marker as it reads in the lowercased copy of the text.
    return marker(kind).lower()


class _PemState:
    """Whether a private key block is open (its lines are being dropped)."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = False
