"""Key Vault's secrets REST routes: which operation serves an HTTP method and a path.

Each :class:`Operation` is one operation of the Key Vault data-plane secrets API, named by
its ``operationId`` in the published specification and routed as the SDK's generated
request builders send it (``PUT /secrets/{secret-name}``). Pure data: the Key Vault
stand-in serves these routes, keyledger's Azure front end parses them and the Azure
backend sends them, so the three cannot disagree about the surface.

Paths are relative to a vault URL. The latest version of a secret is asked for with an
empty version (``GET /secrets/{name}/``, as the SDKs send it) or without one
(``GET /secrets/{name}``); ``versions`` and ``backup`` after a name are the listing and the
backup, never a version (versions are hexadecimal). The fixed words of a path match in any
case, as Key Vault's own routing does; names and versions are passed on as sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "API_VERSIONS",
    "MAX_PAGE_SIZE",
    "OPERATIONS",
    "Operation",
    "Route",
    "route_for",
    "valid_name",
    "valid_version",
]

# What the stand-in and the front end accept as ``api-version``: Key Vault's data-plane
# versions the SDKs have sent (7.0 to 7.6, then dated ones: the SDKs' ApiVersion enum),
# and the previews clients may be pinned to (the generated code's api_version_validation).
API_VERSIONS = frozenset(
    {
        "2016-10-01",
        "7.0",
        "7.1",
        "7.2",
        "7.3",
        "7.4",
        "7.5",
        "7.6",
        "2025-07-01",
        "2026-04-01",
        "7.3-preview",
        "7.4-preview.1",
        "7.5-preview.1",
        "7.6-preview.1",
        "7.6-preview.2",
        "2025-06-01-preview",
        "2026-01-01-preview",
        "2026-03-01-preview",
    }
)
# ``maxresults`` is 1..25 (the specification's maximum).
MAX_PAGE_SIZE = 25

_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_VERSION = re.compile(r"[0-9A-Za-z]{1,64}")


def valid_name(name: str) -> bool:
    """A secret name Key Vault accepts: 1-127 letters, digits and dashes."""
    return _NAME.fullmatch(name) is not None


def valid_version(version: str) -> bool:
    return _VERSION.fullmatch(version) is not None


@dataclass(frozen=True, slots=True)
class Operation:
    """One Key Vault secrets operation: ``name`` its operationId, ``template`` its path as
    the SDK's request builder writes it; ``body`` whether it takes a JSON body."""

    name: str
    http_method: str
    template: str
    body: bool = False
    pages: bool = False  # answers with a page: {"value": [...], "nextLink": ...}

    @property
    def takes_name(self) -> bool:
        return "{secret-name}" in self.template

    @property
    def takes_version(self) -> bool:
        return "{secret-version}" in self.template

    def path(self, name: str | None = None, version: str | None = None) -> str:
        """This operation's path for ``name`` (and ``version``; "" for the latest)."""
        path = self.template
        if self.takes_name:
            if name is None:
                raise ValueError(f"{self.name} needs a secret name")
            path = path.replace("{secret-name}", name)
        if self.takes_version:
            path = path.replace("{secret-version}", version or "")
        return path


OPERATIONS: Mapping[str, Operation] = {
    op.name: op
    for op in (
        Operation("SetSecret", "PUT", "/secrets/{secret-name}", body=True),
        Operation("DeleteSecret", "DELETE", "/secrets/{secret-name}"),
        Operation("UpdateSecret", "PATCH", "/secrets/{secret-name}/{secret-version}", body=True),
        Operation("GetSecret", "GET", "/secrets/{secret-name}/{secret-version}"),
        Operation("GetSecrets", "GET", "/secrets", pages=True),
        Operation("GetSecretVersions", "GET", "/secrets/{secret-name}/versions", pages=True),
        Operation("GetDeletedSecrets", "GET", "/deletedsecrets", pages=True),
        Operation("GetDeletedSecret", "GET", "/deletedsecrets/{secret-name}"),
        Operation("PurgeDeletedSecret", "DELETE", "/deletedsecrets/{secret-name}"),
        Operation("RecoverDeletedSecret", "POST", "/deletedsecrets/{secret-name}/recover"),
        Operation("BackupSecret", "POST", "/secrets/{secret-name}/backup"),
        Operation("RestoreSecret", "POST", "/secrets/restore", body=True),
    )
}


@dataclass(frozen=True, slots=True)
class Route:
    """A request matched to its operation: the secret name and version the path gives
    (``version`` "" or None: the latest). Names are as sent: check :func:`valid_name`."""

    operation: Operation
    name: str | None = None
    version: str | None = None


def route_for(method: str, path: str) -> Route | None:
    """The operation ``method`` and ``path`` (relative to the vault) ask for, if any."""
    parts = path.split("/")
    if len(parts) < 2 or parts[0] != "":
        return None
    collection, rest = parts[1].lower(), parts[2:]
    if collection == "secrets":
        return _secrets(method, rest)
    if collection == "deletedsecrets":
        return _deleted(method, rest)
    return None


def _route(operation: str, name: str | None = None, version: str | None = None) -> Route:
    return Route(OPERATIONS[operation], name, version)


def _secrets(method: str, rest: list[str]) -> Route | None:
    if rest in ([], [""]):
        return _route("GetSecrets") if method == "GET" else None
    name, tail = rest[0], rest[1:]
    if tail == [] or tail == [""]:
        if method in ("GET", "PATCH"):  # the latest version
            return _route("GetSecret" if method == "GET" else "UpdateSecret", name, "")
        if method == "POST" and name.lower() == "restore":
            return _route("RestoreSecret")
        by_method = {"PUT": "SetSecret", "DELETE": "DeleteSecret"}
        return _route(by_method[method], name) if method in by_method else None
    if len(tail) == 1 or (len(tail) == 2 and tail[1] == ""):
        word = tail[0]
        if word.lower() == "versions" and method == "GET":
            return _route("GetSecretVersions", name)
        if word.lower() == "backup" and method == "POST":
            return _route("BackupSecret", name)
        if method == "GET":
            return _route("GetSecret", name, word)
        if method == "PATCH":
            return _route("UpdateSecret", name, word)
    return None


def _deleted(method: str, rest: list[str]) -> Route | None:
    if rest in ([], [""]):
        return _route("GetDeletedSecrets") if method == "GET" else None
    name, tail = rest[0], rest[1:]
    if tail in ([], [""]):
        if method == "GET":
            return _route("GetDeletedSecret", name)
        if method == "DELETE":
            return _route("PurgeDeletedSecret", name)
        return None
    if [part.lower() for part in tail] in (["recover"], ["recover", ""]) and method == "POST":
        return _route("RecoverDeletedSecret", name)
    return None
