"""The access report: for every secret, who touched it, when, and whether that was allowed.

``build_report(records)`` reads journal records once and keeps only the totals, so it runs
over any number of events. It counts ``access`` events, and ``auth_failure`` events that
name a secret, per (backend, secret):

* allowed: the policy allowed it and the store answered (``decision.effect`` allow and
  ``outcome.status`` success);
* denied: the policy denied it, or it was refused (``outcome.status`` denied);
* errors: ``outcome.status`` error;
* unresolved: a change logged as ``pending`` with no outcome after it (same request id),
  which may have happened. Pending events are otherwise not counted: their outcome is.

Times are UTC. The histogram counts allowed accesses per hour when the whole report spans
less than three days, else per day, over the same buckets for every secret.

Renderers: ``render_table`` (a terminal, via rich), ``write_csv`` (one row per secret and
principal) and ``render_html`` (one self-contained, printable page with inline SVG charts).
Names come from callers, so every renderer shows control characters as escapes and never
lets a name become markup (rich markup, HTML) or a spreadsheet formula.
"""

from __future__ import annotations

import csv
import html
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from keyledger.proxy.audit.events import format_time, parse_time
from keyledger.proxy.audit.export import csv_safe
from keyledger.proxy.audit.render import sanitize

__all__ = [
    "CSV_COLUMNS",
    "AccessReport",
    "PrincipalActivity",
    "SecretActivity",
    "build_report",
    "render_html",
    "render_table",
    "write_csv",
]

Bucket = Literal["hour", "day"]
_HOURLY_BELOW = timedelta(days=3)
_COUNTS = ("Allowed", "Denied", "Errors")
_NUMERIC = frozenset({"Events", *_COUNTS, "Unresolved", "Principals"})
_NAMES = frozenset({"Secret", "Principal"})
_STEP: dict[Bucket, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


@dataclass(frozen=True, slots=True, kw_only=True)
class PrincipalActivity:
    """One principal's events on one secret. ``principal`` None: not known (auth failure)."""

    principal: str | None
    events: int
    allowed: int
    denied: int
    errors: int
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretActivity:
    """Everything that happened to one secret; ``histogram`` follows ``AccessReport.buckets``."""

    backend: str | None
    secret: str | None
    events: int
    allowed: int
    denied: int
    errors: int
    unresolved: int
    first: datetime | None
    last: datetime | None
    actions: Mapping[str, int]
    principals: tuple[PrincipalActivity, ...]
    histogram: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessReport:
    secrets: tuple[SecretActivity, ...]
    bucket: Bucket
    buckets: tuple[datetime, ...]
    first: datetime | None
    last: datetime | None
    records: int  # records read, counted or not

    @property
    def events(self) -> int:
        return sum(s.events for s in self.secrets)

    @property
    def histogram(self) -> tuple[int, ...]:
        """Allowed accesses per bucket, all secrets together."""
        columns = zip(*(s.histogram for s in self.secrets), strict=True)
        return tuple(sum(column) for column in columns)


# -- building -----------------------------------------------------------------------------

_Key = tuple[str | None, str | None]


@dataclass(slots=True)
class _PrincipalTally:
    events: int = 0
    allowed: int = 0
    denied: int = 0
    errors: int = 0
    first: datetime | None = None
    last: datetime | None = None


@dataclass(slots=True)
class _SecretTally:
    principal: dict[str | None, _PrincipalTally] = field(default_factory=dict)
    actions: Counter[str] = field(default_factory=Counter)
    hours: Counter[datetime] = field(default_factory=Counter)  # allowed accesses
    pending: Counter[str | None] = field(default_factory=Counter)  # by request id


def build_report(records: Iterable[Mapping[str, Any]]) -> AccessReport:
    """Aggregate ``records`` (journal objects, any order within a chain) into a report."""
    tallies: dict[_Key, _SecretTally] = {}
    count = 0
    for record in records:
        count += 1
        key = _counted(record)
        if key is not None:
            _add(tallies.setdefault(key, _SecretTally()), record)
    return _finish(tallies, count)


def _counted(record: Mapping[str, Any]) -> _Key | None:
    """The (backend, secret) this record counts for, or None when it is not an access."""
    resource = _part(record, "resource")
    backend, secret = _text(resource.get("backend")), _text(resource.get("secret"))
    kind = record.get("type")
    if kind == "access" or (kind == "auth_failure" and secret is not None):
        return backend, secret
    return None


def _add(tally: _SecretTally, record: Mapping[str, Any]) -> None:
    status = _part(record, "outcome").get("status")
    request_id = _text(_part(record, "request").get("id"))
    if status == "pending":
        tally.pending[request_id] += 1
        return
    if request_id is not None and tally.pending[request_id] > 0:
        tally.pending[request_id] -= 1  # the outcome of a change logged before it was made
    when = parse_time(record.get("time"))
    principal = tally.principal.setdefault(
        _text(_part(record, "principal").get("id")), _PrincipalTally()
    )
    principal.events += 1
    principal.first = _earliest(principal.first, when)
    principal.last = _latest(principal.last, when)
    verdict = _verdict(record, status)
    if verdict == "allowed":
        principal.allowed += 1
        if when is not None:
            tally.hours[when.replace(minute=0, second=0, microsecond=0)] += 1
    elif verdict == "denied":
        principal.denied += 1
    elif verdict == "error":
        principal.errors += 1
    if (action := _text(record.get("action"))) is not None:
        tally.actions[action] += 1


def _verdict(record: Mapping[str, Any], status: object) -> str | None:
    effect = _part(record, "decision").get("effect")
    if effect == "deny" or status == "denied":
        return "denied"
    if status == "error":
        return "error"
    if effect == "allow" and status == "success":
        return "allowed"
    return None


def _finish(tallies: dict[_Key, _SecretTally], records: int) -> AccessReport:
    everyone = [p for t in tallies.values() for p in t.principal.values()]
    first = min((p.first for p in everyone if p.first is not None), default=None)
    last = max((p.last for p in everyone if p.last is not None), default=None)
    bucket: Bucket = "hour" if first and last and last - first < _HOURLY_BELOW else "day"
    buckets = _buckets(first, last, bucket)
    secrets = tuple(
        _secret(key, tallies[key], bucket, buckets)
        for key in sorted(tallies, key=lambda k: (k[0] or "", k[1] or ""))
    )
    return AccessReport(
        secrets=secrets, bucket=bucket, buckets=buckets, first=first, last=last, records=records
    )


def _secret(
    key: _Key, tally: _SecretTally, bucket: Bucket, buckets: tuple[datetime, ...]
) -> SecretActivity:
    people = sorted(
        (_principal(name, p) for name, p in tally.principal.items()),
        key=lambda p: (-p.events, p.principal or ""),
    )
    per_bucket: Counter[datetime] = Counter()
    for hour, n in tally.hours.items():
        per_bucket[_floor(hour, bucket)] += n
    return SecretActivity(
        backend=key[0],
        secret=key[1],
        events=sum(p.events for p in people),
        allowed=sum(p.allowed for p in people),
        denied=sum(p.denied for p in people),
        errors=sum(p.errors for p in people),
        unresolved=sum(tally.pending.values()),
        first=min((p.first for p in people if p.first), default=None),
        last=max((p.last for p in people if p.last), default=None),
        actions=dict(sorted(tally.actions.items())),
        principals=tuple(people),
        histogram=tuple(per_bucket[b] for b in buckets),
    )


def _principal(name: str | None, tally: _PrincipalTally) -> PrincipalActivity:
    return PrincipalActivity(
        principal=name,
        events=tally.events,
        allowed=tally.allowed,
        denied=tally.denied,
        errors=tally.errors,
        first=tally.first,
        last=tally.last,
    )


def _buckets(first: datetime | None, last: datetime | None, bucket: Bucket) -> tuple[datetime, ...]:
    if first is None or last is None:
        return ()
    start, end, step = _floor(first, bucket), _floor(last, bucket), _STEP[bucket]
    return tuple(start + step * i for i in range((end - start) // step + 1))


def _floor(moment: datetime, bucket: Bucket) -> datetime:
    hour = moment.replace(minute=0, second=0, microsecond=0)
    return hour if bucket == "hour" else hour.replace(hour=0)


def _part(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = record.get(name)
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


# -- showing names safely -----------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _label(moment: datetime, bucket: Bucket) -> str:
    return moment.strftime("%Y-%m-%d %H:00" if bucket == "hour" else "%Y-%m-%d")


def _actions(actions: Mapping[str, int]) -> str:
    return ", ".join(f"{sanitize(a)} {n}" for a, n in actions.items())


# -- terminal -----------------------------------------------------------------------------


def render_table(report: AccessReport, console: Console) -> None:
    """Print the report as two tables: one row per secret, then one per secret and principal.

    Both fit ``console.width``: when the full tables would not, a narrow form leaves out the
    backend (named in the title when there is one), the first time, the actions and an
    all-zero Unresolved column, shortens times to the minute, and folds long names onto
    more lines rather than cutting them.
    """
    if not report.secrets:
        console.print("No secret access in these events.")
        return
    console.print(Text(_summary_line(report)))
    secrets, principals = _secret_table(report), _principal_table(report)
    unbounded = console.options.update_width(1 << 16)  # measured as wide as they want
    if max(console.measure(t, options=unbounded).maximum for t in (secrets, principals)) > (
        console.width
    ):
        secrets, principals = _narrow_secret_table(report), _narrow_principal_table(report)
    console.print(secrets)
    console.print(principals)


def _secret_table(report: AccessReport) -> Table:
    secrets = Table(title="Secrets", title_justify="left")
    for name in ("Backend", "Secret", *_COUNTS, "Unresolved", "Principals", "First", "Last"):
        secrets.add_column(name, justify=_justify(name))
    secrets.add_column("Actions")
    for s in report.secrets:
        secrets.add_row(
            _cell(s.backend, "(none)"),
            _cell(s.secret, "(no secret)"),
            *(str(n) for n in (s.allowed, s.denied, s.errors, s.unresolved, len(s.principals))),
            _when(s.first),
            _when(s.last),
            Text(_actions(s.actions)),
        )
    return secrets


def _principal_table(report: AccessReport) -> Table:
    table = Table(title="Principals", title_justify="left")
    for name in ("Secret", "Principal", *_COUNTS, "First", "Last"):
        table.add_column(name, justify=_justify(name))
    for s in report.secrets:
        for p in s.principals:
            table.add_row(
                _cell(s.secret, "(no secret)"),
                _cell(p.principal, "(unknown)"),
                *(str(n) for n in (p.allowed, p.denied, p.errors)),
                _when(p.first),
                _when(p.last),
            )
    return table


def _narrow(title: str, names: tuple[str, ...]) -> Table:
    # Names fold (wrap mid-word) rather than end in "...": a cut secret name is no evidence.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in names:
        if name in _NAMES:
            table.add_column(name, overflow="fold", ratio=1, min_width=8)
        else:
            table.add_column(name, justify=_justify(name), no_wrap=True)
    return table


def _narrow_secret_table(report: AccessReport) -> Table:
    backends = {s.backend for s in report.secrets}
    single = len(backends) == 1
    where = f" on {sanitize(str(next(iter(backends))))}" if single and None not in backends else ""
    unresolved = any(s.unresolved for s in report.secrets)
    names = ("Secret", *_COUNTS, *(("Unresolved",) if unresolved else ()), "Principals", "Last")
    table = _narrow(f"Secrets{where}", names)
    for s in report.secrets:
        counts = (s.allowed, s.denied, s.errors, *((s.unresolved,) if unresolved else ()))
        name = _cell(s.secret, "(no secret)")
        if not single and s.backend is not None:
            name = Text(f"{sanitize(s.backend)}:").append_text(name)
        table.add_row(name, *(str(n) for n in (*counts, len(s.principals))), _minute(s.last))
    return table


def _narrow_principal_table(report: AccessReport) -> Table:
    table = _narrow("Principals", ("Secret", "Principal", *_COUNTS, "Last"))
    for s in report.secrets:
        for p in s.principals:
            table.add_row(
                _cell(s.secret, "(no secret)"),
                _cell(p.principal, "(unknown)"),
                *(str(n) for n in (p.allowed, p.denied, p.errors)),
                _minute(p.last),
            )
    return table


def _minute(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def _justify(column: str) -> Literal["left", "right"]:
    return "right" if column in _NUMERIC else "left"


def _cell(name: str | None, missing: str) -> Text:
    # Text, never a str: rich would read "[bold]" in a secret name as markup.
    return Text(missing, style="italic dim") if name is None else Text(sanitize(name))


def _summary_line(report: AccessReport) -> str:
    # A listing (ListSecrets) names no secret: its row is not one more secret.
    named = [s for s in report.secrets if s.secret is not None]
    counts = f"{_count(report.events, 'event')} on {_count(len(named), 'secret')}"
    if unnamed := report.events - sum(s.events for s in named):
        secrets = _count(len(named), "secret")
        counts = (
            f"{_count(report.events, 'event')}: {report.events - unnamed} on {secrets}, "
            f"{unnamed} naming no secret (listings)"
        )
    return f"{counts}, {_when(report.first)} to {_when(report.last)} (UTC)"


# -- CSV ----------------------------------------------------------------------------------

CSV_COLUMNS = (
    "backend",
    "secret",
    "principal",
    "events",
    "allowed",
    "denied",
    "errors",
    "first",
    "last",
)


def write_csv(report: AccessReport, out: TextIO) -> int:
    """One row per (secret, principal) with its counts and first/last time; return rows."""
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    rows = 0
    for s in report.secrets:
        for p in s.principals:
            names = (csv_safe(n or "") for n in (s.backend, s.secret, p.principal))
            times = ("" if t is None else format_time(t) for t in (p.first, p.last))
            writer.writerow([*names, p.events, p.allowed, p.denied, p.errors, *times])
            rows += 1
    return rows


# -- HTML ---------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a1a1a;
       max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
h2 small { font-weight: normal; color: #555; }
.meta, footer { color: #555; } .missing { font-style: italic; color: #777; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .5rem; text-align: left; }
th { background: #f3f3f3; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code { overflow-wrap: anywhere; }
svg { width: 100%; height: auto; } svg text { font: 11px system-ui, sans-serif; fill: #444; }
.bar { fill: #2f6db5; } .axis { stroke: #888; stroke-width: 1; }
@media print { body { margin: 0; max-width: none; } section { break-inside: avoid; }
  .bar { print-color-adjust: exact; -webkit-print-color-adjust: exact; } }
"""
# No script, style or image may load from anywhere: the page is evidence, opened offline.
_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def render_html(report: AccessReport, title: str) -> str:
    """The report as one self-contained HTML page: summary, per-secret tables and charts."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f'<header><h1>{_e(title)}</h1><p class="meta">{_e(_summary_line(report))}.'
        f" Charts count allowed accesses per {report.bucket}.</p></header>",
    ]
    if not report.secrets:
        parts.append("<p>No secret access in these events.</p>")
    else:
        parts.append("<section><h2>Allowed accesses over time</h2>")
        parts.append(_chart(report.histogram, report, "all secrets") + "</section>")
        parts.append(_summary_table(report))
        parts.extend(_secret_section(s, report) for s in report.secrets)
    parts.append("<footer><p>From the keyledger audit journal. Times are UTC.</p></footer>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _e(text: str) -> str:
    return html.escape(sanitize(text), quote=True)


def _name(name: str | None, missing: str) -> str:
    return f'<span class="missing">{missing}</span>' if name is None else f"<code>{_e(name)}</code>"


def _row(cells: Iterable[str], numbers: Iterable[int] = (), after: Iterable[str] = ()) -> str:
    text = "".join(f"<td>{c}</td>" for c in cells)
    text += "".join(f'<td class="n">{n}</td>' for n in numbers)
    return f"<tr>{text}{''.join(f'<td>{c}</td>' for c in after)}</tr>"


def _head(names: Iterable[str]) -> str:
    cells = "".join(f'<th class="n">{n}</th>' if n in _NUMERIC else f"<th>{n}</th>" for n in names)
    return f"<thead><tr>{cells}</tr></thead>"


def _summary_table(report: AccessReport) -> str:
    head = _head(("Backend", "Secret", *_COUNTS, "Unresolved", "Principals", "First", "Last"))
    rows = [
        _row(
            (_name(s.backend, "(none)"), _name(s.secret, "(no secret)")),
            (s.allowed, s.denied, s.errors, s.unresolved, len(s.principals)),
            (_e(_when(s.first)), _e(_when(s.last))),
        )
        for s in report.secrets
    ]
    return f"<section><h2>Summary</h2><table>{head}<tbody>{''.join(rows)}</tbody></table></section>"


def _secret_section(s: SecretActivity, report: AccessReport) -> str:
    where = f" <small>on {_e(s.backend)}</small>" if s.backend is not None else ""
    facts = f"{_count(s.events, 'event')}: {s.allowed} allowed, {s.denied} denied, "
    facts += _count(s.errors, "error")
    if s.unresolved:
        facts += f", {_count(s.unresolved, 'change')} with no recorded outcome (may have happened)"
    actions = f"<p>Actions: {_e(_actions(s.actions))}</p>" if s.actions else ""
    head = _head(("Principal", "Events", *_COUNTS, "First", "Last"))
    rows = "".join(
        _row(
            (_name(p.principal, "(unknown)"),),
            (p.events, p.allowed, p.denied, p.errors),
            (_e(_when(p.first)), _e(_when(p.last))),
        )
        for p in s.principals
    )
    label = "no secret" if s.secret is None else s.secret
    return (
        f'<section class="secret"><h2>{_name(s.secret, "(no secret)")}{where}</h2>'
        f"<p>{facts}.</p>{actions}<table>{head}<tbody>{rows}</tbody></table>"
        f"{_chart(s.histogram, report, label)}</section>"
    )


def _chart(counts: tuple[int, ...], report: AccessReport, label: str) -> str:
    """An SVG bar chart of ``counts`` over ``report.buckets``, a tooltip on every bar."""
    if not report.buckets:
        return "<p>No dated events.</p>"
    width, height, left, right, top, bottom = 720, 190, 48, 12, 12, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    peak, step = max(max(counts), 1), plot_w / len(counts)
    bar = max(step * 0.8, 1.0)
    bars = []
    for i, (start, n) in enumerate(zip(report.buckets, counts, strict=True)):
        if n:
            h = plot_h * n / peak
            tip = f"{_label(start, report.bucket)}: {n} allowed"
            bars.append(
                f'<rect class="bar" x="{left + i * step + (step - bar) / 2:.2f}" '
                f'y="{top + plot_h - h:.2f}" width="{bar:.2f}" height="{h:.2f}">'
                f"<title>{_e(tip)}</title></rect>"
            )
    base, end = top + plot_h, left + plot_w
    first, last = (_label(b, report.bucket) for b in (report.buckets[0], report.buckets[-1]))
    axes = (
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{base}"/>'
        f'<line class="axis" x1="{left}" y1="{base}" x2="{end}" y2="{base}"/>'
        f'<text x="{left - 6}" y="{top + 8}" text-anchor="end">{peak}</text>'
        f'<text x="{left - 6}" y="{base}" text-anchor="end">0</text>'
        f'<text x="{left}" y="{base + 16}">{_e(first)}</text>'
        f'<text x="{end}" y="{base + 16}" text-anchor="end">{_e(last)}</text>'
        f'<text x="{left + plot_w / 2:.2f}" y="{height - 6}" text-anchor="middle">'
        f"allowed accesses per {report.bucket} (UTC)</text>"
    )
    name = f"Allowed accesses per {report.bucket}, {label}: {sum(counts)} in all"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(name)}"><title>{_e(name)}</title>{axes}{"".join(bars)}</svg>'
    )
