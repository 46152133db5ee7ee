"""Authenticate callers by AWS Signature Version 4, with keys keyledger issued.

The checks, in order: an Authorization header we can read; a known, unrevoked key; a
credential scope for this service whose date matches ``X-Amz-Date``; a request time within
the allowed clock skew (which bounds replays); and a signature that matches, compared in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from keyledger import sigv4
from keyledger.model import Principal
from keyledger.proxy.auth.identities import IdentityStore
from keyledger.proxy.errors import AuthError, ErrorKind
from keyledger.proxy.wire import WireRequest

__all__ = ["SigV4Authenticator"]

SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation "
    "for details."
)


class SigV4Authenticator:
    method = "sigv4"

    def __init__(
        self,
        *,
        store: IdentityStore,
        service: str = "secretsmanager",
        max_skew: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._service = service
        self._max_skew = max_skew
        self._clock = clock
        self._keys = sigv4.SigningKeyCache()
        # Decrypt once: verification needs the plaintext secrets on every request.
        self._secrets: dict[str, tuple[Principal, str]] = {
            i.access_key_id: (
                Principal(id=i.name, auth_method=self.method, groups=i.groups),
                store.secret_of(i),
            )
            for i in store
            if not i.revoked
        }

    def authenticate(self, wire: WireRequest) -> Principal:
        header = wire.headers.get("authorization")
        if not header:
            raise AuthError("Missing Authentication Token", kind=ErrorKind.MISSING_AUTH)
        try:
            auth = sigv4.parse_authorization(header)
        except sigv4.MalformedAuthorization as exc:
            raise AuthError(
                f"Authorization header requires a valid SigV4 value: {exc}",
                kind=ErrorKind.MALFORMED_AUTH,
            ) from None
        key_id = auth.access_key_id
        known = self._secrets.get(key_id)
        if known is None:
            raise AuthError(
                "The security token included in the request is invalid.",
                kind=ErrorKind.UNKNOWN_KEY,
                principal_hint=key_id,
            )
        principal, secret = known
        timestamp = wire.headers.get("x-amz-date", "")
        if "x-amz-date" not in auth.signed_headers or "host" not in auth.signed_headers:
            raise AuthError(
                "SignedHeaders must include host and x-amz-date",
                kind=ErrorKind.MALFORMED_AUTH,
                principal_hint=principal.id,
            )
        try:
            sent = datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise AuthError(
                f"X-Amz-Date {timestamp[:32]!r} is not a valid ISO 8601 basic timestamp",
                kind=ErrorKind.MALFORMED_AUTH,
                principal_hint=principal.id,
            ) from None
        if auth.service != self._service or auth.date != timestamp[:8]:
            raise AuthError(
                f"Credential should be scoped to a valid region and to service "
                f"'{self._service}' on date {timestamp[:8]}",
                kind=ErrorKind.BAD_SCOPE,
                principal_hint=principal.id,
            )
        now = self._clock()
        if abs(now - sent) > self._max_skew:
            earlier = "earlier" if sent < now else "later"
            bound = now - self._max_skew if sent < now else now + self._max_skew
            sign = "-" if sent < now else "+"
            raise AuthError(
                f"Signature expired: {timestamp} is now {earlier} than "
                f"{sigv4.amz_date(bound)} ({sigv4.amz_date(now)} {sign} "
                f"{int(self._max_skew.total_seconds() // 60)} min.)",
                kind=ErrorKind.EXPIRED,
                principal_hint=principal.id,
            )
        try:
            canonical = sigv4.canonical_request(
                method=wire.method,
                path=wire.path,
                query=wire.query,
                headers=wire.headers,
                signed_headers=auth.signed_headers,
                payload_sha256=hashlib.sha256(wire.body).hexdigest(),
            )
        except KeyError as exc:
            raise AuthError(
                f"SignedHeaders names {exc.args[0]!r}, which the request does not carry",
                kind=ErrorKind.MALFORMED_AUTH,
                principal_hint=principal.id,
            ) from None
        expected = sigv4.signature(
            self._keys.key(secret, auth.date, auth.region, auth.service),
            sigv4.string_to_sign(timestamp=timestamp, scope=auth.scope, canonical=canonical),
        )
        if not hmac.compare_digest(expected, auth.signature):
            raise AuthError(
                SIGNATURE_MISMATCH, kind=ErrorKind.BAD_SIGNATURE, principal_hint=principal.id
            )
        return principal
