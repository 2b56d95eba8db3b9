"""What counts as sensitive in a support bundle: one detector per kind of data.

This module is the single definition shared by the producer and the verifier:
the executor's :class:`~novaops.executor.redact.Redactor` replaces what these
detectors find, and ``validate`` reports anything they still find in a bundle.
It lives in the client package because the client may not import the executor
(``tests/unit/test_boundaries.py``), while the executor may import the client.
It is pure (stdlib ``re`` and ``ipaddress`` only). The secret detectors are
here; the identifier kinds (``--scrub``) are in
:mod:`novaops.client.bundle.identifiers` and re-exported here, so this module
stays the one place callers import from.

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

import re
from collections.abc import Iterable

from novaops.client.bundle.hits import Hit, lines_at
from novaops.client.bundle.identifiers import (
    IDENTIFIER_KINDS,
    PSEUDO_DOMAIN_PREFIX,
    PSEUDO_HEX_LEN,
    PSEUDO_HOST_PREFIX,
    PSEUDO_IPV4_NET,
    PSEUDO_IPV6_NET,
    PSEUDO_MAC_PREFIX,
    PSEUDO_TLD,
    PSEUDO_USER_PREFIX,
    SYSTEM_USERS,
    IdentifierDetector,
    is_exempt,
    is_pseudonym,
    normalize_mac,
)

__all__ = [
    "IDENTIFIER_KINDS",
    "MARKER_PREFIX",
    "PEM_BEGIN_RE",
    "PEM_END_RE",
    "PSEUDO_DOMAIN_PREFIX",
    "PSEUDO_HEX_LEN",
    "PSEUDO_HOST_PREFIX",
    "PSEUDO_IPV4_NET",
    "PSEUDO_IPV6_NET",
    "PSEUDO_MAC_PREFIX",
    "PSEUDO_TLD",
    "PSEUDO_USER_PREFIX",
    "SECRET_KINDS",
    "SYSTEM_USERS",
    "Hit",
    "IdentifierDetector",
    "find_secrets",
    "find_secrets_in",
    "is_exempt",
    "is_marker",
    "is_pseudonym",
    "marker",
    "normalize_mac",
    "secret_kind_for_key",
    "secret_lines",
]

MARKER_PREFIX = "[REDACTED:"

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
# Starts with the literal "-" (then looks behind it), so the engine skips to dashes.
_FLAG_RE = re.compile(
    r"(?i)-(?<![\w-]-)-?(?P<k>[\w-]*(?:password|passwd|secret|token|api-key|apikey)[\w-]*)"
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


# The shell's working directories (sudo logs them: "PWD=/home/alice ; USER=root").
_WORKING_DIRECTORY_KEYS = frozenset({"PWD", "OLDPWD"})


def _is_working_directory(key: str, value: str) -> bool:
    """``PWD=/path`` as the environment variable, not a password: the key in
    capitals, as the shell spells it, and an absolute path as its value."""
    return key in _WORKING_DIRECTORY_KEYS and value.startswith("/")


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
# Every token gate at once: most lines hold none, and one search says so.
_TOKEN_GATE_RE = re.compile(
    "|".join(re.escape(gate) for gates in _TOKEN_GATES.values() for gate in gates)
)
_TOKEN_KIND_OF_GATE = {gate: kind for kind, gates in _TOKEN_GATES.items() for gate in gates}
_TOKEN_PATTERN_OF_KIND = dict(_TOKEN_PATTERNS)


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
    token_kinds = {_TOKEN_KIND_OF_GATE[m.group()] for m in _TOKEN_GATE_RE.finditer(line)}
    for kind in sorted(token_kinds):
        hits.extend(Hit(kind, *m.span()) for m in _TOKEN_PATTERN_OF_KIND[kind].finditer(line))
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
            if kv_kind is not None and _is_working_directory(m.group("k"), m.group("v")):
                kv_kind = None
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
    # Each starts with a literal the engine skips to in C; where that literal is
    # a common letter, with several (compared in C too), or with a rarer letter
    # and a fixed look-behind for the rest ("k" of token, cookie, key).
    rf"pass(?:{_KT}|(?<=[\w-]pass)w(?:or)?d{_FT})",
    rf"pw{_KT}",
    rf"se(?:cret(?:,|{_KT})|ss{_KT}|(?<=[\w-]secret){_FT})",
    rf"k(?:(?<=tok)en(?:{_KT}|(?<=[\w-]token){_FT})|(?<=cook)ie{_KT}"
    rf"|ey(?:{_KT}|(?<=[\w-]apikey){_FT}|(?<=[\w-]api-key){_FT})|_(?:live|test)_)",
    rf"auth{_KT}",
    rf"cred{_KT}",
    r"bearer\s",
    r"://(?:[^\s:/@]+:\S*@|hooks\.slack\.com/)",
    r"-----begin",
    # sig keys, and the GitHub / GitLab / Fernet prefixes (in any case: a gate
    # may pick more lines than the detectors need, never fewer).
    rf"g(?:(?<=sig){_KT}|h[pousr]_|ithub_pat_|lpat-|aaaaa)",
)
_LOWER_GATES = tuple(re.compile(source) for source in _LOWER_GATE_SOURCES)
_LOWER_GATES_I = tuple(re.compile(source, re.IGNORECASE) for source in _LOWER_GATE_SOURCES)
_CASED_GATES = tuple(
    re.compile(source)
    for source in (
        r"J(?<=eyJ)",
        r"A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|BIA|CCA|Iza)",
        r"xox[abposr]-",
    )
)


def secret_lines(text: str, low: str | None = None) -> list[tuple[int, int]]:
    """[start, end) of the lines of text (``\n``-separated) that may hold a secret.

    low: text.lower(), when the caller has it already.
    """
    if low is None:
        low = text.lower()
    gates, target = (_LOWER_GATES, low) if len(low) == len(text) else (_LOWER_GATES_I, text)
    positions = [m.start() for gate in gates for m in gate.finditer(target)]
    positions += [m.start() for gate in _CASED_GATES for m in gate.finditer(text)]
    return lines_at(text, positions)


def find_secrets_in(text: str, low: str | None = None) -> list[Hit]:
    """find_secrets over every line of a block of text, with offsets into text.

    low: text.lower(), when the caller has it already.
    """
    hits: list[Hit] = []
    for start, end in secret_lines(text, low):
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
