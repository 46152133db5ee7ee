"""The web console on the admin listener: its files under ``/ui/``, its headers, its wiring.

The files (``keyledger/console/static/``: HTML, JavaScript modules, CSS; hand-written, no
build step) ship in the package and are read once, at start-up, into a table of their
names: a request is answered from that table or not at all, so no path it names (``..``,
``%2e%2e``, an absolute path, a symlink) can reach another file.

Every answer of the admin listener carries :data:`SECURITY_HEADERS`: a Content-Security-
Policy that lets a page run only the console's own scripts and styles (nothing inline,
nothing from elsewhere, no framing), and the headers that keep answers from being sniffed,
framed or leaked in a Referer. The API's answers are never cached; the console's files
are revalidated on every load (``no-cache``, with an ETag), so an upgraded keyledger never
runs a stale script against a new API.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from keyledger.console import STATIC
from keyledger.proxy.admin.console_auth import (
    CONSOLE_AUTH,
    ConsoleAuth,
    add_session_routes,
)
from keyledger.proxy.admin.console_sessions import SessionStore
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.config import ConsoleConfig
from keyledger.proxy.failures import FailureFold

__all__ = [
    "CSP",
    "SECURITY_HEADERS",
    "StaticFile",
    "add_console",
    "load_static",
    "security_headers",
]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

STATIC_FILES = web.AppKey("console_static", dict[str, "StaticFile"])


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_static(directory: Path = STATIC) -> dict[str, StaticFile]:
    """Every file under ``directory`` by its name relative to it (``pages/live.js``)."""
    files = {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        name = path.relative_to(directory).as_posix()
        body = path.read_bytes()
        content_type = _TYPES.get(path.suffix) or (
            mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[name] = StaticFile(body=body, content_type=content_type, etag=etag)
    return files


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The console's headers on every answer of the admin listener (``on_response_prepare``:
    errors and the audit stream included); uncached unless the handler said otherwise."""
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")


def add_console(
    app: web.Application,
    *,
    config: ConsoleConfig,
    journal: Journal | None,
    failures: FailureFold | None,
    files: Mapping[str, StaticFile] | None = None,
) -> None:
    """The console's routes on the admin ``app``: files, sign-in, sign-out."""
    app[STATIC_FILES] = dict(load_static() if files is None else files)
    app[CONSOLE_AUTH] = ConsoleAuth(
        sessions=SessionStore(ttl_s=config.session_ttl_s, limit=config.max_sessions),
        journal=journal,
        failures=failures,
    )
    app.router.add_get("/ui", _to_index)
    app.router.add_get("/ui/", _static)
    add_session_routes(app)
    app.router.add_get("/ui/{name:.+}", _static)
    app.on_shutdown.append(_end_sessions)


async def _end_sessions(app: web.Application) -> None:
    app[CONSOLE_AUTH].sessions.clear()


async def _to_index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name", "index.html")
    found = request.app[STATIC_FILES].get(name)
    if found is None:
        raise web.HTTPNotFound(text=f"no console file {name!r}\n")
    headers: dict[str, Any] = {
        "ETag": found.etag,
        "Cache-Control": "no-cache",  # revalidated each load: an upgrade is seen at once
    }
    if request.headers.get("If-None-Match") == found.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, headers={**headers, "Content-Type": found.content_type})
