"""Callers identified by their TLS client certificate (mTLS), on the HTTPS listener.

The listener asks for a certificate and verifies it against ``tls.client_ca`` during the
handshake, so an expired certificate or one from another CA never gets this far; what
arrives here is a verified certificate (DER). The caller is its SPIFFE ID when it has one
(a URI SAN ``spiffe://TRUST-DOMAIN/...``; for ``/ns/NS/sa/NAME`` also the attributes
``namespace`` and ``service_account``), else its subject's common name.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from keyledger.model import Principal
from keyledger.proxy.errors import AuthError, ErrorKind

__all__ = ["METHOD", "principal_from_certificate"]

METHOD = "mtls"
_MAX = 512


def principal_from_certificate(der: bytes) -> Principal:
    """The caller a verified client certificate names; AuthError when it names none."""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise AuthError(
            "The client certificate cannot be read.", kind=ErrorKind.MALFORMED_AUTH, method=METHOD
        ) from None
    spiffe = _spiffe_id(certificate)
    if spiffe is not None:
        trust_domain, _, path = spiffe.removeprefix("spiffe://").partition("/")
        attributes = {"trust_domain": trust_domain}
        parts = path.split("/")
        if len(parts) == 4 and parts[0] == "ns" and parts[2] == "sa":
            attributes |= {"namespace": parts[1], "service_account": parts[3]}
        return Principal(id=spiffe, auth_method=METHOD, attributes=attributes)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = names[0].value if names else None
    if not isinstance(common, str) or not common:
        raise AuthError(
            "The client certificate names no SPIFFE ID and no common name.",
            kind=ErrorKind.MALFORMED_AUTH,
            method=METHOD,
        )
    return Principal(id=common[:_MAX], auth_method=METHOD, attributes={})


def _spiffe_id(certificate: x509.Certificate) -> str | None:
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in sans.value.get_values_for_type(x509.UniformResourceIdentifier)]
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    # The SPIFFE standard: an SVID holds exactly one SPIFFE ID.
    return spiffe[0][:_MAX] if len(spiffe) == 1 else None
