"""The browser fixtures end to end: a page served by aiohttp under the console's strict
Content-Security-Policy, loaded in the real headless Chromium."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from keyledger.proxy.admin.console import CSP  # the policy the console is served with
from tests.browser.conftest import HEIGHT, NARROW, WIDTH, Browser

pytestmark = pytest.mark.browser


PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>keyledger browser smoke test</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/smoke.css">
<script src="/smoke.js" defer></script>
</head>
<body>
<h1>keyledger</h1>
<p id="external">the external script did not run</p>
<p id="inline">the inline script did not run</p>
<script>document.getElementById("inline").textContent = "the inline script ran";</script>
</body>
</html>
"""

SCRIPT = """\
document.getElementById("external").textContent = "the external script ran";
document.body.dataset.width = String(window.innerWidth);
"""

STYLE = "h1 { color: rgb(11, 94, 215); font-family: sans-serif; }\n"


@web.middleware
async def content_security_policy(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every response carries the CSP, as the console's will."""
    response = await handler(request)
    response.headers["Content-Security-Policy"] = CSP
    return response


def smoke_app() -> web.Application:
    """The page, its script and its stylesheet."""

    def text(body: str, content_type: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return web.Response(text=body, content_type=content_type)

        return handle

    app = web.Application(middlewares=[content_security_policy])
    app.router.add_get("/", text(PAGE, "text/html"))
    app.router.add_get("/smoke.js", text(SCRIPT, "text/javascript"))
    app.router.add_get("/smoke.css", text(STYLE, "text/css"))
    return app


class TestSmoke:
    def test_runs_external_script_and_blocks_inline_one(
        self, browser: Browser, serve: Callable[[web.Application], str]
    ) -> None:
        """The external script changes the page; the CSP blocks the inline one, and says so."""
        browser.get(serve(smoke_app()) + "/")
        driver = browser.driver

        external = driver.find_element("id", "external")
        assert external.text == "the external script ran"
        assert driver.find_element("id", "inline").text == "the inline script did not run"
        color = driver.execute_script("return getComputedStyle(document.querySelector('h1')).color")
        assert color == "rgb(11, 94, 215)"  # the stylesheet ('self') was applied
        assert driver.execute_script("return [window.innerWidth, window.innerHeight]") == [
            WIDTH,
            HEIGHT,
        ]

        errors = browser.console_errors()
        assert len(errors) == 1, errors  # the inline script, and nothing else
        assert errors[0].source == "security"
        assert "inline script" in errors[0].message
        assert "Content Security Policy" in errors[0].message

        path = browser.screenshot("browser-smoke")
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    def test_narrow_window(self, browser: Browser, serve: Callable[[web.Application], str]) -> None:
        """``narrow()`` gives the page a narrow viewport, and the full size back after it."""
        url = serve(smoke_app()) + "/"
        with browser.narrow():
            browser.get(url)
            assert browser.driver.find_element("tag name", "body").get_attribute(
                "data-width"
            ) == str(NARROW)
        assert browser.driver.execute_script("return window.innerWidth") == WIDTH
