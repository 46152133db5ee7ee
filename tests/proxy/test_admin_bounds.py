"""The admin API's journal reads stay bounded: a window holding too many events is refused
(422) rather than read whole, and a newest-first read past its line budget says it is not
complete rather than running on."""

from __future__ import annotations

import pytest

from keyledger.proxy.admin import query, report
from tests.proxy.test_admin_query import CHAIN, Admin, access, admin  # noqa: F401 (fixture)


async def test_a_window_past_its_event_budget_is_refused(
    admin: Admin,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past report.WINDOW_EVENTS events in the window, the report is 422 with what to do,
    not an answer counted over part of the window."""
    await admin.journal.append_many([access(f"svc-{n}") for n in range(6)])
    monkeypatch.setattr(report, "WINDOW_EVENTS", 5)

    status, body = await admin.get("/v1/report")

    assert status == 422
    assert "more than 5 events" in body["error"]
    assert "narrow since/until" in body["error"]

    monkeypatch.setattr(report, "WINDOW_EVENTS", 6)
    status, body = await admin.get("/v1/report")
    assert status == 200


async def test_a_read_past_its_line_budget_says_it_is_incomplete(
    admin: Admin,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past query.SCAN_LINES lines, /v1/events answers with what it found and
    ``complete: false``: the caller knows the answer may lack older matches."""
    await admin.journal.append_many(
        [access("needle", "app/needle")] + [access(f"svc-{n}") for n in range(8)]
    )
    monkeypatch.setattr(query, "SCAN_LINES", 4)

    status, body = await admin.get("/v1/events", principal="needle")

    assert status == 200
    assert (body["complete"], body["count"]) == (False, 0)
    assert body["scanned"] <= 4

    monkeypatch.setattr(query, "SCAN_LINES", 1_000)
    status, body = await admin.get("/v1/events", principal="needle")
    assert (body["complete"], body["count"]) == (True, 1)
    assert body["events"][0]["chain"]["id"] == CHAIN
