"""The one piece of I/O a backend needs: POST bytes, get bytes back.

Backends receive an :class:`HttpTransport` instead of importing an HTTP library, so they
stay free of the web stack (the proxy injects its aiohttp client) and a test can hand them
any transport it likes.
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
    async def post(self, url: str, *, headers: Mapping[str, str], body: bytes) -> HttpReply:
        """Send one request; raise :class:`HttpTransportError` if no answer came back."""
        ...
