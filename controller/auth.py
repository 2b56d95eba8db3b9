"""Authorization of controller RPCs by the role in the caller's certificate."""

from __future__ import annotations

import grpc

from novaops.client.tls import AioContext, peer_identity
from novaops.pki.identity import Identity, Role

# Used as the actor in insecure mode, where callers carry no certificate.
ANONYMOUS = Identity(Role.ADMIN, "anonymous")


async def require(context: AioContext, needed: Role, *, insecure: bool) -> Identity:
    """The caller's identity if it may make a call needing ``needed``; aborts otherwise."""
    identity = peer_identity(context)
    if identity is None:
        if insecure:
            return ANONYMOUS
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "caller presented no novaops certificate (expected a SAN URI spiffe://novaops/...)",
        )
        raise AssertionError("unreachable")  # abort raises
    if not identity.satisfies(needed):
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"this call needs the {needed.value} role; caller is {identity}",
        )
    return identity
