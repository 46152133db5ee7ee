"""A local OIDC issuer for the tests: throwaway signing keys, tokens signed by PyJWT, and a
real aiohttp server on loopback publishing the issuer's discovery document and key set.

- :class:`SigningKey`: one private key (RSA, EC P-256 or Ed25519) with its ``kid``; signs
  claims with PyJWT and gives its public JWK.
- :class:`LocalIssuer`: ``GET /.well-known/openid-configuration`` (``issuer`` and
  ``jwks_uri``) and ``GET /jwks`` on ``http://127.0.0.1:PORT``. A test publishes other keys
  (a rotation), takes it down (``up = False``: every answer is a 503), replaces the key set's
  body, and counts the requests of each path. :class:`ThreadedLocalIssuer` runs it on a
  loop of its own, for sync tests and module-scoped fixtures.
- :func:`claims`: the claims of a token from an issuer, valid now, plus the ones given;
  :func:`github_claims` and :func:`kubernetes_claims` those of a GitHub Actions token and
  of a Kubernetes projected service-account token, as GitHub and Kubernetes document them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from keyledger.backends._loop_thread import AsyncServer, ThreadedServer

__all__ = [
    "AUDIENCE",
    "DISCOVERY",
    "GITHUB",
    "JWKS",
    "LocalIssuer",
    "SigningKey",
    "ThreadedLocalIssuer",
    "claims",
    "ec_key",
    "ed25519_key",
    "github_claims",
    "kubernetes_claims",
    "rsa_key",
]

AUDIENCE = "keyledger"
GITHUB = "https://token.actions.githubusercontent.com"
DISCOVERY = "/.well-known/openid-configuration"
JWKS = "/jwks"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A throwaway private key, named ``kid`` in token headers and in the key set."""

    kid: str
    algorithm: str  # what it signs with: RS256, PS256, ES256, EdDSA
    private: PrivateKey
    publish_alg: bool = False  # name the algorithm in the JWK ("alg" is optional there)

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK, as an issuer publishes it."""
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = OKPAlgorithm.to_jwk(public, as_dict=True)
        data = {k: v for k, v in data.items() if k != "key_ops"}
        data.update(kid=self.kid, use="sig")
        if self.publish_alg:
            data["alg"] = self.algorithm
        return data

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(
        self,
        payload: Mapping[str, Any],
        *,
        kid: str | bool | None = True,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """A JWS of ``payload`` signed by PyJWT; ``kid``: True for this key's, a str for
        another, False for none."""
        header: dict[str, Any] = dict(headers or {})
        if kid is True:
            header["kid"] = self.kid
        elif isinstance(kid, str):
            header["kid"] = kid
        return jwt.encode(dict(payload), self.private, algorithm=self.algorithm, headers=header)


def rsa_key(kid: str, algorithm: str = "RS256", *, publish_alg: bool = False) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid, algorithm, private, publish_alg)


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def ed25519_key(kid: str) -> SigningKey:
    return SigningKey(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def claims(
    issuer: str, *, subject: str = "workload-1", lifetime: float = 300, **extra: Any
) -> dict[str, Any]:
    """A token's claims from ``issuer`` for keyledger, issued now; ``extra`` adds or
    replaces claims (None removes one)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime),
    }
    payload.update(extra)
    return {k: v for k, v in payload.items() if v is not None}


def github_claims(
    *,
    repository: str = "acme/payments",
    ref: str = "refs/heads/main",
    environment: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A GitHub Actions OIDC token's claims, as GitHub documents them ("About security
    hardening with OpenID Connect"), for a push workflow of ``repository`` on ``ref`` that
    asked for audience keyledger; sub is the environment form when the job has one."""
    owner = repository.split("/")[0]
    sub = (
        f"repo:{repository}:environment:{environment}"
        if environment
        else f"repo:{repository}:ref:{ref}"
    )
    payload = claims(
        GITHUB,
        subject=sub,
        jti="c1f0e7a2-9d1e-4d55-8a41-2f6b5f0c1d11",
        environment=environment,
        ref=ref,
        sha="2f7b3c8e4d1a9b6c5e0f7a8d9c1b2e3f4a5b6c7d",
        repository=repository,
        repository_owner=owner,
        actor_id="1234567",
        repository_visibility="private",
        repository_id="98765432",
        repository_owner_id="11223344",
        run_id="9876543210",
        run_number="42",
        run_attempt="1",
        runner_environment="github-hosted",
        actor="octocat",
        workflow="deploy",
        head_ref="",
        base_ref="",
        event_name="push",
        ref_type="branch",
        workflow_ref=f"{repository}/.github/workflows/deploy.yml@{ref}",
        workflow_sha="2f7b3c8e4d1a9b6c5e0f7a8d9c1b2e3f4a5b6c7d",
        job_workflow_ref=f"{owner}/workflows/.github/workflows/deploy.yml@{ref}",
        job_workflow_sha="9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b",
    )
    payload.update(extra)
    return {k: v for k, v in payload.items() if v is not None}


def kubernetes_claims(
    issuer: str, *, namespace: str = "checkout", service_account: str = "checkout-api"
) -> dict[str, Any]:
    """A projected service-account token's claims, as Kubernetes documents them (sub
    system:serviceaccount:NS:NAME; the ``kubernetes.io`` claim with namespace, node, pod
    and service account)."""
    payload = claims(
        issuer,
        subject=f"system:serviceaccount:{namespace}:{service_account}",
        jti="ea28ed49-2e11-4280-9ec5-bc3d1d84661a",
        aud=[AUDIENCE],
    )
    payload["kubernetes.io"] = {
        "namespace": namespace,
        "node": {"name": "node-7", "uid": "58456cb0-dd00-45ed-b797-5578fdceaced"},
        "pod": {
            "name": f"{service_account}-69cbfb9798-jv9gn",
            "uid": "778a530c-b3f4-47c0-9cd5-ab018fb64f33",
        },
        "serviceaccount": {"name": service_account, "uid": "a087d5a0-e1dd-43ec-93ac-f13d89cd13af"},
        "warnafter": payload["iat"] + 3600,
    }
    return payload


class LocalIssuer(AsyncServer):
    """An OIDC issuer's discovery document and key set, served on a loopback port."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys: tuple[SigningKey, ...] = keys
        self.up = True  # False: every request answered 503, as an issuer having an outage
        self.jwks_body: bytes | None = None  # served instead of the keys, when set
        self.discovery_body: bytes | None = None  # served instead of the document, when set
        self.requests: Counter[str] = Counter()  # path -> requests received
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The issuer URL (``iss``), which is also where its discovery document lives."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS

    @property
    def jwks_requests(self) -> int:
        return self.requests[JWKS]

    def publish(self, *keys: SigningKey) -> None:
        """Publish these keys (and no others) from now on: a rotation."""
        self.keys = keys

    def key_set(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.keys]}

    def reset(self, *keys: SigningKey) -> None:
        """Back to serving ``keys``, up, with nothing counted."""
        self.publish(*keys)
        self.up = True
        self.jwks_body = self.discovery_body = None
        self.requests.clear()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(DISCOVERY, self._discovery)
        app.router.add_get(JWKS, self._jwks)
        app.router.add_get("/moved", self._moved)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _answer(self, request: web.Request, body: bytes) -> web.Response:
        self.requests[request.path] += 1
        if not self.up:
            return web.Response(status=503, text="issuer unavailable")
        return web.Response(body=body, content_type="application/json")

    async def _discovery(self, request: web.Request) -> web.Response:
        document = {
            "issuer": self.url,
            "jwks_uri": self.jwks_url,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        }
        return self._answer(request, self.discovery_body or orjson.dumps(document))

    async def _jwks(self, request: web.Request) -> web.Response:
        return self._answer(request, self.jwks_body or orjson.dumps(self.key_set()))

    async def _moved(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        raise web.HTTPFound(self.jwks_url)


class ThreadedLocalIssuer(LocalIssuer, ThreadedServer):
    """A :class:`LocalIssuer` on its own loop in a daemon thread (``with``)."""

    thread_name: ClassVar[str] = "oidc-issuer"
