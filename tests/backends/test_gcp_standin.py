"""The Google stand-in driven by the real GAPIC client, over REST and over gRPC.

Every test runs once per transport against one threaded stand-in, each in a project of its
own. Payload checksums are checked against RFC 3720's CRC32C test vectors, not against the
stand-in's own arithmetic.

Refusals raise different classes per transport, as they do against Google itself: over gRPC
api_core maps the status code (FailedPrecondition, AlreadyExists...), over REST only the HTTP
status (400 BadRequest, 409 Conflict), so there the test also reads the JSON error's status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud.secretmanager_v1 import (
    SecretManagerServiceAsyncClient,
    SecretManagerServiceClient,
)
from google.cloud.secretmanager_v1.services.secret_manager_service import transports
from google.cloud.secretmanager_v1.types import Replication, Secret, SecretPayload, SecretVersion

from keyledger.backends.gcp_standin import GcpStandin, ThreadedGcpStandin

# RFC 3720, B.4: CRC32C of 32 zero bytes, and of the ASCII digits 1 to 9.
ZEROS, ZEROS_CRC = bytes(32), 0x8A9136AA
DIGITS, DIGITS_CRC = b"123456789", 0xE3069283
AUTOMATIC = Replication(automatic=Replication.Automatic())
# Google's status -> (the exception api_core raises over gRPC, the one it raises over REST).
RAISED = {
    "NOT_FOUND": (exceptions.NotFound, exceptions.NotFound),
    "ALREADY_EXISTS": (exceptions.AlreadyExists, exceptions.Conflict),
    "INVALID_ARGUMENT": (exceptions.InvalidArgument, exceptions.BadRequest),
    "FAILED_PRECONDITION": (exceptions.FailedPrecondition, exceptions.BadRequest),
}


@contextmanager
def refused(client: SecretManagerServiceClient, status: str) -> Iterator[None]:
    """The block raises what the client's transport makes of Google's error ``status``."""
    over_grpc, over_rest = RAISED[status]
    with pytest.raises(exceptions.GoogleAPICallError) as caught:
        yield
    if client.transport.kind == "grpc":
        assert type(caught.value) is over_grpc
    else:
        assert type(caught.value) is over_rest
        assert caught.value.response.json()["error"]["status"] == status


@pytest.fixture(scope="module")
def standin() -> Iterator[ThreadedGcpStandin]:
    with ThreadedGcpStandin() as server:
        yield server


@pytest.fixture(params=["rest", "grpc"])
def client(
    request: pytest.FixtureRequest, standin: ThreadedGcpStandin
) -> Iterator[SecretManagerServiceClient]:
    if request.param == "rest":
        rest = SecretManagerServiceClient(
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            transport="rest",
            client_options=ClientOptions(api_endpoint=standin.rest_url),
        )
        with rest:
            yield rest
    else:
        with grpc.insecure_channel(standin.grpc_target) as channel:
            transport = transports.SecretManagerServiceGrpcTransport(channel=channel)
            yield SecretManagerServiceClient(transport=transport)


@pytest.fixture
def project() -> str:
    return f"projects/p-{uuid.uuid4().hex[:12]}"


def make_secret(client: SecretManagerServiceClient, project: str, secret_id: str = "db") -> str:
    return str(
        client.create_secret(
            parent=project, secret_id=secret_id, secret=Secret(replication=AUTOMATIC)
        ).name
    )


class TestSecrets:
    def test_create_echoes_a_fully_qualified_secret(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """CreateSecret answers with the full name, labels, replication, create time and etag."""
        secret = client.create_secret(
            parent=project,
            secret_id="db",
            secret=Secret(replication=AUTOMATIC, labels={"team": "payments"}),
        )
        assert secret.name == f"{project}/secrets/db"
        assert dict(secret.labels) == {"team": "payments"}
        assert "automatic" in secret.replication
        assert secret.create_time.timestamp() > 0
        assert secret.etag
        assert client.get_secret(name=secret.name) == secret

    def test_update_changes_labels_and_the_etag(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """UpdateSecret with update_mask=labels replaces the labels and issues a new etag."""
        before = client.get_secret(name=make_secret(client, project))
        after = client.update_secret(
            secret=Secret(name=before.name, labels={"env": "prod"}),
            update_mask={"paths": ["labels"]},
        )
        assert dict(after.labels) == {"env": "prod"}
        assert after.etag != before.etag
        assert client.get_secret(name=before.name) == after

    def test_list_pages_through_every_secret(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """Seven secrets listed three at a time come in pages of 3, 3 and 1, each named once."""
        created = [make_secret(client, project, f"s{i}") for i in range(7)]
        pages = list(client.list_secrets(request={"parent": project, "page_size": 3}).pages)
        assert [len(page.secrets) for page in pages] == [3, 3, 1]
        assert [bool(page.next_page_token) for page in pages] == [True, True, False]
        assert [s.name for page in pages for s in page.secrets] == created
        assert {page.total_size for page in pages} == {7}

    def test_list_filters_by_name_and_label(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """The filter keeps secrets whose id contains a text, or that carry a label value."""
        for secret_id, env in [("db-main", "prod"), ("db-replica", "dev"), ("api-key", "prod")]:
            client.create_secret(
                parent=project,
                secret_id=secret_id,
                secret=Secret(replication=AUTOMATIC, labels={"env": env}),
            )
        by_name = client.list_secrets(request={"parent": project, "filter": "name:db-"})
        by_label = client.list_secrets(request={"parent": project, "filter": "labels.env=prod"})
        assert [s.name.rsplit("/", 1)[1] for s in by_name] == ["db-main", "db-replica"]
        assert [s.name.rsplit("/", 1)[1] for s in by_label] == ["db-main", "api-key"]

    def test_delete_removes_the_secret_unless_the_etag_is_stale(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """DeleteSecret with a stale etag is refused; without one the secret is gone."""
        name = make_secret(client, project)
        with refused(client, "FAILED_PRECONDITION"):
            client.delete_secret(request={"name": name, "etag": '"stale"'})
        client.delete_secret(name=name)
        with refused(client, "NOT_FOUND"):
            client.get_secret(name=name)

    def test_regional_secrets_are_their_own_namespace(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """A secret under locations/{l} is served by its regional name and not by the global one."""
        regional = client.create_secret(
            parent=f"{project}/locations/europe-west1", secret_id="db", secret=Secret()
        )
        client.add_secret_version(parent=regional.name, payload=SecretPayload(data=DIGITS))
        reply = client.access_secret_version(name=f"{regional.name}/versions/latest")
        assert reply.name == f"{project}/locations/europe-west1/secrets/db/versions/1"
        with refused(client, "NOT_FOUND"):
            client.get_secret(name=f"{project}/secrets/db")


class TestVersions:
    def test_access_latest_and_pinned_with_their_checksums(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """latest reads the newest version, a number reads that one; both carry the right CRC32C."""
        name = make_secret(client, project)
        client.add_secret_version(parent=name, payload=SecretPayload(data=ZEROS))
        client.add_secret_version(parent=name, payload=SecretPayload(data=DIGITS))
        latest = client.access_secret_version(name=f"{name}/versions/latest")
        first = client.access_secret_version(name=f"{name}/versions/1")
        assert (latest.name, latest.payload.data, latest.payload.data_crc32c) == (
            f"{name}/versions/2",
            DIGITS,
            DIGITS_CRC,
        )
        assert (first.name, first.payload.data, first.payload.data_crc32c) == (
            f"{name}/versions/1",
            ZEROS,
            ZEROS_CRC,
        )

    def test_a_matching_checksum_is_accepted_and_remembered(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """A payload sent with its right CRC32C is stored, marked as client-checksummed."""
        name = make_secret(client, project)
        version = client.add_secret_version(
            parent=name, payload=SecretPayload(data=DIGITS, data_crc32c=DIGITS_CRC)
        )
        assert version.client_specified_payload_checksum
        assert version.state == SecretVersion.State.ENABLED

    def test_a_wrong_checksum_is_invalid(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """A payload whose data_crc32c does not match is refused and no version is made."""
        name = make_secret(client, project)
        with refused(client, "INVALID_ARGUMENT"):
            client.add_secret_version(
                parent=name, payload=SecretPayload(data=DIGITS, data_crc32c=DIGITS_CRC ^ 1)
            )
        assert list(client.list_secret_versions(parent=name)) == []

    def test_versions_list_newest_first_in_pages(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """Five versions listed two at a time come newest first in pages of 2, 2 and 1."""
        name = make_secret(client, project)
        for i in range(5):
            client.add_secret_version(parent=name, payload=SecretPayload(data=b"v%d" % i))
        pages = list(client.list_secret_versions(request={"parent": name, "page_size": 2}).pages)
        assert [len(page.versions) for page in pages] == [2, 2, 1]
        numbers = [int(v.name.rsplit("/", 1)[1]) for page in pages for v in page.versions]
        assert numbers == [5, 4, 3, 2, 1]

    def test_disabled_and_destroyed_versions_cannot_be_read(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """Disable blocks access until enabled again; destroy is final and wipes the payload."""
        name = make_secret(client, project)
        version = client.add_secret_version(parent=name, payload=SecretPayload(data=DIGITS)).name
        assert client.disable_secret_version(name=version).state == SecretVersion.State.DISABLED
        with refused(client, "FAILED_PRECONDITION"):
            client.access_secret_version(name=version)
        assert client.enable_secret_version(name=version).state == SecretVersion.State.ENABLED
        assert client.access_secret_version(name=version).payload.data == DIGITS
        destroyed = client.destroy_secret_version(name=version)
        assert destroyed.state == SecretVersion.State.DESTROYED
        assert destroyed.destroy_time.timestamp() > 0
        with refused(client, "FAILED_PRECONDITION"):
            client.access_secret_version(name=version)
        with refused(client, "FAILED_PRECONDITION"):
            client.enable_secret_version(name=version)
        assert client.get_secret_version(name=version).state == SecretVersion.State.DESTROYED


class TestErrors:
    def test_missing_secret_and_version_are_not_found(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """Reading a secret or a version that does not exist raises NotFound."""
        with refused(client, "NOT_FOUND"):
            client.get_secret(name=f"{project}/secrets/nope")
        name = make_secret(client, project)
        with refused(client, "NOT_FOUND"):
            client.access_secret_version(name=f"{name}/versions/latest")
        with refused(client, "NOT_FOUND"):
            client.get_secret_version(name=f"{name}/versions/7")

    def test_creating_a_secret_twice_already_exists(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """A second CreateSecret with the same id raises AlreadyExists."""
        make_secret(client, project)
        with refused(client, "ALREADY_EXISTS"):
            make_secret(client, project)

    def test_a_global_secret_needs_replication(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """CreateSecret without a replication policy raises InvalidArgument."""
        with refused(client, "INVALID_ARGUMENT"):
            client.create_secret(parent=project, secret_id="db", secret=Secret())


class TestIam:
    def test_policy_round_trips_and_permissions_are_granted(
        self, client: SecretManagerServiceClient, project: str
    ) -> None:
        """GetIamPolicy is empty, then what SetIamPolicy stored; every permission tested is held."""
        name = make_secret(client, project)
        assert not client.get_iam_policy(request={"resource": name}).bindings
        binding = {"role": "roles/secretmanager.secretAccessor", "members": ["user:a@example.com"]}
        stored = client.set_iam_policy(
            request={"resource": name, "policy": {"bindings": [binding]}}
        )
        assert client.get_iam_policy(request={"resource": name}) == stored
        asked = ["secretmanager.versions.access", "secretmanager.secrets.get"]
        granted = client.test_iam_permissions(request={"resource": name, "permissions": asked})
        assert list(granted.permissions) == asked


def test_seed_adds_readable_versions(
    standin: ThreadedGcpStandin, client: SecretManagerServiceClient, project: str
) -> None:
    """seed() creates the secrets and adds each value as a new version, readable by the client."""
    project_id = project.split("/")[1]
    assert standin.seed(project_id, {"db": "first"}) == {"db": f"{project}/secrets/db/versions/1"}
    standin.seed(project_id, {"db": b"second"})
    reply = client.access_secret_version(name=f"{project}/secrets/db/versions/latest")
    assert (reply.name, reply.payload.data) == (f"{project}/secrets/db/versions/2", b"second")


async def test_async_grpc_client(project: str) -> None:
    """The asyncio GAPIC client over a grpc.aio channel creates, reads and gets NotFound."""
    async with GcpStandin() as standin:
        channel = grpc.aio.insecure_channel(standin.grpc_target)
        transport = transports.SecretManagerServiceGrpcAsyncIOTransport(channel=channel)
        client = SecretManagerServiceAsyncClient(transport=transport)
        try:
            secret = await client.create_secret(
                parent=project, secret_id="db", secret=Secret(replication=AUTOMATIC)
            )
            await client.add_secret_version(parent=secret.name, payload=SecretPayload(data=DIGITS))
            reply = await client.access_secret_version(name=f"{secret.name}/versions/latest")
            assert (reply.payload.data, reply.payload.data_crc32c) == (DIGITS, DIGITS_CRC)
            with pytest.raises(exceptions.NotFound):
                await client.get_secret(name=f"{project}/secrets/nope")
        finally:
            await channel.close()
