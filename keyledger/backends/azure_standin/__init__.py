"""An in-memory Azure Key Vault (secrets) speaking Key Vault's REST wire format: moto, for Azure.

Microsoft ships no installable Key Vault emulator, so dev mode and tests run this one. The
unmodified ``azure-keyvault-secrets`` SDK works against it: the challenge authentication
round trip, every secrets operation of the published data-plane specification (routed by
:mod:`keyledger.backends.azure.routes`, shared with keyledger's Azure front end and
backend), soft delete, paging through ``nextLink``, backup and restore, and Key Vault's
error codes. Everything is kept in memory; any bearer token is accepted unless a ``token``
is given. The SDK sends tokens only over HTTPS, so real clients need ``ssl_context``
(:func:`keyledger.devtls.server_context`); plain HTTP is for raw-request tests.

From async code::

    async with AzureStandin(ssl_context=context) as standin:
        standin.seed({"db-password": "hunter2"})
        ...  # SecretClient(vault_url=standin.url, ...)

From sync code (its own event loop in a thread, like moto's ThreadedMotoServer)::

    with ThreadedAzureStandin(ssl_context=context) as standin:
        ...
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from aiohttp import web

from keyledger.backends._loop_thread import AsyncServer, ThreadedServer
from keyledger.backends.azure_standin.auth import DEFAULT_AUTHORITY, DEFAULT_RESOURCE, Challenge
from keyledger.backends.azure_standin.errors import StandinError
from keyledger.backends.azure_standin.operations import Operations
from keyledger.backends.azure_standin.server import KeyVaultHttp, Traffic
from keyledger.backends.azure_standin.store import Store

__all__ = [
    "AzureStandin",
    "StandinError",
    "Store",
    "ThreadedAzureStandin",
    "Traffic",
    "seed",
]


def seed(store: Store, secrets: Mapping[str, str]) -> dict[str, str]:
    """Set each value as a new version of its secret; returns the names mapped to the
    versions made."""
    return {name: store.set_secret(name, value).version for name, value in secrets.items()}


class AzureStandin(AsyncServer):
    """A vault served over HTTP(S) on the running event loop.

    ``token``: the only bearer token accepted (None: any). ``authority`` and ``resource``:
    what the 401 challenge tells clients to get a token from and for.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
        authority: str = DEFAULT_AUTHORITY,
        resource: str = DEFAULT_RESOURCE,
        store: Store | None = None,
    ) -> None:
        self.host, self._port, self._ssl = host, port, ssl_context
        self.store = store or Store()
        self.traffic = Traffic()
        challenge = Challenge(authority=authority, resource=resource, token=token)
        self._http = KeyVaultHttp(Operations(self.store), challenge=challenge, traffic=self.traffic)
        self._runner: web.AppRunner | None = None
        self._bound: int | None = None

    @property
    def port(self) -> int:
        if self._bound is None:
            raise RuntimeError("the Azure stand-in has not been started")
        return self._bound

    @property
    def url(self) -> str:
        """The vault URL, for ``SecretClient(vault_url=...)``."""
        scheme = "https" if self._ssl is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def seed(self, secrets: Mapping[str, str]) -> dict[str, str]:
        """See :func:`seed`; safe from any thread (the store locks)."""
        return seed(self.store, secrets)

    async def start(self) -> None:
        runner = web.AppRunner(self._http.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._port, ssl_context=self._ssl)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._bound = runner, int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner, self._bound = None, None


class ThreadedAzureStandin(AzureStandin, ThreadedServer):
    """An :class:`AzureStandin` on its own event loop in a daemon thread, for sync callers."""

    thread_name = "azure-standin"
