"""What the journal does about a segment file that changed under it (see ``filewatch``).

The changed file gets nothing more: requests whose events went into it since the last
check are refused, and the chain goes on in a fresh segment whose first event records what
was found and which seqs were never acknowledged. The chain is not rewound, so no seq ever
names two events. Until that segment exists every append is refused; when it cannot be
written (the folder gone, the disk full), appends are refused at once with the reason for
a second, then the journal tries again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keyledger.proxy.audit.filewatch import FileChange

__all__ = ["RETRY_S", "LostFile", "error_text", "unacknowledged"]

RETRY_S = 1.0  # after a new segment failed, appends are refused this long without a try


class LostFile:
    """A segment file that changed under the journal, until a new segment replaces it."""

    __slots__ = ("_clock", "_error", "_retry_at", "change")

    def __init__(self, change: FileChange, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.change = change
        self._clock = clock
        self._retry_at = 0.0
        self._error = ""

    def refusal(self, directory: Path) -> str | None:
        """Why an append is refused now (a new segment failed a moment ago); None when
        it is time to try a new segment again."""
        if self._clock() < self._retry_at:
            return (
                f"{self.change.describe()}, and no new segment can be written in "
                f"{directory}: {self._error}"
            )
        return None

    def new_segment_failed(self, exc: BaseException) -> str:
        """The new segment could not be written: refuse appends for a while; the reason."""
        self._retry_at = self._clock() + RETRY_S
        self._error = error_text(exc)
        return self._error

    def detail(self, durable_seq: int, written_seq: int) -> dict[str, Any]:
        """What the first event of the segment after the lost file records."""
        change = self.change
        return {
            "found": change.describe(),
            "written_bytes": change.written_bytes,
            "found_bytes": change.found_bytes,
            # Written into the lost file after the last check: their requests were refused.
            "unacknowledged_seqs": (
                {"first": durable_seq + 1, "last": written_seq}
                if written_seq > durable_seq
                else None
            ),
        }


def unacknowledged(change: FileChange) -> str:
    """Why a request whose event went into the changed file is refused."""
    return (
        f"the audit journal's file changed under it ({change.describe()}); the event was "
        "not kept where it can be verified"
    )


def error_text(exc: BaseException) -> str:
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
