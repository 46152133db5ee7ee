"""An in-memory Google Cloud Secret Manager serving v1 REST and gRPC: moto, for Google.

Google ships no emulator for Secret Manager, so dev mode and tests run this one. It speaks
the wire protocols the real SDKs speak (checked in tests against the v1 discovery document
and the SDK's gRPC service), keeps everything in memory, and checks no credentials unless
given a ``token``.

From async code::

    async with GcpStandin() as standin:
        standin.seed("demo", {"db-password": "hunter2"})
        ...  # standin.rest_url ("http://127.0.0.1:PORT"), standin.grpc_target ("127.0.0.1:PORT")

From sync code (its own event loop in a thread, like moto's ThreadedMotoServer)::

    with ThreadedGcpStandin() as standin:
        ...
"""

from __future__ import annotations

from collections.abc import Mapping

from keyledger.backends._loop_thread import AsyncServer, ThreadedServer
from keyledger.backends.gcp_standin._http import HttpServer
from keyledger.backends.gcp_standin.errors import NotFound, StandinError
from keyledger.backends.gcp_standin.grpc_server import GrpcServer
from keyledger.backends.gcp_standin.methods import automatic_replication
from keyledger.backends.gcp_standin.rest import RestApi
from keyledger.backends.gcp_standin.store import Store

__all__ = ["GcpStandin", "StandinError", "Store", "ThreadedGcpStandin", "seed"]


def seed(
    store: Store, project: str, secrets: Mapping[str, str | bytes], *, location: str | None = None
) -> dict[str, str]:
    """Add each value as a new version of its secret (created with automatic replication if
    missing); returns the secret ids mapped to the version names made."""
    parent = f"projects/{project}" + (f"/locations/{location}" if location else "")
    made: dict[str, str] = {}
    for secret_id, value in secrets.items():
        name = f"{parent}/secrets/{secret_id}"
        try:
            store.get_secret(name)
        except NotFound:
            replication = None if location else automatic_replication()
            store.create_secret(parent, secret_id, replication=replication)
        data = value.encode() if isinstance(value, str) else value
        made[secret_id] = store.add_version(name, data).name
    return made


class GcpStandin(AsyncServer):
    """REST and gRPC servers on one :class:`Store`, started on the running event loop."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        rest_port: int = 0,
        grpc_port: int = 0,
        store: Store | None = None,
        token: str | None = None,
    ) -> None:
        self.host = host
        self.store = store or Store()
        self._http = HttpServer(RestApi(self.store, token=token), host=host, port=rest_port)
        self._grpc = GrpcServer(self.store, host=host, port=grpc_port, token=token)

    @property
    def rest_port(self) -> int:
        return self._http.port

    @property
    def grpc_port(self) -> int:
        return self._grpc.port

    @property
    def rest_url(self) -> str:
        """The REST endpoint, e.g. for ``ClientOptions(api_endpoint=...)``."""
        return f"http://{_netloc(self.host)}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        """The gRPC target, e.g. for ``grpc.insecure_channel(...)``."""
        return f"{_netloc(self.host)}:{self.grpc_port}"

    def seed(
        self, project: str, secrets: Mapping[str, str | bytes], *, location: str | None = None
    ) -> dict[str, str]:
        """See :func:`seed`."""
        return seed(self.store, project, secrets, location=location)

    async def start(self) -> None:
        await self._http.start()
        try:
            await self._grpc.start()
        except BaseException:
            await self._http.close()
            raise

    async def stop(self) -> None:
        await self._grpc.close()
        await self._http.close()


class ThreadedGcpStandin(GcpStandin, ThreadedServer):
    """A :class:`GcpStandin` on its own event loop in a daemon thread, for sync callers."""

    thread_name = "gcp-standin"


def _netloc(host: str) -> str:
    return f"[{host}]" if ":" in host else host
