"""The in-memory vault: secrets, their versions, soft delete, and the rules between them.

No wire format lives here: operations take names and plain values, return frozen snapshots,
and raise :mod:`.errors` the way Key Vault refuses. A lock makes one :class:`Store` safe to
seed or inspect from another thread while the server serves it.

Key Vault's rules kept here: names are case-insensitive (the casing the secret was first
set with is the one its ids show); every set makes a new version, the latest is the one
served without a version; getting a disabled version's value is refused, but its properties
can be updated (that is how it is enabled again); ``nbf`` and ``exp`` are informational (Key
Vault serves secrets outside that window too); deleting keeps every version for
:data:`RECOVERABLE_DAYS` until recovered or purged, and the name cannot be set meanwhile.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

import orjson

from keyledger.backends.azure.routes import valid_name
from keyledger.backends.azure_standin.errors import (
    BadParameter,
    Conflict,
    DeletedButRecoverable,
    DeletedSecretNotFound,
    InvalidName,
    MalformedBackup,
    SecretDisabled,
    SecretNotFound,
)

__all__ = [
    "MAX_VALUE_BYTES",
    "RECOVERABLE_DAYS",
    "RECOVERY_LEVEL",
    "Deleted",
    "Page",
    "Store",
    "Version",
]

# Key Vault's limit on a secret's value (25 KB, counted in bytes of its UTF-8 form).
MAX_VALUE_BYTES = 25 * 1024
# A vault with soft delete and without purge protection, Key Vault's default.
RECOVERY_LEVEL = "Recoverable+Purgeable"
RECOVERABLE_DAYS = 90
_DAY = 86400
# Tells the stand-in's backups from anything else a client may send to RestoreSecret.
_BACKUP_FORMAT = "keyledger-azure-standin-backup/1"
_VERSION_ID = re.compile(r"[0-9a-f]{32}")  # what set_secret makes: uuid4().hex
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Version:
    """One version of a secret; times are Unix seconds, as Key Vault writes them."""

    name: str
    version: str
    value: str = field(repr=False)
    content_type: str | None = None
    tags: Mapping[str, str] | None = None
    enabled: bool = True
    not_before: int | None = None
    expires: int | None = None
    created: int
    updated: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Deleted:
    """A soft-deleted secret: its latest version and when it goes for good."""

    latest: Version
    deleted_date: int
    scheduled_purge_date: int


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Up to a page of items; ``next_marker`` (None: the last page) resumes after them."""

    items: Sequence[T]
    next_marker: str | None


@dataclass(slots=True)
class _Secret:
    versions: list[Version]  # in creation order: the last one is the latest
    deleted: Deleted | None = None

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    def version(self, version: str) -> Version | None:
        wanted = version.lower()
        return next((v for v in self.versions if v.version == wanted), None)


def _key(name: str) -> str:
    if not valid_name(name):
        raise InvalidName(name)
    return name.lower()


def _page(items: Sequence[T], markers: Sequence[str], after: str | None, limit: int) -> Page[T]:
    """The ``limit`` items after the one whose marker is ``after`` (markers ascend)."""
    start = 0
    if after is not None:
        start = next((i for i, m in enumerate(markers) if m > after), len(markers))
    end = start + limit
    return Page(items[start:end], markers[end - 1] if end < len(items) else None)


class Store:
    """Every secret of one vault. ``clock`` gives the time (Unix seconds)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._secrets: dict[str, _Secret] = {}  # by lower-cased name

    def _now(self) -> int:
        return int(self._clock())

    def _live(self, name: str) -> _Secret:
        secret = self._secrets.get(_key(name))
        if secret is None or secret.deleted is not None:
            raise SecretNotFound(name)
        return secret

    def _deleted(self, name: str) -> _Secret:
        secret = self._secrets.get(_key(name))
        if secret is None or secret.deleted is None:
            raise DeletedSecretNotFound(name)
        return secret

    # Secrets and versions

    def set_secret(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
        enabled: bool | None = None,
        not_before: int | None = None,
        expires: int | None = None,
    ) -> Version:
        """Add ``value`` as the new latest version of ``name`` (created if missing)."""
        size = len(value.encode())
        if size > MAX_VALUE_BYTES:
            # The limit is Key Vault's; the code and wording are the stand-in's.
            raise BadParameter(
                f"The secret value is {size} bytes; Key Vault allows {MAX_VALUE_BYTES} at most."
            )
        with self._lock:
            key = _key(name)
            secret = self._secrets.get(key)
            if secret is not None and secret.deleted is not None:
                raise DeletedButRecoverable(secret.latest.name)
            now = self._now()
            made = Version(
                name=secret.latest.name if secret else name,
                version=uuid.uuid4().hex,
                value=value,
                content_type=content_type,
                tags=dict(tags) if tags is not None else None,
                enabled=True if enabled is None else enabled,
                not_before=not_before,
                expires=expires,
                created=now,
                updated=now,
            )
            if secret is None:
                self._secrets[key] = _Secret([made])
            else:
                secret.versions.append(made)
            return made

    def get_secret(self, name: str, version: str = "") -> Version:
        """The version (``""``: the latest) with its value; a disabled one is refused."""
        found = self.properties(name, version)
        if not found.enabled:
            raise SecretDisabled()
        return found

    def properties(self, name: str, version: str = "") -> Version:
        """The version (``""``: the latest), disabled or not."""
        with self._lock:
            secret = self._live(name)
            found = secret.version(version) if version else secret.latest
            if found is None:
                raise SecretNotFound(name, version)
            return found

    def update_secret(
        self,
        name: str,
        version: str = "",
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
        enabled: bool | None = None,
        not_before: int | None = None,
        expires: int | None = None,
    ) -> Version:
        """Change what is given (None: unchanged) of one version; tags are replaced whole."""
        with self._lock:
            secret = self._live(name)
            found = secret.version(version) if version else secret.latest
            if found is None:
                raise SecretNotFound(name, version)
            updated = replace(
                found,
                content_type=found.content_type if content_type is None else content_type,
                tags=found.tags if tags is None else dict(tags),
                enabled=found.enabled if enabled is None else enabled,
                not_before=found.not_before if not_before is None else not_before,
                expires=found.expires if expires is None else expires,
                updated=self._now(),
            )
            secret.versions[secret.versions.index(found)] = updated
            return updated

    def list_secrets(self, *, after: str | None = None, limit: int) -> Page[Version]:
        """The latest version of each live secret, by name."""
        with self._lock:
            keys = sorted(k for k, s in self._secrets.items() if s.deleted is None)
            return _page([self._secrets[k].latest for k in keys], keys, after, limit)

    def list_versions(self, name: str, *, after: str | None = None, limit: int) -> Page[Version]:
        """Every version of a live secret, oldest first (none if there is no such secret)."""
        with self._lock:
            secret = self._secrets.get(_key(name))
            if secret is None or secret.deleted is not None:
                return Page((), None)
            # Markers must ascend: the position, zero-padded, stands for each version.
            markers = [f"{i:08d}" for i in range(len(secret.versions))]
            return _page(list(secret.versions), markers, after, limit)

    # Soft delete

    def delete_secret(self, name: str) -> Deleted:
        """Delete every version; they are kept, recoverable, until purged."""
        with self._lock:
            secret = self._live(name)
            now = self._now()
            secret.deleted = Deleted(
                latest=secret.latest,
                deleted_date=now,
                scheduled_purge_date=now + RECOVERABLE_DAYS * _DAY,
            )
            return secret.deleted

    def get_deleted_secret(self, name: str) -> Deleted:
        with self._lock:
            deleted = self._deleted(name).deleted
            assert deleted is not None
            return deleted

    def list_deleted_secrets(self, *, after: str | None = None, limit: int) -> Page[Deleted]:
        with self._lock:
            found = {k: s.deleted for k, s in self._secrets.items() if s.deleted is not None}
            keys = sorted(found)
            return _page([found[k] for k in keys], keys, after, limit)

    def purge_deleted_secret(self, name: str) -> None:
        with self._lock:
            self._deleted(name)
            del self._secrets[_key(name)]

    def recover_deleted_secret(self, name: str) -> Version:
        """Undelete every version; answers the latest."""
        with self._lock:
            secret = self._secrets.get(_key(name))
            if secret is None or secret.deleted is None:
                # Key Vault words this one as a missing secret, not a missing deleted one.
                raise SecretNotFound(name)
            secret.deleted = None
            return secret.latest

    # Backup and restore

    def backup_secret(self, name: str) -> bytes:
        """An opaque blob of every version, values included, for :meth:`restore_secret`."""
        with self._lock:
            return _encode_backup(self._live(name).versions)

    def restore_secret(self, blob: bytes) -> Version:
        """Every version a backup holds, under its name; answers the latest."""
        versions = _decode_backup(blob)
        with self._lock:
            key = _key(versions[0].name)
            existing = self._secrets.get(key)
            if existing is not None and existing.deleted is not None:
                raise DeletedButRecoverable(existing.latest.name)
            if existing is not None:
                # The stand-in's wording: Key Vault restores only into a free name.
                raise Conflict(f"Secret {existing.latest.name} already exists in this vault.")
            self._secrets[key] = _Secret(list(versions))
            return versions[-1]


_FIELDS = ("version", "value", "content_type", "tags", "enabled", "not_before", "expires")


def _encode_backup(versions: Iterable[Version]) -> bytes:
    listed = list(versions)
    return orjson.dumps(
        {
            "format": _BACKUP_FORMAT,
            "name": listed[0].name,
            "versions": [
                {f: getattr(v, f) for f in (*_FIELDS, "created", "updated")} for v in listed
            ],
        }
    )


def _decode_backup(blob: bytes) -> tuple[Version, ...]:
    """The versions of a backup; anything else is :class:`MalformedBackup`."""
    try:
        parsed = orjson.loads(blob)
        if parsed.get("format") != _BACKUP_FORMAT or not valid_name(parsed["name"]):
            raise MalformedBackup()
        versions = tuple(
            Version(name=parsed["name"], **{k: v[k] for k in (*_FIELDS, "created", "updated")})
            for v in parsed["versions"]
        )
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise MalformedBackup() from exc
    if not versions or not all(_well_formed(v) for v in versions):
        raise MalformedBackup()
    return versions


def _well_formed(v: Version) -> bool:
    def optional(value: object, kind: type) -> bool:
        return value is None or (isinstance(value, kind) and not isinstance(value, bool))

    return (
        isinstance(v.version, str)
        and _VERSION_ID.fullmatch(v.version) is not None
        and isinstance(v.value, str)
        and isinstance(v.enabled, bool)
        and optional(v.content_type, str)
        and optional(v.not_before, int)
        and optional(v.expires, int)
        and isinstance(v.created, int)
        and isinstance(v.updated, int)
        and (
            v.tags is None
            or (
                isinstance(v.tags, dict)
                and all(isinstance(k, str) and isinstance(t, str) for k, t in v.tags.items())
            )
        )
    )
