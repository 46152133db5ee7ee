"""Azure Key Vault's secrets REST surface, as azure-keyvault-secrets and the other
official clients send it (``/secrets/...``, ``/deletedsecrets/...``).

Which vault a request is for comes from :class:`VaultRoutes` (its Host name, a path
prefix, or the default vault); the operation from the shared route table
(:mod:`keyledger.backends.azure.routes`). Policy names a secret
``{backend}:{vault}/{name}``, the name in lower case: Key Vault's names are
case-insensitive, so ``PROD-db`` and ``prod-db`` are one secret to policy as to the vault.
A restore brings back a secret named only inside an opaque backup, so it is authorised
as a write on ``{vault}/*``: on every secret of the vault.

Authentication starts with Key Vault's challenge: a request without credentials gets
``401`` with ``WWW-Authenticate: Bearer authorization=..., resource=...`` and is not an
authentication failure (the SDKs always begin so); every other 401 carries the challenge
too, as Key Vault's do. Errors are ``{"error": {"code", "message"}}`` with Key Vault's codes
and statuses, so the SDKs raise their usual exceptions; a refusal is never a status they
retry (408, 429, 5xx).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

import orjson

from keyledger.backends import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    SecretNotFound,
)
from keyledger.backends.azure import OPERATIONS, route_for
from keyledger.backends.azure.routes import (
    API_VERSIONS,
    MAX_PAGE_SIZE,
    valid_name,
    valid_version,
)
from keyledger.backends.errors import StoreCredentialsError
from keyledger.model import Action, SecretRef, SecretRequest, SecretResult
from keyledger.proxy.errors import AccessDenied, AuthError, ErrorKind, ProxyError, RequestError
from keyledger.proxy.frontends.json_body import MAX_DEPTH, too_deep
from keyledger.proxy.wire import Call, FrontendDefaults, WireRequest, WireResponse, caller_text

__all__ = ["ACTIONS", "AzureFrontend", "Vault", "VaultRoutes"]

CONTENT_TYPE = "application/json; charset=utf-8"

# The policy action each operation needs.
ACTIONS: Mapping[str, Action] = {
    "GetSecret": Action.READ,
    # A backup holds every version's value (sealed by Key Vault): as much a read as a get.
    "BackupSecret": Action.READ,
    "GetSecretVersions": Action.DESCRIBE,
    "GetDeletedSecret": Action.DESCRIBE,
    "GetSecrets": Action.LIST,
    "GetDeletedSecrets": Action.LIST,
    "SetSecret": Action.WRITE,
    "UpdateSecret": Action.WRITE,
    "RecoverDeletedSecret": Action.WRITE,
    "RestoreSecret": Action.WRITE,
    "DeleteSecret": Action.DELETE,
    # Purging cannot be undone: as much a deletion as the delete before it.
    "PurgeDeletedSecret": Action.DELETE,
}
_LISTINGS = frozenset({"GetSecrets", "GetDeletedSecrets"})
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
_SKIPTOKEN_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Vault:
    """A vault as a request reaches it: the backend serving it, its name there, and the
    path prefix it was reached under ("" when by Host name or by default)."""

    backend: str
    name: str
    prefix: str = ""


class VaultRoutes:
    """Which vault a request is for: by its Host name, else a path prefix, else the
    default vault."""

    def __init__(
        self,
        *,
        hosts: Mapping[str, tuple[str, str]],
        paths: Mapping[str, tuple[str, str]],
        default: tuple[str, str] | None,
    ) -> None:
        self._hosts = {host.lower(): pair for host, pair in hosts.items()}
        # Longest first: /a/b is tried before /a.
        self._paths = sorted(paths.items(), key=lambda item: -len(item[0]))
        self._default = default

    @property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(prefix for prefix, _ in self._paths)

    def locate(self, host: str, path: str) -> tuple[Vault, str] | None:
        """The vault and the path relative to it, or None when none is configured."""
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        by_host = self._hosts.get(name.lower().rstrip("."))
        if by_host is not None:
            return Vault(*by_host), path
        for prefix, pair in self._paths:
            if path.startswith(f"{prefix}/"):
                return Vault(*pair, prefix=prefix), path[len(prefix) :]
        if self._default is not None:
            return Vault(*self._default), path
        return None


class AzureFrontend(FrontendDefaults):
    protocol = "azure"
    operations = frozenset(OPERATIONS)

    def __init__(self, routes: VaultRoutes, *, authority: str, resource: str) -> None:
        self._routes = routes
        self._challenge = f'Bearer authorization="{authority}", resource="{resource}"'

    def challenge(self, wire: WireRequest) -> WireResponse | None:
        """Key Vault's first answer to a client that sent no credentials (a verified client
        certificate is one)."""
        if wire.headers.get("authorization") or wire.peer_certificate is not None:
            return None
        return _error(
            401,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
            headers={"WWW-Authenticate": self._challenge},
        )

    def operation_name(self, wire: WireRequest) -> str:
        located = self._routes.locate(wire.headers.get("host", ""), wire.path)
        found = route_for(wire.method, located[1]) if located else None
        if found is not None:
            return found.operation.name
        return caller_text(f"{wire.method} {wire.path}", limit=128) or "(none)"

    def parse(self, wire: WireRequest) -> Call:
        host = wire.headers.get("host", "")
        if not _HOST.fullmatch(host):
            raise RequestError("The request has no valid Host header.")
        located = self._routes.locate(host, wire.path)
        if located is None:
            raise RequestError(
                f"keyledger serves no vault at {caller_text(host, limit=100)}",
                kind=ErrorKind.UNKNOWN_OPERATION,
            )
        vault, path = located
        route = route_for(wire.method, path)
        if route is None:
            raise RequestError(
                f"{wire.method} {caller_text(path, limit=200)} is not a Key Vault secrets "
                "operation",
                kind=ErrorKind.UNKNOWN_OPERATION,
            )
        op = route.operation
        if route.name is not None and not valid_name(route.name):
            raise RequestError(
                f"The secret name {caller_text(route.name, limit=130)!r} is not valid: it "
                "must be 1-127 letters, digits and dashes."
            )
        if route.version and not valid_version(route.version):
            raise RequestError(
                f"The secret version {caller_text(route.version, limit=70)!r} is not valid."
            )
        query = _query(wire.query, pages=op.pages)
        body = _json_object(wire.body) if op.body else None
        base = f"{wire.scheme}://{host}"
        action = ACTIONS[op.name]
        if route.name is not None:
            ref: SecretRef | None = SecretRef(vault.backend, f"{vault.name}/{route.name.lower()}")
        elif op.name == "RestoreSecret":
            ref = SecretRef(vault.backend, f"{vault.name}/*")
        else:
            ref = None
        request = SecretRequest(
            action=action,
            ref=ref,
            operation=op.name,
            params={
                "vault": vault.name,
                "name": route.name,
                "version": route.version,
                "query": query,
                "body": body,
                "id_base_url": base,
                "base_url": base + vault.prefix,
            },
            version=route.version or None,
        )
        return Call(
            operation=op.name,
            action=action,
            backend=vault.backend,
            targets=(ref,) if ref is not None else (),
            request=request,
            filter_results=op.name in _LISTINGS,
            # The answer's ids are written with the URL the caller used: part of the key.
            cache_variant=(route.version or "", base, base + vault.prefix)
            if op.name == "GetSecret"
            else None,
        )

    def empty_result(self, call: Call) -> SecretResult:
        return SecretResult(data={"status": 200, "body": {"value": [], "nextLink": None}})

    def render(
        self,
        call: Call,
        result: SecretResult,
        *,
        hidden: Set[SecretRef],
        denied: Set[SecretRef],
        request_id: str,
    ) -> WireResponse:
        status, body = result.data["status"], result.data["body"]
        headers = {"x-ms-request-id": request_id}
        if body is None:
            return WireResponse(status=status, body=b"", headers=headers)
        if hidden and isinstance(body, dict) and isinstance(body.get("value"), list):
            # The page without what policy hides; its nextLink kept, so paging goes on.
            kept = [
                entry
                for entry, ref in zip(body["value"], _listed(call, body["value"]), strict=True)
                if ref not in hidden
            ]
            body = {**body, "value": kept}
        return WireResponse(
            status=status,
            body=orjson.dumps(body),
            headers={"Content-Type": CONTENT_TYPE, **headers},
        )

    def render_error(self, error: ProxyError | BackendError, *, request_id: str) -> WireResponse:
        status, code, message = _status_for(error)
        headers = {"x-ms-request-id": request_id}
        if status == 401:
            headers["WWW-Authenticate"] = self._challenge
        elif status == 429:
            headers["Retry-After"] = "1"  # azure-core waits this long, not its own backoff
        return _error(status, code, message, headers=headers)


def _listed(call: Call, entries: list[Any]) -> list[SecretRef | None]:
    """The secret each entry of a page names, as policy names it."""
    vault = call.request.params["vault"]
    refs: list[SecretRef | None] = []
    for entry in entries:
        secret_id = entry.get("id") if isinstance(entry, dict) else None
        parts = [p for p in secret_id.split("/")[3:] if p] if isinstance(secret_id, str) else []
        refs.append(
            SecretRef(call.backend, f"{vault}/{parts[1].lower()}") if len(parts) >= 2 else None
        )
    return refs


def _error(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
) -> WireResponse:
    body = {"error": {"code": code, "message": message[:1000]}}
    return WireResponse(
        status=status,
        body=orjson.dumps(body),
        headers={"Content-Type": CONTENT_TYPE, **(headers or {})},
    )


_REQUEST_STATUS: Mapping[ErrorKind, tuple[int, str]] = {
    ErrorKind.UNKNOWN_OPERATION: (404, "NotFound"),
    ErrorKind.BAD_REQUEST: (400, "BadParameter"),
    ErrorKind.MALFORMED_BODY: (400, "BadParameter"),
    ErrorKind.TOO_LARGE: (400, "BadParameter"),
    # Not 408: the SDKs would send the same slow body again.
    ErrorKind.TIMEOUT: (400, "BadParameter"),
    ErrorKind.ACCESS_DENIED: (403, "Forbidden"),
    ErrorKind.THROTTLED: (429, "Throttled"),
    ErrorKind.AUDIT_UNAVAILABLE: (503, "ServiceUnavailable"),
    ErrorKind.INTERNAL: (500, "InternalServerError"),
}


def _status_for(error: ProxyError | BackendError) -> tuple[int, str, str]:
    """The status, code and message one error is answered with."""
    if isinstance(error, StoreCredentialsError):
        # keyledger's own identity: nothing the caller or a retry can fix.
        return 403, "Forbidden", error.message
    if isinstance(error, BackendError):
        if isinstance(error, BackendUnavailable):
            status = error.status if error.status >= 429 else 503
            return status, error.code or "ServiceUnavailable", error.message
        if error.code is not None:
            return error.status, error.code, error.message
        if isinstance(error, SecretNotFound):
            return 404, "SecretNotFound", error.message
        if isinstance(error, BackendConflict):
            return 409, "Conflict", error.message
        if isinstance(error, InvalidBackendRequest):
            return 400, "BadParameter", error.message
        return 500, "InternalServerError", error.message
    if isinstance(error, AuthError):
        return 401, "Unauthorized", error.message
    if isinstance(error, AccessDenied):
        return 403, "Forbidden", f"Access denied by keyledger: {error.message}"
    status, code = _REQUEST_STATUS.get(error.kind, (400, "BadParameter"))
    return status, code, error.message


def _query(query: tuple[tuple[str, str], ...], *, pages: bool) -> tuple[tuple[str, str], ...]:
    """The query parameters forwarded: api-version (required, one Key Vault knows), and for
    a listing maxresults (1-25) and $skiptoken (from a nextLink)."""
    given = dict(query)
    version = given.get("api-version")
    if version is None:
        raise RequestError("The api-version query parameter is required.")
    if version not in API_VERSIONS:
        raise RequestError(
            f"The specified version ({caller_text(version, limit=40)}) is not recognized: "
            f"use one of {', '.join(sorted(API_VERSIONS))}."
        )
    kept = [("api-version", version)]
    if pages and "maxresults" in given:
        text = given["maxresults"]
        if not re.fullmatch(r"[0-9]{1,2}", text) or not 1 <= int(text) <= MAX_PAGE_SIZE:
            raise RequestError(
                f"maxresults must be between 1 and {MAX_PAGE_SIZE}, not "
                f"{caller_text(text, limit=20)!r}."
            )
        kept.append(("maxresults", text))
    if pages and "$skiptoken" in given:
        token = given["$skiptoken"]
        if len(token) > _SKIPTOKEN_LIMIT:
            raise RequestError("The $skiptoken is too long.")
        kept.append(("$skiptoken", token))
    return tuple(kept)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        raise RequestError(
            "The request body is not valid JSON.", kind=ErrorKind.MALFORMED_BODY
        ) from None
    if not isinstance(parsed, dict):
        raise RequestError("The request body must be a JSON object.", kind=ErrorKind.MALFORMED_BODY)
    if too_deep(parsed, body):
        raise RequestError(
            f"The request body nests deeper than {MAX_DEPTH} levels.",
            kind=ErrorKind.MALFORMED_BODY,
        )
    return parsed
