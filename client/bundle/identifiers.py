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

from novaops.client.bundle.hits import Hit

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


# ------------------------------------------------------------------ the families

_F_KNOWN_USER, _F_KNOWN_HOST, _F_URL_USER, _F_HOME, _F_USER_KV, _F_FOR_USER, _F_SSH_USER = range(7)
_F_EMAIL, _F_MAC, _F_IPV6, _F_IPV4, _F_FQDN = range(7, 12)
_FAMILIES = 12
_USER_FAMILIES = frozenset(
    {_F_KNOWN_USER, _F_URL_USER, _F_HOME, _F_USER_KV, _F_FOR_USER, _F_SSH_USER}
)
_FAMILY_KINDS = {
    _F_KNOWN_HOST: "hostname",
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
_SSH_USER_RE = re.compile(r"(?i:\b(?:accepted|failed) [a-z-]+ for )(?P<v>" + _USER + r")(?= from )")
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


_TLD_TRIE = _trie_source(_trie(_TLDS.split("|")))
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# On lowercased text: "." and the rest of an IPv4 address after its first octet
# (group "v4"), or "." before a TLD ending a name.
_DOT_GATE_RE = re.compile(
    rf"\.(?:(?P<v4>{_OCTET}\.{_OCTET}\.{_OCTET}(?![\w]|\.\d))|(?={_TLD_TRIE}(?![\w-]|\.[a-z0-9])))"
)
_FIRST_OCTETS = frozenset(str(n) for n in range(256))
_NOT_BEFORE_IPV4 = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.")
_HEX = "[0-9a-f]"
# ":" starting a MAC (group "mac" set), or in an IPv6 address ("::", or 7 colons).
_COLON_GATE_RE = re.compile(
    f":(?:(?=(?P<mac>(?:{_HEX}{{2}}:){{4}}{_HEX}{{2}}))|(?=:|(?:{_HEX}{{1,4}}:){{6}}))"
)
# "-hh-" starting a MAC written with dashes (its start is two characters before).
_DASH_GATE_RE = re.compile(f"-{_HEX}{{2}}-(?=(?:{_HEX}{{2}}-){{3}}{_HEX}{{2}})")
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
_DIGIT_CHARS = "0123456789"
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
_PLAIN_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", re.ASCII)
# ASCII characters a known name may follow (the complement of [\w./-]), all made spaces.
_NAME_BOUNDARY = bytes(c for c in range(128) if not re.match(r"[\w./-]", chr(c)))
_BOUNDARY_TO_SPACE = bytes.maketrans(_NAME_BOUNDARY, b" " * len(_NAME_BOUNDARY))

_Span = tuple[int, int, int, str]  # start, -end, family, value (sorts as the rule says)
_MISSING: Any = object()


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


class _RunStart:
    """Where the run of some characters that ends at a position starts, for rising positions.

    The last ``window`` characters are stripped in C; a longer run is walked
    back one character at a time, but never past the previous position asked
    about (its answer is reused), so a scan stays linear in the text.
    """

    __slots__ = ("chars", "last_end", "last_start", "members", "window")

    def __init__(self, chars: str, window: int) -> None:
        self.chars = chars
        self.members = frozenset(chars)
        self.window = window
        self.last_end = self.last_start = -1

    def before(self, low: str, end: int) -> int:
        """The start of the run of chars that ends at end (end itself when there is none)."""
        floor = end - self.window
        if floor <= 0:
            start = len(low[:end].rstrip(self.chars))
        elif kept := low[floor:end].rstrip(self.chars):
            start = floor + len(kept)
        elif self.last_end >= floor:
            start = self.last_start  # the same run as last time
        else:
            start = floor
            while start and low[start - 1] in self.members:
                start -= 1
                if start == self.last_end:
                    start = self.last_start
                    break
        self.last_end, self.last_start = end, start
        return start


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
        self.host_bytes = frozenset(h.encode("ascii") for h in hosts)
        self.exact_users = _known_names_re(users)
        self.exact_hosts = _known_names_re(hosts, re.IGNORECASE)
        names = {u.lower() for u in users} | self.hosts
        any_name = _known_names_re(names)
        fast = _known_names_scan_re(names)
        assert any_name is not None and fast is not None, "no names"
        self.any_name, self.fast = any_name, fast

    def scan(self, text: str, low: str, spans: list[_Span]) -> None:
        """Appends every match in ASCII text (low: text lowercased) to spans."""
        if (first := self.any_name.match(low, 0)) is not None:
            self._add(text, low, 0, first.end("v"), spans)
        append = spans.append
        users = self.users
        hosts = self.host_bytes
        for m in self.fast.finditer(low.encode("ascii").translate(_BOUNDARY_TO_SPACE)):
            start, end = m.span(1)
            value = text[start:end]
            if m.group(1) in hosts:
                if value in users:
                    append((start, -end, _F_KNOWN_USER, value))
                append((start, -end, _F_KNOWN_HOST, value))
            elif value in users:
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


class IdentifierDetector:
    """Finds identifiers (``--scrub`` kinds) in text.

    known_users and known_hosts are literal names learnt from the host (its
    /etc/passwd, /etc/hostname and /etc/hosts, and the node's own name): they
    are found wherever they appear as a whole word (host names in any case), in
    addition to the contextual patterns (``user=``, ``/home/x``, ``for user x``,
    dotted names with a known top-level domain). extra_exempt_users are accounts
    that are never reported (system accounts of this host).

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
    ) -> None:
        self._exempt_users = frozenset(extra_exempt_users)
        users = {u for u in known_users if len(u) >= 3 and not self._user_exempt(u)}
        hosts = {h.lower() for h in known_hosts if len(h) >= 3 and not is_exempt("hostname", h)}
        # Names with a character a name may follow ("a+b") would break the
        # fast scan's one-pass promise; they are left to the shape families.
        users = {u for u in users if _PLAIN_NAME_RE.fullmatch(u)}
        hosts = {h for h in hosts if _PLAIN_NAME_RE.fullmatch(h)}
        self._names = _KnownNames(users, hosts) if users or hosts else None
        # Per family: value -> (kind, value as reported) or None (exempt, pseudonym).
        self._kinds: list[dict[str, tuple[str, str] | None]] = [{} for _ in range(_FAMILIES)]
        # Per family: value -> (replacement, length replaced, kind) or None.
        self._replacements: list[dict[str, tuple[str, int, str] | None]] = [
            {} for _ in range(_FAMILIES)
        ]
        self._ipv6_valid: dict[str, bool] = {}

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
            return self._resolve(self._fast_candidates(text))
        # Lines with other characters take the reference path (lowercasing or
        # case-insensitive matching of non-ASCII text may not keep the gates'
        # promises); runs of ASCII lines between them stay on the fast one.
        found: list[tuple[int, int, str, str]] = []
        position = 0
        non_ascii = [m.start() for m in _NON_ASCII_RE.finditer(text)]
        for line_start, line_end in _lines_at(text, non_ascii):
            if line_start > position:
                found += _shifted(self.spans(text[position:line_start]), position)
            found += _shifted(self.reference_spans(text[line_start:line_end]), line_start)
            position = line_end
        if position < len(text):
            found += _shifted(self.spans(text[position:]), position)
        return found

    def substitute(self, text: str, render: Callable[[str, str], str]) -> tuple[str, list[str]]:
        """text with every identifier replaced by ``render(kind, value)``, and the kinds replaced.

        render must give the same result for the same (kind, value): it is
        called once per distinct value and its result is remembered.
        """
        if not text.isascii():
            return self._substitute_spans(text, self.spans(text), render)
        candidates = self._fast_candidates(text)
        if not candidates:
            return text, []
        # The overlap rule of _resolve, fused with the replacement (one pass per hit).
        candidates.sort()
        pieces: list[str] = []
        append = pieces.append
        kinds: list[str] = []
        position = 0
        taken = -1
        replacements = self._replacements
        for start, negative_end, family, value in candidates:
            if start < taken:
                continue
            taken = -negative_end
            known = replacements[family]
            entry = known.get(value, _MISSING)
            if entry is _MISSING:
                entry = self._replacement(family, value, render)
            if entry is not None:
                append(text[position:start])
                append(entry[0])
                position = start + entry[1]
                kinds.append(entry[2])
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
        names = self._names
        for family, pattern in (
            (_F_KNOWN_USER, names.exact_users if names else None),
            (_F_KNOWN_HOST, names.exact_hosts if names else None),
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

    def _fast_candidates(self, text: str) -> list[_Span]:
        low = text.lower()
        spans: list[_Span] = []
        append = spans.append
        if self._names is not None:
            self._names.scan(text, low, spans)
        for family, pattern in ((_F_URL_USER, _URL_USER_RE), (_F_HOME, _HOME_RE)):
            for m in pattern.finditer(text):
                append((m.start(1), -m.end(1), family, m.group(1)))
        positions = [m.start() for gate in _USER_KV_GATES for m in gate.finditer(low)]
        for line_start, line_end in _lines_at(text, positions) if positions else ():
            for m in _USER_KV_RE.finditer(text, line_start, line_end):
                append((m.start(1), -m.end(1), _F_USER_KV, m.group(1)))
        self._for_users(text, low, spans)
        if "@" in text:
            self._emails(text, low, spans)
        self._dotted(text, low, spans)
        self._colons(text, low, spans)
        if "-" in text:
            mac_end = 0
            for m in _DASH_GATE_RE.finditer(low):
                start = m.start() - 2
                if start >= mac_end and (mac := _MAC_RE.match(text, start)) is not None:
                    mac_end = mac.end()
                    append((start, -mac_end, _F_MAC, mac.group(1)))
        return spans

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

    def _emails(self, text: str, low: str, spans: list[_Span]) -> None:
        """E-mail addresses, from each "@" (found with memchr)."""
        local = _RunStart(_LOCAL_CHARS, 128)
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
        names = _RunStart(_NAME_CHARS, 256)
        tried = -1
        for gate in _DOT_GATE_RE.finditer(low):
            dot = gate.start()
            if gate.start("v4") >= 0:
                # The first octet is all of the (1 to 3) digits before the dot.
                head = low[dot - 3 : dot] if dot >= 3 else low[:dot]
                start = dot - len(head) + len(head.rstrip(_DIGIT_CHARS))
                if head[start - dot :] in _FIRST_OCTETS and (
                    not start or low[start - 1] not in _NOT_BEFORE_IPV4
                ):
                    append((start, -gate.end(), _F_IPV4, text[start : gate.end()]))
                continue
            # A TLD: the name starts where its run of name characters does.
            start = names.before(low, dot)
            if start != tried:
                tried = start
                m = _FQDN_RE.match(text, start)
                if m is not None:
                    append((start, -m.end(1), _F_FQDN, m.group(1)))

    def _colons(self, text: str, low: str, spans: list[_Span]) -> None:
        """MACs (":" separated) and IPv6 addresses, from the ":" gate."""
        append = spans.append
        hex_colons = _RunStart(_IPV6_CHARS, 64)
        mac_end = 0
        tried = -1
        for gate in _COLON_GATE_RE.finditer(low):
            colon = gate.start()
            if gate.start("mac") >= 0:
                start = colon - 2
                if start >= mac_end and (mac := _MAC_RE.match(text, start)) is not None:
                    mac_end = mac.end()
                    append((start, -mac_end, _F_MAC, mac.group(1)))
            start = hex_colons.before(low, colon)
            if start != tried:
                tried = start
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
            if self._user_exempt(value) or is_pseudonym("username", value):
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


def _lines_at(text: str, positions: list[int]) -> list[tuple[int, int]]:
    """The [start, end) of every line holding one of positions (end excludes the newline)."""
    lines: list[tuple[int, int]] = []
    end = -1
    for position in sorted(positions):
        if position <= end:
            continue
        start = text.rfind("\n", 0, position) + 1
        end = text.find("\n", position)
        if end < 0:
            end = len(text)
        lines.append((start, end))
    return lines
