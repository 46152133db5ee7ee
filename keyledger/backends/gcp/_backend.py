"""The GCP backend: SecretManagerServiceAsyncClient over gRPC, on the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import grpc
import structlog
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth import credentials as ga_credentials
from google.auth import exceptions as auth_exceptions
from google.cloud.secretmanager_v1 import SecretManagerServiceAsyncClient
from google.cloud.secretmanager_v1.services.secret_manager_service import transports
from google.cloud.secretmanager_v1.types import service

# No stubs are published for protobuf's runtime.
from google.protobuf import empty_pb2  # type: ignore[import-untyped]

from keyledger.backends._trouble import CredentialTrouble
from keyledger.backends.errors import (
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    StoreCredentialsError,
    StoreCredentialsMissing,
)
from keyledger.backends.gcp._errors import code_of, map_error
from keyledger.backends.gcp._names import Projects, ResourceName
from keyledger.backends.gcp._operations import (
    OPERATIONS,
    Operation,
    items,
    names_back,
    outgoing,
    target,
)
from keyledger.backends.gcp._settings import (
    DEFAULT_ENDPOINT,
    GcpSettings,
    is_loopback,
    split_endpoint,
)
from keyledger.model import SecretRef, SecretRequest, SecretResult

__all__ = ["GcpBackend"]

log = structlog.get_logger("keyledger.backends.gcp")

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# How long "no credentials" stands before Google's chain is asked again: off GCP, every ask
# would wait for the metadata server to time out.
MISSING_CREDENTIALS_TTL_S = 5.0
# Causes already logged; a bound, since a store message may name a secret.
_FIX_MISSING = (
    "set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, run it with a "
    "service account on Google Cloud, or use 'gcloud auth application-default login'"
)


def _missing_message(backend: str) -> str:
    return (
        f"keyledger has no Google credentials of its own for backend '{backend}' (it never "
        f"uses the caller's): {_FIX_MISSING}"
    )


class GcpBackend:
    """The :class:`~keyledger.backends.Backend` for Google Cloud Secret Manager."""

    def __init__(self, settings: GcpSettings) -> None:
        self.name = settings.name
        self._settings = settings
        self._projects = Projects(settings.projects)
        self._endpoint = settings.endpoint or DEFAULT_ENDPOINT
        host, _ = split_endpoint(self._endpoint)
        self._loopback = is_loopback(host)
        self._client: SecretManagerServiceAsyncClient | None = None
        self._client_lock = asyncio.Lock()
        self._default_project: str | None = None  # the credentials' own, for readiness
        self._missing_since: float | None = None  # when Google's chain last found nothing
        self._trouble = CredentialTrouble(backend=settings.name, log=log)

    async def start(self) -> None:
        with contextlib.suppress(BackendUnavailable):
            # A warm-up only: without credentials yet, keyledger starts (logging why), is not
            # ready, and every call says why until they appear.
            await self._current_client()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.transport.close()  # type: ignore[no-untyped-call]

    async def resolve(self, ref: SecretRef) -> SecretRef:
        # Google has no aliases: a secret's name is the only name it has.
        return ref

    async def check(self) -> None:
        mapped = self._projects.first
        project = mapped[0] if mapped else self._default_project
        if project is not None:
            request = service.ListSecretsRequest(parent=f"projects/{project}", page_size=1)
            await self._forward(OPERATIONS["ListSecrets"], request)
            return
        # Passing projects through with no project of its own to ask about: the channel
        # coming up is what can be checked without guessing a project.
        client = await self._current_client()
        channel: grpc.aio.Channel = client.transport.grpc_channel  # type: ignore[attr-defined]
        try:
            await asyncio.wait_for(channel.channel_ready(), self._settings.timeout_s)
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"Google Secret Manager at {self._endpoint} did not answer",
                code="UNAVAILABLE",
            ) from exc

    async def call(self, request: SecretRequest) -> SecretResult:
        op = OPERATIONS.get(request.operation)
        if op is None:
            raise InvalidBackendRequest(
                f"keyledger does not forward {request.operation[:100]!r} to Google Secret Manager",
                code="UNIMPLEMENTED",
                status=501,
            )
        message = request.params.get("request")
        asked = target(op, message)
        _check_ref(request.ref, op, asked, message)
        response = await self._forward(op, message, asked=asked)
        return SecretResult(
            data={"response": response}, items=items(self.name, op, asked, response)
        )

    async def _forward(
        self, op: Operation, message: Any, *, asked: ResourceName | None = None
    ) -> Any:
        """Send ``message`` (in the caller's project) to the real project; the answer comes
        back in the caller's project."""
        asked = asked or target(op, message)
        caller = asked.project
        real = self._projects.real(caller)
        client = await self._current_client()
        method = getattr(client, op.method)
        try:
            # retry=None: the caller's SDK already retries UNAVAILABLE with its own deadline;
            # retrying here too would multiply attempts and could hold a request for the
            # SDK default's 60 s, long after the caller gave up.
            response = await method(
                request=outgoing(op, message, asked.in_project(real)),
                retry=None,
                timeout=self._settings.timeout_s,
            )
            if op.pages:
                # The first page, as the store sent it (the pager holds it: no second call).
                async with contextlib.aclosing(response.pages) as pages:
                    response = await anext(pages)
        except (exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
            raise self._failed(op, exc, caller=caller, real=real) from exc
        self._trouble.succeeded()
        if response is None:
            return empty_pb2.Empty()
        names_back(response, lambda name: Projects.back(name, caller=caller, real=real))
        return response

    def _failed(self, op: Operation, exc: Exception, *, caller: str, real: str) -> BackendError:
        if isinstance(exc, auth_exceptions.TransportError):
            # No token: the token endpoint or metadata server could not be reached.
            code, text = "UNAVAILABLE", str(exc)
        elif isinstance(exc, auth_exceptions.GoogleAuthError):
            # A token refresh was refused (a revoked key, a deleted service account): the
            # store was never asked, and nothing the caller did will change it.
            code, text = "UNAUTHENTICATED", str(exc)
        else:
            assert isinstance(exc, exceptions.GoogleAPIError)
            code = code_of(exc)
            text = str(getattr(exc, "message", "") or exc)
        message = Projects.back_in_text(text[:1000], caller=caller, real=real)
        error = map_error(self.name, code, message)
        if isinstance(error, StoreCredentialsError):
            # The store's own words go to the log (they may name the real project and
            # keyledger's service account), never to the caller.
            self._trouble.report(
                error, cause=f"{code}:{text[:200]}", why=f"{op.name}: {code}: {text[:500]}"
            )
        return error

    async def _current_client(self) -> SecretManagerServiceAsyncClient:
        if self._client is not None:
            return self._client
        async with self._client_lock:
            if self._client is not None:
                return self._client
            if self._settings.credentials == "anonymous":
                self._client = self._make_client(None)
                return self._client
            missing_since = self._missing_since
            if (
                missing_since is not None
                and time.monotonic() - missing_since < MISSING_CREDENTIALS_TTL_S
            ):
                raise StoreCredentialsMissing(_missing_message(self.name))
            # google.auth.default may read files and ask the metadata server: off the loop.
            found = await asyncio.to_thread(_default_credentials)
            if isinstance(found, str):
                self._missing_since = time.monotonic()
                error = StoreCredentialsMissing(_missing_message(self.name))
                self._trouble.report(error, cause="missing", why=found)
                raise error
            self._missing_since = None
            credentials, self._default_project = found
            self._client = self._make_client(credentials)
            return self._client

    def _make_client(
        self, credentials: ga_credentials.Credentials | None
    ) -> SecretManagerServiceAsyncClient:
        """A client on the running loop (a grpc.aio channel belongs to the loop it was made
        on): plaintext on loopback only, TLS everywhere else."""
        if not self._loopback:
            return SecretManagerServiceAsyncClient(
                credentials=credentials,
                client_options=ClientOptions(api_endpoint=self._endpoint),
            )
        if credentials is None:
            channel = grpc.aio.insecure_channel(self._endpoint)
        else:
            # Plaintext to loopback that still carries the credentials (grpc sends call
            # credentials only on channels it considers safe; local ones count).
            from google.auth.transport import grpc as auth_grpc
            from google.auth.transport import requests as auth_requests

            plugin = auth_grpc.AuthMetadataPlugin(credentials, auth_requests.Request())  # type: ignore[no-untyped-call]
            channel = grpc.aio.secure_channel(
                self._endpoint,
                grpc.composite_channel_credentials(
                    grpc.local_channel_credentials(),
                    grpc.metadata_call_credentials(plugin),
                ),
            )
        transport = transports.SecretManagerServiceGrpcAsyncIOTransport(channel=channel)
        return SecretManagerServiceAsyncClient(transport=transport)


def _default_credentials() -> tuple[ga_credentials.Credentials, str | None] | str:
    """keyledger's own credentials from Google's chain (and their project), or why none."""
    import google.auth
    from google.oauth2 import service_account

    try:
        credentials, project = google.auth.default(scopes=SCOPES)
    except auth_exceptions.GoogleAuthError as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    if isinstance(credentials, service_account.Credentials):
        # A self-signed JWT, as Google's own clients send: no token exchange per hour.
        credentials = credentials.with_always_use_jwt_access(True)  # type: ignore[no-untyped-call]
    return credentials, project


def _check_ref(ref: SecretRef | None, op: Operation, asked: ResourceName, message: Any) -> None:
    """The request must be about the secret it was authorised on."""
    if ref is None:
        return
    secret = asked.secret or (message.secret_id if op.name == "CreateSecret" else None)
    if secret is None:
        return
    if ref.name != f"{asked.project}/{secret}":
        raise InvalidBackendRequest(
            f"{op.name} names {asked.project}/{secret} but was authorised for {ref.name}",
            code="INVALID_ARGUMENT",
        )
