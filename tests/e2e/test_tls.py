"""Secrets travel in responses: keyledger serves TLS, and refuses plain HTTP off loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import clean_env
from tests.e2e.test_cli_serve import KEYLEDGER, start_proxy


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyledger test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_boto3_reads_over_tls(tmp_path: Path, moto_url: str, store: Any) -> None:
    """With tls.cert and tls.key set, boto3 verifies the certificate and reads over HTTPS."""
    cert, key = self_signed(tmp_path)
    store.create_secret(Name="app/tls", SecretString="over-tls")
    served = start_proxy(tmp_path, moto_url, tls=(cert, key))
    try:
        assert served.url.startswith("https://")
        client = served.client(verify=str(cert))
        assert client.get_secret_value(SecretId="app/tls")["SecretString"] == "over-tls"
    finally:
        code, _ = served.stop()
    assert code == 0


def test_plain_http_off_loopback_is_refused(tmp_path: Path) -> None:
    """Listening on a public address without TLS is refused with a clear reason."""
    config = tmp_path / "keyledger.yaml"
    (tmp_path / "p.yaml").write_text("version: 1\n")
    config.write_text(
        yaml.safe_dump(
            {
                "listen": "0.0.0.0:8443",
                "identities": {"path": "identities.json"},
                "policies": ["p.yaml"],
                "backends": {"aws": {"region": "us-east-1"}},
            }
        )
    )
    result = subprocess.run(
        [*KEYLEDGER, "serve", "--config", str(config)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "refusing plain HTTP on 0.0.0.0" in result.stderr
    assert "tls.cert" in result.stderr
