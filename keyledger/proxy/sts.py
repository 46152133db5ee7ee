"""AWS STS ``AssumeRoleWithWebIdentity`` on keyledger's endpoint: a workload's OIDC token
traded for short-lived keyledger credentials, as the AWS SDKs do on their own.

With ``AWS_ENDPOINT_URL_STS`` pointing at keyledger, ``AWS_ROLE_ARN`` and
``AWS_WEB_IDENTITY_TOKEN_FILE`` set, boto3, the AWS CLI and the other AWS SDKs send
``Action=AssumeRoleWithWebIdentity`` (STS's query protocol: a form, unsigned) and then sign
Secrets Manager calls with the access key, secret and session token they get back,
refreshing them before they expire.

The token must verify against a trusted issuer (:mod:`keyledger.proxy.auth.oidc`). The role
ARN names a keyledger policy role (``arn:aws:iam::ACCOUNT:role/NAME``, any account; the role
``NAME``); the exchange succeeds only when policy binds the token's caller to that role, and
the session's principal is the token's, with attribute ``role``. Every exchange is audited:
a ``lifecycle`` event ``credentials_issued`` (never the secret), or an ``auth_failure``.
Answers and errors are STS's XML, so the SDKs raise their usual exceptions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from keyledger.model import Principal
from keyledger.proxy.audit.events import (
    GeoInfo,
    PrincipalInfo,
    RequestInfo,
)
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.auth.oidc import OidcVerifier
from keyledger.proxy.auth.sessions import METHOD, Session, SessionSealer
from keyledger.proxy.errors import AuthError, ErrorKind
from keyledger.proxy.exchanges import issued, record, refused
from keyledger.proxy.pipeline import PolicyHolder
from keyledger.proxy.wire import WireRequest, WireResponse, caller_text

__all__ = ["PROTOCOL", "StsEndpoint", "is_sts_request"]

PROTOCOL = "aws-sts"
_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[^:]{0,64}:role/(?:[^/]{1,128}/){0,8}([^/]{1,128})")
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}")
_MIN_TTL_S, _MAX_TTL_S = 900, 43200


def is_sts_request(wire: WireRequest) -> bool:
    """A form-encoded POST (STS's query protocol), where Secrets Manager's is JSON."""
    content_type = wire.headers.get("content-type", "")
    return wire.method == "POST" and content_type.startswith("application/x-www-form-urlencoded")


class _Refusal(Exception):
    """A refused exchange: STS's status and code, and the auth_failure event's reason."""

    def __init__(self, status: int, code: str, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.reason = status, code, message, reason


class StsEndpoint:
    """Answers ``AssumeRoleWithWebIdentity``; records every exchange."""

    def __init__(
        self,
        *,
        verifier: OidcVerifier,
        sessions: SessionSealer,
        policies: PolicyHolder,
        journal: Journal,
        default_ttl: timedelta = timedelta(hours=1),
        max_ttl: timedelta = timedelta(hours=12),
        geo: Callable[[str], GeoInfo | None] | None = None,
    ) -> None:
        self._verifier = verifier
        self._geo = geo  # where a caller's address is (GeoIP), when configured
        self._sessions = sessions
        self._policies = policies
        self._journal = journal
        self._default_ttl = default_ttl
        self._max_ttl = max_ttl

    def matches(self, wire: WireRequest) -> bool:
        return is_sts_request(wire)

    async def handle(self, wire: WireRequest) -> WireResponse:
        started = time.perf_counter()
        form = dict(parse_qsl(wire.body.decode("utf-8", "replace"), max_num_fields=20))
        action = form.get("Action", "")
        operation = action if action == "AssumeRoleWithWebIdentity" else "unknown"
        request = wire.audited_as(PROTOCOL, operation, self._geo)
        claimed: Mapping[str, str] = {}
        principal: Principal | None = None
        try:
            if action != "AssumeRoleWithWebIdentity":
                raise _Refusal(
                    400,
                    "InvalidAction",
                    f"keyledger serves only AssumeRoleWithWebIdentity, not "
                    f"{caller_text(action, limit=64)!r}",
                    "unknown_operation",
                )
            role, ttl = self._request(form)
            try:
                # Token files often end in a newline, which the SDKs send along.
                token = form.get("WebIdentityToken", "").strip()
                principal = await self._verifier.verify(token)
            except AuthError as exc:
                claimed = exc.claimed
                raise _refused_token(exc) from None
            bound = {name for name, _ in self._policies.engine.bindings_of(principal)}
            if role not in bound:
                raise _Refusal(
                    403,
                    "AccessDenied",
                    f"Not authorized to perform sts:AssumeRoleWithWebIdentity: no keyledger "
                    f"policy binds {principal.id} to role {role}",
                    "role_not_bound",
                )
            session = self._sessions.issue(
                Principal(
                    id=principal.id,
                    auth_method=METHOD,
                    groups=principal.groups,
                    attributes={**principal.attributes, "role": role},
                ),
                ttl=ttl,
            )
        except _Refusal as refusal:
            return await self._refuse(wire, request, started, refusal, principal, claimed)
        event = issued(request, session, started, access_key_id=session.access_key_id, role=role)
        if not await record(self._journal, event):
            return _error(503, "ServiceUnavailable", "keyledger cannot write its journal", wire)
        return WireResponse(
            status=200,
            body=_issued(session, role, session.principal, wire.request_id),
            headers={"Content-Type": "text/xml", "x-amzn-RequestId": wire.request_id},
        )

    def _request(self, form: Mapping[str, str]) -> tuple[str, timedelta]:
        if form.get("Version") != "2011-06-15":
            raise _Refusal(
                400, "InvalidParameterValue", "Version must be 2011-06-15", "bad_request"
            )
        match = _ROLE_ARN.fullmatch(form.get("RoleArn", ""))
        if match is None:
            raise _Refusal(
                400,
                "ValidationError",
                "RoleArn must be arn:aws:iam::ACCOUNT:role/NAME, NAME a keyledger policy role",
                "bad_request",
            )
        if not _SESSION_NAME.fullmatch(form.get("RoleSessionName", "")):
            raise _Refusal(400, "ValidationError", "RoleSessionName is required", "bad_request")
        ttl = self._default_ttl
        if "DurationSeconds" in form:
            text = form["DurationSeconds"]
            if not re.fullmatch(r"[0-9]{3,5}", text) or not (_MIN_TTL_S <= int(text) <= _MAX_TTL_S):
                raise _Refusal(
                    400,
                    "ValidationError",
                    f"DurationSeconds must be {_MIN_TTL_S} to {_MAX_TTL_S}",
                    "bad_request",
                )
            ttl = timedelta(seconds=int(text))
        return match[1], min(ttl, self._max_ttl)

    async def _refuse(
        self,
        wire: WireRequest,
        request: RequestInfo,
        started: float,
        refusal: _Refusal,
        principal: Principal | None,
        claimed: Mapping[str, str],
    ) -> WireResponse:
        who = (
            PrincipalInfo.of(principal)
            if principal is not None
            else PrincipalInfo(id=None, auth_method=METHOD, attributes=claimed)
        )
        event = refused(request, started, who, refusal.reason, refusal.message)
        if not await record(self._journal, event):
            return _error(503, "ServiceUnavailable", "keyledger cannot write its journal", wire)
        return _error(refusal.status, refusal.code, refusal.message, wire)


def _refused_token(exc: AuthError) -> _Refusal:
    if exc.kind is ErrorKind.EXPIRED_TOKEN:
        return _Refusal(400, "ExpiredTokenException", exc.message, exc.kind.value)
    return _Refusal(400, "InvalidIdentityToken", exc.message, exc.kind.value)


def _issued(session: Session, role: str, principal: Principal, request_id: str) -> bytes:
    subject = escape(principal.id)
    return (
        f'<AssumeRoleWithWebIdentityResponse xmlns="{_NAMESPACE}">'
        "<AssumeRoleWithWebIdentityResult>"
        f"<SubjectFromWebIdentityToken>{subject}</SubjectFromWebIdentityToken>"
        f"<Audience>{escape(principal.attributes.get('issuer', ''))}</Audience>"
        "<AssumedRoleUser>"
        f"<Arn>arn:aws:sts::000000000000:assumed-role/{escape(role)}/{subject}</Arn>"
        f"<AssumedRoleId>{session.access_key_id}:{subject}</AssumedRoleId>"
        "</AssumedRoleUser>"
        "<Credentials>"
        f"<AccessKeyId>{session.access_key_id}</AccessKeyId>"
        f"<SecretAccessKey>{session.secret_access_key}</SecretAccessKey>"
        f"<SessionToken>{session.token}</SessionToken>"
        f"<Expiration>{session.expires.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>"
        "</Credentials>"
        f"<Provider>{escape(principal.attributes.get('issuer', ''))}</Provider>"
        "</AssumeRoleWithWebIdentityResult>"
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        "</AssumeRoleWithWebIdentityResponse>"
    ).encode()


def _error(status: int, code: str, message: str, wire: WireRequest) -> WireResponse:
    body = (
        f'<ErrorResponse xmlns="{_NAMESPACE}"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{escape(message[:1000])}</Message></Error>"
        f"<RequestId>{wire.request_id}</RequestId></ErrorResponse>"
    ).encode()
    return WireResponse(
        status=status,
        body=body,
        headers={"Content-Type": "text/xml", "x-amzn-RequestId": wire.request_id},
    )
