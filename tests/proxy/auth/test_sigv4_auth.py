"""SigV4Authenticator: requests signed by the AWS SDK's signer, checked with issued keys."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.fernet import Fernet
from multidict import CIMultiDict

from keyledger.model import Principal
from keyledger.proxy.auth import IdentityStore, IssuedKey, SigV4Authenticator
from keyledger.proxy.errors import AuthError, ErrorKind
from keyledger.proxy.wire import WireRequest

ENDPOINT = "http://127.0.0.1:8443/"
BODY = b'{"SecretId": "staging/db/password"}'


def signed_wire(
    key_id: str,
    secret: str,
    *,
    service: str = "secretsmanager",
    body: bytes = BODY,
    token: str | None = None,
    repeated: tuple[tuple[str, str], ...] = (),
) -> WireRequest:
    """A WireRequest as the proxy would see it, signed by botocore (not by our signer).

    ``repeated`` headers are added once per pair, so a name may occur several times.
    """
    request = AWSRequest(
        method="POST",
        url=ENDPOINT,
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "secretsmanager.GetSecretValue",
        },
    )
    for name, value in repeated:
        request.headers.add_header(name, value)
    SigV4Auth(Credentials(key_id, secret, token), service, "eu-west-1").add_auth(request)
    headers = CIMultiDict((name.lower(), value) for name, value in request.headers.items())
    headers["host"] = urlsplit(ENDPOINT).netloc
    return WireRequest(
        method="POST",
        path="/",
        query=(),
        headers=headers,
        body=body,
        source_ip="127.0.0.1",
        user_agent="botocore",
        request_id="req-1",
    )


class TestRepeatedHeaders:
    def test_repeated_signed_header_verifies_as_aws_signs_it(
        self, identities: IdentityStore, issued: IssuedKey
    ) -> None:
        """A header sent twice is signed as its values joined by commas, as botocore does."""
        wire = signed_wire(
            issued.access_key_id,
            issued.secret_access_key,
            repeated=(("X-Amz-Meta-Tag", "one"), ("X-Amz-Meta-Tag", "two")),
        )
        assert wire.headers.getall("x-amz-meta-tag") == ["one", "two"]  # type: ignore[attr-defined]

        principal = asyncio.run(SigV4Authenticator(store=identities).authenticate(wire))

        assert principal.id == issued.name


def sent_at(wire: WireRequest) -> datetime:
    return datetime.strptime(wire.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def clock_at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def with_headers(wire: WireRequest, **changes: str) -> WireRequest:
    headers = dict(wire.headers)
    headers.update({k.replace("_", "-"): v for k, v in changes.items()})
    return WireRequest(
        method=wire.method,
        path=wire.path,
        query=wire.query,
        headers=headers,
        body=wire.body,
        source_ip=wire.source_ip,
        user_agent=wire.user_agent,
        request_id=wire.request_id,
    )


@pytest.fixture
def identities(tmp_path: Path) -> IdentityStore:
    return IdentityStore(tmp_path / "identities.json", Fernet.generate_key())


@pytest.fixture
def issued(identities: IdentityStore) -> IssuedKey:
    return identities.create("svc-billing", groups=("payments", "ops"))


def authenticate(
    store: IdentityStore, wire: WireRequest, *, skew: timedelta = timedelta()
) -> Principal:
    authenticator = SigV4Authenticator(store=store, clock=clock_at(sent_at(wire) + skew))
    return asyncio.run(authenticator.authenticate(wire))


def auth_error(
    store: IdentityStore, wire: WireRequest, *, skew: timedelta = timedelta()
) -> AuthError:
    with pytest.raises(AuthError) as caught:
        authenticate(store, wire, skew=skew)
    return caught.value


class TestSigV4Authenticator:
    def test_valid_request_gives_the_identity(
        self, identities: IdentityStore, issued: IssuedKey
    ) -> None:
        """A correctly signed request authenticates as the key's identity, with its groups."""
        wire = signed_wire(issued.access_key_id, issued.secret_access_key)

        principal = authenticate(identities, wire)

        assert principal == Principal(
            id="svc-billing", auth_method="sigv4", groups=("payments", "ops")
        )

    def test_session_token_is_accepted(self, identities: IdentityStore, issued: IssuedKey) -> None:
        """An SDK configured with a session token still authenticates (the token is signed)."""
        wire = signed_wire(issued.access_key_id, issued.secret_access_key, token="tok")

        assert authenticate(identities, wire).id == "svc-billing"

    def test_missing_header(self, identities: IdentityStore, issued: IssuedKey) -> None:
        """A request without Authorization is refused as unauthenticated."""
        wire = signed_wire(issued.access_key_id, issued.secret_access_key)
        headers = {k: v for k, v in wire.headers.items() if k != "authorization"}
        bare = WireRequest(
            method="POST",
            path="/",
            query=(),
            headers=headers,
            body=BODY,
            source_ip=None,
            user_agent=None,
            request_id="req-2",
        )

        error = auth_error(identities, bare)

        assert error.kind is ErrorKind.MISSING_AUTH
        assert error.principal_hint is None

    def test_malformed_header(self, identities: IdentityStore, issued: IssuedKey) -> None:
        """An Authorization header that is not SigV4 is refused as malformed."""
        wire = with_headers(
            signed_wire(issued.access_key_id, issued.secret_access_key),
            authorization="Basic dXNlcjpwYXNz",
        )

        assert auth_error(identities, wire).kind is ErrorKind.MALFORMED_AUTH

    def test_unknown_key(self, identities: IdentityStore, issued: IssuedKey) -> None:
        """A key keyledger never issued is refused, and the claimed key id is kept for audit."""
        wire = signed_wire("AKKLNOTISSUED000000", issued.secret_access_key)

        error = auth_error(identities, wire)

        assert error.kind is ErrorKind.UNKNOWN_KEY
        assert error.principal_hint is None
        assert error.claimed == {"access_key_id": "AKKLNOTISSUED000000"}

    def test_wrong_secret(self, identities: IdentityStore, issued: IssuedKey) -> None:
        """A signature made with another secret is refused, attributed to the claimed identity."""
        wire = signed_wire(issued.access_key_id, issued.secret_access_key + "x")

        error = auth_error(identities, wire)

        assert error.kind is ErrorKind.BAD_SIGNATURE
        assert error.principal_hint == "svc-billing"

    def test_tampered_body(self, identities: IdentityStore, issued: IssuedKey) -> None:
        """Changing the body after signing invalidates the signature."""
        wire = signed_wire(issued.access_key_id, issued.secret_access_key)
        tampered = WireRequest(
            method=wire.method,
            path=wire.path,
            query=wire.query,
            headers=wire.headers,
            body=b'{"SecretId": "prod/db/password"}',
            source_ip=wire.source_ip,
            user_agent=wire.user_agent,
            request_id=wire.request_id,
        )

        assert auth_error(identities, tampered).kind is ErrorKind.BAD_SIGNATURE

    def test_tampered_signed_header(self, identities: IdentityStore, issued: IssuedKey) -> None:
        """Changing a signed header (the operation) after signing invalidates the signature."""
        wire = with_headers(
            signed_wire(issued.access_key_id, issued.secret_access_key),
            x_amz_target="secretsmanager.DeleteSecret",
        )

        assert auth_error(identities, wire).kind is ErrorKind.BAD_SIGNATURE

    @pytest.mark.parametrize("minutes", [-6, 6])
    def test_outside_clock_skew_expires(
        self, identities: IdentityStore, issued: IssuedKey, minutes: int
    ) -> None:
        """A request dated more than five minutes from the proxy's clock is refused."""
        wire = signed_wire(issued.access_key_id, issued.secret_access_key)

        error = auth_error(identities, wire, skew=timedelta(minutes=minutes))

        assert error.kind is ErrorKind.EXPIRED
        assert error.principal_hint == "svc-billing"

    @pytest.mark.parametrize("minutes", [-4, 4])
    def test_within_clock_skew_is_accepted(
        self, identities: IdentityStore, issued: IssuedKey, minutes: int
    ) -> None:
        """Clock differences under five minutes either way are tolerated."""
        wire = signed_wire(issued.access_key_id, issued.secret_access_key)

        assert authenticate(identities, wire, skew=timedelta(minutes=minutes)).id == "svc-billing"

    def test_scope_date_must_match_request_date(
        self, identities: IdentityStore, issued: IssuedKey
    ) -> None:
        """A credential scoped to another day than X-Amz-Date is refused."""
        wire = signed_wire(issued.access_key_id, issued.secret_access_key)
        next_day = sent_at(wire) + timedelta(days=1)
        moved = with_headers(wire, x_amz_date=next_day.strftime("%Y%m%dT%H%M%SZ"))

        error = auth_error(identities, moved)

        assert error.kind is ErrorKind.BAD_SCOPE

    def test_scope_service_must_be_secretsmanager(
        self, identities: IdentityStore, issued: IssuedKey
    ) -> None:
        """A signature scoped to another AWS service is refused, even if otherwise valid."""
        wire = signed_wire(issued.access_key_id, issued.secret_access_key, service="ssm")

        error = auth_error(identities, wire)

        assert error.kind is ErrorKind.BAD_SCOPE
        assert "secretsmanager" in error.message

    def test_revoked_key(self, identities: IdentityStore, issued: IssuedKey) -> None:
        """Once revoked, a key is refused in AWS's words for a deleted key; the error (and
        so the audit event) says it was revoked and whose it was: a stale deployment, not
        a guess."""
        identities.revoke(issued.access_key_id)
        wire = signed_wire(issued.access_key_id, issued.secret_access_key)

        error = auth_error(identities, wire)

        assert error.kind is ErrorKind.REVOKED_TOKEN
        assert error.message == "The security token included in the request is invalid."
        assert error.principal_hint == "svc-billing"
        assert error.claimed == {"access_key_id": issued.access_key_id}

    def test_rotated_key(self, identities: IdentityStore, issued: IssuedKey) -> None:
        """After rotation the new key authenticates as the same identity and the old one fails."""
        new = identities.rotate("svc-billing")

        old_wire = signed_wire(issued.access_key_id, issued.secret_access_key)
        new_wire = signed_wire(new.access_key_id, new.secret_access_key)

        assert auth_error(identities, old_wire).kind is ErrorKind.REVOKED_TOKEN
        assert authenticate(identities, new_wire).groups == ("payments", "ops")

    def test_rotated_with_an_overlap(self, identities: IdentityStore, issued: IssuedKey) -> None:
        """rotate --overlap 1h: the old key and the new one both work for the hour, the
        old one no longer after it (refused as expired, naming whose key it was)."""
        new = identities.rotate("svc-billing", overlap=timedelta(hours=1))
        old_wire = signed_wire(issued.access_key_id, issued.secret_access_key)
        new_wire = signed_wire(new.access_key_id, new.secret_access_key)

        assert authenticate(identities, old_wire).id == "svc-billing"
        assert authenticate(identities, new_wire).id == "svc-billing"
        later = timedelta(hours=1, seconds=1)
        error = auth_error(identities, old_wire, skew=later)
        assert error.kind is ErrorKind.EXPIRED_TOKEN
        assert error.principal_hint == "svc-billing"
        assert "expired" in error.message
        # The new key is past the request's skew by then, but not expired.
        assert auth_error(identities, new_wire, skew=later).kind is ErrorKind.EXPIRED

    def test_a_key_with_a_lifetime_expires(self, identities: IdentityStore) -> None:
        """create --expires 1h: the key works for the hour, then is refused."""
        issued = identities.create("svc-temp", lifetime=timedelta(hours=1))
        wire = signed_wire(issued.access_key_id, issued.secret_access_key)

        assert authenticate(identities, wire).id == "svc-temp"
        assert auth_error(identities, wire, skew=timedelta(hours=1, seconds=1)).kind is (
            ErrorKind.EXPIRED_TOKEN
        )


class TestScreen:
    """What the headers alone decide, before keyledger reads (or waits for) a body."""

    @staticmethod
    def screened(store: IdentityStore, wire: WireRequest, *, skew: timedelta = timedelta()) -> None:
        authenticator = SigV4Authenticator(store=store, clock=clock_at(sent_at(wire) + skew))
        head = dataclasses.replace(wire, body=b"")
        asyncio.run(authenticator.screen(head))

    def test_a_known_keys_head_passes_whatever_its_body(
        self, identities: IdentityStore, issued: IssuedKey
    ) -> None:
        """The signature covers the body, so a known key's head passes the screen even when
        the body will not match; authenticate then refuses it as ever."""
        wire = signed_wire(issued.access_key_id, "not-the-secret")

        self.screened(identities, wire)
        assert auth_error(identities, wire).kind is ErrorKind.BAD_SIGNATURE

    @pytest.mark.parametrize(
        ("case", "kind"),
        [
            ("unknown", ErrorKind.UNKNOWN_KEY),
            ("revoked", ErrorKind.REVOKED_TOKEN),
            ("stale", ErrorKind.EXPIRED),
            ("no-header", ErrorKind.MISSING_AUTH),
        ],
    )
    def test_what_the_headers_prove_wrong_is_refused(
        self, identities: IdentityStore, issued: IssuedKey, case: str, kind: ErrorKind
    ) -> None:
        """An unknown or revoked key, a date outside the skew, no credentials at all: each is
        refused from the headers, with the kind authenticate would give."""
        key_id = "AKIAUNKNOWN000000000" if case == "unknown" else issued.access_key_id
        wire = signed_wire(key_id, issued.secret_access_key)
        if case == "revoked":
            identities.revoke(issued.access_key_id)
        if case == "no-header":
            headers = CIMultiDict(wire.headers)
            del headers["authorization"]
            wire = dataclasses.replace(wire, headers=headers)
        skew = timedelta(minutes=6) if case == "stale" else timedelta()

        with pytest.raises(AuthError) as caught:
            self.screened(identities, wire, skew=skew)
        assert caught.value.kind is kind
