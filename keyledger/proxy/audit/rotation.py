"""Segment rotation: when the segment being written is due for a new one, and what the new
one's first event says.

A segment rotates by size or age, never while the journal is failing, and never before it
holds more than its first event (a new file would hold only its header). A rotation that
fails is no reason to refuse a request: the journal keeps writing the current file and
tries again after a pause. The new segment opens with a ``segment_start`` event that names
the previous file and its last hash, so each file verifies on its own and the chain runs on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyledger.proxy.audit.chain import ChainState

__all__ = ["RETRY_S", "Rotation", "RotationPolicy", "segment_start"]

RETRY_S = 60.0  # after a failed rotation, the current file is written this long


@dataclass(frozen=True, slots=True, kw_only=True)
class Rotation:
    """When to start a new segment; None turns a trigger off."""

    max_bytes: int | None = 64 << 20
    max_age_s: float | None = 24 * 3600


class RotationPolicy:
    """Whether a segment is due, by size or age; asked before every write."""

    __slots__ = ("_clock", "_max_age_s", "_max_bytes", "_not_before")

    def __init__(self, rotation: Rotation, *, clock: Callable[[], float] = time.time) -> None:
        self._max_bytes = rotation.max_bytes
        self._max_age_s = rotation.max_age_s
        self._clock = clock
        self._not_before = 0.0

    def due(self, *, size: int, born: float) -> str | None:
        """``"size"`` or ``"age"`` when a segment of ``size`` bytes begun at ``born``
        (epoch seconds) is due for a new one; None while not, or pausing after a failure."""
        now = self._clock()
        if now < self._not_before:
            return None
        if self._max_bytes is not None and size >= self._max_bytes:
            return "size"
        if self._max_age_s is not None and now - born >= self._max_age_s:
            return "age"
        return None

    def failed(self) -> None:
        """A rotation failed: write on in the current file, and try again after a pause."""
        self._not_before = self._clock() + RETRY_S


def segment_start(
    reason: str | None, previous_file: Path, previous: ChainState, **more: Any
) -> dict[str, Any]:
    """The detail of a new segment's first event: why (None if no longer due by the time
    it ran), and where the chain came from."""
    return {
        "event": "segment_start",
        "reason": reason,
        "previous_segment": previous_file.name,
        "previous_last_seq": previous.seq,
        "previous_last_hash": previous.hash,
        **more,
    }
