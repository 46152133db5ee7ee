"""docs/alerts.md's receiver snippet: the check a webhook receiver is told to copy accepts
what keyledger sends, and refuses a tampered body, another secret and an old request."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from keyledger.alerts.delivery import SIGNATURE_HEADER, webhook_request
from keyledger.alerts.model import Alert, EventRef, Severity

DOC = Path(__file__).parents[2] / "docs" / "alerts.md"
SECRET = b"a-receiver-and-keyledger-share-this"


def documented_check() -> Callable[..., bool]:
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    scope: dict[str, object] = {}
    exec(code, scope)  # noqa: S102 (the doc's own snippet, run as a reader would)
    verified = scope["verified"]
    assert callable(verified)
    return verified


def sent(now: float | None = None) -> tuple[str, bytes]:
    alert = Alert(
        rule="decoy",
        severity=Severity.CRITICAL,
        detector="canary",
        key="principal x secret aws:decoy",
        summary="canary aws:decoy touched by x",
        time=datetime(2026, 12, 7, 21, 0, tzinfo=UTC),
        events=(EventRef("01J0", "dev", 7),),
    )
    request = webhook_request(alert, url="https://receiver.example/hook", secret=SECRET, now=now)
    return request.headers[SIGNATURE_HEADER], request.body


def test_the_documented_check_accepts_what_keyledger_sends_and_nothing_else() -> None:
    verified = documented_check()
    header, body = sent()

    assert verified(SECRET, header, body)
    assert not verified(SECRET, header, body.replace(b"decoy", b"dec0y"))
    assert not verified(b"another-secret-of-the-same-size!!!", header, body)
    old_header, old_body = sent(now=time.time() - 600)
    assert not verified(SECRET, old_header, old_body)
