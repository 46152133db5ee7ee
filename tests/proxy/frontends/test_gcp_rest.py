"""The Google REST frontend, driven by the clients Google ships: the GAPIC client over its
REST transport and the discovery-based client send their requests to a small server that
parses each with the frontend, records the call, and answers with the frontend's rendering
of a result built here, which the clients must decode as they decode Google's answers."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import google_crc32c
import orjson
import pytest
from aiohttp import web
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud.secretmanager_v1 import SecretManagerServiceClient
from google.cloud.secretmanager_v1.types import resources, service
from google.iam.v1 import iam_policy_pb2, policy_pb2  # type: ignore[import-untyped]
from google.oauth2 import credentials as oauth2
from google.protobuf import empty_pb2, field_mask_pb2  # type: ignore[import-untyped]
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from keyledger.backends import (
    BackendConflict,
    BackendError,
    InvalidBackendRequest,
    SecretNotFound,
)
from keyledger.model import Action, SecretItem, SecretRef, SecretResult
from keyledger.proxy.errors import (
    AccessDenied,
    AuthError,
    ErrorKind,
    ProxyError,
    RequestError,
)
from keyledger.proxy.frontends.gcp_common import ProjectRoutes
from keyledger.proxy.frontends.gcp_rest import ENUM_ENCODING, GcpRestFrontend
from keyledger.proxy.wire import Call, WireRequest

BACKEND = "gcp"
ROUTES = ProjectRoutes({"demo": BACKEND, "other": "gcp-eu"})
FRONTEND = GcpRestFrontend(ROUTES)
VALUE = b"s3cr3t-value-\x00\xff"  # not UTF-8 on purpose: bytes travel as base64

Answer = Callable[[Call], SecretResult]


def store_answer(call: Call) -> SecretResult:
    """What a store would answer each RPC with, built from the request message."""
    message = call.request.params["request"]
    op = call.operation
    response: Any
    if op == "AccessSecretVersion":
        name = message.name.replace("/latest", "/1")
        response = service.AccessSecretVersionResponse(
            name=name, payload=resources.SecretPayload(data=VALUE)
        )
    elif op == "GetSecret":
        response = resources.Secret(
            name=message.name,
            labels={"team": "payments"},
            replication=resources.Replication(automatic=resources.Replication.Automatic()),
        )
    elif op == "ListSecrets":
        response = service.ListSecretsResponse(
            secrets=[
                resources.Secret(name=f"{message.parent}/secrets/a"),
                resources.Secret(name=f"{message.parent}/secrets/b"),
            ],
            next_page_token="" if message.page_token else "page-2",
            total_size=2,
        )
    elif op == "CreateSecret":
        response = resources.Secret(message.secret)
        response.name = f"{message.parent}/secrets/{message.secret_id}"
    elif op == "AddSecretVersion":
        response = resources.SecretVersion(
            name=f"{message.parent}/versions/2", state=resources.SecretVersion.State.ENABLED
        )
    elif op == "UpdateSecret":
        response = message.secret
    elif op == "DeleteSecret":
        response = empty_pb2.Empty()
    elif op == "ListSecretVersions":
        response = service.ListSecretVersionsResponse(
            versions=[
                resources.SecretVersion(
                    name=f"{message.parent}/versions/1",
                    state=resources.SecretVersion.State.DISABLED,
                )
            ]
        )
    elif op in ("GetSecretVersion", "EnableSecretVersion"):
        response = resources.SecretVersion(
            name=message.name, state=resources.SecretVersion.State.ENABLED
        )
    elif op == "DisableSecretVersion":
        response = resources.SecretVersion(
            name=message.name, state=resources.SecretVersion.State.DISABLED
        )
    elif op == "DestroySecretVersion":
        response = resources.SecretVersion(
            name=message.name, state=resources.SecretVersion.State.DESTROYED
        )
    elif op == "GetIamPolicy":
        response = policy_pb2.Policy(
            version=3,
            etag=b"\x01\x02",
            bindings=[policy_pb2.Binding(role="roles/viewer", members=["user:a@example.com"])],
        )
    elif op == "SetIamPolicy":
        response = message.policy
    elif op == "TestIamPermissions":
        response = iam_policy_pb2.TestIamPermissionsResponse(permissions=message.permissions)
    else:  # pragma: no cover - every served RPC is answered above
        raise AssertionError(op)
    items = () if call.single is None else (SecretItem(ref=call.single),)
    return SecretResult(data={"response": response}, items=items)


@dataclass
class Seen:
    wire: WireRequest
    call: Call | None


@dataclass
class Server:
    """An HTTP server in a thread of its own: parse with the frontend, answer with it."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    answer: Answer = store_answer
    hidden: set[SecretRef] = field(default_factory=set)

    @property
    def calls(self) -> list[Call]:
        """The calls the test made, each parsed."""
        calls = [seen.call for seen in self.seen]
        assert None not in calls, self.seen
        return [call for call in calls if call is not None]

    @property
    def call(self) -> Call:
        """The one call the test made."""
        (call,) = self.calls
        return call

    async def handle(self, request: web.Request) -> web.Response:
        wire = WireRequest(
            method=request.method,
            path=request.path,
            query=tuple(request.query.items()),
            headers=request.headers,
            body=await request.read(),
            source_ip=request.remote,
            user_agent=request.headers.get("User-Agent"),
            request_id="rid-1",
        )
        call = None
        try:
            call = FRONTEND.parse(wire)
            self.seen.append(Seen(wire, call))
            result = self.answer(call)
        except (ProxyError, BackendError) as exc:
            if call is None:
                self.seen.append(Seen(wire, None))
            response = FRONTEND.render_error(exc, request_id="rid-1")
        else:
            response = FRONTEND.render(
                call, result, hidden=self.hidden, denied=set(), request_id="rid-1"
            )
        return web.Response(status=response.status, body=response.body, headers=response.headers)


@pytest.fixture(scope="module")
def running() -> Iterator[Server]:
    server = Server()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.fixture
def server(running: Server) -> Server:
    running.seen.clear()
    running.answer = store_answer
    running.hidden = set()
    return running


@pytest.fixture
def client(server: Server) -> SecretManagerServiceClient:
    return SecretManagerServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=server.url),
    )


@pytest.fixture
def discovery(server: Server) -> Iterator[Any]:
    resource = build(
        "secretmanager",
        "v1",
        static_discovery=True,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": server.url},
    )
    with resource:
        yield resource


def wire(
    method: str, path: str, body: bytes = b"", query: tuple[tuple[str, str], ...] = ()
) -> WireRequest:
    return WireRequest(
        method=method,
        path=path,
        query=query,
        headers={},
        body=body,
        source_ip="127.0.0.1",
        user_agent=None,
        request_id="rid-1",
    )


# Global and regional parents: the location is not part of the name policy sees.
PARENTS = ["projects/demo", "projects/demo/locations/europe-west1"]


@pytest.mark.parametrize("parent", PARENTS)
class TestGapicClient:
    def test_access_reads_one_version_and_the_checksum_holds(
        self, client: SecretManagerServiceClient, server: Server, parent: str
    ) -> None:
        """:access is a read of {project}/{secret}; the payload arrives with a CRC32C the
        client (and we) can check, computed here since the store gave none."""
        response = client.access_secret_version(name=f"{parent}/secrets/db/versions/latest")

        call = server.call
        assert (call.operation, call.action) == ("AccessSecretVersion", Action.READ)
        assert call.targets == (SecretRef(BACKEND, "demo/db"),)
        assert call.request.version == "latest"
        assert call.request.params["request"].name == f"{parent}/secrets/db/versions/latest"
        assert call.rendering[ENUM_ENCODING] == "int"  # what the GAPIC client asks
        headers = server.seen[0].wire.headers
        assert {"x-goog-api-client", "x-goog-request-params"} <= {h.lower() for h in headers}
        assert response.payload.data == VALUE
        assert response.payload.data_crc32c == google_crc32c.value(VALUE)
        assert response.name == f"{parent}/secrets/db/versions/1"

    def test_get_secret_is_a_describe(
        self, client: SecretManagerServiceClient, server: Server, parent: str
    ) -> None:
        """GET .../secrets/{s} describes the secret; labels and replication come back."""
        secret = client.get_secret(name=f"{parent}/secrets/db")

        call = server.call
        assert (call.operation, call.action) == ("GetSecret", Action.DESCRIBE)
        assert call.targets == (SecretRef(BACKEND, "demo/db"),)
        assert secret.labels == {"team": "payments"}
        assert "automatic" in secret.replication

    def test_list_secrets_pages_with_size_token_and_filter(
        self, client: SecretManagerServiceClient, server: Server, parent: str
    ) -> None:
        """pageSize, pageToken and filter reach the request; both pages are followed."""
        pager = client.list_secrets(
            request=service.ListSecretsRequest(parent=parent, page_size=2, filter="labels.t=x")
        )

        names = [s.name for s in pager]
        assert names == [f"{parent}/secrets/{s}" for s in ("a", "b", "a", "b")]
        first, second = server.calls
        assert (first.operation, first.action, first.targets) == ("ListSecrets", Action.LIST, ())
        assert first.filter_results
        asked = [c.request.params["request"] for c in (first, second)]
        assert [(r.page_size, r.page_token, r.filter) for r in asked] == [
            (2, "", "labels.t=x"),
            (2, "page-2", "labels.t=x"),
        ]

    def test_a_listing_hides_what_policy_hides_and_keeps_paging(
        self, client: SecretManagerServiceClient, server: Server, parent: str
    ) -> None:
        """A hidden secret is not on the page; the next page token still is."""
        server.hidden = {SecretRef(BACKEND, "demo/b")}

        page = client.list_secrets(parent=parent)

        assert [s.name for s in page] == [f"{parent}/secrets/a"] * 2
        assert len(server.seen) == 2  # the token was kept, so the client followed it

    def test_create_secret_takes_secret_id_from_the_query(
        self, client: SecretManagerServiceClient, server: Server, parent: str
    ) -> None:
        """POST .../secrets?secretId= is a write of the new secret; the body is the Secret."""
        created = client.create_secret(
            parent=parent,
            secret_id="new",
            secret=resources.Secret(
                labels={"env": "prod"},
                replication=resources.Replication(automatic=resources.Replication.Automatic()),
            ),
        )

        call = server.call
        assert (call.operation, call.action) == ("CreateSecret", Action.WRITE)
        assert call.targets == (SecretRef(BACKEND, "demo/new"),)
        message = call.request.params["request"]
        assert (message.parent, message.secret_id) == (parent, "new")
        assert message.secret.labels == {"env": "prod"}
        assert created.name == f"{parent}/secrets/new"

    def test_add_version_carries_the_payload_and_its_checksum(
        self, client: SecretManagerServiceClient, server: Server, parent: str
    ) -> None:
        """:addVersion is a write; the payload and the client's CRC32C reach the request."""
        version = client.add_secret_version(
            parent=f"{parent}/secrets/db",
            payload=resources.SecretPayload(data=VALUE, data_crc32c=google_crc32c.value(VALUE)),
        )

        call = server.call
        assert (call.operation, call.action) == ("AddSecretVersion", Action.WRITE)
        assert call.targets == (SecretRef(BACKEND, "demo/db"),)
        payload = call.request.params["request"].payload
        assert (payload.data, payload.data_crc32c) == (VALUE, google_crc32c.value(VALUE))
        assert version.state is resources.SecretVersion.State.ENABLED

    def test_update_secret_names_it_by_secret_name_with_the_mask(
        self, client: SecretManagerServiceClient, server: Server, parent: str
    ) -> None:
        """PATCH .../secrets/{s}?updateMask= fills secret.name from the path."""
        updated = client.update_secret(
            secret=resources.Secret(
                name=f"{parent}/secrets/db", labels={"a": "1"}, annotations={"n": "x"}
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["labels", "annotations"]),
        )

        call = server.call
        assert (call.operation, call.action) == ("UpdateSecret", Action.WRITE)
        assert call.targets == (SecretRef(BACKEND, "demo/db"),)
        message = call.request.params["request"]
        assert message.secret.name == f"{parent}/secrets/db"
        assert list(message.update_mask.paths) == ["labels", "annotations"]
        assert (updated.labels, updated.annotations) == ({"a": "1"}, {"n": "x"})

    def test_delete_secret_answers_empty(
        self, client: SecretManagerServiceClient, server: Server, parent: str
    ) -> None:
        """DELETE .../secrets/{s} is a delete, answered {} (with the etag passed on)."""
        client.delete_secret(request={"name": f"{parent}/secrets/db", "etag": '"abc"'})

        call = server.call
        assert (call.operation, call.action) == ("DeleteSecret", Action.DELETE)
        assert call.request.params["request"].etag == '"abc"'

    def test_versions_are_listed_and_got(
        self, client: SecretManagerServiceClient, server: Server, parent: str
    ) -> None:
        """GET .../versions and .../versions/{v} describe the one secret they are about."""
        listed = list(client.list_secret_versions(parent=f"{parent}/secrets/db"))
        got = client.get_secret_version(name=f"{parent}/secrets/db/versions/7")

        listing, single = server.calls
        assert (listing.operation, listing.action) == ("ListSecretVersions", Action.DESCRIBE)
        assert listing.targets == (SecretRef(BACKEND, "demo/db"),)
        assert not listing.filter_results
        assert (single.operation, single.request.version) == ("GetSecretVersion", "7")
        assert listed[0].state is resources.SecretVersion.State.DISABLED
        assert got.name == f"{parent}/secrets/db/versions/7"

    @pytest.mark.parametrize(
        ("method", "operation", "action", "state"),
        [
            ("disable_secret_version", "DisableSecretVersion", Action.WRITE, "DISABLED"),
            ("enable_secret_version", "EnableSecretVersion", Action.WRITE, "ENABLED"),
            ("destroy_secret_version", "DestroySecretVersion", Action.DELETE, "DESTROYED"),
        ],
    )
    def test_version_state_changes(
        self,
        client: SecretManagerServiceClient,
        server: Server,
        parent: str,
        method: str,
        operation: str,
        action: Action,
        state: str,
    ) -> None:
        """:disable, :enable and :destroy name their version; destroying is a delete."""
        version = getattr(client, method)(
            request={"name": f"{parent}/secrets/db/versions/3", "etag": '"e"'}
        )

        call = server.call
        assert (call.operation, call.action, call.request.version) == (operation, action, "3")
        assert call.request.params["request"].etag == '"e"'
        assert version.state.name == state

    def test_iam_policy_is_got_set_and_tested(
        self, client: SecretManagerServiceClient, server: Server, parent: str
    ) -> None:
        """The IAM methods are answered through policy like any call: getIamPolicy (with its
        requested version) and testIamPermissions describe, setIamPolicy writes."""
        resource = f"{parent}/secrets/db"
        got = client.get_iam_policy(
            request={"resource": resource, "options": {"requested_policy_version": 3}}
        )
        policy = policy_pb2.Policy(
            bindings=[policy_pb2.Binding(role="roles/owner", members=["user:b@example.com"])]
        )
        was_set = client.set_iam_policy(request={"resource": resource, "policy": policy})
        tested = client.test_iam_permissions(
            request={"resource": resource, "permissions": ["secretmanager.versions.access"]}
        )

        calls = server.calls
        assert [(c.operation, c.action) for c in calls] == [
            ("GetIamPolicy", Action.DESCRIBE),
            ("SetIamPolicy", Action.WRITE),
            ("TestIamPermissions", Action.DESCRIBE),
        ]
        assert {c.targets for c in calls} == {(SecretRef(BACKEND, "demo/db"),)}
        assert calls[0].request.params["request"].options.requested_policy_version == 3
        assert (got.version, got.etag, got.bindings[0].role) == (3, b"\x01\x02", "roles/viewer")
        assert was_set.bindings[0].members == ["user:b@example.com"]
        assert list(tested.permissions) == ["secretmanager.versions.access"]


class TestGapicErrors:
    """Each refusal reaches the GAPIC client as the exception it raises against Google."""

    @pytest.mark.parametrize(
        ("error", "raised"),
        [
            (SecretNotFound("Secret [projects/demo/secrets/db] not found"), exceptions.NotFound),
            (BackendConflict("Secret already exists"), exceptions.Conflict),
            (InvalidBackendRequest("bad page token"), exceptions.BadRequest),
            (
                AccessDenied(principal="app", operation="read", ref=None, explicit=True),
                exceptions.Forbidden,
            ),
        ],
    )
    def test_errors_raise_the_clients_exceptions_once(
        self,
        client: SecretManagerServiceClient,
        server: Server,
        error: ProxyError | BackendError,
        raised: type[Exception],
    ) -> None:
        """Not found, conflicts, bad requests and denials: the client's own exception after
        exactly one request (a refusal is never retried)."""

        def refuse(call: Call) -> SecretResult:
            raise error

        server.answer = refuse
        with pytest.raises(raised) as caught:
            client.access_secret_version(name="projects/demo/secrets/db/versions/1")
        assert len(server.seen) == 1
        assert VALUE.decode("latin-1") not in str(caught.value)

    @pytest.mark.parametrize(
        ("credentials", "raised"),
        [
            (AnonymousCredentials(), auth_exceptions.InvalidOperation),  # type: ignore[no-untyped-call]
            # A keyledger bearer token as Google's SDKs take a token: it cannot be refreshed.
            (oauth2.Credentials(token="kl-token"), auth_exceptions.RefreshError),  # type: ignore[no-untyped-call]
        ],
        ids=["anonymous", "static-token"],
    )
    def test_a_failed_login_is_one_request(
        self, server: Server, credentials: Any, raised: type[Exception]
    ) -> None:
        """A 401 is not retried: google-auth asks the credentials for a new token, which a
        token that cannot be refreshed refuses, after exactly one request."""
        server.answer = refuse_login
        client = SecretManagerServiceClient(
            transport="rest",
            credentials=credentials,
            client_options=ClientOptions(api_endpoint=server.url),
        )
        with pytest.raises(raised):
            client.access_secret_version(name="projects/demo/secrets/db/versions/1")
        assert len(server.seen) == 1

    def test_a_failed_login_with_refreshable_credentials_is_unauthenticated(
        self, server: Server
    ) -> None:
        """Credentials that can refresh are refreshed and resent by google-auth, at most
        twice (as against Google, not the client's retry policy), then the client raises
        Unauthorized (UNAUTHENTICATED)."""
        refreshed: list[str] = []

        def refresh(request: Any, scopes: Any) -> tuple[str, datetime]:
            refreshed.append("token")
            return "kl-token", datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)

        server.answer = refuse_login
        client = SecretManagerServiceClient(
            transport="rest",
            credentials=oauth2.Credentials(token=None, refresh_handler=refresh),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=server.url),
        )
        with pytest.raises(exceptions.Unauthorized) as caught:
            client.access_secret_version(name="projects/demo/secrets/db/versions/1")
        assert caught.value.code == 401
        assert len(server.seen) == 1 + 2  # google-auth's DEFAULT_MAX_REFRESH_ATTEMPTS

    def test_a_conflict_from_the_store_is_already_exists(
        self, client: SecretManagerServiceClient, server: Server
    ) -> None:
        """The store's ALREADY_EXISTS keeps its status name, so it reads as AlreadyExists."""

        def exists(call: Call) -> SecretResult:
            raise BackendConflict("Secret [projects/demo/secrets/db] already exists.")

        server.answer = exists
        with pytest.raises(exceptions.Conflict) as caught:
            client.create_secret(parent="projects/demo", secret_id="db", secret=resources.Secret())
        assert caught.value.code == 409
        assert "already exists" in caught.value.message

    def test_an_unknown_project_is_permission_denied(
        self, client: SecretManagerServiceClient, server: Server
    ) -> None:
        """A project no backend serves is refused as Google refuses one the caller may not
        see: 403, once."""
        with pytest.raises(exceptions.Forbidden):
            client.get_secret(name="projects/elsewhere/secrets/db")
        assert len(server.seen) == 1


def refuse_login(call: Call) -> SecretResult:
    raise AuthError("Request had invalid authentication credentials.", kind=ErrorKind.BAD_TOKEN)


class TestDiscoveryClient:
    def test_round_trip(self, discovery: Any, server: Server) -> None:
        """The discovery client creates, adds a version, reads it (enum names, base64 data,
        a checksum), lists, and reads a 404 as Google's error shape."""
        secrets = discovery.projects().secrets()
        created = secrets.create(
            parent="projects/demo", secretId="db", body={"replication": {"automatic": {}}}
        ).execute()
        data = base64.b64encode(VALUE).decode()
        version = secrets.addVersion(
            parent="projects/demo/secrets/db", body={"payload": {"data": data}}
        ).execute()
        access = (
            secrets.versions().access(name="projects/demo/secrets/db/versions/latest").execute()
        )
        listed = secrets.list(parent="projects/demo", pageSize=5).execute()

        assert created["name"] == "projects/demo/secrets/db"
        assert version["state"] == "ENABLED"
        assert base64.b64decode(access["payload"]["data"]) == VALUE
        assert access["payload"]["dataCrc32c"] == str(google_crc32c.value(VALUE))
        assert listed["nextPageToken"] == "page-2"
        calls = server.calls
        assert [c.operation for c in calls] == [
            "CreateSecret",
            "AddSecretVersion",
            "AccessSecretVersion",
            "ListSecrets",
        ]
        assert all(ENUM_ENCODING not in c.rendering for c in calls)

        def missing(call: Call) -> SecretResult:
            raise SecretNotFound("Secret [projects/demo/secrets/gone] not found.")

        server.answer = missing
        with pytest.raises(HttpError) as caught:
            secrets.get(name="projects/demo/secrets/gone").execute()
        assert caught.value.status_code == 404
        assert orjson.loads(caught.value.content)["error"]["status"] == "NOT_FOUND"

    def test_location_scoped_and_iam(self, discovery: Any, server: Server) -> None:
        """The regional resources and the IAM methods route like the global ones."""
        regional = discovery.projects().locations().secrets()
        name = "projects/other/locations/us-east1/secrets/db"
        regional.versions().disable(name=f"{name}/versions/2", body={}).execute()
        policy = regional.getIamPolicy(resource=name).execute()

        disable, get_policy = server.calls
        assert disable.targets == (SecretRef("gcp-eu", "other/db"),)
        assert (disable.operation, get_policy.operation) == (
            "DisableSecretVersion",
            "GetIamPolicy",
        )
        assert policy["etag"] == base64.b64encode(b"\x01\x02").decode()


class TestParse:
    def test_query_fields_and_system_parameters(self) -> None:
        """Query parameters fill fields by lowerCamel or snake name; Google's system
        parameters are accepted and are not fields."""
        call = FRONTEND.parse(
            wire(
                "GET",
                "/v1/projects/demo/secrets",
                query=(
                    ("pageSize", "10"),
                    ("page_token", "t"),
                    ("filter", "name:db"),
                    ("$alt", "json;enum-encoding=int"),
                    ("prettyPrint", "false"),
                    ("$.xgafv", "2"),
                ),
            )
        )
        message = call.request.params["request"]
        assert (message.page_size, message.page_token, message.filter) == (10, "t", "name:db")
        assert call.rendering[ENUM_ENCODING] == "int"

    @pytest.mark.parametrize(
        "query",
        [
            (("colour", "red"),),  # not a field
            (("name", "projects/demo/secrets/other"),),  # the path's field
            (("page-size", "1"),),  # not a field name at all
        ],
    )
    def test_a_query_parameter_that_is_not_a_field_is_invalid(
        self, query: tuple[tuple[str, str], ...]
    ) -> None:
        """Google refuses a query parameter it cannot bind (INVALID_ARGUMENT), and the path
        alone names what the call is about."""
        with pytest.raises(RequestError) as raised:
            FRONTEND.parse(wire("GET", "/v1/projects/demo/secrets/db", query=query))
        assert raised.value.kind is ErrorKind.BAD_REQUEST
        assert "Cannot bind query parameter" in raised.value.message

    def test_no_query_fields_when_the_body_is_the_request(self) -> None:
        """With body "*" every field is in the body: a query field is refused."""
        with pytest.raises(RequestError):
            FRONTEND.parse(
                wire(
                    "POST",
                    "/v1/projects/demo/secrets/db:addVersion",
                    body=b"{}",
                    query=(("parent", "projects/demo/secrets/x"),),
                )
            )

    def test_an_unknown_body_field_is_invalid_argument(self) -> None:
        """As Google does, a field the message does not have is refused, naming it."""
        with pytest.raises(RequestError) as raised:
            FRONTEND.parse(
                wire(
                    "POST",
                    "/v1/projects/demo/secrets",
                    body=b'{"replication": {"automatic": {}}, "colour": "red"}',
                    query=(("secretId", "db"),),
                )
            )
        assert raised.value.kind is ErrorKind.BAD_REQUEST
        assert raised.value.message == (
            "Invalid JSON payload received. Unknown name \"colour\" at 'secret': Cannot find field."
        )

    @pytest.mark.parametrize(
        "body",
        [b"{not json", b"[1, 2]", b'"text"'],
    )
    def test_a_body_that_is_not_a_json_object_is_malformed(self, body: bytes) -> None:
        """Malformed JSON, or JSON that is not an object, is a malformed body."""
        with pytest.raises(RequestError) as raised:
            FRONTEND.parse(wire("POST", "/v1/projects/demo/secrets/db:addVersion", body=body))
        assert raised.value.kind is ErrorKind.MALFORMED_BODY

    def test_a_bad_payload_never_echoes_the_value(self) -> None:
        """A payload that does not parse is refused without quoting what was sent."""
        secret = "hunter2-dont-echo"  # 17 characters: not base64
        for payload in ({"data": secret}, {"data": [secret]}, secret):
            body = orjson.dumps({"payload": payload})
            with pytest.raises(RequestError) as raised:
                FRONTEND.parse(wire("POST", "/v1/projects/demo/secrets/db:addVersion", body=body))
            assert secret not in raised.value.message
            rendered = FRONTEND.render_error(raised.value, request_id="rid-1")
            assert secret.encode() not in rendered.body

    def test_a_wrongly_typed_field_is_invalid_argument(self) -> None:
        """A value of the wrong JSON type is INVALID_ARGUMENT with the parser's reason."""
        with pytest.raises(RequestError) as raised:
            FRONTEND.parse(wire("GET", "/v1/projects/demo/secrets", query=(("pageSize", "many"),)))
        assert raised.value.kind is ErrorKind.BAD_REQUEST
        assert raised.value.message.startswith("Invalid JSON payload received.")

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/"),
            ("GET", "/v1/projects/demo/secrets/db:rotate"),
            ("PUT", "/v1/projects/demo/secrets/db"),
            ("GET", "/v1/projects/demo/secrets/db/versions/1/extra"),
            ("GET", "/v2/projects/demo/secrets/db"),
            ("GET", "/v1/projects/demo/secrets/"),
        ],
    )
    def test_a_path_no_method_serves_is_not_found(self, method: str, path: str) -> None:
        """Anything that is not one of the routes: an unknown operation, answered 404 as
        Google answers a URL it does not serve, and named for the audit event."""
        bad = wire(method, path)
        with pytest.raises(RequestError) as raised:
            FRONTEND.parse(bad)
        assert raised.value.kind is ErrorKind.UNKNOWN_OPERATION
        response = FRONTEND.render_error(raised.value, request_id="rid-1")
        assert response.status == 404
        assert orjson.loads(response.body)["error"]["status"] == "NOT_FOUND"
        assert FRONTEND.operation_name(bad) == f"{method} {path}"

    def test_operation_name_is_bounded_and_never_raises(self) -> None:
        """What a caller typed is cut short and made valid text."""
        name = FRONTEND.operation_name(wire("GET", "/v1/" + "\udcff" * 500))
        assert 0 < len(name) <= 128
        assert FRONTEND.operation_name(wire("GET", "/v1/projects/demo/secrets")) == "ListSecrets"

    def test_a_name_of_the_wrong_shape_is_a_request_error(self) -> None:
        """A path variable that is not a resource name keyledger can name is refused."""
        with pytest.raises(RequestError):
            FRONTEND.parse(
                wire(
                    "POST",
                    "/v1/projects/demo/secrets",
                    body=b"{}",
                    query=(("secretId", ""),),
                )
            )


class TestRender:
    def test_the_stores_checksum_is_kept(self) -> None:
        """A payload that already has a CRC32C is answered with it, not a recomputed one."""
        call = FRONTEND.parse(wire("GET", "/v1/projects/demo/secrets/db/versions/1:access"))
        response = service.AccessSecretVersionResponse(
            name="projects/demo/secrets/db/versions/1",
            payload=resources.SecretPayload(data=b"x", data_crc32c=12345),
        )
        rendered = FRONTEND.render(
            call,
            SecretResult(data={"response": response}),
            hidden=set(),
            denied=set(),
            request_id="rid-1",
        )
        assert orjson.loads(rendered.body)["payload"] == {
            "data": base64.b64encode(b"x").decode(),
            "dataCrc32c": "12345",
        }

    def test_enums_are_names_unless_numbers_are_asked_for(self) -> None:
        """state is "ENABLED" by default and 1 with $alt=json;enum-encoding=int."""
        path = "/v1/projects/demo/secrets/db/versions/1"
        result = SecretResult(
            data={
                "response": resources.SecretVersion(
                    name=path[4:], state=resources.SecretVersion.State.ENABLED
                )
            }
        )
        states = []
        for query in [(), (("$alt", "json;enum-encoding=int"),)]:
            call = FRONTEND.parse(wire("GET", path, query=query))
            rendered = FRONTEND.render(call, result, hidden=set(), denied=set(), request_id="rid-1")
            states.append(orjson.loads(rendered.body)["state"])
        assert states == ["ENABLED", 1]

    def test_delete_and_an_empty_answer_are_empty_objects(self) -> None:
        """DeleteSecret's Empty, and a call answered with nothing, render as {}."""
        call = FRONTEND.parse(wire("DELETE", "/v1/projects/demo/secrets/db"))
        for result in (
            SecretResult(data={"response": empty_pb2.Empty()}),
            FRONTEND.empty_result(call),
        ):
            rendered = FRONTEND.render(call, result, hidden=set(), denied=set(), request_id="rid-1")
            assert (rendered.status, rendered.body) == (200, b"{}")
        assert FRONTEND.narrow(call, set()) is call.request
        assert FRONTEND.item_errors(call, SecretResult(data={})) == []

    @pytest.mark.parametrize(
        ("error", "status", "name"),
        [
            (SecretNotFound("gone"), 404, "NOT_FOUND"),
            (BackendConflict("exists"), 409, "ALREADY_EXISTS"),
            (InvalidBackendRequest("bad"), 400, "INVALID_ARGUMENT"),
            (
                AccessDenied(principal="a", operation="read", ref=None, explicit=False),
                403,
                "PERMISSION_DENIED",
            ),
            (AuthError("no", kind=ErrorKind.MISSING_AUTH), 401, "UNAUTHENTICATED"),
            (RequestError("x", kind=ErrorKind.UNKNOWN_OPERATION), 404, "NOT_FOUND"),
        ],
    )
    def test_errors_have_googles_shape(
        self, error: ProxyError | BackendError, status: int, name: str
    ) -> None:
        """{"error": {"code", "message", "status"}}, the HTTP status the code, as JSON."""
        rendered = FRONTEND.render_error(error, request_id="rid-1")
        body = orjson.loads(rendered.body)
        assert rendered.status == status
        assert body["error"]["code"] == status
        assert body["error"]["status"] == name
        assert body["error"]["message"]
        assert rendered.headers["Content-Type"].startswith("application/json")
