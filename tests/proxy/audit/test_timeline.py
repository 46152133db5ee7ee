"""The timeline: records are timed no earlier than the latest time written, and a wall-clock
step becomes a clock_step record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from keyledger.proxy.audit.clock import StepWatch
from keyledger.proxy.audit.events import AuditEvent, EventType, format_time
from keyledger.proxy.audit.timeline import Timeline, clock_step_record
from tests.proxy.audit.test_clock import FakeClocks

T0 = datetime(2026, 11, 23, 21, 55, 1, tzinfo=UTC)


def record_at(at: datetime) -> dict[str, Any]:
    """A lifecycle record timed ``at``."""
    return AuditEvent(type=EventType.LIFECYCLE, time=at, detail={"event": "tick"}).to_record()


class TestInOrder:
    def test_times_that_go_forward_are_kept(self) -> None:
        """Records in time order keep their own times, and the latest follows them."""
        timeline = Timeline(StepWatch())
        first = timeline.in_order(record_at(T0))
        second = timeline.in_order(record_at(T0 + timedelta(seconds=1)))

        assert first["time"] == format_time(T0)
        assert second["time"] == format_time(T0 + timedelta(seconds=1))
        assert timeline.latest == second["time"]

    def test_a_time_before_the_latest_takes_the_latest(self) -> None:
        """A record from a clock stepped back is written at the latest time instead."""
        timeline = Timeline(StepWatch())
        timeline.in_order(record_at(T0))

        earlier = timeline.in_order(record_at(T0 - timedelta(hours=1)))

        assert earlier["time"] == format_time(T0)
        assert timeline.latest == format_time(T0)

    def test_resuming_after_a_restart_holds_the_chain_s_last_time(self) -> None:
        """The last time read back from the journal bounds what is written next."""
        timeline = Timeline(StepWatch())
        timeline.resume_after(format_time(T0))
        timeline.resume_after("")  # an empty journal never lowers it

        assert timeline.in_order(record_at(T0 - timedelta(days=1)))["time"] == format_time(T0)


class TestStep:
    def test_no_step_no_record(self) -> None:
        """Time passing alike on both clocks is no step."""
        clocks = FakeClocks()
        timeline = Timeline(clocks.watch())
        clocks.pass_(60)

        assert timeline.step() is None

    def test_a_step_back_is_a_clock_step_record_once(self) -> None:
        """A wall clock set back an hour gives one clock_step record that says so."""
        clocks = FakeClocks()
        timeline = Timeline(clocks.watch())
        clocks.step(-3600)

        step = timeline.step()

        assert step is not None
        assert step["type"] == "lifecycle"
        assert step["detail"]["event"] == "clock_step"
        assert step["detail"]["step_s"] == -3600
        assert "stepped back" in step["detail"]["note"]
        assert timeline.step() is None

    def test_a_step_forward_says_forward(self) -> None:
        """A step forward is recorded, rounded to milliseconds."""
        detail = clock_step_record(5.00049)["detail"]

        assert detail == {
            "event": "clock_step",
            "step_s": 5.0,
            "note": "the wall clock stepped forward",
        }
