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
# dead peer is noticed, no retries hidden inside the channel (fan-out deadlines
# are ours to enforce), and a fixed 4 MiB receive window per stream.
#
# The window: by default gRPC grows it from its bandwidth-delay estimate, and on
# loopback under CPU load that let a bundle download hold tens of MB of received
# chunks the reader had not taken yet (CLI peaks of 133-185 MiB against 70-95
# MiB otherwise, streaming 256 MiB with two busy loops on both cores). A fixed 4
# MiB window kept it at 84-87 MiB in the same runs, at the same speed.
STREAM_WINDOW_BYTES = 4 * 1024 * 1024
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 0),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
]

# The controller's and the executor's servers. SO_REUSEPORT is on by default in
# gRPC; with it a second server would share the port silently instead of failing
# with "address already in use". BDP probing sizes the window of what a server
# receives, and servers here receive only small requests (the large streams,
# bundles, flow to the channels above, which fix their window): with it every
# call also cost a ping and its ack (measured, 500 simulated nodes' diag host,
# two A/B pairs in one hour: executors 2.99/3.00 -> 2.92/2.85 ms of CPU per node,
# controller 0.55/0.55 -> 0.52/0.48).
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.so_reuseport", 0),
    ("grpc.http2.bdp_probe", 0),
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


# HTTP/2 client preface plus an empty SETTINGS frame.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def probe_tls(target: str, tls: TLSFiles, timeout: float = 3.0) -> str | None:
    """Explain why a TLS connection to target fails, or None if it does not.

    gRPC reports a refused client certificate under TLS 1.3 only as "Socket
    closed"; a plain handshake with the stdlib reads the server's alert and so
    can say which side distrusts which certificate.
    """
    import socket
    import ssl

    if tls.insecure or not (tls.ca and tls.cert and tls.key):
        return None
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # gRPC checks names; here only trust matters
    try:
        context.load_verify_locations(cafile=str(tls.ca))
        context.load_cert_chain(certfile=str(tls.cert), keyfile=str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        return f"cannot load our TLS files: {exc}"
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw) as conn,
        ):
            # TLS 1.3 verifies the client certificate after the client's side of the
            # handshake: the server's verdict comes as an alert or a closed socket on
            # first read. A server that accepts us answers the HTTP/2 preface.
            conn.sendall(_HTTP2_PREFACE)
            conn.settimeout(timeout)
            try:
                answer = conn.recv(9)
            except ssl.SSLError as exc:
                return _alert_reason(str(exc))
            except OSError:
                return None
            if not answer:
                return (
                    "the server closed the connection after the handshake: it does not "
                    "accept our client certificate (issued by another CA?)"
                )
    except ssl.SSLCertVerificationError:
        return "we do not trust the controller's certificate (tls.ca is a different CA?)"
    except ssl.SSLError as exc:
        return _alert_reason(str(exc))
    except OSError:
        return None
    return None


def _alert_reason(text: str) -> str:
    lowered = text.lower()
    if "unknown_ca" in lowered or "unknown ca" in lowered:
        return "the server does not trust our certificate (issued by another CA?)"
    if "certificate_required" in lowered or "certificate required" in lowered:
        return "the server requires a client certificate"
    if "expired" in lowered:
        return "a certificate has expired"
    if "bad_certificate" in lowered or "bad certificate" in lowered:
        return "the server rejected our certificate"
    return f"TLS failed: {text}"
