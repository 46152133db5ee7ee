"""How the AWS backend reads a store's refusal of keyledger's own credentials.

The store is a stand-in transport answering in Secrets Manager's real JSON error shape
(moto never sends these; see tests/e2e/test_store_credentials.py for moto's IAM refusal).
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import pytest

from keyledger.backends import BackendError, BackendUnavailable, HttpReply, SecretNotFound
from keyledger.backends.aws import AwsBackend, AwsSettings
from keyledger.backends.errors import StoreCredentialsRefused
from keyledger.model import Action, SecretRef, SecretRequest

KEY_ID, SECRET = "AKIDKEYLEDGER", "keyledger-own-secret"
# botocore still reads the environment for the endpoint: keep the machine's AWS settings out.
pytestmark = pytest.mark.usefixtures("store_credentials")


class Store:
    """Answers every request with one status and error code, counting the requests."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.reply = HttpReply(
            status,
            {"x-amzn-errortype": f"{code}:http://internal.amazon.com/"},
            orjson.dumps({"__type": code, "message": message}),
        )
        self.requests = 0

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes = b""
    ) -> HttpReply:
        self.requests += 1
        return self.reply


async def get_secret(store: Store) -> BackendError:
    """The error of one GetSecretValue against ``store``."""
    backend = AwsBackend(
        AwsSettings(
            region="us-east-1",
            endpoint_url="https://secretsmanager.us-east-1.amazonaws.com",
            static_credentials=(KEY_ID, SECRET),
        ),
        transport=store,
    )
    await backend.start()
    ref = SecretRef("aws", "app/db")
    request = SecretRequest(
        action=Action.READ, ref=ref, operation="GetSecretValue", params={"SecretId": "app/db"}
    )
    with pytest.raises(BackendError) as exc:
        await backend.call(request)
    return exc.value


@pytest.mark.parametrize(
    "code",
    [
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "IncompleteSignatureException",
    ],
)
async def test_refused_credentials_are_keyledgers_not_the_callers(code: str) -> None:
    """A 400 refusing the signature is StoreCredentialsRefused naming the code, not a key."""
    error = await get_secret(Store(400, code, f"The security token {KEY_ID} is invalid."))
    assert isinstance(error, StoreCredentialsRefused)
    assert error.kind == "store_credentials_refused"
    assert error.code is None  # the audit event records the kind
    assert error.message == (
        f"AWS Secrets Manager refused keyledger's own credentials for backend 'aws' ({code}), "
        "not the caller's: fix the AWS credentials keyledger runs with (see its log)"
    )


async def test_a_denied_role_is_keyledgers_not_the_callers() -> None:
    """AccessDeniedException from the store names keyledger's role, not the store's text."""
    role = "arn:aws:sts::123456789012:assumed-role/keyledger/i-0abc"
    error = await get_secret(Store(400, "AccessDeniedException", f"User: {role} is not authorized"))
    assert isinstance(error, StoreCredentialsRefused)
    assert "denied keyledger's own role for backend 'aws' (AccessDeniedException)" in (
        error.message
    )
    assert role not in error.message


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "ResourceNotFoundException", SecretNotFound),
        (500, "InternalServiceError", BackendUnavailable),
        (400, "ThrottlingException", BackendUnavailable),
    ],
)
async def test_other_errors_keep_the_stores_code(
    status: int, code: str, kind: type[BackendError]
) -> None:
    """Errors that are not about keyledger's credentials pass on the store's own code."""
    error = await get_secret(Store(status, code, "x"))
    assert type(error) is kind
    assert error.code == code
