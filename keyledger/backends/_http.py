"""The one piece of I/O an HTTP backend needs: send a request, get bytes back.

Backends receive an :class:`HttpTransport` instead of importing an HTTP library, so they
stay free of the web stack (the proxy injects its aiohttp client) and a test can hand them
any transport it likes. Any method: AWS's JSON protocol only POSTs, a REST store also GETs,
PATCHes and DELETEs. (A store reached over gRPC brings its own client instead.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["HttpReply", "HttpTransport", "HttpTransportError"]


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]  # case-insensitive lookups are not promised: use lower case
    body: bytes = field(repr=False)


class HttpTransportError(Exception):
    """The peer could not be reached, or did not answer in time."""


class HttpTransport(Protocol):
    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes = b""
    ) -> HttpReply:
        """Send one request; raise :class:`HttpTransportError` if no answer came back."""
        ...
