"""Identifiers (the ``--scrub`` kinds): their shapes, what is exempt, and the detector.

Half of the shared detector definitions; :mod:`novaops.client.bundle.detectors`
re-exports the public names (the executor's Redactor and the offline
``validate`` import them from there). Pure: stdlib ``re`` and ``ipaddress``.

What callers may rely on:

* :class:`IdentifierDetector` reports identifiers that are neither exempt
  (:func:`is_exempt`) nor pseudonyms (:func:`is_pseudonym`), in order and not
  overlapping. Where candidates of several families overlap, the one starting
  first wins, then the longer, then family order (known user and host names,
  contextual user names, e-mail, MAC, IPv6, IPv4, dotted names).
* The result for a block of whole lines is the result of each line, shifted:
  no identifier spans a line end.
* :meth:`IdentifierDetector.find_in` (the fast scan) finds exactly what
  :meth:`IdentifierDetector.reference_spans` (every family's own pattern over
  the whole text, written for clarity) finds; tests/unit/test_redact.py checks
  it on generated text.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any

from novaops.client.bundle.hits import Hit, lines_at
from novaops.client.bundle.known_names import (
    _F_EMAIL,
    _F_FOR_USER,
    _F_FQDN,
    _F_HOME,
    _F_IPV4,
    _F_IPV6,
    _F_KNOWN_HOST,
    _F_KNOWN_USER,
    _F_MAC,
    _F_NODE,
    _F_SSH_USER,
    _F_SUDO_USER,
    _F_URL_USER,
    _F_USER_KV,
    _FAMILIES,
    _USER_FAMILIES,
    _known_names_re,
    _KnownNames,
    _node_name_re,
    _node_names_res,
    _Span,
    _trie,
    _trie_source,
)
from novaops.client.bundle.runs import RunStart, first_octet_length

# Pseudonym shapes. The executor renders pseudonyms inside these ranges and the
# detectors treat anything inside them as already redacted. Each range is
# reserved, so a real host value almost never falls into it:
# 198.18.0.0/15 is for benchmarking (RFC 2544), 2001:db8::/32 for documentation
# (RFC 3849), 0a:4e:4f is a locally administered MAC prefix ("NO"), and the
# .example TLD is reserved (RFC 2606).
PSEUDO_IPV4_NET = ipaddress.IPv4Network("198.18.0.0/15")
PSEUDO_IPV6_NET = ipaddress.IPv6Network("2001:db8::/32")
PSEUDO_MAC_PREFIX = "0a:4e:4f"
PSEUDO_HEX_LEN = 8
PSEUDO_HOST_PREFIX = "host-"
PSEUDO_DOMAIN_PREFIX = "domain-"
PSEUDO_USER_PREFIX = "user-"
PSEUDO_TLD = "example"

IDENTIFIER_KINDS = frozenset({"ipv4", "ipv6", "mac", "hostname", "domain", "username", "email"})

# Top-level domains that make a dotted word a host name. A closed list: open
# matching (any ``a.b``) would turn every ``module.function`` and ``file.log``
# into a "domain".
_TLDS = (
    "com|net|org|edu|gov|mil|int|io|co|uk|de|fr|nl|eu|us|ca|au|jp|cn|ru|ch|se|be|at|pl|"
    "it|es|br|in|info|biz|cloud|dev|app|tech|online|site|xyz|"
    "local|lan|internal|intra|intranet|corp|home|localdomain|private|priv"
)
# Public project and vendor domains that identify software, not the customer.
_PUBLIC_DOMAINS = (
    "libvirt.org",
    "qemu.org",
    "qemu-project.org",
    "kernel.org",
    "debian.org",
    "ubuntu.com",
    "canonical.com",
    "redhat.com",
    "fedoraproject.org",
    "centos.org",
    "python.org",
    "openstack.org",
    "opendev.org",
    "launchpad.net",
    "github.com",
    "gitlab.com",
    "docker.io",
    "docker.com",
    "kubernetes.io",
    "k8s.io",
    "freedesktop.org",
    "gnu.org",
    "systemd.io",
    "example.com",
    "example.net",
    "example.org",
)
_RESERVED_TLDS = ("example", "test", "invalid", "localhost")
# Service and system accounts: not personal data, and useful when debugging.
SYSTEM_USERS = frozenset(
    {
        "root",
        "nobody",
        "daemon",
        "bin",
        "sys",
        "adm",
        "admin",
        "administrator",
        "nova",
        "qemu",
        "libvirt",
        "libvirt-qemu",
        "libvirt-dnsmasq",
        "www-data",
        "syslog",
        "messagebus",
        "sshd",
        "polkitd",
        "unknown",
        "none",
        "null",
        "invalid",
        "user",
        "guest",
        "ubuntu",
        "debian",
        "centos",
        "ec2-user",
        "cloud-user",
        "novaops",
    }
)
_LOCAL_HOSTS = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_USER = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}"
_PSEUDO_HEX = f"[0-9a-f]{{{PSEUDO_HEX_LEN}}}"
_PSEUDO_USER_RE = re.compile(PSEUDO_USER_PREFIX + _PSEUDO_HEX)
_PSEUDO_HOST_RE = re.compile(PSEUDO_HOST_PREFIX + _PSEUDO_HEX)
_MISSING: Any = object()
_CACHE_LIMIT = 65536


def normalize_mac(value: str) -> str:
    return value.lower().replace("-", ":")


def is_pseudonym(kind: str, value: str) -> bool:
    """True when value has the shape of a pseudonym of this kind."""
    try:
        if kind == "ipv4":
            return ipaddress.IPv4Address(value) in PSEUDO_IPV4_NET
        if kind == "ipv6":
            return ipaddress.IPv6Address(value.split("%")[0]) in PSEUDO_IPV6_NET
    except ValueError:
        return False
    if kind == "mac":
        return normalize_mac(value).startswith(PSEUDO_MAC_PREFIX + ":")
    if kind == "username":
        return _PSEUDO_USER_RE.fullmatch(value) is not None
    if kind in ("hostname", "domain"):
        return value.lower().endswith("." + PSEUDO_TLD) or bool(_PSEUDO_HOST_RE.fullmatch(value))
    if kind == "email":
        local, _, domain = value.rpartition("@")
        return is_pseudonym("username", local) and is_pseudonym("domain", domain)
    return False


def _is_netmask(address: ipaddress.IPv4Address) -> bool:
    bits = int(address)
    inverted = ~bits & 0xFFFFFFFF
    return bits != 0 and (inverted & (inverted + 1)) == 0


def is_exempt(kind: str, value: str) -> bool:
    """True for values that are not identifiers and stay as they are (ADR 0003)."""
    if kind == "ipv4":
        v4 = ipaddress.IPv4Address(value)
        return (
            v4.is_loopback
            or v4.is_multicast
            or int(v4) >> 24 == 0
            or _is_netmask(v4)
            or str(v4) == "169.254.169.254"
        )
    if kind == "ipv6":
        v6 = ipaddress.IPv6Address(value.split("%")[0])
        return v6.is_loopback or v6.is_unspecified or v6.is_multicast
    if kind == "mac":
        first = int(value[:2], 16)
        return bool(first & 1) or normalize_mac(value) == "00:00:00:00:00:00"
    if kind in ("hostname", "domain"):
        name = value.lower().rstrip(".")
        return (
            name in _LOCAL_HOSTS
            or name.rsplit(".", 1)[-1] in _RESERVED_TLDS
            or any(name == d or name.endswith("." + d) for d in _PUBLIC_DOMAINS)
        )
    if kind == "username":
        return value in SYSTEM_USERS or value.startswith("systemd-")
    if kind == "email":
        return is_exempt("domain", value.rpartition("@")[2])
    return False


_FAMILY_KINDS = {
    _F_KNOWN_HOST: "hostname",
    _F_NODE: "hostname",
    _F_EMAIL: "email",
    _F_MAC: "mac",
    _F_IPV6: "ipv6",
    _F_IPV4: "ipv4",
    _F_FQDN: "fqdn",
}

# Each family's own pattern; the value is group "v". These are the definitions:
# the fast scan below only decides where to try them.
_URL_USER_RE = re.compile(r"://(?P<v>[A-Za-z0-9._%+-]+)(?=(?::[^\s@/]*)?@)")
_HOME_RE = re.compile(r"/home/(?P<v>" + _USER + r")")
_USER_KV_RE = re.compile(
    r"(?i:\b(?:user|username|user_name|login|owner|ruser|euser|acct)\b)[\"']?[ \t]*"
    r"[=:][ \t]*[\"']?(?P<v>" + _USER + r")"
)
_FOR_USER_RE = re.compile(r"(?i:\bfor (?:invalid |illegal )?user )[\"']?(?P<v>" + _USER + r")")
_SSH_USER_RE = re.compile(
    r"(?i:\b(?:accepted|failed) [a-z0-9-]+ for )(?P<v>" + _USER + r")(?= from )"
)
# sudo's own log line names the invoking user between "sudo:" and " : "
# ("sudo:  alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=...", also
# "sudo: alice : 3 incorrect password attempts ; ..."); PAM's session lines name
# it as "by alice(uid=1000)".
_SUDO_USER_RE = re.compile(r"(?i:\bsudo:)[ \t]+(?P<v>" + _USER + r")[ \t]+:[ \t]")
_BY_UID_RE = re.compile(r"(?i:\bby )(?P<v>" + _USER + r")(?=\(uid=\d+\))")
_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])(?P<v>[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63})(?![\w-])"
)
_MAC_RE = re.compile(
    r"(?<![\w.-])(?P<v>[0-9A-Fa-f]{2}(?P<macsep>[:-])(?:[0-9A-Fa-f]{2}(?P=macsep)){4}"
    r"[0-9A-Fa-f]{2})(?![\w]|[:-][0-9A-Fa-f:])"
)
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?P<v>(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?)(?:%[\w.-]+)?(?![\w:])"
)
_IPV4_RE = re.compile(
    r"(?<![\w.])(?P<v>(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
    r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d))(?![\w]|\.\d)"
)
_FQDN_RE = re.compile(
    r"(?<![\w.-])(?P<v>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?i:" + _TLDS + r"))(?![\w-]|\.[A-Za-z0-9])"
)
_FAMILY_PATTERNS: tuple[tuple[int, re.Pattern[str]], ...] = (
    (_F_URL_USER, _URL_USER_RE),
    (_F_HOME, _HOME_RE),
    (_F_USER_KV, _USER_KV_RE),
    (_F_FOR_USER, _FOR_USER_RE),
    (_F_SSH_USER, _SSH_USER_RE),
    (_F_SUDO_USER, _SUDO_USER_RE),
    (_F_SUDO_USER, _BY_UID_RE),
    (_F_EMAIL, _EMAIL_RE),
    (_F_MAC, _MAC_RE),
    (_F_IPV6, _IPV6_RE),
    (_F_IPV4, _IPV4_RE),
    (_F_FQDN, _FQDN_RE),
)


def _valid_ipv6(value: str) -> bool:
    # The IPv6 pattern is loose (it also matches clock times such as 12:34:56);
    # only a parseable address with a "::" or all 8 groups counts.
    if "::" not in value and value.count(":") != 7:
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------- the fast scan
#
# Python's regex engine skips to a literal first character in C at memory speed,
# but tries a pattern that starts with a character class or a look-behind at
# every position (10-30 ns each). So the scan runs only gates that start with a
# literal (".", ":", "-", "@", "user", "for " ...) over the lowercased block and
# tries each family's own pattern just where a gate says it can start: an IPv4
# address ends its first octet at a gated ".", a MAC starts two characters
# before its first ":", and a dotted name, IPv6 address or e-mail starts where
# the run of characters it is made of begins (found by scanning back from the
# gate; at most one try per run, since inside a run the family's look-behind
# fails). The context families (``user=``, ``for user``) are few: their
# patterns run on the lines their gates pick.


_TLD_TRIE = _trie_source(_trie(_TLDS.split("|")))
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# On lowercased text: "." and the rest of an IPv4 address after its first octet
# (group "v4"), or "." before a TLD ending a name.
_DOT_GATE_RE = re.compile(
    rf"\.(?:(?P<v4>{_OCTET}\.{_OCTET}\.{_OCTET}(?![\w]|\.\d))|(?={_TLD_TRIE}(?![\w-]|\.[a-z0-9])))"
)
# For the MAC and IPv6 searches: hex digits and colons -> "h", dashes kept,
# anything else a space. Runs of "h" are then the runs of hex digits and
# colons an address is made of, and a MAC written with dashes is _DASHED_MAC.
_HEX_TO_H = bytes(
    ord("h") if chr(c) in "0123456789abcdef:" else c if chr(c) == "-" else ord(" ")
    for c in range(256)
)
_LONG_HEX_COLON_RUN = b"h" * 15
_H_RUN_RE = re.compile(rb"h+")
_DOUBLE_COLON_RE = re.compile("::")
_DASHED_MAC = b"hh-hh-hh-hh-hh-hh"
# Gates (on lowercased text) of the lines where ``user=`` / ``login:`` ... can match.
_USER_KV_GATES = tuple(
    re.compile(word + r"\b[\"']?[ \t]*[=:]")
    for word in ("user(?:_?name)?", "login", "owner", "acct")
)
# "for user x" starts at this gate; sshd's "Accepted/Failed <method> for x from" is on its line.
_FOR_GATE_RE = re.compile(r"for (?=(?:invalid |illegal )?user |[a-z0-9_.-]{1,32} from )")
_SSH_HINTS = ("accepted ", "failed ")
# What dotted names, IPv6 addresses and e-mail local parts are made of (lowercased).
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.-"
_IPV6_CHARS = "0123456789abcdef:"
_LOCAL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._%+-"
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
_ADDRESS_CHARS = frozenset("0123456789abcdef:.")
_PLAIN_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", re.ASCII)


class IdentifierDetector:
    """Finds identifiers (``--scrub`` kinds) in text.

    known_users and known_hosts are literal names learnt from the host (its
    /etc/passwd, /etc/hostname and /etc/hosts): they are found wherever they
    appear as a whole word (host names in any case), in addition to the
    contextual patterns (``user=``, ``/home/x``, ``for user x``, dotted names
    with a known top-level domain). node_names are the names of the node the
    text comes from (its node name, hostname, FQDN and short forms): host names
    too, and since they are on nearly every line of its logs, :meth:`substitute`
    replaces them first, in one pass each. extra_exempt_users are accounts that
    are never reported (system accounts of this host).

    :meth:`substitute` replaces what it finds (the Redactor's interface);
    :meth:`spans` lists it as tuples, :meth:`find_in` and :meth:`find` as
    :class:`Hit` objects. Classifications (and replacements) are cached per
    value, so one detector should live as long as the bundle it scans.
    """

    def __init__(
        self,
        *,
        known_users: Iterable[str] = (),
        known_hosts: Iterable[str] = (),
        extra_exempt_users: Iterable[str] = (),
        node_names: Iterable[str] = (),
    ) -> None:
        self._exempt_users = frozenset(extra_exempt_users)
        users = {u for u in known_users if len(u) >= 3 and not self._user_exempt(u)}
        node = {n.lower() for n in node_names if len(n) >= 3 and not is_exempt("hostname", n)}
        hosts = node | {
            h.lower() for h in known_hosts if len(h) >= 3 and not is_exempt("hostname", h)
        }
        self._all_users = _known_names_re(users)
        self._all_hosts = _known_names_re(hosts, re.IGNORECASE)
        # The fast scan takes names without a character a name may follow in one
        # pass of one trie; the few others ("a+b") are matched on their own.
        plain_users = {u for u in users if _PLAIN_NAME_RE.fullmatch(u)}
        plain_hosts = {h for h in hosts if _PLAIN_NAME_RE.fullmatch(h)}
        self._names = _KnownNames(plain_users, plain_hosts) if plain_users or plain_hosts else None
        self._odd_users = _known_names_re(users - plain_users)
        self._odd_hosts = _known_names_re(hosts - plain_hosts, re.IGNORECASE)
        # Per family: value -> (kind, value as reported) or None (exempt, pseudonym).
        self._kinds: list[dict[str, tuple[str, str] | None]] = [{} for _ in range(_FAMILIES)]
        # Per family: value -> (replacement, length replaced, kind) or None.
        self._replacements: list[dict[str, tuple[str, int, str] | None]] = [
            {} for _ in range(_FAMILIES)
        ]
        self._ipv6_valid: dict[str, bool] = {}
        self._first_octets: dict[str, int] = {}  # 4 characters before a dot -> octet length
        self._node_names = _node_names_res(node)
        self._node_names_any_case = _node_names_res(node, re.IGNORECASE)
        lowered_users = {u.lower() for u in users}
        self._node_passes = [
            (_node_name_re(name), name)
            for name in sorted(node & plain_hosts, key=len, reverse=True)
            if name not in lowered_users
            and not set(name) <= _ADDRESS_CHARS
            and "." not in name  # its pseudonym is longer than a user name may be
            and name[-1].isalnum()
            and self._classify(_F_KNOWN_HOST, name) is not None
        ]
        self._node_replacements: dict[str, str] = {}

    def _user_exempt(self, user: str) -> bool:
        return user in self._exempt_users or is_exempt("username", user)

    def find(self, line: str) -> list[Hit]:
        """Identifiers in one line that are neither exempt nor pseudonyms."""
        return self.find_in(line)

    def find_in(self, text: str) -> list[Hit]:
        """Identifiers in a block of lines (``\n``-separated), in order, not overlapping."""
        return [Hit(kind, start, end) for start, end, kind, _ in self.spans(text)]

    def spans(self, text: str) -> list[tuple[int, int, str, str]]:
        """``(start, end, kind, value)`` of every identifier in text, in order."""
        if text.isascii():
            return self._resolve(self._fast_candidates(text, text.lower()))
        # Lines with other characters take the reference path (lowercasing or
        # case-insensitive matching of non-ASCII text may not keep the gates'
        # promises); runs of ASCII lines between them stay on the fast one.
        found: list[tuple[int, int, str, str]] = []
        position = 0
        non_ascii = [m.start() for m in _NON_ASCII_RE.finditer(text)]
        for line_start, line_end in lines_at(text, non_ascii):
            if line_start > position:
                found += _shifted(self.spans(text[position:line_start]), position)
            found += _shifted(self.reference_spans(text[line_start:line_end]), line_start)
            position = line_end
        if position < len(text):
            found += _shifted(self.spans(text[position:]), position)
        return found

    def substitute(
        self, text: str, render: Callable[[str, str], str], low: str | None = None
    ) -> tuple[str, list[str]]:
        """text with every identifier replaced by ``render(kind, value)``; the kinds replaced.

        The kinds come one per replacement, in no particular order.

        render must give the same result for the same (kind, value): it is
        called once per distinct value and its result is remembered. For a
        host name without a dot it must return one of letters, digits and "-"
        that starts and ends with a letter or digit, as pseudonyms are: the
        node's own names are replaced in a pass of their own before the scan of
        the rest (see _node_name_re). low: text.lower(), when the caller has it.
        """
        if not text.isascii():
            return self._substitute_spans(text, self.spans(text), render)
        kinds: list[str] = []
        for pattern, name in self._node_passes:
            replacement = self._node_replacements.get(name)
            if replacement is None:
                replacement = render("hostname", name).replace("\\", "\\\\")
                self._node_replacements[name] = replacement
            text, count = pattern.subn(replacement, text)
            if count:
                kinds += ["hostname"] * count
                low = None  # lowercasing again costs less than a second subn
        candidates = self._fast_candidates(text, text.lower() if low is None else low)
        if not candidates:
            return text, kinds
        # The overlap rule of _resolve, fused with the replacement (one pass per hit).
        candidates.sort()
        pieces: list[str] = []
        append = pieces.append
        add_kind = kinds.append
        position = 0
        taken = -1
        lookups = [known.get for known in self._replacements]
        for start, negative_end, family, value in candidates:
            if start < taken:
                continue
            taken = -negative_end
            entry = lookups[family](value, _MISSING)
            if entry is _MISSING:
                entry = self._replacement(family, value, render)
            if entry is not None:
                append(text[position:start])
                append(entry[0])
                position = start + entry[1]
                add_kind(entry[2])
        append(text[position:])
        return "".join(pieces), kinds

    def _replacement(
        self, family: int, value: str, render: Callable[[str, str], str]
    ) -> tuple[str, int, str] | None:
        classified = self._classify(family, value)
        entry = None
        if classified is not None:
            kind, reported = classified
            entry = (render(kind, reported), len(reported), kind)
        known = self._replacements[family]
        if len(known) > _CACHE_LIMIT:
            known.clear()
        known[value] = entry
        return entry

    def _substitute_spans(
        self, text: str, spans: list[tuple[int, int, str, str]], render: Callable[[str, str], str]
    ) -> tuple[str, list[str]]:
        pieces: list[str] = []
        position = 0
        for start, end, kind, value in spans:
            pieces.append(text[position:start])
            pieces.append(render(kind, value))
            position = end
        pieces.append(text[position:])
        return "".join(pieces), [kind for _, _, kind, _ in spans]

    def reference_spans(self, text: str) -> list[tuple[int, int, str, str]]:
        """What :meth:`spans` returns, found by every family's pattern over all of text."""
        candidates: list[_Span] = []
        for family, pattern in (
            (_F_KNOWN_USER, self._all_users),
            (_F_KNOWN_HOST, self._all_hosts),
            *((_F_NODE, node) for node in self._node_names_any_case),
        ):
            for m in pattern.finditer(text) if pattern is not None else ():
                candidates.append((m.start("v"), -m.end("v"), family, m.group("v")))
        for family, pattern in _FAMILY_PATTERNS:
            for m in pattern.finditer(text):
                value = m.group("v")
                if family == _F_IPV6 and not self._is_ipv6(value):
                    continue
                candidates.append((m.start("v"), -m.end("v"), family, value))
        return self._resolve(candidates)

    # ------------------------------------------------------------- internals

    def _fast_candidates(self, text: str, low: str) -> list[_Span]:
        """Every family's candidates in ASCII text (low: text lowercased), unsorted."""
        spans: list[_Span] = []
        append = spans.append
        ascii_low = low.encode("ascii")
        if self._names is not None:
            self._names.scan(text, low, ascii_low, spans)
        for family, pattern in ((_F_KNOWN_USER, self._odd_users), (_F_KNOWN_HOST, self._odd_hosts)):
            for m in pattern.finditer(text) if pattern is not None else ():
                append((m.start(1), -m.end(1), family, m.group(1)))
        for node in self._node_names:
            for m in node.finditer(low):
                start, end = m.span(1)
                append((start, -end, _F_NODE, text[start:end]))
        for family, pattern in ((_F_URL_USER, _URL_USER_RE), (_F_HOME, _HOME_RE)):
            for m in pattern.finditer(text):
                append((m.start(1), -m.end(1), family, m.group(1)))
        self._user_pairs(text, low, spans)
        self._for_users(text, low, spans)
        self._sudo_users(text, low, spans)
        if "@" in text:
            self._emails(text, low, spans)
        self._dotted(text, low, spans)
        self._colons(text, low, ascii_low, spans)
        return spans

    def _user_pairs(self, text: str, low: str, spans: list[_Span]) -> None:
        """``user=x``, ``login: x`` ...: the pattern is tried where its key starts.

        That is a gate's position, or the one before for ``ruser`` / ``euser``
        (the ``user`` gate finds them one character in).
        """
        positions = sorted(m.start() for gate in _USER_KV_GATES for m in gate.finditer(low))
        pair_end = 0
        for at in positions:
            for start in (at - 1, at) if at and low[at - 1] in "re" else (at,):
                if start >= pair_end and (m := _USER_KV_RE.match(text, start)) is not None:
                    pair_end = m.end()
                    spans.append((m.start(1), -pair_end, _F_USER_KV, m.group(1)))
                    break

    def _for_users(self, text: str, low: str, spans: list[_Span]) -> None:
        """``for [invalid] user x`` (at its gate) and sshd's ``for x from`` (on the gate's line)."""
        append = spans.append
        for_end = line_end = -1
        for gate in _FOR_GATE_RE.finditer(low):
            at = gate.start()
            if at >= for_end and (m := _FOR_USER_RE.match(text, at)) is not None:
                for_end = m.end()
                append((m.start(1), -for_end, _F_FOR_USER, m.group(1)))
            if at > line_end:
                line_start = text.rfind("\n", 0, at) + 1
                line_end = text.find("\n", at)
                if line_end < 0:
                    line_end = len(text)
                line = low[line_start:line_end]
                if any(hint in line for hint in _SSH_HINTS):
                    for m in _SSH_USER_RE.finditer(text, line_start, line_end):
                        append((m.start(1), -m.end(1), _F_SSH_USER, m.group(1)))

    def _sudo_users(self, text: str, low: str, spans: list[_Span]) -> None:
        """sudo's ``sudo: NAME :`` (at "sudo:") and PAM's ``by NAME(uid=N)`` (before "(uid=")."""
        at = low.find("sudo:")
        while at >= 0:
            if (m := _SUDO_USER_RE.match(text, at)) is not None:
                spans.append((m.start("v"), -m.end("v"), _F_SUDO_USER, m.group("v")))
            at = low.find("sudo:", at + 5)
        at = low.find("(uid=")
        while at >= 0:
            by = low.rfind("by ", max(0, at - 36), at)
            if by >= 0 and (m := _BY_UID_RE.match(text, by)) is not None and m.end("v") == at:
                spans.append((m.start("v"), -m.end("v"), _F_SUDO_USER, m.group("v")))
            at = low.find("(uid=", at + 5)

    def _emails(self, text: str, low: str, spans: list[_Span]) -> None:
        """E-mail addresses, from each "@" (found with memchr)."""
        local = RunStart(_LOCAL_CHARS, 64)
        tried = -1
        at = low.find("@")
        while at >= 0:
            start = local.before(low, at)
            if tried < start < at:
                tried = start
                m = _EMAIL_RE.match(text, start)
                if m is not None:
                    spans.append((start, -m.end(1), _F_EMAIL, m.group(1)))
                    tried = m.end()
            at = low.find("@", at + 1)

    def _dotted(self, text: str, low: str, spans: list[_Span]) -> None:
        """IPv4 addresses and dotted names, from the "." gate."""
        append = spans.append
        names = RunStart(_NAME_CHARS, 64)
        octets = self._first_octets
        tried = -1
        for gate in _DOT_GATE_RE.finditer(low):
            dot, end = gate.span()
            if gate.lastindex:  # the IPv4 tail matched
                head = low[dot - 4 : dot] if dot >= 4 else low[:dot]
                length = octets.get(head)
                if length is None:
                    if len(octets) > _CACHE_LIMIT:
                        octets.clear()
                    length = octets[head] = first_octet_length(head)
                if length:
                    start = dot - length
                    append((start, -end, _F_IPV4, text[start:end]))
                continue
            # A TLD: the name starts where its run of name characters does.
            start = names.before(low, dot)
            if start != tried:
                tried = start
                m = _FQDN_RE.match(text, start)
                if m is not None:
                    append((start, -m.end(1), _F_FQDN, m.group(1)))

    def _colons(self, text: str, low: str, ascii_low: bytes, spans: list[_Span]) -> None:
        """MACs and IPv6 addresses.

        A valid IPv6 address holds "::" or is 8 groups (at least 15 characters
        of hex digits and colons); a MAC is 17 of them, or hex pairs and
        dashes. All are found with C string searches: "::" in the text, runs
        of 15 hex-or-colon characters and "hh-hh-hh-hh-hh-hh" in translations
        of it. An address starts where its run of hex digits and colons does; a
        MAC there or just after a colon inside the run.
        """
        append = spans.append
        v6_starts: set[int] = set()
        mac_starts: list[int] = []
        hex_colons = RunStart(_IPV6_CHARS, 64)
        for double in _DOUBLE_COLON_RE.finditer(low):
            v6_starts.add(hex_colons.before(low, double.start()))
        runs = ascii_low.translate(_HEX_TO_H)
        run_end = _H_RUN_RE.match
        at = runs.find(_LONG_HEX_COLON_RUN)
        while at >= 0:
            run = run_end(runs, at)
            end = run.end() if run is not None else at + 1
            colon = low.find(":", at, end)
            if colon >= 0:
                if low.count(":", colon, end) >= 7:  # else only a "::" makes an address
                    v6_starts.add(at)
                mac_starts.append(at)
                while colon >= 0 and colon + 18 <= end:
                    mac_starts.append(colon + 1)
                    colon = low.find(":", colon + 1, end)
            at = runs.find(_LONG_HEX_COLON_RUN, end)
        at = runs.find(_DASHED_MAC)
        if at >= 0:
            while at >= 0:
                mac_starts.append(at)
                at = runs.find(_DASHED_MAC, at + 1)
            mac_starts.sort()
        mac_end = 0
        for start in mac_starts:
            if start >= mac_end and (mac := _MAC_RE.match(text, start)) is not None:
                mac_end = mac.end()
                append((start, -mac_end, _F_MAC, mac.group(1)))
        for start in sorted(v6_starts):
            m = _IPV6_RE.match(text, start)
            if m is not None and self._is_ipv6(value := m.group(1)):
                append((start, -m.end(1), _F_IPV6, value))

    def _is_ipv6(self, value: str) -> bool:
        valid = self._ipv6_valid.get(value)
        if valid is None:
            if len(self._ipv6_valid) > _CACHE_LIMIT:
                self._ipv6_valid.clear()
            valid = self._ipv6_valid[value] = _valid_ipv6(value)
        return valid

    def _resolve(self, candidates: list[_Span]) -> list[tuple[int, int, str, str]]:
        """Overlaps resolved (first start, then longest, then family), then classified."""
        if not candidates:
            return []
        candidates.sort()
        found: list[tuple[int, int, str, str]] = []
        append = found.append
        kinds = self._kinds
        taken = -1
        for start, negative_end, family, value in candidates:
            if start < taken:
                continue
            taken = -negative_end
            classified = kinds[family].get(value, _MISSING)
            if classified is _MISSING:
                classified = self._classify(family, value)
                if len(kinds[family]) > _CACHE_LIMIT:
                    kinds[family].clear()
                kinds[family][value] = classified
            if classified is not None:
                kind, reported = classified
                append((start, start + len(reported), kind, reported))
        return found

    def _classify(self, family: int, value: str) -> tuple[str, str] | None:
        if family in _USER_FAMILIES:
            value = value.rstrip(".-")
            if (
                self._user_exempt(value)
                or is_pseudonym("username", value)
                or is_pseudonym("hostname", value)
            ):
                return None
            return "username", value
        kind = _FAMILY_KINDS[family]
        if kind == "fqdn":
            kind = "hostname" if value.count(".") >= 2 else "domain"
        if is_exempt(kind, value) or is_pseudonym(kind, value):
            return None
        return kind, value


def _shifted(
    spans: list[tuple[int, int, str, str]], offset: int
) -> list[tuple[int, int, str, str]]:
    return [(s + offset, e + offset, kind, value) for s, e, kind, value in spans]
