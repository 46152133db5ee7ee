"""OAuth 2.0 token exchange (RFC 8693) at ``/v1/token``, as Google's STS answers it: a
workload's OIDC token traded for a keyledger bearer token.

google-auth's ``external_account`` credentials (a credential file with ``token_url``
pointing here and ``credential_source`` naming the token file) POST the workload token as
``subject_token`` and use the ``access_token`` they get back as a bearer token, refreshing
it before it expires. So a GAPIC client, REST or gRPC, changes only its endpoint and
credential file.

The subject token must verify against a trusted issuer; the access token is a keyledger
session (``klsess.``...: sealed, good for ``oidc.session_ttl``) naming the token's caller.
Every exchange is audited as STS's are: a ``lifecycle`` event ``credentials_issued``, or
an ``auth_failure``. Errors are RFC 6749's JSON (``invalid_grant``, ``invalid_request``).
"""

from __future__ import annotations

import time
from datetime import timedelta
from urllib.parse import parse_qsl

import orjson

from keyledger.proxy.audit.events import (
    PrincipalInfo,
    RequestInfo,
)
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.auth.oidc import OidcVerifier
from keyledger.proxy.auth.sessions import BEARER_PREFIX, EXCHANGE_METHOD, SessionSealer
from keyledger.proxy.errors import AuthError
from keyledger.proxy.exchanges import issued, record, refused
from keyledger.proxy.wire import WireRequest, WireResponse

__all__ = ["PATH", "PROTOCOL", "TokenExchange"]

PATH = "/v1/token"
PROTOCOL = "oauth-token-exchange"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
SUBJECT_TOKEN_TYPES = frozenset(
    {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"}
)
ISSUED_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 (a URN)


class TokenExchange:
    """Answers token exchange requests; records every one."""

    def __init__(
        self,
        *,
        verifier: OidcVerifier,
        sessions: SessionSealer,
        journal: Journal,
        ttl: timedelta = timedelta(hours=1),
    ) -> None:
        self._verifier = verifier
        self._sessions = sessions
        self._journal = journal
        self._ttl = ttl

    def matches(self, wire: WireRequest) -> bool:
        return wire.method == "POST" and wire.path == PATH

    async def handle(self, wire: WireRequest) -> WireResponse:
        started = time.perf_counter()
        form = dict(parse_qsl(wire.body.decode("utf-8", "replace"), max_num_fields=20))
        request = RequestInfo(
            id=wire.request_id,
            protocol=PROTOCOL,
            operation="ExchangeToken",
            source_ip=wire.source_ip,
            user_agent=wire.user_agent,
        )
        if form.get("grant_type") != GRANT_TYPE or (
            form.get("subject_token_type") not in SUBJECT_TOKEN_TYPES
        ):
            problem = f"grant_type must be {GRANT_TYPE} and subject_token_type a JWT or id_token"
            return await self._refuse(request, started, "invalid_request", problem, "bad_request")
        try:
            principal = await self._verifier.verify(form.get("subject_token", "").strip())
        except AuthError as exc:
            return await self._refuse(
                request,
                started,
                "invalid_grant",
                exc.message,
                exc.kind.value,
                PrincipalInfo(id=None, auth_method="oidc", attributes=exc.claimed),
            )
        session = self._sessions.issue(principal, ttl=self._ttl, method=EXCHANGE_METHOD)
        # The session's id (never its token) tells one bearer's calls apart.
        event = issued(request, session, started, session_id=session.access_key_id)
        if not await record(self._journal, event):
            return _json(503, {"error": "temporarily_unavailable"})
        expires_in = int(self._ttl.total_seconds())
        return _json(
            200,
            {
                "access_token": BEARER_PREFIX + session.token,
                "issued_token_type": ISSUED_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": expires_in,
            },
        )

    async def _refuse(
        self,
        request: RequestInfo,
        started: float,
        error: str,
        description: str,
        reason: str,
        principal: PrincipalInfo | None = None,
    ) -> WireResponse:
        who = principal or PrincipalInfo(id=None, auth_method="oidc")
        if not await record(self._journal, refused(request, started, who, reason, description)):
            return _json(503, {"error": "temporarily_unavailable"})
        return _json(400, {"error": error, "error_description": description[:500]})


def _json(status: int, body: object) -> WireResponse:
    return WireResponse(
        status=status,
        body=orjson.dumps(body),
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
    )
