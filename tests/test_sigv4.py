"""SigV4 arithmetic, checked against botocore's signer and AWS's published example."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.fernet import Fernet

from keyledger.proxy.auth import IdentityStore, SigV4Authenticator
from keyledger.proxy.wire import WireRequest
from keyledger.sigv4 import (
    MalformedAuthorization,
    SigningKeyCache,
    amz_date,
    canonical_request,
    parse_amz_date,
    parse_authorization,
    sign_headers,
    signature,
    string_to_sign,
)

ENDPOINT = "http://127.0.0.1:8443/"
KEY_ID = "AKKLTESTTESTTEST0001"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
BODY = b'{"SecretId": "staging/db/password"}'
SDK_HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "secretsmanager.GetSecretValue",
    "User-Agent": "Boto3/1.34 test",
    "X-Extra": "  spaced   out  value ",
}


def botocore_signed(
    *,
    params: dict[str, str] | None = None,
    token: str | None = None,
    region: str = "eu-west-1",
    headers: dict[str, str] | None = None,
) -> AWSRequest:
    request = AWSRequest(
        method="POST",
        url=ENDPOINT,
        data=BODY,
        headers=dict(SDK_HEADERS if headers is None else headers),
        params=params or {},
    )
    SigV4Auth(Credentials(KEY_ID, SECRET, token), "secretsmanager", region).add_auth(request)
    return request


def wire_headers(request: AWSRequest) -> dict[str, str]:
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers["host"] = urlsplit(request.url).netloc
    return headers


def recompute(request: AWSRequest, keys: SigningKeyCache) -> tuple[str, str]:
    """Our canonical request and signature for a botocore-signed request."""
    auth = parse_authorization(request.headers["Authorization"])
    headers = wire_headers(request)
    canonical = canonical_request(
        method=request.method,
        path=urlsplit(request.url).path,
        query=tuple(request.params.items()),
        headers=headers,
        signed_headers=auth.signed_headers,
        payload_sha256=hashlib.sha256(request.body).hexdigest(),
    )
    to_sign = string_to_sign(timestamp=headers["x-amz-date"], scope=auth.scope, canonical=canonical)
    return canonical, signature(keys.key(SECRET, auth.date, auth.region, auth.service), to_sign)


SIG = "0123456789abcdef" * 4


class TestCanonicalRequest:
    @pytest.mark.parametrize(
        ("params", "token"),
        [
            pytest.param(None, None, id="plain"),
            pytest.param(None, "FwoGZXIvYXdzEXAMPLETOKEN", id="session-token"),
            pytest.param({"b": "x y/z", "a": "1", "Action": "List~*"}, None, id="query"),
        ],
    )
    def test_matches_botocore_signature(
        self, params: dict[str, str] | None, token: str | None
    ) -> None:
        """A request signed by the AWS SDK's signer gets the same signature when we recompute it."""
        request = botocore_signed(params=params, token=token)
        auth = parse_authorization(request.headers["Authorization"])

        canonical, sig = recompute(request, SigningKeyCache())

        assert sig == auth.signature
        del request.headers["Authorization"]  # botocore's own view, as it was when signing
        signer = SigV4Auth(Credentials(KEY_ID, SECRET, token), "secretsmanager", "eu-west-1")
        assert canonical == signer.canonical_request(request)
        if token:
            assert "x-amz-security-token" in auth.signed_headers

    def test_other_secret_gives_other_signature(self) -> None:
        """The recomputed signature depends on the secret, so it can tell callers apart."""
        request = botocore_signed()
        auth = parse_authorization(request.headers["Authorization"])
        headers = wire_headers(request)
        canonical, _ = recompute(request, SigningKeyCache())
        to_sign = string_to_sign(
            timestamp=headers["x-amz-date"], scope=auth.scope, canonical=canonical
        )

        wrong = signature(
            SigningKeyCache().key(SECRET + "x", auth.date, auth.region, auth.service), to_sign
        )

        assert wrong != auth.signature


class TestSignHeaders:
    def test_matches_botocore_for_the_same_moment(self) -> None:
        """Our outgoing signature is byte-for-byte what the AWS SDK would send."""
        headers = {k: v for k, v in SDK_HEADERS.items() if k != "User-Agent"}
        request = botocore_signed(token="FwoGZXIvYXdzEXAMPLETOKEN", headers=headers)
        moment = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")

        ours = sign_headers(
            keys=SigningKeyCache(),
            access_key_id=KEY_ID,
            secret_key=SECRET,
            session_token="FwoGZXIvYXdzEXAMPLETOKEN",
            region="eu-west-1",
            service="secretsmanager",
            method="POST",
            host="127.0.0.1:8443",
            path="/",
            headers=headers,
            body=BODY,
            now=moment.replace(tzinfo=UTC),
        )

        assert ours["authorization"] == request.headers["Authorization"]
        assert ours["x-amz-security-token"] == "FwoGZXIvYXdzEXAMPLETOKEN"

    def test_output_verifies_through_the_authenticator(self, tmp_path: Path) -> None:
        """A request we sign is accepted by our own SigV4 verification."""
        store = IdentityStore(tmp_path / "identities.json", Fernet.generate_key())
        issued = store.create("svc-signer", groups=("ops",))
        now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        headers = sign_headers(
            keys=SigningKeyCache(),
            access_key_id=issued.access_key_id,
            secret_key=issued.secret_access_key,
            session_token=None,
            region="us-east-1",
            service="secretsmanager",
            method="POST",
            host="127.0.0.1:8443",
            path="/",
            headers={"Content-Type": "application/x-amz-json-1.1"},
            body=BODY,
            now=now,
        )
        wire = WireRequest(
            method="POST",
            path="/",
            query=(),
            headers=headers,
            body=BODY,
            source_ip="127.0.0.1",
            user_agent=None,
            request_id="req-1",
        )

        principal = asyncio.run(
            SigV4Authenticator(store=store, clock=lambda: now).authenticate(wire)
        )

        assert principal.id == "svc-signer"
        assert principal.groups == ("ops",)

    def test_amz_date_is_utc(self) -> None:
        """Timestamps in any zone are written as UTC basic ISO 8601."""
        moment = datetime(2026, 1, 1, 1, 30, 5, tzinfo=timezone(timedelta(hours=2)))

        assert amz_date(moment) == "20251231T233005Z"


class TestParseAuthorization:
    def test_reads_every_part(self) -> None:
        """The credential scope, signed headers and signature come out of the header."""
        auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20260301/eu-west-1/secretsmanager/aws4_request,"
            f" SignedHeaders=host;x-amz-date, Signature={SIG}"
        )

        assert auth.access_key_id == "AKID"
        assert auth.date == "20260301"
        assert auth.region == "eu-west-1"
        assert auth.service == "secretsmanager"
        assert auth.signed_headers == ("host", "x-amz-date")
        assert auth.signature == SIG
        assert auth.scope == "20260301/eu-west-1/secretsmanager/aws4_request"

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("", id="empty"),
            pytest.param("Bearer abc", id="other-scheme"),
            pytest.param("AWS4-HMAC-SHA256", id="no-parts"),
            pytest.param("AWS4-HMAC-SHA256 Credential", id="part-without-value"),
            pytest.param(
                "AWS4-HMAC-SHA256 Credential=AKID/20260301/eu-west-1/secretsmanager/aws4_request,"
                " SignedHeaders=host",
                id="no-signature",
            ),
            pytest.param(
                "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=abc",
                id="no-credential",
            ),
            pytest.param(
                "AWS4-HMAC-SHA256 Credential=AKID/20260301/eu-west-1/aws4_request,"
                " SignedHeaders=host, Signature=abc",
                id="short-credential",
            ),
            pytest.param(
                "AWS4-HMAC-SHA256 Credential=AKID/20260301/eu-west-1/secretsmanager/aws5_request,"
                " SignedHeaders=host, Signature=abc",
                id="wrong-terminator",
            ),
            pytest.param(
                "AWS4-HMAC-SHA256 Credential=AKID/20260301/eu-west-1/secretsmanager/aws4_request,"
                " SignedHeaders=host, Signature=" + "é" * 64,
                id="non-hex-signature",
            ),
            pytest.param(
                "AWS4-HMAC-SHA256 Credential=AK\u00ffID/20260301/eu-west-1/secretsmanager/"
                "aws4_request, SignedHeaders=host, Signature=" + "a" * 64,
                id="non-ascii-key-id",
            ),
            pytest.param(
                "AWS4-HMAC-SHA256 Credential=AKID/2026-03-01/eu-west-1/secretsmanager/"
                "aws4_request, SignedHeaders=host, Signature=" + "a" * 64,
                id="bad-date",
            ),
            pytest.param(
                "AWS4-HMAC-SHA256 Credential=AKID/20260301/eu-west-1/secretsmanager/aws4_request,"
                " SignedHeaders=Host;X-Amz-Date, Signature=" + "a" * 64,
                id="upper-case-signed-headers",
            ),
        ],
    )
    def test_rejects_malformed(self, value: str) -> None:
        """Anything that is not a complete SigV4 header is refused with a readable reason."""
        with pytest.raises(MalformedAuthorization):
            parse_authorization(value)

    def test_a_header_seen_before_is_read_whole_again(self) -> None:
        """What precedes the signature is parsed once; each header still gives its own
        signature, and one whose signature is not readable is refused though its start
        was seen before."""
        head = (
            "AWS4-HMAC-SHA256 Credential=AKID/20260301/eu-west-1/secretsmanager/aws4_request,"
            " SignedHeaders=host;x-amz-date, Signature="
        )
        first, second = parse_authorization(head + "a" * 64), parse_authorization(head + SIG)

        assert (first.signature, second.signature) == ("a" * 64, SIG)
        assert first.access_key_id == second.access_key_id == "AKID"
        with pytest.raises(MalformedAuthorization):
            parse_authorization(head + "A" * 64)
        with pytest.raises(MalformedAuthorization):
            parse_authorization(head + SIG + ", Signature=zz")

    def test_parts_in_another_order(self) -> None:
        """The signature need not come last (AWS reads the parts by name)."""
        auth = parse_authorization(
            f"AWS4-HMAC-SHA256 Signature={SIG}, SignedHeaders=host;x-amz-date,"
            " Credential=AKID/20260301/eu-west-1/secretsmanager/aws4_request"
        )

        assert (auth.signature, auth.signed_headers) == (SIG, ("host", "x-amz-date"))

    @pytest.mark.parametrize(
        ("value", "said"),
        [
            pytest.param(
                "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
                "does not start with AWS4-HMAC-SHA256",
                id="bare-secret",
            ),
            pytest.param(
                "sk_live_4eC39HqLyjWDarjtT1zdp7dc sig=abc",
                "does not start with AWS4-HMAC-SHA256",
                id="bare-secret-then-words",
            ),
            pytest.param(
                "AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
                "does not start with AWS4-HMAC-SHA256",
                id="v2-signature-without-scheme",
            ),
            pytest.param(
                "Bearer kltok_abcdefghijkl_c2VjcmV0LXRva2VuLXZhbHVl",
                "uses the Bearer scheme, not AWS4-HMAC-SHA256",
                id="bearer-token",
            ),
        ],
    )
    def test_a_refusal_quotes_nothing_of_the_header(self, value: str, said: str) -> None:
        """An Authorization value of another kind is refused naming at most its scheme, so a
        credential sent there bare never reaches an error or the audit journal."""
        with pytest.raises(MalformedAuthorization) as refused:
            parse_authorization(value)

        message = str(refused.value)
        assert said in message
        credential = value.removeprefix("Bearer ")
        assert not any(credential[i : i + 6] in message for i in range(len(credential) - 5))


class TestSigningKeyCache:
    def test_derives_the_documented_key(self) -> None:
        """The derived key matches AWS's published example (IAM, us-east-1, 20120215)."""
        key = SigningKeyCache().key(SECRET, "20120215", "us-east-1", "iam")

        assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"

    def test_is_bounded_and_keeps_recently_used_keys(self) -> None:
        """The cache holds at most max_entries keys and evicts the least recently used."""
        cache = SigningKeyCache(max_entries=2)
        first = cache.key("s1", "20260301", "eu-west-1", "secretsmanager")
        second = cache.key("s2", "20260301", "eu-west-1", "secretsmanager")

        assert cache.key("s1", "20260301", "eu-west-1", "secretsmanager") is first
        cache.key("s3", "20260301", "eu-west-1", "secretsmanager")  # evicts s2, not s1

        assert cache.key("s1", "20260301", "eu-west-1", "secretsmanager") is first
        again = cache.key("s2", "20260301", "eu-west-1", "secretsmanager")
        assert again == second
        assert again is not second

    def test_never_grows_past_the_bound(self) -> None:
        """However many distinct keys pass through, the oldest ones are dropped."""
        cache = SigningKeyCache(max_entries=8)
        oldest = cache.key("s0", "20260301", "eu-west-1", "secretsmanager")
        for i in range(1, 100):
            cache.key(f"s{i}", "20260301", "eu-west-1", "secretsmanager")

        assert cache.key("s0", "20260301", "eu-west-1", "secretsmanager") is not oldest
        assert len(cache._keys) <= 8


class TestAmzDate:
    def test_round_trips(self) -> None:
        """A timestamp written by amz_date reads back to the same second, in UTC."""
        moment = datetime(2026, 11, 24, 12, 34, 56, tzinfo=UTC)
        assert parse_amz_date(amz_date(moment)) == moment

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "20261124T123456",
            "2026-11-24T12:34:56Z",
            "20261324T123456Z",
            "\uff120261124T123456Z",
        ],
    )
    def test_malformed_is_none(self, text: str) -> None:
        """Anything but YYYYMMDDTHHMMSSZ with a real date is rejected, not guessed."""
        assert parse_amz_date(text) is None
