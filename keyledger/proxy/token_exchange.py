"""OAuth 2.0 token endpoints that trade a workload's OIDC token for a keyledger bearer
token, in the two shapes the cloud SDKs already speak:

- **Google's token exchange** (RFC 8693) at ``/v1/token``: google-auth's ``external_account``
  credentials (a credential file with ``token_url`` pointing here and ``credential_source``
  naming the token file) POST the workload token as ``subject_token``.
- **Microsoft Entra's client-assertion grant** at ``/{tenant}/oauth2/v2.0/token``:
  azure-identity's ``WorkloadIdentityCredential`` (and ``ClientAssertionCredential``) POST
  it as ``client_assertion`` to the authority ``AZURE_AUTHORITY_HOST`` names. They ask for
  nothing else (no discovery document, no instance discovery), and accept any tenant.

Either way the caller uses the ``access_token`` it gets as a bearer token and refreshes it
before it expires, so an unmodified client changes only an endpoint setting.

The workload token must verify against a trusted issuer; the access token is a keyledger
session (``klsess.``...: sealed, good for ``oidc.session_ttl``) naming the token's caller.
Every exchange is audited as STS's are: a ``lifecycle`` event ``credentials_issued``, or an
``auth_failure``. Errors are RFC 6749's JSON (``invalid_grant``, ``invalid_client``,
``invalid_request``), which the SDKs turn into their usual authentication error.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl

import orjson

from keyledger.proxy.audit.events import GeoInfo, PrincipalInfo, RequestInfo
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.auth.oidc import OidcVerifier
from keyledger.proxy.auth.sessions import BEARER_PREFIX, EXCHANGE_METHOD, SessionSealer
from keyledger.proxy.errors import AuthError
from keyledger.proxy.exchanges import issued, record, refused
from keyledger.proxy.wire import WireRequest, WireResponse

__all__ = ["ENTRA_CLIENT_ASSERTION", "GOOGLE_TOKEN_EXCHANGE", "Grant", "TokenExchange"]

JWT_TYPES = frozenset(
    {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"}
)
# What a form field or a recorded value may hold, at most.
_MAX_FIELD = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """One token endpoint's shape: where it is, the form it takes, what it answers."""

    protocol: str  # as audit events name it
    operation: str
    path: re.Pattern[str]
    grant_type: str
    token_field: str  # the form field carrying the workload token
    type_field: str  # the form field saying what kind of token it is
    token_types: frozenset[str]
    # The error for a workload token that does not verify, and its status.
    refusal: str
    refusal_status: int
    answer: Mapping[str, str]  # fields the answer carries beside the token
    recorded: tuple[str, ...] = ()  # form fields kept in the credentials_issued event


GOOGLE_TOKEN_EXCHANGE = Grant(
    protocol="oauth-token-exchange",
    operation="ExchangeToken",
    path=re.compile(r"/v1/token"),
    grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
    token_field="subject_token",  # noqa: S106 (a field name)
    type_field="subject_token_type",
    token_types=JWT_TYPES,
    refusal="invalid_grant",
    refusal_status=400,
    answer={"issued_token_type": "urn:ietf:params:oauth:token-type:access_token"},
)

ENTRA_CLIENT_ASSERTION = Grant(
    protocol="entra-client-assertion",
    operation="GetToken",
    # Any tenant: keyledger is the authority for all of them; the caller's is recorded.
    path=re.compile(r"/(?P<tenant>[A-Za-z0-9._-]{1,100})/oauth2/v2\.0/token"),
    grant_type="client_credentials",
    token_field="client_assertion",  # noqa: S106 (a field name)
    type_field="client_assertion_type",
    token_types=frozenset({"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}),
    refusal="invalid_client",
    refusal_status=401,
    answer={},
    recorded=("client_id", "scope"),
)


class TokenExchange:
    """Answers one grant's token requests; records every one."""

    def __init__(
        self,
        grant: Grant,
        *,
        verifier: OidcVerifier,
        sessions: SessionSealer,
        journal: Journal,
        ttl: timedelta = timedelta(hours=1),
        geo: Callable[[str], GeoInfo | None] | None = None,
    ) -> None:
        self._grant = grant
        self._geo = geo  # where a caller's address is (GeoIP), when configured
        self._verifier = verifier
        self._sessions = sessions
        self._journal = journal
        self._ttl = ttl

    def matches(self, wire: WireRequest) -> bool:
        return wire.method == "POST" and self._grant.path.fullmatch(wire.path) is not None

    async def handle(self, wire: WireRequest) -> WireResponse:
        grant = self._grant
        started = time.perf_counter()
        form = dict(parse_qsl(wire.body.decode("utf-8", "replace"), max_num_fields=20))
        request = wire.audited_as(grant.protocol, grant.operation, self._geo)
        if form.get("grant_type") != grant.grant_type or (
            form.get(grant.type_field) not in grant.token_types
        ):
            problem = (
                f"grant_type must be {grant.grant_type} and {grant.type_field} one of "
                f"{', '.join(sorted(grant.token_types))}"
            )
            return await self._refuse(request, started, "invalid_request", 400, problem)
        try:
            principal = await self._verifier.verify(form.get(grant.token_field, "").strip())
        except AuthError as exc:
            who = PrincipalInfo(id=None, auth_method="oidc", attributes=exc.claimed)
            return await self._refuse(
                request,
                started,
                grant.refusal,
                grant.refusal_status,
                exc.message,
                exc.kind.value,
                who,
            )
        session = self._sessions.issue(principal, ttl=self._ttl, method=EXCHANGE_METHOD)
        # The session's id (never its token) tells one bearer's calls apart.
        event = issued(
            request,
            session,
            started,
            session_id=session.access_key_id,
            **self._recorded(wire, form),
        )
        if not await record(self._journal, event):
            return _json(503, {"error": "temporarily_unavailable"})
        return _json(
            200,
            {
                "access_token": BEARER_PREFIX + session.token,
                "token_type": "Bearer",
                "expires_in": int(self._ttl.total_seconds()),
                **grant.answer,
            },
        )

    def _recorded(self, wire: WireRequest, form: Mapping[str, str]) -> dict[str, str]:
        """What the caller said about itself (its client id, the scope, the tenant)."""
        kept = {name: form[name][:_MAX_FIELD] for name in self._grant.recorded if name in form}
        match = self._grant.path.fullmatch(wire.path)
        if match is not None and "tenant" in match.groupdict():
            kept["tenant"] = match["tenant"]
        return kept

    async def _refuse(
        self,
        request: RequestInfo,
        started: float,
        error: str,
        status: int,
        description: str,
        reason: str = "bad_request",
        principal: PrincipalInfo | None = None,
    ) -> WireResponse:
        who = principal or PrincipalInfo(id=None, auth_method="oidc")
        if not await record(self._journal, refused(request, started, who, reason, description)):
            return _json(503, {"error": "temporarily_unavailable"})
        return _json(status, {"error": error, "error_description": description[:500]})


def _json(status: int, body: object) -> WireResponse:
    return WireResponse(
        status=status,
        body=orjson.dumps(body),
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
    )
