"""The AWS JSON 1.1 frontend: wire bytes in, canonical calls out, AWS-shaped errors back."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyledger.backends import SecretNotFound
from keyledger.backends.errors import (
    StoreCredentialsError,
    StoreCredentialsMissing,
    StoreCredentialsRefused,
)
from keyledger.model import Action, SecretRef, SecretResult
from keyledger.policies.testing import request_attributes
from keyledger.proxy.errors import AccessDenied, ErrorKind, RequestError
from keyledger.proxy.frontends.aws import OPERATIONS, TARGET_PREFIX, AwsFrontend
from keyledger.proxy.wire import WireRequest

FRONTEND = AwsFrontend(backend="aws")
TARGET = TARGET_PREFIX
VERSION_ID = "e12e9e10-b326-4864-beb9-029590706d40"  # as AWS writes them: a UUID


def wire(target: str, body: bytes) -> WireRequest:
    return WireRequest(
        method="POST",
        path="/",
        query=(),
        headers={"x-amz-target": target},
        body=body,
        source_ip="127.0.0.1",
        user_agent=None,
        request_id="rid-1",
    )


class TestParse:
    def test_get_secret_value_names_its_secret_and_version(self) -> None:
        """GetSecretValue becomes a read of aws:<SecretId>, with its version stage."""
        call = FRONTEND.parse(
            wire(
                "secretsmanager.GetSecretValue",
                b'{"SecretId": "prod/db", "VersionStage": "AWSPREVIOUS"}',
            )
        )
        assert call.action is Action.READ
        assert call.targets == (SecretRef("aws", "prod/db"),)
        assert call.request.version == "AWSPREVIOUS"
        assert call.request.params == {"SecretId": "prod/db", "VersionStage": "AWSPREVIOUS"}

    def test_batch_by_ids_is_partial_and_deduplicated(self) -> None:
        """A batch read authorises each named secret once and may go ahead partly."""
        call = FRONTEND.parse(
            wire("secretsmanager.BatchGetSecretValue", b'{"SecretIdList": ["a", "b", "a"]}')
        )
        assert call.targets == (SecretRef("aws", "a"), SecretRef("aws", "b"))
        assert call.partial
        assert call.filter_results
        narrowed = FRONTEND.narrow(call, {SecretRef("aws", "b")})
        assert narrowed.params["SecretIdList"] == ["b"]

    @pytest.mark.parametrize(
        ("body", "stage"),
        [
            (b'{"SecretId": "a"}', "AWSCURRENT"),
            (b'{"SecretId": "a", "VersionStage": "AWSPREVIOUS"}', "AWSPREVIOUS"),
            (b'{"SecretId": "a", "VersionId": "' + VERSION_ID.encode() + b'"}', None),
        ],
        ids=["plain", "by-stage", "by-version-id"],
    )
    def test_a_read_carries_the_stage_policies_see(self, body: bytes, stage: str | None) -> None:
        """A plain read reads AWSCURRENT, a named stage is that stage, and a read by version
        id alone has no stage a policy could know."""
        call = FRONTEND.parse(wire(TARGET + "GetSecretValue", body))

        assert call.version_stage == stage

    @pytest.mark.parametrize(
        "body",
        [b'{"SecretIdList": ["a", "b"]}', b'{"Filters": [{"Key": "name", "Values": ["a"]}]}'],
    )
    def test_a_batch_read_reads_the_current_versions(self, body: bytes) -> None:
        """BatchGetSecretValue, by ids or by filters, reads AWSCURRENT."""
        call = FRONTEND.parse(wire(TARGET + "BatchGetSecretValue", body))

        assert call.version_stage == "AWSCURRENT"

    def test_policy_tools_assume_what_a_plain_sdk_call_carries(self) -> None:
        """`policy explain` and `policy test` default the request attributes to what the
        proxy gives a plain SDK call of each action, so they decide as the proxy does."""
        frontend = FRONTEND
        for action, operation in [
            (Action.READ, "GetSecretValue"),
            (Action.DESCRIBE, "DescribeSecret"),
            (Action.WRITE, "PutSecretValue"),
            (Action.ROTATE, "RotateSecret"),
            (Action.DELETE, "DeleteSecret"),
        ]:
            call = frontend.parse(wire(TARGET + operation, b'{"SecretId": "a"}'))
            proxy_sees = {"protocol": frontend.protocol, "operation": call.operation}
            if call.version_stage:
                proxy_sees["version_stage"] = call.version_stage
            assert (call.action, request_attributes(action)) == (action, proxy_sees)

    def test_every_operation_maps_to_an_action(self) -> None:
        """Every supported operation parses with a secret id into its documented action."""
        for operation, op in OPERATIONS.items():
            field = op.id_field or "SecretIdList"
            value: object = ["x"] if field == "SecretIdList" else "x"
            call = FRONTEND.parse(wire(f"secretsmanager.{operation}", orjson.dumps({field: value})))
            assert call.action is op.action
            assert call.operation == operation

    @pytest.mark.parametrize(
        ("target", "body", "kind"),
        [
            ("secretsmanager.Nope", b"{}", ErrorKind.UNKNOWN_OPERATION),
            ("kms.Decrypt", b"{}", ErrorKind.UNKNOWN_OPERATION),
            ("", b"{}", ErrorKind.UNKNOWN_OPERATION),
            ("secretsmanager.GetSecretValue", b"{", ErrorKind.MALFORMED_BODY),
            ("secretsmanager.GetSecretValue", b"[1]", ErrorKind.MALFORMED_BODY),
            ("secretsmanager.GetSecretValue", b"{}", ErrorKind.BAD_REQUEST),
            ("secretsmanager.GetSecretValue", b'{"SecretId": 7}', ErrorKind.BAD_REQUEST),
            ("secretsmanager.BatchGetSecretValue", b'{"SecretIdList": "a"}', ErrorKind.BAD_REQUEST),
            # Longer than the service's own limit: refused before policy sees it.
            (
                "secretsmanager.GetSecretValue",
                b'{"SecretId": "' + b"/" * 2049 + b'"}',
                ErrorKind.BAD_REQUEST,
            ),
            (
                "secretsmanager.BatchGetSecretValue",
                b'{"SecretIdList": ["a", "' + b"x" * 2049 + b'"]}',
                ErrorKind.BAD_REQUEST,
            ),
        ],
    )
    def test_unusable_requests_are_request_errors(
        self, target: str, body: bytes, kind: ErrorKind
    ) -> None:
        """Unknown operations and bad bodies raise RequestError of the right kind."""
        with pytest.raises(RequestError) as exc:
            FRONTEND.parse(wire(target, body))
        assert exc.value.kind is kind

    @settings(max_examples=300, deadline=None)
    @given(
        operation=st.sampled_from([*OPERATIONS, "Bogus"]),
        body=st.one_of(
            st.binary(max_size=200),
            st.recursive(
                st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=4)
                    | st.dictionaries(
                        st.sampled_from(["SecretId", "Name", "SecretIdList", "Filters", "x"]),
                        inner,
                        max_size=4,
                    )
                ),
                max_leaves=10,
            ).map(orjson.dumps),
        ),
    )
    def test_no_input_crashes_the_parser(self, operation: str, body: bytes) -> None:
        """Whatever arrives, parse returns a call or raises RequestError, nothing else."""
        try:
            call = FRONTEND.parse(wire(f"secretsmanager.{operation}", body))
        except RequestError:
            return
        assert all(isinstance(t.name, str) and t.name for t in call.targets)


class TestBounds:
    """The service model's bounds on what reaches policy and the audit event."""

    @pytest.mark.parametrize(
        ("operation", "params", "constraint"),
        [
            ("GetSecretValue", {"VersionId": "v" * 65}, "less than or equal to 64"),
            ("GetSecretValue", {"VersionId": "v" * 31}, "greater than or equal to 32"),
            ("GetSecretValue", {"VersionStage": "S" * 257}, "less than or equal to 256"),
            ("GetSecretValue", {"VersionStage": ""}, "greater than or equal to 1"),
            ("UpdateSecretVersionStage", {"VersionStage": "S" * 100_000}, "or equal to 256"),
            ("UpdateSecretVersionStage", {"VersionStage": "AWSCURRENT",
                                          "MoveToVersionId": "m" * 65}, "or equal to 64"),
            ("GetSecretValue", {"SecretId": "n" * 2049}, "less than or equal to 2048"),
            ("CreateSecret", {"Name": "n" * 513}, "less than or equal to 512"),
        ],
        ids=["long-id", "short-id", "long-stage", "empty-stage", "huge-stage-moved",
             "long-move-to", "long-secret-id", "long-name"],
    )  # fmt: skip
    def test_out_of_bounds_is_awss_validation_exception_quoting_nothing(
        self, operation: str, params: dict[str, str], constraint: str
    ) -> None:
        """A version id, stage or name outside the service model's lengths is refused before
        policy or audit see it, with AWS's ValidationException, and the value is not quoted."""
        body = {"SecretId": "app/db", "Name": "app/db", **params}

        with pytest.raises(RequestError) as refused:
            FRONTEND.parse(wire(TARGET + operation, orjson.dumps(body)))

        assert refused.value.kind is ErrorKind.BAD_REQUEST
        response = FRONTEND.render_error(refused.value, request_id="r")
        answer = orjson.loads(response.body)
        assert response.status == 400
        assert answer["__type"] == response.headers["x-amzn-ErrorType"] == "ValidationException"
        assert constraint in answer["message"]
        assert len(answer["message"]) < 200
        for value in params.values():
            assert not value or value[:8] not in answer["message"]

    @pytest.mark.parametrize("field", ["VersionId", "VersionStage"])
    def test_a_version_that_is_not_a_string_is_a_serialization_error(self, field: str) -> None:
        """A version id or stage of another JSON type is not read as no version at all."""
        body = orjson.dumps({"SecretId": "app/db", field: {"nested": "x" * 1000}})

        with pytest.raises(RequestError) as refused:
            FRONTEND.parse(wire(TARGET + "GetSecretValue", body))

        assert refused.value.kind is ErrorKind.MALFORMED_BODY

    def test_the_longest_values_aws_takes_are_taken(self) -> None:
        """A 64-character version id and a 256-character stage are within bounds."""
        stage = "S" * 256
        body = orjson.dumps({"SecretId": "a", "VersionId": "v" * 64, "VersionStage": stage})
        call = FRONTEND.parse(wire(TARGET + "GetSecretValue", body))

        assert call.request.version == "v" * 64
        assert call.version_stage == stage


class TestRender:
    def test_errors_have_the_shape_botocore_parses(self) -> None:
        """Errors carry __type, message, x-amzn-ErrorType and the request id."""
        response = FRONTEND.render_error(
            SecretNotFound("Secrets Manager can't find the specified secret.",
                           code="ResourceNotFoundException"),
            request_id="rid-9",
        )  # fmt: skip
        assert response.status == 400
        assert orjson.loads(response.body) == {
            "__type": "ResourceNotFoundException",
            "message": "Secrets Manager can't find the specified secret.",
        }
        assert response.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
        assert response.headers["x-amzn-RequestId"] == "rid-9"

    def test_access_denied_reads_like_aws(self) -> None:
        """A policy refusal names the caller, operation and resource the way IAM does."""
        error = AccessDenied(
            principal="svc", operation="GetSecretValue", ref=SecretRef("aws", "p/x"), explicit=True
        )
        body = orjson.loads(FRONTEND.render_error(error, request_id="r").body)
        assert body["__type"] == "AccessDeniedException"
        assert body["message"] == (
            "User: keyledger:svc is not authorized to perform: secretsmanager:GetSecretValue "
            "on resource: p/x with an explicit deny in a keyledger policy"
        )

    @pytest.mark.parametrize("error", [StoreCredentialsMissing, StoreCredentialsRefused])
    def test_store_credential_errors_are_a_client_error_sdks_do_not_retry(
        self, error: type[StoreCredentialsError]
    ) -> None:
        """keyledger's own credentials missing or refused: 400 AccessDeniedException, not
        a 5xx that botocore would retry, with keyledger's explanation as the message."""
        response = FRONTEND.render_error(error("keyledger has none"), request_id="r")
        assert response.status == 400
        assert orjson.loads(response.body) == {
            "__type": "AccessDeniedException",
            "message": "keyledger has none",
        }
        assert response.headers["x-amzn-ErrorType"] == "AccessDeniedException"

    def test_listing_drops_hidden_secrets(self) -> None:
        """Hidden secrets vanish from ListSecrets; the rest of the answer is untouched."""
        call = FRONTEND.parse(wire("secretsmanager.ListSecrets", b"{}"))
        result = SecretResult(data={"SecretList": [{"Name": "a"}, {"Name": "b"}], "NextToken": "t"})
        body = orjson.loads(
            FRONTEND.render(
                call, result, hidden={SecretRef("aws", "b")}, denied=set(), request_id="r"
            ).body
        )
        assert body == {"SecretList": [{"Name": "a"}], "NextToken": "t"}
