"""Key Vault's secrets operations on a :class:`.store.Store`, one handler per operationId.

A :class:`Call` is a request already authenticated and routed (by
:func:`keyledger.backends.azure.routes.route_for`); its answer is a status and a JSON body.
No HTTP here, so every operation can be driven without a server.

Listings page as Key Vault does: ``maxresults`` 1 to 25 (25 when not given), and a
``nextLink`` back to the vault's own URL carrying ``api-version``, an opaque ``$skiptoken``
and the page size; the last page has ``"nextLink": null``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from keyledger.backends.azure.routes import MAX_PAGE_SIZE, OPERATIONS, Route
from keyledger.backends.azure_standin import wire
from keyledger.backends.azure_standin.errors import BadParameter
from keyledger.backends.azure_standin.store import Store

__all__ = ["Answer", "Call", "Operations"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One routed request: ``vault`` is the scheme and host it was sent to."""

    route: Route
    vault: str
    api_version: str
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = field(default=b"", repr=False)

    @property
    def name(self) -> str:
        if self.route.name is None:
            raise TypeError(f"{self.route.operation.name} takes no secret name")
        return self.route.name


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any] | None = field(default=None, repr=False)  # None: no body (204)


class _Paging:
    """The page size and the resume marker a listing call asks for, and its next link."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self.size = self._size(call.query.get("maxresults"))
        self.after = self._marker(call.query.get("$skiptoken"))

    @staticmethod
    def _size(text: str | None) -> int:
        if text is None:
            return MAX_PAGE_SIZE
        try:
            size = int(text)
        except ValueError:
            size = 0
        if not 1 <= size <= MAX_PAGE_SIZE:
            # The stand-in's wording for the specification's bounds on maxresults.
            raise BadParameter(
                f"Invalid maxresults: {text}. It must be an integer from 1 to {MAX_PAGE_SIZE}."
            )
        return size

    @staticmethod
    def _marker(token: str | None) -> str | None:
        if token is None:
            return None
        try:
            marker = orjson.loads(wire.b64url_decode(token))["NextMarker"]
        except (ValueError, TypeError, KeyError):
            marker = None
        if not isinstance(marker, str):
            raise BadParameter("The $skiptoken is not valid.")  # the stand-in's wording
        return marker

    def answer(self, items: list[dict[str, Any]], next_marker: str | None) -> Answer:
        link = None
        if next_marker is not None:
            # Key Vault's own skiptokens are base64 JSON with a NextMarker too.
            token = wire.b64url_encode(orjson.dumps({"NextMarker": next_marker}))
            call = self._call
            link = (
                f"{call.vault}{call.route.operation.path(call.route.name)}"
                f"?api-version={call.api_version}&$skiptoken={token}&maxresults={self.size}"
            )
        return Answer(200, {"value": items, "nextLink": link})


class Operations:
    """Every operation of :data:`~keyledger.backends.azure.routes.OPERATIONS` on one store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._handlers: dict[str, Callable[[Call], Answer]] = {
            "SetSecret": self._set_secret,
            "GetSecret": self._get_secret,
            "UpdateSecret": self._update_secret,
            "DeleteSecret": self._delete_secret,
            "GetSecrets": self._get_secrets,
            "GetSecretVersions": self._get_secret_versions,
            "GetDeletedSecrets": self._get_deleted_secrets,
            "GetDeletedSecret": self._get_deleted_secret,
            "PurgeDeletedSecret": self._purge_deleted_secret,
            "RecoverDeletedSecret": self._recover_deleted_secret,
            "BackupSecret": self._backup_secret,
            "RestoreSecret": self._restore_secret,
        }
        if set(self._handlers) != set(OPERATIONS):
            raise RuntimeError(
                "the stand-in's handlers and the route table disagree: "
                f"{sorted(set(self._handlers) ^ set(OPERATIONS))}"
            )

    def __call__(self, call: Call) -> Answer:
        return self._handlers[call.route.operation.name](call)

    def _set_secret(self, call: Call) -> Answer:
        p = wire.parse_set(call.body)
        made = self._store.set_secret(
            call.name,
            p.value,
            content_type=p.content_type,
            tags=p.tags,
            enabled=p.enabled,
            not_before=p.not_before,
            expires=p.expires,
        )
        return Answer(200, wire.bundle(call.vault, made, with_value=True))

    def _get_secret(self, call: Call) -> Answer:
        # outContentType only converts certificate-backed secrets, which the stand-in has not.
        found = self._store.get_secret(call.name, call.route.version or "")
        return Answer(200, wire.bundle(call.vault, found, with_value=True))

    def _update_secret(self, call: Call) -> Answer:
        p = wire.parse_update(call.body)
        updated = self._store.update_secret(
            call.name,
            call.route.version or "",
            content_type=p.content_type,
            tags=p.tags,
            enabled=p.enabled,
            not_before=p.not_before,
            expires=p.expires,
        )
        return Answer(200, wire.bundle(call.vault, updated, with_value=False))

    def _delete_secret(self, call: Call) -> Answer:
        return Answer(200, wire.deleted_bundle(call.vault, self._store.delete_secret(call.name)))

    def _get_secrets(self, call: Call) -> Answer:
        paging = _Paging(call)
        page = self._store.list_secrets(after=paging.after, limit=paging.size)
        items = [wire.item(call.vault, v, versioned=False) for v in page.items]
        return paging.answer(items, page.next_marker)

    def _get_secret_versions(self, call: Call) -> Answer:
        paging = _Paging(call)
        page = self._store.list_versions(call.name, after=paging.after, limit=paging.size)
        items = [wire.item(call.vault, v, versioned=True) for v in page.items]
        return paging.answer(items, page.next_marker)

    def _get_deleted_secrets(self, call: Call) -> Answer:
        paging = _Paging(call)
        page = self._store.list_deleted_secrets(after=paging.after, limit=paging.size)
        items = [wire.deleted_item(call.vault, d) for d in page.items]
        return paging.answer(items, page.next_marker)

    def _get_deleted_secret(self, call: Call) -> Answer:
        deleted = self._store.get_deleted_secret(call.name)
        return Answer(200, wire.deleted_bundle(call.vault, deleted))

    def _purge_deleted_secret(self, call: Call) -> Answer:
        self._store.purge_deleted_secret(call.name)
        return Answer(204)

    def _recover_deleted_secret(self, call: Call) -> Answer:
        recovered = self._store.recover_deleted_secret(call.name)
        return Answer(200, wire.bundle(call.vault, recovered, with_value=False))

    def _backup_secret(self, call: Call) -> Answer:
        blob = self._store.backup_secret(call.name)
        return Answer(200, {"value": wire.b64url_encode(blob)})

    def _restore_secret(self, call: Call) -> Answer:
        restored = self._store.restore_secret(wire.parse_restore(call.body))
        return Answer(200, wire.bundle(call.vault, restored, with_value=False))
