"""The HTTP client the proxy lends its backends (see ``keyledger.backends._http``)."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from keyledger.backends import HttpReply, HttpTransportError

__all__ = ["AiohttpTransport"]


class AiohttpTransport:
    """One pooled aiohttp session with keep-alive; opened by ``start``, closed by ``close``."""

    def __init__(self, *, timeout_s: float, max_connections: int = 256) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            timeout=self._timeout,
            # Only what the caller signs goes out.
            skip_auto_headers=("User-Agent", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes = b""
    ) -> HttpReply:
        if self._session is None:
            raise HttpTransportError("the HTTP client is not started")
        try:
            # Never follow a redirect: it would re-send a signed body (maybe a secret
            # value being written) to wherever the redirect points.
            async with self._session.request(
                method, url, data=body or None, headers=headers, allow_redirects=False
            ) as response:
                data = await response.read()
                reply_headers = {k.lower(): v for k, v in response.headers.items()}
                return HttpReply(response.status, reply_headers, data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HttpTransportError(type(exc).__name__) from exc
