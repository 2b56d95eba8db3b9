"""Identifier families' numbering, and the host's own names found as whole words.

The families (their order is the precedence on overlapping matches) are shared by
:mod:`novaops.client.bundle.identifiers`, whose detector matches every kind, and
the known-name matchers here: the host's user and host names (one trie of both,
scanned in C over translated text) and the node's own names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# ------------------------------------------------------------------ the families

# Family order = precedence on overlaps of equal start and length.
_F_KNOWN_USER, _F_KNOWN_HOST, _F_NODE, _F_URL_USER, _F_HOME, _F_USER_KV = range(6)
_F_FOR_USER, _F_SSH_USER, _F_EMAIL, _F_MAC, _F_IPV6, _F_IPV4, _F_FQDN = range(6, 13)
_F_SUDO_USER = 13  # sudo's "sudo: NAME : TTY=..." and PAM's "by NAME(uid=N)"
_FAMILIES = 14
_USER_FAMILIES = frozenset(
    {_F_KNOWN_USER, _F_URL_USER, _F_HOME, _F_USER_KV, _F_FOR_USER, _F_SSH_USER, _F_SUDO_USER}
)


def _trie(words: Iterable[str]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return root


def _trie_source(node: dict[str, Any]) -> str:
    # Longer continuations first, then the end of a word: the same preference as
    # an alternation of the words sorted longest first.
    alternatives = [re.escape(char) + _trie_source(node[char]) for char in sorted(node) if char]
    if "" in node:
        alternatives.append("")
    if len(alternatives) == 1:
        return alternatives[0]
    return "(?:" + "|".join(alternatives) + ")"


_NAME_BOUNDARY = bytes(c for c in range(128) if not re.match(r"[\w./-]", chr(c)))
_BOUNDARY_TO_SPACE = bytes.maketrans(_NAME_BOUNDARY, b" " * len(_NAME_BOUNDARY))

_Span = tuple[int, int, int, str]  # start, -end, family, value (sorts as the rule says)


def _known_names_re(names: Iterable[str], flags: int = 0) -> re.Pattern[str] | None:
    """Whole-word names (not inside a path, a dotted word or a longer name), as a trie."""
    trie = _trie(names)
    if not trie:
        return None
    return re.compile(rf"(?<![\w./-])(?P<v>{_trie_source(trie)})(?![\w/-])", flags)


def _known_names_scan_re(names: Iterable[str]) -> re.Pattern[bytes] | None:
    """The same names, found fast in ASCII text translated by _BOUNDARY_TO_SPACE.

    Every character a name may follow is a space there, so the engine skips to
    a literal space (in C, at memory speed) instead of testing a character
    class at every position, and a look-ahead for a first character rejects
    most spaces before the trie. A name at the very start of the text has no
    character before it and is looked for separately (:meth:`_KnownNames.scan`).
    """
    trie = _trie(names)
    if not trie:
        return None
    firsts = "".join(re.escape(char) for char in sorted(trie))
    return re.compile(rf" (?=[{firsts}])(?P<v>{_trie_source(trie)})(?![\w/-])".encode())


def _node_names_res(names: Iterable[str], flags: int = 0) -> list[re.Pattern[str]]:
    """The node's names anywhere but inside a longer word of letters and digits.

    Unlike other known names they are found in paths, file and member names and
    VM names too (``/srv/compute-07/``, ``compute-07-vm1``): a node name is not
    needed to read a bundle, whose structure gives it. One pattern per first
    character, starting with the names' common prefix (a literal the engine
    skips to) and looking behind it for the character before.
    """
    by_first: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        by_first.setdefault(name[0], []).append(name)
    patterns = []
    for group in by_first.values():
        prefix = group[0]
        for name in group[1:]:
            while not name.startswith(prefix):
                prefix = prefix[:-1]
        rest = _trie_source(_trie(name[len(prefix) :] for name in group))
        literal = re.escape(prefix)
        patterns.append(
            re.compile(rf"(?P<v>{literal}(?<![A-Za-z0-9]{literal}){rest})(?![A-Za-z0-9])", flags)
        )
    return patterns


def _node_name_re(name: str) -> re.Pattern[str]:
    """name (lowercase, as written) where no other candidate can overlap it.

    Not after a character that lets an e-mail, URL user, dotted name, address
    or IPv6 zone run into it, and not before one that lets one of them, a
    longer user name or an IPv6 address begun inside the name ("compute-07::1")
    go on past it. Elsewhere the general scan handles it. Such a name holds a
    letter that is not a hex digit, no dot, and ends with a letter or digit,
    as its pseudonym ("host-" and 8 hex digits) does, so the text around it
    reads the same to every family.
    """
    literal = re.escape(name)
    return re.compile(rf"{literal}(?<![\w./%+:-]{literal})(?![\w/@.%+:-])")


class _KnownNames:
    """The host's user names (case as written) and host names (any case) as whole words.

    ``exact_users`` / ``exact_hosts`` are the definitions. :meth:`scan` finds
    the same in ASCII text with one pass of one trie of both over the lowercased
    text: a name holds no character a name may follow, so two names never
    overlap, and where the longest name at a position is neither a user (in its
    case) nor a host, the exact patterns are tried at that position.
    """

    def __init__(self, users: set[str], hosts: set[str]) -> None:
        self.users = frozenset(users)
        self.hosts = frozenset(hosts)
        self.exact_users = _known_names_re(users)
        self.exact_hosts = _known_names_re(hosts, re.IGNORECASE)
        names = {u.lower() for u in users} | self.hosts
        any_name = _known_names_re(names)
        fast = _known_names_scan_re(names)
        assert any_name is not None and fast is not None, "no names"
        self.any_name, self.fast = any_name, fast

    def scan(self, text: str, low: str, ascii_low: bytes, spans: list[_Span]) -> None:
        """Appends every match in ASCII text (low, ascii_low: text lowercased) to spans."""
        if (first := self.any_name.match(low, 0)) is not None:
            self._add(text, low, 0, first.end("v"), spans)
        append = spans.append
        users = self.users
        hosts = self.hosts
        for m in self.fast.finditer(ascii_low.translate(_BOUNDARY_TO_SPACE)):
            start, end = m.span(1)
            value = text[start:end]
            if value in hosts:  # host names are lowercase, and so mostly is the text
                if value in users:
                    append((start, -end, _F_KNOWN_USER, value))
                append((start, -end, _F_KNOWN_HOST, value))
            elif value in users and value.islower():
                append((start, -end, _F_KNOWN_USER, value))
            else:
                self._add(text, low, start, end, spans)

    def _add(self, text: str, low: str, start: int, end: int, spans: list[_Span]) -> None:
        value = text[start:end]
        user = value in self.users
        if user:
            spans.append((start, -end, _F_KNOWN_USER, value))
        if low[start:end] in self.hosts:
            spans.append((start, -end, _F_KNOWN_HOST, value))
        elif not user:
            # Only a user in another case: a shorter name may still start here.
            for family, pattern in (
                (_F_KNOWN_USER, self.exact_users),
                (_F_KNOWN_HOST, self.exact_hosts),
            ):
                if pattern is not None and (m := pattern.match(text, start)) is not None:
                    spans.append((start, -m.end("v"), family, m.group("v")))
