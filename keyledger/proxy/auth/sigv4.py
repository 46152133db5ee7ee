"""Authenticate callers by AWS Signature Version 4, with keys keyledger issued.

The checks, in order: an Authorization header we can read; a known, unrevoked key (or,
with ``X-Amz-Security-Token``, a session keyledger issued through STS, unexpired, for that
key id); a credential scope for this service whose date matches ``X-Amz-Date``; a request
time within the allowed clock skew (which bounds replays); and a signature that matches,
compared in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta

from keyledger import sigv4
from keyledger.model import Principal
from keyledger.proxy.auth.identities import Identity, IdentityStore, StoreFollower
from keyledger.proxy.auth.sessions import METHOD as SESSION_METHOD
from keyledger.proxy.auth.sessions import SessionSealer
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
        sessions: SessionSealer | None = None,
    ) -> None:
        self._sessions = sessions
        self._service = service
        self._max_skew = max_skew
        self._clock = clock
        self._keys = sigv4.SigningKeyCache()
        self._last_sent: tuple[str, datetime | None] = ("", None)
        self._store = store
        self._secrets = self._decrypt_all()
        self._revoked = self._revoked_keys(store)
        # Picks up keys created, rotated or revoked by `keyledger identity` (at most 1/s).
        self._follower = StoreFollower(store, on_change=self._reload)

    def _decrypt_all(
        self, identities: Iterable[Identity] | None = None
    ) -> dict[str, tuple[Principal, str, datetime | None]]:
        # Decrypt once per store version: verification needs the plaintext on every request.
        return {
            i.access_key_id: (
                Principal(
                    id=i.name, auth_method=self.method, groups=i.groups, attributes=i.attributes
                ),
                self._store.secret_of(i),
                i.expires,
            )
            for i in (self._store if identities is None else identities)
            if not i.revoked
        }

    def _revoked_keys(self, identities: Iterable[Identity]) -> dict[str, str]:
        """Revoked keys and whose they were: a caller still using one is a stale
        deployment, not a guesser, and the audit should say so."""
        return {i.access_key_id: i.name for i in identities if i.revoked}

    async def _reload(self) -> None:
        # The keys as they are now, decrypted in a worker thread: Fernet costs tens of
        # microseconds a key, too much for the event loop with many of them.
        identities = list(self._store)
        secrets = await asyncio.to_thread(self._decrypt_all, identities)
        self._secrets, self._revoked = secrets, self._revoked_keys(identities)

    async def screen(self, head: WireRequest) -> None:
        await self._follower.refresh()
        self._claim(head)  # all but the signature, which covers the body

    async def authenticate(self, wire: WireRequest) -> Principal:
        await self._follower.refresh()
        auth, principal, secret, timestamp = self._claim(wire)
        key_id = auth.access_key_id
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
            raise _refused(
                principal,
                key_id,
                f"SignedHeaders names {exc.args[0]!r}, which the request does not carry",
                ErrorKind.MALFORMED_AUTH,
            ) from None
        try:
            to_sign = sigv4.string_to_sign(
                timestamp=timestamp, scope=auth.scope, canonical=canonical
            )
        except UnicodeEncodeError:
            # A signed header or path holding bytes that are not UTF-8 (aiohttp hands them
            # over as surrogates): nothing an SDK signs, so nothing that can verify.
            raise _refused(
                principal,
                key_id,
                "the signed request holds bytes that are not UTF-8",
                ErrorKind.MALFORMED_AUTH,
            ) from None
        expected = sigv4.signature(
            self._keys.key(secret, auth.date, auth.region, auth.service), to_sign
        )
        if not hmac.compare_digest(expected, auth.signature):
            raise _refused(principal, key_id, SIGNATURE_MISMATCH, ErrorKind.BAD_SIGNATURE)
        return principal

    def _claim(self, wire: WireRequest) -> tuple[sigv4.AuthorizationHeader, Principal, str, str]:
        """What the headers claim, checked as far as they can be without the body: the
        Authorization value, whose key it is (known, not revoked nor expired), what must be
        signed, the date and the scope. Returns the parsed value, the key's principal and
        secret, and the request's timestamp."""
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
        session_token = wire.headers.get("x-amz-security-token")
        if session_token is not None and key_id not in self._secrets:
            # A session keyledger issued (STS). A key it issued for good, sent with some
            # session token anyway (a stray AWS_SESSION_TOKEN), is still that key.
            principal, secret = self._session(session_token, key_id)
        else:
            known = self._secrets.get(key_id)
            if known is None and key_id in self._revoked:
                # AWS's words for a deleted key; the audit event names whose it was.
                raise AuthError(
                    "The security token included in the request is invalid.",
                    kind=ErrorKind.REVOKED_TOKEN,
                    principal_hint=self._revoked[key_id],
                    claimed={"access_key_id": key_id},
                )
            if known is None:
                raise AuthError(
                    "The security token included in the request is invalid.",
                    kind=ErrorKind.UNKNOWN_KEY,
                    claimed={"access_key_id": key_id},
                )
            principal, secret, expires = known
            if expires is not None and self._clock() >= expires:
                raise _refused(
                    principal,
                    key_id,
                    f"The security token included in the request is expired (since "
                    f"{expires.isoformat()}; rotated with an overlap that is over)",
                    ErrorKind.EXPIRED_TOKEN,
                )
        # From here on the key is known: each failure names whose key was used.
        timestamp = wire.headers.get("x-amz-date", "")
        unsigned = _must_sign(wire.headers).difference(auth.signed_headers)
        if unsigned:
            # X-Amz-Target chooses the operation: an unsigned one could turn a captured
            # read into a delete within the replay window.
            raise _refused(
                principal,
                key_id,
                f"SignedHeaders must include {', '.join(sorted(unsigned))}",
                ErrorKind.MALFORMED_AUTH,
            )
        sent = self._sent_at(timestamp)
        if sent is None:
            raise _refused(
                principal,
                key_id,
                f"X-Amz-Date {timestamp[:32]!r} is not a valid ISO 8601 basic timestamp",
                ErrorKind.MALFORMED_AUTH,
            )
        if auth.service != self._service or auth.date != timestamp[:8]:
            raise _refused(
                principal,
                key_id,
                f"Credential should be scoped to a valid region and to service "
                f"'{self._service}' on date {timestamp[:8]}",
                ErrorKind.BAD_SCOPE,
            )
        now = self._clock()
        if abs(now - sent) > self._max_skew:
            earlier = "earlier" if sent < now else "later"
            bound = now - self._max_skew if sent < now else now + self._max_skew
            sign = "-" if sent < now else "+"
            raise _refused(
                principal,
                key_id,
                f"Signature expired: {timestamp} is now {earlier} than "
                f"{sigv4.amz_date(bound)} ({sigv4.amz_date(now)} {sign} "
                f"{int(self._max_skew.total_seconds() // 60)} min.)",
                ErrorKind.EXPIRED,
            )
        return auth, principal, secret, timestamp

    def _sent_at(self, timestamp: str) -> datetime | None:
        # Concurrent callers send the same second over and over: parse each once.
        last, sent = self._last_sent
        if timestamp != last:
            sent = sigv4.parse_amz_date(timestamp)
            self._last_sent = (timestamp, sent)
        return sent

    def _session(self, token: str, key_id: str) -> tuple[Principal, str]:
        """The principal and secret of the session ``token`` seals, for ``key_id``."""
        session = self._sessions.open(token) if self._sessions is not None else None
        if (
            session is None
            or session.principal.auth_method != SESSION_METHOD  # a bearer token's session
            or not hmac.compare_digest(session.access_key_id, key_id)
        ):
            raise AuthError(
                "The security token included in the request is invalid.",
                kind=ErrorKind.UNKNOWN_TOKEN,
                claimed={"access_key_id": key_id},
                method=SESSION_METHOD,
            )
        assert self._sessions is not None
        refusal = None
        if self._sessions.expired(session):
            refusal = (
                "The security token included in the request is expired",
                ErrorKind.EXPIRED_TOKEN,
            )
        elif self._store.sessions_revoked(session.principal.id, session.issued):
            refusal = (
                "The security token included in the request has been revoked",
                ErrorKind.REVOKED_TOKEN,
            )
        if refusal is not None:
            error = _refused(session.principal, key_id, *refusal)
            error.method = SESSION_METHOD
            raise error
        return session.principal, session.secret_access_key


def _refused(principal: Principal, key_id: str, message: str, kind: ErrorKind) -> AuthError:
    return AuthError(
        message, kind=kind, principal_hint=principal.id, claimed={"access_key_id": key_id}
    )


def _must_sign(headers: Mapping[str, str]) -> set[str]:
    """Headers that change what a request means: host, date and every x-amz-* header.

    Not content-type: the JavaScript v2 and PHP SDKs leave it unsigned (AWS accepts that),
    and keyledger does not read it.
    """
    must = {"host", "x-amz-date"}
    for name in headers:
        if name[:6].lower() == "x-amz-":
            must.add(name.lower())
    return must
