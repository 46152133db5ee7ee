"""Rule conditions: where a call comes from, when it happens, and who/what it carries.

A rule's ``when:`` conditions must all hold for it to apply; if any of its ``unless:``
conditions holds, it does not apply. Each condition can say, in one line, why it held or
not: that is what ``policy explain`` prints.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from keyledger.model import Principal

__all__ = [
    "DAY_NAMES",
    "REQUEST_ATTRIBUTES",
    "AttributeMatch",
    "Condition",
    "Context",
    "SourceNetworks",
    "TimeWindow",
    "TimeWindows",
    "parse_ip",
]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# What a frontend tells the policy about a request, besides the action and the secret.
REQUEST_ATTRIBUTES = ("protocol", "operation", "version_stage")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """The request facts conditions look at, beyond the principal, action and secret."""

    source_ip: str | None = None
    at: datetime | None = None  # None: the moment of evaluation
    request: Mapping[str, str] = field(default_factory=dict)  # see REQUEST_ATTRIBUTES

    def moment(self) -> datetime:
        return self.at if self.at is not None else datetime.now(UTC)


class Condition(Protocol):
    def holds(self, principal: Principal, ctx: Context) -> bool: ...

    def explain(self, principal: Principal, ctx: Context) -> str:
        """Why it holds or not, naming the value it looked at."""
        ...


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> IpAddress | None:
    """An address, with IPv4-mapped IPv6 (``::ffff:10.0.0.1``) read as the IPv4 it maps."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True, slots=True)
class SourceNetworks:
    """The caller's address is in one of these networks."""

    networks: tuple[IpNetwork, ...]

    def holds(self, principal: Principal, ctx: Context) -> bool:
        ip = parse_ip(ctx.source_ip) if ctx.source_ip else None
        # ``in`` is False across address families, so v4 and v6 networks mix freely.
        return ip is not None and any(ip in net for net in self.networks)

    def explain(self, principal: Principal, ctx: Context) -> str:
        nets = ", ".join(str(n) for n in self.networks)
        verdict = "in" if self.holds(principal, ctx) else "not in"
        return f"source_ip {ctx.source_ip or '(unknown)'} {verdict} [{nets}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeWindow:
    """Days of the week and a time of day, in a time zone.

    ``start`` > ``end`` spans midnight (22:00-06:00); the part after midnight belongs to
    the day the window started on. ``end`` None means the end of the day (24:00).
    """

    days: frozenset[int]  # 0 = Monday
    start: time
    end: time | None
    zone: ZoneInfo
    text: str  # as written, for explanations

    def holds_at(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        now, day = local.time().replace(tzinfo=None), local.weekday()
        if self.end is None or self.start < self.end:
            return day in self.days and self.start <= now and (self.end is None or now < self.end)
        if now >= self.start:
            return day in self.days
        yesterday = (local - timedelta(days=1)).weekday()
        return now < self.end and yesterday in self.days


@dataclass(frozen=True, slots=True)
class TimeWindows:
    """The moment of the request falls in one of these windows."""

    windows: tuple[TimeWindow, ...]

    def holds(self, principal: Principal, ctx: Context) -> bool:
        moment = ctx.moment()
        return any(w.holds_at(moment) for w in self.windows)

    def explain(self, principal: Principal, ctx: Context) -> str:
        moment = ctx.moment()
        texts = "; ".join(w.text for w in self.windows)
        verdict = "within" if any(w.holds_at(moment) for w in self.windows) else "outside"
        local = moment.astimezone(self.windows[0].zone)
        return f"time {local:%a %Y-%m-%d %H:%M %Z} {verdict} {texts}"


@dataclass(frozen=True, slots=True)
class AttributeMatch:
    """A principal attribute (an OIDC claim, an identity attribute) or a request attribute
    equals one of these values; ``*`` and ``?`` are globs, as in resources."""

    scope: str  # "principal" | "request"
    key: str
    patterns: tuple[str, ...]
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def of(cls, scope: str, key: str, patterns: tuple[str, ...]) -> AttributeMatch:
        # fnmatch.translate gives anchored patterns; one alternation tests them all at once.
        alternatives = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)
        return cls(scope, key, patterns, re.compile(alternatives))

    def value(self, principal: Principal, ctx: Context) -> str | None:
        source = principal.attributes if self.scope == "principal" else ctx.request
        return source.get(self.key)

    def holds(self, principal: Principal, ctx: Context) -> bool:
        value = self.value(principal, ctx)
        return value is not None and self.regex.match(value) is not None

    def explain(self, principal: Principal, ctx: Context) -> str:
        value = self.value(principal, ctx)
        wanted = ", ".join(self.patterns)
        name = f"{self.scope}.{self.key}"
        if value is None:
            return f"{name} is not set (wanted {wanted})"
        verdict = "matches" if self.holds(principal, ctx) else "does not match"
        return f"{name} {value!r} {verdict} [{wanted}]"
