"""`keyledger serve --dev` prints the console's URL and how to sign in, and both work as
printed: the page loads from the installed package, and the printed token signs in."""

from __future__ import annotations

import re
import signal
import urllib.parse
import urllib.request
from pathlib import Path

from tests.e2e.test_dev_mode import spawn_dev, wait_for


def test_the_banner_names_the_console_and_its_token_signs_in(tmp_path: Path) -> None:
    process, _, _ = spawn_dev(tmp_path)
    try:
        banner = wait_for(process, "Ctrl-C stops")
        url = re.search(r"^\s*web console\s+(http://\S+/ui/)\s", banner, re.M)
        token = re.search(r"^\s*admin token\s+(\S+)$", banner, re.M)
        assert url is not None, banner
        assert token is not None, banner
        assert "sign in with the admin token" in banner

        with urllib.request.urlopen(url[1], timeout=10) as page:  # noqa: S310 (loopback)
            assert page.status == 200
            assert b"keyledger console" in page.read()
        origin = url[1].removesuffix("/ui/")
        sign_in = urllib.request.Request(  # noqa: S310 (loopback)
            origin + "/ui/session",
            data=urllib.parse.urlencode({"token": token[1]}).encode(),
            headers={"Origin": origin},
        )
        with urllib.request.urlopen(sign_in, timeout=10) as answer:  # noqa: S310
            assert answer.status == 200
            assert "HttpOnly" in answer.headers["Set-Cookie"]
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0
