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
import re
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
from keyledger.backends._trouble import CredentialTrouble
from keyledger.backends.errors import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    SecretNotFound,
    StoreCredentialsError,
    StoreCredentialsMissing,
    StoreCredentialsRefused,
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
# The store does not accept *our* credentials: a keyledger misconfiguration, not the
# caller's fault (codes of the JSON protocol, of STS/the query protocol, and of S3-style
# front ends).
_CREDENTIALS_REFUSED = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
    "AuthFailure",
}
# keyledger's own role lacks a permission (IAM or a KMS key policy): the caller did nothing
# wrong, and the store's message would name keyledger's role.
_PERMISSION_REFUSED = {"AccessDeniedException", "AccessDenied"}
# A store (or what fronts it) answering these refused the request itself, whatever its body.
_REFUSED_STATUSES = {401, 403}
# How long "no credentials" stands before boto3's chain is asked again: without it every
# call would wait for the instance metadata service to time out (~1 s off EC2).
MISSING_CREDENTIALS_TTL_S = 5.0
_XML_CODE = re.compile(rb"<Code>([A-Za-z0-9_.:#-]{1,128})</Code>")

_FIX_MISSING = (
    "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or give it an instance role"
)


def _missing_message(backend: str) -> str:
    return (
        f"keyledger has no AWS credentials of its own for backend '{backend}' (it never uses "
        f"the caller's): {_FIX_MISSING}"
    )


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
        self._missing_since: float | None = None  # when boto3's chain last found nothing
        self._trouble = CredentialTrouble(backend=settings.name, log=log)
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
            # keyledger starts (logging why), is not ready, and every call says why until
            # they appear.
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
                missing_since = self._missing_since
                if (
                    missing_since is not None
                    and time.monotonic() - missing_since < MISSING_CREDENTIALS_TTL_S
                ):
                    raise StoreCredentialsMissing(_missing_message(self.name))
                found = await asyncio.to_thread(self._fetch_credentials)
                if isinstance(found, str):
                    self._missing_since = time.monotonic()
                    error = StoreCredentialsMissing(_missing_message(self.name))
                    self._trouble.report(error, cause="missing", why=found)
                    raise error
                self._missing_since = None
                self._credentials = creds = found
        return creds

    def _fetch_credentials(self) -> _Credentials | str:
        """keyledger's own credentials from boto3's chain, or why there are none."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._settings.static_credentials is not None:
            key, secret = self._settings.static_credentials
            return _Credentials(key, secret, None, time.monotonic())
        try:
            found = self._botocore.get_credentials()
            frozen = found.get_frozen_credentials() if found is not None else None
        except (BotoCoreError, ClientError) as exc:
            # A profile that names a broken source, an expired SSO login, a refused
            # AssumeRole: botocore's words say which (never the keys themselves).
            why = f"{type(exc).__name__}: {str(exc)[:300]}"
        else:
            if frozen is not None and frozen.access_key and frozen.secret_key:
                return _Credentials(
                    frozen.access_key, frozen.secret_key, frozen.token, time.monotonic()
                )
            why = "none found in the environment, shared config or instance metadata"
        return why

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
            reply = await self._transport.request(
                "POST", self._endpoint, headers=headers, body=body
            )
        except HttpTransportError as exc:
            raise BackendUnavailable(
                f"AWS Secrets Manager at {self._host} did not answer: {exc}",
                code="InternalServiceError",
                status=503,
            ) from exc
        raw, status = reply.body, reply.status
        if status >= 300:
            error, store_code, store_message = _error(
                self.name, status, raw, reply.headers.get("x-amzn-errortype", "")
            )
            if isinstance(error, StoreCredentialsError):
                # Credentials fetched again on the next call: a rotated key or a refreshed
                # role may be there by then.
                self._credentials = None
                why = f"{operation}: {store_code}: {store_message[:500]}"
                self._trouble.report(error, cause=f"{store_code}:{store_message[:200]}", why=why)
            raise error
        self._trouble.succeeded()
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


def _error(backend: str, status: int, raw: bytes, error_type: str) -> tuple[BackendError, str, str]:
    """The error for a store's answer, with the store's own code and message."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    xml_code = _XML_CODE.search(raw[:4096]) if not body else None
    code = str(
        body.get("__type")
        or error_type
        or (xml_code.group(1).decode() if xml_code else "")
        or "InternalServiceError"
    )
    code = code.rsplit("#", 1)[-1].split(":", 1)[0]
    message = str(body.get("message") or body.get("Message") or code)
    if code in _PERMISSION_REFUSED:
        # The operator gets the store's words in the log; the caller no detail of our IAM.
        refused = StoreCredentialsRefused(
            f"AWS Secrets Manager denied keyledger's own role for backend '{backend}' "
            f"({code}), not the caller: grant keyledger's role the permission (see its log)"
        )
        return refused, code, message
    if code in _CREDENTIALS_REFUSED or status in _REFUSED_STATUSES:
        refused = StoreCredentialsRefused(
            f"AWS Secrets Manager refused keyledger's own credentials for backend "
            f"'{backend}' ({code}), not the caller's: fix the AWS credentials keyledger runs "
            "with (see its log)"
        )
        return refused, code, message
    if code in _NOT_FOUND:
        return SecretNotFound(message, code=code, status=status), code, message
    if code in _CONFLICT:
        return BackendConflict(message, code=code, status=status), code, message
    if code in _UNAVAILABLE or status >= 500:
        return BackendUnavailable(message, code=code, status=status), code, message
    return InvalidBackendRequest(message, code=code, status=status), code, message


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
