"""A flood of bad callers costs little: past the first few, a (source, reason)'s sign-in
failures within a window are one aggregate auth_failure event, not one durable event each;
nothing is lost from the count, and the aggregate is written when its window closes or the
proxy stops."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keyledger.proxy.audit.events import PrincipalInfo, RequestInfo
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.failures import FailureFold
from tests.conftest import journal_events


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = Journal(directory=tmp_path / "audit", chain_id="test", fsync=False)
    await journal.start()
    yield journal
    await journal.close()


def knock(fold: FailureFold, n: int, source: str = "203.0.113.9", reason: str = "bad") -> bool:
    return fold.admit(
        source=source,
        reason=reason,
        request=RequestInfo(
            id=f"r{n}",
            protocol="aws-json",
            operation="GetSecretValue",
            source_ip=source,
            user_agent=None,
        ),
        principal=PrincipalInfo(id=None, auth_method="sigv4", attributes={"access_key_id": "AKX"}),
    )


def aggregates(tmp_path: Path) -> list[dict[str, Any]]:
    return [
        e["detail"] | {"code": e["outcome"]["code"], "source": e["request"]["source_ip"]}
        for e in journal_events(tmp_path / "audit", "auth_failure")
    ]


async def test_past_the_first_few_a_flood_is_counted_into_one_event(
    tmp_path: Path, journal: Journal
) -> None:
    """25 failures in a window: the first 10 are admitted one by one, 15 folded; another
    source or reason has its own count; the aggregate is written once the window closed,
    with the count, first and last request ids and what was claimed."""
    clock = Clock()
    fold = FailureFold(journal, window_s=60, individual=10, clock=clock)

    admitted = [knock(fold, n) for n in range(25)]
    assert admitted == [True] * 10 + [False] * 15
    assert knock(fold, 99, source="198.51.100.1")  # another source: its own first few
    assert knock(fold, 98, reason="expired")  # another reason too
    assert await fold.flush() == 0  # the window is still open
    clock.now += 60
    assert await fold.flush() == 1

    (aggregate,) = aggregates(tmp_path)
    assert aggregate["aggregate"] is True
    assert aggregate["count"] == 15
    assert (aggregate["first_request_id"], aggregate["last_request_id"]) == ("r10", "r24")
    assert aggregate["claimed"] == ["AKX"]
    assert (aggregate["code"], aggregate["source"]) == ("bad", "203.0.113.9")
    assert fold.folded == 15


async def test_a_new_window_starts_afresh_and_stopping_writes_what_is_open(
    tmp_path: Path, journal: Journal
) -> None:
    clock = Clock()
    fold = FailureFold(journal, window_s=60, individual=2, clock=clock)
    assert [knock(fold, n) for n in range(5)] == [True, True, False, False, False]
    clock.now += 61
    assert [knock(fold, n) for n in range(5, 9)] == [True, True, False, False]  # a new window

    await fold.close()

    assert [a["count"] for a in aggregates(tmp_path)] == [3, 2]
