"""BearerAuthenticator and the tokens of the identity store: real store files, no mocks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.fernet import Fernet

from keyledger.cli import main
from keyledger.model import Principal
from keyledger.proxy.auth import (
    BearerAuthenticator,
    IdentityError,
    IdentityStore,
    IssuedToken,
    SigV4Authenticator,
)
from keyledger.proxy.auth.identities import parse_lifetime
from keyledger.proxy.errors import AuthError, ErrorKind
from keyledger.proxy.wire import WireRequest


@pytest.fixture
def key() -> bytes:
    return Fernet.generate_key()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "identities.json"


@pytest.fixture
def store(path: Path, key: bytes) -> IdentityStore:
    return IdentityStore(path, key)


@pytest.fixture
def issued(store: IdentityStore) -> IssuedToken:
    return store.create_token(
        "svc-billing", groups=("payments", "ops"), attributes={"team": "checkout"}
    )


def wire(authorization: str | None, *, request_id: str = "req-1") -> WireRequest:
    headers = {"host": "127.0.0.1:8443"}
    if authorization is not None:
        headers["authorization"] = authorization
    return WireRequest(
        method="GET",
        path="/v1/projects/p/secrets/s/versions/latest:access",
        query=(),
        headers=headers,
        body=b"",
        source_ip="127.0.0.1",
        user_agent="test",
        request_id=request_id,
    )


def signed(key_id: str, secret: str) -> WireRequest:
    """A SigV4 request signed by botocore, as the AWS frontend's authenticator sees it."""
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:8443/",
        data=b"{}",
        headers={"X-Amz-Target": "secretsmanager.ListSecrets"},
    )
    SigV4Auth(Credentials(key_id, secret), "secretsmanager", "eu-west-1").add_auth(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers["host"] = "127.0.0.1:8443"
    return WireRequest(
        method="POST",
        path="/",
        query=(),
        headers=headers,
        body=b"{}",
        source_ip="127.0.0.1",
        user_agent="botocore",
        request_id="req-s",
    )


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def authenticate(
    authenticator: BearerAuthenticator | SigV4Authenticator, request: WireRequest
) -> Principal:
    return asyncio.run(authenticator.authenticate(request))


def refusal(
    authenticator: BearerAuthenticator | SigV4Authenticator, request: WireRequest
) -> AuthError:
    with pytest.raises(AuthError) as caught:
        authenticate(authenticator, request)
    return caught.value


def issued_fields(out: str) -> dict[str, str]:
    """What `keyledger identity create` printed: a label in 18 columns, then its value."""
    return {line[:18].strip(): line[18:].strip() for line in out.splitlines()}


def forged(issued: IssuedToken) -> str:
    """The issued token's id with another secret of the right shape."""
    secret = issued.token.removeprefix(issued.token_id + "_")
    other = ("B" if secret[0] == "A" else "A") + secret[1:]
    return f"{issued.token_id}_{other}"


def use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: bytes) -> Path:
    """A config whose identity store is ``tmp_path/identities.json``, under ``key``."""
    monkeypatch.setenv("KEYLEDGER_IDENTITY_KEY", key.decode())
    config = tmp_path / "keyledger.yaml"
    config.write_text(
        "identities: {path: identities.json}\npolicies: [p.yaml]\nbackends: {aws: {}}\n"
    )
    return config


class TestBearerAuthenticator:
    def test_valid_token_gives_the_identity(
        self, store: IdentityStore, issued: IssuedToken
    ) -> None:
        """A token keyledger issued authenticates as its identity, with groups and attributes."""
        principal = authenticate(BearerAuthenticator(store=store), wire(f"Bearer {issued.token}"))

        assert principal == Principal(
            id="svc-billing",
            auth_method="token",
            groups=("payments", "ops"),
            attributes={"team": "checkout"},
        )

    @pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
    def test_scheme_is_case_insensitive(
        self, store: IdentityStore, issued: IssuedToken, scheme: str
    ) -> None:
        """The auth scheme is matched without regard to case, as RFC 9110 says."""
        authenticator = BearerAuthenticator(store=store)

        assert authenticate(authenticator, wire(f"{scheme} {issued.token}")).id == "svc-billing"

    @pytest.mark.parametrize("header", [None, "", "   "])
    def test_missing_header(
        self, store: IdentityStore, issued: IssuedToken, header: str | None
    ) -> None:
        """A request without an Authorization header is refused as unauthenticated."""
        error = refusal(BearerAuthenticator(store=store), wire(header))

        assert error.kind is ErrorKind.MISSING_AUTH
        assert error.principal_hint is None

    @pytest.mark.parametrize(
        "header",
        [
            "Basic dXNlcjpwYXNz",
            "AWS4-HMAC-SHA256 Credential=AKKL/20260101/eu-west-1/secretsmanager/aws4_request",
            "Bearer",
            "Bearer ",
            "Bearer not-a-keyledger-token",
            "Bearer kltok_short_secret",
            "Bearertoken",
        ],
    )
    def test_malformed_header(self, store: IdentityStore, issued: IssuedToken, header: str) -> None:
        """An Authorization header that is not a keyledger bearer token is malformed, and what
        was sent is repeated nowhere in the error."""
        error = refusal(BearerAuthenticator(store=store), wire(header))

        assert error.kind is ErrorKind.MALFORMED_AUTH
        assert error.principal_hint is None
        assert error.claimed == {}
        sent = header.partition(" ")[2]
        assert not sent or sent not in error.message

    def test_a_bare_credential_is_quoted_nowhere(
        self, store: IdentityStore, issued: IssuedToken
    ) -> None:
        """A credential sent with no scheme (Authorization: <secret>) is malformed, and no
        part of it is in the error or in what the audit event keeps."""
        bare = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"

        error = refusal(BearerAuthenticator(store=store), wire(bare))

        assert error.kind is ErrorKind.MALFORMED_AUTH
        assert (error.principal_hint, error.claimed) == (None, {})
        assert not any(bare[i : i + 6] in error.message for i in range(len(bare) - 5))

    def test_unknown_token(self, store: IdentityStore, issued: IssuedToken) -> None:
        """A well-formed token keyledger never issued is refused, keeping only its id."""
        stranger = "kltok_aaaaaaaaaaaa_" + "x" * 43

        error = refusal(BearerAuthenticator(store=store), wire(f"Bearer {stranger}"))

        assert error.kind is ErrorKind.UNKNOWN_TOKEN
        assert error.principal_hint is None
        assert error.claimed == {"token_id": "kltok_aaaaaaaaaaaa"}
        assert stranger not in error.message

    def test_known_id_with_another_secret(self, store: IdentityStore, issued: IssuedToken) -> None:
        """A token with a real id and a made-up secret is refused in the same words as an
        unknown one, but the audit kind and hint name whose id was used."""
        authenticator = BearerAuthenticator(store=store)
        unknown = refusal(authenticator, wire("Bearer kltok_aaaaaaaaaaaa_" + "x" * 43))

        error = refusal(authenticator, wire(f"Bearer {forged(issued)}"))

        assert error.kind is ErrorKind.BAD_TOKEN
        assert error.principal_hint == "svc-billing"
        assert error.claimed == {"token_id": issued.token_id}
        assert error.message == unknown.message

    def test_revoked_token(self, store: IdentityStore, issued: IssuedToken) -> None:
        """A revoked token is refused as revoked, naming the identity but not the token."""
        store.revoke(issued.token_id)

        error = refusal(BearerAuthenticator(store=store), wire(f"Bearer {issued.token}"))

        assert error.kind is ErrorKind.REVOKED_TOKEN
        assert error.principal_hint == "svc-billing"
        assert error.claimed == {"token_id": issued.token_id}
        assert issued.token not in f"{error.message} {error.claimed}"

    def test_revoked_is_told_only_to_the_holder(
        self, store: IdentityStore, issued: IssuedToken
    ) -> None:
        """Someone without the secret learns nothing about a revoked token's state."""
        store.revoke(issued.token_id)

        error = refusal(BearerAuthenticator(store=store), wire(f"Bearer {forged(issued)}"))

        assert error.kind is ErrorKind.BAD_TOKEN

    def test_expired_token(self, store: IdentityStore) -> None:
        """A token past its expiry is refused as expired; a second before, it works."""
        issued = store.create_token("svc-a", lifetime=timedelta(hours=12))
        assert issued.expires is not None
        header = wire(f"Bearer {issued.token}")

        before = BearerAuthenticator(store=store, clock=at(issued.expires - timedelta(seconds=1)))
        assert authenticate(before, header).id == "svc-a"

        after = BearerAuthenticator(store=store, clock=at(issued.expires))
        error = refusal(after, header)
        assert error.kind is ErrorKind.EXPIRED_TOKEN
        assert error.principal_hint == "svc-a"
        assert issued.token not in error.message

    def test_default_lifetime_is_90_days(self, store: IdentityStore) -> None:
        """A token issued without a lifetime expires after 90 days."""
        issued = store.create_token("svc-a")
        assert issued.expires is not None
        assert issued.expires - datetime.now(UTC) > timedelta(days=89, hours=23)

        later = BearerAuthenticator(store=store, clock=at(datetime.now(UTC) + timedelta(days=91)))
        assert refusal(later, wire(f"Bearer {issued.token}")).kind is ErrorKind.EXPIRED_TOKEN

    def test_a_token_without_expiry_keeps_working(self, store: IdentityStore) -> None:
        """A token issued with no lifetime (--expires never) is accepted years later."""
        issued = store.create_token("svc-a", lifetime=None)
        far = BearerAuthenticator(store=store, clock=at(datetime.now(UTC) + timedelta(days=3650)))

        assert issued.expires is None
        assert authenticate(far, wire(f"Bearer {issued.token}")).id == "svc-a"

    def test_revoked_with_the_cli_while_running(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        key: bytes,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A token revoked with `keyledger identity revoke` stops working in a live
        authenticator once it re-reads the store (within a second), without a restart."""
        config = use_config(tmp_path, monkeypatch, key)
        assert main(["identity", "create", "svc-a", "--token", "--config", str(config)]) == 0
        issued = issued_fields(capsys.readouterr().out)
        token, token_id = issued["token"], issued["token id"]
        authenticator = BearerAuthenticator(store=IdentityStore(tmp_path / "identities.json", key))
        assert authenticate(authenticator, wire(f"Bearer {token}")).id == "svc-a"

        assert main(["identity", "revoke", token_id, "--config", str(config)]) == 0

        deadline = time.monotonic() + 5
        while True:
            try:
                authenticate(authenticator, wire(f"Bearer {token}"))
            except AuthError as error:
                kind = error.kind
                break
            assert time.monotonic() < deadline, "the revoked token still works"
            time.sleep(0.1)
        assert kind is ErrorKind.REVOKED_TOKEN

    def test_created_with_the_cli_while_running(
        self, path: Path, key: bytes, store: IdentityStore
    ) -> None:
        """A token issued after the authenticator started is accepted once it re-reads."""
        authenticator = BearerAuthenticator(store=store, reload_interval=0)

        issued = IdentityStore(path, key).create_token("svc-late")

        assert authenticate(authenticator, wire(f"Bearer {issued.token}")).id == "svc-late"

    def test_sigv4_and_bearer_share_one_store(self, path: Path, key: bytes) -> None:
        """Two authenticators reading one store both see a revocation, whichever of them
        re-read the file first."""
        writer = IdentityStore(path, key)
        access = writer.create("svc-a")
        token = writer.create_token("svc-a")
        shared = IdentityStore(path, key)
        sigv4 = SigV4Authenticator(store=shared)
        bearer = BearerAuthenticator(store=shared, reload_interval=0)
        assert authenticate(sigv4, signed(access.access_key_id, access.secret_access_key)).id

        writer.revoke("svc-a")
        assert refusal(bearer, wire(f"Bearer {token.token}")).kind is ErrorKind.REVOKED_TOKEN
        time.sleep(1.05)  # SigV4's follower looks at most once a second

        refused = refusal(sigv4, signed(access.access_key_id, access.secret_access_key))
        assert refused.kind is ErrorKind.REVOKED_TOKEN

    def test_a_corrupt_store_keeps_the_last_good_tokens(
        self, path: Path, store: IdentityStore, issued: IssuedToken
    ) -> None:
        """A store file that stops parsing does not lock every caller out."""
        authenticator = BearerAuthenticator(store=store, reload_interval=0)
        path.write_text("{not json")

        assert authenticate(authenticator, wire(f"Bearer {issued.token}")).id == "svc-billing"


class TestTokenStore:
    def test_the_file_never_holds_the_token(
        self, path: Path, store: IdentityStore, issued: IssuedToken
    ) -> None:
        """Only the token's id and hash are stored, never the token or its secret part."""
        store.rotate_token("svc-billing")
        text = path.read_text()
        secret = issued.token.removeprefix(issued.token_id + "_")

        assert issued.token not in text
        assert secret not in text
        assert issued.token_id in text

    def test_tokens_stay_out_of_reprs(self, store: IdentityStore, issued: IssuedToken) -> None:
        """An issued or stored token that ends up in a log line shows neither token nor hash."""
        stored = store.by_token_id(issued.token_id)
        assert stored is not None

        assert issued.token not in repr(issued)
        assert stored.digest.hex() not in repr(stored)
        assert issued.token_id in repr(stored)

    def test_keys_and_tokens_side_by_side(self, path: Path, key: bytes) -> None:
        """One identity holds a SigV4 key and a token at once; each authenticates as it, and
        revoking one leaves the other working."""
        store = IdentityStore(path, key)
        access = store.create("svc-a", groups=("payments",))
        token = store.create_token("svc-a")
        reopened = IdentityStore(path, key)

        by_sigv4 = authenticate(
            SigV4Authenticator(store=reopened),
            signed(access.access_key_id, access.secret_access_key),
        )
        by_token = authenticate(BearerAuthenticator(store=reopened), wire(f"Bearer {token.token}"))
        assert (by_sigv4.id, by_sigv4.groups) == (by_token.id, by_token.groups)
        assert (by_sigv4.auth_method, by_token.auth_method) == ("sigv4", "token")

        assert [c.credential_id for c in store.revoke(token.token_id)] == [token.token_id]
        after = IdentityStore(path, key)
        assert authenticate(
            SigV4Authenticator(store=after), signed(access.access_key_id, access.secret_access_key)
        )
        assert [(c.kind, c.revoked) for c in after.credentials()] == [
            ("sigv4", False),
            ("token", True),
        ]

    def test_revoking_a_name_revokes_both_kinds(self, store: IdentityStore) -> None:
        """revoke NAME cuts an identity off entirely: its key and its token."""
        access = store.create("svc-a")
        token = store.create_token("svc-a")

        revoked = store.revoke("svc-a")

        assert {c.credential_id for c in revoked} == {access.access_key_id, token.token_id}
        assert not store.holds("svc-a")

    def test_a_whole_token_revokes_by_its_id(
        self, store: IdentityStore, issued: IssuedToken
    ) -> None:
        """A leaked token pasted as found revokes that token, and no error repeats it."""
        assert [c.credential_id for c in store.revoke(issued.token)] == [issued.token_id]

        with pytest.raises(IdentityError) as caught:
            store.revoke(issued.token)
        assert issued.token not in str(caught.value)
        assert issued.token_id in str(caught.value)

    def test_one_active_token_per_identity(self, store: IdentityStore) -> None:
        """The same create run twice is refused while the first token is active, pointing
        at rotate."""
        store.create_token("svc-a", groups=("ops",))

        with pytest.raises(IdentityError, match="already has an active token; use rotate --token"):
            store.create_token("svc-a", groups=("ops",))

    def test_a_token_added_to_an_identity_keeps_its_groups(self, store: IdentityStore) -> None:
        """A token added to an identity in use takes its groups and attributes; different
        ones are refused rather than quietly changing what the identity may do."""
        store.create("svc-a", groups=("payments",), attributes={"team": "checkout"})

        token = store.create_token("svc-a")
        stored = store.by_token_id(token.token_id)
        assert stored is not None
        assert (stored.groups, stored.attributes) == (("payments",), {"team": "checkout"})

        store.revoke(token.token_id)
        with pytest.raises(IdentityError, match="leave out --group and --attr"):
            store.create_token("svc-a", groups=("admins",))

    def test_rotate_token_replaces_only_the_token(self, path: Path, key: bytes) -> None:
        """rotate --token revokes the old token, issues a new one, and leaves the key be."""
        store = IdentityStore(path, key)
        access = store.create("svc-a")
        old = store.create_token("svc-a")

        new = store.rotate_token("svc-a", lifetime=timedelta(hours=1))

        reopened = IdentityStore(path, key)
        assert new.token != old.token
        assert {c.credential_id: c.revoked for c in reopened.credentials()} == {
            access.access_key_id: False,
            old.token_id: True,
            new.token_id: False,
        }
        assert new.expires is not None
        assert timedelta(minutes=59) < new.expires - datetime.now(UTC) <= timedelta(hours=1)

    def test_rotate_token_of_an_identity_without_one(self, store: IdentityStore) -> None:
        """Rotating a token an identity never had says how to issue one."""
        store.create("svc-a")

        with pytest.raises(
            IdentityError, match=r"no token to rotate; .* keyledger identity create svc-a --token"
        ):
            store.rotate_token("svc-a")

    @pytest.mark.parametrize("write", ["create_token", "rotate_token", "revoke"])
    @pytest.mark.parametrize("holding", ["a key", "tokens only"])
    def test_token_write_under_another_key_is_refused(
        self, path: Path, key: bytes, write: str, holding: str
    ) -> None:
        """A token write under a key the store was not written with changes nothing, even
        when the store holds no encrypted secret to try the key on."""
        first = IdentityStore(path, key)
        if holding == "a key":
            first.create("svc-a")
        else:
            first.create_token("svc-a")
        first.create_token("svc-b")
        before = path.read_bytes()
        other = IdentityStore(
            path, Fernet.generate_key(), key_source="the env var KEYLEDGER_IDENTITY_KEY"
        )
        writes: dict[str, Callable[[], object]] = {
            "create_token": lambda: other.create_token("svc-c"),
            "rotate_token": lambda: other.rotate_token("svc-b"),
            "revoke": lambda: other.revoke("svc-b"),
        }

        with pytest.raises(IdentityError, match="was written with a different key than the one "):
            writes[write]()

        assert path.read_bytes() == before

    def test_a_key_write_under_another_key_is_refused_in_a_token_only_store(
        self, path: Path, key: bytes
    ) -> None:
        """A SigV4 key added under the wrong key to a store of tokens is refused: the proxy
        could not decrypt it."""
        IdentityStore(path, key).create_token("svc-a")
        before = path.read_bytes()

        with pytest.raises(IdentityError, match=r"cannot decrypt its key_check value"):
            IdentityStore(path, Fernet.generate_key()).create("svc-b")
        assert path.read_bytes() == before

    def test_an_old_store_loads_and_keeps_its_shape(self, path: Path, key: bytes) -> None:
        """A store written before tokens existed loads and serves its keys; adding a token
        leaves its key entries exactly as a proxy of that age reads them."""
        old_entry = {
            "name": "svc-a",
            "access_key_id": "AKKLOLDSTORE00000000",
            "groups": ["payments"],
            "attributes": {"team": "checkout"},
            "created": "2026-01-05T10:00:00+00:00",
            "revoked": False,
            "secret": Fernet(key).encrypt(b"old-secret-access-key").decode(),
        }
        path.write_text(json.dumps({"version": 1, "identities": [old_entry]}, indent=2))

        store = IdentityStore(path, key)
        principal = authenticate(
            SigV4Authenticator(store=store), signed("AKKLOLDSTORE00000000", "old-secret-access-key")
        )
        assert (principal.id, principal.groups) == ("svc-a", ("payments",))
        assert list(store.tokens()) == []

        token = store.create_token("svc-a")

        doc = json.loads(path.read_text())
        assert doc["version"] == 1
        assert doc["identities"] == [old_entry]
        assert [t["token_id"] for t in doc["tokens"]] == [token.token_id]
        bearer = BearerAuthenticator(store=IdentityStore(path, key))
        assert authenticate(bearer, wire(f"Bearer {token.token}")).groups == ("payments",)

    @pytest.mark.parametrize(
        "entry",
        [
            {"sha256": "zz"},
            {"sha256": "00" * 32, "expires": "tomorrow"},
            {"sha256": "00" * 32, "expires": "2027-01-01T00:00:00"},
        ],
    )
    def test_a_damaged_token_entry_is_reported(
        self, path: Path, key: bytes, entry: dict[str, str]
    ) -> None:
        """A token entry with a bad hash or expiry makes the file unreadable, named as such."""
        token = {"name": "svc-a", "token_id": "kltok_aaaaaaaaaaaa", **entry}
        path.write_text(json.dumps({"version": 1, "identities": [], "tokens": [token]}))

        with pytest.raises(IdentityError, match="not a keyledger identity store"):
            IdentityStore(path, key)


class TestParseLifetime:
    @pytest.mark.parametrize(
        ("text", "lifetime"),
        [
            ("90d", timedelta(days=90)),
            ("12h", timedelta(hours=12)),
            ("30m", timedelta(minutes=30)),
            ("never", None),
        ],
    )
    def test_durations(self, text: str, lifetime: timedelta | None) -> None:
        """Days, hours and minutes are understood, and never means no expiry."""
        assert parse_lifetime(text) == lifetime

    @pytest.mark.parametrize("text", ["", "90", "0d", "-1d", "1w", "1.5d", "90 d", "Never"])
    def test_rejects_other_text(self, text: str) -> None:
        """Anything else is refused with the forms that work."""
        with pytest.raises(IdentityError, match="like 90d, 12h or 30m, or never"):
            parse_lifetime(text)

    def test_rejects_absurd_lengths(self) -> None:
        """A lifetime beyond ten years is refused: never says that honestly."""
        with pytest.raises(IdentityError, match="say never if you mean it"):
            parse_lifetime("99999d")


def test_a_bearer_token_is_proven_from_the_headers_alone(
    store: IdentityStore, issued: IssuedToken
) -> None:
    """The screen before a body is read is the whole check for a bearer token: the issued
    token passes, a forged one is refused with the kind authenticate gives."""
    authenticator = BearerAuthenticator(store=store)

    asyncio.run(authenticator.screen(wire(f"Bearer {issued.token}")))
    with pytest.raises(AuthError) as caught:
        asyncio.run(authenticator.screen(wire(f"Bearer {forged(issued)}")))
    assert caught.value.kind is ErrorKind.BAD_TOKEN
