"""OidcVerifier, JwksCache and http_fetch against a real local issuer (tests/oidc_issuer.py):
tokens signed by PyJWT with throwaway keys, key sets served by aiohttp on loopback and
fetched over keyledger's own AiohttpTransport. Every refusal is an AuthError of the right
kind, never another exception."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.fernet import Fernet
from jwt.algorithms import HMACAlgorithm
from jwt.utils import base64url_decode, base64url_encode

from keyledger.model import Principal
from keyledger.proxy.auth import BearerAuthenticator, IdentityStore
from keyledger.proxy.auth.oidc import JwksCache, OidcVerifier, http_fetch, looks_like_jwt
from keyledger.proxy.config import ConfigError, OidcConfig, load_config, parse_config
from keyledger.proxy.errors import AuthError, ErrorKind
from keyledger.proxy.http_client import AiohttpTransport
from keyledger.proxy.issuers import ALGORITHMS, PRESETS, IssuerSettings
from keyledger.proxy.wire import WireRequest
from tests.oidc_issuer import (
    AUDIENCE,
    DISCOVERY,
    GITHUB,
    JWKS,
    LocalIssuer,
    SigningKey,
    ThreadedLocalIssuer,
    claims,
    ec_key,
    ed25519_key,
    github_claims,
    kubernetes_claims,
    rsa_key,
)


@dataclass(frozen=True)
class Keys:
    rsa: SigningKey
    ec: SigningKey
    ed: SigningKey
    rotated: SigningKey  # published only once the issuer rotates
    stranger: SigningKey  # never published: a forger's key

    @property
    def published(self) -> tuple[SigningKey, ...]:
        return (self.rsa, self.ec, self.ed)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=rsa_key("rsa-1"),
        ec=ec_key("ec-1"),
        ed=ed25519_key("ed-1"),
        rotated=rsa_key("rsa-2"),
        stranger=rsa_key("rsa-1"),  # the same kid as the real one
    )


@pytest.fixture(scope="module")
def served(keys: Keys) -> Iterator[ThreadedLocalIssuer]:
    with ThreadedLocalIssuer(*keys.published) as issuer:
        yield issuer


@pytest.fixture
def issuer(served: ThreadedLocalIssuer, keys: Keys) -> ThreadedLocalIssuer:
    """The local issuer, up, publishing the usual three keys, with nothing counted."""
    served.reset(*keys.published)
    return served


@pytest.fixture
async def transport() -> AsyncIterator[AiohttpTransport]:
    client = AiohttpTransport(timeout_s=5.0)
    await client.start()
    yield client
    await client.close()


def local(issuer: LocalIssuer, **overrides: Any) -> IssuerSettings:
    """The local issuer's settings: its keys by discovery, audience keyledger."""
    options: dict[str, Any] = {"name": "local", "issuer": issuer.url, "audiences": (AUDIENCE,)}
    options.update(overrides)
    return IssuerSettings(**options)


MakeVerifier = Callable[..., OidcVerifier]


@pytest.fixture
def make_verifier(issuer: ThreadedLocalIssuer, transport: AiohttpTransport) -> MakeVerifier:
    """A verifier fetching over keyledger's transport; trusts the local issuer unless
    told which issuers to trust."""

    def make(*settings: IssuerSettings, **options: Any) -> OidcVerifier:
        return OidcVerifier(settings or (local(issuer),), fetch=http_fetch(transport), **options)

    return make


@pytest.fixture
def verifier(make_verifier: MakeVerifier) -> OidcVerifier:
    return make_verifier()


async def refused(verifier: OidcVerifier, token: str) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await verifier.verify(token)
    return caught.value


def b64(document: Any) -> str:
    return base64url_encode(orjson.dumps(document)).decode()


def forged(header: dict[str, Any], payload: Any) -> str:
    """A token with this header and payload (shapes PyJWT will not sign) and a made-up
    signature: a test input."""
    return f"{b64(header)}.{b64(payload)}.c2lnbmF0dXJl"


class TestValidTokens:
    @pytest.mark.parametrize("which", ["rsa", "ec", "ed"])
    async def test_each_algorithm_is_accepted(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier, which: str
    ) -> None:
        """RS256, ES256 and EdDSA tokens from the issuer's published keys give the
        principal named by sub, with the issuer's name as an attribute."""
        key: SigningKey = getattr(keys, which)

        principal = await verifier.verify(key.sign(claims(issuer.url, subject="svc-a")))

        assert principal == Principal(
            id="svc-a", auth_method="oidc", groups=(), attributes={"issuer": "local"}
        )
        assert jwt.get_unverified_header(key.sign({}))["alg"] == key.algorithm

    async def test_claims_map_to_the_principal_attributes_and_groups(
        self, issuer: ThreadedLocalIssuer, keys: Keys, make_verifier: MakeVerifier
    ) -> None:
        """The principal template fills from claims, attributes follow nested claim paths,
        numbers become strings, claims that are not strings or numbers are left out, and
        the groups are the issuer's plus the string ones its groups claim lists, once each."""
        settings = local(
            issuer,
            principal="{tenant}/{sub}",
            attributes={
                "team": "org/team",
                "level": "level",
                "admin": "admin",
                "tags": "tags",
                "missing": "no/such",
            },
            groups=("ci", "deployers"),
            groups_claim="groups",
        )
        token = keys.rsa.sign(
            claims(
                issuer.url,
                subject="svc-b",
                tenant="acme",
                org={"team": "payments"},
                level=3,
                admin=True,
                tags=["a"],
                groups=["deployers", "ops", 7, {"name": "x"}],
            )
        )

        principal = await make_verifier(settings).verify(token)

        assert principal == Principal(
            id="acme/svc-b",
            auth_method="oidc",
            groups=("ci", "deployers", "ops"),
            attributes={"issuer": "local", "team": "payments", "level": "3"},
        )

    async def test_one_of_several_audiences_is_enough(
        self, issuer: ThreadedLocalIssuer, keys: Keys, make_verifier: MakeVerifier
    ) -> None:
        """A token whose aud lists keyledger among others, and an issuer accepting several
        audiences, agree."""
        settings = local(issuer, audiences=("https://keyledger.acme.internal", AUDIENCE))
        token = keys.ec.sign(claims(issuer.url, aud=["https://sts.example.com", AUDIENCE]))

        assert (await make_verifier(settings).verify(token)).id == "workload-1"

    async def test_a_token_without_kid_uses_the_only_key(
        self, issuer: ThreadedLocalIssuer, keys: Keys, make_verifier: MakeVerifier
    ) -> None:
        """Without a kid, a key set of one key is used; among several, none is guessed."""
        token = keys.ed.sign(claims(issuer.url), kid=False)
        error = await refused(make_verifier(), token)
        assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY

        issuer.publish(keys.ed)
        assert (await make_verifier().verify(token)).id == "workload-1"

    async def test_concurrent_first_tokens_fetch_the_keys_once(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """Twenty tokens arriving together at a verifier that holds no keys yet: one
        discovery request, one key set request, and all twenty accepted."""
        tokens = [keys.rsa.sign(claims(issuer.url, subject=f"svc-{i}")) for i in range(20)]

        principals = await asyncio.gather(*(verifier.verify(t) for t in tokens))

        assert [p.id for p in principals] == [f"svc-{i}" for i in range(20)]
        assert (issuer.requests[DISCOVERY], issuer.jwks_requests) == (1, 1)

    def test_only_jws_compact_shapes_look_like_a_jwt(self, keys: Keys) -> None:
        """Three dot-separated parts under 16 KiB; a keyledger token does not qualify."""
        assert looks_like_jwt(keys.rsa.sign({"sub": "x"}))
        assert not looks_like_jwt("kltok_aaaaaaaaaaaa_" + "b" * 43)
        assert not looks_like_jwt("a.b")
        assert not looks_like_jwt("a." + "b" * 16384 + ".c")


class TestTimes:
    async def test_an_expired_token_is_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """exp two minutes ago (beyond the one minute skew): token_expired, naming the
        issuer and subject as claimed."""
        token = keys.rsa.sign(claims(issuer.url, subject="svc-old", lifetime=-120))

        error = await refused(verifier, token)

        assert error.kind is ErrorKind.EXPIRED_TOKEN
        assert error.kind.value == "token_expired"
        assert dict(error.claimed) == {"issuer": "local", "subject": "svc-old"}

    async def test_an_expiry_within_the_skew_is_accepted(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """exp thirty seconds ago, with a minute of clock skew allowed: accepted."""
        token = keys.rsa.sign(claims(issuer.url, lifetime=-30))

        assert (await verifier.verify(token)).id == "workload-1"

    async def test_a_token_not_valid_yet_is_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """nbf two minutes ahead (beyond the skew): token_not_yet_valid."""
        now = int(claims(issuer.url)["iat"])
        token = keys.ec.sign(claims(issuer.url, nbf=now + 120, exp=now + 600))

        assert (await refused(verifier, token)).kind is ErrorKind.NOT_YET_VALID

    async def test_an_nbf_within_the_skew_is_accepted(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """nbf thirty seconds ahead (a clock a little fast at the issuer): accepted."""
        now = int(claims(issuer.url)["iat"])
        token = keys.ec.sign(claims(issuer.url, nbf=now + 30, iat=now + 30))

        assert (await verifier.verify(token)).id == "workload-1"

    async def test_an_iat_in_the_future_is_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """Issued two minutes from now, beyond the skew: not valid yet."""
        now = int(claims(issuer.url)["iat"])
        token = keys.ed.sign(claims(issuer.url, iat=now + 120, nbf=None, exp=now + 600))

        assert (await refused(verifier, token)).kind is ErrorKind.NOT_YET_VALID

    async def test_the_skew_is_the_configured_one(
        self, issuer: ThreadedLocalIssuer, keys: Keys, make_verifier: MakeVerifier
    ) -> None:
        """With no skew allowed, a token expired a few seconds ago is refused."""
        token = keys.rsa.sign(claims(issuer.url, lifetime=-5))

        error = await refused(make_verifier(clock_skew_s=0), token)

        assert error.kind is ErrorKind.EXPIRED_TOKEN

    @pytest.mark.parametrize("claim", ["exp", "iat", "aud"])
    async def test_a_token_lacking_a_required_claim_is_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier, claim: str
    ) -> None:
        """No exp (a token that never expires), no iat, no aud: malformed, naming it."""
        payload = claims(issuer.url)
        del payload[claim]
        token = keys.rsa.sign(payload)

        error = await refused(verifier, token)

        assert error.kind is ErrorKind.MALFORMED_AUTH
        assert repr(claim) in error.message


class TestRefusals:
    async def test_a_wrong_audience_is_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """A token minted for another service (sts.amazonaws.com) is not keyledger's."""
        token = keys.rsa.sign(claims(issuer.url, subject="svc-a", aud="sts.amazonaws.com"))

        error = await refused(verifier, token)

        assert error.kind is ErrorKind.WRONG_AUDIENCE
        assert AUDIENCE in error.message
        assert dict(error.claimed) == {"issuer": "local", "subject": "svc-a"}

    async def test_an_unknown_issuer_is_refused_without_asking_anyone(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """iss naming an issuer keyledger does not trust: unknown_issuer, the issuer as
        claimed, and no request made anywhere."""
        token = keys.rsa.sign(claims("https://evil.example.com"))

        error = await refused(verifier, token)

        assert error.kind is ErrorKind.UNKNOWN_ISSUER
        assert dict(error.claimed) == {"issuer": "https://evil.example.com"}
        assert sum(issuer.requests.values()) == 0

    async def test_a_look_alike_issuer_is_unknown(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """iss must equal the configured issuer exactly (no trailing slash, no prefix)."""
        for iss in (issuer.url + "/", issuer.url + ".evil.example.com", issuer.url.upper()):
            error = await refused(verifier, keys.rsa.sign(claims(iss)))
            assert error.kind is ErrorKind.UNKNOWN_ISSUER, iss

    async def test_alg_none_is_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """An unsigned token (alg none, made by PyJWT), with or without a real kid."""
        for kid in ({"kid": keys.rsa.kid}, {}):
            token = jwt.encode(claims(issuer.url), "", algorithm="none", headers=kid)
            assert token.endswith(".")

            error = await refused(verifier, token)

            assert error.kind is ErrorKind.BAD_TOKEN
            assert "'none' is not accepted" in error.message

    async def test_hs256_with_the_public_key_as_secret_is_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """The algorithm confusion attack: HS256 keyed with the issuer's public key PEM
        (which anyone can download) and the real key's kid. PyJWT refuses to make such a
        token, so its HMAC is computed here over the base64 segments."""
        signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': keys.rsa.kid})}." + b64(
            claims(issuer.url, subject="admin")
        )
        for secret in (keys.rsa.public_pem(), keys.rsa.public_pem().strip()):
            mac = HMACAlgorithm(HMACAlgorithm.SHA256).sign(signing_input.encode(), secret)
            token = f"{signing_input}.{base64url_encode(mac).decode()}"

            error = await refused(verifier, token)

            assert error.kind is ErrorKind.BAD_TOKEN

    def test_an_issuer_cannot_allow_a_symmetric_algorithm(self) -> None:
        """HS256 (and none) are not among the algorithms an issuer may allow."""
        assert not {"HS256", "HS384", "HS512", "none"} & set(ALGORITHMS)
        for algorithm in ("HS256", "none"):
            with pytest.raises(ValueError, match=f"algorithm {algorithm} is not allowed"):
                IssuerSettings(
                    name="x", issuer="https://x", audiences=("a",), algorithms=(algorithm,)
                )

    async def test_a_tampered_payload_is_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """A valid token whose sub is changed, signature kept: the signature fails."""
        for key in keys.published:
            header, payload, signature = key.sign(claims(issuer.url, subject="svc-a")).split(".")
            changed = orjson.loads(base64url_decode(payload)) | {"sub": "svc-admin"}

            error = await refused(verifier, f"{header}.{b64(changed)}.{signature}")

            assert error.kind is ErrorKind.BAD_TOKEN, key.algorithm
            assert error.claimed["subject"] == "svc-admin"  # as claimed, never trusted

    async def test_a_forged_signature_under_a_published_kid_is_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """Signed by a key the issuer never published, naming the kid of one it did."""
        token = keys.stranger.sign(claims(issuer.url))
        assert jwt.get_unverified_header(token)["kid"] == keys.rsa.kid

        assert (await refused(verifier, token)).kind is ErrorKind.BAD_TOKEN

    async def test_an_algorithm_other_than_the_keys_is_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """An ES256 token naming the RSA key's kid (signed with some EC key): the key
        decides the algorithm, not the token."""
        token = ec_key("x").sign(claims(issuer.url), kid=keys.rsa.kid)

        assert (await refused(verifier, token)).kind is ErrorKind.BAD_TOKEN

    async def test_an_algorithm_the_issuer_does_not_allow_is_refused_before_any_fetch(
        self, issuer: ThreadedLocalIssuer, keys: Keys, make_verifier: MakeVerifier
    ) -> None:
        """An issuer allowing only ES256 refuses an RS256 token from its own key set,
        without fetching keys for it."""
        verifier = make_verifier(local(issuer, algorithms=("ES256",)))

        error = await refused(verifier, keys.rsa.sign(claims(issuer.url)))

        assert error.kind is ErrorKind.BAD_TOKEN
        assert "'RS256' is not accepted for issuer local (accepted: ES256)" in error.message
        assert sum(issuer.requests.values()) == 0

    async def test_a_token_signed_by_another_trusted_issuer_is_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, transport: AiohttpTransport
    ) -> None:
        """Issuer B's key does not vouch for a token claiming issuer A: A's key set has no
        such key."""
        async with LocalIssuer(ec_key("b-1")) as other:
            verifier = OidcVerifier(
                [local(issuer), local(other, name="other")], fetch=http_fetch(transport)
            )
            (b_key,) = other.keys
            assert (await verifier.verify(b_key.sign(claims(other.url)))).attributes == {
                "issuer": "other"
            }

            error = await refused(verifier, b_key.sign(claims(issuer.url)))

        assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY
        assert error.claimed["issuer"] == "local"

    @pytest.mark.parametrize(
        ("make", "kind"),
        [
            pytest.param(lambda url, key: "a.b.c", ErrorKind.MALFORMED_AUTH, id="not-base64"),
            pytest.param(lambda url, key: "..", ErrorKind.MALFORMED_AUTH, id="empty-parts"),
            pytest.param(
                lambda url, key: f"{b64([])}.{b64(claims(url))}.c2ln",
                ErrorKind.MALFORMED_AUTH,
                id="header-array",
            ),
            pytest.param(
                lambda url, key: f"{b64({'alg': 'RS256'})}.{b64([url])}.c2ln",
                ErrorKind.MALFORMED_AUTH,
                id="payload-array",
            ),
            pytest.param(
                lambda url, key: f"{b64({'alg': 'RS256'})}.bm90IGpzb24.c2ln",
                ErrorKind.MALFORMED_AUTH,
                id="payload-not-json",
            ),
            pytest.param(
                lambda url, key: f"{b64({})}.{b64({})}.",
                ErrorKind.UNKNOWN_ISSUER,
                id="empty-objects",
            ),
            pytest.param(
                lambda url, key: forged({"alg": "RS256"}, claims(url, iss=[url])),
                ErrorKind.UNKNOWN_ISSUER,
                id="iss-a-list",
            ),
            pytest.param(
                lambda url, key: forged({"alg": ["RS256"], "kid": key.kid}, claims(url)),
                ErrorKind.BAD_TOKEN,
                id="alg-a-list",
            ),
            pytest.param(
                lambda url, key: forged({"alg": "RS256", "kid": 7}, claims(url)),
                ErrorKind.MALFORMED_AUTH,
                id="kid-a-number",
            ),
            pytest.param(
                lambda url, key: key.sign(claims(url, sub={"name": "x"})),
                ErrorKind.BAD_TOKEN,
                id="sub-an-object",
            ),
            pytest.param(
                lambda url, key: key.sign(claims(url, exp="tomorrow")),
                ErrorKind.BAD_TOKEN,
                id="exp-a-string",
            ),
        ],
    )
    async def test_odd_tokens_are_refused_never_crash(
        self,
        issuer: ThreadedLocalIssuer,
        keys: Keys,
        verifier: OidcVerifier,
        make: Callable[[str, SigningKey], str],
        kind: ErrorKind,
    ) -> None:
        """Tokens of the right shape with the wrong insides: an AuthError each."""
        assert (await refused(verifier, make(issuer.url, keys.rsa))).kind is kind


class TestKeyRotation:
    async def test_a_new_kid_after_rotation_is_fetched_once_then_accepted(
        self, issuer: ThreadedLocalIssuer, keys: Keys, make_verifier: MakeVerifier
    ) -> None:
        """The issuer rotates (rsa-2 in, rsa-1 out): the first token naming rsa-2 makes
        keyledger fetch the key set once and is accepted; the next makes no request; rsa-1
        is now refused."""
        verifier = make_verifier(refresh_min_s=0)
        await verifier.verify(keys.rsa.sign(claims(issuer.url)))
        assert issuer.jwks_requests == 1

        issuer.publish(keys.rotated, keys.ec, keys.ed)
        first = await verifier.verify(keys.rotated.sign(claims(issuer.url, subject="after")))
        assert (first.id, issuer.jwks_requests) == ("after", 2)
        await verifier.verify(keys.rotated.sign(claims(issuer.url)))
        assert issuer.jwks_requests == 2

        error = await refused(verifier, keys.rsa.sign(claims(issuer.url)))
        assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY
        assert "'rsa-1'" in error.message

    async def test_made_up_kids_do_not_become_requests_to_the_issuer(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """A made-up kid sent 100 times, then 100 different ones, within refresh_min: the
        key set is fetched once in all, each token refused, and a real token still
        accepted without another fetch."""
        forger = rsa_key("made-up")
        for i in range(200):
            kid = "made-up" if i < 100 else f"made-up-{i}"
            error = await refused(verifier, forger.sign(claims(issuer.url), kid=kid))
            assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY

        assert issuer.jwks_requests == 1
        assert (await verifier.verify(keys.ec.sign(claims(issuer.url)))).id == "workload-1"
        assert issuer.jwks_requests == 1

    async def test_refetches_are_bounded_by_refresh_min(
        self, issuer: ThreadedLocalIssuer, keys: Keys, transport: AiohttpTransport
    ) -> None:
        """JwksCache on a test clock: an unknown kid asked 100 times in one refresh_min
        interval refetches at most once; once the interval has passed, once more."""
        now = [1000.0]
        cache = JwksCache(
            local(issuer, jwks_url=issuer.jwks_url),
            fetch=http_fetch(transport),
            refresh_min_s=30,
            clock=lambda: now[0],
        )
        assert await cache.key("rsa-1", "RS256") is not None
        assert issuer.jwks_requests == 1

        for _ in range(100):
            assert await cache.key("made-up", "RS256") is None
            now[0] += 0.25  # 25 s in all
        assert issuer.jwks_requests == 1

        now[0] += 5
        for _ in range(100):
            assert await cache.key("made-up", "RS256") is None
        assert issuer.jwks_requests == 2

    async def test_keys_older_than_max_age_are_refetched(
        self, issuer: ThreadedLocalIssuer, keys: Keys, transport: AiohttpTransport
    ) -> None:
        """A known kid needs no fetch until the key set is older than max_age."""
        now = [0.0]
        cache = JwksCache(
            local(issuer, jwks_url=issuer.jwks_url),
            fetch=http_fetch(transport),
            refresh_min_s=30,
            max_age_s=3600,
            clock=lambda: now[0],
        )
        for _ in range(3):
            assert await cache.key("ec-1", "ES256") is not None
        assert issuer.jwks_requests == 1

        now[0] += 3601
        assert await cache.key("ec-1", "ES256") is not None
        assert issuer.jwks_requests == 2


class TestIssuerDown:
    async def test_keys_held_keep_working_while_the_issuer_is_down(
        self, issuer: ThreadedLocalIssuer, keys: Keys, make_verifier: MakeVerifier
    ) -> None:
        """Keys fetched before an outage keep verifying tokens: each refresh attempt
        (max_age 0 makes every token try) fails with a 503 and the keys are kept; a kid
        only the down issuer could vouch for is refused, not crashed."""
        verifier = make_verifier(max_age_s=0, refresh_min_s=0)
        await verifier.verify(keys.rsa.sign(claims(issuer.url)))

        issuer.up = False
        for key in keys.published:
            assert (await verifier.verify(key.sign(claims(issuer.url)))).id == "workload-1"
        assert issuer.requests[DISCOVERY] == 4  # one good fetch, three failed attempts

        error = await refused(verifier, keys.rotated.sign(claims(issuer.url)))
        assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY

    async def test_no_keys_ever_fetched_refuses_the_token(
        self, issuer: ThreadedLocalIssuer, keys: Keys, make_verifier: MakeVerifier
    ) -> None:
        """The issuer is down from the start: unknown_signing_key; when it is back (and
        refresh_min allows), the same token is accepted."""
        verifier = make_verifier(refresh_min_s=0)
        issuer.up = False
        token = keys.ed.sign(claims(issuer.url))

        error = await refused(verifier, token)
        assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY
        assert "'ed-1'" in error.message

        issuer.up = True
        assert (await verifier.verify(token)).id == "workload-1"

    async def test_an_issuer_nobody_answers_for_refuses_the_token(
        self, keys: Keys, transport: AiohttpTransport
    ) -> None:
        """Nothing listening on the issuer's port (connection refused): refused as an
        unknown signing key, and no exception escapes."""
        async with LocalIssuer(*keys.published) as gone:
            settings = local(gone)
        verifier = OidcVerifier([settings], fetch=http_fetch(transport))

        error = await refused(verifier, keys.rsa.sign(claims(settings.issuer)))

        assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY

    @pytest.mark.parametrize(
        "body",
        [
            b"<html>maintenance</html>",
            b"{}",
            b'{"keys": []}',
            b'{"keys": "nope"}',
            b'{"keys": [5, "x", {}]}',
            b'{"keys": [{"kty": "RSA", "kid": "rsa-1", "n": "AQAB", "e": "x!"}]}',
        ],
    )
    async def test_an_unusable_key_set_refuses_the_token(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier, body: bytes
    ) -> None:
        """A key set that is not JSON, has no keys, or no usable key: unknown_signing_key."""
        issuer.jwks_body = body

        error = await refused(verifier, keys.rsa.sign(claims(issuer.url)))

        assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY

    @pytest.mark.parametrize("body", [b"[]", b'"keys"', b"null"])
    async def test_a_key_set_that_is_not_an_object_refuses_the_token(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier, body: bytes
    ) -> None:
        """A key set that is JSON but not an object: refused, as any unusable key set."""
        issuer.jwks_body = body

        error = await refused(verifier, keys.rsa.sign(claims(issuer.url)))

        assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY

    @pytest.mark.parametrize(
        "document",
        [
            b"not json",
            b"[]",
            b"null",
            b"{}",
            b'{"jwks_uri": 5}',
            b'{"jwks_uri": "http://example.com/jwks"}',
            b'{"jwks_uri": "https://[::1"}',
        ],
    )
    async def test_an_unusable_discovery_document_refuses_the_token(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier, document: bytes
    ) -> None:
        """No jwks_uri, one that is not a string, plain HTTP off loopback, a bad URL:
        unknown_signing_key, and the key set is never asked for."""
        issuer.discovery_body = document

        error = await refused(verifier, keys.rsa.sign(claims(issuer.url)))

        assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY
        assert issuer.jwks_requests == 0


class TestKeySources:
    async def test_discovery_finds_the_key_set(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier
    ) -> None:
        """Without jwks_url or jwks_file: the discovery document, then its jwks_uri."""
        await verifier.verify(keys.rsa.sign(claims(issuer.url)))

        assert dict(issuer.requests) == {DISCOVERY: 1, JWKS: 1}

    async def test_a_jwks_url_skips_discovery(
        self, issuer: ThreadedLocalIssuer, keys: Keys, make_verifier: MakeVerifier
    ) -> None:
        """With jwks_url: only the key set is asked for."""
        verifier = make_verifier(local(issuer, jwks_url=issuer.jwks_url))

        await verifier.verify(keys.ec.sign(claims(issuer.url)))

        assert dict(issuer.requests) == {JWKS: 1}

    async def test_a_jwks_file_asks_nobody(
        self, issuer: ThreadedLocalIssuer, keys: Keys, make_verifier: MakeVerifier, tmp_path: Path
    ) -> None:
        """With jwks_file (an air-gapped cluster's keys): read from disk, no request; a
        missing file refuses the token."""
        path = tmp_path / "jwks.json"
        path.write_bytes(orjson.dumps(issuer.key_set()))
        verifier = make_verifier(local(issuer, jwks_file=path))

        assert (await verifier.verify(keys.ed.sign(claims(issuer.url)))).id == "workload-1"
        assert sum(issuer.requests.values()) == 0

        missing = make_verifier(local(issuer, jwks_file=tmp_path / "missing.json"))
        error = await refused(missing, keys.ed.sign(claims(issuer.url)))
        assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY

    async def test_a_plain_http_jwks_url_off_loopback_is_never_fetched(
        self, issuer: ThreadedLocalIssuer, keys: Keys, make_verifier: MakeVerifier
    ) -> None:
        """jwks_url http://example.com/...: refused before any request is made."""
        verifier = make_verifier(local(issuer, jwks_url="http://example.com/jwks"))

        error = await refused(verifier, keys.rsa.sign(claims(issuer.url)))

        assert error.kind is ErrorKind.UNKNOWN_SIGNING_KEY

    async def test_keys_naming_their_algorithm_serve_other_rsa_algorithms(
        self, issuer: ThreadedLocalIssuer, make_verifier: MakeVerifier
    ) -> None:
        """A PS256 issuer publishing its key with alg PS256: PS256 tokens accepted."""
        key = rsa_key("ps-1", "PS256", publish_alg=True)
        issuer.publish(key)
        verifier = make_verifier(local(issuer, algorithms=("PS256",)))

        assert (await verifier.verify(key.sign(claims(issuer.url)))).id == "workload-1"

    @pytest.mark.parametrize("algorithm", ["PS256", "RS384"])
    async def test_keys_without_alg_serve_every_allowed_rsa_algorithm(
        self, issuer: ThreadedLocalIssuer, make_verifier: MakeVerifier, algorithm: str
    ) -> None:
        """An issuer allowing PS256 (or RS384) whose JWKS, like many, leaves out alg."""
        key = rsa_key("ps-1", algorithm)
        issuer.publish(key)
        assert "alg" not in key.jwk()
        verifier = make_verifier(local(issuer, algorithms=(algorithm,)))

        assert (await verifier.verify(key.sign(claims(issuer.url)))).id == "workload-1"


class TestHttpFetch:
    async def test_a_200_answer_is_its_body(
        self, issuer: ThreadedLocalIssuer, transport: AiohttpTransport
    ) -> None:
        """http_fetch over AiohttpTransport returns the key set's bytes."""
        body = await http_fetch(transport)(issuer.jwks_url)

        assert orjson.loads(body) == issuer.key_set()

    async def test_other_answers_are_oserrors(
        self, issuer: ThreadedLocalIssuer, transport: AiohttpTransport
    ) -> None:
        """A 503, a 404, and a redirect (never followed: the target is not asked)."""
        fetch = http_fetch(transport)
        issuer.up = False
        with pytest.raises(OSError, match="answered 503"):
            await fetch(issuer.jwks_url)
        with pytest.raises(OSError, match="answered 404"):
            await fetch(issuer.url + "/nothing-here")
        issuer.up = True
        with pytest.raises(OSError, match="answered 302"):
            await fetch(issuer.url + "/moved")
        assert issuer.requests["/moved"] == 1
        assert issuer.jwks_requests == 1  # the 503 only

    async def test_an_answer_over_the_limit_is_refused(
        self, issuer: ThreadedLocalIssuer, transport: AiohttpTransport
    ) -> None:
        """A key set larger than the limit is not taken."""
        issuer.jwks_body = b'{"keys": []}' + b" " * 2000

        with pytest.raises(OSError, match="more than 1000 bytes"):
            await http_fetch(transport, limit=1000)(issuer.jwks_url)
        assert len(await http_fetch(transport, limit=5000)(issuer.jwks_url)) == 2012

    async def test_nobody_listening_is_an_oserror(self, transport: AiohttpTransport) -> None:
        """Connection refused reaches the key cache as OSError."""
        async with LocalIssuer() as gone:
            url = gone.jwks_url
        with pytest.raises(OSError, match="ClientConnectorError"):
            await http_fetch(transport)(url)

    @pytest.mark.parametrize(
        "url",
        [
            "http://example.com/jwks",
            "http://127.0.0.1.nip.io/jwks",
            "http://localhost.example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://example.com/jwks",
        ],
    )
    async def test_plain_http_off_loopback_is_refused_unsent(
        self, transport: AiohttpTransport, url: str
    ) -> None:
        """Keys are fetched over HTTPS, or plain HTTP only to loopback: anything else is
        refused before a connection is made."""
        with pytest.raises(OSError, match="refusing to fetch signing keys over plain HTTP"):
            await http_fetch(transport)(url)

    async def test_loopback_by_name_and_address_is_fetched(
        self, issuer: ThreadedLocalIssuer, transport: AiohttpTransport
    ) -> None:
        """http://localhost and http://127.0.0.1 are loopback."""
        fetch = http_fetch(transport)
        for url in (issuer.jwks_url, issuer.jwks_url.replace("127.0.0.1", "localhost")):
            assert orjson.loads(await fetch(url))["keys"]
        assert issuer.jwks_requests == 2


def oidc_section(tmp_path: Path, section: dict[str, Any]) -> OidcConfig:
    """The oidc: part of a config document with this section."""
    doc = {"policies": ["policies/"], "backends": {"aws": {"region": "eu-west-1"}}}
    return parse_config({**doc, "oidc": section}, base=tmp_path, source="test").oidc


class TestPresets:
    @pytest.mark.parametrize("environment", [None, "production"])
    async def test_a_github_actions_token(
        self,
        issuer: ThreadedLocalIssuer,
        keys: Keys,
        transport: AiohttpTransport,
        tmp_path: Path,
        environment: str | None,
    ) -> None:
        """The github-actions preset: iss GitHub's, the principal its sub, and repository,
        repository_owner, ref, environment (when the job has one), workflow_ref and
        job_workflow_ref as attributes; no other claim."""
        config = oidc_section(
            tmp_path,
            {
                "issuers": [
                    {
                        "preset": "github-actions",
                        "audiences": [AUDIENCE],
                        "jwks_url": issuer.jwks_url,
                    }
                ]
            },
        )
        verifier = OidcVerifier(config.issuers, fetch=http_fetch(transport))
        token = keys.rsa.sign(
            github_claims(environment=environment), headers={"typ": "JWT", "x5t": "e2ZHc1Ro"}
        )

        principal = await verifier.verify(token)

        expected = {
            "issuer": "github-actions",
            "repository": "acme/payments",
            "repository_owner": "acme",
            "ref": "refs/heads/main",
            "workflow_ref": "acme/payments/.github/workflows/deploy.yml@refs/heads/main",
            "job_workflow_ref": "acme/workflows/.github/workflows/deploy.yml@refs/heads/main",
        }
        if environment:
            expected["environment"] = environment
        assert principal == Principal(
            id=f"repo:acme/payments:environment:{environment}"
            if environment
            else "repo:acme/payments:ref:refs/heads/main",
            auth_method="oidc",
            attributes=expected,
        )
        assert dict(issuer.requests) == {JWKS: 1}

    async def test_a_kubernetes_service_account_token(
        self,
        issuer: ThreadedLocalIssuer,
        keys: Keys,
        transport: AiohttpTransport,
        tmp_path: Path,
    ) -> None:
        """The kubernetes preset (issuer from config, keys by discovery): the principal
        system:serviceaccount:NS:NAME, with namespace, service_account and pod."""
        config = oidc_section(
            tmp_path,
            {
                "issuers": [
                    {
                        "preset": "kubernetes",
                        "name": "prod-cluster",
                        "issuer": issuer.url,
                        "audiences": [AUDIENCE],
                    }
                ]
            },
        )
        verifier = OidcVerifier(config.issuers, fetch=http_fetch(transport))

        principal = await verifier.verify(keys.rsa.sign(kubernetes_claims(issuer.url)))

        assert principal == Principal(
            id="system:serviceaccount:checkout:checkout-api",
            auth_method="oidc",
            attributes={
                "issuer": "prod-cluster",
                "namespace": "checkout",
                "service_account": "checkout-api",
                "pod": "checkout-api-69cbfb9798-jv9gn",
            },
        )
        assert dict(issuer.requests) == {DISCOVERY: 1, JWKS: 1}

    @pytest.mark.parametrize(
        ("preset", "changes"),
        [
            ("github-actions", {"sub": ""}),
            ("github-actions", {"sub": None}),
            ("google", {"email": None}),
            ("google", {"email": True}),
        ],
    )
    async def test_a_missing_principal_claim_is_refused(
        self,
        issuer: ThreadedLocalIssuer,
        keys: Keys,
        transport: AiohttpTransport,
        preset: str,
        changes: dict[str, Any],
    ) -> None:
        """A token without the claim the principal is named by (empty, absent, or not a
        string): malformed, naming the claim."""
        payload = github_claims() if preset == "github-actions" else claims(GITHUB)
        payload.update(changes)
        settings = IssuerSettings(
            name=preset,
            issuer=GITHUB,
            audiences=(AUDIENCE,),
            principal=PRESETS[preset]["principal"],
            attributes=PRESETS[preset]["attributes"],
            jwks_url=issuer.jwks_url,
        )
        verifier = OidcVerifier([settings], fetch=http_fetch(transport))

        error = await refused(
            verifier, keys.rsa.sign({k: v for k, v in payload.items() if v is not None})
        )

        assert error.kind is ErrorKind.MALFORMED_AUTH
        claim = PRESETS[preset]["principal"].strip("{}")
        assert f"lacks the {claim!r} claim" in error.message


def write_config(tmp_path: Path, oidc: str) -> Path:
    path = tmp_path / "conf" / "keyledger.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "policies: [policies/]\nbackends:\n  aws: {region: eu-west-1}\n"
    path.write_text(text + textwrap.dedent(oidc).lstrip("\n"), encoding="utf-8")
    return path


def config_error(tmp_path: Path, oidc: str) -> str:
    path = write_config(tmp_path, oidc)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value).removeprefix(f"{path}:")


class TestConfig:
    def test_presets_fill_in_the_issuer_and_claims(self, tmp_path: Path) -> None:
        """A config naming presets: issuer, principal and attributes from the preset, names
        from the preset (or given), durations read."""
        path = write_config(
            tmp_path,
            """
            oidc:
              issuers:
                - preset: github-actions
                  audiences: keyledger
                - preset: kubernetes
                  name: prod-cluster
                  issuer: https://oidc.prod.example.com
                  audiences: [keyledger, https://kubernetes.default.svc]
                  groups: cluster-workloads
                  jwks_file: keys/cluster-jwks.json
                - issuer: https://idp.example.com/
                  audiences: [keyledger]
                  principal: "{email}"
                  attributes: {team: org/team}
                  groups: [idp-users, staff]
                  groups_claim: groups
                  jwks_url: https://idp.example.com/keys
                  algorithms: [ES256, PS256]
              clock_skew: 90s
              refresh_min: 2m
            """,
        )

        oidc = load_config(path).oidc

        github, cluster, idp = oidc.issuers
        assert github == IssuerSettings(
            name="github-actions",
            issuer=GITHUB,
            audiences=(AUDIENCE,),
            principal="{sub}",
            attributes=dict(PRESETS["github-actions"]["attributes"]),
        )
        assert set(github.attributes) == {
            "repository",
            "repository_owner",
            "ref",
            "environment",
            "workflow_ref",
            "job_workflow_ref",
        }
        assert (cluster.name, cluster.issuer, cluster.audiences) == (
            "prod-cluster",
            "https://oidc.prod.example.com",
            (AUDIENCE, "https://kubernetes.default.svc"),
        )
        assert cluster.attributes == {
            "namespace": "kubernetes.io/namespace",
            "service_account": "kubernetes.io/serviceaccount/name",
            "pod": "kubernetes.io/pod/name",
        }
        assert cluster.jwks_file == path.parent / "keys" / "cluster-jwks.json"
        assert (cluster.algorithms, cluster.groups) == (
            ("RS256", "ES256", "EdDSA"),
            ("cluster-workloads",),
        )
        assert (idp.name, idp.principal, idp.attributes, idp.groups, idp.groups_claim) == (
            "idp.example.com",
            "{email}",
            {"team": "org/team"},
            ("idp-users", "staff"),
            "groups",
        )
        assert (idp.jwks_url, idp.algorithms) == (
            "https://idp.example.com/keys",
            ("ES256", "PS256"),
        )
        assert (oidc.clock_skew_s, oidc.refresh_min_s, oidc.enabled) == (90, 120, True)

    def test_no_oidc_section_trusts_no_issuer(self, tmp_path: Path) -> None:
        oidc = load_config(write_config(tmp_path, "")).oidc

        assert (oidc.issuers, oidc.enabled) == ((), False)

    @pytest.mark.parametrize(
        ("oidc", "expected"),
        [
            pytest.param(
                """
                oidc:
                  issuers:
                    - preset: github-action
                      audiences: [keyledger]
                """,
                "6:15: oidc.issuers[0].preset: expected one of github-actions, gitlab, "
                "kubernetes, google, entra (did you mean 'github-actions'?)",
                id="unknown-preset",
            ),
            pytest.param(
                """
                oidc:
                  issuers:
                    - preset: github-actions
                      audiences: [keyledger]
                      algorithms: [RS256, RS257]
                """,
                "8:19: oidc.issuers[0].algorithms: expected a list of RS256, RS384, RS512, "
                "PS256, ES256, ES384, EdDSA (never none or HS*)",
                id="unknown-algorithm",
            ),
            pytest.param(
                """
                oidc:
                  issuers:
                    - preset: github-actions
                      audiences: [keyledger]
                      algorithms: [RS256, HS256]
                """,
                "8:19: oidc.issuers[0].algorithms: expected a list of RS256, RS384, RS512, "
                "PS256, ES256, ES384, EdDSA (never none or HS*)",
                id="hs256",
            ),
            pytest.param(
                """
                oidc:
                  issuers:
                    - preset: github-actions
                      audiences: [keyledger]
                      algorithms: [none]
                """,
                "8:19: oidc.issuers[0].algorithms: expected a list of RS256, RS384, RS512, "
                "PS256, ES256, ES384, EdDSA (never none or HS*)",
                id="none",
            ),
            pytest.param(
                """
                oidc:
                  issuers:
                    - preset: kubernetes
                      audiences: [keyledger]
                """,
                "6:7: oidc.issuers[0].issuer: expected the issuer URL, as tokens name it in iss",
                id="kubernetes-without-issuer",
            ),
            pytest.param(
                """
                oidc:
                  issuers:
                    - preset: github-actions
                """,
                "6:7: oidc.issuers[0].audiences: expected the audiences tokens must carry (aud)",
                id="no-audiences",
            ),
            pytest.param(
                """
                oidc:
                  issuers:
                    - preset: github-actions
                      audiences: [keyledger]
                      jwks_uri: https://example.com/jwks
                """,
                "8:7: oidc.issuers[0].jwks_uri: unknown key (did you mean 'jwks_url'?)",
                id="unknown-key",
            ),
            pytest.param(
                """
                oidc:
                  issuers:
                    - preset: github-actions
                      audiences: [keyledger]
                      jwks_url: https://example.com/jwks
                      jwks_file: jwks.json
                """,
                "9:18: oidc.issuers[0].jwks_file: give jwks_url or jwks_file, not both",
                id="two-key-sources",
            ),
            pytest.param(
                """
                oidc:
                  issuers:
                    - preset: github-actions
                      audiences: [keyledger]
                    - preset: github-actions
                      audiences: [other]
                """,
                "6:5: oidc.issuers: github-actions "
                "(https://token.actions.githubusercontent.com) is listed twice",
                id="twice",
            ),
            pytest.param(
                """
                oidc:
                  clock_skew: 1h
                """,
                "5:15: oidc.clock_skew: expected 0s to 10m",
                id="skew",
            ),
            pytest.param(
                """
                oidc:
                  issuers:
                    - preset: github-actions
                      audiences: [keyledger]
                      groups: [ci, 7]
                """,
                "8:15: oidc.issuers[0].groups: expected a list of names",
                id="groups",
            ),
        ],
    )
    def test_errors_name_the_place_and_the_fix(
        self, tmp_path: Path, oidc: str, expected: str
    ) -> None:
        """Each mistake is reported at its file:line:col, with what is expected."""
        assert config_error(tmp_path, oidc) == expected

    def test_preset_github_is_pointed_to_github_actions(self, tmp_path: Path) -> None:
        """The likeliest slip, preset: github, is pointed to github-actions."""
        error = config_error(
            tmp_path, "oidc:\n  issuers:\n    - {preset: github, audiences: [keyledger]}\n"
        )

        assert error.endswith("(did you mean 'github-actions'?)")


def wire(authorization: str) -> WireRequest:
    return WireRequest(
        method="GET",
        path="/v1/projects/p/secrets/s/versions/latest:access",
        query=(),
        headers={"host": "127.0.0.1:8443", "authorization": authorization},
        body=b"",
        source_ip="127.0.0.1",
        user_agent="test",
        request_id="req-1",
    )


class TestBearerAuthenticator:
    @pytest.fixture
    def store(self, tmp_path: Path) -> IdentityStore:
        return IdentityStore(tmp_path / "identities.json", Fernet.generate_key())

    async def test_a_jwt_bearer_token_goes_to_the_verifier(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier, store: IdentityStore
    ) -> None:
        """Authorization: Bearer <JWT> gives the OIDC principal; keyledger's own tokens
        keep working beside it."""
        bearer = BearerAuthenticator(store=store, oidc=verifier)
        issued = store.create_token("svc-billing")

        oidc = await bearer.authenticate(wire(f"Bearer {keys.ec.sign(claims(issuer.url))}"))
        own = await bearer.authenticate(wire(f"Bearer {issued.token}"))

        assert (oidc.id, oidc.auth_method) == ("workload-1", "oidc")
        assert (own.id, own.auth_method) == ("svc-billing", "token")

    async def test_a_refused_jwt_is_an_oidc_failure(
        self, issuer: ThreadedLocalIssuer, keys: Keys, verifier: OidcVerifier, store: IdentityStore
    ) -> None:
        """An expired JWT: token_expired, method oidc, the issuer and subject as claimed,
        and the token nowhere in the error."""
        bearer = BearerAuthenticator(store=store, oidc=verifier)
        token = keys.rsa.sign(claims(issuer.url, subject="svc-old", lifetime=-600))

        with pytest.raises(AuthError) as caught:
            await bearer.authenticate(wire(f"Bearer {token}"))

        error = caught.value
        assert (error.kind, error.method) == (ErrorKind.EXPIRED_TOKEN, "oidc")
        assert dict(error.claimed) == {"issuer": "local", "subject": "svc-old"}
        assert token not in str(error)
        assert token.split(".")[2] not in repr(vars(error))

    async def test_without_issuers_a_jwt_is_not_a_keyledger_token(
        self, issuer: ThreadedLocalIssuer, keys: Keys, store: IdentityStore
    ) -> None:
        """No oidc configured: a JWT is a malformed keyledger token, method bearer."""
        bearer = BearerAuthenticator(store=store)

        with pytest.raises(AuthError) as caught:
            await bearer.authenticate(wire(f"Bearer {keys.rsa.sign(claims(issuer.url))}"))

        assert (caught.value.kind, caught.value.method) == (ErrorKind.MALFORMED_AUTH, None)
        assert sum(issuer.requests.values()) == 0


class TestRevokedTokens:
    async def test_tokens_issued_before_a_cutoff_are_refused(
        self, issuer: ThreadedLocalIssuer, keys: Keys, tmp_path: Path, make_verifier: MakeVerifier
    ) -> None:
        """After `identity revoke --sessions svc-*`, a token of svc-a issued before the
        cutoff is refused as revoked (naming its caller); one issued after it, and another
        caller's, are accepted."""
        store = IdentityStore(tmp_path / "identities.json", Fernet.generate_key())
        verifier = make_verifier(revoked=store.sessions_revoked)
        earlier = int(time.time()) - 60
        old = keys.rsa.sign(claims(issuer.url, subject="svc-a", iat=earlier, nbf=earlier))
        other = keys.rsa.sign(claims(issuer.url, subject="web-1", iat=earlier, nbf=earlier))
        assert (await verifier.verify(old)).id == "svc-a"

        cutoff = store.revoke_sessions("svc-*")

        error = await refused(verifier, old)
        assert error.kind is ErrorKind.REVOKED_TOKEN
        assert error.principal_hint == "svc-a"
        assert (await verifier.verify(other)).id == "web-1"
        later = int(cutoff.before.timestamp())
        fresh = keys.rsa.sign(claims(issuer.url, subject="svc-a", iat=later, nbf=later - 1))
        assert (await verifier.verify(fresh)).id == "svc-a"
