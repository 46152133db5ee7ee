"""Times an auditor can trust: a chain's event times never go back, even when the wall
clock does or after a restart; a step of the wall clock is on record as a clock_step
event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from keyledger.proxy.audit.clock import StepWatch
from keyledger.proxy.audit.events import AuditEvent, EventType, format_time
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.audit.segments import segment_path
from keyledger.proxy.audit.verify import verify_path
from tests.proxy.audit.conftest import CHAIN, records

# An hour ahead of the real clock: what the journal writes itself (the clock_step event,
# a restart's own events) takes the real time, which then lies before the chain's latest.
T0 = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)


class FakeClocks:
    """A wall clock that can be stepped, and a monotonic one that cannot."""

    def __init__(self) -> None:
        self.wall_s = T0.timestamp()
        self.monotonic_s = 1000.0

    def pass_(self, seconds: float) -> None:
        self.wall_s += seconds
        self.monotonic_s += seconds

    def step(self, seconds: float) -> None:
        self.wall_s += seconds

    def watch(self, threshold_s: float = 1.0) -> StepWatch:
        return StepWatch(threshold_s, wall=lambda: self.wall_s, monotonic=lambda: self.monotonic_s)


def tick(at: datetime) -> AuditEvent:
    return AuditEvent(type=EventType.LIFECYCLE, time=at, detail={"event": "tick"})


class TestStepWatch:
    def test_a_step_beyond_the_threshold_is_seen_once(self) -> None:
        clocks = FakeClocks()
        watch = clocks.watch(threshold_s=1.0)

        clocks.pass_(30)
        assert watch.check() is None  # time passing is no step
        clocks.step(-3600)
        assert watch.check() == -3600
        assert watch.check() is None  # seen once
        clocks.step(0.5)
        assert watch.check() is None  # within the threshold (NTP slews, it does not step)
        clocks.step(5)
        assert watch.check() == 5


async def test_times_never_go_back_and_a_step_is_on_record(tmp_path: Path) -> None:
    """Events whose wall-clock times go back an hour are written at the latest time
    already written; the step itself is a clock_step event; the chain verifies with no
    time going back; a restarted journal never writes before its last event either."""
    clocks = FakeClocks()
    journal = Journal(directory=tmp_path, chain_id=CHAIN, fsync=False, steps=clocks.watch())
    await journal.start()
    await journal.append(tick(T0))
    clocks.pass_(10)
    await journal.append(tick(T0 + timedelta(seconds=10)))
    clocks.step(-3600)  # someone set the clock back an hour
    await journal.append(tick(T0 - timedelta(minutes=59)))
    await journal.close()

    restarted = Journal(directory=tmp_path, chain_id=CHAIN, fsync=False)
    await restarted.start()  # the real clock: far after T0, so use an earlier event time
    await restarted.append(tick(T0 - timedelta(days=1)))
    await restarted.close()

    written = records(segment_path(tmp_path, CHAIN, 1))
    times = [r["time"] for r in written]
    assert times == sorted(times)
    (step,) = [r["detail"] for r in written if r["detail"].get("event") == "clock_step"]
    assert step["step_s"] == -3600
    ticks = [r["time"] for r in written if r["detail"].get("event") == "tick"]
    latest = format_time(T0 + timedelta(seconds=10))
    assert ticks[1:] == [latest] * 3  # held at the latest, across the restart too
    report = verify_path(tmp_path)
    assert report.ok
    assert report.chains[CHAIN].backwards == 0
