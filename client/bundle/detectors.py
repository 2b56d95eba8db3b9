"""What counts as sensitive in a support bundle: one detector per kind of data.

This module is the single definition shared by the producer and the verifier:
the executor's :class:`~novaops.executor.redact.Redactor` replaces what these
detectors find, and ``validate`` reports anything they still find in a bundle.
It lives in the client package because the client may not import the executor
(``tests/unit/test_boundaries.py``), while the executor may import the client.
It is pure (stdlib ``re`` and ``ipaddress`` only) and has no state.

What callers may rely on:

* Detectors return :class:`Hit` spans of the *value only* (``password=`` is kept,
  the value after it is the hit), sorted and non-overlapping.
* Redaction markers (``[REDACTED:<kind>]``), exempt values (loopback,
  unspecified, broadcast, netmasks, multicast, reserved example domains, system
  accounts) and pseudonyms (the shapes rendered by the executor's pseudonym maps)
  are never reported, so running a detector on redacted text finds nothing.
* Kinds are short lowercase names; the set is :data:`SECRET_KINDS` and
  :data:`IDENTIFIER_KINDS`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MARKER_PREFIX = "[REDACTED:"
_MARKER_RE = re.compile(r"\[REDACTED:[a-z0-9_]+\]")

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

SECRET_KINDS = frozenset(
    {
        "private_key",
        "url_password",
        "authorization",
        "bearer_token",
        "cookie",
        "jwt",
        "aws_access_key_id",
        "github_token",
        "gitlab_token",
        "slack_token",
        "slack_webhook",
        "gcp_api_key",
        "openstack_token",
        "api_key",
        "password",
        "secret",
        "token",
        "session",
        "credential",
    }
)
IDENTIFIER_KINDS = frozenset({"ipv4", "ipv6", "mac", "hostname", "domain", "username", "email"})


@dataclass(frozen=True, slots=True)
class Hit:
    """A sensitive value found in one line: its kind and its [start, end) span."""

    kind: str
    start: int
    end: int


def marker(kind: str) -> str:
    """The fixed text that replaces a secret of this kind."""
    return f"[REDACTED:{kind}]"


def is_marker(value: str) -> bool:
    return value.startswith(MARKER_PREFIX)


# --------------------------------------------------------------------------- secrets

PEM_BEGIN_RE = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----")
PEM_END_RE = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----")

# Fixed-shape tokens, each recognisable without context.
_TOKEN_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    (
        "aws_access_key_id",
        re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    ),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_\w{22,255})")),
    ("gitlab_token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("slack_webhook", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+")),
    ("gcp_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    # Keystone Fernet tokens, common in nova/neutron debug logs.
    ("openstack_token", re.compile(r"\bgAAAAA[A-Za-z0-9_=-]{60,}")),
    ("api_key", re.compile(r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}")),
)

# The password may hold a raw '/' (it should be percent-encoded, but is not always).
# Raw '@'s inside the password are tolerated too ("u:p@ss@host").
_URL_CREDS_RE = re.compile(
    r"(?i)\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]+:(?P<v>[^\s@]*(?:@+[^\s@]+)?)@"
)
_AUTH_HEADER_RE = re.compile(
    r"(?i)\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|digest|negotiate|token|sharedkey|aws4-hmac-sha256)\s+)?"
    r"(?P<v>[^\s\"',;]+)"
)
# QEMU's ``-object secret,id=x,data=<secret>`` (the key "data" says nothing by itself).
_QEMU_SECRET_RE = re.compile(r"\bsecret,(?:[^\s,]+,)*?data=(?P<v>[^\s,]+)")
_BEARER_RE = re.compile(r"(?i)\bbearer\s+(?P<v>[A-Za-z0-9._~+/=-]{8,})")
_COOKIE_RE = re.compile(r"(?i)\b(?:set-)?cookie[\"']?\s*[:=]\s*(?P<v>\S[^\r\n]*)")
# key=value, key: value, "key": "value", key='value'. Only lines that mention
# something secret-like (_KV_HINTS) are matched against it at all.
_KV_RE = re.compile(
    r"(?<![\w.])[\"']?(?P<k>[A-Za-z_][\w.-]{0,80})[\"']?"
    r"[\"']?[ \t]*[=:][ \t]*(?P<v>\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|[^\s,;&\"'<>)}\]]+)"
)
_XML_ELEMENT_RE = re.compile(
    r"<(?P<k>[\w:-]*(?i:password|passwd|secret|token|key)[\w:-]*)>(?P<v>[^<\n]+)</"
)
_FLAG_RE = re.compile(
    r"(?i)(?<![\w-])--?(?P<k>[\w-]*(?:password|passwd|secret|token|api-key|apikey)[\w-]*)"
    r"[ \t]+(?P<v>[^\s-]\S*)"
)

_SECRET_WORDS: tuple[tuple[str, str], ...] = (
    ("privatekey", "private_key"),
    ("password", "password"),
    ("passwd", "password"),
    ("passphrase", "password"),
    ("passwort", "password"),
    ("apikey", "api_key"),
    ("accesskey", "secret"),
    ("accountkey", "secret"),
    ("secretkey", "secret"),
    ("encryptionkey", "secret"),
    ("signingkey", "secret"),
    ("masterkey", "secret"),
    ("authkey", "secret"),
    ("secret", "secret"),
    ("token", "token"),
    ("credential", "credential"),
    ("cookie", "cookie"),
    ("sessionid", "session"),
    ("sessid", "session"),
    ("sessionkey", "session"),
    ("signature", "secret"),
    ("authorization", "authorization"),
)
_SECRET_EXACT_WORDS = {
    "pwd": "password",
    "pass": "password",
    "pw": "password",
    "auth": "secret",
    "session": "session",
    "sig": "secret",
}
# A key ending in one of these words names a property of a secret, not the secret.
_DESCRIPTOR_WORDS = frozenset(
    {
        "url",
        "uri",
        "endpoint",
        "type",
        "method",
        "methods",
        "strategy",
        "plugin",
        "section",
        "version",
        "host",
        "port",
        "enabled",
        "enable",
        "disabled",
        "mode",
        "file",
        "path",
        "dir",
        "length",
        "len",
        "count",
        "ttl",
        "expiry",
        "expires",
        "expiration",
        "timeout",
        "required",
        "backend",
        "driver",
        "provider",
        "class",
        "format",
        "algorithm",
        "usage",
        "policy",
        "name",
        "uuid",
        "size",
        "bits",
        "interval",
        "lifetime",
        "retries",
        "protocol",
        "realm",
        "fingerprint",
    }
)
_WORD_SPLIT_RE = re.compile(r"[^a-z0-9]+")
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def secret_kind_for_key(key: str) -> str | None:
    """The secret kind a configuration key holds, or None if its value is not secret.

    ``db_password`` -> ``password``; ``auth_url`` -> None (a URL, not a secret);
    ``X-Auth-Token`` -> ``token``. A key must contain one of :data:`_KV_HINTS`
    as it is written (case aside): that is what the fast line gates look for.
    """
    found = _KEY_KINDS.get(key, _MISSING)
    if found is not _MISSING:
        return found  # type: ignore[return-value]
    kind = _secret_kind_for_key(key)
    if len(_KEY_KINDS) > _CACHE_LIMIT:
        _KEY_KINDS.clear()
    _KEY_KINDS[key] = kind
    return kind


def _secret_kind_for_key(key: str) -> str | None:
    lowered = key.lower()
    if not any(hint in lowered for hint in _KV_HINTS):
        return None
    words = [w for w in _WORD_SPLIT_RE.split(_CAMEL_RE.sub("_", key).lower()) if w]
    if not words or words[-1] in _DESCRIPTOR_WORDS:
        return None
    joined = "".join(words)
    for needle, kind in _SECRET_WORDS:
        if needle in joined:
            return kind
    for word in words:
        if word in _SECRET_EXACT_WORDS:
            return _SECRET_EXACT_WORDS[word]
    return None


_MISSING = object()
_CACHE_LIMIT = 65536
_KEY_KINDS: dict[str, str | None] = {}


def _value_span(match: re.Match[str], *, line_start_kv: bool) -> tuple[int, int] | None:
    start, end = match.span("v")
    value = match.group("v")
    if value[:1] in ("'", '"'):
        start, end = start + 1, end - 1
    elif line_start_kv:
        # A config line (``password = two words``): the value is the rest of the line.
        end = len(match.string.rstrip("\r\n \t"))
    if end <= start or is_marker(match.string[start:end]):
        return None
    return start, end


# Literals each pattern cannot match without: a substring test costs a fraction
# of a regex scan, and most log lines contain none of them.
_TOKEN_GATES: dict[str, tuple[str, ...]] = {
    "jwt": ("eyJ",),
    "aws_access_key_id": (
        "AKIA",
        "ASIA",
        "AGPA",
        "AIDA",
        "AROA",
        "AIPA",
        "ANPA",
        "ANVA",
        "ABIA",
        "ACCA",
    ),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "gitlab_token": ("glpat-",),
    "slack_token": ("xox",),
    "slack_webhook": ("hooks.slack.com",),
    "gcp_api_key": ("AIza",),
    "openstack_token": ("gAAAAA",),
    "api_key": ("k_live_", "k_test_"),
}
_KV_HINTS = ("pass", "pw", "secret", "token", "key", "auth", "cred", "cookie", "sess", "sig")


def find_secrets(line: str) -> list[Hit]:
    """Secrets in one line (PEM blocks only when BEGIN is on this line).

    A PEM block opened on this line and not closed on it is reported from BEGIN
    to the end of the line; callers track the open block with PEM_END_RE.
    """
    hits: list[Hit] = []
    if "-----BEGIN" in line:
        begin = PEM_BEGIN_RE.search(line)
        if begin:
            end = PEM_END_RE.search(line, begin.end())
            hits.append(Hit("private_key", begin.start(), end.end() if end else len(line.rstrip())))
    for kind, pattern in _TOKEN_PATTERNS:
        if any(gate in line for gate in _TOKEN_GATES[kind]):
            hits.extend(Hit(kind, *m.span()) for m in pattern.finditer(line))
    if "://" in line:
        for m in _URL_CREDS_RE.finditer(line):
            if m.group("v") and not is_marker(m.group("v")):
                hits.append(Hit("url_password", *m.span("v")))
    if "secret," in line:
        for m in _QEMU_SECRET_RE.finditer(line):
            if not is_marker(m.group("v")):
                hits.append(Hit("secret", *m.span("v")))
    lower = line.lower()
    if "authorization" in lower:
        for m in _AUTH_HEADER_RE.finditer(line):
            if not is_marker(m.group("v")):
                hits.append(Hit("authorization", *m.span("v")))
    if "bearer" in lower:
        for m in _BEARER_RE.finditer(line):
            if not is_marker(m.group("v")):
                hits.append(Hit("bearer_token", *m.span("v")))
    if "cookie" in lower:
        for m in _COOKIE_RE.finditer(line):
            span = _value_span(m, line_start_kv=True)
            if span:
                hits.append(Hit("cookie", *span))
    if any(hint in lower for hint in _KV_HINTS):
        position = 0
        while (kv := _KV_RE.search(line, position)) is not None:
            m = kv
            kv_kind = secret_kind_for_key(m.group("k"))
            if kv_kind is None:
                # The value may itself hold a pair ("reload: admin_password = x",
                # '"log": "token=x"'): scan on from inside it, not after it.
                position = m.start("v") + (1 if m.group("v")[:1] in "\"'" else 0)
                continue
            position = m.end()
            at_line_start = not line[: m.start()].strip()
            span = _value_span(m, line_start_kv=at_line_start)
            if span:
                hits.append(Hit(kv_kind, *span))
        for pattern in (_XML_ELEMENT_RE, _FLAG_RE):
            for m in pattern.finditer(line):
                key_kind = secret_kind_for_key(m.group("k"))
                if key_kind and not is_marker(m.group("v")):
                    hits.append(Hit(key_kind, *m.span("v")))
    return _non_overlapping(hits)


# Line gates for blocks of text: every line where find_secrets can find something
# holds a match of one of these (tests/unit/test_redact.py checks it). Each
# starts with a literal, so the regex engine skips to candidates in C; most log
# lines match none of them and cost nothing more. The key-word gates run on the
# lowercased text and need the secret word followed by an assignment or an XML
# close, or inside a ``--flag`` followed by a value, so "keystoneauth.session
# REQ" or "Failed password for" are not candidates.
_KT = r"[\w.:-]*(?:[\"']{0,2}\s*[=:]|>)"  # rest of a key, then = or : (or an XML >)
_FT = r"[\w-]*[ \t]+[^\s-]"  # rest of a --flag, then its value
_LOWER_GATE_SOURCES = (
    rf"p(?:(?:ass|w){_KT}|(?<=[\w-]p)assw(?:or)?d{_FT})",
    rf"s(?:ecret(?:,|{_KT})|(?:ess|ig){_KT}|(?<=[\w-]s)ecret{_FT})",
    rf"token(?:{_KT}|(?<=[\w-]token){_FT})",
    rf"key(?:{_KT}|(?<=[\w-]apikey){_FT}|(?<=[\w-]api-key){_FT})",
    rf"auth{_KT}",
    rf"c(?:red|ookie){_KT}",
    r"bearer\s",
    r"://[^\s:/@]+:\S*@",
    r"hooks\.slack\.com/",
    r"-----begin",
)
_LOWER_GATES = tuple(re.compile(source) for source in _LOWER_GATE_SOURCES)
_LOWER_GATES_I = tuple(re.compile(source, re.IGNORECASE) for source in _LOWER_GATE_SOURCES)
_CASED_GATES = tuple(
    re.compile(source)
    for source in (
        r"eyJ",
        r"A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|BIA|CCA|Iza)",
        r"g(?:h[pousr]_|ithub_pat_|lpat-|AAAAA)",
        r"xox[abposr]-",
        r"k_(?:live|test)_",
    )
)


def secret_lines(text: str) -> list[tuple[int, int]]:
    """[start, end) of the lines of text (``\n``-separated) that may hold a secret."""
    low = text.lower()
    gates, target = (_LOWER_GATES, low) if len(low) == len(text) else (_LOWER_GATES_I, text)
    positions = [m.start() for gate in gates for m in gate.finditer(target)]
    positions += [m.start() for gate in _CASED_GATES for m in gate.finditer(text)]
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


def find_secrets_in(text: str) -> list[Hit]:
    """find_secrets over every line of a block of text, with offsets into text."""
    hits: list[Hit] = []
    for start, end in secret_lines(text):
        for hit in find_secrets(text[start:end]):
            hits.append(Hit(hit.kind, hit.start + start, hit.end + start))
    return hits


def _non_overlapping(hits: Iterable[Hit]) -> list[Hit]:
    # Earliest start wins; on a tie the longer span, so a whole token beats a part of it.
    kept: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (h.start, -h.end)):
        if kept and hit.start < kept[-1].end:
            if hit.end > kept[-1].end:
                kept[-1] = Hit(kept[-1].kind, kept[-1].start, hit.end)
            continue
        kept.append(hit)
    return kept


# ----------------------------------------------------------------------- identifiers

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


class IdentifierDetector:
    """Finds identifiers (``--scrub`` kinds) in lines of text.

    known_users and known_hosts are literal names learnt from the host (its
    /etc/passwd and /etc/hostname): they are found wherever they appear as a
    whole word, in addition to the contextual patterns (``user=``, ``/home/x``,
    ``for user x``, FQDNs with a known top-level domain). extra_exempt_users are
    accounts that are never reported (system accounts of this host).

    :meth:`find_in` scans a whole block of lines at once: each family of
    identifier has a cheap gate (a regex starting with a literal, run over the
    block in C) that picks the few lines where the family's own pattern can
    match; overlaps between families are resolved as one alternation would
    (leftmost first, then family order). :meth:`find` is the same on one line.
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
        self._known_users = _known_names_re(users)
        self._known_hosts = _known_names_re(hosts)
        self._cache: dict[tuple[int, str], str | None] = {}

    def _user_exempt(self, user: str) -> bool:
        return user in self._exempt_users or is_exempt("username", user)

    def find(self, line: str) -> list[Hit]:
        """Identifiers in one line that are neither exempt nor pseudonyms."""
        return self.find_in(line)

    def find_in(self, text: str) -> list[Hit]:
        """Identifiers in a block of lines (``\n``-separated), in order, not overlapping."""
        low = text.lower()
        if len(low) != len(text):  # a few characters change length when lowered
            return [h for line_hits in self._by_line(text) for h in line_hits]
        spans: list[tuple[int, int, int, str]] = []  # start, family, end, value
        if self._known_users is not None:
            for m in self._known_users.finditer(text):
                spans.append((m.start("v"), _F_KNOWN_USER, m.end("v"), m.group("v")))
        if self._known_hosts is not None:
            for m in self._known_hosts.finditer(low):
                start, end = m.span("v")
                spans.append((start, _F_KNOWN_HOST, end, text[start:end]))
        for family, pattern in _DIRECT_FAMILIES:
            for m in pattern.finditer(text):
                spans.append((m.start("v"), family, m.end("v"), m.group("v")))
        for family, pattern, gates, lowered in _GATED_FAMILIES:
            target = low if lowered else text
            positions = [m.start() for gate in gates for m in gate.finditer(target)]
            if not positions:
                continue
            for line_start, line_end in _lines_at(text, positions):
                for m in pattern.finditer(text, line_start, line_end):
                    spans.append((m.start("v"), family, m.end("v"), m.group("v")))
        if not spans:
            return []
        spans.sort()
        hits: list[Hit] = []
        taken = -1
        for start, family, end, value in spans:
            if start < taken:
                continue
            taken = end
            kind = self._kind(family, value)
            if kind is None:
                continue
            if family in _USER_FAMILIES:
                end = start + len(value.rstrip(".-"))
            hits.append(Hit(kind, start, end))
        return hits

    def _by_line(self, text: str) -> list[list[Hit]]:
        found: list[list[Hit]] = []
        offset = 0
        for line in text.split("\n"):
            hits = self.find_in(line) if len(line.lower()) == len(line) else self._slow(line)
            found.append([Hit(h.kind, h.start + offset, h.end + offset) for h in hits])
            offset += len(line) + 1
        return found

    def _slow(self, line: str) -> list[Hit]:
        # Lines whose lowercase has another length: every family on the whole line.
        spans: list[tuple[int, int, int, str]] = []
        if self._known_users is not None:
            for m in self._known_users.finditer(line):
                spans.append((m.start("v"), _F_KNOWN_USER, m.end("v"), m.group("v")))
        if self._known_hosts is not None:
            for m in self._known_hosts_i.finditer(line):
                spans.append((m.start("v"), _F_KNOWN_HOST, m.end("v"), m.group("v")))
        for family, pattern in _DIRECT_FAMILIES:
            for m in pattern.finditer(line):
                spans.append((m.start("v"), family, m.end("v"), m.group("v")))
        for family, pattern, _, _ in _GATED_FAMILIES:
            for m in pattern.finditer(line):
                spans.append((m.start("v"), family, m.end("v"), m.group("v")))
        spans.sort()
        hits: list[Hit] = []
        taken = -1
        for start, family, end, value in spans:
            if start < taken:
                continue
            taken = end
            kind = self._kind(family, value)
            if kind is not None:
                if family in _USER_FAMILIES:
                    end = start + len(value.rstrip(".-"))
                hits.append(Hit(kind, start, end))
        return hits

    @property
    def _known_hosts_i(self) -> re.Pattern[str]:
        assert self._known_hosts is not None
        return re.compile(self._known_hosts.pattern, re.IGNORECASE)

    def _kind(self, family: int, value: str) -> str | None:
        """The kind of a family's match, None when exempt or a pseudonym (cached)."""
        key = (family, value)
        try:
            return self._cache[key]
        except KeyError:
            pass
        kind = self._classify(family, value)
        if len(self._cache) > _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = kind
        return kind

    def _classify(self, family: int, value: str) -> str | None:
        if family in _USER_FAMILIES:
            value = value.rstrip(".-")
            if self._user_exempt(value) or is_pseudonym("username", value):
                return None
            return "username"
        kind = _FAMILY_KINDS[family]
        if kind == "fqdn":
            kind = "hostname" if value.count(".") >= 2 else "domain"
        if kind == "ipv6" and not _valid_ipv6(value):
            return None
        if is_exempt(kind, value) or is_pseudonym(kind, value):
            return None
        return kind


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


def _known_names_re(names: Iterable[str]) -> re.Pattern[str] | None:
    """Whole-word names (not inside a path, a dotted word or a longer name), as a trie.

    Each top-level branch starts with its literal first character and checks the
    character before it afterwards, so the regex engine can skip fast to the
    characters that start a name.
    """
    trie = _trie(names)
    if not trie:
        return None
    branches = [
        f"{re.escape(char)}(?<![\\w./-]{re.escape(char)}){_trie_source(trie[char])}"
        for char in sorted(trie)
        if char
    ]
    return re.compile(rf"(?P<v>(?:{'|'.join(branches)}))(?![\w/-])")


_F_KNOWN_USER, _F_KNOWN_HOST, _F_URL_USER, _F_HOME, _F_USER_KV, _F_FOR_USER, _F_SSH_USER = range(7)
_USER_FAMILIES = frozenset(
    {_F_KNOWN_USER, _F_URL_USER, _F_HOME, _F_USER_KV, _F_FOR_USER, _F_SSH_USER}
)
_F_EMAIL, _F_MAC, _F_IPV6, _F_IPV4, _F_FQDN = range(7, 12)
# Family order = precedence on overlaps (known names, then the contextual user
# names, then shapes). The e-mail family sorts after the user names but its
# match starts before any user name inside it, so it wins where it matters.
_FAMILY_KINDS = {
    _F_KNOWN_HOST: "hostname",
    _F_EMAIL: "email",
    _F_MAC: "mac",
    _F_IPV6: "ipv6",
    _F_IPV4: "ipv4",
    _F_FQDN: "fqdn",
}
_DIRECT_FAMILIES: tuple[tuple[int, re.Pattern[str]], ...] = (
    (_F_URL_USER, re.compile(r"://(?P<v>[A-Za-z0-9._%+-]+)(?=(?::[^\s@/]*)?@)")),
    (_F_HOME, re.compile(r"/home/(?P<v>" + _USER + r")")),
)
_HEX = "[0-9a-f]"
_GATED_FAMILIES: tuple[tuple[int, re.Pattern[str], tuple[re.Pattern[str], ...], bool], ...] = (
    (
        _F_USER_KV,
        re.compile(
            r"(?i:\b(?:user|username|user_name|login|owner|ruser|euser|acct)\b)[\"']?[ \t]*"
            r"[=:][ \t]*[\"']?(?P<v>" + _USER + r")"
        ),
        tuple(
            re.compile(word + r"\b[\"']?[ \t]*[=:]")
            for word in ("user(?:_?name)?", "login", "owner", "acct")
        ),
        True,
    ),
    (
        _F_FOR_USER,
        re.compile(r"(?i:\bfor (?:invalid |illegal )?user )[\"']?(?P<v>" + _USER + r")"),
        (re.compile(r"for (?:invalid |illegal )?user "),),
        True,
    ),
    (
        _F_SSH_USER,
        re.compile(r"(?i:\b(?:accepted|failed) [a-z-]+ for )(?P<v>" + _USER + r")(?= from )"),
        (re.compile(r"accepted [a-z-]+ for "), re.compile(r"failed [a-z-]+ for ")),
        True,
    ),
    (
        _F_EMAIL,
        re.compile(
            r"(?<![\w.%+-])(?P<v>[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63})(?![\w-])"
        ),
        (re.compile("@"),),
        False,
    ),
    (
        _F_MAC,
        re.compile(
            r"(?<![\w.-])(?P<v>[0-9A-Fa-f]{2}(?P<macsep>[:-])(?:[0-9A-Fa-f]{2}(?P=macsep)){4}"
            r"[0-9A-Fa-f]{2})(?![\w]|[:-][0-9A-Fa-f:])"
        ),
        (re.compile(f":(?:{_HEX}{{2}}:){{4}}"), re.compile(f"-(?:{_HEX}{{2}}-){{4}}")),
        True,
    ),
    (
        _F_IPV6,
        re.compile(
            r"(?<![\w:.])(?P<v>(?:[0-9A-Fa-f]{0,4}:){2,7}"
            r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?)(?:%[\w.-]+)?(?![\w:])"
        ),
        (re.compile(f":(?::|(?:{_HEX}{{1,4}}:){{6}})"),),
        True,
    ),
    (
        _F_IPV4,
        re.compile(
            r"(?<![\w.])(?P<v>(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
            r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d))(?![\w]|\.\d)"
        ),
        (re.compile(r"\.\d{1,3}\.\d{1,3}\.\d"),),
        False,
    ),
    (
        _F_FQDN,
        re.compile(
            r"(?<![\w.-])(?P<v>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
            r"(?i:" + _TLDS + r"))(?![\w-]|\.[A-Za-z0-9])"
        ),
        (re.compile(r"\." + _trie_source(_trie(_TLDS.split("|"))) + r"(?![\w-]|\.[a-z0-9])"),),
        True,
    ),
)


def _valid_ipv6(value: str) -> bool:
    # The candidate pattern is loose (it also matches clock times such as
    # 12:34:56); only a parseable address with at least 3 groups or a "::" counts.
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return "::" in value or value.count(":") == 7
