"""The in-memory Secret Manager: secrets, their numbered versions, and the rules between them.

No wire format lives here: operations take resource names and plain values, return frozen
snapshots, and raise :mod:`.errors` the way Secret Manager refuses. Both transports (REST and
gRPC) share one :class:`Store`; a lock makes it safe to seed from another thread while serving.

Secrets live under a parent, ``projects/{p}`` (global) or ``projects/{p}/locations/{l}``
(regional); the two namespaces are separate, as in Google Cloud.
"""

from __future__ import annotations

import base64
import enum
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from secrets import token_hex
from typing import Generic, TypeVar

from google_crc32c import value as crc32c

from keyledger.backends.gcp_standin.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)

__all__ = [
    "MAX_PAGE_SIZE",
    "MAX_PAYLOAD_BYTES",
    "Page",
    "SecretView",
    "State",
    "Store",
    "VersionView",
]

MAX_PAYLOAD_BYTES = 65536
MAX_PAGE_SIZE = 25000
_PARENT = re.compile(r"projects/[^/]+(?:/locations/[^/]+)?")
_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SECRET = re.compile(rf"(?P<parent>{_PARENT.pattern})/secrets/(?P<id>[^/]+)")
_VERSION = re.compile(rf"(?P<secret>{_SECRET.pattern})/versions/(?P<version>[^/]+)")
T = TypeVar("T")


class State(enum.Enum):
    """A version's state; the values are ``SecretVersion.State``'s numbers."""

    ENABLED = 1
    DISABLED = 2
    DESTROYED = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretView:
    name: str
    create_time: datetime
    etag: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    # Opaque to the store: the transports echo back what the secret was created with.
    replication: bytes | None
    iam_policy: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionView:
    name: str
    number: int
    state: State
    create_time: datetime
    etag: str
    client_specified_payload_checksum: bool
    destroy_time: datetime | None = None
    payload: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_page_token: str
    total_size: int


@dataclass(slots=True)
class _Secret:
    view: SecretView
    versions: list[VersionView] = field(default_factory=list)


def _etag() -> str:
    return f'"{token_hex(8)}"'


def _now() -> datetime:
    return datetime.now(UTC)


class Store:
    """Every secret of every project, in creation order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, _Secret] = {}

    # Secrets

    def create_secret(
        self,
        parent: str,
        secret_id: str,
        *,
        replication: bytes | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> SecretView:
        if not _PARENT.fullmatch(parent):
            raise InvalidArgument(f"Invalid parent: {parent!r} (projects/{{p}}[/locations/{{l}}])")
        if not _SECRET_ID.fullmatch(secret_id):
            raise InvalidArgument(
                f"Invalid secret_id: {secret_id!r} (1 to 255 letters, digits, '-' or '_')"
            )
        view = SecretView(
            name=f"{parent}/secrets/{secret_id}",
            create_time=_now(),
            etag=_etag(),
            labels=dict(labels or {}),
            annotations=dict(annotations or {}),
            replication=replication,
        )
        with self._lock:
            if view.name in self._secrets:
                raise AlreadyExists(f"Secret [{view.name}] already exists.")
            self._secrets[view.name] = _Secret(view)
        return view

    def get_secret(self, name: str) -> SecretView:
        with self._lock:
            return self._secret(name).view

    def list_secrets(
        self, parent: str, *, page_size: int = 0, page_token: str = "", filter: str = ""
    ) -> Page[SecretView]:
        if not _PARENT.fullmatch(parent):
            raise InvalidArgument(f"Invalid parent: {parent!r}")
        keep = _secret_filter(filter)
        with self._lock:
            found = [
                s.view
                for s in self._secrets.values()
                if s.view.name.rsplit("/secrets/", 1)[0] == parent and keep(s.view)
            ]
        return _page(found, page_size, page_token)

    def update_secret(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        iam_policy: bytes | None = None,
        etag: str = "",
    ) -> SecretView:
        """Replace the given fields (``None`` leaves one as it is) and give a new etag."""
        with self._lock:
            secret = self._secret(name)
            _check_etag(etag, secret.view.etag, name)
            changes: dict[str, object] = {"etag": _etag()}
            if labels is not None:
                changes["labels"] = dict(labels)
            if annotations is not None:
                changes["annotations"] = dict(annotations)
            if iam_policy is not None:
                changes["iam_policy"] = iam_policy
            secret.view = replace(secret.view, **changes)  # type: ignore[arg-type]
            return secret.view

    def delete_secret(self, name: str, *, etag: str = "") -> None:
        with self._lock:
            secret = self._secret(name)
            _check_etag(etag, secret.view.etag, name)
            del self._secrets[name]

    # Versions

    def add_version(
        self, parent: str, data: bytes, *, crc32c_given: int | None = None
    ) -> VersionView:
        """Store ``data`` as the next version, refusing it if ``crc32c_given`` disagrees."""
        if len(data) > MAX_PAYLOAD_BYTES:
            raise InvalidArgument(f"Secret payload is larger than {MAX_PAYLOAD_BYTES} bytes.")
        if crc32c_given is not None and crc32c_given != crc32c(data):
            raise InvalidArgument(
                "Data integrity check failed: payload.data_crc32c does not match the payload."
            )
        with self._lock:
            secret = self._secret(parent)
            number = secret.versions[-1].number + 1 if secret.versions else 1
            version = VersionView(
                name=f"{parent}/versions/{number}",
                number=number,
                state=State.ENABLED,
                create_time=_now(),
                etag=_etag(),
                client_specified_payload_checksum=crc32c_given is not None,
                payload=data,
            )
            secret.versions.append(version)
            return version

    def get_version(self, name: str) -> VersionView:
        with self._lock:
            return self._version(name)[1]

    def access_version(self, name: str) -> VersionView:
        """The version with its payload; only an enabled version can be read."""
        with self._lock:
            version = self._version(name)[1]
        if version.state is not State.ENABLED:
            raise FailedPrecondition(
                f"Secret Version [{version.name}] is in {version.state.name} state."
            )
        return version

    def list_versions(
        self, parent: str, *, page_size: int = 0, page_token: str = "", filter: str = ""
    ) -> Page[VersionView]:
        """Newest first, as Secret Manager lists them."""
        keep = _version_filter(filter)
        with self._lock:
            found = [v for v in reversed(self._secret(parent).versions) if keep(v)]
        return _page(found, page_size, page_token)

    def set_state(self, name: str, state: State, *, etag: str = "") -> VersionView:
        """Enable, disable or destroy a version; a destroyed one stays destroyed."""
        with self._lock:
            secret, version = self._version(name)
            _check_etag(etag, version.etag, version.name)
            if version.state is State.DESTROYED:
                raise FailedPrecondition(f"Secret Version [{version.name}] is in DESTROYED state.")
            changes: dict[str, object] = {"state": state, "etag": _etag()}
            if state is State.DESTROYED:
                changes.update(destroy_time=_now(), payload=b"")
            updated = replace(version, **changes)  # type: ignore[arg-type]
            secret.versions[secret.versions.index(version)] = updated
            return updated

    # Lookups (under the lock)

    def _secret(self, name: str) -> _Secret:
        if not _SECRET.fullmatch(name):
            raise InvalidArgument(f"Invalid secret name: {name!r}")
        try:
            return self._secrets[name]
        except KeyError:
            raise NotFound(f"Secret [{name}] not found or has no versions.") from None

    def _version(self, name: str) -> tuple[_Secret, VersionView]:
        match = _VERSION.fullmatch(name)
        if not match:
            raise InvalidArgument(f"Invalid secret version name: {name!r}")
        secret = self._secret(match["secret"])
        wanted = match["version"]
        if wanted == "latest" and secret.versions:
            return secret, secret.versions[-1]
        for version in secret.versions:
            if str(version.number) == wanted:
                return secret, version
        raise NotFound(f"Secret Version [{name}] not found.")


def _check_etag(given: str, current: str, name: str) -> None:
    # Google compares etags only when the caller sends one.
    if given and given != current:
        raise FailedPrecondition(f"The etag {given} does not match the current etag of [{name}].")


def _page(items: Sequence[T], page_size: int, page_token: str) -> Page[T]:
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative.")
    size = min(page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    start = _offset(page_token)
    end = start + size
    token = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else ""
    return Page(items[start:end], token, len(items))


def _offset(page_token: str) -> int:
    if not page_token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(page_token.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument(f"Invalid page_token: {page_token!r}") from None


# Filters: the stand-in knows a few of Google's list-filter terms, joined by AND (spaces).
# An unknown term is refused rather than ignored, so a test never passes by matching all.
_LABEL_TERM = re.compile(r"labels\.(?P<key>[\w-]+)(?P<op>[:=])(?P<value>.+)")


def _terms(filter: str) -> list[str]:
    return [t for t in filter.split() if t != "AND"]


def _name_contains(part: str) -> Callable[[SecretView], bool]:
    return lambda secret: part in secret.name.rsplit("/", 1)[1]


def _label(key: str, value: str | None) -> Callable[[SecretView], bool]:
    """The label is set (``value`` None) or set to ``value``."""
    if value is None:
        return lambda secret: key in secret.labels
    return lambda secret: secret.labels.get(key) == value


def _secret_filter(filter: str) -> Callable[[SecretView], bool]:
    checks: list[Callable[[SecretView], bool]] = []
    for term in _terms(filter):
        if term.startswith("name:"):
            checks.append(_name_contains(term.removeprefix("name:")))
        elif match := _LABEL_TERM.fullmatch(term):
            any_value = match["op"] == ":" and match["value"] == "*"
            checks.append(_label(match["key"], None if any_value else match["value"]))
        else:
            raise InvalidArgument(
                f"Unsupported filter term {term!r}: the stand-in knows name:TEXT, "
                "labels.KEY=VALUE and labels.KEY:*"
            )
    return lambda secret: all(check(secret) for check in checks)


def _version_filter(filter: str) -> Callable[[VersionView], bool]:
    states: list[State] = []
    for term in _terms(filter):
        key, _, value = term.replace("=", ":", 1).partition(":")
        if key != "state" or value not in State.__members__:
            raise InvalidArgument(
                f"Unsupported filter term {term!r}: the stand-in knows state:ENABLED|DISABLED|"
                "DESTROYED"
            )
        states.append(State[value])
    return lambda v: all(v.state is s for s in states)
