"""The stand-in's HTTP listener: aiohttp serving one plain request -> response function.

The REST surface (``rest.py``) stays a function from :class:`HttpRequest` to
:class:`HttpResponse`, testable without a server; this module only puts it on a socket. A
stand-in plays the cloud's side of the wire, so unlike a backend it may use the web stack
(tests/test_architecture.py allows it here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["HttpRequest", "HttpResponse", "HttpServer"]

MAX_BODY = 1 << 20  # far above Secret Manager's 64 KiB payloads


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str  # path and query, as sent
    headers: Mapping[str, str]  # names in lower case
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = field(repr=False)
    content_type: str = "application/json; charset=UTF-8"


Handler = Callable[[HttpRequest], HttpResponse]


class HttpServer:
    """Serves ``handler`` on ``host:port`` (port 0: any free port, then see :attr:`port`)."""

    def __init__(self, handler: Handler, *, host: str, port: int) -> None:
        self._handler, self._host, self._port = handler, host, port
        self._runner: web.AppRunner | None = None
        self._bound: int | None = None

    @property
    def port(self) -> int:
        if self._bound is None:
            raise RuntimeError("the HTTP server has not been started")
        return self._bound

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._bound = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner, self._bound = None, None

    async def _serve(self, request: web.Request) -> web.Response:
        answer = self._handler(
            HttpRequest(
                method=request.method,
                target=request.raw_path,
                headers={name.lower(): value for name, value in request.headers.items()},
                body=await request.read(),
            )
        )
        response = web.Response(status=answer.status, body=answer.body)
        response.headers["Content-Type"] = answer.content_type
        return response
