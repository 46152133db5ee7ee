"""The web console end to end: a real keyledger (data plane and admin listener on real
sockets, in front of a real moto server), called by boto3, watched in the real headless
Chromium through the console it serves under ``/ui/``.

Each test signs in with the admin token, drives the pages a security team uses, checks
what they show against what the calls did, and that no page logged an error (a script
exception, a Content-Security-Policy violation, a failed load). The screenshots of the
main pages land in ``docs/screenshots/console-*.png`` (the README shows one).
"""

from __future__ import annotations

import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from keyledger.proxy.audit.segments import discover
from tests.browser.conftest import Browser
from tests.conftest import RunningProxy, running_proxy

pytestmark = pytest.mark.browser

# A caller may name any secret: markup and a terminal escape, as an attacker would.
HOSTILE = 'app/<script>window.pwned=1</script><img src=x onerror="window.pwned=2">\x1b[31mred'

RULES = """
    version: 1
    rules:
      - id: stranger-denied
        severity: high
        deny_burst: {count: 3, window: 1m}
      - id: decoy-touched
        severity: critical
        canary: {secrets: ["aws:app/decoy"]}
"""


@dataclass
class Console:
    """A running keyledger, and the browser pointed at its console."""

    proxy: RunningProxy
    browser: Browser

    @property
    def url(self) -> str:
        return self.proxy.admin_url + "/ui/"

    def find(self, css: str) -> WebElement:
        return self.browser.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.browser.driver.find_elements(By.CSS_SELECTOR, css)

    def until(self, condition: Callable[[], Any], timeout: float = 5.0) -> Any:
        return self.browser.wait(timeout).until(lambda _: condition())

    def visible(self, css: str, timeout: float = 5.0) -> WebElement:
        def shown() -> WebElement | None:
            found = self.find_all(css)
            return found[0] if found and found[0].is_displayed() else None

        found: WebElement = self.until(shown, timeout)
        return found

    def sign_in(self, token: str | None = None) -> None:
        self.browser.get(self.url)
        field = self.visible("#token")
        field.send_keys(token or self.proxy.admin_token)
        field.send_keys(Keys.ENTER)

    def signed_in(self) -> None:
        self.sign_in()
        self.visible("#nav")
        self.visible("#live-rows")

    def go(self, route: str) -> None:
        self.browser.driver.execute_script("location.hash = arguments[0]", route)

    def live_rows(self) -> list[str]:
        rows: list[str] = self.browser.driver.execute_script(
            "return [...document.querySelectorAll('#live-rows tr')].map(r => r.textContent)"
        )
        return rows

    def no_errors(self) -> None:
        """Nothing went wrong in the page: no exception, no CSP violation, no failed load."""
        assert self.browser.console_errors() == []


def read(proxy: RunningProxy, secret: str, identity: str = "app") -> None:
    proxy.client(identity).get_secret_value(SecretId=secret)


def refused(proxy: RunningProxy, secret: str, identity: str = "app") -> str:
    with pytest.raises(ClientError) as caught:
        read(proxy, secret, identity)
    return str(caught.value.response["Error"]["Code"])


@pytest.fixture
def console(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None, browser: Browser
) -> Iterator[Console]:
    """keyledger in front of moto, with alert rules, two secrets, and the browser."""
    store.create_secret(Name="app/db/password", SecretString="not-shown-anywhere")
    store.create_secret(Name="app/decoy", SecretString="honey")
    rules = tmp_path / "alerts.yaml"
    rules.write_text(textwrap.dedent(RULES))
    alerts = {"rules": [str(rules)], "destinations": [{"type": "stdout"}]}
    with running_proxy(tmp_path, moto_url, extra={"alerts": alerts}) as proxy:
        yield Console(proxy, browser)


def api_status(proxy: RunningProxy, path: str, cookie: str | None = None) -> int:
    request = urllib.request.Request(proxy.admin_url + path)  # noqa: S310 (loopback http)
    if cookie is not None:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


class TestSignIn:
    def test_wrong_token_is_refused_and_the_right_one_opens_the_live_page(
        self, console: Console
    ) -> None:
        """A wrong token gets a clear error and no session; the admin token signs in, and
        both attempts are on record."""
        console.browser.get(console.url)
        console.visible("#token")
        console.browser.screenshot("console-sign-in")
        console.sign_in("not-the-admin-token-at-all")

        problem = console.visible("#sign-in-problem .message-error")
        assert "wrong admin token" in problem.text
        (refusal,) = console.browser.console_errors()  # Chromium logs the 401 itself
        assert refusal.source == "network"
        assert "/ui/session" in refusal.message
        assert "401" in refusal.message
        assert not console.find("#nav").is_displayed()
        assert console.browser.driver.get_cookies() == []

        console.signed_in()
        (cookie,) = console.browser.driver.get_cookies()
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/")
        assert cookie["secure"] is False  # plain HTTP on loopback; Secure over TLS
        assert "expiry" in cookie
        events = console.proxy.events("auth_failure", "lifecycle")
        failed = [e for e in events if e.get("request", {}).get("protocol") == "console"]
        assert [e["type"] for e in failed] == ["auth_failure", "lifecycle"]
        assert failed[1]["detail"]["event"] == "console_signed_in"
        console.no_errors()

    def test_signed_out_the_old_cookie_is_refused(self, console: Console) -> None:
        """Sign-out ends the session on the server: the API answers the old cookie 401."""
        console.signed_in()
        (cookie,) = console.browser.driver.get_cookies()
        jar = f"{cookie['name']}={cookie['value']}"
        assert api_status(console.proxy, "/v1/events?limit=1", jar) == 200

        console.find("#sign-out").click()

        console.visible("#token")
        assert "signed out" in console.find("#main").text
        assert api_status(console.proxy, "/v1/events?limit=1", jar) == 401
        assert api_status(console.proxy, "/v1/audit/stream", jar) == 401
        (ended,) = [
            e
            for e in console.proxy.events("lifecycle")
            if e["detail"]["event"] == "console_signed_out"
        ]
        assert ended["request"]["protocol"] == "console"
        console.go("#/live")  # the routes need a session again
        console.visible("#token")
        console.no_errors()


class TestLive:
    def test_a_boto3_call_appears_within_a_second_and_denials_filter(
        self, console: Console
    ) -> None:
        """A read through keyledger shows in the live table within a second of its answer;
        filtered to denials, only the refused call is left; a row opens the full event."""
        console.signed_in()
        console.until(lambda: console.find("#live-status").text == "live")

        read(console.proxy, "app/db/password")
        answered = time.monotonic()
        console.until(lambda: any("app/db/password" in r for r in console.live_rows()), 1.0)
        assert time.monotonic() - answered < 1.0
        assert refused(console.proxy, "app/forbidden-x") == "AccessDeniedException"
        console.until(lambda: any("app/forbidden-x" in r for r in console.live_rows()))
        console.browser.screenshot("console-live")

        Select(console.find("#f-effect")).select_by_value("deny")
        console.find("#filters button[type=submit]").click()
        console.until(lambda: "effect=deny" in console.browser.driver.current_url)
        console.until(lambda: any("app/forbidden-x" in r for r in console.live_rows()))
        rows = console.live_rows()
        assert all("deny" in r for r in rows), rows
        assert not any("app/db/password" in r for r in rows)

        row = console.find("#live-rows tr")
        row.send_keys(Keys.ENTER)  # the keyboard opens it as a click would
        fields = console.visible("#event-fields")
        text = fields.text
        for expected in ("decision.rule", "app-no-forbidden", "outcome.code", "AccessDenied"):
            assert expected in text
        assert "chain.hash" in text
        console.browser.screenshot("console-event")
        console.find("#explain-button").click()
        console.until(lambda: "Same decision" in console.visible("#explain-result").text)
        console.no_errors()

    def test_pause_holds_events_until_resumed(self, console: Console) -> None:
        console.signed_in()
        console.until(lambda: console.find("#live-status").text == "live")
        console.find("#pause").click()

        read(console.proxy, "app/db/password")
        console.until(lambda: "1 new" in console.find("#live-status").text)
        assert not any("app/db/password" in r for r in console.live_rows())
        console.find("#pause").click()

        assert any("app/db/password" in r for r in console.live_rows())
        console.no_errors()

    def test_narrow_window(self, console: Console) -> None:
        """At 420 px the live page keeps time, effect, action, secret and principal."""
        read(console.proxy, "app/db/password")
        refused(console.proxy, "app/forbidden-x")
        with console.browser.narrow():
            console.signed_in()
            console.until(lambda: len(console.live_rows()) >= 2)
            overflow = console.browser.driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0  # nothing wider than the window
            assert console.find("#live-rows tr td:nth-child(4)").is_displayed()
            assert not console.find("#live-rows tr td:nth-child(6)").is_displayed()
            console.browser.screenshot("console-live-narrow")
        console.no_errors()


class TestPages:
    def test_a_secret_page_with_its_chart(self, console: Console) -> None:
        for _ in range(3):
            read(console.proxy, "app/db/password")
        refused(console.proxy, "app/db/password", identity="stranger")
        console.signed_in()

        console.find("#live-rows tr a[href^='#/secret']").click()

        console.visible("#secret-chart")
        assert console.find("#secret-title").text == "app/db/password"
        assert console.find("#stat-events .stat-value").text == "4"
        assert console.find("#stat-denied .stat-value").text == "1"
        bars = console.find_all("#secret-chart svg rect.bar")
        assert sum(int(b.get_attribute("data-count") or 0) for b in bars) == 3  # allowed
        page = console.find("#main").text
        assert "app" in page
        assert "stranger" in page
        console.browser.screenshot("console-secret")
        console.no_errors()

    def test_a_principal_page_explains_a_call(self, console: Console) -> None:
        read(console.proxy, "app/db/password")
        refused(console.proxy, "app/forbidden-x")
        console.signed_in()
        console.go("#/principal?id=app")

        console.visible("#principal-summary")
        page = console.find("#main").text
        assert "sigv4" in page
        assert "127.0.0.1" in page
        assert "app-no-forbidden" in page  # the deciding rule of the refused read
        assert "app-read" in page
        console.find(".explain-call").click()
        result = console.visible("#explain-result")
        assert "app-no-forbidden" in result.text
        assert console.find("#explain-same").text.startswith("yes")
        console.browser.screenshot("console-principal")
        console.no_errors()

    def test_alerts_by_severity_with_their_triggers(self, console: Console) -> None:
        for _ in range(3):
            refused(console.proxy, "app/db/password", identity="stranger")
        read(console.proxy, "app/decoy")

        console.signed_in()
        console.go("#/alerts")

        def both() -> bool:
            return len(console.find_all("#alerts article")) == 2

        for _ in range(20):  # alerts are recorded just after the calls that trip them
            if console.find_all("#alerts article") and both():
                break
            time.sleep(0.25)
            console.go("#/live")
            console.go("#/alerts")
        console.until(both)
        first, second = console.find_all("#alerts article")
        assert "decoy-touched" in first.text  # critical before high
        assert "app/decoy" in first.text
        assert "stranger-denied" in second.text
        assert len(second.find_elements(By.CSS_SELECTOR, "tbody tr")) == 3
        console.browser.screenshot("console-alerts")
        console.no_errors()


class TestIntegrity:
    def test_verify_passes_then_a_tampered_line_fails(self, console: Console) -> None:
        read(console.proxy, "app/db/password")
        refused(console.proxy, "app/forbidden-x")
        console.signed_in()
        console.go("#/integrity")
        console.visible("#verify-now")
        assert "test" in console.find("#main table").text  # the chain, with its last seq

        console.find("#verify-now").click()
        passed = console.visible("#verify-result", timeout=20)
        assert passed.get_attribute("data-ok") == "true"
        assert "Intact" in passed.text
        console.browser.screenshot("console-integrity")

        segment = discover(console.proxy.journal).all_segments()[0].path
        lines = segment.read_bytes().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if b"app/forbidden-x" in line)
        record = orjson.loads(lines[at])
        record["decision"]["effect"] = "allow"  # covering tracks: the denial never happened
        lines[at] = orjson.dumps(record) + b"\n"
        segment.write_bytes(b"".join(lines))

        console.find("#verify-now").click()
        console.until(
            lambda: console.find("#verify-result").get_attribute("data-ok") == "false", 20
        )
        failed = console.find("#verify-result")
        assert "Modified" in failed.text
        assert f"{segment.name}:{at + 1}" in console.find("#verify-problems").text
        console.browser.screenshot("console-integrity-failed")
        verified = [
            e["detail"]
            for e in console.proxy.events("lifecycle")
            if e["detail"]["event"] == "journal_verified"
        ]
        assert (verified[0]["ok"], verified[-1]["ok"]) == (True, False)
        # Rewriting the file changed it under the journal, which moved to a new segment: the
        # failed run's result may first have gone into the file left behind (refused there),
        # then into the new segment. Either way it is one run's.
        assert {v["run"] for v in verified[1:]} == {verified[-1]["run"]}
        assert all(v["requested_by"].startswith("console session ") for v in verified)
        console.no_errors()


class TestHostileNames:
    def test_markup_and_escapes_in_a_secret_name_are_shown_as_text(self, console: Console) -> None:
        """A secret named with <script>, an onerror image and ANSI escapes shows as text on
        the live page, the event page and the secret page; nothing of it runs."""
        refused(console.proxy, HOSTILE, identity="stranger")
        console.signed_in()
        driver = console.browser.driver
        console.until(lambda: any("<script>" in r for r in console.live_rows()))

        (row,) = [r for r in console.find_all("#live-rows tr") if "<script>" in r.text]
        shown = row.find_element(By.CSS_SELECTOR, "td:nth-child(4)")
        assert "<script>window.pwned=1</script>" in shown.text
        assert "\\x1b[31mred" in shown.text  # the escape, visible
        assert "\x1b" not in shown.text
        assert shown.find_element(By.CSS_SELECTOR, ".esc").text == "\\x1b"
        assert shown.find_elements(By.CSS_SELECTOR, "script, img") == []

        shown.find_element(By.CSS_SELECTOR, "a").click()
        console.visible("#secret-title")
        assert console.find("#secret-title").text == HOSTILE.replace("\x1b", "\\x1b")
        console.go("#/live")
        console.until(lambda: any("<script>" in r for r in console.live_rows()))
        (row,) = [r for r in console.find_all("#live-rows tr") if "<script>" in r.text]
        row.find_element(By.CSS_SELECTOR, "td").click()  # the row, not its links
        console.visible("#event-fields")
        assert "<img src=x" in console.find("#event-fields").text

        assert driver.execute_script("return window.pwned") is None
        assert driver.execute_script("return document.scripts.length") == 1  # app.js only
        console.no_errors()


def test_dark_scheme(console: Console) -> None:
    """The console follows the system's dark scheme."""
    read(console.proxy, "app/db/password")
    driver = console.browser.driver
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    try:
        console.signed_in()
        console.until(lambda: console.live_rows())
        background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 18, 23)"
        console.browser.screenshot("console-live-dark")
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    console.no_errors()


def test_every_page_loads_without_errors_and_rows_take_the_keyboard(console: Console) -> None:
    """Each page and index loads its data with no script error or CSP violation; on the
    live page, Tab reaches the rows and the arrow keys move between them."""
    read(console.proxy, "app/db/password")
    refused(console.proxy, "app/forbidden-x")
    console.signed_in()
    console.until(lambda: len(console.live_rows()) >= 2)
    driver = console.browser.driver

    first = console.find("#live-rows tr")
    first.click()  # (opens it: back to the list)
    console.visible("#event-fields")
    driver.back()
    console.until(lambda: len(console.live_rows()) >= 2)
    rows = console.find_all("#live-rows tr")
    driver.execute_script("arguments[0].focus()", rows[0])
    rows[0].send_keys(Keys.ARROW_DOWN)
    assert driver.switch_to.active_element == rows[1]

    pages = {
        "#/secret": "app/db/password",
        "#/principal": "Secrets",  # the index: a column of each principal's secrets
        "#/secret?name=app/db/password": "Who accessed it",
        "#/principal?id=app": "How it signed in",
        "#/integrity": "Verify the journal",
        "#/alerts": "No alerts in this window",
        "#/event/test/1": "chain.seq",
        "#/no-such-page": "No such page",
    }
    for route, shown in pages.items():
        console.go(route)

        def loaded(shown: str = shown) -> bool:
            return shown in console.find("#main").text

        console.until(loaded, 3)
        assert "Loading" not in console.find("#main").text, route
    console.no_errors()
