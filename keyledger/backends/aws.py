"""AWS Secrets Manager, reached over its JSON 1.1 wire protocol.

Credentials and the endpoint come from botocore, exactly as boto3 would find them (env,
shared config, SSO, IMDS/ECS roles, ``AWS_ENDPOINT_URL_SECRETS_MANAGER``); both are resolved
in a worker thread so the event loop never blocks on them. Requests go out over the
injected :class:`~keyledger.backends.HttpTransport`, signed with a cached SigV4 key: a boto3
client call costs ~1 ms of CPU under the GIL, which would cap the proxy far below the
store's own throughput.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog

from keyledger import sigv4
from keyledger.backends._http import HttpTransport, HttpTransportError
from keyledger.backends.errors import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    SecretNotFound,
)
from keyledger.model import SecretItem, SecretRef, SecretRequest, SecretResult

__all__ = ["AwsBackend", "AwsSettings"]

log = structlog.get_logger("keyledger.backends.aws")

SERVICE = "secretsmanager"
CONTENT_TYPE = "application/x-amz-json-1.1"
CREDENTIALS_TTL_S = 60.0

_NOT_FOUND = {"ResourceNotFoundException"}
_CONFLICT = {"ResourceExistsException", "PreconditionNotMetException"}
_UNAVAILABLE = {"InternalServiceError", "ServiceUnavailable", "ThrottlingException"}
# The store rejected *our* credentials: a keyledger misconfiguration, not the caller's fault.
_UPSTREAM_AUTH = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
    # keyledger's own role lacks a permission (IAM or a KMS key policy): the caller did
    # nothing wrong, and the message would name keyledger's role.
    "AccessDeniedException",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AwsSettings:
    name: str = "aws"
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    # (access key id, secret) instead of the boto3 chain; for embedded test stores only.
    static_credentials: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class _Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(repr=False)
    fetched_at: float


class AwsBackend:
    """The :class:`~keyledger.backends.Backend` for AWS Secrets Manager."""

    def __init__(self, settings: AwsSettings, *, transport: HttpTransport) -> None:
        self.name = settings.name
        self._settings = settings
        self._transport = transport
        self._keys = sigv4.SigningKeyCache()
        self._botocore: Any = None
        self._credentials: _Credentials | None = None
        self._credentials_lock = asyncio.Lock()
        self._endpoint = ""
        self._host = ""
        self._path = "/"
        self._region = ""

    async def start(self) -> None:
        self._endpoint, self._region = await asyncio.to_thread(self._resolve_endpoint)
        url = urlsplit(self._endpoint)
        self._host = url.netloc
        self._path = url.path or "/"
        with contextlib.suppress(BackendUnavailable):
            # A warm-up only: without credentials yet (an instance role still coming up),
            # keyledger starts, is not ready, and every call says why until they appear.
            await self._current_credentials()

    async def close(self) -> None:
        """Nothing to release: the transport belongs to whoever injected it."""

    def _resolve_endpoint(self) -> tuple[str, str]:
        import botocore.session  # imported lazily: it takes ~100 ms

        session = botocore.session.Session(profile=self._settings.profile)
        self._botocore = session
        client = session.create_client(
            SERVICE,
            region_name=self._settings.region,
            endpoint_url=self._settings.endpoint_url,
        )
        return client.meta.endpoint_url, client.meta.region_name

    async def _current_credentials(self) -> _Credentials:
        creds = self._credentials
        if creds is not None and time.monotonic() - creds.fetched_at < CREDENTIALS_TTL_S:
            return creds
        async with self._credentials_lock:
            creds = self._credentials
            if creds is None or time.monotonic() - creds.fetched_at >= CREDENTIALS_TTL_S:
                creds = await asyncio.to_thread(self._fetch_credentials)
                self._credentials = creds
        return creds

    def _fetch_credentials(self) -> _Credentials:
        if self._settings.static_credentials is not None:
            key, secret = self._settings.static_credentials
            return _Credentials(key, secret, None, time.monotonic())
        found = self._botocore.get_credentials()
        if found is None:
            raise BackendUnavailable(
                "keyledger has no AWS credentials for the secrets backend; configure them "
                "the usual boto3 way (environment, ~/.aws/config profile, or an instance role)",
                code="InternalServiceError",
                status=500,
            )
        frozen = found.get_frozen_credentials()
        return _Credentials(frozen.access_key, frozen.secret_key, frozen.token, time.monotonic())

    async def check(self) -> None:
        await self._send("ListSecrets", {"MaxResults": 1})

    async def resolve(self, ref: SecretRef) -> SecretRef:
        if not ref.name.startswith("arn:"):
            return ref
        # The store decides what an ARN (full or partial) names; we do not parse it. Then
        # the name must lead back to the same secret: an ARN of another account or region
        # would otherwise be authorised as the local secret of the same name.
        parts = ref.name.split(":", 6)
        if len(parts) < 7 or parts[2] != SERVICE or parts[5] != "secret":
            raise InvalidBackendRequest(f"{ref.name[:200]!r} is not a Secrets Manager ARN")
        if parts[3] and parts[3] != self._region:
            raise InvalidBackendRequest(
                "keyledger serves the secrets of its own account and region only",
                code="AccessDeniedException",
            )
        try:
            found = await self._send("DescribeSecret", {"SecretId": ref.name})
        except SecretNotFound as exc:
            # What the ARN may name: as written, or without a 6-character suffix.
            named = parts[6]
            head, dash, suffix = named.rpartition("-")
            candidates = (named, head) if dash and len(suffix) == 6 else (named,)
            raise SecretNotFound(exc.message, code=exc.code, names=candidates) from exc
        name, arn = found.get("Name"), found.get("ARN")
        if not isinstance(name, str) or not isinstance(arn, str):
            raise BackendUnavailable("DescribeSecret returned no Name or ARN", status=502)
        local = await self._send("DescribeSecret", {"SecretId": name})
        if not arn.startswith(ref.name) or local.get("ARN") != arn:
            raise InvalidBackendRequest(
                "keyledger serves the secrets of its own account and region only",
                code="AccessDeniedException",
            )
        return SecretRef(self.name, name)

    async def call(self, request: SecretRequest) -> SecretResult:
        data = await self._send(request.operation, request.params)
        return SecretResult(data=data, items=_items(self.name, request.operation, data))

    async def _send(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        creds = await self._current_credentials()
        body = orjson.dumps(params)
        headers = sigv4.sign_headers(
            keys=self._keys,
            access_key_id=creds.access_key,
            secret_key=creds.secret_key,
            session_token=creds.token,
            region=self._region,
            service=SERVICE,
            method="POST",
            host=self._host,
            path=self._path,
            headers={"content-type": CONTENT_TYPE, "x-amz-target": f"secretsmanager.{operation}"},
            body=body,
            now=datetime.now(UTC),
        )
        try:
            reply = await self._transport.post(self._endpoint, headers=headers, body=body)
        except HttpTransportError as exc:
            raise BackendUnavailable(
                f"AWS Secrets Manager at {self._host} did not answer: {exc}",
                code="InternalServiceError",
                status=503,
            ) from exc
        raw, status = reply.body, reply.status
        if status >= 300:
            raise _error(status, raw, reply.headers.get("x-amzn-errortype", ""))
        try:
            parsed = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            raise BackendUnavailable(
                f"AWS Secrets Manager sent a response that is not JSON (HTTP {status})",
                code="InternalServiceError",
                status=502,
            ) from exc
        if not isinstance(parsed, dict):
            raise BackendUnavailable("unexpected AWS response shape", status=502)
        return parsed


def _error(status: int, raw: bytes, error_type: str) -> BackendError:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("__type") or error_type or "InternalServiceError")
    code = code.rsplit("#", 1)[-1].split(":", 1)[0]
    message = str(body.get("message") or body.get("Message") or code)
    if code in _UPSTREAM_AUTH:
        # The operator needs the store's words; the caller gets no detail of our IAM setup.
        log.warning("store_refused_keyledger", code=code, message=message[:500])
        return BackendUnavailable(
            f"the secrets store refused keyledger's own credentials or permissions ({code}); "
            "see keyledger's log",
            code="InternalServiceError",
            status=500,
        )
    if code in _NOT_FOUND:
        return SecretNotFound(message, code=code, status=status)
    if code in _CONFLICT:
        return BackendConflict(message, code=code, status=status)
    if code in _UNAVAILABLE or status >= 500:
        return BackendUnavailable(message, code=code, status=status)
    return InvalidBackendRequest(message, code=code, status=status)


def _value(entry: Mapping[str, Any]) -> bytes | None:
    if isinstance(entry.get("SecretString"), str):
        return str(entry["SecretString"]).encode()
    if isinstance(entry.get("SecretBinary"), str):
        try:
            return base64.b64decode(entry["SecretBinary"])
        except (binascii.Error, ValueError):
            return str(entry["SecretBinary"]).encode()
    return None


def _item(backend: str, entry: Mapping[str, Any]) -> SecretItem | None:
    name = entry.get("Name")
    if not isinstance(name, str):
        return None
    version = entry.get("VersionId")
    return SecretItem(
        ref=SecretRef(backend, name),
        version_id=version if isinstance(version, str) else None,
        value=_value(entry),
    )


def _items(backend: str, operation: str, data: Mapping[str, Any]) -> tuple[SecretItem, ...]:
    if operation == "ListSecrets":
        entries = data.get("SecretList") or []
    elif operation == "BatchGetSecretValue":
        entries = data.get("SecretValues") or []
    else:
        entries = [data]
    found = (_item(backend, e) for e in entries if isinstance(e, Mapping))
    return tuple(i for i in found if i is not None)
