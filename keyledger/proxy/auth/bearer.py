"""Authenticate callers by a bearer token (``Authorization: Bearer ...``): one keyledger
issued, or an OIDC JWT from an issuer the config trusts (a workload identity).

The same header arrives over REST and as gRPC metadata. The checks for a keyledger token,
in order: a Bearer header; a token of keyledger's shape; a known token id (one dictionary
lookup); the token's SHA-256 equal to the stored one, compared in constant time; not
revoked; not expired. Only a caller holding the real token learns that it is revoked or
expired. A JWT goes to :class:`~keyledger.proxy.auth.oidc.OidcVerifier` instead, and a
request with no token over a verified client certificate is that certificate's caller
(:mod:`keyledger.proxy.auth.mtls`). Errors name the token id (or the JWT's issuer) and the
identity, never the token.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import UTC, datetime

from keyledger.model import Principal
from keyledger.proxy.auth.identities import (
    RELOAD_INTERVAL_S,
    IdentityStore,
    StoreFollower,
    token_digest,
    token_id_of,
)
from keyledger.proxy.auth.mtls import principal_from_certificate
from keyledger.proxy.auth.oidc import OidcVerifier, looks_like_jwt
from keyledger.proxy.auth.sessions import BEARER_PREFIX, EXCHANGE_METHOD, SessionSealer
from keyledger.proxy.errors import AuthError, ErrorKind
from keyledger.proxy.wire import WireRequest

__all__ = ["BearerAuthenticator"]

INVALID = "The bearer token is invalid."


class BearerAuthenticator:
    method = "token"

    def __init__(
        self,
        *,
        store: IdentityStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        reload_interval: float = RELOAD_INTERVAL_S,
        oidc: OidcVerifier | None = None,
        sessions: SessionSealer | None = None,
    ) -> None:
        self._store = store
        self._oidc = oidc
        self._sessions = sessions
        self._clock = clock
        # Picks up tokens created, rotated or revoked by `keyledger identity`.
        self._follower = StoreFollower(store, interval=reload_interval)

    async def screen(self, head: WireRequest) -> None:
        await self.authenticate(head)  # a bearer token's proof is all in the headers

    async def authenticate(self, wire: WireRequest) -> Principal:
        await self._follower.refresh()
        header = wire.headers.get("authorization", "").strip()
        if not header and wire.peer_certificate is not None:
            # No token, but a client certificate the listener verified (mTLS).
            return principal_from_certificate(wire.peer_certificate)
        if not header:
            raise AuthError(
                "Missing bearer token: send Authorization: Bearer <token>",
                kind=ErrorKind.MISSING_AUTH,
            )
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError(
                "The Authorization header must use the Bearer scheme",
                kind=ErrorKind.MALFORMED_AUTH,
            )
        token = value.strip()
        if token.startswith(BEARER_PREFIX) and self._sessions is not None:
            return self._session(token.removeprefix(BEARER_PREFIX))
        token_id = token_id_of(token)
        if token_id is None and self._oidc is not None and looks_like_jwt(token):
            try:
                return await self._oidc.verify(token)
            except AuthError as exc:
                exc.method = "oidc"
                raise
        if token_id is None:
            raise AuthError(
                "The bearer token is not a keyledger token (kltok_<id>_<secret>)",
                kind=ErrorKind.MALFORMED_AUTH,
            )
        claimed = {"token_id": token_id}
        known = self._store.by_token_id(token_id)
        if known is None:
            raise AuthError(INVALID, kind=ErrorKind.UNKNOWN_TOKEN, claimed=claimed)
        if not hmac.compare_digest(known.digest, token_digest(token)):
            # Same words as an unknown token: a guesser learns nothing about the id.
            raise AuthError(
                INVALID, kind=ErrorKind.BAD_TOKEN, principal_hint=known.name, claimed=claimed
            )
        if known.revoked:
            raise AuthError(
                "The bearer token has been revoked.",
                kind=ErrorKind.REVOKED_TOKEN,
                principal_hint=known.name,
                claimed=claimed,
            )
        if known.expired(self._clock()):
            assert known.expires is not None
            raise AuthError(
                f"The bearer token expired at {known.expires.isoformat()}.",
                kind=ErrorKind.EXPIRED_TOKEN,
                principal_hint=known.name,
                claimed=claimed,
            )
        return Principal(
            id=known.name, auth_method=self.method, groups=known.groups, attributes=known.attributes
        )

    def _session(self, sealed: str) -> Principal:
        """The caller a token exchange issued this bearer token to, until it expires."""
        assert self._sessions is not None
        session = self._sessions.open(sealed)
        if session is None or session.principal.auth_method != EXCHANGE_METHOD:
            raise AuthError(INVALID, kind=ErrorKind.UNKNOWN_TOKEN, method=EXCHANGE_METHOD)
        if self._sessions.expired(session):
            raise AuthError(
                f"The bearer token expired at {session.expires.isoformat()}.",
                kind=ErrorKind.EXPIRED_TOKEN,
                principal_hint=session.principal.id,
                method=EXCHANGE_METHOD,
            )
        if self._store.sessions_revoked(session.principal.id, session.issued):
            raise AuthError(
                "The bearer token has been revoked.",
                kind=ErrorKind.REVOKED_TOKEN,
                principal_hint=session.principal.id,
                method=EXCHANGE_METHOD,
            )
        return session.principal
