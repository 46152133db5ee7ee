"""Credentials keyledger issues to services, in one store file per deployment.

An identity (a name, its groups and attributes) may hold two kinds of credential side by
side, at most one active of each kind:

- **SigV4 access keys** (``AKKL...``). Verification needs each key's secret itself (the
  client signs with it; we recompute), so a hash will not do: secrets are encrypted with
  Fernet (AES-128-CBC + HMAC-SHA256) under a key that lives outside the store (an env var or
  a file).
- **Bearer tokens** (``kltok_<id>_<secret>``, the id naming it in lists and audit events).
  The proxy only needs to recognise a token, so only its SHA-256 is kept. A plain hash is
  enough because the secret part is 256 random bits: there is no dictionary to try and
  nothing a salt or a slow KDF would add; and unlike an HMAC it leaves tokens valid when the
  store key changes.

The file is 0600 JSON::

    {"version": 1,
     "identities": [{name, access_key_id, groups, attributes, created, revoked, secret}],
     "tokens": [{name, token_id, groups, attributes, created, expires, revoked, sha256}],
     "key_check": "<Fernet token>"}

A long-running reader (the proxy) looks at the file again at most once a second, and does so
off its event loop: the stat, the read and the parse run in a worker thread (so do the
authenticator's decryptions), and only the finished contents are put in place on the loop,
so a slow disk or a huge store never stalls the requests being served.

``identities`` (the SigV4 keys) is unchanged from stores written before tokens existed, so
a proxy of that age still reads a new file; ``tokens`` and ``key_check`` are optional, so an
old file loads here. ``key_check`` is a value encrypted under the store key, so that a write
under another key is refused even when the store holds tokens only.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import os
import re
import secrets
import string
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import structlog
from cryptography.fernet import Fernet, InvalidToken

from keyledger.proxy.config import require_key

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "RELOAD_INTERVAL_S",
    "Credential",
    "Identity",
    "IdentityError",
    "IdentityStore",
    "IssuedKey",
    "IssuedToken",
    "SessionCutoff",
    "StoreFollower",
    "Token",
    "load_store_key",
    "parse_lifetime",
    "store_key_source",
    "token_digest",
    "token_id_of",
]

log = structlog.get_logger("keyledger.auth")

_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
KEY_PREFIX = "AKKL"
TOKEN_PREFIX = "kltok_"  # noqa: S105 (what every token starts with)
_TOKEN_ID_ALPHABET = string.ascii_lowercase + string.digits
# kltok_ + a 12-character id (62 bits: unique, not secret) + _ + 32 random bytes, base64url.
_TOKEN = re.compile(r"(kltok_[a-z0-9]{12})_[A-Za-z0-9_-]{43}")
_KEY_CHECK = b"keyledger identity store"

# Security teams want tokens to die by themselves; `--expires never` opts out, visibly.
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)
_MAX_LIFETIME = timedelta(days=3650)
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}

# How often a long-running reader looks at the file for changes `keyledger identity` made.
RELOAD_INTERVAL_S = 1.0


class IdentityError(ValueError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class _Held:
    """What every credential records: whose it is, and who issued and revoked it when."""

    name: str
    groups: tuple[str, ...] = ()
    # Facts policies can condition on (principal: {team: payments}), like OIDC claims.
    attributes: Mapping[str, str] = field(default_factory=dict)
    created: str = ""
    created_by: str = ""  # who ran the command, as the CLI saw it (see actor())
    expires: datetime | None = None  # None: never
    revoked: bool = False
    revoked_at: str = ""
    revoked_by: str = ""

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def status(self, now: datetime) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if self.expired(now) else "active"


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity(_Held):
    """A SigV4 access key and the identity it belongs to."""

    kind: ClassVar[str] = "sigv4"

    access_key_id: str
    encrypted_secret: str = field(default="", repr=False)

    @property
    def credential_id(self) -> str:
        return self.access_key_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Token(_Held):
    """A bearer token (its id and hash, never the token) and the identity it belongs to."""

    kind: ClassVar[str] = "token"

    token_id: str
    digest: bytes = field(default=b"", repr=False)  # SHA-256 of the whole token

    @property
    def credential_id(self) -> str:
        return self.token_id


@dataclass(frozen=True, slots=True)
class SessionCutoff:
    """Sessions and workload tokens of the principals ``pattern`` matches (a name, or a glob
    with ``*``) issued before ``before`` are refused: sealed sessions carry themselves, so
    this is how one is revoked before it expires."""

    pattern: str
    before: datetime
    by: str = ""

    def covers(self, principal_id: str) -> bool:
        return fnmatch.fnmatchcase(principal_id, self.pattern)


Credential = Identity | Token


@dataclass(frozen=True, slots=True)
class _Contents:
    """One version of the store file, read and parsed (anywhere), put in place on one."""

    version: tuple[int, int] | None  # (mtime_ns, inode) as stat'ed before reading
    identities: dict[str, Identity]
    tokens: dict[str, Token]
    cutoffs: dict[str, SessionCutoff]
    key_check: str | None


_GONE = _Contents(None, {}, {}, {}, None)  # the file was removed


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """Returned once, when a key is created or rotated; the secret is shown only then."""

    name: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    expires: datetime | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """Returned once, when a token is created or rotated; the token is shown only then."""

    name: str
    token_id: str
    token: str = field(repr=False)
    expires: datetime | None


def token_id_of(text: str) -> str | None:
    """The id of a well-formed keyledger token, else None."""
    match = _TOKEN.fullmatch(text)
    return match.group(1) if match else None


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_lifetime(text: str) -> timedelta | None:
    """``90d``, ``12h``, ``30m`` as a timedelta; ``never`` as None."""
    if text == "never":
        return None
    match = re.fullmatch(r"([1-9][0-9]{0,6})([dhm])", text)
    if match is None:
        raise IdentityError(
            f"expected a duration like 90d, 12h or 30m, or never; not {text[:40]!r}"
        )
    lifetime = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if lifetime > _MAX_LIFETIME:
        raise IdentityError(f"{text} is more than {_MAX_LIFETIME.days}d; say never if you mean it")
    return lifetime


def load_store_key(*, env: str | None, file: Path | None) -> bytes:
    """The Fernet key that encrypts the identity store, from a file or an env var."""
    return require_key(
        env=env,
        file=file,
        setting="identity key file",
        missing=f"no identity store key: set {env or 'an env var'} or identities.key_file "
        "(make one with: python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())')",
        error=IdentityError,
    )


def store_key_source(*, env: str | None, file: Path | None) -> str:
    """Where :func:`load_store_key` takes the key from, as a user would look for it."""
    return f"the file {file}" if file is not None else f"the env var {env}"


def _new_token_id() -> str:
    return TOKEN_PREFIX + "".join(secrets.choice(_TOKEN_ID_ALPHABET) for _ in range(12))


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class IdentityStore:
    """A JSON file of identities; every write replaces the file atomically, mode 0600.

    ``key_source`` says where the key came from (see :func:`store_key_source`), so that an
    error about the key can name the place to fix. ``generation`` counts the contents this
    object has held (loads and its own writes), for readers that cache what they derive.
    """

    def __init__(self, path: Path, key: bytes, *, key_source: str = "the caller") -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise IdentityError(
                f"the identity store key from {key_source} must be a Fernet key (32 url-safe "
                "base64 bytes)"
            ) from exc
        self.path = path
        self.key_source = key_source
        self.generation = 0
        self._identities: dict[str, Identity] = {}
        self._tokens: dict[str, Token] = {}
        self._cutoffs: dict[str, SessionCutoff] = {}
        self._key_check: str | None = None
        self._version: tuple[int, int] | None = None
        if path.exists():
            self._load()

    def _stat(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_mtime_ns, info.st_ino

    def reload_if_changed(self) -> bool:
        """Re-read the file if another process replaced it; True when it did."""
        found = self._read_if_changed(self._version)
        if found is None:
            return False
        self._put(found)
        return True

    async def reload_in_thread(self) -> bool:
        """:meth:`reload_if_changed`, its stat, read and parse in a worker thread: only
        putting the result in place happens on the calling (event loop) thread."""
        found = await asyncio.to_thread(self._read_if_changed, self._version)
        if found is None or found.version == self._version:
            return False  # unchanged, or another reader put this version in place meanwhile
        self._put(found)
        return True

    def _read_if_changed(self, seen: tuple[int, int] | None) -> _Contents | None:
        """The file's contents if its version is not ``seen``, else None. Reads no state
        another thread could be changing: safe in a worker thread."""
        version = self._stat()
        if version == seen:
            return None
        return _GONE if version is None else self._read()

    def _put(self, contents: _Contents) -> None:
        self._identities, self._tokens = contents.identities, contents.tokens
        self._cutoffs, self._key_check = contents.cutoffs, contents.key_check
        self._version = contents.version
        self.generation += 1

    def _load(self) -> None:
        self._put(self._read())

    def _read(self) -> _Contents:
        version = self._stat()
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            keys = [
                Identity(
                    **_held_from(i), access_key_id=i["access_key_id"], encrypted_secret=i["secret"]
                )
                for i in doc["identities"]
            ]
            tokens = [
                Token(**_held_from(t), token_id=t["token_id"], digest=_sha256(t["sha256"]))
                for t in doc.get("tokens", ())
            ]
            cutoffs = [
                SessionCutoff(str(c["pattern"]), _timestamp(c["before"]), str(c.get("by", "")))
                for c in doc.get("session_cutoffs", ())
            ]
            key_check = doc.get("key_check")
            if key_check is not None and not isinstance(key_check, str):
                raise ValueError("key_check is not a string")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IdentityError(f"{self.path}: not a keyledger identity store ({exc})") from exc
        return _Contents(
            version,
            {i.access_key_id: i for i in keys},
            {t.token_id: t for t in tokens},
            {c.pattern: c for c in cutoffs},
            key_check,
        )

    def _check_key(self) -> None:
        """Refuse a write under a key other than the one the existing entries were written
        with: the proxy could then decrypt none of the keys it serves, or not the new one."""
        for identity in self._identities.values():
            try:
                self._fernet.decrypt(identity.encrypted_secret.encode())
            except InvalidToken:
                raise self._other_key(f"the key of {identity.name}") from None
        if self._key_check is not None:
            try:
                self._fernet.decrypt(self._key_check.encode())
            except InvalidToken:
                raise self._other_key("its key_check value") from None

    def _other_key(self, what: str) -> IdentityError:
        return IdentityError(
            f"the identity store {self.path} was written with a different key than the one "
            f"from {self.key_source} (it cannot decrypt {what}); nothing was written. Use the "
            "key the store was written with, the one the proxy serving it uses"
        )

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write()
        except OSError as exc:
            raise IdentityError(
                f"cannot write the identity store {self.path}: {exc.strerror}"
            ) from exc

    def _write(self) -> None:
        # Every write follows _check_key: the current key is the store's key.
        if self._key_check is None:
            self._key_check = self._fernet.encrypt(_KEY_CHECK).decode()
        doc = {
            "version": 1,
            "identities": [
                {**_held_json(i), "access_key_id": i.access_key_id, "secret": i.encrypted_secret}
                for i in self._identities.values()
            ],
            "tokens": [
                {**_held_json(t), "token_id": t.token_id, "sha256": t.digest.hex()}
                for t in self._tokens.values()
            ],
            "session_cutoffs": [
                {"pattern": c.pattern, "before": c.before.isoformat(), "by": c.by}
                for c in self._cutoffs.values()
            ],
            "key_check": self._key_check,
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".identities-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(doc, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            self._version = self._stat()
            self.generation += 1
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- reading ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Identity]:
        """The SigV4 keys, active and revoked."""
        return iter(sorted(self._identities.values(), key=lambda i: (i.name, i.created)))

    def tokens(self) -> Iterator[Token]:
        """The bearer tokens, active, expired and revoked."""
        return iter(sorted(self._tokens.values(), key=lambda t: (t.name, t.created)))

    def credentials(self) -> list[Credential]:
        """Keys and tokens, by identity name, then age."""
        both: list[Credential] = [*self._identities.values(), *self._tokens.values()]
        return sorted(both, key=lambda c: (c.name, c.created, c.kind))

    def by_key(self, access_key_id: str) -> Identity | None:
        return self._identities.get(access_key_id)

    def by_token_id(self, token_id: str) -> Token | None:
        return self._tokens.get(token_id)

    def holds(self, name: str) -> bool:
        """Whether ``name`` has an unrevoked key or token (is an identity in use)."""
        return self._profile(name) is not None

    def secret_of(self, identity: Identity) -> str:
        try:
            return self._fernet.decrypt(identity.encrypted_secret.encode()).decode()
        except InvalidToken as exc:
            raise IdentityError(
                f"cannot decrypt the key of {identity.name}: wrong identity store key?"
            ) from exc

    def _profile(self, name: str) -> tuple[tuple[str, ...], Mapping[str, str]] | None:
        """The groups and attributes of an identity in use: its newest unrevoked credential's."""
        held = [c for c in self.credentials() if c.name == name and not c.revoked]
        return (held[-1].groups, held[-1].attributes) if held else None

    # -- writing ---------------------------------------------------------------------------

    def _identity_for(
        self, name: str, groups: tuple[str, ...], attributes: Mapping[str, str] | None
    ) -> tuple[tuple[str, ...], dict[str, str]]:
        """The groups and attributes a new credential of ``name`` gets.

        Groups and attributes belong to the identity: a credential added to one in use
        shares them, and may not quietly change what its other credentials are allowed.
        """
        if not name or any(c.isspace() or not c.isprintable() for c in name):
            raise IdentityError(f"identity name {name!r} must be printable with no spaces")
        wanted = dict(attributes or {})
        profile = self._profile(name)
        if profile is None:
            return groups, wanted
        held_groups, held_attributes = profile
        if (groups or wanted) and (groups, wanted) != (held_groups, dict(held_attributes)):
            shown = ",".join(held_groups) or "none"
            facts = ",".join(f"{k}={v}" for k, v in held_attributes.items()) or "none"
            raise IdentityError(
                f"identity {name!r} already exists with groups {shown} and attributes "
                f"{facts}; a credential added to it shares them: leave out --group and --attr"
            )
        return held_groups, dict(held_attributes)

    def create(
        self,
        name: str,
        *,
        groups: tuple[str, ...] = (),
        attributes: Mapping[str, str] | None = None,
        lifetime: timedelta | None = None,
        by: str = "",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> IssuedKey:
        """Issue a SigV4 key: for a new identity, or next to the tokens of one in use.

        ``lifetime`` None: the key lives until revoked, as AWS access keys do.
        """
        now = _now()
        if any(i.name == name and i.status(now) == "active" for i in self._identities.values()):
            raise IdentityError(f"identity {name!r} already has an active key; use rotate")
        groups, facts = self._identity_for(name, groups, attributes)
        self._check_key()
        return self._issue_key(
            name,
            groups,
            facts,
            lifetime=lifetime,
            by=by,
            key_id=access_key_id,
            secret=secret_access_key,
        )

    def _issue_key(
        self,
        name: str,
        groups: tuple[str, ...],
        attributes: Mapping[str, str],
        *,
        lifetime: timedelta | None,
        by: str,
        key_id: str | None = None,
        secret: str | None = None,
    ) -> IssuedKey:
        now = _now()
        key_id = key_id or KEY_PREFIX + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
        secret = secret or "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        expires = now + lifetime if lifetime is not None else None
        self._identities[key_id] = Identity(
            name=name,
            access_key_id=key_id,
            groups=groups,
            attributes=dict(attributes),
            created=now.isoformat(),
            created_by=by,
            expires=expires,
            encrypted_secret=self._fernet.encrypt(secret.encode()).decode(),
        )
        self._save()
        return IssuedKey(name, key_id, secret, expires)

    def create_token(
        self,
        name: str,
        *,
        groups: tuple[str, ...] = (),
        attributes: Mapping[str, str] | None = None,
        lifetime: timedelta | None = DEFAULT_TOKEN_LIFETIME,
        by: str = "",
    ) -> IssuedToken:
        """Issue a bearer token: for a new identity, or next to the key of one in use.

        ``lifetime`` None: the token never expires. An expired token does not count as
        active: a new one may be created beside it.
        """
        now = _now()
        if any(t.name == name and t.status(now) == "active" for t in self._tokens.values()):
            raise IdentityError(
                f"identity {name!r} already has an active token; use rotate --token"
            )
        groups, facts = self._identity_for(name, groups, attributes)
        self._check_key()
        return self._issue_token(name, groups, facts, lifetime=lifetime, by=by)

    def _issue_token(
        self,
        name: str,
        groups: tuple[str, ...],
        attributes: Mapping[str, str],
        *,
        lifetime: timedelta | None,
        by: str,
    ) -> IssuedToken:
        now = _now()
        token_id = _new_token_id()
        while token_id in self._tokens:  # 62 bits: a repeat is a curiosity, not a risk
            token_id = _new_token_id()
        token = f"{token_id}_{secrets.token_urlsafe(32)}"
        expires = now + lifetime if lifetime is not None else None
        self._tokens[token_id] = Token(
            name=name,
            token_id=token_id,
            groups=groups,
            attributes=dict(attributes),
            created=now.isoformat(),
            created_by=by,
            expires=expires,
            digest=token_digest(token),
        )
        self._save()
        return IssuedToken(name, token_id, token, expires)

    def revoke(self, name_or_id: str, *, by: str = "") -> list[Credential]:
        """Revoke every key and token of an identity, or the one key or token named.

        A whole token is taken as its id, so a leaked one can be revoked as found (and is
        never repeated in a message).
        """
        wanted = token_id_of(name_or_id) or name_or_id
        hits: list[Credential] = [
            c for c in self.credentials() if not c.revoked and wanted in (c.name, c.credential_id)
        ]
        if not hits:
            raise IdentityError(f"no active identity, key or token named {wanted!r}")
        self._check_key()
        self._retire(hits, overlap=None, by=by)
        self._save()
        return hits

    def _retire(
        self, credentials: Iterable[Credential], *, overlap: timedelta | None, by: str
    ) -> None:
        """Revoke ``credentials`` now or, with ``overlap``, let them expire at its end (or
        sooner, if they would anyway)."""
        now = _now()
        for old in credentials:
            if overlap is None:
                retired = replace(old, revoked=True, revoked_at=now.isoformat(), revoked_by=by)
            else:
                ends = now + overlap
                retired = replace(old, expires=min(ends, old.expires or ends))
            if isinstance(retired, Token):
                self._tokens[retired.token_id] = retired
            else:
                self._identities[retired.access_key_id] = retired

    def rotate(
        self,
        name: str,
        *,
        overlap: timedelta | None = None,
        lifetime: timedelta | None = None,
        by: str = "",
    ) -> IssuedKey:
        """Issue a new key for ``name``; its old ones are revoked now, or with ``overlap``
        keep working that long (while every service picks up the new one)."""
        old = [i for i in self._identities.values() if i.name == name and not i.revoked]
        if not old:
            raise self._nothing_to_rotate(name, "an access key", "")
        self._check_key()  # before anything is revoked, even in memory
        self._retire(old, overlap=overlap, by=by)
        return self._issue_key(name, old[0].groups, old[0].attributes, lifetime=lifetime, by=by)

    def rotate_token(
        self,
        name: str,
        *,
        overlap: timedelta | None = None,
        lifetime: timedelta | None = DEFAULT_TOKEN_LIFETIME,
        by: str = "",
    ) -> IssuedToken:
        """Issue a new token for ``name``; its old ones (expired ones too) are revoked now,
        or with ``overlap`` keep working that long."""
        old = [t for t in self._tokens.values() if t.name == name and not t.revoked]
        if not old:
            raise self._nothing_to_rotate(name, "a token", " --token")
        self._check_key()  # before anything is revoked, even in memory
        self._retire(old, overlap=overlap, by=by)
        return self._issue_token(name, old[0].groups, old[0].attributes, lifetime=lifetime, by=by)

    # -- sessions --------------------------------------------------------------------------

    def revoke_sessions(self, pattern: str, *, by: str = "") -> SessionCutoff:
        """Refuse, from now on, every session and workload token issued before now to the
        principals ``pattern`` matches. Later ones work: revoke the workload's trust at its
        issuer (or the policy) to keep it out for good."""
        if not pattern or any(c.isspace() or not c.isprintable() for c in pattern):
            raise IdentityError(f"principal {pattern!r} must be printable with no spaces")
        self._check_key()
        # Whole seconds (a JWT's iat has no more): all of this second counts as before.
        cutoff = SessionCutoff(pattern, _now() + timedelta(seconds=1), by)
        self._cutoffs[pattern] = cutoff
        self._save()
        return cutoff

    def session_cutoffs(self) -> list[SessionCutoff]:
        return sorted(self._cutoffs.values(), key=lambda c: c.pattern)

    def sessions_revoked(self, principal_id: str, issued: datetime) -> bool:
        """Whether a session or workload token issued to ``principal_id`` at ``issued`` was
        revoked (by :meth:`revoke_sessions`)."""
        return any(issued < c.before and c.covers(principal_id) for c in self._cutoffs.values())

    def _nothing_to_rotate(self, name: str, what: str, flag: str) -> IdentityError:
        if not self.holds(name):
            return IdentityError(f"no active identity named {name!r}")
        return IdentityError(
            f"identity {name!r} has no {what.split(' ', 1)[1]} to rotate; issue {what} with: "
            f"keyledger identity create {name}{flag}"
        )


class StoreFollower:
    """Keeps one long-running reader of a store in step with the file.

    :meth:`refresh` looks at the file at most once per ``interval`` seconds, in a worker
    thread, and awaits ``on_change`` when the store's content changed since this follower
    last looked, whoever re-read it: the SigV4 and bearer authenticators may share one store.
    Callers arriving while a look is under way wait for that same look, so the first request
    after a change is already decided by it. A file that does not load (half-written,
    corrupt) leaves the last good content in place: it must not lock everyone out.
    """

    def __init__(
        self,
        store: IdentityStore,
        *,
        on_change: Callable[[], Awaitable[None]] | None = None,
        interval: float = RELOAD_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._on_change = on_change
        self._interval = interval
        self._clock = clock
        self._checked = clock()
        self._seen = store.generation
        self._looking: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Cheap (no I/O, no await) unless a look is due or under way."""
        if self._looking is None:
            now = self._clock()
            if now - self._checked < self._interval:
                return
            self._checked = now
            self._looking = asyncio.create_task(self._look())
            self._looking.add_done_callback(self._looked)
        # Shielded: a caller that goes away (a dropped connection) does not cancel the look.
        await asyncio.shield(self._looking)

    def _looked(self, task: asyncio.Task[None]) -> None:
        if self._looking is task:
            self._looking = None

    async def _look(self) -> None:
        store = self._store
        try:
            if await store.reload_in_thread():
                log.info(
                    "identities_reloaded",
                    keys=sum(not i.revoked for i in store),
                    tokens=sum(not t.revoked for t in store.tokens()),
                )
            if store.generation != self._seen:
                self._seen = store.generation  # first: a failing on_change is not retried
                if self._on_change is not None:
                    await self._on_change()
        except IdentityError as exc:
            log.error("identities_reload_failed", error=str(exc))


def _held_from(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every credential shares, from its JSON entry."""
    attributes = entry.get("attributes", {})
    expires = entry.get("expires")
    return {
        "name": str(entry["name"]),
        "groups": tuple(str(g) for g in entry.get("groups", ())),
        "attributes": {str(k): str(v) for k, v in attributes.items()},
        "created": str(entry.get("created", "")),
        "created_by": str(entry.get("created_by", "")),
        "expires": None if expires is None else _timestamp(expires),
        "revoked": bool(entry.get("revoked", False)),
        "revoked_at": str(entry.get("revoked_at", "")),
        "revoked_by": str(entry.get("revoked_by", "")),
    }


def _held_json(credential: _Held) -> dict[str, object]:
    """The fields every credential shares, as JSON; those at their default left out, so an
    entry keeps the shape older proxies wrote (and read: they ignore what they don't know)."""
    entry: dict[str, object] = {
        "name": credential.name,
        "groups": list(credential.groups),
        "attributes": dict(credential.attributes),
        "created": credential.created,
        "revoked": credential.revoked,
    }
    if credential.expires is not None:
        entry["expires"] = credential.expires.isoformat()
    optional = ("created_by", "revoked_at", "revoked_by")
    entry.update(
        (name, getattr(credential, name)) for name in optional if getattr(credential, name)
    )
    return entry


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a timestamp")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return moment


def _sha256(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise ValueError("a token's sha256 is not 64 hex digits")
    return bytes.fromhex(value)
