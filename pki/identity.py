"""Roles and names carried in certificates as a SAN URI.

Every novaops certificate carries exactly one URI of the form
``spiffe://novaops/<role>/<name>`` where role is ``controller``, ``executor``
or ``user/<viewer|operator|admin>``. Servers read it from the peer certificate
to authorize calls and to bind an executor to its node name, so roles change
with policy, not with re-issued certificates.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

TRUST_DOMAIN = "novaops"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


class Role(StrEnum):
    CONTROLLER = "controller"
    EXECUTOR = "executor"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def is_user(self) -> bool:
        return self in (Role.VIEWER, Role.OPERATOR, Role.ADMIN)


# What each user role may do, as a rank: a call needing OPERATOR admits ADMIN.
_USER_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class IdentityError(ValueError):
    """A certificate's SAN URI is missing or not a novaops identity."""


@dataclass(frozen=True)
class Identity:
    role: Role
    name: str

    def uri(self) -> str:
        if self.role.is_user:
            return f"spiffe://{TRUST_DOMAIN}/user/{self.role.value}/{self.name}"
        return f"spiffe://{TRUST_DOMAIN}/{self.role.value}/{self.name}"

    def satisfies(self, needed: Role) -> bool:
        """True when this identity may make a call that needs ``needed``."""
        if needed.is_user:
            return self.role.is_user and _USER_RANK[self.role] >= _USER_RANK[needed]
        return self.role is needed

    def __str__(self) -> str:
        return f"{self.role.value}:{self.name}"


def valid_name(name: str) -> bool:
    """Node, replica and user names: lowercase DNS-label-like, 1..63 characters."""
    return bool(_NAME.match(name))


def parse_identity_uri(uri: str) -> Identity:
    prefix = f"spiffe://{TRUST_DOMAIN}/"
    if not uri.startswith(prefix):
        raise IdentityError(f"not a novaops identity URI: {uri!r}")
    parts = uri[len(prefix) :].split("/")
    try:
        if parts[0] == "user" and len(parts) == 3:
            role, name = Role(parts[1]), parts[2]
            if not role.is_user:
                raise ValueError
        elif len(parts) == 2 and parts[0] in ("controller", "executor"):
            role, name = Role(parts[0]), parts[1]
        else:
            raise ValueError
    except ValueError:
        raise IdentityError(f"unknown role in identity URI: {uri!r}") from None
    if not valid_name(name):
        raise IdentityError(f"invalid name in identity URI: {uri!r}")
    return Identity(role, name)


# Every RPC names its caller's certificate; parsing it is the costly part of
# authorizing a call, and a fleet has few distinct certificates. Same bytes, same
# identity (a failure is not cached).
@functools.lru_cache(maxsize=4096)
def identity_from_pem(pem: bytes) -> Identity:
    """The novaops identity of a PEM certificate (the first novaops SAN URI)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError("certificate has no subjectAltName") from None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(f"spiffe://{TRUST_DOMAIN}/"):
            return parse_identity_uri(uri)
    raise IdentityError("certificate carries no novaops identity URI")
