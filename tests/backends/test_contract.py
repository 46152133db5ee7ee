"""The Backend contract, written once, run against every store keyledger fronts.

A backend speaks its store's own vocabulary in ``SecretRequest.operation`` and ``params``
(so responses round-trip exactly), so each store brings a :class:`Speaker` that phrases
the canonical calls -- create, read, list, delete -- in that vocabulary. Everything the
gateway relies on is then asserted the same way for every backend: the secrets an answer
names (with the value only where one was served), vendor errors mapped to ``BackendError``
kinds, plain names resolved without a lookup, readiness that fails when the store is gone.

AWS runs against a real moto server, Google against its stand-in over gRPC, Azure against
its Key Vault stand-in over TLS. Where a store words a step differently (Google creates a
secret and its value in two calls; Key Vault never refuses a set as a conflict), its speaker
says so in the requests it phrases, and every test still runs for every store.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
from google.cloud.secretmanager_v1.types import Replication, Secret, SecretPayload, service

from keyledger.backends import (
    Backend,
    BackendConflict,
    BackendUnavailable,
    SecretNotFound,
)
from keyledger.backends.aws import AwsBackend, AwsSettings
from keyledger.backends.azure import AzureBackend, AzureSettings
from keyledger.backends.azure_standin import Store, ThreadedAzureStandin
from keyledger.backends.gcp import GcpBackend, GcpSettings
from keyledger.backends.gcp_standin import ThreadedGcpStandin
from keyledger.devtls import DevTls, ensure_dev_tls, server_context
from keyledger.model import Action, SecretRef, SecretRequest
from keyledger.proxy.http_client import AiohttpTransport

VALUE = "contract-value-7f3a"  # a canary: must not appear where values never go


class Speaker(Protocol):
    """How a store's backend is built, and the canonical calls in its vocabulary."""

    backend: str  # the name the backend is configured under
    secret: str  # a secret name valid in this store (name rules differ per cloud)

    async def make(self, *, reachable: bool) -> Backend:
        """A started backend: on the test's store, or on an address nobody listens on."""
        ...

    async def close(self) -> None: ...

    def create(self, name: str, value: str) -> Sequence[SecretRequest]:
        """The requests that make a secret holding ``value``, in order (Google takes two:
        the secret, then its first version)."""
        ...

    def conflicting(self, name: str, value: str) -> Sequence[SecretRequest]:
        """Requests on ``name``, which exists, whose last one the store refuses because
        ``name`` is taken (AWS and Google: creating it again)."""
        ...

    def read(self, name: str) -> SecretRequest: ...

    def list(self) -> SecretRequest: ...

    def delete(self, name: str) -> SecretRequest: ...


def closed_port() -> int:
    """A loopback port nothing listens on (bound a moment ago, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AwsSpeaker:
    moto_url: str
    backend: str = "aws-contract"
    secret: str = "contract/db-password"

    def __post_init__(self) -> None:
        self._transports: list[AiohttpTransport] = []

    async def make(self, *, reachable: bool) -> Backend:
        transport = AiohttpTransport(timeout_s=5)
        await transport.start()
        self._transports.append(transport)
        url = self.moto_url if reachable else f"http://127.0.0.1:{closed_port()}"
        backend = AwsBackend(
            AwsSettings(
                name=self.backend,
                region="us-east-1",
                endpoint_url=url,
                static_credentials=("keyledger-proxy", "keyledger-proxy-secret"),
            ),
            transport=transport,
        )
        await backend.start()
        return backend

    async def close(self) -> None:
        for transport in self._transports:
            await transport.close()

    def _request(
        self, action: Action, name: str | None, operation: str, **params: Any
    ) -> SecretRequest:
        ref = SecretRef(self.backend, name) if name is not None else None
        return SecretRequest(action=action, ref=ref, operation=operation, params=params)

    def create(self, name: str, value: str) -> Sequence[SecretRequest]:
        return [self._request(Action.WRITE, name, "CreateSecret", Name=name, SecretString=value)]

    def conflicting(self, name: str, value: str) -> Sequence[SecretRequest]:
        return self.create(name, value)

    def read(self, name: str) -> SecretRequest:
        return self._request(Action.READ, name, "GetSecretValue", SecretId=name)

    def list(self) -> SecretRequest:
        return self._request(Action.LIST, None, "ListSecrets")

    def delete(self, name: str) -> SecretRequest:
        return self._request(
            Action.DELETE, name, "DeleteSecret", SecretId=name, ForceDeleteWithoutRecovery=True
        )


@dataclass
class GcpSpeaker:
    """Google's vocabulary, on the stand-in, in a real project of the test's own.

    Google creates a secret and its value in two calls: CreateSecret, then AddSecretVersion.
    """

    standin: ThreadedGcpStandin
    backend: str = "gcp-contract"
    secret: str = "keyledger-demo/contract-db-password"
    real_project: str = field(default_factory=lambda: f"contract-{uuid.uuid4().hex[:12]}")

    async def make(self, *, reachable: bool) -> Backend:
        endpoint = self.standin.grpc_target if reachable else f"127.0.0.1:{closed_port()}"
        backend = GcpBackend(
            GcpSettings(
                name=self.backend,
                endpoint=endpoint,
                projects={"keyledger-demo": self.real_project},
                credentials="anonymous",
                timeout_s=5,
            )
        )
        await backend.start()
        return backend

    async def close(self) -> None:
        """Nothing to release: the stand-in belongs to the fixture."""

    def _request(
        self, action: Action, name: str | None, operation: str, message: Any
    ) -> SecretRequest:
        ref = SecretRef(self.backend, name) if name is not None else None
        return SecretRequest(
            action=action, ref=ref, operation=operation, params={"request": message}
        )

    @staticmethod
    def _resource(name: str) -> str:
        project, secret = name.split("/", 1)
        return f"projects/{project}/secrets/{secret}"

    def create(self, name: str, value: str) -> Sequence[SecretRequest]:
        project, secret_id = name.split("/", 1)
        secret = service.CreateSecretRequest(
            parent=f"projects/{project}",
            secret_id=secret_id,
            secret=Secret(replication=Replication(automatic=Replication.Automatic())),
        )
        version = service.AddSecretVersionRequest(
            parent=self._resource(name), payload=SecretPayload(data=value.encode())
        )
        return [
            self._request(Action.WRITE, name, "CreateSecret", secret),
            self._request(Action.WRITE, name, "AddSecretVersion", version),
        ]

    def conflicting(self, name: str, value: str) -> Sequence[SecretRequest]:
        return self.create(name, value)[:1]  # CreateSecret; a new version is no conflict

    def read(self, name: str) -> SecretRequest:
        latest = f"{self._resource(name)}/versions/latest"
        message = service.AccessSecretVersionRequest(name=latest)
        return self._request(Action.READ, name, "AccessSecretVersion", message)

    def list(self) -> SecretRequest:
        message = service.ListSecretsRequest(parent="projects/keyledger-demo")
        return self._request(Action.LIST, None, "ListSecrets", message)

    def delete(self, name: str) -> SecretRequest:
        message = service.DeleteSecretRequest(name=self._resource(name))
        return self._request(Action.DELETE, name, "DeleteSecret", message)


@dataclass
class AzureSpeaker:
    """Key Vault's vocabulary (operationIds, the path's name, the api-version in the query),
    on the stand-in over TLS, through a vault the backend calls ``payments``.

    Key Vault never refuses a set as a conflict: setting an existing secret adds a version.
    Its conflict is a set on a name that is deleted but still recoverable (soft delete), so
    :meth:`conflicting` deletes first. Policy names secrets ``{vault}/{name}`` in lower case.
    """

    standin: ThreadedAzureStandin
    ca: Path
    backend: str = "azure-contract"
    secret: str = "payments/contract-db-password"
    caller_url: str = "https://kv.keyledger.test:8443"  # the caller's view of the vault

    def __post_init__(self) -> None:
        self._transports: list[AiohttpTransport] = []

    async def make(self, *, reachable: bool) -> Backend:
        # As the app lends it: started before the backend, closed after it.
        transport = AiohttpTransport(timeout_s=5, ca_file=self.ca, decompress=False)
        await transport.start()
        self._transports.append(transport)
        url = self.standin.url if reachable else f"https://127.0.0.1:{closed_port()}"
        backend = AzureBackend(
            AzureSettings(
                name=self.backend, vaults={"payments": url}, credentials="standin", timeout_s=5
            ),
            http=transport,
        )
        await backend.start()
        return backend

    async def close(self) -> None:
        for transport in self._transports:
            await transport.close()

    def _request(
        self, action: Action, name: str | None, operation: str, body: Any = None
    ) -> SecretRequest:
        vault, secret = name.split("/", 1) if name is not None else ("payments", None)
        return SecretRequest(
            action=action,
            ref=SecretRef(self.backend, name) if name is not None else None,
            operation=operation,
            params={
                "vault": vault,
                "name": secret,
                "version": "" if operation == "GetSecret" else None,
                "query": (("api-version", "7.6"),),
                "body": body,
                "id_base_url": self.caller_url,
                "base_url": self.caller_url,
            },
        )

    def create(self, name: str, value: str) -> Sequence[SecretRequest]:
        return [self._request(Action.WRITE, name, "SetSecret", {"value": value})]

    def conflicting(self, name: str, value: str) -> Sequence[SecretRequest]:
        return [self.delete(name), *self.create(name, value)]

    def read(self, name: str) -> SecretRequest:
        return self._request(Action.READ, name, "GetSecret")

    def list(self) -> SecretRequest:
        return self._request(Action.LIST, None, "GetSecrets")

    def delete(self, name: str) -> SecretRequest:
        return self._request(Action.DELETE, name, "DeleteSecret")


def emptied(store: Store) -> None:
    """Every secret of the stand-in's vault deleted and purged, live or soft-deleted."""
    while page := store.list_secrets(limit=25).items:
        for version in page:
            store.delete_secret(version.name)
    while deleted := store.list_deleted_secrets(limit=25).items:
        for gone in deleted:
            store.purge_deleted_secret(gone.latest.name)


@pytest.fixture(scope="module")
def gcp_standin() -> Iterator[ThreadedGcpStandin]:
    with ThreadedGcpStandin() as standin:
        yield standin


@pytest.fixture(scope="module")
def azure_tls(tmp_path_factory: pytest.TempPathFactory) -> DevTls:
    return ensure_dev_tls(tmp_path_factory.mktemp("azure-tls"))


@pytest.fixture(scope="module")
def azure_standin(azure_tls: DevTls) -> Iterator[ThreadedAzureStandin]:
    context = server_context(azure_tls.cert, azure_tls.key)
    with ThreadedAzureStandin(ssl_context=context) as standin:
        yield standin


@pytest.fixture(params=["aws", "gcp", "azure"])
def speaker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Speaker]:
    """Each store's speaker, on a store emptied for the test."""
    if request.param == "aws":
        request.getfixturevalue("store")  # moto, reset
        yield AwsSpeaker(request.getfixturevalue("moto_url"))
    elif request.param == "gcp":
        # One stand-in for the module; each test's project is new, so empty.
        yield GcpSpeaker(request.getfixturevalue("gcp_standin"))
    elif request.param == "azure":
        # One stand-in for the module (one vault), emptied for each test. Only the CA given
        # is trusted: the machine's CA overrides must not decide.
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        standin: ThreadedAzureStandin = request.getfixturevalue("azure_standin")
        emptied(standin.store)
        yield AzureSpeaker(standin, request.getfixturevalue("azure_tls").ca_cert)


@pytest.fixture
async def backend(speaker: Speaker) -> AsyncIterator[Backend]:
    made = await speaker.make(reachable=True)
    yield made
    await made.close()
    await speaker.close()


async def create(backend: Backend, speaker: Speaker, name: str) -> None:
    """Make ``name`` holding VALUE through the backend, step by step."""
    for step in speaker.create(name, VALUE):
        await backend.call(step)


class TestBackendContract:
    def test_is_a_backend(self, backend: Backend, speaker: Speaker) -> None:
        """It implements the Protocol and answers to the name it was configured under."""
        assert isinstance(backend, Backend)
        assert backend.name == speaker.backend

    async def test_a_read_names_the_secret_and_carries_its_value(
        self, backend: Backend, speaker: Speaker
    ) -> None:
        """What a read serves is named as policy names it (backend:name), with its value
        (for the fingerprint) and the version served."""
        await create(backend, speaker, speaker.secret)

        result = await backend.call(speaker.read(speaker.secret))

        (item,) = result.items
        assert item.ref == SecretRef(speaker.backend, speaker.secret)
        assert item.value == VALUE.encode()
        assert item.version_id
        assert VALUE not in repr(result)
        assert VALUE not in repr(item)

    async def test_a_listing_names_every_secret_without_values(
        self, backend: Backend, speaker: Speaker
    ) -> None:
        """A listing's items name each secret, so the gateway can filter it by policy, and
        carry no value (nothing is fingerprinted as served)."""
        names = [f"{speaker.secret}-{n}" for n in range(3)]
        for name in names:
            await create(backend, speaker, name)

        result = await backend.call(speaker.list())

        assert sorted(str(item.ref) for item in result.items) == [
            str(SecretRef(speaker.backend, name)) for name in sorted(names)
        ]
        assert all(item.value is None for item in result.items)

    async def test_a_missing_secret_is_secret_not_found(
        self, backend: Backend, speaker: Speaker
    ) -> None:
        """The store's own not-found becomes SecretNotFound, never a vendor exception."""
        with pytest.raises(SecretNotFound):
            await backend.call(speaker.read(f"{speaker.secret}-missing"))

    async def test_a_taken_name_is_a_conflict(self, backend: Backend, speaker: Speaker) -> None:
        """The store's "that name is taken" (already exists; for Key Vault, deleted but
        recoverable) becomes BackendConflict."""
        await create(backend, speaker, speaker.secret)
        *before, last = speaker.conflicting(speaker.secret, VALUE)
        for step in before:
            await backend.call(step)

        with pytest.raises(BackendConflict):
            await backend.call(last)

    async def test_a_deleted_secret_is_gone(self, backend: Backend, speaker: Speaker) -> None:
        """A delete goes through, and a read afterwards is SecretNotFound."""
        await create(backend, speaker, speaker.secret)

        await backend.call(speaker.delete(speaker.secret))

        with pytest.raises(SecretNotFound):
            await backend.call(speaker.read(speaker.secret))

    async def test_a_plain_name_resolves_to_itself(
        self, backend: Backend, speaker: Speaker
    ) -> None:
        """Policies name secrets by name: a plain name comes back as it is, on this backend."""
        ref = SecretRef(speaker.backend, speaker.secret)

        assert await backend.resolve(ref) == ref

    async def test_check_passes_on_a_store_that_answers(self, backend: Backend) -> None:
        """Readiness: a reachable store passes."""
        await backend.check()

    async def test_an_unreachable_store_is_unavailable(self, speaker: Speaker) -> None:
        """Readiness and calls against a store nobody answers for raise BackendUnavailable
        (so the gateway answers with its cloud's retryable error), not a vendor error."""
        gone = await speaker.make(reachable=False)
        try:
            with pytest.raises(BackendUnavailable):
                await gone.check()
            with pytest.raises(BackendUnavailable):
                await gone.call(speaker.read(speaker.secret))
        finally:
            await gone.close()
            await speaker.close()
