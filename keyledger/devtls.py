"""A local certificate authority and a server certificate for ``--dev`` and tests.

Azure's SDKs send bearer tokens only over HTTPS, so the demo serves TLS from the first
start: a CA made once under ``var/tls/`` (its key never leaves that folder) signs a server
certificate for ``localhost``, ``127.0.0.1`` and ``::1``. Clients trust ``ca.pem`` (Python's
``connection_verify=``, ``NODE_EXTRA_CA_CERTS``, ``AWS_CA_BUNDLE``); nothing is added to the
system's trust store.

Files are reused across starts while they are valid for the names asked and for at least
:data:`RENEW_BEFORE` more; otherwise the server certificate (and, if the CA itself is
unusable, the CA) is made again.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_NAMES",
    "DevTls",
    "client_context",
    "ensure_dev_tls",
    "server_context",
]

DEFAULT_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
CA_LIFETIME = dt.timedelta(days=3650)
SERVER_LIFETIME = dt.timedelta(days=90)
RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True, slots=True)
class DevTls:
    """The PEM files of a local CA and of one server certificate it signed."""

    ca_cert: Path
    cert: Path
    key: Path


def ensure_dev_tls(folder: Path, names: Sequence[str] = DEFAULT_NAMES) -> DevTls:
    """The CA and a server certificate for ``names`` in ``folder``, made when missing,
    expiring, or not for these names."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    tls = DevTls(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    ca_key_path = folder / "ca-key.pem"
    now = dt.datetime.now(dt.UTC)
    ca = _load_ca(tls.ca_cert, ca_key_path, now)
    if ca is None:
        ca = _make_ca(now)
        _write(ca_key_path, _key_pem(ca[1]), private=True)
        _write(tls.ca_cert, ca[0].public_bytes(serialization.Encoding.PEM))
    elif _server_is_good(tls, ca[0], names, now):
        return tls
    cert, key = _make_server(ca, names, now)
    _write(tls.key, _key_pem(key), private=True)
    _write(tls.cert, cert.public_bytes(serialization.Encoding.PEM))
    return tls


def server_context(cert: Path, key: Path, *, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server-side context with modern defaults (TLS 1.2+); with ``client_ca``, client
    certificates are asked for and verified against it, but not required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # An empty password: an encrypted key fails here instead of prompting on a tty.
    context.load_cert_chain(cert, key, password=b"")
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(ca_cert: Path) -> ssl.SSLContext:
    """A client-side context that trusts ``ca_cert`` (and only it)."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load_ca(
    cert_path: Path, key_path: Path, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.public_key() != key.public_key() or cert.not_valid_after_utc - now < RENEW_BEFORE:
        return None
    return cert, key


def _server_is_good(
    tls: DevTls, ca: x509.Certificate, names: Sequence[str], now: dt.datetime
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
        key = serialization.load_pem_private_key(tls.key.read_bytes(), password=None)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return (
        cert.issuer == ca.subject
        and cert.public_key() == key.public_key()
        and cert.not_valid_after_utc - now >= RENEW_BEFORE
        and set(sans) == set(_sans(names))
    )


def _make_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "keyledger dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"keyledger dev CA {os.uname().nodename}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_server(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    names: Sequence[str],
    now: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + SERVER_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_sans(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _sans(names: Sequence[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return sans


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Replace ``path`` whole (a reader never sees half a certificate)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
