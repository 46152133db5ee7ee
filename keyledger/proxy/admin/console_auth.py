"""Signing in to the console: the admin token for a session cookie, every step on record.

POST /ui/session          ``token=<admin token>`` (form-encoded): a session cookie, or 401
GET  /ui/session          whether this browser is signed in, and until when
POST /ui/sign-out         end this browser's session, here on the server

The cookie is HttpOnly (scripts never see it), SameSite=Strict (no other site's page makes
the browser send it), Path=/, with a Max-Age of the session's time left, and Secure when
the admin listener speaks TLS (then named with the ``__Host-`` prefix, which the browser
only accepts Secure and for this host alone).

**CSRF.** A cookie is sent by the browser on its own, so every state-changing request that
a cookie may authorise (sign-in, sign-out, ``POST /v1/verify``) must also come from the
console's own pages: its ``Origin`` must be this listener's own origin, or, when a browser
sends no ``Origin``, ``Sec-Fetch-Site`` must be ``same-origin``. Browsers set both and pages
cannot forge them; with SameSite=Strict a cross-site request does not even carry the
cookie. A custom header would work as well, but needs the same check to be trusted and
breaks a plain form post; the origin check needs nothing from the pages. Requests with
the bearer token (scripts, ``curl``) need no such check: no browser adds that header.

**On record.** A sign-in is a ``lifecycle`` event ``console_signed_in``, a sign-out
``console_signed_out``; a wrong token is an ``auth_failure`` event with ``request.protocol``
``console``, folded with other failed sign-ins from its source when they flood
(:class:`~.failures.FailureFold`). Each event is durable before the answer: a journal that
cannot write means no session (503), as a data-plane call is refused then.

Wrong tokens are also limited here: past :data:`FAILURES_ALLOWED` failures from one
address within :data:`FAILURE_WINDOW_S`, sign-ins from it are refused (429) until the
window has passed, without the token being looked at.
"""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from keyledger.ids import request_id
from keyledger.proxy.admin.console_sessions import Session, SessionStore
from keyledger.proxy.admin.http import json_error, json_response
from keyledger.proxy.admin.keys import EXPECTED_AUTHORIZATION
from keyledger.proxy.audit.events import (
    AuditEvent,
    EventType,
    Outcome,
    PrincipalInfo,
    RequestInfo,
    Status,
    format_time,
)
from keyledger.proxy.audit.journal import Journal, JournalUnavailable
from keyledger.proxy.failures import FailureFold

__all__ = [
    "CONSOLE_AUTH",
    "CONSOLE_SESSION",
    "FAILURES_ALLOWED",
    "FAILURE_WINDOW_S",
    "PROTOCOL",
    "ConsoleAuth",
    "SignInLimiter",
    "add_session_routes",
    "cookie_name",
    "refuse_cross_site",
    "same_origin",
]

log = structlog.get_logger("keyledger.console")

PROTOCOL = "console"  # request.protocol of the console's events
PRINCIPAL = PrincipalInfo(id="admin", auth_method="admin_token")
FAILURES_ALLOWED = 10  # wrong tokens from one address per window before it must wait
FAILURE_WINDOW_S = 60.0
_SOURCES_TRACKED = 10_000  # addresses whose failures are remembered (the oldest forgotten)
_MAX_TOKEN = 1024


def cookie_name(request: web.Request) -> str:
    """``__Host-`` over TLS: the browser then takes it only Secure, for this host, Path=/."""
    return "__Host-keyledger_console" if request.secure else "keyledger_console"


def same_origin(request: web.Request) -> bool:
    """Whether a browser says this request comes from a page of this very listener."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return hmac.compare_digest(origin.encode(), f"{request.scheme}://{request.host}".encode())
    return request.headers.get("Sec-Fetch-Site") == "same-origin"


class SignInLimiter:
    """Wrong tokens per source address within a sliding window; bounded in addresses."""

    def __init__(
        self,
        *,
        allowed: int = FAILURES_ALLOWED,
        window_s: float = FAILURE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._allowed = allowed
        self._window = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, source: str | None) -> float:
        """0 if ``source`` may try now, else the seconds until it may."""
        times = self._failures.get(source or "")
        if times is None:
            return 0.0
        now = self._clock()
        while times and now - times[0] >= self._window:
            times.popleft()
        if len(times) < self._allowed:
            return 0.0
        return self._window - (now - times[0])

    def failed(self, source: str | None) -> None:
        key = source or ""
        times = self._failures.pop(key, None) or deque(maxlen=self._allowed)
        times.append(self._clock())
        self._failures[key] = times  # re-inserted: the dict's order is least recent first
        if len(self._failures) > _SOURCES_TRACKED:
            del self._failures[next(iter(self._failures))]


class ConsoleAuth:
    """The console's sessions and its sign-in, recorded in ``journal``."""

    def __init__(
        self,
        *,
        sessions: SessionStore,
        journal: Journal | None,
        failures: FailureFold | None = None,
        limiter: SignInLimiter | None = None,
    ) -> None:
        self.sessions = sessions
        self._journal = journal
        self._failures = failures
        self._limiter = limiter or SignInLimiter()

    def session_of(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(cookie_name(request)))

    async def sign_in(self, request: web.Request) -> web.Response:
        if not same_origin(request):
            return refuse_cross_site(request)
        source = request.remote
        wait = self._limiter.retry_after(source)
        if wait > 0:
            await self._refused(request, "throttled", "too many wrong tokens from this address")
            return json_error(
                429,
                f"too many wrong admin tokens from {source}: try again in {wait:.0f} s",
                **{"Retry-After": str(max(int(wait + 0.999), 1))},
            )
        form = await request.post()
        token = form.get("token")
        given = token.strip().encode() if isinstance(token, str) else b""
        expected = request.app[EXPECTED_AUTHORIZATION]
        # Constant time, as the bearer check: the comparison tells nothing of a near miss.
        if (
            not given
            or len(given) > _MAX_TOKEN
            or not hmac.compare_digest(b"Bearer " + given, expected)
        ):
            self._limiter.failed(source)
            await self._refused(request, "bad_admin_token", "the admin token given was wrong")
            return json_error(
                401,
                "wrong admin token: give the admin API's token (admin.token_file or "
                "KEYLEDGER_ADMIN_TOKEN; `keyledger serve --dev` prints it)",
            )
        if self._journal is None:
            return json_error(503, "this admin API has no journal to record sign-ins in")
        session_id, session, evicted = self.sessions.create(source_ip=source)
        detail: dict[str, Any] = {
            "event": "console_signed_in",
            "session": session.handle,
            "expires": _iso(session.expires),
        }
        if evicted is not None:
            detail["ended_session"] = evicted.handle  # pushed out: the table is full
        try:
            await self._record(request, "SignIn", detail)
        except JournalUnavailable as exc:
            self.sessions.end(session)
            log.error("console_sign_in_unrecorded", error=str(exc))
            return json_error(503, f"the sign-in could not be recorded, so it is refused: {exc}")
        log.info("console_signed_in", session=session.handle, remote=source)
        response = json_response(_state(session))
        response.set_cookie(
            cookie_name(request),
            session_id,
            max_age=int(self.sessions.ttl_s),
            path="/",
            secure=request.secure,
            httponly=True,
            samesite="Strict",
        )
        return response

    async def sign_out(self, request: web.Request) -> web.Response:
        if not same_origin(request):
            return refuse_cross_site(request)
        session = self.session_of(request)
        if session is not None and self.sessions.end(session):
            detail = {"event": "console_signed_out", "session": session.handle}
            try:
                await self._record(request, "SignOut", detail)
            except JournalUnavailable as exc:
                # The session is over either way; only its record is missing (logged).
                log.error("console_sign_out_unrecorded", error=str(exc), session=session.handle)
            log.info("console_signed_out", session=session.handle, remote=request.remote)
        response = json_response({"signed_in": False})
        response.del_cookie(cookie_name(request), path="/", secure=request.secure)
        return response

    async def state(self, request: web.Request) -> web.Response:
        session = self.session_of(request)
        return json_response(_state(session) if session else {"signed_in": False})

    def _request_info(self, request: web.Request, operation: str) -> RequestInfo:
        return RequestInfo(
            id=request_id(),
            protocol=PROTOCOL,
            operation=operation,
            source_ip=request.remote,
            user_agent=request.headers.get("User-Agent", "")[:512] or None,
        )

    async def _record(self, request: web.Request, operation: str, detail: dict[str, Any]) -> None:
        assert self._journal is not None
        await self._journal.append(
            AuditEvent(
                type=EventType.LIFECYCLE,
                request=self._request_info(request, operation),
                principal=PRINCIPAL,
                detail=detail,
            )
        )

    async def _refused(self, request: web.Request, code: str, reason: str) -> None:
        """A failed sign-in on record (or counted into its flood's aggregate)."""
        info = self._request_info(request, "SignIn")
        who = PrincipalInfo(id=None, auth_method=PRINCIPAL.auth_method)
        log.warning("console_sign_in_refused", code=code, remote=request.remote)
        if self._failures is not None and not self._failures.admit(
            source=request.remote, reason=code, request=info, principal=who
        ):
            await self._failures.hold()  # one of a flood: counted, answered late
            return
        if self._journal is None:
            return
        event = AuditEvent(
            type=EventType.AUTH_FAILURE,
            request=info,
            principal=who,
            outcome=Outcome(status=Status.DENIED, code=code),
            detail={"reason": reason},
        )
        try:
            await self._journal.append(event)
        except JournalUnavailable as exc:
            log.error("console_sign_in_failure_unrecorded", error=str(exc))


CONSOLE_AUTH = web.AppKey("console_auth", ConsoleAuth)
# The session a request came in with, when a console session (not the token) let it in.
CONSOLE_SESSION = web.RequestKey("console_session", Session)


def add_session_routes(app: web.Application) -> None:
    auth = app[CONSOLE_AUTH]
    app.router.add_post("/ui/session", auth.sign_in)
    app.router.add_get("/ui/session", auth.state)
    app.router.add_post("/ui/sign-out", auth.sign_out)


def _iso(moment: float) -> str:
    return format_time(datetime.fromtimestamp(moment, UTC))


def _state(session: Session) -> dict[str, Any]:
    return {"signed_in": True, "session": session.handle, "expires": _iso(session.expires)}


def refuse_cross_site(request: web.Request) -> web.Response:
    log.warning(
        "console_cross_site_refused",
        path=request.path,
        origin=request.headers.get("Origin"),
        remote=request.remote,
    )
    return json_error(
        403,
        "refused: this request did not come from the console's own pages (its Origin is "
        "not this listener's)",
    )
