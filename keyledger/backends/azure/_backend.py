"""The Azure backend: one aio SecretClient per vault, sending Key Vault's own requests.

Requests go through ``SecretClient.send_request``: the SDK's pipeline (challenge
authentication with keyledger's credential, its user agent, TLS), with the caller's
operation, api-version and JSON body as sent, so answers come back exactly as Key Vault
writes them, whatever the api-version.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote

import orjson
import structlog
from azure.core import exceptions
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest
from azure.keyvault.secrets.aio import SecretClient

from keyledger.backends._trouble import CredentialTrouble
from keyledger.backends.azure._credentials import make_credential, scope_for
from keyledger.backends.azure._errors import error_parts, map_error
from keyledger.backends.azure._links import VaultLinks
from keyledger.backends.azure._settings import AzureSettings
from keyledger.backends.azure.routes import OPERATIONS, Operation
from keyledger.backends.errors import (
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    StoreCredentialsError,
    StoreCredentialsMissing,
)
from keyledger.model import SecretItem, SecretRef, SecretRequest, SecretResult

__all__ = ["AzureBackend"]

log = structlog.get_logger("keyledger.backends.azure")

# The query parameters a call may carry to the vault (paging and the api-version).
FORWARDED_QUERY = frozenset({"api-version", "maxresults", "$skiptoken"})
_FIX_CREDENTIALS = (
    "give keyledger an Azure identity: AZURE_TENANT_ID, AZURE_CLIENT_ID and "
    "AZURE_CLIENT_SECRET (or AZURE_FEDERATED_TOKEN_FILE for workload identity), a managed "
    "identity, or `az login`"
)


class SessionLender(Protocol):
    """The proxy's HTTP client, lending the aiohttp session azure-core sends on (started
    before the backend, closed after it): its pool, and its TLS trust (a private CA's, for
    a stand-in), which azure-core would otherwise build again for every request."""

    @property
    def session(self) -> Any: ...


class AzureBackend:
    """The :class:`~keyledger.backends.Backend` for Azure Key Vault secrets."""

    def __init__(self, settings: AzureSettings, *, http: SessionLender) -> None:
        self.name = settings.name
        self._settings = settings
        self._http = http
        self._vaults = dict(settings.vaults)
        self._clients: dict[str, SecretClient] = {}
        self._credential: Any = None
        self._trouble = CredentialTrouble(backend=settings.name, log=log)

    async def start(self) -> None:
        settings = self._settings
        self._credential = make_credential(settings.credentials, client_id=settings.client_id)
        standin = settings.credentials == "standin"
        for vault, url in self._vaults.items():
            self._clients[vault] = SecretClient(
                url,
                self._credential,
                # Timeouts on the transport: a client given one ignores its own.
                transport=AioHttpTransport(
                    session=self._http.session,
                    session_owner=False,
                    connection_timeout=settings.timeout_s,
                    read_timeout=settings.timeout_s,
                ),
                # The caller's SDK retries with its own deadline; retrying here too would
                # multiply attempts.
                retry_total=0,
                # A stand-in's challenge names Azure's resource, not its loopback address.
                verify_challenge_resource=not standin,
            )
        if not standin:
            await self._sign_in()

    async def _sign_in(self) -> None:
        """A token now, so a missing identity fails start-up, naming what was tried."""
        scope = scope_for(next(iter(self._vaults.values())))
        try:
            await self._credential.get_token(scope)
        except exceptions.ClientAuthenticationError as exc:
            raise StoreCredentialsMissing(
                f"keyledger has no Azure credentials of its own for backend '{self.name}' "
                f"(it never uses the caller's): {_FIX_CREDENTIALS}. "
                # What azure-identity tried, each credential and why it failed: all of it.
                f"{_first_lines(exc, limit=8000)}"
            ) from exc

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()
        if self._credential is not None:
            with contextlib.suppress(Exception):
                await self._credential.close()

    async def resolve(self, ref: SecretRef) -> SecretRef:
        # A Key Vault secret has one name: no aliases.
        return ref

    async def check(self) -> None:
        for vault, url in self._vaults.items():
            links = VaultLinks(url, url, url)
            await self._send(vault, OPERATIONS["GetSecrets"], links, query=[("maxresults", "1")])

    async def call(self, request: SecretRequest) -> SecretResult:
        op = OPERATIONS.get(request.operation)
        if op is None:
            raise InvalidBackendRequest(
                f"keyledger does not forward {request.operation[:100]!r} to Key Vault",
                code="BadParameter",
            )
        params = request.params
        vault, name = params.get("vault"), params.get("name")
        if vault not in self._vaults:
            raise InvalidBackendRequest(
                f"backend '{self.name}' serves no vault named {str(vault)[:100]!r}",
                code="BadParameter",
            )
        if (
            request.ref is not None
            and name is not None
            and (request.ref.name != f"{vault}/{name}".lower())
        ):
            raise InvalidBackendRequest(
                f"{op.name} names {vault}/{name} but was authorised for {request.ref.name}",
                code="BadParameter",
            )
        links = VaultLinks(self._vaults[vault], params["id_base_url"], params["base_url"])
        status, body = await self._send(
            vault,
            op,
            links,
            name=name,
            version=params.get("version"),
            query=params.get("query", ()),
            body=params.get("body"),
        )
        return SecretResult(
            data={"status": status, "body": body},
            items=_items(self.name, vault, op, name, body),
        )

    async def _send(
        self,
        vault: str,
        op: Operation,
        links: VaultLinks,
        *,
        name: str | None = None,
        version: str | None = None,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """Key Vault's status and JSON answer (vault URLs moved onto the caller's)."""
        sent = [(k, v) for k, v in query if k in FORWARDED_QUERY]
        url = op.path(name, version)
        if sent:
            # Encoded here: send_request keeps a query it is given as it is.
            url += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in sent)
        request = HttpRequest(
            op.http_method,
            url,
            content=orjson.dumps(body) if op.body else None,
            headers={"Content-Type": "application/json"} if op.body else None,
        )
        try:
            # One bound for the whole call, TLS handshake and the challenge round included.
            async with asyncio.timeout(self._settings.timeout_s):
                response = await self._clients[vault].send_request(request)
            # Not streamed: the body is read already (read() again fails on an empty one,
            # a purge's 204).
            raw = response.content
        except exceptions.ClientAuthenticationError as exc:
            raise self._refused(op, exc) from exc
        except (exceptions.AzureError, TimeoutError, ValueError) as exc:
            # ValueError: a challenge naming another resource than the vault's domain.
            raise BackendUnavailable(
                links.text(f"Azure Key Vault could not be reached: {_first_lines(exc)}"),
                code="ServiceUnavailable",
            ) from exc
        answer = _json(raw)
        if response.status_code >= 400:
            code, inner, message = error_parts(answer)
            error = map_error(response.status_code, code, inner, links.text(message[:1000]))
            if isinstance(error, StoreCredentialsError):
                self._trouble.report(
                    error,
                    cause=f"{response.status_code}:{code}:{inner}",
                    why=f"{op.name}: {response.status_code} {code} {inner}: {message[:300]}",
                )
            raise error
        self._trouble.succeeded()
        return response.status_code, links.body(answer)

    def _refused(self, op: Operation, exc: Exception) -> BackendError:
        error = StoreCredentialsMissing(
            f"keyledger could not get an Azure token for backend '{self.name}': {_FIX_CREDENTIALS}"
        )
        self._trouble.report(error, cause="token", why=f"{op.name}: {_first_lines(exc)}")
        return error


def _json(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _first_lines(exc: Exception, limit: int = 1500) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return " ".join(text.split())[:limit]


def _name_and_version(secret_id: Any) -> tuple[str, str | None] | None:
    """``https://v/secrets/{name}[/{version}]`` (or ``/deletedsecrets/{name}``)."""
    if not isinstance(secret_id, str):
        return None
    parts = [p for p in secret_id.split("/")[3:] if p]
    if len(parts) < 2 or parts[0] not in ("secrets", "deletedsecrets"):
        return None
    return parts[1], parts[2] if len(parts) > 2 else None


def _items(
    backend: str, vault: str, op: Operation, asked: str | None, body: Any
) -> tuple[SecretItem, ...]:
    """The secrets an answer is about: each one of a listing of secrets; the one secret of
    anything else (a version listing too: policy is per secret), with the version an answer
    names and, for a secret's bundle, its value (to fingerprint)."""

    def item(name: str, version: str | None = None, value: bytes | None = None) -> SecretItem:
        # Key Vault's names are case-insensitive: policy names them in lower case.
        ref = SecretRef(backend, f"{vault}/{name.lower()}")
        return SecretItem(ref=ref, version_id=version, value=value)

    if op.pages and op.name != "GetSecretVersions":
        entries = body.get("value", []) if isinstance(body, dict) else []
        named = (_name_and_version(e.get("id")) for e in entries if isinstance(e, dict))
        return tuple(item(found[0]) for found in named if found is not None)
    if asked is None:
        # RestoreSecret: authorised on the whole vault (the backup is opaque), so the
        # answer names no secret it was authorised on.
        return ()
    found = _name_and_version(body.get("id")) if isinstance(body, dict) else None
    version = found[1] if found is not None and not op.pages else None
    value = body.get("value") if op.name in ("GetSecret", "SetSecret") else None
    served = value.encode() if isinstance(value, str) else None
    return (item(found[0] if found else asked, version, served),)
