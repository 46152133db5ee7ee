"""Short-lived credentials that carry themselves, for callers that traded a workload token
for them: AWS keys (STS ``AssumeRoleWithWebIdentity``) or a bearer token (Google's token
exchange, ``klsess.`` + the session token).

The session token *is* the session: the principal, the access key id, the secret and the
expiry, encrypted and authenticated (Fernet) under a key derived from the identity store's
key. Any keyledger process holding that key (every ``--workers`` worker, every replica)
verifies a session without shared state, and nobody without it can make or alter one. A
session is revoked before it expires by revoking its principal's sessions
(``keyledger identity revoke --sessions``): a cutoff in the identity store refuses those
issued before it.
"""

from __future__ import annotations

import base64
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyledger.model import Principal

__all__ = ["BEARER_PREFIX", "EXCHANGE_METHOD", "METHOD", "Session", "SessionSealer"]

METHOD = "sts-web-identity"
EXCHANGE_METHOD = "token-exchange"
# A bearer token that is a session (Google's token exchange answers with one).
BEARER_PREFIX = "klsess."
_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
# Bounds on a token keyledger will try to open: a caller sends it.
_MAX_TOKEN = 8192


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    access_key_id: str
    secret_access_key: str = field(repr=False)
    token: str = field(repr=False)
    expires: datetime
    issued: datetime


class SessionSealer:
    """Issues sessions and opens their tokens."""

    def __init__(
        self, store_key: bytes, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"keyledger session credentials v1",
        ).derive(store_key)
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))
        self._clock = clock

    def issue(self, principal: Principal, *, ttl: timedelta, method: str = METHOD) -> Session:
        access_key_id = "ASIA" + "".join(secrets.choice(_ALPHABET) for _ in range(16))
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        issued = self._clock().replace(microsecond=0)
        expires = issued + ttl
        sealed = {
            "k": access_key_id,
            "s": secret,
            "p": principal.id,
            "g": list(principal.groups),
            "a": dict(principal.attributes),
            "e": int(expires.timestamp()),
            "i": int(issued.timestamp()),
            "m": method,
        }
        token = self._fernet.encrypt(orjson.dumps(sealed)).decode()
        session_principal = Principal(
            id=principal.id,
            auth_method=method,
            groups=principal.groups,
            attributes=principal.attributes,
        )
        return Session(session_principal, access_key_id, secret, token, expires, issued)

    def open(self, token: str) -> Session | None:
        """The session ``token`` seals, or None when keyledger did not issue it (or it was
        altered). Expiry is the caller's to check: an expired session still opens."""
        if len(token) > _MAX_TOKEN:
            return None
        try:
            sealed = orjson.loads(self._fernet.decrypt(token.encode()))
            principal = Principal(
                id=str(sealed["p"]),
                auth_method=str(sealed.get("m", METHOD)),
                groups=tuple(str(g) for g in sealed["g"]),
                attributes={str(k): str(v) for k, v in sealed["a"].items()},
            )
            expires = datetime.fromtimestamp(int(sealed["e"]), UTC)
            # Sealed before sessions recorded it: as old as can be, so any cutoff covers it.
            issued = datetime.fromtimestamp(int(sealed.get("i", 0)), UTC)
            return Session(principal, str(sealed["k"]), str(sealed["s"]), token, expires, issued)
        except (InvalidToken, ValueError, KeyError, TypeError, AttributeError):
            return None

    def expired(self, session: Session) -> bool:
        return self._clock() >= session.expires
