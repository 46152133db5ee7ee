"""What Google's REST and gRPC front ends share: calls from the SDK's request messages,
project routing, listings filtered by policy, and Google's status for every error."""

from __future__ import annotations

import pytest
from google.cloud.secretmanager_v1.types import Secret, service

from keyledger.backends import BackendConflict, BackendUnavailable, SecretNotFound
from keyledger.backends.errors import StoreCredentialsRefused
from keyledger.backends.gcp import OPERATIONS
from keyledger.model import Action, SecretItem, SecretRef, SecretResult
from keyledger.proxy.errors import AccessDenied, AuthError, ErrorKind, RequestError
from keyledger.proxy.frontends.gcp_common import (
    ACTIONS,
    ProjectRoutes,
    answer,
    call_for,
    status_for,
)

ROUTES = ProjectRoutes({"demo": "gcp", "other": "gcp-eu"})


class TestCalls:
    def test_a_read_names_project_and_secret_on_the_projects_backend(self) -> None:
        """AccessSecretVersion is a read of {project}/{secret} on the backend serving the
        project, with the version asked for."""
        message = service.AccessSecretVersionRequest(
            name="projects/other/secrets/db/versions/latest"
        )

        call = call_for("AccessSecretVersion", message, ROUTES)

        assert call.action is Action.READ
        assert call.backend == "gcp-eu"
        assert call.targets == (SecretRef("gcp-eu", "other/db"),)
        assert call.request.params["request"] is message
        assert call.request.version == "latest"

    def test_a_regional_secret_is_named_like_a_global_one(self) -> None:
        """Policy names projects and secrets; the location is not part of the name."""
        message = service.GetSecretRequest(name="projects/demo/locations/eu/secrets/db")

        call = call_for("GetSecret", message, ROUTES)

        assert call.targets == (SecretRef("gcp", "demo/db"),)
        assert call.action is Action.DESCRIBE

    def test_create_names_the_secret_it_makes(self) -> None:
        """CreateSecret is about the secret_id under the parent project."""
        message = service.CreateSecretRequest(
            parent="projects/demo", secret_id="new", secret=Secret()
        )

        call = call_for("CreateSecret", message, ROUTES)

        assert call.targets == (SecretRef("gcp", "demo/new"),)
        assert call.action is Action.WRITE

    def test_a_listing_names_nothing_and_is_filtered(self) -> None:
        """ListSecrets is a list on the project's backend, filtered one by one."""
        call = call_for("ListSecrets", service.ListSecretsRequest(parent="projects/demo"), ROUTES)

        assert (call.action, call.targets, call.filter_results) == (Action.LIST, (), True)

    def test_a_project_nobody_serves_is_denied(self) -> None:
        """A project no backend serves is refused as Google refuses a project one may not
        see."""
        with pytest.raises(RequestError) as raised:
            call_for("GetSecret", service.GetSecretRequest(name="projects/x/secrets/s"), ROUTES)
        assert raised.value.kind is ErrorKind.ACCESS_DENIED

    def test_a_pass_through_backend_serves_the_rest(self) -> None:
        """With a default, every project not listed goes to it."""
        routes = ProjectRoutes({}, default="gcp")

        call = call_for("GetSecret", service.GetSecretRequest(name="projects/x/secrets/s"), routes)

        assert call.targets == (SecretRef("gcp", "x/s"),)

    @pytest.mark.parametrize(
        ("operation", "message"),
        [
            ("GetSecret", service.GetSecretRequest(name="projects/demo")),
            (
                "AccessSecretVersion",
                service.AccessSecretVersionRequest(name="projects/demo/secrets/s"),
            ),
            ("CreateSecret", service.CreateSecretRequest(parent="projects/demo")),
            ("GetSecret", service.AccessSecretVersionRequest(name="projects/demo/secrets/s")),
            ("RotateSecret", service.GetSecretRequest(name="projects/demo/secrets/s")),
        ],
    )
    def test_what_cannot_be_served_is_a_request_error(
        self, operation: str, message: object
    ) -> None:
        """A name of the wrong shape, a missing secret_id, the wrong message type or an RPC
        keyledger does not serve: RequestError, never another exception."""
        with pytest.raises(RequestError):
            call_for(operation, message, ROUTES)

    @pytest.mark.parametrize(
        ("operation", "message"),
        [
            ("GetSecret", service.GetSecretRequest(name="projects/demo/secrets/" + "s" * 256)),
            (
                "AccessSecretVersion",
                service.AccessSecretVersionRequest(
                    name="projects/demo/secrets/db/versions/" + "7" * 100_000
                ),
            ),
            ("GetSecret", service.GetSecretRequest(name="projects/demo/secrets/db\n<script>")),
            (
                "GetSecret",
                service.GetSecretRequest(name=f"projects/demo/locations/{'l' * 256}/secrets/s"),
            ),
            (
                "CreateSecret",
                service.CreateSecretRequest(parent="projects/demo", secret_id="n" * 256),
            ),
            ("CreateSecret", service.CreateSecretRequest(parent="projects/demo", secret_id="a b")),
        ],
        ids=["long-secret", "huge-version", "odd-secret", "long-location", "long-secret-id",
             "odd-secret-id"],
    )  # fmt: skip
    def test_a_name_google_would_refuse_is_refused_unquoted(
        self, operation: str, message: object
    ) -> None:
        """A name part or secret_id outside Google's bounds is INVALID_ARGUMENT before policy
        or an audit event sees it, and the answer does not quote it."""
        with pytest.raises(RequestError) as refused:
            call_for(operation, message, ROUTES)

        assert refused.value.kind is ErrorKind.BAD_REQUEST
        code, text = status_for(refused.value)
        assert code.name == "INVALID_ARGUMENT"
        assert len(text) < 200
        for quoted in ("sss", "777", "lll", "<script>", "a b"):
            assert quoted not in text

    def test_the_longest_names_google_takes_are_taken(self) -> None:
        """255 characters per part, Google's limit, is within bounds."""
        name = f"projects/demo/secrets/{'s' * 255}/versions/{'7' * 255}"

        call = call_for(
            "AccessSecretVersion", service.AccessSecretVersionRequest(name=name), ROUTES
        )

        assert call.targets == (SecretRef("gcp", "demo/" + "s" * 255),)
        assert call.request.version == "7" * 255

    def test_every_served_rpc_has_an_action(self) -> None:
        """Policy has a word for every RPC the backend forwards, and for no other."""
        assert ACTIONS.keys() == OPERATIONS.keys()


class TestListing:
    def test_hidden_secrets_leave_the_page_and_the_page_token_stays(self) -> None:
        """Secrets policy hides are not in the page; the next page token is kept and the
        total, which would count them, is not."""
        call = call_for("ListSecrets", service.ListSecretsRequest(parent="projects/demo"), ROUTES)
        page = service.ListSecretsResponse(
            secrets=[
                Secret(name="projects/demo/secrets/a"),
                Secret(name="projects/demo/secrets/b"),
            ],
            next_page_token="next",
            total_size=2,
        )
        result = SecretResult(
            data={"response": page},
            items=(
                SecretItem(ref=SecretRef("gcp", "demo/a")),
                SecretItem(ref=SecretRef("gcp", "demo/b")),
            ),
        )

        shown = answer(call, result, {SecretRef("gcp", "demo/b")})

        assert [s.name for s in shown.secrets] == ["projects/demo/secrets/a"]
        assert shown.next_page_token == "next"
        assert shown.total_size == 0


class TestStatus:
    @pytest.mark.parametrize(
        ("error", "name", "http"),
        [
            (AuthError("no", kind=ErrorKind.UNKNOWN_TOKEN), "UNAUTHENTICATED", 401),
            (
                AccessDenied(principal="a", operation="x", ref=None, explicit=False),
                "PERMISSION_DENIED",
                403,
            ),
            (RequestError("x", kind=ErrorKind.ACCESS_DENIED), "PERMISSION_DENIED", 403),
            (RequestError("x", kind=ErrorKind.UNKNOWN_OPERATION), "UNIMPLEMENTED", 501),
            (RequestError("x", kind=ErrorKind.MALFORMED_BODY), "INVALID_ARGUMENT", 400),
            (RequestError("x", kind=ErrorKind.AUDIT_UNAVAILABLE), "UNAVAILABLE", 503),
            (SecretNotFound("x", code="NOT_FOUND"), "NOT_FOUND", 404),
            (SecretNotFound("x"), "NOT_FOUND", 404),
            (BackendConflict("x", code="FAILED_PRECONDITION"), "FAILED_PRECONDITION", 400),
            (BackendConflict("x"), "ALREADY_EXISTS", 409),
            (BackendUnavailable("x"), "UNAVAILABLE", 503),
            (StoreCredentialsRefused("x"), "FAILED_PRECONDITION", 400),
        ],
    )
    def test_each_error_has_googles_status(self, error: Exception, name: str, http: int) -> None:
        """Each error is answered with the canonical code the SDKs map to their exceptions."""
        status, _ = status_for(error)  # type: ignore[arg-type]

        assert (status.name, status.http_status) == (name, http)
