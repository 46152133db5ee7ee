"""Workload identities: OIDC JWTs from issuers the config trusts (GitHub Actions, GitLab,
Kubernetes service accounts, Google, Microsoft Entra), verified with PyJWT.

A token is checked, in order: it is a JWT; its ``iss`` is a configured issuer (unverified
until its signature is); its header's ``alg`` is one that issuer allows (asymmetric only:
never ``none``, never HS*, so a public key can never be used as an HMAC secret); its
``kid`` names a key of the issuer's key set; the signature; ``exp``, ``nbf`` and ``iat``
within the clock skew; an allowed ``aud``. The principal and its attributes then come from
claims, as the issuer's settings (or its preset) map them.

Key sets come from the issuer's discovery document, a JWKS URL, or a local file (an
air-gapped cluster's), and are kept: fetched on first use, again when a token names a key
the set lacks (an issuer rotated its keys) but at most once per ``refresh_min_s``, and when
older than ``max_age_s``. When the issuer cannot be reached, the keys already held keep
working; with none, tokens are refused (never a crash, never an unverified token).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson
import structlog

from keyledger.backends import HttpTransport, HttpTransportError
from keyledger.model import Principal
from keyledger.proxy.config import is_loopback_host
from keyledger.proxy.errors import AuthError, ErrorKind
from keyledger.proxy.issuers import IssuerSettings

__all__ = [
    "METHOD",
    "Fetch",
    "JwksCache",
    "OidcVerifier",
    "http_fetch",
    "looks_like_jwt",
]

log = structlog.get_logger("keyledger.auth.oidc")

METHOD = "oidc"

_TEMPLATE = re.compile(r"\{([^{}]+)\}")
# Bounds on what a caller's token may make keyledger do or keep.
_MAX_TOKEN = 16 * 1024
_MAX_CLAIM = 512

Fetch = Callable[[str], Awaitable[bytes]]


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated base64url parts (a JWS in compact form)."""
    return token.count(".") == 2 and len(token) <= _MAX_TOKEN


class JwksCache:
    """One issuer's signing keys, by ``kid``."""

    def __init__(
        self,
        settings: IssuerSettings,
        *,
        fetch: Fetch,
        refresh_min_s: float = 30.0,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._fetch = fetch
        self._refresh_min_s = refresh_min_s
        self._max_age_s = max_age_s
        self._clock = clock
        # The published keys as published (a key without "alg" serves every algorithm of
        # its type), and each built for the algorithm a token names.
        self._keys: dict[str | None, Mapping[str, Any]] = {}
        self._built: dict[tuple[str | None, str], jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last attempt, successful or not
        self._loaded_at: float | None = None  # the last success
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        """The key named ``kid`` (the only key, for a token without one), for
        ``algorithm``, or None."""
        now = self._clock()
        stale = self._loaded_at is None or now - self._loaded_at > self._max_age_s
        if stale or self._find(kid) is None:
            async with self._lock:
                if self._may_fetch(self._clock()):
                    await self._refresh()
        found = self._find(kid)
        if found is None:
            return None
        kid, published = found
        built = self._built.get((kid, algorithm))
        if built is None:
            try:
                # A key that names its algorithm keeps it (a token naming another then
                # fails to verify); one that does not is built for the token's.
                built = jwt.PyJWK(dict(published), None if "alg" in published else algorithm)
            except jwt.PyJWTError:
                # Not a key for that algorithm (an RSA key for ES256): built as it is, it
                # fails the token's verification, as a wrong key does.
                built = jwt.PyJWK(dict(published))
            self._built[kid, algorithm] = built
        return built

    def _find(self, kid: str | None) -> tuple[str | None, Mapping[str, Any]] | None:
        if kid is not None:
            published = self._keys.get(kid)
            return (kid, published) if published is not None else None
        return next(iter(self._keys.items())) if len(self._keys) == 1 else None

    def _may_fetch(self, now: float) -> bool:
        # Bounded: a stream of tokens naming made-up kids must not become a stream of
        # requests to the issuer.
        return self._fetched_at is None or now - self._fetched_at >= self._refresh_min_s

    async def _refresh(self) -> None:
        self._fetched_at = self._clock()
        try:
            keys = _usable_keys(await self._document())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "oidc_keys_unavailable",
                issuer=self._settings.name,
                error=f"{type(exc).__name__}: {str(exc)[:300]}",
                keys_held=len(self._keys),
            )
            return
        self._keys = keys
        self._built = {}
        self._loaded_at = self._clock()
        log.info("oidc_keys_loaded", issuer=self._settings.name, keys=len(self._keys))

    async def _document(self) -> Any:
        settings = self._settings
        if settings.jwks_file is not None:
            return orjson.loads(await asyncio.to_thread(settings.jwks_file.read_bytes))
        url = settings.jwks_url
        if url is None:
            discovery = settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
            url = orjson.loads(await self._fetch(discovery))["jwks_uri"]
            if not isinstance(url, str):
                raise ValueError("the discovery document has no jwks_uri")
        return orjson.loads(await self._fetch(url))


def _usable_keys(document: Any) -> dict[str | None, Mapping[str, Any]]:
    """The signing keys of a JWKS document PyJWT can use, by kid; ValueError if none."""
    listed = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(listed, list):
        raise ValueError('not a key set ({"keys": [...]})')
    keys: dict[str | None, Mapping[str, Any]] = {}
    for published in listed:
        if not isinstance(published, Mapping) or published.get("use", "sig") != "sig":
            continue
        try:
            jwt.PyJWK(dict(published))  # a key PyJWT can build, or skipped
        except jwt.PyJWTError:
            continue
        kid = published.get("kid")
        keys[kid if isinstance(kid, str) else None] = published
    if not keys:
        raise ValueError("the key set holds no usable signing key")
    return keys


class OidcVerifier:
    """Turns a JWT from a trusted issuer into a :class:`Principal`, or an AuthError."""

    def __init__(
        self,
        issuers: Sequence[IssuerSettings],
        *,
        fetch: Fetch,
        clock_skew_s: float = 60.0,
        refresh_min_s: float = 30.0,
        max_age_s: float = 3600.0,
        revoked: Callable[[str, datetime], bool] | None = None,
    ) -> None:
        """``revoked(principal_id, issued_at)``: whether tokens of that caller issued then
        were revoked (the identity store's session cutoffs)."""
        self._revoked = revoked
        self._issuers = {settings.issuer: settings for settings in issuers}
        self._keys = {
            settings.issuer: JwksCache(
                settings, fetch=fetch, refresh_min_s=refresh_min_s, max_age_s=max_age_s
            )
            for settings in issuers
        }
        self._skew = clock_skew_s

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError(
                "The bearer token is not a well-formed JWT.", kind=ErrorKind.MALFORMED_AUTH
            ) from None
        issuer = unverified.get("iss")
        settings = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if settings is None:
            raise AuthError(
                f"The token's issuer {str(issuer)[:200]!r} is not trusted by keyledger.",
                kind=ErrorKind.UNKNOWN_ISSUER,
                claimed={"issuer": str(issuer)[:200]},
            )
        claimed = {"issuer": settings.name}
        if isinstance(unverified.get("sub"), str):
            claimed["subject"] = unverified["sub"][:_MAX_CLAIM]
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise AuthError(
                f"The token's algorithm {str(algorithm)[:20]!r} is not accepted for issuer "
                f"{settings.name} (accepted: {', '.join(settings.algorithms)}).",
                kind=ErrorKind.BAD_TOKEN,
                claimed=claimed,
            )
        kid = header.get("kid")
        key = await self._keys[settings.issuer].key(
            kid if isinstance(kid, str) else None, algorithm
        )
        if key is None:
            raise AuthError(
                f"No signing key {str(kid)[:100]!r} is known for issuer {settings.name}.",
                kind=ErrorKind.UNKNOWN_SIGNING_KEY,
                claimed=claimed,
            )
        claims = self._decode(token, key, settings, algorithm, claimed)
        principal = _principal(settings, claims, claimed)
        issued = _issued_at(claims)
        if self._revoked is not None and self._revoked(principal.id, issued):
            raise AuthError(
                f"Tokens issued to {principal.id[:_MAX_CLAIM]} before a revocation are refused.",
                kind=ErrorKind.REVOKED_TOKEN,
                principal_hint=principal.id,
                claimed=claimed,
            )
        return principal

    def _decode(
        self,
        token: str,
        key: jwt.PyJWK,
        settings: IssuerSettings,
        algorithm: str,
        claimed: Mapping[str, str],
    ) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=list(settings.audiences),
                issuer=settings.issuer,
                leeway=self._skew,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(
                "The token has expired.", kind=ErrorKind.EXPIRED_TOKEN, claimed=claimed
            ) from None
        except jwt.ImmatureSignatureError:
            raise AuthError(
                "The token is not valid yet (nbf or iat in the future).",
                kind=ErrorKind.NOT_YET_VALID,
                claimed=claimed,
            ) from None
        except jwt.InvalidAudienceError:
            raise AuthError(
                f"The token is not for keyledger (audience must be one of "
                f"{', '.join(settings.audiences)}).",
                kind=ErrorKind.WRONG_AUDIENCE,
                claimed=claimed,
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(
                f"The token lacks the {exc.claim!r} claim.",
                kind=ErrorKind.MALFORMED_AUTH,
                claimed=claimed,
            ) from None
        except jwt.PyJWTError:
            # A bad signature, a tampered payload, a key of the wrong type: one answer.
            raise AuthError(
                "The token's signature does not verify.", kind=ErrorKind.BAD_TOKEN, claimed=claimed
            ) from None
        return claims


def _issued_at(claims: Mapping[str, Any]) -> datetime:
    try:
        return datetime.fromtimestamp(float(claims["iat"]), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.min.replace(tzinfo=UTC)  # the earliest: any revocation covers it


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("/"):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _principal(
    settings: IssuerSettings, claims: Mapping[str, Any], claimed: Mapping[str, str]
) -> Principal:
    def fill(match: re.Match[str]) -> str:
        value = _claim(claims, match[1])
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            raise AuthError(
                f"The token lacks the {match[1]!r} claim keyledger names its caller by.",
                kind=ErrorKind.MALFORMED_AUTH,
                claimed=claimed,
            )
        return str(value)[:_MAX_CLAIM]

    principal = _TEMPLATE.sub(fill, settings.principal)
    attributes = {"issuer": settings.name}
    for name, path in settings.attributes.items():
        value = _claim(claims, path)
        if isinstance(value, str | int) and not isinstance(value, bool):
            attributes[name] = str(value)[:_MAX_CLAIM]
    groups = settings.groups
    if settings.groups_claim is not None:
        listed = _claim(claims, settings.groups_claim)
        if isinstance(listed, list):
            claimed_groups = (str(g)[:_MAX_CLAIM] for g in listed[:100] if isinstance(g, str))
            groups = tuple(dict.fromkeys((*groups, *claimed_groups)))
    return Principal(id=principal, auth_method=METHOD, groups=groups, attributes=attributes)


def http_fetch(transport: HttpTransport, *, limit: int = 1 << 20) -> Fetch:
    """A :data:`Fetch` over ``transport``: the body of a 200 answer (at most ``limit``
    bytes), else OSError, so the key cache keeps what it holds."""

    async def fetch(url: str) -> bytes:
        if not url.startswith("https://") and not is_loopback_host(urlsplit(url).hostname or ""):
            raise OSError(f"refusing to fetch signing keys over plain HTTP: {url[:200]}")
        try:
            reply = await transport.request("GET", url, headers={"Accept": "application/json"})
        except HttpTransportError as exc:
            raise OSError(f"{url[:200]}: {exc}") from exc
        if reply.status != 200:
            raise OSError(f"{url[:200]} answered {reply.status}")
        if len(reply.body) > limit:
            raise OSError(f"{url[:200]} answered more than {limit} bytes")
        return reply.body

    return fetch
