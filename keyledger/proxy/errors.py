"""Errors the proxy raises on the request path; each frontend renders them in its protocol.

::

    ProxyError                    ``kind`` names what went wrong, protocol-neutrally
    ├── AuthError                 authentication failed (audited as ``auth_failure``)
    ├── RequestError              the request cannot be understood or is too large
    ├── AccessDenied              the policy said no
    └── AuditUnavailable          the audit event could not be made durable: fail closed

Backend failures arrive as :class:`keyledger.backends.BackendError` and are rendered by the
same frontend function.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from keyledger.model import SecretRef

__all__ = [
    "AccessDenied",
    "AuditUnavailable",
    "AuthError",
    "ErrorKind",
    "ProxyError",
    "RequestError",
]


class ErrorKind(enum.StrEnum):
    MISSING_AUTH = "missing_authentication"
    MALFORMED_AUTH = "malformed_authentication"
    UNKNOWN_KEY = "unknown_access_key"
    BAD_SIGNATURE = "signature_mismatch"
    EXPIRED = "request_expired"
    BAD_SCOPE = "credential_scope"
    # Bearer tokens: each refusal its own kind, so an auth_failure event tells a stale
    # deployment (expired, revoked) from guessing (unknown, mismatch).
    UNKNOWN_TOKEN = "unknown_token"  # noqa: S105 (an error code)
    BAD_TOKEN = "token_mismatch"  # noqa: S105 (an error code)
    REVOKED_TOKEN = "revoked_token"  # noqa: S105 (an error code)
    EXPIRED_TOKEN = "token_expired"  # noqa: S105 (an error code)
    # OIDC tokens (workload identities) add theirs.
    NOT_YET_VALID = "token_not_yet_valid"
    UNKNOWN_ISSUER = "unknown_issuer"
    UNKNOWN_SIGNING_KEY = "unknown_signing_key"
    WRONG_AUDIENCE = "wrong_audience"
    UNKNOWN_OPERATION = "unknown_operation"
    BAD_REQUEST = "bad_request"
    MALFORMED_BODY = "malformed_body"
    TOO_LARGE = "request_too_large"
    TIMEOUT = "request_timeout"
    ACCESS_DENIED = "access_denied"
    THROTTLED = "throttled"  # a rate limit (limits.rate): the SDKs back off and retry
    AUDIT_UNAVAILABLE = "audit_unavailable"
    INTERNAL = "internal"


class ProxyError(Exception):
    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind


class AuthError(ProxyError):
    """For the audit event: ``principal_hint`` names the identity the credential belongs to
    (None when nobody recognised it), ``claimed`` what the caller presented (a key id, a
    token's issuer), and ``method`` the sign-in method that refused it, when the
    authenticator tries more than one (a keyledger token or an OIDC JWT).
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        principal_hint: str | None = None,
        claimed: Mapping[str, str] | None = None,
        method: str | None = None,
    ) -> None:
        super().__init__(message, kind=kind)
        self.principal_hint = principal_hint
        self.claimed: Mapping[str, str] = claimed or {}
        self.method = method


class RequestError(ProxyError):
    kind = ErrorKind.BAD_REQUEST


class Throttled(ProxyError):
    """A rate limit (``limits.rate``) is spent: the SDKs back off and try again."""

    kind = ErrorKind.THROTTLED


class AccessDenied(ProxyError):
    """The policy said no; the frontend words it the way its cloud would."""

    kind = ErrorKind.ACCESS_DENIED

    def __init__(
        self, *, principal: str, operation: str, ref: SecretRef | None, explicit: bool
    ) -> None:
        why = (
            "an explicit deny in a keyledger policy"
            if explicit
            else "no keyledger policy allows it"
        )
        super().__init__(f"{principal} may not {operation} {ref or '*'}: {why}")
        self.principal = principal
        self.operation = operation
        self.ref = ref
        self.explicit = explicit


class AuditUnavailable(ProxyError):
    kind = ErrorKind.AUDIT_UNAVAILABLE
