"""Key Vault's JSON on the wire: the store's snapshots as the service writes them, and the
request bodies as the service reads them.

Field names and shapes follow the published data-plane specification (``secrets.json``:
SecretBundle, SecretItem, DeletedSecretBundle, DeletedSecretItem, SecretAttributes,
BackupSecretResult, KeyVaultError; SecretSetParameters, SecretUpdateParameters,
SecretRestoreParameters), and are checked against the models the SDK ships
(tests/backends/test_azure_standin_surface.py). Optional fields are left out when unset, as
the service does; ``managed`` is written only when true.

Ids are URLs under ``vault``, the scheme and host the request was sent to, so a client (or a
proxy in front) sees the vault it called.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from keyledger.backends.azure_standin.errors import BadParameter, StandinError
from keyledger.backends.azure_standin.store import (
    RECOVERABLE_DAYS,
    RECOVERY_LEVEL,
    Deleted,
    Version,
)

__all__ = [
    "SetParameters",
    "UpdateParameters",
    "b64url_decode",
    "b64url_encode",
    "bundle",
    "deleted_bundle",
    "deleted_item",
    "error",
    "item",
    "parse_restore",
    "parse_set",
    "parse_update",
]

Json = dict[str, Any]


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as Key Vault writes blobs."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64url, padded or not; raises ValueError on anything else."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


# Responses


def _attributes(v: Version) -> Json:
    attributes: Json = {"enabled": v.enabled}
    if v.not_before is not None:
        attributes["nbf"] = v.not_before
    if v.expires is not None:
        attributes["exp"] = v.expires
    attributes |= {
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": RECOVERABLE_DAYS,
    }
    return attributes


def _described(v: Version, body: Json) -> Json:
    body["attributes"] = _attributes(v)
    if v.content_type is not None:
        body["contentType"] = v.content_type
    if v.tags is not None:
        body["tags"] = dict(v.tags)
    return body


def secret_id(vault: str, name: str, version: str | None = None) -> str:
    return f"{vault}/secrets/{name}" + (f"/{version}" if version else "")


def bundle(vault: str, v: Version, *, with_value: bool) -> Json:
    """A SecretBundle; ``with_value`` False for the answers that leave the value out."""
    body: Json = {"value": v.value} if with_value else {}
    body["id"] = secret_id(vault, v.name, v.version)
    return _described(v, body)


def item(vault: str, v: Version, *, versioned: bool) -> Json:
    """A SecretItem: with its version in the id when listing versions."""
    return _described(v, {"id": secret_id(vault, v.name, v.version if versioned else None)})


def _deletion(vault: str, d: Deleted) -> Json:
    return {
        "recoveryId": f"{vault}/deletedsecrets/{d.latest.name}",
        "deletedDate": d.deleted_date,
        "scheduledPurgeDate": d.scheduled_purge_date,
    }


def deleted_bundle(vault: str, d: Deleted) -> Json:
    """A DeletedSecretBundle: the latest version's bundle, without its value."""
    return _deletion(vault, d) | bundle(vault, d.latest, with_value=False)


def deleted_item(vault: str, d: Deleted) -> Json:
    return _deletion(vault, d) | item(vault, d.latest, versioned=False)


def error(exc: StandinError) -> Json:
    """A KeyVaultError."""
    body: Json = {"code": exc.code, "message": exc.message}
    if exc.inner is not None:
        body["innererror"] = {"code": exc.inner}
    return {"error": body}


# Requests


def _object(body: bytes) -> Mapping[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise BadParameter("The request body must be a JSON object.")  # the stand-in's wording
    return parsed


def _optional(body: Mapping[str, Any], name: str, kind: type, label: str) -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise BadParameter(f"Property {name} has invalid value: expected {label}.")
    return value


def _tags(body: Mapping[str, Any]) -> dict[str, str] | None:
    tags: dict[str, object] | None = _optional(body, "tags", dict, "an object of strings")
    if tags is None:
        return None
    if not all(isinstance(v, str) for v in tags.values()):
        raise BadParameter("Property tags has invalid value: expected an object of strings.")
    return {k: str(v) for k, v in tags.items()}


def _time(attributes: Mapping[str, Any], name: str) -> int | None:
    value = attributes.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadParameter(f"Property {name} has invalid value: expected Unix seconds.")
    return int(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateParameters:
    """SecretUpdateParameters; None: not given."""

    content_type: str | None = None
    tags: dict[str, str] | None = None
    enabled: bool | None = None
    not_before: int | None = None
    expires: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SetParameters(UpdateParameters):
    """SecretSetParameters: an update's fields and the value."""

    value: str = ""


def _update_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    # Read-only attributes (created, updated, recoveryLevel...) are ignored, as Key Vault does.
    attributes = _optional(body, "attributes", dict, "an object") or {}
    return {
        "content_type": _optional(body, "contentType", str, "a string"),
        "tags": _tags(body),
        "enabled": _optional(attributes, "enabled", bool, "true or false"),
        "not_before": _time(attributes, "nbf"),
        "expires": _time(attributes, "exp"),
    }


def parse_update(body: bytes) -> UpdateParameters:
    return UpdateParameters(**_update_fields(_object(body)))


def parse_set(body: bytes) -> SetParameters:
    parsed = _object(body)
    value = parsed.get("value")
    if not isinstance(value, str):
        raise BadParameter("Property value is required and must be a string.")
    return SetParameters(value=value, **_update_fields(parsed))


def parse_restore(body: bytes) -> bytes:
    """The backup blob of a SecretRestoreParameters."""
    value = _object(body).get("value")
    if not isinstance(value, str):
        raise BadParameter("Property value is required and must be a string.")
    try:
        return b64url_decode(value)
    except ValueError:
        raise BadParameter("Property value has invalid value: expected base64url.") from None
