from __future__ import annotations

from pathlib import Path

import pytest

from novaops.pki.identity import (
    Identity,
    IdentityError,
    Role,
    identity_from_pem,
    parse_identity_uri,
)
from novaops.pki.issue import CertificateAuthority


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("spiffe://novaops/controller/ctl-0", Identity(Role.CONTROLLER, "ctl-0")),
        ("spiffe://novaops/executor/node-1", Identity(Role.EXECUTOR, "node-1")),
        ("spiffe://novaops/user/operator/alice", Identity(Role.OPERATOR, "alice")),
    ],
)
def test_parse_identity_uri(uri: str, expected: Identity) -> None:
    assert parse_identity_uri(uri) == expected
    assert expected.uri() == uri


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://other/controller/x",
        "spiffe://novaops/user/root/alice",
        "spiffe://novaops/user/controller/alice",
        "spiffe://novaops/executor/Bad_Name",
        "spiffe://novaops/executor",
    ],
)
def test_parse_identity_uri_rejects(uri: str) -> None:
    with pytest.raises(IdentityError):
        parse_identity_uri(uri)


def test_roles_rank() -> None:
    admin = Identity(Role.ADMIN, "a")
    viewer = Identity(Role.VIEWER, "v")
    executor = Identity(Role.EXECUTOR, "n1")
    assert admin.satisfies(Role.OPERATOR) and admin.satisfies(Role.VIEWER)
    assert not viewer.satisfies(Role.OPERATOR)
    assert not executor.satisfies(Role.VIEWER)
    assert executor.satisfies(Role.EXECUTOR) and not admin.satisfies(Role.EXECUTOR)


def test_issued_certificate_carries_identity(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    ca.save(tmp_path)
    files = ca.issue(Identity(Role.EXECUTOR, "node-7"), tmp_path)
    assert identity_from_pem(files.cert.read_bytes()) == Identity(Role.EXECUTOR, "node-7")
    assert files.key.stat().st_mode & 0o777 == 0o600
    reloaded = CertificateAuthority.load(tmp_path)
    assert reloaded.cert == ca.cert
