"""AWS Signature Version 4, for both directions.

keyledger verifies the signatures of incoming SDK requests (with the secrets of the keys it
issued) and signs its own calls to the real store (with its own credentials). Both need the
same canonical-request arithmetic, so it lives here once. Deriving a signing key costs four
HMACs; :class:`SigningKeyCache` remembers them per (secret, date, region, service), which is
what makes signing and verifying cheap on the hot path.

Reference: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

__all__ = [
    "ALGORITHM",
    "AuthorizationHeader",
    "SigningKeyCache",
    "amz_date",
    "canonical_request",
    "parse_amz_date",
    "parse_authorization",
    "sign_headers",
    "signature",
]

ALGORITHM = "AWS4-HMAC-SHA256"
_KEY_ID = re.compile(r"[A-Za-z0-9]{1,128}")
_DATE = re.compile(r"[0-9]{8}")
_NAME = re.compile(r"[a-z0-9-]{1,64}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_SIGNED_HEADERS = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]{1,128}(;[a-z0-9!#$%&'*+.^_`|~-]{1,128})*")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ANY_SIGNATURE = "0" * 64


class MalformedAuthorization(ValueError):
    """The Authorization header is not a SigV4 header we can read."""


# Schemes other clients put in an Authorization header: words, never credentials, so a
# refusal may name them.
_KNOWN_SCHEMES = {
    scheme.lower(): scheme
    for scheme in (
        "AWS",  # Signature Version 2
        "AWS4-ECDSA-P256-SHA256",  # SigV4a
        "Basic",
        "Bearer",
        "Digest",
        "Negotiate",
        "NTLM",
        "PoP",
        "SharedKey",
        "SharedAccessSignature",
    )
}


def _not_sigv4(first_word: str) -> str:
    """What is wrong with an Authorization header of another scheme, without any of it:
    its first word may be a credential sent bare (a key, a token with no scheme)."""
    scheme = _KNOWN_SCHEMES.get(first_word.lower())
    if scheme is None:
        return f"the Authorization header does not start with {ALGORITHM}"
    return f"the Authorization header uses the {scheme} scheme, not {ALGORITHM}"


@dataclass(frozen=True, slots=True)
class AuthorizationHeader:
    """The parts of ``Authorization: AWS4-HMAC-SHA256 Credential=..., ...``."""

    access_key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_authorization(value: str) -> AuthorizationHeader:
    # Everything before the signature repeats from request to request (a client's key,
    # day, region, service and header set), so that part is parsed once.
    head, _, sig = value.rpartition("Signature=")
    if _SIGNATURE.fullmatch(sig) and (claim := _parsed_head(head)) is not None:
        return AuthorizationHeader(*claim, signature=sig)
    return _parse_authorization(value)


@functools.lru_cache(maxsize=512)
def _parsed_head(head: str) -> tuple[str, str, str, str, tuple[str, ...]] | None:
    """What a header up to its (valid) signature claims, or None if it is not readable."""
    try:
        parsed = _parse_authorization(f"{head}Signature={_ANY_SIGNATURE}")
    except MalformedAuthorization:
        return None
    if parsed.signature != _ANY_SIGNATURE:
        return None  # "Signature=" was not the last part: the slow path's to judge
    return (parsed.access_key_id, parsed.date, parsed.region, parsed.service, parsed.signed_headers)


def _parse_authorization(value: str) -> AuthorizationHeader:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise MalformedAuthorization(_not_sigv4(algorithm))
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            raise MalformedAuthorization("Authorization header parts must be key=value")
        parts[key] = val
    try:
        credential = parts["Credential"].split("/")
        signed = parts["SignedHeaders"]
        sig = parts["Signature"]
    except KeyError as exc:
        raise MalformedAuthorization(f"Authorization header lacks {exc.args[0]}") from None
    if len(credential) != 5 or credential[4] != "aws4_request":
        raise MalformedAuthorization("Credential must be KEY/DATE/REGION/SERVICE/aws4_request")
    key, date, region, service = credential[:4]
    if not (
        _KEY_ID.fullmatch(key)
        and _DATE.fullmatch(date)
        and _NAME.fullmatch(region)
        and _NAME.fullmatch(service)
    ):
        raise MalformedAuthorization("Credential has an invalid key id, date, region or service")
    if not _SIGNATURE.fullmatch(sig):
        raise MalformedAuthorization("Signature must be 64 lower-case hex digits")
    if not _SIGNED_HEADERS.fullmatch(signed):
        raise MalformedAuthorization("SignedHeaders must be lower-case header names joined by ;")
    return AuthorizationHeader(
        access_key_id=credential[0],
        date=credential[1],
        region=credential[2],
        service=credential[3],
        signed_headers=tuple(signed.split(";")),
        signature=sig,
    )


def amz_date(moment: datetime) -> str:
    """``20261124T123456Z``: by isoformat, a third of strftime's cost (once a forward)."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat()[:19].replace("-", "").replace(":", "") + "Z"


def parse_amz_date(text: str) -> datetime | None:
    """``20261124T123456Z`` -> datetime; None if malformed (strptime is 4x slower)."""
    if len(text) != 16 or text[8] != "T" or text[15] != "Z":
        return None
    digits = text[:8] + text[9:15]
    if not digits.isascii() or not digits.isdigit():
        return None
    try:
        return datetime(
            int(text[0:4]), int(text[4:6]), int(text[6:8]),
            int(text[9:11]), int(text[11:13]), int(text[13:15]), tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        return None


def _canonical_query(query: Iterable[tuple[str, str]]) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in query)
    return "&".join(f"{k}={v}" for k, v in pairs)


def _canonical_header_value(value: str) -> str:
    return " ".join(value.strip().split())


def canonical_request(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Iterable[str],
    payload_sha256: str,
) -> str:
    """The canonical request string; ``headers`` keys must be lower-case."""
    names = list(signed_headers)
    # Every value of a header, in order: a repeated header is signed as "a,b". Multidicts
    # (aiohttp's) keep repeats; a plain mapping has one value each.
    getall = getattr(headers, "getall", None)
    values = (getall(n) for n in names) if getall is not None else ([headers[n]] for n in names)
    canonical_headers = "".join(
        f"{n}:{','.join(map(_canonical_header_value, v))}\n"
        for n, v in zip(names, values, strict=True)
    )
    return "\n".join(
        (
            method,
            "/" if path in ("", "/") else quote(path, safe="/-_.~"),
            _canonical_query(query) if query else "",
            canonical_headers,
            ";".join(names),
            payload_sha256,
        )
    )


def string_to_sign(*, timestamp: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


class SigningKeyCache:
    """Derived SigV4 signing keys, keyed by (secret, date, region, service); bounded LRU."""

    def __init__(self, *, max_entries: int = 4096) -> None:
        self._keys: OrderedDict[tuple[str, str, str, str], bytes] = OrderedDict()
        self._max = max_entries

    def key(self, secret: str, date: str, region: str, service: str) -> bytes:
        cache_key = (secret, date, region, service)
        found = self._keys.get(cache_key)
        if found is not None:
            self._keys.move_to_end(cache_key)
            return found
        k = hmac.digest(f"AWS4{secret}".encode(), date.encode(), "sha256")
        k = hmac.digest(k, region.encode(), "sha256")
        k = hmac.digest(k, service.encode(), "sha256")
        k = hmac.digest(k, b"aws4_request", "sha256")
        self._keys[cache_key] = k
        if len(self._keys) > self._max:
            self._keys.popitem(last=False)
        return k


def signature(signing_key: bytes, to_sign: str) -> str:
    return hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()


def sign_headers(
    *,
    keys: SigningKeyCache,
    access_key_id: str,
    secret_key: str,
    session_token: str | None,
    region: str,
    service: str,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> dict[str, str]:
    """Return ``headers`` plus the SigV4 headers for one request (header-based signing)."""
    timestamp = amz_date(now)
    date = timestamp[:8]
    payload = hashlib.sha256(body).hexdigest()
    out = {k.lower(): v for k, v in headers.items()}
    out["host"] = host
    out["x-amz-date"] = timestamp
    if session_token:
        out["x-amz-security-token"] = session_token
    names = sorted(out)
    scope = f"{date}/{region}/{service}/aws4_request"
    canonical = canonical_request(
        method=method,
        path=path,
        query=(),
        headers=out,
        signed_headers=names,
        payload_sha256=payload,
    )
    sig = signature(
        keys.key(secret_key, date, region, service),
        string_to_sign(timestamp=timestamp, scope=scope, canonical=canonical),
    )
    out["authorization"] = (
        f"{ALGORITHM} Credential={access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={sig}"
    )
    return out
