"""The Frontend contract, written once, run against every wire protocol keyledger serves.

A frontend only translates: wire bytes into a canonical :class:`Call`, results and errors
back into its cloud's exact shapes. Each protocol brings a :class:`Caller` that phrases the
canonical requests (a read, a listing, an unknown operation, a body that is not its format)
and reads an error's code back out of a response the way that cloud's SDK would. What the
gateway relies on is then asserted once for every frontend: calls name their secrets as
policy names them, bad input is a ``RequestError`` (never another exception), every error
kind has a response, a denial or failed login is never an answer SDKs retry, hidden secrets
never reach a rendered answer, and no error carries a value.

Every protocol brings its caller: AWS's JSON protocol, Google's REST and gRPC, and Azure
Key Vault's REST surface.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import grpc
import orjson
import pytest
from azure.core.rest import HttpRequest
from azure.keyvault.secrets._generated._operations import _operations as sdk
from google.cloud.secretmanager_v1.types import Secret, service

from keyledger.backends import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    SecretNotFound,
)
from keyledger.backends.errors import StoreCredentialsMissing
from keyledger.model import Action, SecretItem, SecretRef, SecretResult
from keyledger.proxy.errors import (
    AccessDenied,
    AuditUnavailable,
    AuthError,
    ErrorKind,
    ProxyError,
    RequestError,
)
from keyledger.proxy.frontends.aws import TARGET_PREFIX, AwsFrontend
from keyledger.proxy.frontends.azure import AzureFrontend, VaultRoutes
from keyledger.proxy.frontends.gcp_common import ProjectRoutes
from keyledger.proxy.frontends.gcp_grpc import GcpGrpcFrontend, method_path
from keyledger.proxy.frontends.gcp_rest import GcpRestFrontend
from keyledger.proxy.wire import Frontend, WireRequest, WireResponse

BACKEND = "contract"
VALUE = "contract-value-5c1d"  # a canary: no error may ever carry it

AUTH_KINDS = {
    ErrorKind.MISSING_AUTH,
    ErrorKind.MALFORMED_AUTH,
    ErrorKind.UNKNOWN_KEY,
    ErrorKind.BAD_SIGNATURE,
    ErrorKind.EXPIRED,
    ErrorKind.BAD_SCOPE,
    ErrorKind.UNKNOWN_TOKEN,
    ErrorKind.BAD_TOKEN,
    ErrorKind.REVOKED_TOKEN,
    ErrorKind.EXPIRED_TOKEN,
}

# Statuses SDKs retry by themselves (AWS, Google and Azure clients all retry these): a
# refusal answered with one would be hammered again, and look like an outage.
RETRIED = {408, 429, 500, 502, 503, 504}


class Caller(Protocol):
    """How one protocol's clients phrase requests, and read an error code back."""

    frontend: Frontend
    secret: str  # a name valid in this cloud

    def read(self, name: str) -> WireRequest: ...

    def listing(self) -> WireRequest: ...

    def unknown_operation(self) -> WireRequest: ...

    def not_its_format(self) -> WireRequest: ...

    def listing_result(self, names: list[str]) -> SecretResult:
        """What this cloud's backend answers to :meth:`listing` when ``names`` exist."""
        ...

    def wire_name(self, name: str) -> str:
        """How this cloud writes the secret policy names ``name`` in an answer."""
        ...

    def error_code(self, response: WireResponse) -> str:
        """The error code the SDK would raise, read from the response."""
        ...


def wire(
    *, method: str, path: str, headers: dict[str, str], body: bytes, query: tuple[Any, ...] = ()
) -> WireRequest:
    return WireRequest(
        method=method,
        path=path,
        query=query,
        headers=headers,
        body=body,
        source_ip="127.0.0.1",
        user_agent="contract",
        request_id="rid-contract",
    )


class AwsCaller:
    secret = "contract/db-password"

    def __init__(self) -> None:
        self.frontend: Frontend = AwsFrontend(backend=BACKEND)

    def _call(self, operation: str, body: bytes) -> WireRequest:
        return wire(
            method="POST",
            path="/",
            headers={"x-amz-target": TARGET_PREFIX + operation},
            body=body,
        )

    def read(self, name: str) -> WireRequest:
        return self._call("GetSecretValue", orjson.dumps({"SecretId": name}))

    def listing(self) -> WireRequest:
        return self._call("ListSecrets", b"{}")

    def unknown_operation(self) -> WireRequest:
        return self._call("FetchEverything", b"{}")

    def not_its_format(self) -> WireRequest:
        return self._call("GetSecretValue", b"<SecretId>x</SecretId>")

    def listing_result(self, names: list[str]) -> SecretResult:
        return SecretResult(
            data={"SecretList": [{"Name": name, "ARN": f"arn:{name}"} for name in names]},
            items=tuple(SecretItem(ref=SecretRef(BACKEND, name)) for name in names),
        )

    def wire_name(self, name: str) -> str:
        return name

    def error_code(self, response: WireResponse) -> str:
        return str(orjson.loads(response.body)["__type"])


def google_name(name: str) -> str:
    """Policy's "{project}/{secret}" as Google writes it."""
    return "projects/{}/secrets/{}".format(*name.split("/", 1))


def google_listing(names: list[str]) -> SecretResult:
    """A ListSecrets page naming ``names``, as the GCP backend answers it."""
    page = service.ListSecretsResponse(secrets=[Secret(name=google_name(n)) for n in names])
    return SecretResult(
        data={"response": page},
        items=tuple(SecretItem(ref=SecretRef(BACKEND, name)) for name in names),
    )


class GcpGrpcCaller:
    """Google's gRPC clients: the request message's bytes on a SecretManagerService method;
    the code is the status number in grpc-status."""

    secret = "demo/db-password"

    def __init__(self) -> None:
        self.frontend: Frontend = GcpGrpcFrontend(ProjectRoutes({"demo": BACKEND}))

    def _call(self, rpc: str, body: bytes) -> WireRequest:
        return wire(method="POST", path=method_path(rpc), headers={}, body=body)

    def read(self, name: str) -> WireRequest:
        project, _, secret = name.partition("/")
        message = service.AccessSecretVersionRequest(
            name=f"projects/{project}/secrets/{secret}/versions/latest"
        )
        return self._call(
            "AccessSecretVersion", service.AccessSecretVersionRequest.serialize(message)
        )

    def listing(self) -> WireRequest:
        message = service.ListSecretsRequest(parent="projects/demo")
        return self._call("ListSecrets", service.ListSecretsRequest.serialize(message))

    def unknown_operation(self) -> WireRequest:
        return self._call("FetchEverything", b"")

    def not_its_format(self) -> WireRequest:
        return self._call("AccessSecretVersion", b'{"name": "projects/p/secrets/s"}')

    def listing_result(self, names: list[str]) -> SecretResult:
        return google_listing(names)

    def wire_name(self, name: str) -> str:
        return google_name(name)

    def error_code(self, response: WireResponse) -> str:
        number = int(response.headers["grpc-status"])
        (code,) = [c for c in grpc.StatusCode if c.value[0] == number]
        return str(code.name)


class GcpRestCaller:
    """Google's REST clients: a method and path of the v1 surface, JSON in the body; the
    code is the status name in {"error": {...}}."""

    secret = "demo/db-password"

    def __init__(self) -> None:
        self.frontend: Frontend = GcpRestFrontend(ProjectRoutes({"demo": BACKEND}))

    def read(self, name: str) -> WireRequest:
        return wire(
            method="GET",
            path=f"/v1/{google_name(name)}/versions/latest:access",
            headers={},
            body=b"",
            query=(("$alt", "json;enum-encoding=int"),),
        )

    def listing(self) -> WireRequest:
        return wire(method="GET", path="/v1/projects/demo/secrets", headers={}, body=b"")

    def unknown_operation(self) -> WireRequest:
        path = f"/v1/{google_name(self.secret)}:fetchEverything"
        return wire(method="POST", path=path, headers={}, body=b"{}")

    def not_its_format(self) -> WireRequest:
        path = f"/v1/{google_name(self.secret)}:addVersion"
        return wire(method="POST", path=path, headers={}, body=b"<payload>x</payload>")

    def listing_result(self, names: list[str]) -> SecretResult:
        return google_listing(names)

    def wire_name(self, name: str) -> str:
        return google_name(name)

    def error_code(self, response: WireResponse) -> str:
        return str(orjson.loads(response.body)["error"]["status"])


class AzureCaller:
    """Key Vault's clients: requests as azure-keyvault-secrets' own request builders write
    them (method, path under the vault's URL, ``api-version`` in the query, JSON in the
    body), sent to a vault keyledger knows by its Host name; the code is
    ``{"error": {"code"}}``. Policy names a secret ``{vault}/{name}``, in lower case."""

    secret = "payments/db-password"
    host = "payments.kv.keyledger.test:8443"

    def __init__(self) -> None:
        self.frontend: Frontend = AzureFrontend(
            VaultRoutes(
                hosts={"payments.kv.keyledger.test": (BACKEND, "payments")},
                paths={},
                default=None,
            ),
            authority="https://login.microsoftonline.com/contract",
            resource="https://vault.azure.net",
        )

    def _send(self, request: HttpRequest, body: bytes = b"") -> WireRequest:
        url = urlsplit(request.url)
        return wire(
            method=request.method,
            path=url.path,
            headers={"host": self.host, "authorization": "Bearer contract"},
            body=body,
            query=tuple(parse_qsl(url.query, keep_blank_values=True)),
        )

    def read(self, name: str) -> WireRequest:
        return self._send(sdk.build_key_vault_get_secret_request(name.split("/", 1)[1], ""))

    def listing(self) -> WireRequest:
        return self._send(sdk.build_key_vault_get_secrets_request())

    def unknown_operation(self) -> WireRequest:
        request = sdk.build_key_vault_backup_secret_request("db-password")
        request.url = request.url.replace("/backup", "/fetcheverything")
        return self._send(request, b"{}")

    def not_its_format(self) -> WireRequest:
        request = sdk.build_key_vault_set_secret_request("db-password")
        return self._send(request, b"<value>x</value>")

    def listing_result(self, names: list[str]) -> SecretResult:
        page = {
            "value": [{"id": f"https://{self.host}{self.wire_name(name)}"} for name in names],
            "nextLink": None,
        }
        return SecretResult(
            data={"status": 200, "body": page},
            items=tuple(SecretItem(ref=SecretRef(BACKEND, name)) for name in names),
        )

    def wire_name(self, name: str) -> str:
        """A secret's id names it after the vault's URL: ``.../secrets/{name}``."""
        return f"/secrets/{name.split('/', 1)[1]}"

    def error_code(self, response: WireResponse) -> str:
        return str(orjson.loads(response.body)["error"]["code"])


@pytest.fixture(params=["aws", "gcp-grpc", "gcp-rest", "azure"])
def caller(request: pytest.FixtureRequest) -> Caller:
    callers: dict[str, type[Caller]] = {
        "aws": AwsCaller,
        "gcp-grpc": GcpGrpcCaller,
        "gcp-rest": GcpRestCaller,
        "azure": AzureCaller,
    }
    return callers[request.param]()


def every_error() -> list[ProxyError | BackendError]:
    """One error of every kind the gateway may hand a frontend to render."""
    ref = SecretRef(BACKEND, "contract/db-password")
    # Every kind there is, so a kind added later cannot go unrendered.
    errors: list[ProxyError | BackendError] = [
        AuthError("who are you", kind=kind) if kind in AUTH_KINDS else RequestError("x", kind=kind)
        for kind in ErrorKind
    ]
    errors += [
        AccessDenied(principal="app", operation="read", ref=ref, explicit=True),
        AccessDenied(principal="app", operation="read", ref=None, explicit=False),
        AuditUnavailable("the journal cannot be written"),
        ProxyError("a bug of ours"),
        SecretNotFound("no such secret"),
        InvalidBackendRequest("bad parameter"),
        BackendConflict("exists already"),
        BackendUnavailable("store down"),
        StoreCredentialsMissing("keyledger has no credentials of its own"),
    ]
    return errors


class TestFrontendContract:
    def test_a_read_names_its_secret_as_policy_does(self, caller: Caller) -> None:
        """A read is action read on exactly the secret named, on the frontend's backend,
        and an operation it declares it serves."""
        call = caller.frontend.parse(caller.read(caller.secret))

        assert call.action is Action.READ
        assert call.targets == (SecretRef(BACKEND, caller.secret),)
        assert call.backend == BACKEND
        assert call.operation in caller.frontend.operations
        assert not call.filter_results

    def test_a_listing_names_nothing_and_is_filtered(self, caller: Caller) -> None:
        """A listing names no secret up front; its results are filtered one by one."""
        call = caller.frontend.parse(caller.listing())

        assert call.action is Action.LIST
        assert call.targets == ()
        assert call.filter_results

    @pytest.mark.parametrize("request_kind", ["unknown_operation", "not_its_format"])
    def test_bad_input_is_a_request_error(self, caller: Caller, request_kind: str) -> None:
        """What the frontend cannot use raises RequestError (rendered and audited), never
        another exception, and its operation name is still there for the event."""
        bad: WireRequest = getattr(caller, request_kind)()

        with pytest.raises(RequestError):
            caller.frontend.parse(bad)
        name = caller.frontend.operation_name(bad)
        assert 0 < len(name) <= 128

    def test_operations_are_few_enough_to_be_metric_labels(self, caller: Caller) -> None:
        """The operations served are a small, fixed set of short names."""
        operations = caller.frontend.operations
        assert 0 < len(operations) <= 64
        assert all(0 < len(op) <= 64 for op in operations)

    @pytest.mark.parametrize(
        "error", every_error(), ids=lambda e: f"{type(e).__name__}-{getattr(e, 'kind', '')}"
    )
    def test_every_error_has_its_clouds_shape(
        self, caller: Caller, error: ProxyError | BackendError
    ) -> None:
        """Each error is a 4xx or 5xx response whose code the SDK can read; a denial or a
        failed login is never one SDKs retry; no error carries a secret value."""
        response = caller.frontend.render_error(error, request_id="rid-contract")

        assert 400 <= response.status < 600
        assert caller.error_code(response)
        if isinstance(error, AccessDenied | AuthError | StoreCredentialsMissing):
            assert response.status not in RETRIED
        if isinstance(error, AuditUnavailable | BackendUnavailable) and not isinstance(
            error, StoreCredentialsMissing
        ):
            # Nothing was served and it may pass: the one kind of refusal worth a retry.
            assert response.status >= 500
        assert VALUE.encode() not in response.body

    def test_hidden_secrets_never_reach_the_answer(self, caller: Caller) -> None:
        """A listing rendered with a secret hidden by policy does not name it."""
        call = caller.frontend.parse(caller.listing())
        visible, hidden = f"{caller.secret}-shown", f"{caller.secret}-hidden"
        result = caller.listing_result([visible, hidden])

        response = caller.frontend.render(
            call,
            result,
            hidden={SecretRef(BACKEND, hidden)},
            denied=set(),
            request_id="rid-contract",
        )

        assert response.status == 200
        assert caller.wire_name(visible).encode() in response.body
        assert caller.wire_name(hidden).encode() not in response.body
