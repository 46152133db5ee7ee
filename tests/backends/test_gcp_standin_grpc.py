"""The stand-in's gRPC service against the SDK's own description of SecretManagerService.

proto-plus ships no service descriptor, so the SDK's description is what it does ship: the
RPCs listed in ``gapic_metadata.json``, the request types its client methods declare, and the
stubs of its gRPC transport, which (de)serialize with the SDK's message classes. Also: the
optional bearer token, refused as Google refuses (UNAUTHENTICATED, PERMISSION_DENIED).
"""

from __future__ import annotations

import http.client
import importlib.resources
import json
import typing
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud.secretmanager_v1 import SecretManagerServiceClient
from google.cloud.secretmanager_v1.services.secret_manager_service import transports

from keyledger.backends.gcp_standin import ThreadedGcpStandin
from keyledger.backends.gcp_standin.methods import METHODS, UNSERVED

SDK_RPCS: dict[str, str] = {
    rpc: entry["methods"][0]
    for rpc, entry in json.loads(
        (
            importlib.resources.files("google.cloud.secretmanager_v1") / "gapic_metadata.json"
        ).read_text(encoding="utf-8")
    )["services"]["SecretManagerService"]["clients"]["grpc"]["rpcs"].items()
}
PROJECT = "projects/grpc"
SECRET = f"{PROJECT}/secrets/db"
VERSION = f"{SECRET}/versions/1"
# Each served RPC's request fields, in an order that leaves every call valid.
CALLS: list[tuple[str, dict[str, Any]]] = [
    (
        "CreateSecret",
        {"parent": PROJECT, "secret_id": "made", "secret": {"replication": {"automatic": {}}}},
    ),
    ("GetSecret", {"name": SECRET}),
    ("ListSecrets", {"parent": PROJECT}),
    ("UpdateSecret", {"secret": {"name": SECRET}, "update_mask": {"paths": ["labels"]}}),
    ("AddSecretVersion", {"parent": SECRET, "payload": {"data": b"x"}}),
    ("GetSecretVersion", {"name": VERSION}),
    ("ListSecretVersions", {"parent": SECRET}),
    ("AccessSecretVersion", {"name": VERSION}),
    ("DisableSecretVersion", {"name": VERSION}),
    ("EnableSecretVersion", {"name": VERSION}),
    ("DestroySecretVersion", {"name": VERSION}),
    ("GetIamPolicy", {"resource": SECRET}),
    ("SetIamPolicy", {"resource": SECRET, "policy": {"version": 1}}),
    ("TestIamPermissions", {"resource": SECRET, "permissions": ["secretmanager.secrets.get"]}),
    ("DeleteSecret", {"name": SECRET}),
]


def full_name(message: Any) -> str:
    """The protobuf full name of a message or message class, proto-plus or plain."""
    kind: Any = message if isinstance(message, type) else type(message)
    return str((kind.pb() if hasattr(kind, "pb") else kind).DESCRIPTOR.full_name)


def sdk_request_type(rpc: str) -> Any:
    """The request class the SDK client's method for ``rpc`` declares."""
    hints = typing.get_type_hints(getattr(SecretManagerServiceClient, SDK_RPCS[rpc]))
    (declared,) = [t for t in typing.get_args(hints["request"]) if t not in (dict, type(None))]
    return declared


@pytest.fixture(scope="module")
def transport() -> Iterator[transports.SecretManagerServiceGrpcTransport]:
    with ThreadedGcpStandin() as standin, grpc.insecure_channel(standin.grpc_target) as channel:
        standin.seed("grpc", {"db": "first"})
        yield transports.SecretManagerServiceGrpcTransport(channel=channel)


class TestServiceDescriptor:
    def test_served_and_unserved_rpcs_are_the_sdk_service(self) -> None:
        """The stand-in serves or deliberately leaves out each RPC the SDK knows, and no other."""
        assert set(METHODS).isdisjoint(UNSERVED)
        assert set(METHODS) | UNSERVED == set(SDK_RPCS)
        assert sorted(rpc for rpc, _ in CALLS) == sorted(METHODS)

    @pytest.mark.parametrize("rpc", sorted(METHODS))
    def test_request_type_is_the_sdk_one(self, rpc: str) -> None:
        """Each RPC parses the very request message the SDK's client sends for it."""
        assert full_name(METHODS[rpc].request) == full_name(sdk_request_type(rpc))

    def test_every_rpc_answers_the_sdk_stub_with_its_type(
        self, transport: transports.SecretManagerServiceGrpcTransport
    ) -> None:
        """Each RPC, called through the SDK's own stub, answers the message the stand-in claims."""
        for rpc, fields in CALLS:
            stub: Callable[[Any], Any] = getattr(transport, SDK_RPCS[rpc])
            response = stub(sdk_request_type(rpc)(**fields))
            assert full_name(response) == full_name(METHODS[rpc].response), rpc

    @pytest.mark.parametrize("rpc", sorted(UNSERVED))
    def test_unserved_rpcs_are_unimplemented(
        self, rpc: str, transport: transports.SecretManagerServiceGrpcTransport
    ) -> None:
        """An RPC the stand-in leaves out answers UNIMPLEMENTED, not a wrong answer."""
        stub: Callable[[Any], Any] = getattr(transport, SDK_RPCS[rpc])
        with pytest.raises(grpc.RpcError) as caught:
            stub(sdk_request_type(rpc)(parent=SECRET))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


TOKEN = "standin-token"


@pytest.fixture(scope="module")
def guarded() -> Iterator[ThreadedGcpStandin]:
    with ThreadedGcpStandin(token=TOKEN) as standin:
        standin.seed("guarded", {"db": "value"})
        yield standin


@pytest.fixture(params=["rest", "grpc"])
def guarded_client(
    request: pytest.FixtureRequest, guarded: ThreadedGcpStandin
) -> Iterator[SecretManagerServiceClient]:
    if request.param == "rest":
        with SecretManagerServiceClient(
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            transport="rest",
            client_options=ClientOptions(api_endpoint=guarded.rest_url),
        ) as client:
            yield client
    else:
        with grpc.insecure_channel(guarded.grpc_target) as channel:
            transport = transports.SecretManagerServiceGrpcTransport(channel=channel)
            yield SecretManagerServiceClient(transport=transport)


class TestToken:
    NAME = "projects/guarded/secrets/db/versions/latest"

    def test_the_token_opens_the_store(self, guarded_client: SecretManagerServiceClient) -> None:
        """With the stand-in's token as a bearer, the value is served."""
        reply = guarded_client.access_secret_version(
            name=self.NAME, metadata=[("authorization", f"Bearer {TOKEN}")]
        )
        assert reply.payload.data == b"value"

    def test_no_credential_is_unauthenticated_over_grpc(self, guarded: ThreadedGcpStandin) -> None:
        """Without a credential the gRPC call raises Unauthenticated."""
        with grpc.insecure_channel(guarded.grpc_target) as channel:
            transport = transports.SecretManagerServiceGrpcTransport(channel=channel)
            with pytest.raises(exceptions.Unauthenticated):
                SecretManagerServiceClient(transport=transport).access_secret_version(
                    name=self.NAME
                )

    def test_no_credential_is_401_over_rest(self, guarded: ThreadedGcpStandin) -> None:
        """Without a credential REST answers 401 UNAUTHENTICATED (the GAPIC REST client would
        then try to refresh its credentials, which anonymous ones cannot)."""
        connection = http.client.HTTPConnection(guarded.host, guarded.rest_port)
        try:
            connection.request("GET", f"/v1/{self.NAME}:access")
            response = connection.getresponse()
            error = json.loads(response.read())["error"]
        finally:
            connection.close()
        assert (response.status, error["code"], error["status"]) == (401, 401, "UNAUTHENTICATED")

    def test_another_token_is_permission_denied(
        self, guarded_client: SecretManagerServiceClient
    ) -> None:
        """Another bearer token raises PermissionDenied (403 Forbidden over REST)."""
        kind = guarded_client.transport.kind
        expected = exceptions.PermissionDenied if kind == "grpc" else exceptions.Forbidden
        with pytest.raises(expected):
            guarded_client.access_secret_version(
                name=self.NAME, metadata=[("authorization", "Bearer someone-else")]
            )
