"""mTLS for every novaops connection: channel and server credentials, peer identity.

Both ends of every connection present a certificate from the cluster CA; the
peer's role and name come from its SAN URI (see novaops.pki.identity). Insecure
transport exists only behind an explicit ``insecure = true`` in a config file,
and callers log a warning when they use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from novaops.client.config import TLSFiles
from novaops.pki.identity import Identity, IdentityError, identity_from_pem

if TYPE_CHECKING:
    AioContext = grpc.aio.ServicerContext[Any, Any]
else:
    AioContext = grpc.aio.ServicerContext
"""The servicer context of grpc.aio handlers, for annotations."""

# gRPC options every novaops channel uses: bounded message size, keepalive so a
# dead peer is noticed, and no retries hidden inside the channel (fan-out
# deadlines are ours to enforce).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 0),
]


def _read(tls: TLSFiles) -> tuple[bytes, bytes, bytes]:
    assert tls.ca and tls.cert and tls.key
    return tls.ca.read_bytes(), tls.cert.read_bytes(), tls.key.read_bytes()


def channel_credentials(tls: TLSFiles) -> grpc.ChannelCredentials:
    ca, cert, key = _read(tls)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def server_credentials(tls: TLSFiles) -> grpc.ServerCredentials:
    """Server credentials that require and verify a client certificate."""
    ca, cert, key = _read(tls)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def secure_aio_channel(target: str, tls: TLSFiles) -> grpc.aio.Channel:
    """An asyncio channel to target; insecure only if the config said so."""
    if tls.insecure:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=CHANNEL_OPTIONS)


def secure_channel(target: str, tls: TLSFiles) -> grpc.Channel:
    """A blocking channel to target; insecure only if the config said so."""
    if tls.insecure:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(target, channel_credentials(tls), options=CHANNEL_OPTIONS)


def peer_identity(context: grpc.ServicerContext | AioContext) -> Identity | None:
    """The caller's novaops identity from its verified certificate, or None.

    None means no certificate (insecure mode) or one without a novaops identity;
    servers treat that as unauthenticated.
    """
    auth = context.auth_context()
    pems = list(auth.get("x509_pem_cert") or [])
    if not pems or not isinstance(pems[0], bytes):
        return None
    try:
        return identity_from_pem(pems[0])
    except (IdentityError, ValueError):
        return None
