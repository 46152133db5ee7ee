"""The admin API: its own aiohttp Application on its own listener, behind a bearer token.

GET /healthz           200 while the process serves (open: it tells nothing)
GET /readyz            200 when every readiness check passes, else 503; the JSON body names
                       each check (details only with the token; see :mod:`.health`)
GET /v1/audit/stream   Server-Sent Events: the durable audit events, live, filtered by the
                       query (principal, secret, action, effect, protocol, type, since,
                       until); ``last=N`` first replays the last N matching events.

Frames: ``event: audit`` with ``id: <chain>:<seq>`` and the journal line as ``data``;
``event: replayed`` once the ``last=N`` replay is done (at once for ``last=0``);
``event: dropped`` before the server disconnects a reader that fell ``stream_backlog``
events behind. A comment line every 15 s keeps idle connections (and proxies) open.

GET /v1/sinks          each remote sink's state as JSON: shipped seq, lag, failures, alarm
GET /metrics           Prometheus text format (see :mod:`keyledger.proxy.metrics`)

The JSON endpoints a console reads (docs/admin-api.md): ``/v1/events``, ``/v1/events/{chain}/
{seq}``, ``/v1/alerts`` (:mod:`.query`); ``/v1/report``, ``/v1/secret``,
``/v1/principal`` (:mod:`.report`); ``/v1/explain`` (:mod:`.explain`);
``/v1/integrity`` and ``/v1/verify`` (:mod:`.integrity`). All sit behind the one token
check of :func:`require_token`, the only place a request is let in.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from keyledger.proxy import app as app_keys
from keyledger.proxy.admin.console import add_console, security_headers
from keyledger.proxy.admin.console_auth import (
    CONSOLE_AUTH,
    CONSOLE_SESSION,
    refuse_cross_site,
    same_origin,
)
from keyledger.proxy.admin.explain import POLICIES, explain
from keyledger.proxy.admin.http import json_error
from keyledger.proxy.admin.integrity import (
    JOURNAL,
    VERIFIER,
    add_integrity_routes,
    sinks_json,
)
from keyledger.proxy.admin.keys import CONFIG_BASE, EXPECTED_AUTHORIZATION, JOURNAL_DIR, READS
from keyledger.proxy.admin.query import add_query_routes
from keyledger.proxy.admin.reads import ReadPool
from keyledger.proxy.admin.report import add_report_routes
from keyledger.proxy.admin.verify import Verifier
from keyledger.proxy.audit.filters import EventFilter, filter_from_query
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.audit.reader import Unseen, last_records
from keyledger.proxy.audit.sinks import Shipper
from keyledger.proxy.audit.stream import AuditBroadcaster
from keyledger.proxy.config import AdminConfig, ConsoleConfig, require_key
from keyledger.proxy.failures import FailureFold
from keyledger.proxy.health import ReadinessProbe
from keyledger.proxy.pipeline import PolicyHolder

__all__ = [
    "JOURNAL_DIR",
    "STREAM_HEADERS",
    "AdminError",
    "admin_app_for",
    "guarded_app",
    "has_token",
    "load_admin_token",
    "make_admin_app",
    "parse_stream_query",
    "replay_frames",
]

log = structlog.get_logger("keyledger.admin")

# The data plane's keys where the admin app holds the same objects.
BROADCASTER, SHIPPERS, REGISTRY = app_keys.BROADCASTER, app_keys.SHIPPERS, app_keys.METRICS
READINESS = web.AppKey("readiness", ReadinessProbe)

_MAX_REPLAY = 10_000
STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass events on as they come
}
_KEEPALIVE_S = 15.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminError(RuntimeError):
    """The admin API cannot start; the message says what to fix."""


def load_admin_token(admin: AdminConfig) -> bytes:
    token = require_key(
        env=admin.token_env,
        file=admin.token_file,
        setting="admin.token_file",
        missing=f"the admin API needs a token: set {admin.token_env} or admin.token_file "
        "(e.g. `openssl rand -hex 32`)",
        error=AdminError,
    )
    if len(token) < 16:
        raise AdminError("the admin token must be at least 16 characters")
    return token


def has_token(request: web.Request) -> bool:
    given = request.headers.get("Authorization", "").encode()
    # Constant time: the comparison must not tell how much of a guess was right.
    return hmac.compare_digest(given, request.app[EXPECTED_AUTHORIZATION])


def _is_open(path: str, open_paths: frozenset[str]) -> bool:
    # The console's files and its sign-in are open: they hold no data, and the sign-in
    # checks the token itself.
    return path in open_paths or path == "/ui" or path.startswith("/ui/")


def require_token(open_paths: frozenset[str]) -> Any:
    """Middleware: 401 for every path but ``open_paths`` (and the console's ``/ui/``)
    without the app's token or, for ``/v1/`` paths, a console session (whose requests
    that change anything must come from the console's own pages: CSRF)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_open(request.path, open_paths) or has_token(request):
            return await handler(request)
        auth = request.app.get(CONSOLE_AUTH)
        if auth is not None and request.path.startswith("/v1/"):
            session = auth.session_of(request)
            if session is not None:
                if request.method not in ("GET", "HEAD") and not same_origin(request):
                    return refuse_cross_site(request)
                request[CONSOLE_SESSION] = session
                return await handler(request)
        log.warning("admin_unauthorised", path=request.path, remote=request.remote)
        return json_error(
            401,
            "missing or wrong admin token",
            **{"WWW-Authenticate": 'Bearer realm="keyledger-admin"'},
        )

    return middleware


def admin_app_for(data_plane: web.Application, token: bytes) -> web.Application:
    """The admin app for a data-plane app made by :func:`~keyledger.proxy.app.make_app`."""
    config = data_plane[app_keys.CONFIG]
    return make_admin_app(
        token=token,
        broadcaster=data_plane[app_keys.BROADCASTER],
        journal_dir=config.audit.journal,
        registry=data_plane[app_keys.METRICS],
        readiness=data_plane[app_keys.READINESS],
        shippers=data_plane[app_keys.SHIPPERS],
        open_readyz=config.admin is not None and config.admin.open_readyz,
        policies=data_plane[app_keys.POLICIES],
        config_base=config.base,
        journal=data_plane[app_keys.JOURNAL],
        public_keys=checkpoint_public_keys(data_plane),
        console=config.admin.console if config.admin is not None else ConsoleConfig(),
        failures=data_plane.get(app_keys.FAILURES),
    )


def checkpoint_public_keys(data_plane: web.Application) -> dict[str, Ed25519PublicKey] | None:
    """The public half of the key the data plane signs checkpoints with (None when it
    signs none), for verifications started here."""
    checkpointing = data_plane.get(app_keys.CHECKPOINTING)
    if checkpointing is None:
        return None
    signer = checkpointing.signer
    return {signer.key_id: signer.public_key}


def guarded_app(token: bytes, journal_dir: Path, *, open_readyz: bool) -> web.Application:
    """An admin app serving ``/healthz``, with every other route behind ``token``."""
    open_paths = frozenset({"/healthz", "/readyz"} if open_readyz else {"/healthz"})
    app = web.Application(middlewares=[require_token(open_paths)])
    app.on_response_prepare.append(security_headers)
    app[EXPECTED_AUTHORIZATION] = b"Bearer " + token
    app[JOURNAL_DIR] = journal_dir
    app.router.add_get("/healthz", healthz)
    return app


def make_admin_app(
    *,
    token: bytes,
    broadcaster: AuditBroadcaster,
    journal_dir: Path,
    registry: CollectorRegistry,
    readiness: ReadinessProbe,
    shippers: tuple[Shipper, ...] = (),
    open_readyz: bool = False,
    policies: PolicyHolder | None = None,
    config_base: Path | None = None,
    journal: Journal | None = None,
    public_keys: Mapping[str, Ed25519PublicKey] | None = None,
    console: ConsoleConfig | None = None,
    failures: FailureFold | None = None,
) -> web.Application:
    """The admin app, reading the data plane's objects; ``registry`` holds its metrics.

    ``policies`` answers ``/v1/explain`` (naming policy files from ``config_base``);
    ``journal`` records verifications and console sign-ins (and names the chain this
    process writes); ``public_keys`` check checkpoint signatures when verifying;
    ``console`` (on by default) serves the web console under ``/ui/``, its failed
    sign-ins folded by ``failures`` as the data plane's are.
    """
    app = guarded_app(token, journal_dir, open_readyz=open_readyz)
    app[BROADCASTER] = broadcaster
    app[SHIPPERS] = shippers
    app[READINESS] = readiness
    app[REGISTRY] = registry
    if policies is not None:
        app[POLICIES] = policies
    if config_base is not None:
        app[CONFIG_BASE] = config_base
    if journal is not None:
        app[JOURNAL] = journal
    app[READS] = ReadPool()
    app[VERIFIER] = Verifier(directory=journal_dir, journal=journal, public_keys=public_keys)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/audit/stream", audit_stream)
    app.router.add_get("/v1/sinks", sinks_status)
    app.router.add_get("/metrics", metrics)
    add_query_routes(app)
    add_report_routes(app)
    app.router.add_get("/v1/explain", explain)
    add_integrity_routes(app)
    console = ConsoleConfig() if console is None else console
    if console.enabled:
        add_console(app, config=console, journal=journal, failures=failures)
    app.on_shutdown.append(_close_streams)
    app.on_cleanup.append(_close_workers)
    return app


async def _close_workers(app: web.Application) -> None:
    await app[VERIFIER].close()
    app[READS].close()


async def _close_streams(app: web.Application) -> None:
    app[BROADCASTER].close()


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    checks = await request.app[READINESS].checks()
    ready = all(check.ok for check in checks)
    if has_token(request):
        named = {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}
    else:
        named = {c.name: {"ok": c.ok} for c in checks}  # an open probe learns no more
    return web.json_response({"ready": ready, "checks": named}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def sinks_status(request: web.Request) -> web.Response:
    return web.json_response({"sinks": sinks_json(request.app[SHIPPERS])})


def parse_stream_query(query: Mapping[str, str]) -> tuple[EventFilter, int | None]:
    """The stream's filter and how many past events to replay first (None: no replay).

    Raises ValueError naming the bad parameter.
    """
    filt = filter_from_query(query, datetime.now(UTC))
    if "last" not in query:
        return filt, None
    last = query["last"]
    replay = int(last) if last.isdigit() else -1
    if not 0 <= replay <= _MAX_REPLAY:
        raise ValueError(f"query parameter 'last': expected 0 to {_MAX_REPLAY}, not {last!r}")
    return filt, replay


async def replay_frames(journal_dir: Path, n: int, filt: EventFilter, unseen: Unseen) -> bytes:
    """The last ``n`` matching events of every chain in ``journal_dir`` as frames, then the
    ``replayed`` frame (even after none: a reader that wants only the replay stops there)."""
    records = await asyncio.to_thread(last_records, journal_dir, n, filt)
    frames = [_frame(record, orjson.dumps(record)) for record in records if unseen(record)]
    return b"".join(frames) + b"event: replayed\ndata: {}\n\n"


async def audit_stream(request: web.Request) -> web.StreamResponse:
    broadcaster = request.app[BROADCASTER]
    try:
        filt, replay = parse_stream_query(request.query)
    except ValueError as exc:
        return json_error(400, str(exc))

    # Subscribe before reading the replay, so nothing written meanwhile falls in between.
    subscription = broadcaster.subscribe(filt)
    response = web.StreamResponse(headers=STREAM_HEADERS)
    try:
        await response.prepare(request)
        unseen = Unseen()  # the replay and the live events overlap
        if replay is not None:
            journal_dir = request.app[JOURNAL_DIR]
            await response.write(await replay_frames(journal_dir, replay, filt, unseen))
        # A console session's stream ends with the session (sign-out, expiry), at the
        # latest at the next keep-alive.
        session, auth = request.get(CONSOLE_SESSION), request.app.get(CONSOLE_AUTH)
        while not subscription.closed:
            batch = await subscription.next_batch(_KEEPALIVE_S)
            if session is not None and auth is not None and not auth.sessions.alive(session):
                break
            if subscription.dropped:
                reason = f"the reader fell more than {subscription.limit} events behind"
                await response.write(
                    b"event: dropped\ndata: " + orjson.dumps({"reason": reason}) + b"\n\n"
                )
                log.warning("audit_stream_reader_dropped", remote=request.remote)
                break
            if not batch:
                await response.write(b": keep-alive\n\n")
                continue
            frames = b"".join(
                _frame(record, line.rstrip(b"\n")) for record, line in batch if unseen(record)
            )
            await response.write(frames)
    except ConnectionResetError:
        pass  # the reader left
    finally:
        broadcaster.unsubscribe(subscription)
    return response


def _frame(record: dict[str, Any], data: bytes) -> bytes:
    chain = record.get("chain") or {}
    chain_id, seq = chain.get("id"), chain.get("seq")
    # orjson escapes newlines inside strings: one event is always one data line.
    return f"id: {chain_id}:{seq}\nevent: audit\ndata: ".encode() + data + b"\n\n"
