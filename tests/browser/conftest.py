"""Browser tests: a real headless Chromium, driven by Selenium through its ChromeDriver.

The browser is Debian's ``chromium`` and the driver Debian's ``chromium-driver``, found on
PATH (/usr/bin/chromium, /usr/bin/chromedriver). Both are built from one source package, so
the driver always speaks the browser's version; Selenium is given both paths and never looks
for, or downloads, a browser or a driver of its own. ``make test`` installs them with apt
where it runs as root on Debian, as CI does (``make browser``).

Where they are missing, every browser test skips, saying what is missing and how to get it
(pytest's ``-ra`` prints the reasons at the end of the run, so a skip is never silent).
Under CI (CI=true) on a machine where ``make browser`` installs them (root, Debian, apt-get)
a missing browser fails the tests instead: the install should have happened, and a green CI
must mean that the browser tests ran. A browser that is there but will not start is an
error everywhere, never a skip.

- ``chromium`` (session): one headless Chromium for the whole run, started on first use.
- ``browser``: that Chromium made clean for one test: a 1280x800 viewport, no cookies, the
  console log drained, ``about:blank`` afterwards. ``browser.narrow()`` runs a block in a
  420 px wide window; ``browser.console_errors()`` gives the console's errors (JavaScript
  exceptions, Content-Security-Policy violations, failed loads) since the last call;
  ``browser.screenshot(name)`` writes ``build/screenshots/{name}.png``, or, under
  ``make screenshots`` (``KEYLEDGER_SCREENSHOTS=docs/screenshots``), the copies the docs
  show: a plain test run leaves the repository's files alone (every run's times differ).
- ``serve``: serves an aiohttp app on a real loopback socket from a background thread, so
  the (synchronous) tests can drive Selenium while the app answers the browser.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from keyledger.backends._loop_thread import LoopThread
from tests.conftest import listen

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / os.environ.get("KEYLEDGER_SCREENSHOTS", "build/screenshots")

WIDTH, HEIGHT = 1280, 800  # the console must be readable at this size...
NARROW = 420  # ...and in a window this narrow

INSTALL_HINT = (
    "the browser tests need Debian's chromium and chromium-driver packages "
    "(`apt-get install chromium chromium-driver` as root; `make test` installs them "
    "itself when it runs as root on Debian)"
)


def _make_installs_browser() -> bool:
    """Whether ``make browser`` installs Chromium on this machine: root, Debian, apt-get."""
    return (
        os.geteuid() == 0
        and Path("/etc/debian_version").exists()
        and shutil.which("apt-get") is not None
    )


def _missing(what: str) -> NoReturn:
    """Skip: ``what`` is missing. Under CI, fail instead where make should have installed it."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and _make_installs_browser():
        pytest.fail(
            f"{what}, though `make browser` installs it on this machine (root on Debian, "
            "with apt-get) and CI must run the browser tests: see what `make browser` printed"
        )
    pytest.skip(f"{what}: {INSTALL_HINT}")


@dataclass(frozen=True, slots=True)
class ConsoleMessage:
    """One entry of the browser's console log."""

    level: str  # SEVERE, WARNING, INFO, DEBUG
    source: str  # javascript, security (CSP), network, console-api, ...
    message: str


class Browser:
    """A headless Chromium and the helpers the browser tests share."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def get(self, url: str) -> None:
        """Load ``url``; returns once the page has loaded (its scripts, deferred ones too,
        have run)."""
        self.driver.get(url)

    def wait(self, timeout: float = 5.0) -> WebDriverWait[webdriver.Chrome]:
        """A ``WebDriverWait`` on this browser: ``browser.wait().until(condition)``."""
        return WebDriverWait(self.driver, timeout)

    def viewport(self, width: int, height: int) -> None:
        """Resize the window so that the page sees exactly ``width`` x ``height`` CSS pixels.

        A headless window's size includes its (invisible) browser frame, so the frame's
        size is measured and added.
        """
        inner = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
        outer = self.driver.get_window_size()
        self.driver.set_window_size(
            width + outer["width"] - inner[0], height + outer["height"] - inner[1]
        )
        got = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
        assert got == [width, height], f"viewport {got}, wanted {[width, height]}"

    @contextlib.contextmanager
    def narrow(self, width: int = NARROW) -> Iterator[None]:
        """Within the block, a window ``width`` pixels wide (a phone or a split screen)."""
        self.viewport(width, HEIGHT)
        try:
            yield
        finally:
            self.viewport(WIDTH, HEIGHT)

    def console(self) -> list[ConsoleMessage]:
        """Every console message since the last call (the browser forgets them as it tells)."""
        # Selenium leaves get_log unannotated; ChromeDriver answers a list of dicts.
        entries: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return [
            ConsoleMessage(level=entry["level"], source=entry["source"], message=entry["message"])
            for entry in entries
        ]

    def console_errors(self) -> list[ConsoleMessage]:
        """The console's errors since the last call: JavaScript exceptions, CSP violations,
        resources that failed to load. Other messages since then are dropped."""
        return [message for message in self.console() if message.level == "SEVERE"]

    def screenshot(self, name: str) -> Path:
        """Save what the viewport shows as ``{SCREENSHOTS}/{name}.png``; return its path."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
            raise ValueError(f"screenshot name {name!r}: use lower-case letters, digits and -")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        if not self.driver.save_screenshot(str(path)):
            raise RuntimeError(f"Chromium did not write {path}")
        return path

    def reset(self) -> None:
        """Forget the last test: blank page, no cookies, an empty console log, full size."""
        self.driver.get("about:blank")
        self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        self.console()
        self.viewport(WIDTH, HEIGHT)


def _options(binary: str) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless",
        # Chromium's sandbox refuses to run as root (as CI does) and needs user namespaces
        # that containers often lack; this browser only ever visits loopback test servers.
        "--no-sandbox",
        "--disable-dev-shm-usage",  # /dev/shm is small in containers
        "--disable-component-update",  # no calls home from a test browser
        f"--window-size={WIDTH},{HEIGHT}",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the run; skipped (or failed under CI) where not installed."""
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None:
        _missing("Chromium is not installed (no `chromium` on PATH)")
    if driver_path is None:
        _missing("ChromeDriver is not installed (no `chromedriver` on PATH)")
    driver = webdriver.Chrome(
        options=_options(binary), service=Service(executable_path=driver_path)
    )
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(10)
        yield Browser(driver)
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: Browser) -> Iterator[Browser]:
    """The session's Chromium, clean for this test (1280x800, no cookies, no console log)."""
    chromium.reset()
    yield chromium
    chromium.driver.get("about:blank")


@pytest.fixture
def serve() -> Iterator[Callable[[web.Application], str]]:
    """``serve(app)``: ``app`` on a free loopback port, from a background thread's event
    loop, until the test ends; returns its base URL (``http://127.0.0.1:PORT``)."""
    thread = LoopThread("browser-test-server", timeout=30)
    runners: list[web.AppRunner] = []

    async def started() -> None:
        pass

    async def close() -> None:
        while runners:
            await runners.pop().cleanup()

    def start(app: web.Application) -> str:
        if not thread.running:
            thread.start(started)
        runners.append(runner := thread.run(listen(app)))
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    thread.stop(close)
