"""Google's gRPC front end without a server: each RPC's request bytes into a call, each
response message into bytes, each error into a gRPC status."""

from __future__ import annotations

from typing import Any

import proto  # type: ignore[import-untyped]
import pytest
from google.cloud.secretmanager_v1.types import (
    AccessSecretVersionResponse,
    ListSecretsResponse,
    ListSecretVersionsResponse,
    Secret,
    SecretPayload,
    SecretVersion,
)
from google.iam.v1 import iam_policy_pb2, policy_pb2  # type: ignore[import-untyped]
from google.protobuf import empty_pb2  # type: ignore[import-untyped]
from google_crc32c import value as crc32c

from keyledger.backends import BackendError, BackendUnavailable, SecretNotFound
from keyledger.backends.gcp import OPERATIONS
from keyledger.backends.gcp_standin.methods import METHODS
from keyledger.model import Action, SecretItem, SecretRef, SecretResult
from keyledger.proxy.errors import (
    AccessDenied,
    AuditUnavailable,
    AuthError,
    ErrorKind,
    ProxyError,
    RequestError,
)
from keyledger.proxy.frontends.gcp_common import ACTIONS, ProjectRoutes
from keyledger.proxy.frontends.gcp_grpc import GcpGrpcFrontend, method_path
from keyledger.proxy.wire import WireRequest

PROJECT = "projects/demo"
SECRET = f"{PROJECT}/secrets/db"
VERSION = f"{SECRET}/versions/1"
VALUE = b"grpc-frontend-canary-33a0"
FRONTEND = GcpGrpcFrontend(ProjectRoutes({"demo": "gcp"}))

# Each RPC's request fields, and the secret it names ("" for none).
REQUESTS: dict[str, tuple[dict[str, Any], str]] = {
    "CreateSecret": (
        {"parent": PROJECT, "secret_id": "made", "secret": {"replication": {"automatic": {}}}},
        "demo/made",
    ),
    "GetSecret": ({"name": SECRET}, "demo/db"),
    "ListSecrets": ({"parent": PROJECT, "filter": "labels.team=a"}, ""),
    "UpdateSecret": (
        {"secret": {"name": SECRET, "labels": {"a": "b"}}, "update_mask": {"paths": ["labels"]}},
        "demo/db",
    ),
    "AddSecretVersion": ({"parent": SECRET, "payload": {"data": VALUE}}, "demo/db"),
    "GetSecretVersion": ({"name": VERSION}, "demo/db"),
    "ListSecretVersions": ({"parent": SECRET}, "demo/db"),
    "AccessSecretVersion": ({"name": VERSION}, "demo/db"),
    "DisableSecretVersion": ({"name": VERSION}, "demo/db"),
    "EnableSecretVersion": ({"name": VERSION}, "demo/db"),
    "DestroySecretVersion": ({"name": VERSION}, "demo/db"),
    "GetIamPolicy": ({"resource": SECRET}, "demo/db"),
    "SetIamPolicy": ({"resource": SECRET, "policy": {"version": 1}}, "demo/db"),
    "TestIamPermissions": (
        {"resource": SECRET, "permissions": ["secretmanager.secrets.get"]},
        "demo/db",
    ),
    "DeleteSecret": ({"name": SECRET}, "demo/db"),
}

# Each RPC's answer, as the GCP backend hands it over.
RESPONSES: dict[str, Any] = {
    "CreateSecret": Secret(name=f"{PROJECT}/secrets/made"),
    "GetSecret": Secret(name=SECRET, labels={"team": "a"}),
    "ListSecrets": ListSecretsResponse(secrets=[Secret(name=SECRET)], next_page_token="n"),
    "UpdateSecret": Secret(name=SECRET, labels={"a": "b"}),
    "AddSecretVersion": SecretVersion(name=VERSION, state=SecretVersion.State.ENABLED),
    "GetSecretVersion": SecretVersion(name=VERSION),
    "ListSecretVersions": ListSecretVersionsResponse(versions=[SecretVersion(name=VERSION)]),
    "AccessSecretVersion": AccessSecretVersionResponse(
        name=VERSION, payload=SecretPayload(data=VALUE, data_crc32c=crc32c(VALUE))
    ),
    "DisableSecretVersion": SecretVersion(name=VERSION, state=SecretVersion.State.DISABLED),
    "EnableSecretVersion": SecretVersion(name=VERSION, state=SecretVersion.State.ENABLED),
    "DestroySecretVersion": SecretVersion(name=VERSION, state=SecretVersion.State.DESTROYED),
    "GetIamPolicy": policy_pb2.Policy(version=1, etag=b"e"),
    "SetIamPolicy": policy_pb2.Policy(version=1, etag=b"f"),
    "TestIamPermissions": iam_policy_pb2.TestIamPermissionsResponse(
        permissions=["secretmanager.secrets.get"]
    ),
    "DeleteSecret": empty_pb2.Empty(),
}


def wire(path: str, body: bytes, *, request_id: str = "rid-1") -> WireRequest:
    return WireRequest(
        method="POST",
        path=path,
        query=(),
        headers={"authorization": "Bearer x", "user-agent": "grpc-python"},
        body=body,
        source_ip="127.0.0.1",
        user_agent="grpc-python",
        request_id=request_id,
    )


def protobuf(message: Any) -> Any:
    """The plain protobuf message behind a proto-plus one (or the message itself)."""
    return type(message).pb(message) if isinstance(message, proto.Message) else message


def request_bytes(rpc: str) -> bytes:
    fields, _ = REQUESTS[rpc]
    message = METHODS[rpc].request(**fields)
    return bytes(message.SerializeToString())


class TestParse:
    def test_every_rpc_the_backend_forwards_is_served(self) -> None:
        """The front end serves exactly the RPCs the GCP backend forwards."""
        assert FRONTEND.operations == frozenset(OPERATIONS) == frozenset(REQUESTS)

    @pytest.mark.parametrize("rpc", sorted(REQUESTS))
    def test_each_rpc_becomes_its_call(self, rpc: str) -> None:
        """The request bytes become the SDK's own message, in a call with the RPC's action
        on the secret it names (a listing names none and is filtered)."""
        call = FRONTEND.parse(wire(method_path(rpc), request_bytes(rpc)))

        _, secret = REQUESTS[rpc]
        message = call.request.params["request"]
        assert call.operation == rpc
        assert call.action is ACTIONS[rpc]
        assert call.backend == "gcp"
        assert isinstance(message, OPERATIONS[rpc].request)
        assert protobuf(message).SerializeToString() == request_bytes(rpc)
        assert call.targets == ((SecretRef("gcp", secret),) if secret else ())
        assert call.filter_results == (rpc == "ListSecrets")
        assert FRONTEND.operation_name(wire(method_path(rpc), b"")) == rpc

    def test_a_read_names_the_version_asked_for(self) -> None:
        """AccessSecretVersion of "latest" is a read of that version."""
        body = METHODS["AccessSecretVersion"].request(name=f"{SECRET}/versions/latest")
        call = FRONTEND.parse(wire(method_path("AccessSecretVersion"), body.SerializeToString()))

        assert call.action is Action.READ
        assert call.request.version == "latest"

    @pytest.mark.parametrize(
        "body",
        [b"\x0a\x05\xff\xfe\xfd\xfc\xfb", b"\x0a\x10short", b"\xff\xff\xff\xff"],
        ids=["bad-utf8", "truncated", "bad-tag"],
    )
    def test_bytes_that_are_no_message_are_malformed(self, body: bytes) -> None:
        """Bytes the request type cannot read: MALFORMED_BODY, never another exception."""
        with pytest.raises(RequestError) as raised:
            FRONTEND.parse(wire(method_path("AccessSecretVersion"), body))

        assert raised.value.kind is ErrorKind.MALFORMED_BODY

    def test_malformed_iam_bytes_are_malformed_too(self) -> None:
        """The IAM requests (plain protobuf) refuse bad bytes the same way."""
        with pytest.raises(RequestError) as raised:
            FRONTEND.parse(wire(method_path("GetIamPolicy"), b"\x0a\x05\xff\xfe\xfd\xfc\xfb"))

        assert raised.value.kind is ErrorKind.MALFORMED_BODY

    def test_an_empty_message_is_a_bad_request(self) -> None:
        """No bytes is a valid, empty message: it names nothing, so it is INVALID_ARGUMENT."""
        with pytest.raises(RequestError) as raised:
            FRONTEND.parse(wire(method_path("AccessSecretVersion"), b""))

        assert raised.value.kind is ErrorKind.BAD_REQUEST

    @pytest.mark.parametrize(
        ("path", "name"),
        [
            (method_path("RotateSecret"), "RotateSecret"),
            (method_path(""), "(none)"),
            ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Check"),
            ("/google.cloud.secretmanager.v1beta2.SecretManagerService/GetSecret", None),
        ],
        ids=["unserved-rpc", "no-rpc", "other-service", "other-version"],
    )
    def test_an_unknown_method_is_an_unknown_operation(self, path: str, name: str | None) -> None:
        """A method this front end does not serve: UNKNOWN_OPERATION, with a name for the
        event that is the RPC under this service and the whole method otherwise."""
        with pytest.raises(RequestError) as raised:
            FRONTEND.parse(wire(path, request_bytes("GetSecret")))

        assert raised.value.kind is ErrorKind.UNKNOWN_OPERATION
        assert FRONTEND.operation_name(wire(path, b"")) == (name or path)

    def test_a_project_nobody_serves_is_denied(self) -> None:
        """A project no backend serves is refused as Google refuses one you may not see."""
        body = METHODS["GetSecret"].request(name="projects/x/secrets/s").SerializeToString()

        with pytest.raises(RequestError) as raised:
            FRONTEND.parse(wire(method_path("GetSecret"), body))

        assert raised.value.kind is ErrorKind.ACCESS_DENIED


class TestRender:
    @pytest.mark.parametrize("rpc", sorted(RESPONSES))
    def test_each_answer_is_its_serialized_response(self, rpc: str) -> None:
        """The body is the response message the SDK expects for the RPC, unchanged."""
        call = FRONTEND.parse(wire(method_path(rpc), request_bytes(rpc)))
        answer = RESPONSES[rpc]

        response = FRONTEND.render(
            call,
            SecretResult(data={"response": answer}),
            hidden=set(),
            denied=set(),
            request_id="rid-1",
        )

        assert response.status == 200
        assert "grpc-status" not in response.headers
        assert METHODS[rpc].response.FromString(response.body) == protobuf(answer)

    def test_a_value_without_checksum_gets_one(self) -> None:
        """A payload the store sent without CRC32C is answered with it, so clients can check
        the value; the result itself is left as it was."""
        call = FRONTEND.parse(
            wire(method_path("AccessSecretVersion"), request_bytes("AccessSecretVersion"))
        )
        answer = AccessSecretVersionResponse(name=VERSION, payload=SecretPayload(data=VALUE))

        response = FRONTEND.render(
            call,
            SecretResult(data={"response": answer}),
            hidden=set(),
            denied=set(),
            request_id="rid-1",
        )

        served = AccessSecretVersionResponse.deserialize(response.body)
        assert served.payload.data == VALUE
        assert served.payload.data_crc32c == crc32c(VALUE)
        assert "data_crc32c" not in answer.payload

    def test_the_stores_checksum_is_kept(self) -> None:
        """A checksum the store sent is passed on as sent: the client checks it."""
        call = FRONTEND.parse(
            wire(method_path("AccessSecretVersion"), request_bytes("AccessSecretVersion"))
        )
        answer = AccessSecretVersionResponse(
            name=VERSION, payload=SecretPayload(data=VALUE, data_crc32c=1234)
        )

        response = FRONTEND.render(
            call,
            SecretResult(data={"response": answer}),
            hidden=set(),
            denied=set(),
            request_id="rid-1",
        )

        assert AccessSecretVersionResponse.deserialize(response.body).payload.data_crc32c == 1234

    def test_hidden_secrets_leave_the_listing(self) -> None:
        """A listing drops what policy hides and keeps its page token."""
        call = FRONTEND.parse(wire(method_path("ListSecrets"), request_bytes("ListSecrets")))
        page = ListSecretsResponse(
            secrets=[Secret(name=SECRET), Secret(name=f"{PROJECT}/secrets/hidden")],
            next_page_token="n",
            total_size=2,
        )
        result = SecretResult(
            data={"response": page},
            items=(
                SecretItem(ref=SecretRef("gcp", "demo/db")),
                SecretItem(ref=SecretRef("gcp", "demo/hidden")),
            ),
        )

        response = FRONTEND.render(
            call, result, hidden={SecretRef("gcp", "demo/hidden")}, denied=set(), request_id="r"
        )

        served = ListSecretsResponse.deserialize(response.body)
        assert [s.name for s in served.secrets] == [SECRET]
        assert (served.next_page_token, served.total_size) == ("n", 0)
        assert b"hidden" not in response.body


class TestRenderError:
    @pytest.mark.parametrize(
        ("error", "code", "http"),
        [
            (SecretNotFound("Secret [db] not found", code="NOT_FOUND"), 5, 404),
            (AccessDenied(principal="app", operation="x", ref=None, explicit=True), 7, 403),
            (AuthError("Missing bearer token", kind=ErrorKind.MISSING_AUTH), 16, 401),
            (RequestError("no such method", kind=ErrorKind.UNKNOWN_OPERATION), 12, 501),
            (RequestError("bad bytes", kind=ErrorKind.MALFORMED_BODY), 3, 400),
            (AuditUnavailable("the journal cannot be written"), 14, 503),
            (BackendUnavailable("store down", code="UNAVAILABLE"), 14, 503),
        ],
        ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
    )
    def test_each_error_is_a_grpc_status(
        self, error: ProxyError | BackendError, code: int, http: int
    ) -> None:
        """grpc-status carries Google's code and grpc-message its text; no body; the status
        is the same code's HTTP mapping."""
        response = FRONTEND.render_error(error, request_id="rid-9")

        assert response.headers["grpc-status"] == str(code)
        assert response.headers["grpc-message"]
        assert response.headers["x-request-id"] == "rid-9"
        assert (response.status, response.body) == (http, b"")
