"""google.api_core's exceptions as :mod:`keyledger.backends.errors` kinds.

``code`` is the gRPC status name (``FAILED_PRECONDITION``) and ``status`` the HTTP status
Google maps it to, so a Google front end can render the error as the store gave it.
"""

from __future__ import annotations

import re

from google.api_core import exceptions

from keyledger.backends.errors import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    SecretNotFound,
    StoreCredentialsRefused,
)

__all__ = ["code_of", "map_error"]

# Google's HTTP status for each gRPC status (google.rpc.Code's documentation).
_HTTP_STATUS = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
# Errors api_core raises without a gRPC status (HTTP-only classes), by the nearest status.
_BY_CLASS: tuple[tuple[type[exceptions.GoogleAPIError], str], ...] = (
    (exceptions.Conflict, "ABORTED"),
    (exceptions.Unauthorized, "UNAUTHENTICATED"),
    (exceptions.Forbidden, "PERMISSION_DENIED"),
    (exceptions.BadRequest, "INVALID_ARGUMENT"),
    (exceptions.RetryError, "DEADLINE_EXCEEDED"),
    (exceptions.GatewayTimeout, "DEADLINE_EXCEEDED"),
)
_NOT_FOUND = {"NOT_FOUND"}
# FAILED_PRECONDITION is a secret in the wrong state (a disabled or destroyed version read,
# a stale etag): the request was well formed, the secret's state refused it, as
# BackendConflict's "wrong state" says.
_CONFLICT = {"ALREADY_EXISTS", "ABORTED", "FAILED_PRECONDITION"}
_INVALID = {"INVALID_ARGUMENT", "OUT_OF_RANGE", "UNIMPLEMENTED"}
# The store does not accept keyledger's own credentials, or its service account lacks a
# role (or the API is off in the project): keyledger's setup, never the caller's fault.
_REFUSED = {"UNAUTHENTICATED", "PERMISSION_DENIED"}
# grpc answers UNAVAILABLE when the credentials plugin fails to get a token; OAuth's own
# error codes say the token endpoint refused keyledger's credentials (a revoked key, a
# deleted service account), which no retry fixes. Unreachable token endpoints stay
# UNAVAILABLE.
_TOKEN_REFUSED = re.compile(
    r"Getting metadata from plugin failed.*"
    r"\b(invalid_grant|invalid_client|unauthorized_client|access_denied)\b",
    re.DOTALL,
)


def code_of(exc: exceptions.GoogleAPIError) -> str:
    status = getattr(exc, "grpc_status_code", None)
    if status is not None:
        return str(status.name)
    for cls, code in _BY_CLASS:
        if isinstance(exc, cls):
            return code
    return "UNAVAILABLE" if not isinstance(exc, exceptions.ClientError) else "INVALID_ARGUMENT"


def map_error(backend: str, code: str, message: str) -> BackendError:
    """The error for a store's refusal ``code``, its ``message`` already in caller terms."""
    status = _HTTP_STATUS.get(code, 503)
    if code == "UNAVAILABLE" and _TOKEN_REFUSED.search(message):
        code = "UNAUTHENTICATED"
    if code in _REFUSED:
        return StoreCredentialsRefused(
            f"Google Secret Manager refused keyledger's own credentials for backend "
            f"'{backend}' ({code}), not the caller's: give the service account keyledger runs "
            "as the Secret Manager role it needs on the project, or fix the credentials it "
            "finds (see its log)"
        )
    if code in _NOT_FOUND:
        return SecretNotFound(message, code=code, status=status)
    if code in _CONFLICT:
        return BackendConflict(message, code=code, status=status)
    if code in _INVALID:
        return InvalidBackendRequest(message, code=code, status=status)
    # UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, DATA_LOSS, CANCELLED and
    # RESOURCE_EXHAUSTED: the store could not answer now; the caller's SDK retries these.
    return BackendUnavailable(message, code=code, status=status)
