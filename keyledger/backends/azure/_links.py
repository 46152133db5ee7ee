"""Key Vault's answers name the vault they came from (``id``, ``kid``, ``recoveryId``,
``nextLink``); callers must see keyledger's URL for it instead, and never the real one.

The SDKs derive a secret's vault, name and version from its ``id`` and require exactly
``/secrets/{name}[/{version}]`` after the host, so ids are written on the caller's
``scheme://host[:port]`` alone; ``nextLink`` is followed as given, so it keeps a vault's
path prefix (``https://keyledger:8443/payments/secrets?...``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["LINK_FIELDS", "VaultLinks"]

# The fields of a bundle or an item that are URLs into the vault.
LINK_FIELDS = ("id", "kid", "recoveryId")


@dataclass(frozen=True, slots=True)
class VaultLinks:
    """Rewrites URLs into the real vault ``real`` onto the caller's ``base`` (ids) and
    ``link_base`` (links to follow)."""

    real: str  # https://acme-payments.vault.azure.net
    base: str  # https://kv.internal:8443
    link_base: str  # https://kv.internal:8443/payments

    def _move(self, url: str, onto: str) -> str:
        parts = urlsplit(url)
        real = urlsplit(self.real)
        if parts.scheme != real.scheme or parts.hostname != real.hostname:
            return url
        if (parts.port or 443) != (real.port or 443):
            return url
        rest = url.split("/", 3)[3] if url.count("/") >= 3 else ""
        return f"{onto}/{rest}"

    def id(self, url: str) -> str:
        return self._move(url, self.base)

    def link(self, url: str) -> str:
        return self._move(url, self.link_base)

    def text(self, text: str) -> str:
        """A message naming the real vault (by URL, or by host and port), naming the
        caller's instead; in one pass, so what was put in is never moved again."""
        host = urlsplit(self.real).hostname or self.real
        pattern = re.compile(rf"(https://)?{re.escape(host)}(:[0-9]{{1,5}})?", re.IGNORECASE)
        netloc = urlsplit(self.base).netloc
        return pattern.sub(lambda m: self.base if m[1] else netloc, text)

    def body(self, body: Any) -> Any:
        """A copy of a Key Vault answer with every vault URL moved (bundles, pages)."""
        if not isinstance(body, Mapping):
            return body
        moved = _moved(body, self.id)
        if isinstance(body.get("value"), list):
            moved["value"] = [
                _moved(item, self.id) if isinstance(item, Mapping) else item
                for item in body["value"]
            ]
        if isinstance(body.get("nextLink"), str):
            moved["nextLink"] = self.link(body["nextLink"])
        return moved


def _moved(entry: Mapping[str, Any], move: Callable[[str], str]) -> dict[str, Any]:
    copy = dict(entry)
    for field in LINK_FIELDS:
        if isinstance(copy.get(field), str):
            copy[field] = move(copy[field])
    return copy
