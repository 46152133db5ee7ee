"""The access report an auditor reads: who touched each secret, when, and was it allowed."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from rich.console import Console

from keyledger.proxy.audit.events import AuditEvent, Status
from keyledger.proxy.audit.report import (
    CSV_COLUMNS,
    AccessReport,
    build_report,
    render_html,
    render_table,
    write_csv,
)
from tests.audit_records import access_event, auth_failure_event, lifecycle_event, sealed


def t(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


def access(
    at: datetime,
    who: str | None,
    secret: str | None,
    *,
    action: str = "read",
    effect: str = "allow",
    status: Status = Status.SUCCESS,
    request: str | None = None,
) -> AuditEvent:
    return access_event(
        at=at,
        request=request or f"req-{at:%d%H%M%S}",
        protocol="aws",
        user_agent="aws-cli/2.15",
        principal=who,
        action=action,
        secret=secret,
        effect=effect,
        rule="r1",
        policy_hash="sha256:00",
        reason=effect,
        status=status,
        code="AccessDenied" if effect == "deny" else None,
    )


def auth_failure(at: datetime, secret: str | None) -> AuditEvent:
    return auth_failure_event(at=at, principal=None, secret=secret, code="InvalidClientTokenId")


def scenario() -> list[dict[str, Any]]:
    """Two days on two secrets: two principals, denials, an error, a change left pending."""
    return sealed(
        access(t(23, 9), "svc-a", "prod/db"),
        access(t(23, 10), "svc-a", "prod/db"),
        access(t(23, 11), "svc-b", "prod/db", effect="deny", status=Status.DENIED),
        access(t(23, 12), "svc-a", "prod/db", action="write", status=Status.PENDING, request="w1"),
        access(t(23, 12, 0, 1), "svc-a", "prod/db", action="write", request="w1"),
        lifecycle_event(t(23, 12, 30)),
        access(t(24, 8), "svc-b", "prod/db", status=Status.ERROR),
        access(t(24, 9, 30), "svc-a", "prod/db"),
        auth_failure(t(24, 10), "prod/db"),
        auth_failure(t(24, 10, 5), None),
        access(t(24, 11), "svc-a", "prod/db", action="rotate", status=Status.PENDING, request="r1"),
        access(t(24, 13), "svc-b", "staging/api"),
    )


class TestBuildReport:
    def test_counts_per_secret(self) -> None:
        """Allowed, denied, errors and unresolved changes are counted per secret."""
        report = build_report(scenario())

        assert report.records == 12
        assert [(s.backend, s.secret) for s in report.secrets] == [
            ("aws", "prod/db"),
            ("aws", "staging/api"),
        ]
        db, api = report.secrets
        assert (db.events, db.allowed, db.denied, db.errors, db.unresolved) == (7, 4, 2, 1, 1)
        assert (db.first, db.last) == (t(23, 9), t(24, 10))
        assert dict(db.actions) == {"read": 5, "write": 1}
        assert (api.events, api.allowed, api.denied, api.errors) == (1, 1, 0, 0)
        assert report.events == 8

    def test_principals_per_secret(self) -> None:
        """Each principal's counts and first/last time, the busiest first, unknown last."""
        (db, _) = build_report(scenario()).secrets

        got = [(p.principal, p.events, p.allowed, p.denied, p.errors) for p in db.principals]
        assert got == [("svc-a", 4, 4, 0, 0), ("svc-b", 2, 0, 1, 1), (None, 1, 0, 1, 0)]
        svc_a, svc_b, unknown = db.principals
        assert (svc_a.first, svc_a.last) == (t(23, 9), t(24, 9, 30))
        assert (svc_b.first, svc_b.last) == (t(23, 11), t(24, 8))
        assert unknown.first == unknown.last == t(24, 10)

    def test_hourly_histogram_under_three_days(self) -> None:
        """Two days of events are bucketed by hour, every hour present, the same for all secrets."""
        report = build_report(scenario())
        db, api = report.secrets

        assert report.bucket == "hour"
        assert (report.buckets[0], report.buckets[-1]) == (t(23, 9), t(24, 13))
        assert len(report.buckets) == 29
        assert {report.buckets[i]: n for i, n in enumerate(db.histogram) if n} == {
            t(23, 9): 1,
            t(23, 10): 1,
            t(23, 12): 1,
            t(24, 9): 1,
        }
        assert {report.buckets[i]: n for i, n in enumerate(api.histogram) if n} == {t(24, 13): 1}
        assert sum(report.histogram) == 5

    def test_daily_histogram_from_three_days(self) -> None:
        """A span of three days or more is bucketed by day, empty days included."""
        report = build_report(
            sealed(
                access(t(20, 23), "svc-a", "prod/db"),
                access(t(21, 1), "svc-a", "prod/db"),
                access(t(21, 2), "svc-a", "prod/db"),
                access(t(23, 23), "svc-a", "prod/db"),
            )
        )

        assert report.bucket == "day"
        assert report.buckets == tuple(t(20, 0) + timedelta(days=n) for n in range(4))
        assert report.histogram == (1, 2, 0, 1)

    def test_just_under_three_days_is_hourly(self) -> None:
        """The switch to days happens at exactly three days of span."""
        under = build_report(sealed(access(t(20, 0), "a", "s"), access(t(22, 23, 59), "a", "s")))
        at = build_report(sealed(access(t(20, 0), "a", "s"), access(t(23, 0), "a", "s")))

        assert (under.bucket, at.bucket) == ("hour", "day")

    def test_pending_without_an_id_stays_unresolved(self) -> None:
        """A pending change that cannot be matched to an outcome is reported as unresolved."""
        record = sealed(access(t(23, 9), "svc-a", "prod/db", status=Status.PENDING))[0]
        record["request"] = None

        (db,) = build_report([record]).secrets

        assert (db.events, db.unresolved) == (0, 1)

    def test_listing_without_a_secret(self) -> None:
        """Access events naming no secret (a listing) are grouped under no secret."""
        (listing,) = build_report(sealed(access(t(23, 9), "svc-a", None, action="list"))).secrets

        assert (listing.backend, listing.secret, listing.allowed) == ("aws", None, 1)

    def test_nothing_to_report(self) -> None:
        """Events with no secret access make an empty report, not an error."""
        report = build_report(sealed(auth_failure(t(23, 9), None)))

        assert (report.records, report.secrets, report.buckets) == (1, (), ())
        assert report.histogram == ()


def console_text(report: AccessReport) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None, force_terminal=False)
    render_table(report, console)
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


class TestRenderTable:
    def test_tables_show_the_counts(self) -> None:
        """The terminal view lists each secret with its counts, then each principal."""
        text = console_text(build_report(scenario()))

        assert "8 events on 2 secrets, 2026-11-23 09:00:00Z to 2026-11-24 13:00:00Z" in text
        db_row = next(line for line in text.splitlines() if "prod/db" in line and "read 5" in line)
        assert [cell.strip() for cell in db_row.split("│")[3:8]] == ["4", "2", "1", "1", "3"]
        assert "(unknown)" in text
        assert "svc-b" in text

    def test_a_listing_is_not_counted_as_a_secret(self) -> None:
        """ListSecrets rows ("(no secret)") are counted as events, not as one more secret."""
        events = sealed(
            access(t(23, 9), "svc-a", "prod/db/password"),
            access(t(23, 10), "svc-a", "prod/db/password"),
            access(t(23, 11), "svc-a", None, action="list"),
        )

        text = console_text(build_report(events))

        assert (
            "3 events: 2 on 1 secret, 1 naming no secret (listings), 2026-11-23 09:00:00Z to "
            "2026-11-23 11:00:00Z (UTC)"
        ) in text
        assert "(no secret)" in text

    def test_names_are_not_markup_or_terminal_codes(self) -> None:
        """A secret name cannot restyle the terminal, nor fake an escape: it shows as typed."""
        name = "[bold red]x[/] \x1b[2J\u202e \\x07"

        text = console_text(build_report(sealed(access(t(23, 9), "svc-a", name))))

        assert "[bold red]x[/] \\x1b[2J\\u202e \\\\x07" in text
        assert "\x1b" not in text

    def test_empty_report(self) -> None:
        """With nothing to report, the terminal says so."""
        assert console_text(build_report([])) == "No secret access in these events.\n"


class TestWriteCsv:
    def test_one_row_per_secret_and_principal(self) -> None:
        """The CSV has a row per (secret, principal) with counts and UTC first/last times."""
        out = io.StringIO(newline="")

        assert write_csv(build_report(scenario()), out) == 4

        rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
        assert tuple(rows[0]) == CSV_COLUMNS
        assert [
            (r["secret"], r["principal"], r["events"], r["allowed"], r["denied"], r["errors"])
            for r in rows
        ] == [
            ("prod/db", "svc-a", "4", "4", "0", "0"),
            ("prod/db", "svc-b", "2", "0", "1", "1"),
            ("prod/db", "", "1", "0", "1", "0"),
            ("staging/api", "svc-b", "1", "1", "0", "0"),
        ]
        assert (rows[0]["first"], rows[0]["last"]) == (
            "2026-11-23T09:00:00.000000Z",
            "2026-11-24T09:30:00.000000Z",
        )

    def test_formula_injection_is_neutralised(self) -> None:
        """A secret or principal named like a formula is written as text."""
        name = "=cmd|' /C calc'!A0"
        out = io.StringIO(newline="")

        write_csv(build_report(sealed(access(t(23, 9), "@evil", name))), out)

        (row,) = csv.DictReader(io.StringIO(out.getvalue(), newline=""))
        assert (row["secret"], row["principal"]) == ("'" + name, "'@evil")


class Page(HTMLParser):
    """What a browser would see: tags, text, table cells and tooltips."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.texts: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.tooltips: list[str] = []
        self._cell: list[str] | None = None
        self._title: list[str] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(name for name, _ in attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "title" and "svg" in self.tags:
            self._title = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "title" and self._title is not None:
            self.tooltips.append("".join(self._title))
            self._title = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        for part in (self._cell, self._title):
            if part is not None:
                part.append(data)


class TestRenderHtml:
    def test_summary_table_has_the_numbers(self) -> None:
        """The summary table shows each secret's counts, principals and first/last time."""
        page = Page(render_html(build_report(scenario()), "Access report: November"))

        summary = page.tables[0]
        assert summary[0][:7] == [
            "Backend",
            "Secret",
            "Allowed",
            "Denied",
            "Errors",
            "Unresolved",
            "Principals",
        ]
        assert summary[1] == [
            "aws",
            "prod/db",
            "4",
            "2",
            "1",
            "1",
            "3",
            "2026-11-23 09:00:00Z",
            "2026-11-24 10:00:00Z",
        ]
        assert summary[2][:3] == ["aws", "staging/api", "1"]
        assert "Access report: November" in page.texts

    def test_per_secret_principals(self) -> None:
        """Each secret has its own table of principals, unknown callers shown as such."""
        page = Page(render_html(build_report(scenario()), "r"))

        db_principals = page.tables[1]
        assert db_principals[1][:5] == ["svc-a", "4", "4", "0", "0"]
        assert db_principals[3][:5] == ["(unknown)", "1", "0", "1", "0"]

    def test_charts_have_axes_and_tooltips(self) -> None:
        """Every chart is inline SVG, labelled, with the count of each bar as a tooltip."""
        page = Page(render_html(build_report(scenario()), "r"))

        assert page.tags.count("svg") == 3  # all secrets, then one per secret
        assert "2026-11-23 09:00: 1 allowed" in page.tooltips
        assert "2026-11-24 13:00: 1 allowed" in page.tooltips
        assert "Allowed accesses per hour, all secrets: 5 in all" in page.tooltips
        assert "allowed accesses per hour (UTC)" in page.texts
        assert "2026-11-23 09:00" in page.texts
        assert "2026-11-24 13:00" in page.texts

    def test_self_contained(self) -> None:
        """The page loads nothing: no scripts, stylesheets, images or links, and a strict CSP."""
        html = render_html(build_report(scenario()), "r")
        page = Page(html)

        assert not {"script", "link", "img", "iframe", "object"} & set(page.tags)
        assert not {"src", "href"} & set(page.attributes)
        assert "default-src 'none'" in html
        assert "url(" not in html
        assert "@import" not in html

    def test_names_are_escaped(self) -> None:
        """A secret, principal or title holding markup is shown as text, never run."""
        name = "<script>alert(1)</script>"
        report = build_report(sealed(access(t(23, 9), '"><img src=x>', name)))

        html = render_html(report, "<b>title</b>")
        page = Page(html)

        assert "<script" not in html.lower()
        assert "script" not in page.tags
        assert "img" not in page.tags
        assert "b" not in page.tags
        assert name in page.texts
        assert '"><img src=x>' in page.texts
        assert "<b>title</b>" in page.texts

    def test_control_characters_are_visible(self) -> None:
        """Control and bidi characters in a name are shown as escapes, not obeyed."""
        html = render_html(build_report(sealed(access(t(23, 9), "svc", "a\u202eb\x07"))), "r")

        assert "a\\u202eb\\x07" in Page(html).texts
        assert "\u202e" not in html
        assert "\x07" not in html

    def test_empty_report(self) -> None:
        """An empty report is still a valid page that says there is nothing to show."""
        page = Page(render_html(build_report([]), "r"))

        assert "No secret access in these events." in page.texts
        assert "svg" not in page.tags
