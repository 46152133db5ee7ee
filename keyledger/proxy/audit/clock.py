"""Noticing the wall clock step: NTP correcting a clock that was off, an operator setting
it, a VM resumed from a snapshot. Between two looks the wall clock and the monotonic clock
should move alike; when they part by more than a threshold, the wall clock stepped.

The journal records each step as a ``clock_step`` event, and never lets a chain's times go
back: after a step back, events carry the latest time already written until the wall
clock passes it again (`audit verify` reports any chain whose times do go back).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["StepWatch"]


class StepWatch:
    def __init__(
        self,
        threshold_s: float = 1.0,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold_s
        self._wall = wall
        self._monotonic = monotonic
        self._offset = wall() - monotonic()

    def check(self) -> float | None:
        """The step since the last look, in seconds (negative: back), if beyond the
        threshold. A slow slew (NTP's adjtime) never adds up to one: each look starts
        from the last."""
        offset = self._wall() - self._monotonic()
        step, self._offset = offset - self._offset, offset
        return step if abs(step) > self._threshold else None
