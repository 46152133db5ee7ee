"""The Azure Key Vault frontend without a server: wire requests in, canonical calls out,
Key Vault-shaped answers and errors back.

Requests are built from the shared route table (and, where it matters that the SDK would
send exactly this, from azure-keyvault-secrets' own request builders); whether a status is
retried is asked of azure-core's own RetryPolicy, not of a list kept here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from azure.core.pipeline import PipelineContext, PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import HttpRequest as TransportRequest
from azure.core.pipeline.transport import HttpResponse as TransportResponse
from azure.core.rest import HttpRequest
from azure.core.utils import CaseInsensitiveDict
from azure.keyvault.secrets._generated._operations import _operations as sdk

from keyledger.backends import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    SecretNotFound,
)
from keyledger.backends.azure import OPERATIONS
from keyledger.backends.azure.routes import MAX_PAGE_SIZE
from keyledger.backends.errors import StoreCredentialsMissing, StoreCredentialsRefused
from keyledger.model import Action, SecretRef, SecretResult
from keyledger.proxy.errors import (
    AccessDenied,
    AuditUnavailable,
    AuthError,
    ErrorKind,
    ProxyError,
    RequestError,
)
from keyledger.proxy.frontends.azure import AzureFrontend, VaultRoutes
from keyledger.proxy.wire import WireRequest, WireResponse

BACKEND = "azure-main"
HOST = "payments.kv.example"
AUTHORITY = "https://login.microsoftonline.com/tenant-1234"
RESOURCE = "https://vault.azure.net"
CHALLENGE = f'Bearer authorization="{AUTHORITY}", resource="{RESOURCE}"'
CANARY = "canary-value-3e91"  # a value: never in an error
API = (("api-version", "7.6"),)

ROUTES = VaultRoutes(
    hosts={HOST: (BACKEND, "payments"), "KV.Other.Example": ("azure-eu", "other")},
    paths={"/team": (BACKEND, "team"), "/team/eu": ("azure-eu", "team-eu")},
    default=(BACKEND, "shared"),
)
FRONTEND = AzureFrontend(ROUTES, authority=AUTHORITY, resource=RESOURCE)

# The policy action each operation is authorised as: what policy authors write rules for.
EXPECTED_ACTIONS = {
    "GetSecret": Action.READ,
    "BackupSecret": Action.READ,
    "GetSecretVersions": Action.DESCRIBE,
    "GetDeletedSecret": Action.DESCRIBE,
    "GetSecrets": Action.LIST,
    "GetDeletedSecrets": Action.LIST,
    "SetSecret": Action.WRITE,
    "UpdateSecret": Action.WRITE,
    "RecoverDeletedSecret": Action.WRITE,
    "RestoreSecret": Action.WRITE,
    "DeleteSecret": Action.DELETE,
    "PurgeDeletedSecret": Action.DELETE,
}
LISTINGS = {"GetSecrets", "GetDeletedSecrets"}


def wire(
    method: str,
    path: str,
    *,
    query: tuple[tuple[str, str], ...] = API,
    host: str = HOST,
    body: bytes = b"",
) -> WireRequest:
    return WireRequest(
        method=method,
        path=path,
        query=query,
        headers={"host": host, "authorization": "Bearer t"},
        body=body,
        source_ip="127.0.0.1",
        user_agent="azsdk-python-keyvault-secrets",
        request_id="rid-azure",
        scheme="https",
    )


def operation(name: str) -> WireRequest:
    """The request for one operation of the route table on secret ``Db-Password`` (the
    latest version), with a JSON body if it takes one."""
    op = OPERATIONS[name]
    return wire(
        op.http_method,
        op.path("Db-Password" if op.takes_name else None, ""),
        body=b'{"value": "x"}' if op.body else b"",
    )


def refused(request: WireRequest) -> RequestError:
    with pytest.raises(RequestError) as caught:
        FRONTEND.parse(request)
    return caught.value


def rendered(error: ProxyError | BackendError) -> tuple[WireResponse, dict[str, Any]]:
    response = FRONTEND.render_error(error, request_id="rid-azure")
    return response, orjson.loads(response.body)["error"]


def retried(response: WireResponse, method: str = "GET") -> bool:
    """Whether azure-core's RetryPolicy (the SDK's default) would send the request again
    on this answer: by its own rules (status, method, Retry-After), not a list of ours."""
    policy = RetryPolicy()
    request = TransportRequest(method, f"https://{HOST}/secrets/db-password/")
    answer = TransportResponse(request, None)
    answer.status_code = response.status
    answer.headers = CaseInsensitiveDict(dict(response.headers))
    pipeline = PipelineResponse(request, answer, PipelineContext(None))
    return bool(policy.is_retry(policy.configure_retries({}), pipeline))


SDK_BUILDERS: dict[str, Callable[..., HttpRequest]] = {
    name: function
    for name, function in inspect.getmembers(sdk, inspect.isfunction)
    if name.startswith("build_key_vault_") and name.endswith("_request")
}


def operation_id(builder: str) -> str:
    """build_key_vault_get_secret_versions_request -> GetSecretVersions."""
    words = builder.removeprefix("build_key_vault_").removesuffix("_request").split("_")
    return "".join(word.title() for word in words)


class TestParse:
    @pytest.mark.parametrize("name", sorted(OPERATIONS))
    def test_each_operation_is_its_action_on_the_secret_as_policy_names_it(self, name: str) -> None:
        """Every operation of the route table parses to itself, authorised as the action
        policy authors expect, on ``{backend}:{vault}/{name in lower case}``; a restore on
        the whole vault (``{vault}/*``, its secret is inside an opaque backup); a listing on
        nothing up front, its results filtered one by one."""
        call = FRONTEND.parse(operation(name))

        assert call.operation == name
        assert call.action is EXPECTED_ACTIONS[name]
        assert call.backend == BACKEND
        assert call.operation in FRONTEND.operations
        if name in LISTINGS:
            assert call.targets == ()
            assert call.filter_results
        elif name == "RestoreSecret":
            assert [str(t) for t in call.targets] == ["azure-main:payments/*"]
            assert not call.filter_results
        else:
            assert [str(t) for t in call.targets] == ["azure-main:payments/db-password"]
            assert call.request.ref == call.targets[0]
            assert not call.filter_results

    def test_every_operation_is_authorised_as_some_action(self) -> None:
        """No operation of the route table is left without an expectation here."""
        assert set(EXPECTED_ACTIONS) == set(OPERATIONS)

    @pytest.mark.parametrize("builder", sorted(SDK_BUILDERS))
    def test_what_the_sdk_sends_is_parsed_as_the_operation_it_is_for(self, builder: str) -> None:
        """Each request azure-keyvault-secrets' request builders write (paths, the SDK's
        api-version, an empty version for the latest) parses to the operation it is
        named for."""
        arguments = {"secret_name": "Db-Password", "secret_version": ""}
        function = SDK_BUILDERS[builder]
        wanted = [p for p in inspect.signature(function).parameters if p in arguments]
        request = function(*(arguments[p] for p in wanted))
        url = urlsplit(request.url)
        body = b'{"value": "x"}' if OPERATIONS[operation_id(builder)].body else b""

        call = FRONTEND.parse(
            wire(request.method, url.path, query=tuple(parse_qsl(url.query)), body=body)
        )

        assert call.operation == operation_id(builder)

    def test_the_store_gets_the_name_as_sent_and_the_callers_view_of_the_vault(self) -> None:
        """The backend is handed the vault, the name as the caller cased it, the version,
        the query and the body, and the URLs the caller used (ids are written on the
        scheme and host; links to follow on those plus the vault's path prefix)."""
        call = FRONTEND.parse(
            wire(
                "PATCH",
                "/team/secrets/Db-Password/0123abcd",
                host="keyledger.internal:8443",
                body=b'{"tags": {"a": "b"}}',
            )
        )

        assert call.request.params == {
            "vault": "team",
            "name": "Db-Password",
            "version": "0123abcd",
            "query": API,
            "body": {"tags": {"a": "b"}},
            "id_base_url": "https://keyledger.internal:8443",
            "base_url": "https://keyledger.internal:8443/team",
        }
        assert call.request.version == "0123abcd"

    @pytest.mark.parametrize("path", ["/secrets/db-password", "/secrets/db-password/"])
    def test_the_latest_version_is_asked_for_without_a_version(self, path: str) -> None:
        """``/secrets/{name}`` and ``/secrets/{name}/`` read the latest: no version."""
        call = FRONTEND.parse(wire("GET", path))

        assert call.operation == "GetSecret"
        assert call.request.version is None


class TestVaultRouting:
    @pytest.mark.parametrize(
        "host", [HOST, "PAYMENTS.KV.Example", f"{HOST}:8443", "Payments.kv.example:443"]
    )
    def test_a_host_name_picks_its_vault_whatever_its_case_and_port(self, host: str) -> None:
        """A vault reached by its own Host name: matched without regard to case or port."""
        call = FRONTEND.parse(wire("GET", "/secrets/db-password", host=host))

        assert call.single == SecretRef(BACKEND, "payments/db-password")
        assert call.request.params["id_base_url"] == f"https://{host}"

    def test_a_configured_host_name_matches_in_any_case(self) -> None:
        """A host configured in capitals matches a lower-case Host header."""
        call = FRONTEND.parse(wire("GET", "/secrets/db", host="kv.other.example"))

        assert call.single == SecretRef("azure-eu", "other/db")

    @pytest.mark.parametrize(
        ("path", "expected", "prefix"),
        [
            ("/team/eu/secrets/db", SecretRef("azure-eu", "team-eu/db"), "/team/eu"),
            ("/team/secrets/db", SecretRef(BACKEND, "team/db"), "/team"),
            ("/team/secrets/eu", SecretRef(BACKEND, "team/eu"), "/team"),
        ],
    )
    def test_a_path_prefix_picks_its_vault_longest_first(
        self, path: str, expected: SecretRef, prefix: str
    ) -> None:
        """Behind one host, vaults are told apart by path prefix; a longer prefix wins over
        a shorter one it starts with, and the prefix stays in the links to follow."""
        call = FRONTEND.parse(wire("GET", path, host="keyledger.internal:8443"))

        assert call.single == expected
        assert call.request.params["base_url"] == f"https://keyledger.internal:8443{prefix}"
        assert call.request.params["id_base_url"] == "https://keyledger.internal:8443"

    def test_without_host_or_prefix_the_default_vault_serves(self) -> None:
        """A request no Host name or prefix claims goes to the default vault."""
        call = FRONTEND.parse(wire("GET", "/secrets/db", host="127.0.0.1:8443"))

        assert call.single == SecretRef(BACKEND, "shared/db")

    def test_no_vault_is_not_found(self) -> None:
        """Without a default, a request for no configured vault is 404 NotFound."""
        frontend = AzureFrontend(
            VaultRoutes(hosts={HOST: (BACKEND, "payments")}, paths={}, default=None),
            authority=AUTHORITY,
            resource=RESOURCE,
        )

        with pytest.raises(RequestError) as caught:
            frontend.parse(wire("GET", "/secrets/db", host="elsewhere.example"))

        response = frontend.render_error(caught.value, request_id="rid")
        assert response.status == 404
        assert orjson.loads(response.body)["error"]["code"] == "NotFound"

    @pytest.mark.parametrize("host", ["", "bad host", "a/b", "x" * 300])
    def test_a_request_without_a_usable_host_is_refused(self, host: str) -> None:
        """The Host names the vault, so one that is missing or not a host name is 400."""
        error = refused(wire("GET", "/secrets/db", host=host))

        assert rendered(error)[0].status == 400


class TestRefusedInput:
    @pytest.mark.parametrize("query", [(), (("api-version", "1.0"),), (("api-version", ""),)])
    def test_a_missing_or_unknown_api_version_is_a_bad_parameter(
        self, query: tuple[tuple[str, str], ...]
    ) -> None:
        """Key Vault refuses a request without an api-version it knows: 400 BadParameter."""
        response, error = rendered(refused(wire("GET", "/secrets/db", query=query)))

        assert response.status == 400
        assert error["code"] == "BadParameter"

    @pytest.mark.parametrize(
        "size",
        [
            "0",
            str(MAX_PAGE_SIZE + 1),
            "-1",
            "abc",
            "",
            "1.5",
            pytest.param("\N{SUPERSCRIPT TWO}", id="superscript-two"),
            pytest.param("\N{FULLWIDTH DIGIT THREE}", id="fullwidth-three"),
        ],
    )
    def test_a_page_size_outside_1_to_25_is_a_bad_parameter(self, size: str) -> None:
        """``maxresults`` is 1..25 as Key Vault's specification says; anything else is 400."""
        response, error = rendered(
            refused(wire("GET", "/secrets", query=(*API, ("maxresults", size))))
        )

        assert response.status == 400
        assert error["code"] == "BadParameter"

    @pytest.mark.parametrize("size", ["1", str(MAX_PAGE_SIZE)])
    def test_a_page_size_in_range_is_forwarded(self, size: str) -> None:
        """A listing's ``maxresults`` and ``$skiptoken`` reach the store."""
        query = (*API, ("maxresults", size), ("$skiptoken", "abc"))
        call = FRONTEND.parse(wire("GET", "/deletedsecrets", query=query))

        assert call.request.params["query"] == query

    def test_only_known_query_parameters_are_forwarded(self) -> None:
        """What is not Key Vault's (or is a listing's, on a read) does not reach the store."""
        query = (*API, ("maxresults", "5"), ("x-debug", "1"))
        call = FRONTEND.parse(wire("GET", "/secrets/db", query=query))

        assert call.request.params["query"] == API

    @pytest.mark.parametrize(
        "path",
        [
            "/secrets/db_password",
            "/secrets/db.password",
            "/secrets/" + "a" * 128,
            "/secrets//",
            "/secrets/db/not-hex",
            "/secrets/db/" + "a" * 65,
            "/deletedsecrets/db%2Fx",
        ],
    )
    def test_invalid_names_and_versions_are_bad_parameters(self, path: str) -> None:
        """Names are 1-127 letters, digits and dashes, versions 1-64 letters and digits:
        anything else is 400 before it reaches policy or the store."""
        response, error = rendered(refused(wire("GET", path)))

        assert response.status == 400
        assert error["code"] == "BadParameter"

    @pytest.mark.parametrize(
        "body",
        [
            f'["{CANARY}"]'.encode(),
            f'"{CANARY}"'.encode(),
            CANARY.encode(),
            f'{{"value": "{CANARY}"'.encode(),
            b"null",
            b"",
        ],
    )
    def test_a_body_that_is_not_a_json_object_is_refused_without_echoing_it(
        self, body: bytes
    ) -> None:
        """SetSecret with a body that is not a JSON object is 400; neither the error nor
        the answer repeats the body (it may hold the value being written)."""
        error = refused(wire("PUT", "/secrets/db", body=body))
        response, rendered_error = rendered(error)

        assert response.status == 400
        assert rendered_error["code"] == "BadParameter"
        assert CANARY not in str(error)
        assert CANARY.encode() not in response.body

    @pytest.mark.parametrize(
        ("method", "path"),
        [("POST", "/secrets/db/fetch"), ("PUT", "/secrets"), ("GET", "/keys/k")],
    )
    def test_an_unknown_operation_is_not_found_and_still_named(
        self, method: str, path: str
    ) -> None:
        """A method and path no secrets operation has is 404 NotFound; the event still
        names what was asked, bounded."""
        request = wire(method, path)
        response, error = rendered(refused(request))

        assert (response.status, error["code"]) == (404, "NotFound")
        assert FRONTEND.operation_name(request) == f"{method} {path}"


class TestChallenge:
    def test_a_request_without_credentials_gets_key_vaults_challenge(self) -> None:
        """The SDK's first, credential-less request is answered 401 with the challenge
        naming the authority and the resource to get a token for, exactly."""
        bare = dataclasses.replace(wire("GET", "/secrets/db"), headers={"host": HOST})

        response = FRONTEND.challenge(bare)

        assert response is not None
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == CHALLENGE
        assert orjson.loads(response.body)["error"]["code"] == "Unauthorized"

    def test_a_request_with_credentials_is_authenticated_instead(self) -> None:
        """With an Authorization header, there is no challenge: authentication decides."""
        assert FRONTEND.challenge(wire("GET", "/secrets/db")) is None


# What the caller asked for, as sent, cannot work: a retry sends the same.
REQUEST_KINDS = {
    ErrorKind.UNKNOWN_OPERATION,
    ErrorKind.BAD_REQUEST,
    ErrorKind.MALFORMED_BODY,
    ErrorKind.TOO_LARGE,
    ErrorKind.TIMEOUT,
}
# Nothing was served and it may pass: not refusals.
OUTAGE_KINDS = {ErrorKind.INTERNAL, ErrorKind.AUDIT_UNAVAILABLE}
# Every other kind is a failed login (a kind added later is one too, until said otherwise).
AUTH_KINDS = set(ErrorKind) - REQUEST_KINDS - OUTAGE_KINDS - {ErrorKind.ACCESS_DENIED}

# Errors a policy, a login, keyledger's own identity or a bad request produce: the caller
# retrying cannot change them.
REFUSALS: list[ProxyError | BackendError] = [
    AccessDenied(principal="app", operation="GetSecret", ref=None, explicit=False),
    AccessDenied(
        principal="app",
        operation="GetSecret",
        ref=SecretRef(BACKEND, "payments/db"),
        explicit=True,
    ),
    *(AuthError("who are you", kind=kind) for kind in sorted(AUTH_KINDS)),
    StoreCredentialsMissing("keyledger has no Azure credentials of its own"),
    StoreCredentialsRefused("Azure Key Vault refused keyledger's own identity"),
    *(RequestError("bad", kind=kind) for kind in sorted(REQUEST_KINDS)),
    SecretNotFound("gone", code="SecretNotFound", status=404),
    InvalidBackendRequest("bad", code="BadParameter", status=400),
    BackendConflict("deleted but recoverable", code="Conflict", status=409),
]


def error_id(error: ProxyError | BackendError) -> str:
    return f"{type(error).__name__}-{getattr(error, 'kind', '')}"


class TestRenderError:
    def test_a_failed_login_is_401_with_the_challenge(self) -> None:
        """Every 401 carries the challenge, as Key Vault's do, so the SDK can ask again."""
        response, error = rendered(AuthError("token expired", kind=ErrorKind.EXPIRED_TOKEN))

        assert response.status == 401
        assert error["code"] == "Unauthorized"
        assert response.headers["WWW-Authenticate"] == CHALLENGE

    def test_a_policy_denial_is_403_forbidden(self) -> None:
        """A denial is Key Vault's 403 Forbidden, saying keyledger refused it."""
        denial = AccessDenied(
            principal="app", operation="GetSecret", ref=SecretRef(BACKEND, "x"), explicit=True
        )
        response, error = rendered(denial)

        assert response.status == 403
        assert error["code"] == "Forbidden"
        assert "keyledger" in error["message"]
        assert "WWW-Authenticate" not in response.headers

    @pytest.mark.parametrize(
        "error",
        [StoreCredentialsMissing("no identity"), StoreCredentialsRefused("refused")],
        ids=error_id,
    )
    def test_keyledgers_own_identity_trouble_is_403(self, error: BackendError) -> None:
        """keyledger's own Azure identity missing or refused is 403: not the caller's
        login (no 401 to make the SDK fetch another token) and nothing a retry fixes."""
        response, body = rendered(error)

        assert response.status == 403
        assert body["code"] == "Forbidden"

    def test_the_stores_not_found_keeps_its_code(self) -> None:
        """A 404 from the vault is rendered with the vault's own code and message."""
        response, error = rendered(SecretNotFound("gone", code="NotFound", status=404))

        assert (response.status, error["code"], error["message"]) == (404, "NotFound", "gone")

    def test_a_not_found_without_a_code_is_secret_not_found(self) -> None:
        """A not-found without the store's code is Key Vault's SecretNotFound."""
        response, error = rendered(SecretNotFound("gone"))

        assert (response.status, error["code"]) == (404, "SecretNotFound")

    @pytest.mark.parametrize(
        ("error", "status", "code"),
        [
            (BackendConflict("deleted but recoverable"), 409, "Conflict"),
            (InvalidBackendRequest("bad"), 400, "BadParameter"),
            (BackendError("odd"), 500, "InternalServerError"),
            (BackendUnavailable("down"), 503, "ServiceUnavailable"),
            (BackendUnavailable("slow down", code="Throttled", status=429), 429, "Throttled"),
            (AuditUnavailable("journal full"), 503, "ServiceUnavailable"),
        ],
        ids=lambda v: v if isinstance(v, str | int) else error_id(v),
    )
    def test_each_backend_and_audit_error_has_its_status(
        self, error: ProxyError | BackendError, status: int, code: str
    ) -> None:
        """Conflicts, bad parameters, outages, throttling and an unwritable journal each
        answer with Key Vault's status and code."""
        response, body = rendered(error)

        assert (response.status, body["code"]) == (status, code)
        assert response.headers["x-ms-request-id"] == "rid-azure"

    @pytest.mark.parametrize("error", REFUSALS, ids=error_id)
    def test_a_refusal_is_never_retried_by_the_sdk(self, error: ProxyError | BackendError) -> None:
        """Denials, failed logins, keyledger's identity trouble, bad requests and the
        store's refusals are answered with what azure-core's RetryPolicy does not retry,
        even for a GET."""
        response, _ = rendered(error)

        assert not retried(response)

    @pytest.mark.parametrize(
        "error",
        [AuditUnavailable("journal full"), BackendUnavailable("down")],
        ids=error_id,
    )
    def test_an_outage_is_retried_by_the_sdk(self, error: ProxyError | BackendError) -> None:
        """Nothing was served and it may pass: the SDK retries these (which also shows
        that the check above can say yes)."""
        response, _ = rendered(error)

        assert retried(response)


def page(collection: str, *names: str, next_link: str | None = None) -> SecretResult:
    items = [{"id": f"https://{HOST}/{collection}/{name}", "attributes": {}} for name in names]
    return SecretResult(data={"status": 200, "body": {"value": items, "nextLink": next_link}})


class TestRender:
    @pytest.mark.parametrize("collection", ["secrets", "deletedsecrets"])
    def test_hidden_secrets_leave_the_page_and_paging_goes_on(self, collection: str) -> None:
        """A listing (of secrets, or of deleted ones) without what policy hides, named in
        any case, its nextLink kept so the SDK reads the next page."""
        call = FRONTEND.parse(wire("GET", f"/{collection}"))
        link = f"https://{HOST}/{collection}?api-version=7.6&$skiptoken=abc&maxresults=3"

        response = FRONTEND.render(
            call,
            page(collection, "shown", "Hidden", "also-shown", next_link=link),
            hidden={SecretRef(BACKEND, "payments/hidden")},
            denied=set(),
            request_id="rid-azure",
        )

        body = orjson.loads(response.body)
        assert response.status == 200
        assert [entry["id"].rsplit("/", 1)[1] for entry in body["value"]] == [
            "shown",
            "also-shown",
        ]
        assert body["nextLink"] == link
        assert response.headers["x-ms-request-id"] == "rid-azure"

    def test_an_answer_is_sent_as_the_vault_gave_it(self) -> None:
        """Without anything hidden, the status and JSON are the store's."""
        call = FRONTEND.parse(wire("GET", "/secrets/db"))
        bundle = {"value": "v", "id": f"https://{HOST}/secrets/db/0123", "attributes": {}}

        response = FRONTEND.render(
            call,
            SecretResult(data={"status": 200, "body": bundle}),
            hidden=set(),
            denied=set(),
            request_id="rid",
        )

        assert (response.status, orjson.loads(response.body)) == (200, bundle)

    def test_an_answer_without_a_body_has_none(self) -> None:
        """A purge's 204 is sent without a body, as Key Vault sends it."""
        call = FRONTEND.parse(wire("DELETE", "/deletedsecrets/db"))

        response = FRONTEND.render(
            call,
            SecretResult(data={"status": 204, "body": None}),
            hidden=set(),
            denied=set(),
            request_id="rid",
        )

        assert (response.status, response.body) == (204, b"")
