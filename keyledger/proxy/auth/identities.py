"""Access keys keyledger issues to services, stored encrypted at rest.

SigV4 verification needs each key's secret itself (the client signs with it; we recompute),
so a hash will not do: secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under
a key that lives outside the store (an env var or a file), and the store file is 0600.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from keyledger.proxy.config import require_key

__all__ = [
    "Identity",
    "IdentityError",
    "IdentityStore",
    "IssuedKey",
    "load_store_key",
    "store_key_source",
]

_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
KEY_PREFIX = "AKKL"


class IdentityError(ValueError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    name: str
    access_key_id: str
    groups: tuple[str, ...] = ()
    # Facts policies can condition on (principal: {team: payments}), like OIDC claims.
    attributes: Mapping[str, str] = field(default_factory=dict)
    created: str = ""
    revoked: bool = False
    encrypted_secret: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """Returned once, when a key is created or rotated; the secret is shown only then."""

    name: str
    access_key_id: str
    secret_access_key: str = field(repr=False)


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


class IdentityStore:
    """A JSON file of identities; every write replaces the file atomically, mode 0600.

    ``key_source`` says where the key came from (see :func:`store_key_source`), so that an
    error about the key can name the place to fix.
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
        self._identities: dict[str, Identity] = {}
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
        version = self._stat()
        if version == self._version:
            return False
        if version is None:
            self._identities, self._version = {}, None
        else:
            self._load()
        return True

    def _load(self) -> None:
        version = self._stat()
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            items = doc["identities"]
            loaded = [
                Identity(
                    name=i["name"],
                    access_key_id=i["access_key_id"],
                    groups=tuple(i.get("groups", ())),
                    attributes={str(k): str(v) for k, v in i.get("attributes", {}).items()},
                    created=i.get("created", ""),
                    revoked=bool(i.get("revoked", False)),
                    encrypted_secret=i["secret"],
                )
                for i in items
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IdentityError(f"{self.path}: not a keyledger identity store ({exc})") from exc
        self._identities = {i.access_key_id: i for i in loaded}
        self._version = version

    def _check_key(self) -> None:
        """Refuse a write under a key other than the one the existing entries were written
        with: the proxy could then decrypt none of the keys it serves, or not the new one."""
        for identity in self._identities.values():
            try:
                self._fernet.decrypt(identity.encrypted_secret.encode())
            except InvalidToken:
                raise IdentityError(
                    f"the identity store {self.path} was written with a different key than "
                    f"the one from {self.key_source} (it cannot decrypt the key of "
                    f"{identity.name}); nothing was written. Use the key the store was "
                    "written with, the one the proxy serving it uses"
                ) from None

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write()
        except OSError as exc:
            raise IdentityError(
                f"cannot write the identity store {self.path}: {exc.strerror}"
            ) from exc

    def _write(self) -> None:
        doc = {
            "version": 1,
            "identities": [
                {
                    "name": i.name,
                    "access_key_id": i.access_key_id,
                    "groups": list(i.groups),
                    "attributes": dict(i.attributes),
                    "created": i.created,
                    "revoked": i.revoked,
                    "secret": i.encrypted_secret,
                }
                for i in self._identities.values()
            ],
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
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __iter__(self) -> Iterator[Identity]:
        return iter(sorted(self._identities.values(), key=lambda i: (i.name, i.created)))

    def by_key(self, access_key_id: str) -> Identity | None:
        return self._identities.get(access_key_id)

    def secret_of(self, identity: Identity) -> str:
        try:
            return self._fernet.decrypt(identity.encrypted_secret.encode()).decode()
        except InvalidToken as exc:
            raise IdentityError(
                f"cannot decrypt the key of {identity.name}: wrong identity store key?"
            ) from exc

    def create(
        self,
        name: str,
        *,
        groups: tuple[str, ...] = (),
        attributes: Mapping[str, str] | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> IssuedKey:
        if not name or any(c.isspace() or not c.isprintable() for c in name):
            raise IdentityError(f"identity name {name!r} must be printable with no spaces")
        if any(i.name == name and not i.revoked for i in self._identities.values()):
            raise IdentityError(f"identity {name!r} already has an active key; use rotate")
        self._check_key()
        key_id = access_key_id or KEY_PREFIX + "".join(
            secrets.choice(_KEY_ALPHABET) for _ in range(16)
        )
        secret = secret_access_key or "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        self._identities[key_id] = Identity(
            name=name,
            access_key_id=key_id,
            groups=groups,
            attributes=dict(attributes or {}),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            encrypted_secret=self._fernet.encrypt(secret.encode()).decode(),
        )
        self._save()
        return IssuedKey(name, key_id, secret)

    def revoke(self, name_or_key: str) -> list[Identity]:
        hits = [
            i
            for i in self._identities.values()
            if not i.revoked and name_or_key in (i.name, i.access_key_id)
        ]
        if not hits:
            raise IdentityError(f"no active identity or key named {name_or_key!r}")
        self._check_key()
        for identity in hits:
            self._identities[identity.access_key_id] = replace(identity, revoked=True)
        self._save()
        return hits

    def rotate(self, name: str) -> IssuedKey:
        """Issue a new key for ``name`` and revoke its old ones."""
        old = [i for i in self._identities.values() if i.name == name and not i.revoked]
        if not old:
            raise IdentityError(f"no active identity named {name!r}")
        self._check_key()  # before anything is revoked, even in memory
        for identity in old:
            self._identities[identity.access_key_id] = replace(identity, revoked=True)
        return self.create(name, groups=old[0].groups, attributes=old[0].attributes)
