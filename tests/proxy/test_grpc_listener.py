"""The gRPC listener end to end: Google's own clients, over real sockets, through a real
gateway (bearer tokens, policy, the journal) to the GCP backend on the Google stand-in.

The async client (gRPC only) and the sync client with a gRPC transport send the token as
call metadata, as a service would; every call leaves its audit event, and nothing the
caller may not see, nor any value, reaches the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.fernet import Fernet
from google.api_core import exceptions
from google.cloud.secretmanager_v1 import (
    SecretManagerServiceAsyncClient,
    SecretManagerServiceClient,
)
from google.cloud.secretmanager_v1.services.secret_manager_service import transports
from google.cloud.secretmanager_v1.types import Replication, Secret, SecretPayload, service
from google_crc32c import value as crc32c

from keyledger.backends.gcp import GcpBackend, GcpSettings
from keyledger.backends.gcp_standin import GcpStandin
from keyledger.proxy.audit.events import Fingerprinter
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.auth import BearerAuthenticator, IdentityStore
from keyledger.proxy.frontends.gcp_common import ProjectRoutes
from keyledger.proxy.frontends.gcp_grpc import GcpGrpcFrontend, method_path
from keyledger.proxy.grpc_listener import (
    REQUEST_ID,
    GrpcListener,
    peer_ip,
    server_credentials,
)
from keyledger.proxy.pipeline import Gateway, PolicyHolder
from keyledger.proxy.reload import load_policy
from tests.conftest import journal_events
from tests.e2e.test_tls import self_signed

CALLER, REAL = "keyledger-demo", "real-project"
PROJECT = f"projects/{CALLER}"
DB = f"{PROJECT}/secrets/app-db"
FIRST = "grpc-canary-first-7d21"  # canaries: never in the journal
LATEST = "grpc-canary-latest-0b9e"
MAX_MESSAGE = 64 * 1024

POLICY = """\
version: 1
roles:
  - id: app
    rules:
      - id: app-use
        actions: [read, describe, list, write]
        resources: ["gcp:keyledger-demo/app-*"]
      - id: app-no-forbidden
        effect: deny
        actions: ["*"]
        resources: ["gcp:keyledger-demo/app-forbidden*"]
bindings:
  - role: app
    principals: [app]
"""


@dataclasses.dataclass
class Served:
    target: str
    token: str
    journal: Journal
    directory: Path
    standin: GcpStandin
    gateway: Gateway

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]

    def events(self) -> list[dict[str, Any]]:
        """The calls' events (access and auth_failure), in chain order."""
        return journal_events(self.directory, "access", "auth_failure")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with GcpStandin() as standin:
        standin.seed(REAL, {"app-db": FIRST, "app-forbidden": "forbidden", "other": "other"})
        standin.seed(REAL, {"app-db": LATEST})
        (tmp_path / "policy.yaml").write_text(POLICY)
        identities = IdentityStore(tmp_path / "identities.json", Fernet.generate_key())
        token = identities.create_token("app").token
        journal = Journal(directory=tmp_path / "audit", chain_id="grpc")
        await journal.start()
        backend = GcpBackend(
            GcpSettings(
                name="gcp",
                endpoint=standin.grpc_target,
                projects={CALLER: REAL},
                credentials="anonymous",
                timeout_s=5,
            )
        )
        await backend.start()
        gateway = Gateway(
            frontend=GcpGrpcFrontend(ProjectRoutes({CALLER: "gcp"})),
            authenticator=BearerAuthenticator(store=identities),
            policies=PolicyHolder(load_policy([tmp_path / "policy.yaml"], ("gcp",)).engine),
            backends={"gcp": backend},
            journal=journal,
            fingerprint=Fingerprinter(b"f" * 32),
        )
        listener = GrpcListener(
            gateway, host="127.0.0.1", port=0, max_message_bytes=MAX_MESSAGE, deadline_s=30
        )
        port = await listener.start()
        try:
            yield Served(f"127.0.0.1:{port}", token, journal, tmp_path / "audit", standin, gateway)
        finally:
            await listener.stop(grace=None)
            await backend.close()
            await journal.close()


@pytest.fixture
async def client(served: Served) -> AsyncIterator[SecretManagerServiceAsyncClient]:
    channel = grpc.aio.insecure_channel(served.target)
    transport = transports.SecretManagerServiceGrpcAsyncIOTransport(channel=channel)
    yield SecretManagerServiceAsyncClient(transport=transport)
    await channel.close()


@pytest.fixture
async def raw(served: Served) -> AsyncIterator[grpc.aio.Channel]:
    """A plain channel, for what the SDK cannot send."""
    channel = grpc.aio.insecure_channel(served.target)
    yield channel
    await channel.close()


@pytest.fixture
def sync_client(served: Served) -> Iterator[SecretManagerServiceClient]:
    with grpc.insecure_channel(served.target) as channel:
        transport = transports.SecretManagerServiceGrpcTransport(channel=channel)
        yield SecretManagerServiceClient(transport=transport)


def one_event(served: Served) -> dict[str, Any]:
    (event,) = served.events()
    return event


def assert_checksum(response: service.AccessSecretVersionResponse) -> None:
    assert response.payload.data_crc32c == crc32c(bytes(response.payload.data))


class TestReads:
    async def test_async_client_reads_the_latest_version(
        self, served: Served, client: SecretManagerServiceAsyncClient
    ) -> None:
        """The async client reads "latest" with its CRC32C; one success event names the
        secret, the version served, the caller and where it called from, and no value."""
        response = await client.access_secret_version(
            name=f"{DB}/versions/latest", metadata=served.metadata
        )

        assert response.payload.data == LATEST.encode()
        assert_checksum(response)
        assert response.name == f"{DB}/versions/2"
        event = one_event(served)
        assert event["request"]["protocol"] == "gcp-grpc"
        assert event["request"]["operation"] == "AccessSecretVersion"
        assert event["request"]["source_ip"] == "127.0.0.1"
        assert "grpc" in event["request"]["user_agent"]
        assert event["principal"]["id"] == "app"
        assert event["principal"]["auth_method"] == "token"
        assert event["action"] == "read"
        assert event["resource"] == {
            "backend": "gcp",
            "secret": f"{CALLER}/app-db",
            "version": "latest",
        }
        assert event["decision"]["effect"] == "allow"
        assert event["outcome"]["status"] == "success"
        assert event["outcome"]["version_id"] == "2"
        assert event["outcome"]["value_fingerprint"]

    async def test_sync_client_reads_a_pinned_version(
        self, served: Served, sync_client: SecretManagerServiceClient
    ) -> None:
        """The sync client over gRPC reads version 1, CRC32C checked."""
        response = await asyncio.to_thread(
            sync_client.access_secret_version,
            name=f"{DB}/versions/1",
            metadata=served.metadata,
        )

        assert response.payload.data == FIRST.encode()
        assert_checksum(response)
        event = one_event(served)
        assert (event["outcome"]["status"], event["outcome"]["version_id"]) == ("success", "1")

    async def test_the_request_id_is_answered_and_recorded(
        self, served: Served, raw: grpc.aio.Channel
    ) -> None:
        """Each answer carries x-request-id in its initial metadata: the event's request id."""
        access = raw.unary_unary(method_path("AccessSecretVersion"))
        request = service.AccessSecretVersionRequest(name=f"{DB}/versions/1")
        call = access(
            service.AccessSecretVersionRequest.serialize(request), metadata=served.metadata
        )

        answer = service.AccessSecretVersionResponse.deserialize(await call)

        assert answer.payload.data == FIRST.encode()
        initial = dict(await call.initial_metadata())
        assert initial[REQUEST_ID] == one_event(served)["request"]["id"]

    async def test_the_listing_shows_only_what_policy_allows(
        self, served: Served, client: SecretManagerServiceAsyncClient
    ) -> None:
        """ListSecrets names only the secrets the caller may list: not a denied one, not one
        no rule allows."""
        pager = await client.list_secrets(parent=PROJECT, metadata=served.metadata)

        names = [secret.name async for secret in pager]

        assert names == [DB]
        event = one_event(served)
        assert (event["action"], event["outcome"]["status"]) == ("list", "success")

    async def test_the_journal_never_holds_a_value(
        self,
        served: Served,
        client: SecretManagerServiceAsyncClient,
        sync_client: SecretManagerServiceClient,
    ) -> None:
        """Values read through either client are fingerprinted, never written."""
        await client.access_secret_version(name=f"{DB}/versions/2", metadata=served.metadata)
        await asyncio.to_thread(
            sync_client.access_secret_version, name=f"{DB}/versions/1", metadata=served.metadata
        )

        written = b"".join(p.read_bytes() for p in served.directory.rglob("*") if p.is_file())
        assert FIRST.encode() not in written
        assert LATEST.encode() not in written
        assert len(served.events()) == 2


class TestWrites:
    async def test_create_and_add_a_version(
        self, served: Served, client: SecretManagerServiceAsyncClient
    ) -> None:
        """CreateSecret then AddSecretVersion reach the store through the backend, each
        recorded before (pending) and after (success); the value reads back."""
        made = await client.create_secret(
            parent=PROJECT,
            secret_id="app-new",
            secret=Secret(replication=Replication(automatic=Replication.Automatic())),
            metadata=served.metadata,
        )
        data = b"grpc-new-value"
        version = await client.add_secret_version(
            parent=made.name,
            payload=SecretPayload(data=data, data_crc32c=crc32c(data)),
            metadata=served.metadata,
        )
        read = await client.access_secret_version(name=version.name, metadata=served.metadata)

        assert made.name == f"{PROJECT}/secrets/app-new"
        assert version.name == f"{PROJECT}/secrets/app-new/versions/1"
        assert read.payload.data == data
        stored = served.standin.store.access_version(f"projects/{REAL}/secrets/app-new/versions/1")
        assert stored.payload == data
        events = served.events()
        assert [(e["request"]["operation"], e["outcome"]["status"]) for e in events] == [
            ("CreateSecret", "pending"),
            ("CreateSecret", "success"),
            ("AddSecretVersion", "pending"),
            ("AddSecretVersion", "success"),
            ("AccessSecretVersion", "success"),
        ]
        assert {e["resource"]["secret"] for e in events} == {f"{CALLER}/app-new"}
        assert len({e["request"]["id"] for e in events}) == 3


class TestRefusals:
    @pytest.mark.parametrize("secret", ["app-forbidden", "other"])
    async def test_a_denied_read_is_permission_denied(
        self, served: Served, client: SecretManagerServiceAsyncClient, secret: str
    ) -> None:
        """A secret a deny rule covers, or no rule allows: PermissionDenied, recorded as
        denied, and the store is not asked."""
        with pytest.raises(exceptions.PermissionDenied):
            await client.access_secret_version(
                name=f"{PROJECT}/secrets/{secret}/versions/latest", metadata=served.metadata
            )

        event = one_event(served)
        assert event["outcome"]["status"] == "denied"
        assert event["decision"]["effect"] == "deny"
        assert event["resource"]["secret"] == f"{CALLER}/{secret}"

    @pytest.mark.parametrize(
        ("metadata", "reason"),
        [
            ([], "missing_authentication"),
            ([("authorization", "Bearer kltok_000000nobody_" + "A" * 43)], "unknown_token"),
            ([("authorization", "Basic YXBwOmFwcA==")], "malformed_authentication"),
        ],
        ids=["none", "unknown", "not-bearer"],
    )
    async def test_no_or_a_bad_token_is_unauthenticated_once(
        self,
        served: Served,
        client: SecretManagerServiceAsyncClient,
        metadata: list[tuple[str, str]],
        reason: str,
    ) -> None:
        """Without a valid token the SDK raises Unauthenticated after exactly one attempt
        (its default retry does not retry it): one auth_failure event."""
        with pytest.raises(exceptions.Unauthenticated):
            await client.access_secret_version(name=f"{DB}/versions/latest", metadata=metadata)

        event = one_event(served)
        assert event["type"] == "auth_failure"
        assert event["outcome"]["code"] == reason
        assert event["request"]["protocol"] == "gcp-grpc"

    async def test_a_missing_secret_is_not_found(
        self, served: Served, sync_client: SecretManagerServiceClient
    ) -> None:
        """A secret the caller may read but that does not exist: NotFound, recorded."""
        with pytest.raises(exceptions.NotFound):
            await asyncio.to_thread(
                sync_client.access_secret_version,
                name=f"{PROJECT}/secrets/app-missing/versions/latest",
                metadata=served.metadata,
            )

        event = one_event(served)
        assert (event["outcome"]["status"], event["outcome"]["code"]) == ("error", "NOT_FOUND")

    @pytest.mark.parametrize(
        ("method", "operation"),
        [
            (method_path("RotateSecret"), "RotateSecret"),
            ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Check"),
        ],
        ids=["unserved-rpc", "other-service"],
    )
    async def test_an_unknown_method_is_unimplemented_and_recorded(
        self, served: Served, raw: grpc.aio.Channel, method: str, operation: str
    ) -> None:
        """A method keyledger does not serve answers UNIMPLEMENTED, and is audited."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw.unary_unary(method)(b"", metadata=served.metadata)

        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        event = one_event(served)
        assert event["outcome"]["code"] == "unknown_operation"
        assert event["request"]["operation"] == operation

    async def test_bytes_that_are_no_message_are_invalid_argument(
        self, served: Served, raw: grpc.aio.Channel
    ) -> None:
        """A body that is not the RPC's request message: INVALID_ARGUMENT, recorded."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw.unary_unary(method_path("AccessSecretVersion"))(
                b"\x0a\x05\xff\xfe\xfd\xfc\xfb", metadata=served.metadata
            )

        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert one_event(served)["outcome"]["code"] == "malformed_body"

    async def test_a_message_too_large_is_refused_and_recorded(
        self, served: Served, raw: grpc.aio.Channel
    ) -> None:
        """A message over the bound is refused (not retried) before anything reads it."""
        request = service.AddSecretVersionRequest(
            parent=DB, payload={"data": b"x" * (MAX_MESSAGE + 1)}
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw.unary_unary(method_path("AddSecretVersion"))(
                service.AddSecretVersionRequest.serialize(request), metadata=served.metadata
            )

        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        event = one_event(served)
        assert (event["outcome"]["code"], event["principal"]["id"]) == (
            "request_too_large",
            None,
        )
        assert len(served.standin.store.list_versions(f"projects/{REAL}/secrets/app-db").items) == 2


class TestFailClosed:
    async def test_no_value_while_the_journal_cannot_be_written(
        self, served: Served, client: SecretManagerServiceAsyncClient
    ) -> None:
        """With the journal unable to take events, a read fails UNAVAILABLE with no value."""
        await served.journal.close()

        with pytest.raises(exceptions.ServiceUnavailable) as caught:
            await client.access_secret_version(
                name=f"{DB}/versions/latest", metadata=served.metadata, retry=None
            )

        assert LATEST not in str(caught.value)
        assert served.events() == []


class TestTls:
    async def test_the_sdk_reads_over_tls(self, served: Served, tmp_path: Path) -> None:
        """With server credentials the listener speaks TLS: the async client reads through
        it, and a plaintext client gets no answer at all."""
        cert, key = self_signed(tmp_path)
        listener = GrpcListener(
            served.gateway,
            host="127.0.0.1",
            port=0,
            ssl=server_credentials(cert_file=cert, key_file=key),
            max_message_bytes=MAX_MESSAGE,
        )
        target = f"127.0.0.1:{await listener.start()}"
        trusted = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        try:
            async with grpc.aio.secure_channel(target, trusted) as channel:
                client = SecretManagerServiceAsyncClient(
                    transport=transports.SecretManagerServiceGrpcAsyncIOTransport(channel=channel)
                )
                response = await client.access_secret_version(
                    name=f"{DB}/versions/1", metadata=served.metadata
                )
            async with grpc.aio.insecure_channel(target) as plain:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await plain.unary_unary(method_path("GetSecret"))(
                        b"", metadata=served.metadata, timeout=5
                    )
        finally:
            await listener.stop(grace=None)

        assert response.payload.data == FIRST.encode()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert [e["outcome"]["status"] for e in served.events()] == ["success"]


class TestPeer:
    @pytest.mark.parametrize(
        ("peer", "ip"),
        [
            ("ipv4:127.0.0.1:5555", "127.0.0.1"),
            ("ipv6:[::1]:5555", "::1"),
            ("ipv6:%5B::1%5D:5555", "::1"),
            ("unix:/run/keyledger.sock", None),
            ("ipv4:not-an-address:1", None),
            ("", None),
        ],
    )
    def test_the_source_address_comes_from_the_peer(self, peer: str, ip: str | None) -> None:
        """gRPC's peer string gives the caller's address, in both families and encodings."""
        assert peer_ip(peer) == ip


class _Held:
    """The gateway, with every call held until released: a call in flight on demand."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, wire: Any) -> Any:
        self.entered.set()
        await self.release.wait()
        return await self._gateway.handle(wire)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gateway, name)


@contextlib.asynccontextmanager
async def limited(gateway: Any, **limits: Any) -> AsyncIterator[grpc.aio.Channel]:
    """A listener of ``gateway`` with ``limits``, and a channel to it."""
    listener = GrpcListener(
        gateway, host="127.0.0.1", port=0, max_message_bytes=MAX_MESSAGE, **limits
    )
    port = await listener.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await listener.stop(grace=None)


def sdk(channel: grpc.aio.Channel) -> SecretManagerServiceAsyncClient:
    return SecretManagerServiceAsyncClient(
        transport=transports.SecretManagerServiceGrpcAsyncIOTransport(channel=channel)
    )


class TestConnectionLimits:
    async def test_past_the_cap_a_call_is_resource_exhausted(self, served: Served) -> None:
        """max_concurrent_rpcs (limits.max_connections, as app.py passes it) caps the calls
        in flight: one more is refused at once (the SDK's ResourceExhausted, which its
        default retry backs off on), and the held call is still answered."""
        held = _Held(served.gateway)
        async with limited(held, max_concurrent_rpcs=1) as channel:
            client = sdk(channel)
            name = f"{DB}/versions/latest"
            first = asyncio.create_task(
                client.access_secret_version(name=name, metadata=served.metadata)
            )
            await asyncio.wait_for(held.entered.wait(), 5)

            with pytest.raises(exceptions.ResourceExhausted):
                await client.access_secret_version(
                    name=name, metadata=served.metadata, retry=None, timeout=5
                )

            held.release.set()
            assert (await asyncio.wait_for(first, 5)).payload.data == LATEST.encode()

    async def test_an_idle_connection_is_closed(self, served: Served) -> None:
        """limits.idle_timeout_s: a connection without calls is closed by keyledger (the
        client reconnects for its next call)."""
        async with limited(served.gateway, idle_timeout_s=0.2) as channel:
            await asyncio.wait_for(channel.channel_ready(), 5)
            ready = grpc.ChannelConnectivity.READY

            async def dropped() -> None:
                while channel.get_state() is ready:
                    await channel.wait_for_state_change(ready)

            await asyncio.wait_for(dropped(), 5)
            response = await sdk(channel).access_secret_version(
                name=f"{DB}/versions/latest", metadata=served.metadata
            )
            assert response.payload.data == LATEST.encode()
