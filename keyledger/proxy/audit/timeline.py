"""A chain's times never go back: each record is timed no earlier than the latest time the
chain has written, whatever the wall clock says, and a step of the wall clock is put on
record as a ``clock_step`` event (``clock.StepWatch`` notices it).

The journal's times are fixed-width UTC strings (``events.format_time``), so they compare
as strings: no parsing on the hot path.
"""

from __future__ import annotations

from typing import Any

from keyledger.proxy.audit.clock import StepWatch
from keyledger.proxy.audit.events import AuditEvent, EventType

__all__ = ["Timeline", "clock_step_record"]


class Timeline:
    """The latest time one chain has written, and the watch on the wall clock."""

    __slots__ = ("_steps", "latest")

    def __init__(self, steps: StepWatch) -> None:
        self._steps = steps
        self.latest = ""  # nothing written yet

    def resume_after(self, moment: str) -> None:
        """The chain already holds an event at ``moment`` (read back at start-up)."""
        self.latest = max(self.latest, moment)

    def in_order(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` timed no earlier than the latest time written (changed in place)."""
        moment = record["time"]
        if moment < self.latest:
            record["time"] = self.latest  # the wall clock stepped back
        else:
            self.latest = moment
        return record

    def step(self) -> dict[str, Any] | None:
        """A ``clock_step`` record if the wall clock stepped since the last look."""
        step_s = self._steps.check()
        return None if step_s is None else clock_step_record(step_s)


def clock_step_record(step_s: float) -> dict[str, Any]:
    detail = {
        "event": "clock_step",
        "step_s": round(step_s, 3),
        "note": "the wall clock stepped back: events keep the latest time already written "
        "until it passes it again"
        if step_s < 0
        else "the wall clock stepped forward",
    }
    return AuditEvent(type=EventType.LIFECYCLE, detail=detail).to_record()
