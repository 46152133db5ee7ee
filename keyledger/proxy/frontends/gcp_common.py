"""What Google's two wire protocols share: the policy action each RPC needs, the secret it
names, the backend serving its project, and the status every error is answered with.

The REST and gRPC front ends differ only in how a request message arrives (JSON on a path,
or protobuf bytes on a method) and how the answer leaves; both hand this module the RPC name
and the SDK's own request message, and get a :class:`Call` in the GCP backend's vocabulary
(see :mod:`keyledger.backends.gcp`): ``operation`` the RPC name, ``params`` ``{"request":
message}``. Policy names a secret ``{backend}:{project}/{secret}``, the project being the
one the caller named.

The parts of a name (project, location, secret, version) and a new secret's id are held to
Google's bounds (letters, digits, ``-`` and ``_``; at most 255 characters) before policy or
an audit event sees them: anything else is INVALID_ARGUMENT, as Google answers it.

Errors are answered with Google's canonical codes, so the SDKs raise their usual
exceptions; a refusal (denied, not authenticated, keyledger's own store credentials) is
never a code the clients retry (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED); a call
past a rate limit is RESOURCE_EXHAUSTED, so that they back off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from typing import Any

import google_crc32c
from google.cloud.secretmanager_v1.types import service

from keyledger.backends import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    SecretNotFound,
)
from keyledger.backends.errors import StoreCredentialsError
from keyledger.backends.gcp import OPERATIONS, ResourceName, parse
from keyledger.backends.gcp.codes import Code
from keyledger.model import Action, SecretRef, SecretRequest, SecretResult
from keyledger.proxy.errors import AccessDenied, AuthError, ErrorKind, ProxyError, RequestError
from keyledger.proxy.wire import Call

__all__ = [
    "ACTIONS",
    "ProjectRoutes",
    "answer",
    "call_for",
    "status_for",
]

# The policy action each RPC needs.
ACTIONS: Mapping[str, Action] = {
    "AccessSecretVersion": Action.READ,
    "GetSecret": Action.DESCRIBE,
    "GetSecretVersion": Action.DESCRIBE,
    "ListSecretVersions": Action.DESCRIBE,
    "GetIamPolicy": Action.DESCRIBE,
    "TestIamPermissions": Action.DESCRIBE,
    "ListSecrets": Action.LIST,
    "CreateSecret": Action.WRITE,
    "AddSecretVersion": Action.WRITE,
    "UpdateSecret": Action.WRITE,
    "DisableSecretVersion": Action.WRITE,
    "EnableSecretVersion": Action.WRITE,
    "SetIamPolicy": Action.WRITE,
    # Destroying a version's data cannot be undone: as much a deletion as DeleteSecret.
    "DestroySecretVersion": Action.DELETE,
    "DeleteSecret": Action.DELETE,
}


# Google's bounds on a secret id, which locations, version ids and aliases stay within too;
# a project may also be a number or domain-scoped (example.com:project).
_PART = re.compile(r"[A-Za-z0-9_-]{1,255}")
_PROJECT = re.compile(r"[A-Za-z0-9_.:-]{1,255}")


class ProjectRoutes:
    """Which backend serves each project callers name.

    Each GCP backend lists the projects it serves (its ``projects`` map); one backend may
    pass every other project through.
    """

    def __init__(self, projects: Mapping[str, str], *, default: str | None = None) -> None:
        self._projects = dict(projects)  # caller project -> backend name
        self._default = default

    def backend_for(self, project: str) -> str:
        backend = self._projects.get(project, self._default)
        if backend is None:
            # Said like Google's answer for a project one may not see: nothing to learn.
            raise RequestError(
                f"Permission denied on project '{project[:100]}' (or it does not exist)",
                kind=ErrorKind.ACCESS_DENIED,
            )
        return backend


def call_for(operation: str, message: Any, routes: ProjectRoutes) -> Call:
    """The canonical call for one RPC and its request message (the SDK's own type)."""
    op = OPERATIONS.get(operation)
    if op is None:
        raise RequestError(
            f"Method {operation[:100]} is not served", kind=ErrorKind.UNKNOWN_OPERATION
        )
    if not isinstance(message, op.request):
        raise RequestError(f"{operation} takes a {op.request.__name__}", kind=ErrorKind.BAD_REQUEST)
    given = message
    for part in op.field.split("."):
        given = getattr(given, part)
    name = parse(given) if isinstance(given, str) else None
    if name is None or name.shape != op.shape:
        raise RequestError(
            f"Invalid resource field value in the request: {op.field} "
            f"{str(given)[:200]!r} is not a {op.shape} name",
            kind=ErrorKind.BAD_REQUEST,
        )
    if not _within_bounds(name):
        # Not quoted: a name is only worth recording once it is one Google could hold.
        raise RequestError(
            f"Invalid resource field value in the request: {op.field} is not a valid "
            f"{op.shape} name (letters, digits, - and _, at most 255 characters per part)",
            kind=ErrorKind.BAD_REQUEST,
        )
    backend = routes.backend_for(name.project)
    action = ACTIONS[operation]
    if operation == "CreateSecret":
        secret: str | None = message.secret_id
        if not secret:
            raise RequestError("secret_id is required", kind=ErrorKind.BAD_REQUEST)
        if not _PART.fullmatch(secret):
            raise RequestError(
                "secret_id must be 1 to 255 letters, digits, - and _", kind=ErrorKind.BAD_REQUEST
            )
    else:
        secret = name.secret
    ref = SecretRef(backend, f"{name.project}/{secret}") if secret else None
    request = SecretRequest(
        action=action,
        ref=ref,
        operation=operation,
        params={"request": message},
        version=name.version,
    )
    return Call(
        operation=operation,
        action=action,
        backend=backend,
        targets=(ref,) if ref is not None else (),
        request=request,
        filter_results=ref is None,
        # The version named ("latest" or a number) is all an access's answer depends on
        # besides the secret; REST and gRPC render the same answer.
        cache_variant=(name.version or "",) if operation == "AccessSecretVersion" else None,
    )


def _within_bounds(name: ResourceName) -> bool:
    location = name.location.removeprefix("/locations/")
    return (
        _PROJECT.fullmatch(name.project) is not None
        and (not location or _PART.fullmatch(location) is not None)
        and all(_PART.fullmatch(part) for part in (name.secret, name.version) if part is not None)
    )


def answer(call: Call, result: SecretResult, hidden: Set[SecretRef]) -> Any:
    """The response message as it leaves keyledger, on either protocol: a listing without
    the secrets policy hides (its next_page_token kept, so paging still works), and an
    accessed payload with its CRC32C, which clients check the value against (the store's
    when it sent one, else computed on a copy: the result stays as served)."""
    response = result.data["response"]
    if isinstance(response, service.AccessSecretVersionResponse):
        if "data_crc32c" in response.payload:
            return response
        checked = service.AccessSecretVersionResponse(response)
        checked.payload.data_crc32c = google_crc32c.value(bytes(checked.payload.data))
        return checked
    if not hidden or not isinstance(response, service.ListSecretsResponse):
        return response
    kept = []
    for secret in response.secrets:
        name = parse(secret.name)
        ref = SecretRef(call.backend, f"{name.project}/{name.secret}") if name else None
        if ref is not None and ref not in hidden:
            kept.append(secret)
    # No total_size: it would tell how many secrets the caller may not see.
    return service.ListSecretsResponse(secrets=kept, next_page_token=response.next_page_token)


_REQUEST_STATUS: Mapping[ErrorKind, Code] = {
    ErrorKind.UNKNOWN_OPERATION: Code.UNIMPLEMENTED,
    ErrorKind.BAD_REQUEST: Code.INVALID_ARGUMENT,
    ErrorKind.MALFORMED_BODY: Code.INVALID_ARGUMENT,
    ErrorKind.TOO_LARGE: Code.INVALID_ARGUMENT,
    ErrorKind.TIMEOUT: Code.DEADLINE_EXCEEDED,
    ErrorKind.ACCESS_DENIED: Code.PERMISSION_DENIED,
    ErrorKind.THROTTLED: Code.RESOURCE_EXHAUSTED,
    ErrorKind.AUDIT_UNAVAILABLE: Code.UNAVAILABLE,
    ErrorKind.INTERNAL: Code.INTERNAL,
}


def status_for(error: ProxyError | BackendError) -> tuple[Code, str]:
    """The status and message one error is answered with, on either protocol."""
    if isinstance(error, StoreCredentialsError):
        # keyledger's own credentials: nothing the caller or a retry can fix.
        return Code.FAILED_PRECONDITION, error.message
    if isinstance(error, BackendError):
        if error.code is not None and error.code in Code.__members__:
            return Code[error.code], error.message
        if isinstance(error, SecretNotFound):
            return Code.NOT_FOUND, error.message
        if isinstance(error, BackendConflict):
            return Code.ALREADY_EXISTS, error.message
        if isinstance(error, InvalidBackendRequest):
            return Code.INVALID_ARGUMENT, error.message
        if isinstance(error, BackendUnavailable):
            return Code.UNAVAILABLE, error.message
        return Code.INTERNAL, error.message
    if isinstance(error, AuthError):
        return Code.UNAUTHENTICATED, error.message
    if isinstance(error, AccessDenied):
        return Code.PERMISSION_DENIED, f"Permission denied: {error.message}"
    return _REQUEST_STATUS.get(error.kind, Code.INVALID_ARGUMENT), error.message
