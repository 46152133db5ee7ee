"""boto3, unmodified, talking to a running keyledger in front of a real moto server."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from botocore.exceptions import ClientError

from keyledger import sigv4
from tests.conftest import REGION, TEST_POLICY, RunningProxy, running_proxy, signed_head


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def raw_call(
    proxy: RunningProxy,
    operation: str,
    body: dict[str, Any] | bytes,
    *,
    identity: str = "app",
    secret: str | None = None,
    now: datetime | None = None,
    sign_target: bool = True,
    sign_content_type: bool = True,
    extra_headers: dict[str, bytes] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A hand-signed JSON 1.1 call, for requests no SDK would send."""
    key = proxy.keys[identity]
    url = urlsplit(proxy.url)
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = sigv4.sign_headers(
        keys=sigv4.SigningKeyCache(),
        access_key_id=key.access_key_id,
        secret_key=secret or key.secret_access_key,
        session_token=None,
        region=REGION,
        service="secretsmanager",
        method="POST",
        host=url.netloc,
        path="/",
        headers={
            **({"content-type": "application/x-amz-json-1.1"} if sign_content_type else {}),
            **({"x-amz-target": f"secretsmanager.{operation}"} if sign_target else {}),
        },
        body=payload,
        now=now or datetime.now(UTC),
    )
    if not sign_target:
        headers["x-amz-target"] = f"secretsmanager.{operation}"
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        for name, raw in (extra_headers or {}).items():
            conn.putheader(name, raw)
        conn.putheader("Content-Length", str(len(payload)))
        conn.endheaders(payload)
        response = conn.getresponse()
        data = response.read()
        return response.status, orjson.loads(data) if data else {}, dict(response.headers)
    finally:
        conn.close()


class TestReads:
    def test_allowed_read_returns_the_value_and_records_it(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """An allowed GetSecretValue returns the store's value and leaves a success event."""
        created = store.create_secret(Name="app/db/password", SecretString="s3cr3t-value")
        response = proxy.client().get_secret_value(SecretId="app/db/password")

        assert response["SecretString"] == "s3cr3t-value"
        assert response["VersionId"] == created["VersionId"]
        (event,) = [
            e for e in proxy.events("access") if e["request"]["operation"] == "GetSecretValue"
        ]
        assert event["request"]["id"] == response["ResponseMetadata"]["RequestId"]
        assert event["principal"]["id"] == "app"
        assert event["principal"]["auth_method"] == "sigv4"
        assert event["action"] == "read"
        assert event["resource"] == {"backend": "aws", "secret": "app/db/password", "version": None}
        assert event["decision"]["effect"] == "allow"
        assert event["decision"]["rule"] == "app-read"
        assert event["decision"]["policy_hash"].startswith("sha256:")
        assert event["outcome"]["status"] == "success"
        assert event["outcome"]["version_id"] == created["VersionId"]
        assert event["outcome"]["value_fingerprint"].startswith("hmac-sha256:")
        assert event["request"]["source_ip"] == "127.0.0.1"
        assert "Boto3" in event["request"]["user_agent"]

    def test_same_value_same_fingerprint_new_value_new_fingerprint(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """Fingerprints tell an auditor whether two reads served the same value."""
        store.create_secret(Name="app/token", SecretString="one")
        client = proxy.client()
        client.get_secret_value(SecretId="app/token")
        client.get_secret_value(SecretId="app/token")
        store.put_secret_value(SecretId="app/token", SecretString="two")
        client.get_secret_value(SecretId="app/token")

        prints = [
            e["outcome"]["value_fingerprint"]
            for e in proxy.events("access")
            if e["request"]["operation"] == "GetSecretValue"
        ]
        assert prints[0] == prints[1] != prints[2]

    def test_read_by_arn_is_authorised_by_name(self, proxy: RunningProxy, store: Any) -> None:
        """A SecretId given as a full ARN is authorised by the secret's name."""
        arn = store.create_secret(Name="app/by-arn", SecretString="v")["ARN"]
        assert proxy.client().get_secret_value(SecretId=arn)["SecretString"] == "v"
        assert proxy.events("access")[-1]["resource"]["secret"] == "app/by-arn"
        denied_arn = store.create_secret(Name="app/forbidden-x", SecretString="v")["ARN"]
        with pytest.raises(ClientError) as exc:
            proxy.client().get_secret_value(SecretId=denied_arn)
        assert error_code(exc) == "AccessDeniedException"

    def test_partial_arn_is_resolved_by_the_store_not_guessed(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """A partial ARN of `app/db-backup` is authorised as that secret, not as `app/db`."""
        arn = store.create_secret(Name="app/db-backup", SecretString="v")["ARN"]
        partial = arn.rsplit("-", 1)[0]  # ...:secret:app/db-backup
        assert partial.endswith(":secret:app/db-backup")
        calls: list[Callable[[], object]] = [
            lambda: proxy.client().get_secret_value(SecretId=partial),
            lambda: proxy.client().tag_resource(
                SecretId=partial, Tags=[{"Key": "k", "Value": "v"}]
            ),
        ]
        for call in calls:
            with pytest.raises(ClientError) as exc:
                call()
            assert error_code(exc) == "AccessDeniedException"
        assert "Tags" not in store.describe_secret(SecretId="app/db-backup")
        denied = proxy.events("access")[-2:]
        assert [e["resource"]["secret"] for e in denied] == ["app/db-backup"] * 2
        assert {e["decision"]["rule"] for e in denied} == {"app-no-backups"}

    def test_arn_of_another_account_is_refused(self, proxy: RunningProxy, store: Any) -> None:
        """An ARN naming another account or region is not authorised as the local name."""
        store.create_secret(Name="app/local", SecretString="v")
        # A partial ARN: moto (like a lenient store) resolves it to the local secret.
        foreign = "arn:aws:secretsmanager:eu-west-3:999999999999:secret:app/local"
        with pytest.raises(ClientError) as exc:
            proxy.client().get_secret_value(SecretId=foreign)
        assert error_code(exc) == "AccessDeniedException"
        assert proxy.events("access")[-1]["outcome"]["status"] == "error"

    def test_nobody_learns_whether_an_arn_exists_without_any_permission(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """An identity with no rules gets AccessDenied for real and made-up ARNs alike."""
        arn = store.create_secret(Name="app/exists", SecretString="v")["ARN"]
        made_up = arn.replace("app/exists", "app/nothing")
        for secret_id in (arn, made_up):
            with pytest.raises(ClientError) as exc:
                proxy.client("stranger").get_secret_value(SecretId=secret_id)
            assert error_code(exc) == "AccessDeniedException"
        assert [e["resource"]["secret"] for e in proxy.events("access")[-2:]] == [arn, made_up]

    def test_arns_do_not_reveal_secrets_outside_the_callers_reach(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """Real and made-up ARNs outside app/* look the same; inside, not-found is honest."""
        arn = store.create_secret(Name="other/exists", SecretString="v")["ARN"]
        prefix = arn.split(":secret:")[0] + ":secret:"
        codes = []
        for secret_id in (prefix + "other/exists", prefix + "other/nothing"):
            with pytest.raises(ClientError) as exc:
                proxy.client().get_secret_value(SecretId=secret_id)
            codes.append(error_code(exc))
        assert codes == ["AccessDeniedException", "AccessDeniedException"]
        # The event still says what really happened.
        assert proxy.events("access")[-1]["outcome"]["code"] == "ResourceNotFoundException"
        with pytest.raises(ClientError) as exc:
            proxy.client().get_secret_value(SecretId=prefix + "app/nothing")
        assert error_code(exc) == "ResourceNotFoundException"

    def test_batch_with_an_unknown_arn_still_serves_the_rest(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """One unresolvable ARN in a batch is reported for itself, not for the whole batch."""
        arn = store.create_secret(Name="app/ok", SecretString="fine")["ARN"]
        missing = arn.split(":secret:")[0] + ":secret:app/missing"
        response = proxy.client().batch_get_secret_value(SecretIdList=["app/ok", missing])
        assert [v["SecretString"] for v in response["SecretValues"]] == ["fine"]
        assert [e["SecretId"] for e in response["Errors"]] == [missing]

    @pytest.mark.parametrize(
        ("elsewhere", "code", "status"),
        [
            ("eu-west-1:123456789012", "AccessDeniedException", "denied"),
            # Not found from this account (one that found it would fail the ARN check).
            (":999999999999", "ResourceNotFoundException", "error"),
        ],
        ids=["another-region", "another-account"],
    )
    def test_batch_never_decides_on_the_text_of_an_arn_it_could_not_resolve(
        self,
        tmp_path: Path,
        moto_url: str,
        store: Any,
        store_credentials: None,
        elsewhere: str,
        code: str,
        status: str,
    ) -> None:
        """Under a policy allowing every secret, an ARN of another region in a batch is
        refused for itself (AccessDeniedException), never sent on to the store; one of
        another account is not found; the rest of the batch is served either way."""
        arn = store.create_secret(Name="app/ok", SecretString="fine")["ARN"]
        region, account = elsewhere.split(":")
        foreign = f"arn:aws:secretsmanager:{region or REGION}:{account}:secret:app/ok-AbCdEf"
        everything = TEST_POLICY.replace('resources: ["aws:app/*"]', 'resources: ["aws:*"]', 1)
        with running_proxy(tmp_path, moto_url, policy=everything) as proxy:
            response = proxy.client().batch_get_secret_value(SecretIdList=[arn, foreign])
        events = {e["resource"]["secret"]: e for e in proxy.events("access")}

        assert [v["SecretString"] for v in response["SecretValues"]] == ["fine"]
        assert [(e["SecretId"], e["ErrorCode"]) for e in response["Errors"]] == [(foreign, code)]
        assert events[foreign]["outcome"]["status"] == status
        assert events[foreign]["outcome"]["value_fingerprint"] is None

    def test_batch_of_more_than_twenty_is_invalid(self, proxy: RunningProxy) -> None:
        """The service's limit of 20 ids per batch holds, before any lookup."""
        status, body, _ = raw_call(
            proxy, "BatchGetSecretValue", {"SecretIdList": [f"app/{i}" for i in range(21)]}
        )
        assert status == 400
        assert body["__type"] == "InvalidParameterException"

    def test_binary_secret_round_trips(self, proxy: RunningProxy, store: Any) -> None:
        """SecretBinary values come back byte for byte."""
        store.create_secret(Name="app/blob", SecretBinary=b"\x00\x01\xffbinary")
        assert proxy.client().get_secret_value(SecretId="app/blob")["SecretBinary"] == (
            b"\x00\x01\xffbinary"
        )

    def test_missing_secret_is_resource_not_found(self, proxy: RunningProxy) -> None:
        """A secret the store does not have raises the usual ResourceNotFoundException."""
        with pytest.raises(ClientError) as exc:
            proxy.client().get_secret_value(SecretId="app/nope")
        assert error_code(exc) == "ResourceNotFoundException"
        (event,) = proxy.events("access")[-1:]
        assert event["outcome"]["status"] == "error"
        assert event["outcome"]["code"] == "ResourceNotFoundException"


class TestPolicy:
    def test_explicit_deny_raises_access_denied_and_is_recorded(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """A denied read raises AccessDeniedException and leaves a deny event naming the rule."""
        store.create_secret(Name="app/forbidden", SecretString="never-served")
        with pytest.raises(ClientError) as exc:
            proxy.client().get_secret_value(SecretId="app/forbidden")

        assert error_code(exc) == "AccessDeniedException"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        event = proxy.events("access")[-1]
        assert event["decision"] == {
            "effect": "deny",
            "rule": "app-no-forbidden",
            "policy_hash": event["decision"]["policy_hash"],
            "reason": "rule app-no-forbidden denies read on aws:app/forbidden",
        }
        assert event["outcome"]["status"] == "denied"
        assert event["outcome"]["value_fingerprint"] is None

    def test_unbound_identity_is_denied_by_default(self, proxy: RunningProxy, store: Any) -> None:
        """An authenticated identity with no role gets nothing (default deny)."""
        store.create_secret(Name="app/db/password", SecretString="x")
        with pytest.raises(ClientError) as exc:
            proxy.client("stranger").get_secret_value(SecretId="app/db/password")
        assert error_code(exc) == "AccessDeniedException"
        event = proxy.events("access")[-1]
        assert event["principal"]["id"] == "stranger"
        assert event["resource"]["secret"] == "app/db/password"
        assert event["decision"]["rule"] is None
        assert "default deny" in event["decision"]["reason"]

    def test_group_membership_grants_its_role(self, proxy: RunningProxy, store: Any) -> None:
        """An identity in a group gets the group's role: describe yes, read no."""
        store.create_secret(Name="other/thing", SecretString="x")
        client = proxy.client("auditor")
        assert client.describe_secret(SecretId="other/thing")["Name"] == "other/thing"
        with pytest.raises(ClientError) as exc:
            client.get_secret_value(SecretId="other/thing")
        assert error_code(exc) == "AccessDeniedException"

    def test_list_secrets_returns_only_what_the_caller_may_see(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """ListSecrets is filtered per secret by the caller's list permission."""
        for name in ("app/a", "app/b", "app/forbidden-c", "other/d"):
            store.create_secret(Name=name, SecretString="x")
        names = {s["Name"] for s in proxy.client().list_secrets()["SecretList"]}
        assert names == {"app/a", "app/b"}
        paginated = proxy.client().get_paginator("list_secrets").paginate(MaxResults=1)
        assert {s["Name"] for page in paginated for s in page["SecretList"]} == {"app/a", "app/b"}
        with pytest.raises(ClientError) as exc:
            proxy.client("stranger").list_secrets()
        assert error_code(exc) == "AccessDeniedException"

    def test_batch_get_serves_allowed_and_reports_denied(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """BatchGetSecretValue returns allowed values and an AccessDenied error for the rest."""
        for name in ("app/x", "app/y", "app/forbidden-z", "other/w"):
            store.create_secret(Name=name, SecretString=f"value-of-{name}")
        response = proxy.client().batch_get_secret_value(
            SecretIdList=["app/x", "app/y", "app/forbidden-z", "other/w"]
        )
        assert {v["Name"]: v["SecretString"] for v in response["SecretValues"]} == {
            "app/x": "value-of-app/x",
            "app/y": "value-of-app/y",
        }
        errors = {e["SecretId"]: e["ErrorCode"] for e in response["Errors"]}
        assert errors == {
            "app/forbidden-z": "AccessDeniedException",
            "other/w": "AccessDeniedException",
        }
        batch = [
            e for e in proxy.events("access") if e["request"]["operation"] == "BatchGetSecretValue"
        ]
        outcome = {e["resource"]["secret"]: e["outcome"]["status"] for e in batch}
        assert outcome == {
            "app/x": "success",
            "app/y": "success",
            "app/forbidden-z": "denied",
            "other/w": "denied",
        }
        assert len({e["request"]["id"] for e in batch}) == 1

    def test_batch_get_by_filter_drops_what_may_not_be_read(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """A filtered batch read never returns a value the policy denies."""
        for name in ("app/f1", "app/forbidden-f2"):
            store.create_secret(Name=name, SecretString="x")
        response = proxy.client().batch_get_secret_value(
            Filters=[{"Key": "name", "Values": ["app/"]}]
        )
        assert [v["Name"] for v in response["SecretValues"]] == ["app/f1"]
        assert response["Errors"] == []
        events = {e["resource"]["secret"]: e for e in proxy.events("access")}
        assert events["app/f1"]["outcome"]["value_fingerprint"].startswith("hmac-sha256:")
        withheld = events["app/forbidden-f2"]
        assert withheld["outcome"]["status"] == "denied"
        # Fetched but never served: nothing about its value is recorded.
        assert withheld["outcome"]["value_fingerprint"] is None


class TestAuthentication:
    def test_wrong_secret_is_invalid_signature(self, proxy: RunningProxy) -> None:
        """A request signed with the wrong secret raises InvalidSignatureException."""
        client = proxy.client(aws_secret_access_key="not-the-secret")
        with pytest.raises(ClientError) as exc:
            client.get_secret_value(SecretId="app/db/password")
        assert error_code(exc) == "InvalidSignatureException"
        event = proxy.events("auth_failure")[-1]
        assert event["principal"] == {
            "id": "app",
            "auth_method": "sigv4",
            "groups": [],
            "attributes": {"access_key_id": proxy.keys["app"].access_key_id},
        }
        assert event["outcome"]["code"] == "signature_mismatch"
        assert event["request"]["operation"] == "GetSecretValue"

    def test_unknown_key_is_unrecognized_client(self, proxy: RunningProxy) -> None:
        """An access key keyledger never issued raises UnrecognizedClientException."""
        client = proxy.client(aws_access_key_id="AKIAEXAMPLEEXAMPLE00")
        with pytest.raises(ClientError) as exc:
            client.get_secret_value(SecretId="app/db/password")
        assert error_code(exc) == "UnrecognizedClientException"
        event = proxy.events("auth_failure")[-1]
        assert event["principal"]["id"] is None
        assert event["principal"]["attributes"] == {"access_key_id": "AKIAEXAMPLEEXAMPLE00"}
        assert event["outcome"]["code"] == "unknown_access_key"

    @pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
    def test_stale_or_future_date_is_rejected(self, proxy: RunningProxy, skew: timedelta) -> None:
        """A correctly signed request outside the 5-minute window is refused (no replays)."""
        status, body, _ = raw_call(
            proxy, "GetSecretValue", {"SecretId": "app/x"}, now=datetime.now(UTC) + skew
        )
        assert status == 400
        assert body["__type"] == "InvalidSignatureException"
        assert body["message"].startswith("Signature expired")
        assert proxy.events("auth_failure")[-1]["outcome"]["code"] == "request_expired"

    def test_operation_header_must_be_signed(self, proxy: RunningProxy, store: Any) -> None:
        """An unsigned X-Amz-Target is refused: a replayed read cannot become a delete."""
        store.create_secret(Name="app/keep", SecretString="v")
        status, body, _ = raw_call(
            proxy, "DeleteSecret", {"SecretId": "app/keep"}, sign_target=False
        )
        assert status == 400
        assert body["__type"] == "IncompleteSignatureException"
        assert "x-amz-target" in body["message"]
        assert store.describe_secret(SecretId="app/keep")["Name"] == "app/keep"
        assert proxy.events("auth_failure")[-1]["outcome"]["code"] == "malformed_authentication"

    def test_unsigned_content_type_is_accepted(self, proxy: RunningProxy, store: Any) -> None:
        """SDKs that leave Content-Type unsigned (JavaScript v2, PHP) work, as with AWS."""
        store.create_secret(Name="app/js", SecretString="v")
        status, body, _ = raw_call(
            proxy,
            "GetSecretValue",
            {"SecretId": "app/js"},
            extra_headers={"Content-Type": b"application/x-amz-json-1.1"},
            sign_content_type=False,
        )
        assert status == 200, body
        assert body["SecretString"] == "v"

    def test_undecodable_header_bytes_are_still_audited(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """A User-Agent that is not UTF-8 cannot make a call go unrecorded."""
        store.create_secret(Name="app/gone", SecretString="v")
        status, _, _ = raw_call(
            proxy,
            "DeleteSecret",
            {"SecretId": "app/gone", "ForceDeleteWithoutRecovery": True},
            extra_headers={"User-Agent": b"boto3 \xff\xfe"},
        )
        assert status == 200
        event = proxy.events("access")[-1]
        assert event["request"]["operation"] == "DeleteSecret"
        assert event["resource"]["secret"] == "app/gone"
        assert event["request"]["user_agent"].startswith("boto3 ")

    def test_unsigned_request_is_missing_authentication_token(self, proxy: RunningProxy) -> None:
        """A request without Authorization gets MissingAuthenticationTokenException."""
        url = urlsplit(proxy.url)
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
        conn.request(
            "POST", "/", body=b"{}", headers={"X-Amz-Target": "secretsmanager.ListSecrets"}
        )
        response = conn.getresponse()
        body = orjson.loads(response.read())
        conn.close()
        assert response.status == 400
        assert body["__type"] == "MissingAuthenticationTokenException"
        assert proxy.events("auth_failure")[-1]["principal"]["id"] is None


class TestProtocol:
    def test_unknown_operation_gets_aws_unknown_operation_error(self, proxy: RunningProxy) -> None:
        """An operation Secrets Manager does not have gets AWS's UnknownOperationException."""
        status, body, headers = raw_call(proxy, "StealEverything", {})
        assert status == 400
        assert body == {"__type": "com.amazon.coral.service#UnknownOperationException"}
        assert headers["x-amzn-RequestId"] == proxy.events("access")[-1]["request"]["id"]
        assert proxy.events("access")[-1]["outcome"]["code"] == "unknown_operation"

    def test_body_that_is_not_json_is_a_serialization_error(self, proxy: RunningProxy) -> None:
        """A malformed body is refused in the protocol's own shape, and audited."""
        status, body, _ = raw_call(proxy, "GetSecretValue", b"{not json")
        assert status == 400
        assert body["__type"] == "SerializationException"
        assert proxy.events("access")[-1]["outcome"]["status"] == "error"

    def test_missing_secret_id_is_invalid_parameter(self, proxy: RunningProxy) -> None:
        """A call without SecretId is refused before reaching the store."""
        status, body, _ = raw_call(proxy, "GetSecretValue", {})
        assert status == 400
        assert body["__type"] == "InvalidParameterException"

    def test_oversized_body_is_refused(self, proxy: RunningProxy) -> None:
        """Bodies above the configured limit are refused with 413, and audited."""
        status, body, _ = raw_call(
            proxy, "PutSecretValue", {"SecretId": "app/x", "SecretString": "x" * (2 << 20)}
        )
        assert status == 413
        assert body["__type"] == "RequestEntityTooLargeException"
        assert proxy.events("access")[-1]["outcome"]["code"] == "request_too_large"


class TestUnreachableStore:
    @pytest.fixture
    def cut_off(self, tmp_path: Path, store_credentials: None) -> Iterator[RunningProxy]:
        """keyledger whose store endpoint refuses connections."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with running_proxy(
            tmp_path, f"http://127.0.0.1:{port}", backend={"timeout_s": 2}
        ) as running:
            yield running

    def test_store_down_is_a_server_error_and_is_recorded(self, cut_off: RunningProxy) -> None:
        """When the store cannot be reached, the SDK gets a 5xx it retries, and it is audited."""
        with pytest.raises(ClientError) as exc:
            cut_off.client().get_secret_value(SecretId="app/db/password")
        assert error_code(exc) == "InternalServiceError"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        event = cut_off.events("access")[-1]
        assert event["decision"]["effect"] == "allow"
        assert event["outcome"]["status"] == "error"
        assert event["outcome"]["code"] == "InternalServiceError"


class TestSlowClients:
    @pytest.fixture
    def impatient(
        self, tmp_path: Path, moto_url: str, store: Any, store_credentials: None
    ) -> Iterator[RunningProxy]:
        """keyledger that waits at most half a second for a request body."""
        with running_proxy(tmp_path, moto_url, limits={"request_timeout_s": 0.5}) as running:
            yield running

    def test_body_that_never_arrives_is_refused_and_audited(self, impatient: RunningProxy) -> None:
        """A known caller that stalls mid-body gets RequestTimeoutException, and the call is
        recorded (an unknown one is refused before its body is waited for)."""
        url = urlsplit(impatient.url)
        body = b'{"SecretId": "app/db/password"}'
        with socket.create_connection((url.hostname or "", url.port or 0), timeout=10) as sock:
            sock.sendall(signed_head(impatient, body) + body[:12])
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 408")
        assert b"RequestTimeoutException" in reply
        event = impatient.events("access")[-1]
        assert event["outcome"]["code"] == "request_timeout"
        assert event["request"]["operation"] == "GetSecretValue"
