"""The GCP backend against the Google stand-in, over real gRPC sockets.

Callers name their own project (``keyledger-demo``); the store keeps the secrets in the real
one (``real-project``), so every test also shows that the caller never sees the real one,
in the items, in the response messages and in the store's error messages.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions
from google.cloud.secretmanager_v1.types import (
    AccessSecretVersionResponse,
    ListSecretsResponse,
    ListSecretVersionsResponse,
    Replication,
    Secret,
    SecretPayload,
    SecretVersion,
    service,
)
from google.iam.v1 import iam_policy_pb2, policy_pb2  # type: ignore[import-untyped]
from google.protobuf import empty_pb2, field_mask_pb2  # type: ignore[import-untyped]

from keyledger.backends import (
    Backend,
    BackendConflict,
    BackendUnavailable,
    InvalidBackendRequest,
    SecretNotFound,
)
from keyledger.backends.errors import (
    BackendError,
    StoreCredentialsMissing,
    StoreCredentialsRefused,
)
from keyledger.backends.gcp import GcpBackend, GcpSettings
from keyledger.backends.gcp._errors import code_of, map_error
from keyledger.backends.gcp._names import Projects
from keyledger.backends.gcp_standin import GcpStandin
from keyledger.model import Action, SecretItem, SecretRef, SecretRequest, SecretResult

NAME = "gcp-test"
CALLER, REAL = "keyledger-demo", "real-project"
VALUE = "gcp-canary-value-51c9"  # must not appear where values never go
AUTOMATIC = Replication(automatic=Replication.Automatic())
SECRET = f"projects/{CALLER}/secrets/db"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings(endpoint: str, **changes: Any) -> GcpSettings:
    given: dict[str, Any] = {
        "name": NAME,
        "endpoint": endpoint,
        "projects": {CALLER: REAL},
        "credentials": "anonymous",
        "timeout_s": 5.0,
    }
    return GcpSettings(**(given | changes))


def ask(operation: str, message: Any, *, ref: str | None = None) -> SecretRequest:
    return SecretRequest(
        action=Action.READ,
        ref=SecretRef(NAME, ref) if ref is not None else None,
        operation=operation,
        params={"request": message},
    )


def item(secret: str = "db", version: str | None = None, value: str | None = None) -> SecretItem:
    data = value.encode() if value is not None else None
    return SecretItem(ref=SecretRef(NAME, f"{CALLER}/{secret}"), version_id=version, value=data)


@pytest.fixture
async def standin() -> AsyncIterator[GcpStandin]:
    async with GcpStandin() as server:
        yield server


@pytest.fixture
async def backend(standin: GcpStandin) -> AsyncIterator[GcpBackend]:
    made = GcpBackend(settings(standin.grpc_target))
    await made.start()
    yield made
    await made.close()


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


async def call(backend: GcpBackend, operation: str, message: Any) -> SecretResult:
    return await backend.call(ask(operation, message))


class TestReads:
    async def test_access_serves_the_value_named_in_the_callers_project(
        self, backend: GcpBackend, standin: GcpStandin
    ) -> None:
        """AccessSecretVersion of "latest" names the secret and the version number served,
        carries the value, and answers with the caller's project in its name."""
        standin.seed(REAL, {"db": VALUE})
        request = service.AccessSecretVersionRequest(name=f"{SECRET}/versions/latest")

        result = await backend.call(ask("AccessSecretVersion", request, ref=f"{CALLER}/db"))

        response = result.data["response"]
        assert isinstance(response, AccessSecretVersionResponse)
        assert response.name == f"{SECRET}/versions/1"
        assert response.payload.data == VALUE.encode()
        assert result.items == (item(version="1", value=VALUE),)
        assert request.name == f"{SECRET}/versions/latest"  # the caller's message untouched

    async def test_get_secret_and_version(self, backend: GcpBackend, standin: GcpStandin) -> None:
        """GetSecret and GetSecretVersion name the secret (the version too) in the caller's
        project, with no value."""
        standin.seed(REAL, {"db": VALUE})

        secret = await call(backend, "GetSecret", service.GetSecretRequest(name=SECRET))
        version = await call(
            backend,
            "GetSecretVersion",
            service.GetSecretVersionRequest(name=f"{SECRET}/versions/1"),
        )

        assert secret.data["response"].name == SECRET
        assert secret.items == (item(),)
        assert isinstance(version.data["response"], SecretVersion)
        assert version.data["response"].name == f"{SECRET}/versions/1"
        assert version.items == (item(version="1"),)

    async def test_a_listing_names_every_secret_of_one_page(
        self, backend: GcpBackend, standin: GcpStandin
    ) -> None:
        """ListSecrets forwards one page as the store sent it (its token included) and
        names each secret listed, in the caller's project."""
        standin.seed(REAL, {"a": VALUE, "b": VALUE, "c": VALUE})
        standin.seed("someone-else", {"x": VALUE})

        result = await call(
            backend,
            "ListSecrets",
            service.ListSecretsRequest(parent=f"projects/{CALLER}", page_size=2),
        )

        response = result.data["response"]
        assert isinstance(response, ListSecretsResponse)
        assert [s.name for s in response.secrets] == [
            f"projects/{CALLER}/secrets/{s}" for s in ("a", "b")
        ]
        assert response.next_page_token
        assert result.items == (item("a"), item("b"))

    async def test_a_version_listing_names_its_secret_once(
        self, backend: GcpBackend, standin: GcpStandin
    ) -> None:
        """ListSecretVersions names its one secret once, without a version: policy is per
        secret, and no version is served."""
        standin.seed(REAL, {"db": "v1"})
        standin.seed(REAL, {"db": "v2"})

        result = await call(
            backend, "ListSecretVersions", service.ListSecretVersionsRequest(parent=SECRET)
        )

        response = result.data["response"]
        assert isinstance(response, ListSecretVersionsResponse)
        assert [v.name for v in response.versions] == [
            f"{SECRET}/versions/2",
            f"{SECRET}/versions/1",
        ]
        assert result.items == (item(),)

    async def test_regional_secrets_map_the_same_way(
        self, backend: GcpBackend, standin: GcpStandin
    ) -> None:
        """A location-scoped name is translated like a global one; the location stays."""
        standin.seed(REAL, {"db": VALUE}, location="europe-west1")
        regional = f"projects/{CALLER}/locations/europe-west1/secrets/db"

        result = await call(
            backend,
            "AccessSecretVersion",
            service.AccessSecretVersionRequest(name=f"{regional}/versions/1"),
        )

        assert result.data["response"].name == f"{regional}/versions/1"
        assert result.items == (item(version="1", value=VALUE),)


class TestWrites:
    async def test_create_add_update_delete(self, backend: GcpBackend, standin: GcpStandin) -> None:
        """A secret created, given a version, relabelled and deleted through the backend
        lives in the real project, and every answer names it in the caller's."""
        created = await call(
            backend,
            "CreateSecret",
            service.CreateSecretRequest(
                parent=f"projects/{CALLER}", secret_id="db", secret=Secret(replication=AUTOMATIC)
            ),
        )
        added = await call(
            backend,
            "AddSecretVersion",
            service.AddSecretVersionRequest(
                parent=SECRET, payload=SecretPayload(data=VALUE.encode())
            ),
        )
        update = service.UpdateSecretRequest(
            secret=Secret(name=SECRET, labels={"env": "prod"}),
            update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
        )
        updated = await call(backend, "UpdateSecret", update)

        assert created.data["response"].name == SECRET
        assert created.items == (item(),)
        assert added.data["response"].name == f"{SECRET}/versions/1"
        assert added.items == (item(version="1"),)
        assert dict(updated.data["response"].labels) == {"env": "prod"}
        assert updated.data["response"].name == SECRET
        assert update.secret.name == SECRET  # the nested name was changed on a copy only
        assert standin.store.access_version(f"projects/{REAL}/secrets/db/versions/1").payload == (
            VALUE.encode()
        )

        deleted = await call(backend, "DeleteSecret", service.DeleteSecretRequest(name=SECRET))

        assert isinstance(deleted.data["response"], empty_pb2.Empty)
        assert deleted.items == (item(),)
        with pytest.raises(SecretNotFound):
            await call(backend, "GetSecret", service.GetSecretRequest(name=SECRET))

    async def test_version_states(self, backend: GcpBackend, standin: GcpStandin) -> None:
        """Disable, enable and destroy name the version; reading a disabled version is a
        conflict that keeps the store's FAILED_PRECONDITION and its HTTP status."""
        standin.seed(REAL, {"db": VALUE})
        version = f"{SECRET}/versions/1"

        disabled = await call(
            backend, "DisableSecretVersion", service.DisableSecretVersionRequest(name=version)
        )
        with pytest.raises(BackendConflict) as refused:
            await call(
                backend, "AccessSecretVersion", service.AccessSecretVersionRequest(name=version)
            )
        enabled = await call(
            backend, "EnableSecretVersion", service.EnableSecretVersionRequest(name=version)
        )
        destroyed = await call(
            backend, "DestroySecretVersion", service.DestroySecretVersionRequest(name=version)
        )

        assert disabled.data["response"].state == SecretVersion.State.DISABLED
        assert refused.value.code == "FAILED_PRECONDITION"
        assert refused.value.status == 400
        assert REAL not in refused.value.message
        assert enabled.data["response"].state == SecretVersion.State.ENABLED
        assert destroyed.data["response"].state == SecretVersion.State.DESTROYED
        assert destroyed.data["response"].name == version
        assert destroyed.items == (item(version="1"),)

    async def test_iam_calls_name_their_secret(
        self, backend: GcpBackend, standin: GcpStandin
    ) -> None:
        """SetIamPolicy, GetIamPolicy and TestIamPermissions reach the real secret and name
        the caller's."""
        standin.seed(REAL, {"db": VALUE})
        binding = policy_pb2.Binding(
            role="roles/secretmanager.secretAccessor", members=["user:a@example.com"]
        )

        set_ = await call(
            backend,
            "SetIamPolicy",
            iam_policy_pb2.SetIamPolicyRequest(
                resource=SECRET, policy=policy_pb2.Policy(bindings=[binding])
            ),
        )
        got = await call(
            backend, "GetIamPolicy", iam_policy_pb2.GetIamPolicyRequest(resource=SECRET)
        )
        tested = await call(
            backend,
            "TestIamPermissions",
            iam_policy_pb2.TestIamPermissionsRequest(
                resource=SECRET, permissions=["secretmanager.versions.access"]
            ),
        )

        assert list(got.data["response"].bindings) == [binding]
        assert list(tested.data["response"].permissions) == ["secretmanager.versions.access"]
        assert set_.items == got.items == tested.items == (item(),)


class TestProjects:
    async def test_a_project_not_in_the_map_is_refused(
        self, backend: GcpBackend, standin: GcpStandin
    ) -> None:
        """Only mapped projects are served: the real project by its own name is not."""
        standin.seed(REAL, {"db": VALUE})

        for project in ("elsewhere", REAL):
            with pytest.raises(InvalidBackendRequest, match=project):
                await call(
                    backend,
                    "GetSecret",
                    service.GetSecretRequest(name=f"projects/{project}/secrets/db"),
                )

    async def test_pass_through_serves_the_callers_project(self, standin: GcpStandin) -> None:
        """Without a map, the caller's project is the real one."""
        standin.seed("anyone", {"db": VALUE})
        backend = GcpBackend(settings(standin.grpc_target, projects=None))
        await backend.start()
        try:
            result = await call(
                backend,
                "AccessSecretVersion",
                service.AccessSecretVersionRequest(name="projects/anyone/secrets/db/versions/1"),
            )
            await backend.check()  # no project to ask about: the channel is checked
        finally:
            await backend.close()

        assert result.items == (
            SecretItem(ref=SecretRef(NAME, "anyone/db"), version_id="1", value=VALUE.encode()),
        )

    def test_answers_are_taken_back_only_from_the_project_asked(self) -> None:
        """Google answers in the project number as often as the id: both come back as the
        caller's project; a name in any other project is the store misbehaving."""
        back = Projects.back

        assert back(f"projects/{REAL}/secrets/db", caller=CALLER, real=REAL) == SECRET
        assert back("projects/123456/secrets/db/versions/2", caller=CALLER, real=REAL) == (
            f"{SECRET}/versions/2"
        )
        with pytest.raises(BackendUnavailable):
            back("projects/someone-else/secrets/db", caller=CALLER, real=REAL)

    async def test_store_messages_name_the_callers_project(self, backend: GcpBackend) -> None:
        """A not-found keeps the store's words and code, in the caller's project."""
        with pytest.raises(SecretNotFound) as missing:
            await call(backend, "GetSecret", service.GetSecretRequest(name=SECRET))

        assert missing.value.code == "NOT_FOUND"
        assert missing.value.status == 404
        assert SECRET in missing.value.message
        assert REAL not in missing.value.message

    async def test_a_request_must_be_about_its_authorised_secret(
        self, backend: GcpBackend, standin: GcpStandin
    ) -> None:
        """A request whose message names another secret than its ref is refused unsent."""
        standin.seed(REAL, {"db": VALUE})
        request = service.AccessSecretVersionRequest(name=f"{SECRET}/versions/1")

        with pytest.raises(InvalidBackendRequest, match="authorised"):
            await backend.call(ask("AccessSecretVersion", request, ref=f"{CALLER}/other"))

    @pytest.mark.parametrize(
        ("operation", "message"),
        [
            ("RotateSecret", service.RotateSecretRequest(parent=SECRET)),
            ("GetSecret", service.AccessSecretVersionRequest(name=f"{SECRET}/versions/1")),
            ("GetSecret", service.GetSecretRequest(name=f"{SECRET}/versions/1")),
            ("ListSecrets", service.ListSecretsRequest(parent="folders/1")),
        ],
    )
    async def test_what_cannot_be_forwarded_is_refused(
        self, backend: GcpBackend, operation: str, message: Any
    ) -> None:
        """An operation not forwarded, a message of another type, or a name of the wrong
        shape is InvalidBackendRequest, before anything is sent."""
        with pytest.raises(InvalidBackendRequest):
            await call(backend, operation, message)


class TestErrors:
    async def test_already_exists_is_a_conflict(
        self, backend: GcpBackend, standin: GcpStandin
    ) -> None:
        """ALREADY_EXISTS is BackendConflict with the store's code and 409."""
        standin.seed(REAL, {"db": VALUE})
        request = service.CreateSecretRequest(
            parent=f"projects/{CALLER}", secret_id="db", secret=Secret(replication=AUTOMATIC)
        )

        with pytest.raises(BackendConflict) as exists:
            await call(backend, "CreateSecret", request)

        assert (exists.value.code, exists.value.status) == ("ALREADY_EXISTS", 409)
        assert REAL not in exists.value.message

    async def test_invalid_argument_is_an_invalid_request(self, backend: GcpBackend) -> None:
        """INVALID_ARGUMENT (a secret without replication) is InvalidBackendRequest."""
        request = service.CreateSecretRequest(parent=f"projects/{CALLER}", secret_id="db")

        with pytest.raises(InvalidBackendRequest) as invalid:
            await call(backend, "CreateSecret", request)

        assert (invalid.value.code, invalid.value.status) == ("INVALID_ARGUMENT", 400)

    async def test_unauthenticated_is_keyledgers_own_problem(
        self, standin_with_token: GcpStandin, logs: list[MutableMapping[str, Any]]
    ) -> None:
        """A store that wants credentials keyledger did not send refuses keyledger, not the
        caller: StoreCredentialsRefused saying so, logged once with the store's words."""
        backend = GcpBackend(settings(standin_with_token.grpc_target))
        await backend.start()
        try:
            for _ in range(2):
                with pytest.raises(StoreCredentialsRefused) as refused:
                    await call(backend, "GetSecret", service.GetSecretRequest(name=SECRET))
            with pytest.raises(StoreCredentialsRefused):
                await backend.check()
        finally:
            await backend.close()

        assert "keyledger's own credentials" in refused.value.message
        assert "not the caller's" in refused.value.message
        assert "UNAUTHENTICATED" in refused.value.message
        assert [e["event"] for e in logs] == ["store_credentials_refused"]
        assert "OAuth 2" in logs[0]["why"]

    async def test_permission_denied_from_googles_chain(
        self,
        standin_with_token: GcpStandin,
        service_account_file: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Credentials found by Google's chain (a service account key file) and refused
        (PERMISSION_DENIED) are StoreCredentialsRefused too."""
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(service_account_file))
        backend = GcpBackend(settings(standin_with_token.grpc_target, credentials="default"))
        await backend.start()
        try:
            with pytest.raises(StoreCredentialsRefused, match="PERMISSION_DENIED"):
                await call(backend, "GetSecret", service.GetSecretRequest(name=SECRET))
        finally:
            await backend.close()

    async def test_no_credentials_is_store_credentials_missing(
        self,
        standin: GcpStandin,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        logs: list[MutableMapping[str, Any]],
    ) -> None:
        """Nothing in Google's chain: start() still succeeds (logging why), then calls and
        readiness raise StoreCredentialsMissing naming the fix, logged once."""
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
        backend = GcpBackend(settings(standin.grpc_target, credentials="default"))
        await backend.start()
        try:
            with pytest.raises(StoreCredentialsMissing, match="GOOGLE_APPLICATION_CREDENTIALS"):
                await call(backend, "GetSecret", service.GetSecretRequest(name=SECRET))
            with pytest.raises(StoreCredentialsMissing):
                await backend.check()
        finally:
            await backend.close()

        assert [e["event"] for e in logs] == ["store_credentials_missing"]

    @pytest.mark.parametrize("projects", [{CALLER: REAL}, None])
    async def test_an_unreachable_store_is_unavailable(
        self, projects: dict[str, str] | None
    ) -> None:
        """Nobody listening: calls and readiness raise BackendUnavailable (UNAVAILABLE)."""
        backend = GcpBackend(
            settings(f"127.0.0.1:{closed_port()}", projects=projects, timeout_s=0.5)
        )
        await backend.start()
        try:
            with pytest.raises(BackendUnavailable) as gone:
                await call(backend, "GetSecret", service.GetSecretRequest(name=SECRET))
            with pytest.raises(BackendUnavailable):
                await backend.check()
        finally:
            await backend.close()

        assert type(gone.value) is BackendUnavailable
        assert gone.value.code == "UNAVAILABLE"

    @pytest.mark.parametrize(
        ("raised", "kind", "code", "status"),
        [
            (exceptions.NotFound, SecretNotFound, "NOT_FOUND", 404),
            (exceptions.Aborted, BackendConflict, "ABORTED", 409),
            (exceptions.Conflict, BackendConflict, "ABORTED", 409),
            (exceptions.FailedPrecondition, BackendConflict, "FAILED_PRECONDITION", 400),
            (exceptions.OutOfRange, InvalidBackendRequest, "OUT_OF_RANGE", 400),
            (exceptions.MethodNotImplemented, InvalidBackendRequest, "UNIMPLEMENTED", 501),
            (exceptions.DeadlineExceeded, BackendUnavailable, "DEADLINE_EXCEEDED", 504),
            (exceptions.InternalServerError, BackendUnavailable, "INTERNAL", 500),
            (exceptions.ResourceExhausted, BackendUnavailable, "RESOURCE_EXHAUSTED", 429),
            (exceptions.RetryError, BackendUnavailable, "DEADLINE_EXCEEDED", 504),
        ],
    )
    def test_errors_the_standin_cannot_raise(
        self,
        raised: type[exceptions.GoogleAPIError],
        kind: type[BackendError],
        code: str,
        status: int,
    ) -> None:
        """Statuses the stand-in never answers map by the same table."""
        exc = (
            exceptions.RetryError("gave up", cause=None)  # type: ignore[no-untyped-call]
            if raised is exceptions.RetryError
            else raised("the store's words")
        )
        error = map_error(NAME, code_of(exc), str(exc))

        assert type(error) is kind
        assert (error.code, error.status) == (code, status)

    def test_a_token_endpoint_refusing_keyledger_is_refused_credentials(self) -> None:
        """grpc's UNAVAILABLE for a credentials plugin whose token request was refused
        (invalid_grant: a revoked key) is keyledger's credentials refused, not a retryable
        outage; an unreachable token endpoint stays unavailable."""
        plugin = "Getting metadata from plugin failed with error: "
        refused = map_error(NAME, "UNAVAILABLE", plugin + "('invalid_grant: Bad Request', {})")
        unreachable = map_error(NAME, "UNAVAILABLE", plugin + "Connection refused")

        assert type(refused) is StoreCredentialsRefused
        assert "UNAUTHENTICATED" in refused.message
        assert type(unreachable) is BackendUnavailable


class TestSettings:
    def test_anonymous_is_for_loopback_only(self) -> None:
        """No credentials means a stand-in, so only on loopback; Google's own endpoint too."""
        for endpoint in ("secretmanager.googleapis.com:443", "10.0.0.8:8443", None):
            with pytest.raises(ValueError, match="loopback"):
                GcpSettings(endpoint=endpoint, credentials="anonymous")
        for endpoint in ("127.0.0.1:9", "[::1]:9", "localhost:9"):
            GcpSettings(endpoint=endpoint, credentials="anonymous")

    def test_an_empty_map_is_refused(self) -> None:
        """projects: {} would serve nothing; pass-through is spelled by leaving it out."""
        with pytest.raises(ValueError, match="pass projects through"):
            GcpSettings(projects={})


class TestBackend:
    async def test_is_a_backend_that_resolves_without_io(self) -> None:
        """The Protocol, and plain names back unchanged without a store at all."""
        backend = GcpBackend(settings(f"127.0.0.1:{closed_port()}"))
        ref = SecretRef(NAME, f"{CALLER}/db")

        assert isinstance(backend, Backend)
        assert await backend.resolve(ref) == ref

    async def test_a_value_is_never_in_a_repr_or_a_log(
        self, backend: GcpBackend, standin: GcpStandin, logs: list[MutableMapping[str, Any]]
    ) -> None:
        """Writes and reads of a value leave it out of every repr and log line."""
        write = ask(
            "AddSecretVersion",
            service.AddSecretVersionRequest(
                parent=SECRET, payload=SecretPayload(data=VALUE.encode())
            ),
        )
        standin.seed(REAL, {"db": "first"})
        await backend.call(write)
        read = await call(
            backend,
            "AccessSecretVersion",
            service.AccessSecretVersionRequest(name=f"{SECRET}/versions/2"),
        )

        assert read.items[0].value == VALUE.encode()
        for shown in (repr(write), repr(read), repr(read.items), repr(logs)):
            assert VALUE not in shown


@pytest.fixture
async def standin_with_token() -> AsyncIterator[GcpStandin]:
    async with GcpStandin(token="the-stand-ins-token") as server:
        yield server


@pytest.fixture(scope="session")
def service_account_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A service account key file of a freshly made key: Google's chain loads it and signs
    its own tokens with it (self-signed JWTs), so no token endpoint is asked."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path_factory.mktemp("gcp") / "keyledger-sa.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": REAL,
                "private_key_id": "test-key",
                "private_key": pem,
                "client_email": f"keyledger@{REAL}.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return path
