"""Findings of a security review, each as the complaint a user would make, end to end:
a real boto3 against a running keyledger in front of a real moto server."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import RunningProxy
from tests.e2e.test_aws_boto3 import error_code, raw_call

# What a service might paste into the wrong setting: no scheme, just the credential.
BARE_SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


def journal_bytes(proxy: RunningProxy) -> bytes:
    """Every byte of every file in the journal folder, checkpoints and all."""
    return b"".join(p.read_bytes() for p in sorted(proxy.journal.rglob("*")) if p.is_file())


def pieces(text: str, size: int = 6) -> list[bytes]:
    """Every run of ``size`` characters of ``text``: none of them may be repeated anywhere."""
    return [text[i : i + size].encode() for i in range(len(text) - size + 1)]


class TestAuthorizationNeverEchoed:
    def test_a_bare_credential_in_authorization_is_refused_without_a_trace_of_it(
        self, proxy: RunningProxy, store: Any
    ) -> None:
        """boto3 sending a bare secret as its Authorization header gets the usual
        IncompleteSignatureException, and neither the answer nor the journal quotes it."""
        store.create_secret(Name="app/db", SecretString="value")
        client = proxy.client()
        answers: list[bytes] = []

        def bare(request: Any, **_: Any) -> None:
            request.headers["Authorization"] = BARE_SECRET

        def keep(http_response: Any, **_: Any) -> None:
            answers.append(http_response.content)

        client.meta.events.register("before-send.secrets-manager.GetSecretValue", bare)
        client.meta.events.register("after-call.secrets-manager.GetSecretValue", keep)
        with pytest.raises(ClientError) as refused:
            client.get_secret_value(SecretId="app/db")

        assert error_code(refused) == "IncompleteSignatureException"
        assert "does not start with AWS4-HMAC-SHA256" in str(refused.value)
        (answer,) = answers
        (failure,) = proxy.events("auth_failure")
        assert failure["outcome"]["code"] == "malformed_authentication"
        written = journal_bytes(proxy)
        for piece in pieces(BARE_SECRET):
            assert piece not in answer
            assert piece not in written


class TestVersionsBounded:
    @pytest.mark.parametrize("identity", ["app", "stranger"], ids=["allowed", "denied"])
    @pytest.mark.parametrize("field", ["VersionId", "VersionStage"])
    def test_an_oversized_version_is_refused_and_never_recorded(
        self, proxy: RunningProxy, store: Any, identity: str, field: str
    ) -> None:
        """A 100,000-character VersionId or VersionStage gets AWS's ValidationException, for
        a caller policy allows as for one it denies, and the journal holds none of it."""
        store.create_secret(Name="app/db", SecretString="value")
        huge = "AWSPREVIOUS-" + "x" * 100_000

        status, body, _ = raw_call(
            proxy, "GetSecretValue", {"SecretId": "app/db", field: huge}, identity=identity
        )

        assert (status, body["__type"]) == (400, "ValidationException")
        assert huge[:40] not in body["message"]
        (event,) = proxy.events("access")
        assert (event["request"]["operation"], event["outcome"]["status"]) == (
            "GetSecretValue",
            "error",
        )
        assert event.get("resource") is None
        assert len(journal_bytes(proxy)) < 20_000
        assert b"x" * 100 not in journal_bytes(proxy)
