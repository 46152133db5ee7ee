"""The demo's OIDC issuer: a signing key under ``var/keys/``, its key set under
``var/oidc/``, trusted by ``keyledger serve --dev``; ``keyledger dev token`` signs workload
tokens with it, as GitHub Actions or a Kubernetes cluster would sign theirs."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from keyledger.proxy.issuers import IssuerSettings

__all__ = ["AUDIENCE", "ISSUER", "KID", "demo_issuer", "sign_token"]

# Never a real host: the demo's keys are read from var/oidc/jwks.json, never fetched.
ISSUER = "https://oidc.keyledger-dev.invalid"
AUDIENCE = "keyledger"
KID = "keyledger-dev-1"
# The claims a demo token may carry that become attributes (policies can condition on
# them), as the github-actions and kubernetes presets name theirs.
ATTRIBUTES = (
    "repository",
    "repository_owner",
    "ref",
    "environment",
    "namespace",
    "service_account",
    "team",
)


def _key_path(var: Path) -> Path:
    return var / "keys" / "oidc-issuer.pem"


def demo_issuer(var: Path) -> IssuerSettings:
    """The demo issuer's settings; its key and key set are made on first use."""
    key_path = _key_path(var)
    jwks_path = var / "oidc" / "jwks.json"
    if not key_path.exists():
        made = ed25519.Ed25519PrivateKey.generate()
        key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                made.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{key_path} is not the demo issuer's Ed25519 key")
    public = orjson.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    jwks_path.parent.mkdir(parents=True, exist_ok=True)
    jwks_path.write_bytes(orjson.dumps({"keys": [{**public, "kid": KID, "use": "sig"}]}))
    return IssuerSettings(
        name="dev",
        issuer=ISSUER,
        audiences=(AUDIENCE,),
        attributes={name: name for name in ATTRIBUTES},
        jwks_file=jwks_path,
        algorithms=("EdDSA",),
    )


def sign_token(var: Path, *, subject: str, claims: Mapping[str, str], ttl_s: float) -> str:
    """A workload token for ``subject`` from the demo issuer (run where the demo ran)."""
    key_path = _key_path(var)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise ValueError(
            f"no demo OIDC issuer in {var.absolute()} ({key_path} is missing): run this in "
            "the folder where `keyledger serve --dev` ran, or pass --var DIR"
        ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{key_path} is not the demo issuer's Ed25519 key")
    now = int(time.time())
    payload = {
        **claims,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl_s),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": KID})
