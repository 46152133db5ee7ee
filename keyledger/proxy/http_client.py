"""The HTTP client the proxy lends its backends (see ``keyledger.backends._http``)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from keyledger.backends import HttpReply, HttpTransportError

__all__ = ["AiohttpTransport"]


class AiohttpTransport:
    """One pooled aiohttp session with keep-alive; opened by ``start``, closed by ``close``.

    ``ca_file``: trust only this CA (a stand-in's, a private endpoint's) instead of the
    system's. A backend whose SDK sends on aiohttp itself (Azure's) borrows ``session``;
    such an SDK decompresses answers itself, so ``decompress`` is off for it.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        max_connections: int = 256,
        ca_file: Path | None = None,
        decompress: bool = True,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._ca_file = ca_file
        self._decompress = decompress
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # One TLS context for the pool: connections are reused per context.
        context: ssl.SSLContext | bool = True
        if self._ca_file is not None:
            context = ssl.create_default_context(cafile=str(self._ca_file))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=context),
            timeout=self._timeout,
            # Only what the caller signs goes out.
            skip_auto_headers=("User-Agent", "Content-Type"),
            auto_decompress=self._decompress,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise HttpTransportError("the HTTP client is not started")
        return self._session

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
