"""Callers identified by their client certificate (mTLS) on keyledger's HTTPS listener:
a SPIFFE ID or a common name becomes the principal; a certificate from another CA or an
expired one never completes the handshake."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyledger.backends._loop_thread import LoopThread
from keyledger.backends.gcp_standin import ThreadedGcpStandin
from keyledger.devtls import ensure_dev_tls, server_context
from keyledger.proxy.app import make_app
from keyledger.proxy.config import parse_config
from tests.conftest import journal_events, listen

NOW = dt.datetime.now(dt.UTC)
SPIFFE = "spiffe://acme.test/ns/payments/sa/checkout"
POLICY = f"""
roles:
  - id: checkout
    rules:
      - id: read-payments
        actions: [read]
        resources: ["gcp:shop/*"]
        when:
          principal: {{namespace: payments, service_account: checkout}}
bindings:
  - role: checkout
    principals: ["{SPIFFE}", "batch-job"]
"""


CA = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
Served = tuple[str, str, Path, CA]


def make_ca(name: str) -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def client_cert(
    folder: Path,
    name: str,
    ca: CA,
    *,
    uri: str | None = None,
    expired: bool = False,
) -> tuple[str, str]:
    """A client certificate and key (PEM files) signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = NOW - dt.timedelta(days=10 if expired else 1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(NOW - dt.timedelta(days=1) if expired else NOW + dt.timedelta(days=1))
    )
    if uri is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    cert = builder.sign(ca[1], hashes.SHA256())
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def served(
    tmp_path: Path,
) -> Iterator[tuple[str, str, Path, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]]]:
    """keyledger over HTTPS asking for client certificates from a throwaway CA, in front
    of the Google stand-in: (base URL, server CA path, journal, the clients' CA)."""
    server = ensure_dev_tls(tmp_path / "tls")
    clients = make_ca("acme clients")
    clients_ca = tmp_path / "clients-ca.pem"
    clients_ca.write_bytes(clients[0].public_bytes(serialization.Encoding.PEM))
    key = Fernet.generate_key()
    (tmp_path / "id.key").write_bytes(key)
    (tmp_path / "fp.key").write_text("f" * 64)
    (tmp_path / "policy.yaml").write_text(POLICY)
    with ThreadedGcpStandin(host="127.0.0.1") as standin:
        standin.seed("shop", {"db-password": "mtls-canary-value"})
        config = parse_config(
            {
                "policies": ["policy.yaml"],
                "identities": {"path": "identities.json", "key_file": "id.key"},
                "tls": {
                    "cert": str(server.cert),
                    "key": str(server.key),
                    "client_ca": str(clients_ca),
                },
                "backends": {
                    "gcp": {
                        "type": "gcp",
                        "endpoint": standin.grpc_target,
                        "credentials": "anonymous",
                    }
                },
                "audit": {
                    "journal": "audit",
                    "fingerprint_key_file": "fp.key",
                    "checkpoints": {"enabled": False},
                },
                "admin": {"enabled": False},
            },
            base=tmp_path,
            source="test",
        )
        thread = LoopThread("keyledger", timeout=30)
        runners = []

        async def start() -> None:
            context = server_context(server.cert, server.key, client_ca=clients_ca)
            runners.append(await listen(await make_app(config), context))

        async def stop() -> None:
            for runner in runners:
                await runner.cleanup()

        thread.start(start)
        try:
            port = runners[0].addresses[0][1]
            yield f"https://127.0.0.1:{port}", str(server.ca_cert), tmp_path / "audit", clients
        finally:
            thread.stop(stop)


def access(url: str, ca: str, cert: tuple[str, str] | None) -> requests.Response:
    return requests.get(
        f"{url}/v1/projects/shop/secrets/db-password/versions/latest:access",
        cert=cert,
        verify=ca,
        timeout=10,
    )


def test_a_spiffe_certificate_is_its_caller(served: Served, tmp_path: Path) -> None:
    """A workload's SPIFFE certificate reads, its namespace and service account decided on
    by policy; a common name is the caller when there is no SPIFFE ID; no certificate and
    no token is Google's UNAUTHENTICATED."""
    url, ca, journal, clients = served
    spiffe = client_cert(tmp_path, "checkout", clients, uri=SPIFFE)
    batch = client_cert(tmp_path, "batch-job", clients)

    read = access(url, ca, spiffe)
    by_name = access(url, ca, batch)
    nothing = access(url, ca, None)

    assert read.status_code == 200, read.text
    assert by_name.status_code == 403  # bound, but not in namespace payments
    assert nothing.status_code == 401
    events = journal_events(journal, "access")
    assert [(e["principal"]["id"], e["principal"]["auth_method"]) for e in events] == [
        (SPIFFE, "mtls"),
        ("batch-job", "mtls"),
    ]
    assert events[0]["principal"]["attributes"] == {
        "trust_domain": "acme.test",
        "namespace": "payments",
        "service_account": "checkout",
    }


def test_another_ca_or_an_expired_certificate_never_completes_the_handshake(
    served: Served, tmp_path: Path
) -> None:
    """Refused by TLS itself: nothing reaches keyledger's request path, nothing is served.
    (Under TLS 1.3 the client learns it as a dropped connection rather than an alert.)"""
    url, ca, journal, clients = served
    stranger = client_cert(tmp_path, "stranger", make_ca("someone else"), uri=SPIFFE)
    expired = client_cert(tmp_path, "expired", clients, uri=SPIFFE, expired=True)
    for cert in (stranger, expired):
        with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one
            access(url, ca, cert)
    assert journal_events(journal, "access") == []
    assert not orjson.dumps(journal_events(journal)).count(b"mtls-canary-value")
