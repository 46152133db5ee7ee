"""The console's sessions and files, through the admin API over real sockets.

``make_admin_app`` serves a real ``Journal`` in ``tmp_path``, as ``admin_app_for`` wires it;
every sign-in, failed sign-in and sign-out is read back from the journal's files.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient

from keyledger.console import STATIC
from keyledger.devtls import client_context, ensure_dev_tls, server_context
from keyledger.proxy.admin import make_admin_app
from keyledger.proxy.admin.console import CSP
from keyledger.proxy.admin.console_sessions import SessionStore
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.audit.stream import AuditBroadcaster
from keyledger.proxy.config import ConfigError, ConsoleConfig, parse_config
from keyledger.proxy.failures import FailureFold
from tests.conftest import journal_events, listen, write_proxy_files
from tests.proxy.test_admin import NotAsked
from tests.proxy.test_admin_query import AUTH, CHAIN, TOKEN

Client = TestClient[web.Request, web.Application]


@dataclass
class Console:
    client: Client
    journal: Journal
    directory: Path

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    def same_origin(self) -> dict[str, str]:
        return {"Origin": self.origin}

    async def sign_in(
        self, token: str = TOKEN.decode(), headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        return await self.client.post(
            "/ui/session",
            data={"token": token},
            headers=self.same_origin() if headers is None else headers,
        )

    async def session(self) -> str:
        """A signed-in session's cookie header, as the browser would send it."""
        response = await self.sign_in()
        assert response.status == 200
        morsel = response.cookies["keyledger_console"]
        return f"keyledger_console={morsel.value}"

    async def get(self, path: str, cookie: str) -> int:
        response = await self.client.get(path, headers={"Cookie": cookie})
        await response.read()
        return response.status

    def events(self, kind: str) -> list[dict[str, Any]]:
        return journal_events(self.directory, kind)


def admin_app(
    directory: Path,
    journal: Journal | None,
    console: ConsoleConfig | None = None,
    failures: FailureFold | None = None,
    broadcaster: AuditBroadcaster | None = None,
) -> web.Application:
    return make_admin_app(
        token=TOKEN,
        broadcaster=broadcaster or AuditBroadcaster(),
        journal_dir=directory,
        registry=CollectorRegistry(),
        readiness=NotAsked(),
        journal=journal,
        console=console,
        failures=failures,
    )


async def console_for(
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    console: ConsoleConfig | None = None,
    fold: bool = False,
) -> AsyncIterator[Console]:
    directory = tmp_path / "audit"
    broadcaster = AuditBroadcaster()  # the journal publishes to it, as keyledger wires them
    journal = Journal(
        directory=directory, chain_id=CHAIN, fsync=False, on_durable=broadcaster.publish
    )
    await journal.start()
    failures = FailureFold(journal, individual=2, delay_s=0) if fold else None
    try:
        # No cookie jar: each test sends the cookie it means to, explicitly.
        client = await aiohttp_client(
            admin_app(directory, journal, console, failures, broadcaster),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        yield Console(client, journal, directory)
    finally:
        await journal.close()


@pytest.fixture
async def console(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[Console]:
    async for running in console_for(aiohttp_client, tmp_path):
        yield running


def lifecycle(console: Console, name: str) -> list[dict[str, Any]]:
    return [e for e in console.events("lifecycle") if e["detail"]["event"] == name]


class TestSignIn:
    async def test_the_admin_token_buys_a_session_cookie(self, console: Console) -> None:
        """HttpOnly, SameSite=Strict, Path=/, an expiry, no Secure over plain HTTP; the
        sign-in is on record, naming the session by a handle that is not its id."""
        response = await console.sign_in()

        assert response.status == 200
        body = await response.json()
        header = response.headers["Set-Cookie"]
        assert header.startswith("keyledger_console=")
        attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "secure" not in attributes
        assert "SameSite=Strict" in header
        assert "Max-Age=28800" in header  # admin.console.session_ttl: 8h by default
        assert "Path=/" in header
        session_id = response.cookies["keyledger_console"].value
        assert len(session_id) >= 40
        (signed_in,) = lifecycle(console, "console_signed_in")
        assert signed_in["detail"]["session"] == body["session"]
        assert signed_in["request"]["protocol"] == "console"
        assert signed_in["principal"] == {
            "id": "admin",
            "auth_method": "admin_token",
            "groups": [],
            "attributes": {},
        }
        journal = b"".join(p.read_bytes() for p in console.directory.glob("*.jsonl"))
        assert session_id.encode() not in journal
        assert TOKEN not in journal

    async def test_a_wrong_token_is_refused_and_recorded(self, console: Console) -> None:
        response = await console.sign_in("a-wrong-token-of-some-length")

        assert response.status == 401
        assert "wrong admin token" in (await response.json())["error"]
        assert "Set-Cookie" not in response.headers
        (failure,) = console.events("auth_failure")
        assert failure["request"]["protocol"] == "console"
        assert failure["request"]["operation"] == "SignIn"
        assert failure["outcome"]["code"] == "bad_admin_token"
        assert lifecycle(console, "console_signed_in") == []

    async def test_repeated_wrong_tokens_from_one_address_must_wait(self, console: Console) -> None:
        """Past ten wrong tokens a minute, even the right one is refused (429) for a while."""
        for _ in range(10):
            assert (await console.sign_in("guess-guess-guess-guess")).status == 401

        refused = await console.sign_in()

        assert refused.status == 429
        assert 0 < int(refused.headers["Retry-After"]) <= 60
        assert "Set-Cookie" not in refused.headers
        codes = [e["outcome"]["code"] for e in console.events("auth_failure")]
        assert codes == ["bad_admin_token"] * 10 + ["throttled"]

    async def test_a_flood_of_failures_is_folded(
        self, aiohttp_client: AiohttpClient, tmp_path: Path
    ) -> None:
        """With the data plane's FailureFold, failures past its first few are counted into
        one aggregate event, as failed sign-ins on the data plane are."""
        async for console in console_for(aiohttp_client, tmp_path, fold=True):
            for _ in range(5):
                assert (await console.sign_in("guess-guess-guess-guess")).status == 401
            assert len(console.events("auth_failure")) == 2  # the fold's individual=2

    @pytest.mark.parametrize(
        "headers",
        [
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
            {},  # neither: not a page of ours
        ],
        ids=["other-origin", "opaque-origin", "cross-site-fetch", "no-origin"],
    )
    async def test_a_sign_in_from_another_site_is_refused(
        self, console: Console, headers: dict[str, str]
    ) -> None:
        response = await console.sign_in(headers=headers)

        assert response.status == 403
        assert "Set-Cookie" not in response.headers
        assert lifecycle(console, "console_signed_in") == []

    async def test_a_browser_without_origin_but_same_origin_fetch_is_let_in(
        self, console: Console
    ) -> None:
        response = await console.sign_in(headers={"Sec-Fetch-Site": "same-origin"})
        assert response.status == 200


class TestSessions:
    async def test_a_session_opens_the_console_reads_and_the_stream_only(
        self, console: Console
    ) -> None:
        """The cookie opens the /v1/ endpoints (the stream included); /metrics and the
        readiness details still need the token."""
        cookie = await console.session()

        assert await console.get("/v1/events?limit=1", cookie) == 200
        assert await console.get("/v1/integrity", cookie) == 200
        async with console.client.get("/v1/audit/stream", headers={"Cookie": cookie}) as stream:
            assert stream.status == 200
        assert await console.get("/metrics", cookie) == 401
        assert await console.get("/v1/events?limit=1", "keyledger_console=forged") == 401
        state = await (await console.client.get("/ui/session", headers={"Cookie": cookie})).json()
        assert state["signed_in"] is True

    async def test_sign_out_ends_the_session_on_the_server(self, console: Console) -> None:
        cookie = await console.session()

        response = await console.client.post(
            "/ui/sign-out", headers={"Cookie": cookie, **console.same_origin()}
        )

        assert response.status == 200
        assert "Max-Age=0" in response.headers["Set-Cookie"]
        assert await console.get("/v1/events?limit=1", cookie) == 401
        (ended,) = lifecycle(console, "console_signed_out")
        (began,) = lifecycle(console, "console_signed_in")
        assert ended["detail"]["session"] == began["detail"]["session"]

    async def test_signing_out_ends_the_sessions_stream(self, console: Console) -> None:
        """A stream opened with the cookie stops once its session has ended."""
        cookie = await console.session()
        async with console.client.get(
            "/v1/audit/stream?type=lifecycle", headers={"Cookie": cookie}
        ) as stream:
            assert stream.status == 200
            signed_out = await console.client.post(
                "/ui/sign-out", headers={"Cookie": cookie, **console.same_origin()}
            )
            assert signed_out.status == 200
            # The sign-out's own event wakes the stream, which then sees the session over.
            body = await asyncio.wait_for(stream.content.read(), timeout=5)
        assert b"console_signed_out" not in body  # ended before sending it

    async def test_a_cross_site_sign_out_is_refused(self, console: Console) -> None:
        cookie = await console.session()

        response = await console.client.post(
            "/ui/sign-out", headers={"Cookie": cookie, "Origin": "http://evil.example"}
        )

        assert response.status == 403
        assert await console.get("/v1/events?limit=1", cookie) == 200

    async def test_verify_by_cookie_must_come_from_the_console(self, console: Console) -> None:
        """POST /v1/verify with the cookie: refused from another origin (nothing starts),
        started from the console's own, and recorded as the console session's."""
        cookie = await console.session()

        forged = await console.client.post(
            "/v1/verify", headers={"Cookie": cookie, "Origin": "http://evil.example"}
        )
        assert forged.status == 403
        state = await (await console.client.get("/v1/verify", headers=AUTH)).json()
        assert state["state"] == "idle"

        started = await console.client.post(
            "/v1/verify", headers={"Cookie": cookie, **console.same_origin()}
        )
        assert started.status == 202
        for _ in range(200):
            if lifecycle(console, "journal_verified"):
                break
            await asyncio.sleep(0.02)
        (verified,) = lifecycle(console, "journal_verified")
        (began,) = lifecycle(console, "console_signed_in")
        assert verified["detail"]["requested_by"] == f"console session {began['detail']['session']}"

    async def test_the_token_needs_no_origin(self, console: Console) -> None:
        """Scripts with the bearer token are not browsers: no CSRF check applies."""
        response = await console.client.post("/v1/verify", headers=AUTH)
        assert response.status == 202
        for _ in range(200):  # the run happened, and is on record
            if lifecycle(console, "journal_verified"):
                break
            await asyncio.sleep(0.02)
        (verified,) = lifecycle(console, "journal_verified")
        assert verified["detail"]["requested_by"] == "admin-api"

    async def test_sessions_are_bounded_the_oldest_ends_first(
        self, aiohttp_client: AiohttpClient, tmp_path: Path
    ) -> None:
        config = ConsoleConfig(max_sessions=2)
        async for console in console_for(aiohttp_client, tmp_path, config):
            first, second, third = [await console.session() for _ in range(3)]

            assert await console.get("/v1/events?limit=1", first) == 401
            assert await console.get("/v1/events?limit=1", second) == 200
            assert await console.get("/v1/events?limit=1", third) == 200
            signed_in = lifecycle(console, "console_signed_in")
            assert signed_in[2]["detail"]["ended_session"] == signed_in[0]["detail"]["session"]

    async def test_the_cookie_lasts_as_configured(
        self, aiohttp_client: AiohttpClient, tmp_path: Path
    ) -> None:
        async for console in console_for(
            aiohttp_client, tmp_path, ConsoleConfig(session_ttl_s=900)
        ):
            response = await console.sign_in()
            assert "Max-Age=900" in response.headers["Set-Cookie"]

    async def test_over_tls_the_cookie_is_secure_and_host_only(self, tmp_path: Path) -> None:
        """An admin listener speaking TLS sets Secure, under the __Host- prefix."""
        directory = tmp_path / "audit"
        journal = Journal(directory=directory, chain_id=CHAIN, fsync=False)
        await journal.start()
        tls = ensure_dev_tls(tmp_path / "tls", names=("localhost",))
        runner = await listen(admin_app(directory, journal), server_context(tls.cert, tls.key))
        port = runner.addresses[0][1]
        origin = f"https://localhost:{port}"
        try:
            async with (
                aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
                http.post(
                    f"{origin}/ui/session",
                    data={"token": TOKEN.decode()},
                    headers={"Origin": origin},
                    ssl=client_context(tls.ca_cert),
                ) as response,
            ):
                assert response.status == 200
                header = response.headers["Set-Cookie"]
        finally:
            await runner.cleanup()
            await journal.close()
        assert header.startswith("__Host-keyledger_console=")
        assert "Secure" in header
        assert "HttpOnly" in header


class TestSessionStore:
    def test_a_session_ends_at_its_expiry(self) -> None:
        now = [1000.0]
        store = SessionStore(ttl_s=60, limit=10, clock=lambda: now[0])
        session_id, session, _ = store.create(source_ip="10.0.0.1")

        now[0] += 59.9
        assert store.get(session_id) == session
        now[0] += 0.1
        assert store.get(session_id) is None
        assert len(store) == 0

    def test_ids_are_random_and_only_their_hash_is_kept(self) -> None:
        store = SessionStore(ttl_s=60, limit=10)
        first, session, _ = store.create(source_ip=None)
        second, _, _ = store.create(source_ip=None)

        assert first != second
        assert first.encode() not in session.digest
        assert session.handle not in first
        assert store.get(first[:-1] + ("A" if first[-1] != "A" else "B")) is None
        assert store.get("x" * 10_000) is None
        assert store.get(None) is None

    def test_ended_sessions_are_gone(self) -> None:
        store = SessionStore(ttl_s=60, limit=10)
        session_id, session, _ = store.create(source_ip=None)

        assert store.end(session) is True
        assert store.get(session_id) is None
        assert store.end(session) is False

    def test_never_more_than_the_limit(self) -> None:
        store = SessionStore(ttl_s=60, limit=3)
        made = [store.create(source_ip=None) for _ in range(5)]

        assert len(store) == 3
        assert made[3][2] == made[0][1]  # the fourth pushed out the first
        assert store.get(made[1][0]) is None
        assert store.get(made[4][0]) == made[4][1]


class TestFiles:
    async def test_the_console_page_and_its_headers(self, console: Console) -> None:
        response = await console.client.get("/ui/")

        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "no-cache"
        assert '<script type="module" src="app.js">' in await response.text()
        again = await console.client.get(
            "/ui/", headers={"If-None-Match": response.headers["ETag"]}
        )
        assert again.status == 304

    async def test_scripts_and_styles_by_their_type(self, console: Console) -> None:
        for name, kind in [
            ("app.js", "text/javascript"),
            ("pages/live.js", "text/javascript"),
            ("console.css", "text/css"),
            ("favicon.svg", "image/svg+xml"),
        ]:
            response = await console.client.get(f"/ui/{name}")
            assert response.status == 200, name
            assert response.headers["Content-Type"].startswith(kind), name

    async def test_bare_ui_goes_to_the_page(self, console: Console) -> None:
        response = await console.client.get("/ui", allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (302, "/ui/")

    async def test_api_answers_carry_the_headers_and_are_never_cached(
        self, console: Console
    ) -> None:
        for response in [
            await console.client.get("/v1/events", headers=AUTH),
            await console.client.get("/v1/events"),  # refused: 401
            await console.client.get("/ui/session"),
        ]:
            assert response.headers["Cache-Control"] == "no-store"
            assert response.headers["Content-Security-Policy"] == CSP
            assert response.headers["X-Frame-Options"] == "DENY"

    @pytest.mark.parametrize(
        "target",
        [
            "/ui/../pyproject.toml",
            "/ui/..%2f..%2f..%2fpyproject.toml",
            "/ui/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
            "/ui/..%2f..%2fproxy%2fadmin%2fconsole.py",
            "/ui/pages/../../__init__.py",
            "/ui//etc/passwd",
            "/ui/%2fetc%2fpasswd",
            "/ui/..\\..\\__init__.py",
            "/ui/static/app.js",
        ],
    )
    async def test_no_path_reaches_another_file(self, console: Console, target: str) -> None:
        """Only the console's own files, by name: traversal in any spelling finds nothing,
        though a server joining the path to its folder would find a file there."""
        joined = (STATIC / unquote(target.removeprefix("/ui/")).replace("\\", "/")).resolve()
        assert joined.is_file() or target in (
            "/ui/../pyproject.toml",  # a plain ".." the HTTP server resolves itself
            "/ui/static/app.js",  # no such name in the console
        ), f"{target} names no file: the case no longer tests anything"
        host, port = console.client.server.host, console.client.server.port
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await reader.read()
        writer.close()

        status = int(answer.split(b" ", 2)[1])
        assert status in (400, 401, 404), answer[:200]
        assert b"[project]" not in answer
        assert b"from __future__" not in answer  # no Python source of the package
        assert b"root:" not in answer
        assert b"__all__" not in answer

    async def test_console_can_be_turned_off(
        self, aiohttp_client: AiohttpClient, tmp_path: Path
    ) -> None:
        async for console in console_for(aiohttp_client, tmp_path, ConsoleConfig(enabled=False)):
            assert (await console.client.get("/ui/")).status == 404
            assert (await console.sign_in()).status == 404
            assert (await console.client.get("/v1/events", headers=AUTH)).status == 200


class TestNoInlineCode:
    """The CSP forbids inline script and style; the files never rely on either, and never
    turn data into markup."""

    def test_html_has_no_inline_script_or_style(self) -> None:
        for path in STATIC.rglob("*.html"):
            html = path.read_text()
            assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], path
            assert "<style" not in html, path
            assert not re.search(r"\sstyle\s*=", html), path
            assert not re.search(r"\son[a-z]+\s*=", html), path  # onclick= and the like
            assert "http://" not in html, path  # nothing from elsewhere
            assert "https://" not in html, path

    @pytest.mark.parametrize("path", sorted(STATIC.rglob("*.js")), ids=lambda p: p.name)
    def test_scripts_build_the_page_from_text(self, path: Path) -> None:
        code = path.read_text()
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            ".style.",
            "cssText",
        ):
            assert sink not in code, f"{path.name} uses {sink}"
        assert not re.search(r"""(fetch|EventSource)\(\s*["'`]https?:""", code), path


class TestConfig:
    def _admin(self, tmp_path: Path, console: dict[str, Any] | None) -> Any:
        doc = write_proxy_files(tmp_path)
        if console is not None:
            doc["admin"]["console"] = console
        return parse_config(doc, base=tmp_path, source="test.yaml").admin

    def test_defaults(self, tmp_path: Path) -> None:
        admin = self._admin(tmp_path, None)
        assert admin.console == ConsoleConfig(
            enabled=True, session_ttl_s=8 * 3600, max_sessions=100
        )

    def test_settings(self, tmp_path: Path) -> None:
        admin = self._admin(tmp_path, {"session_ttl": "30m", "max_sessions": 5, "enabled": False})
        assert admin.console == ConsoleConfig(enabled=False, session_ttl_s=1800, max_sessions=5)

    @pytest.mark.parametrize(
        ("console", "wanted"),
        [
            ({"session_ttl": "1m"}, "admin.console.session_ttl: expected 5m to 7d"),
            ({"session_ttl": "30d"}, "expected 5m to 7d"),
            ({"max_sessions": 0}, "admin.console.max_sessions"),
            ({"session_tll": "1h"}, "session_tll"),
        ],
    )
    def test_bad_settings_name_the_setting(
        self, tmp_path: Path, console: dict[str, Any], wanted: str
    ) -> None:
        with pytest.raises(ConfigError, match=re.escape(wanted)):
            self._admin(tmp_path, console)


def test_every_console_file_is_package_data() -> None:
    """pyproject's package data names every file of the console, so a wheel serves them."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["keyledger.console"]
    shipped = {path for pattern in globs for path in STATIC.parent.glob(pattern)}
    files = {path for path in STATIC.rglob("*") if path.is_file()}
    assert len(files) > 10
    assert files - shipped == set()
