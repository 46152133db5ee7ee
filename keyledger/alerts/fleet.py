"""Running the fleet-wide detector: sources named as on the command line, the rules and
destinations a proxy's config names, alerts shown and sent, stopped by SIGTERM or SIGINT.

``keyledger alerts run --follow`` is this module with a command line in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from keyledger.alerts.engine import AlertEngine
from keyledger.alerts.follow import Follower, LiveSource, Polled
from keyledger.alerts.model import Alert, Destination
from keyledger.alerts.rules import AlertRules
from keyledger.alerts.sources import (
    CloudWatchSource,
    EventSource,
    JournalSource,
    S3Source,
    SourceError,
)
from keyledger.proxy.audit.filters import EventFilter

__all__ = [
    "SCHEMES",
    "FleetRun",
    "destinations_for",
    "event_source",
    "follow_fleet",
    "live_sources",
]

# A SOURCE written as a URL: its scheme's reader (each takes the URL and ``warn=``).
SCHEMES: Mapping[str, Callable[..., EventSource]] = {
    "s3": S3Source,
    "cloudwatch": CloudWatchSource,
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def event_source(text: str, *, warn: Callable[[str], None] = lambda m: None) -> EventSource:
    """SOURCE: a journal folder or file, ``s3://BUCKET[/PREFIX]``, ``cloudwatch://GROUP``."""
    scheme = _SCHEME.match(text)
    if scheme is None:
        return JournalSource(Path(text))
    opener = SCHEMES.get(scheme.group(1).lower())
    if opener is None:
        raise SourceError(
            f"SOURCE {text}: {scheme.group(1)}:// is not a source alerts run reads: give a "
            "journal folder, s3://BUCKET[/PREFIX] or cloudwatch://GROUP[/STREAM]"
        )
    return opener(text, warn=warn)


def destinations_for(config: Any) -> list[Destination]:
    """The alert destinations a proxy's config names, built as the proxy builds them."""
    from keyledger.alerts.delivery import build_destinations, settings_for
    from keyledger.proxy.config import ConfigError

    try:
        return build_destinations(settings_for(d) for d in config.alerts.destinations)
    except (ConfigError, ValueError) as exc:
        raise SourceError(f"{config.source}: alerts.destinations: {exc}") from exc


@dataclass(slots=True)
class FleetRun:
    """What a follower read and raised, for its summary."""

    events: int = 0
    first: str | None = None
    last: str | None = None
    history_alerts: int = 0
    sent: int = 0
    late: int = 0
    repeats: int = 0
    history_s: float = 0.0
    followed_s: float = 0.0


async def follow_fleet(
    sources: Sequence[LiveSource],
    rules: AlertRules,
    *,
    filt: EventFilter,
    follow: bool,
    lag: timedelta,
    show: Callable[[Alert], None],
    destinations: Sequence[Destination] = (),
    on_suppressed: Callable[[str], None] | None = None,
    on_following: Callable[[FleetRun], None] = lambda run: None,
) -> FleetRun:
    """Read the history of ``sources``, then (with ``follow``) follow them until SIGTERM or
    SIGINT; every alert is shown, and live ones are offered to ``destinations``, which get
    their drain time once it stops."""
    found = FleetRun()
    started = time.perf_counter()

    def on_alert(alert: Alert, live: bool) -> None:
        show(alert)
        if live:
            found.sent += 1
            for destination in destinations:
                destination.offer(alert)
        else:
            found.history_alerts += 1

    def following() -> None:
        found.history_s = time.perf_counter() - started
        _count(found, follower)
        on_following(found)

    engine = AlertEngine(rules, on_suppressed=on_suppressed)
    follower = Follower(engine, sources, on_alert=on_alert, lag=lag, on_following=following)
    for destination in destinations:
        await destination.start()
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    stopped = asyncio.Event()

    def stop() -> None:
        stopped.set()
        if task is not None:
            task.cancel()

    if follow:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop)
    try:
        await follower.run(filt, follow=follow)
    except asyncio.CancelledError:
        if not stopped.is_set() or task is None:
            raise
        task.uncancel()  # stopping by signal is the normal end of following
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        for destination in destinations:
            await destination.close()  # what is queued gets its drain time
    if follow:
        found.followed_s = time.perf_counter() - started - found.history_s
    else:
        found.history_s = time.perf_counter() - started
    _count(found, follower)
    return found


def _count(found: FleetRun, follower: Follower) -> None:
    found.events, found.first, found.last = follower.events, follower.first, follower.last
    found.late, found.repeats = follower.reorder.late, follower.seen.repeats


def live_sources(
    polled: Sequence[EventSource],
    streams: Sequence[LiveSource],
    *,
    interval_s: float,
    warn: Callable[[str], None],
) -> list[LiveSource]:
    """Polled sources (folders, copies) every ``interval_s``, and the admin streams."""
    return [Polled(s, interval_s=interval_s, warn=warn) for s in polled] + list(streams)
