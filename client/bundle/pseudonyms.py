"""Stable pseudonym maps: one per kind of identifier, keyed per bundle.

A pseudonym is derived from HMAC-SHA256(bundle key, kind, normalized value), so
every node of one bundle (all given the controller's per-request scrub_key)
maps the same value to the same pseudonym without talking to each other, and a
different bundle (different key) maps it to something unrelated.

What callers may rely on:

* Pseudonyms keep the shape of what they replace and fall in reserved ranges
  recognised by :func:`novaops.client.bundle.detectors.is_pseudonym`: IPv4 in
  198.18.0.0/15, IPv6 in 2001:db8::/32, MACs with the locally administered
  prefix 0a:4e:4f (separator style kept), ``host-xxxxxxxx`` host names,
  ``domain-xxxxxxxx.example`` domains, ``user-xxxxxxxx`` user names and
  ``user-xxxxxxxx@domain-xxxxxxxx.example`` emails.
* Within one map, two different values never share a pseudonym: on a collision
  the later value is re-derived with a counter. Across nodes a collision seen
  on one node but not another can make that one value differ between them
  (about 1 in 4 billion per pair for names, 1 in 131072 for IPv4).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable

from novaops.client.bundle.detectors import (
    PSEUDO_DOMAIN_PREFIX,
    PSEUDO_HEX_LEN,
    PSEUDO_HOST_PREFIX,
    PSEUDO_IPV4_NET,
    PSEUDO_IPV6_NET,
    PSEUDO_MAC_PREFIX,
    PSEUDO_TLD,
    PSEUDO_USER_PREFIX,
    normalize_mac,
)


class PseudonymMap:
    """Original -> pseudonym for one kind, deterministic under one key."""

    def __init__(
        self,
        kind: str,
        key: bytes,
        render: Callable[[bytes, str], str],
        normalize: Callable[[str], str] = str,
    ) -> None:
        self.kind = kind
        self._key = key
        self._render = render
        self._normalize = normalize
        self._forward: dict[str, str] = {}
        self._taken: set[str] = set()

    def get(self, original: str) -> str:
        """The pseudonym of original (created on first use)."""
        normalized = self._normalize(original)
        found = self._forward.get(normalized)
        if found is not None:
            return found
        attempt = 0
        while True:
            message = f"{self.kind}\0{normalized}\0{attempt}".encode("utf-8", "surrogateescape")
            digest = hmac.new(self._key, message, hashlib.sha256).digest()
            candidate = self._render(digest, normalized)
            if candidate not in self._taken:
                break
            attempt += 1
        self._forward[normalized] = candidate
        self._taken.add(candidate)
        return candidate

    def items(self) -> dict[str, str]:
        """Every normalized original seen so far and its pseudonym."""
        return dict(self._forward)


def _hex(digest: bytes) -> str:
    return digest.hex()[:PSEUDO_HEX_LEN]


def _render_ipv4(digest: bytes, _: str) -> str:
    size = PSEUDO_IPV4_NET.num_addresses
    offset = int.from_bytes(digest[:8], "big") % (size - 2) + 1
    return str(PSEUDO_IPV4_NET.network_address + offset)


def _render_ipv6(digest: bytes, _: str) -> str:
    offset = int.from_bytes(digest[:12], "big")
    return str(PSEUDO_IPV6_NET.network_address + offset)


def _render_mac(digest: bytes, _: str) -> str:
    return PSEUDO_MAC_PREFIX + ":" + ":".join(f"{b:02x}" for b in digest[:3])


def _render_user(digest: bytes, _: str) -> str:
    return PSEUDO_USER_PREFIX + _hex(digest)


def _render_host(digest: bytes, _: str) -> str:
    return PSEUDO_HOST_PREFIX + _hex(digest)


def _render_domain(digest: bytes, _: str) -> str:
    return f"{PSEUDO_DOMAIN_PREFIX}{_hex(digest)}.{PSEUDO_TLD}"


def _normalize_ipv6(value: str) -> str:
    return str(ipaddress.IPv6Address(value.split("%")[0]))


class PseudonymMaps:
    """The maps of one bundle: one per kind, all under the same key.

    ``pseudonym(kind, value)`` keeps the input's surface form where it carries
    no identity (a MAC's separator, an IPv6 zone suffix, an FQDN's split into
    host and domain) so the result reads like the original.
    """

    def __init__(self, key: bytes) -> None:
        self.ipv4 = PseudonymMap("ipv4", key, _render_ipv4, lambda v: str(ipaddress.IPv4Address(v)))
        self.ipv6 = PseudonymMap("ipv6", key, _render_ipv6, _normalize_ipv6)
        self.mac = PseudonymMap("mac", key, _render_mac, normalize_mac)
        self.username = PseudonymMap("username", key, _render_user)
        self.hostname = PseudonymMap("hostname", key, _render_host, str.lower)
        self.domain = PseudonymMap("domain", key, _render_domain, lambda v: v.lower().rstrip("."))

    def pseudonym(self, kind: str, value: str) -> str:
        if kind == "ipv4":
            return self.ipv4.get(value)
        if kind == "ipv6":
            zone = value.partition("%")[2]
            return self.ipv6.get(value) + (f"%{zone}" if zone else "")
        if kind == "mac":
            rendered = self.mac.get(value)
            return rendered.replace(":", "-") if "-" in value else rendered
        if kind == "username":
            return self.username.get(value)
        if kind == "email":
            local, _, domain = value.rpartition("@")
            return f"{self.username.get(local)}@{self.domain.get(domain)}"
        if kind == "domain":
            return self.domain.get(value)
        if kind == "hostname":
            host, _, domain = value.partition(".")
            if not domain:
                return self.hostname.get(host)
            return f"{self.hostname.get(host)}.{self.domain.get(domain)}"
        raise ValueError(f"no pseudonym map for kind {kind!r}")

    def as_dict(self) -> dict[str, dict[str, str]]:
        """kind -> {normalized original: pseudonym}, only kinds that were used."""
        maps = (self.ipv4, self.ipv6, self.mac, self.username, self.hostname, self.domain)
        return {m.kind: m.items() for m in maps if m.items()}
