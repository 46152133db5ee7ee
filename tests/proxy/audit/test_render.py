"""Rendering events: one readable line per event, and nothing raw from an event on a terminal."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.style import Style
from rich.text import Text

from keyledger.proxy.audit.events import AuditEvent, EventType, Outcome, Status
from keyledger.proxy.audit.render import render_json, render_line, sanitize
from tests.audit_records import access_event, auth_failure_event

AT = datetime(2026, 11, 23, 21, 55, 1, 123456, tzinfo=UTC)
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eevil\u2066x\u2069\x7f"
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# What rich itself writes: SGR sequences (colour and weight), nothing else.
RICH_SGR = re.compile(r"\x1b\[[0-9;]*m")


def access(
    *,
    secret: str = "prod/db/password",
    user_agent: str = "Boto3/1.34",
    effect: str = "allow",
    status: Status = Status.SUCCESS,
    code: str | None = None,
) -> dict[str, Any]:
    return access_event(
        at=AT,
        user_agent=user_agent,
        secret=secret,
        effect=effect,
        rule="payments-read" if effect == "allow" else None,
        reason="no rule allows read" if effect == "deny" else "allowed",
        status=status,
        code=code,
        latency_ms=3.2,
    ).to_record()


def ansi(text: Text) -> str:
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system="truecolor", width=1000).print(text)
    return out.getvalue()


def style_of(text: Text, word: str) -> Style:
    start = text.plain.index(word)
    styles = [s.style for s in text.spans if s.start <= start < s.end]
    assert len(styles) == 1
    (style,) = styles
    assert isinstance(style, Style)
    return style


class TestRenderLine:
    def test_access_line(self) -> None:
        """An access event reads as time, effect, action, secret, who, where, outcome, rule."""
        line = render_line(access(), color=False).plain

        assert line == (
            "2026-11-23 21:55:01.123  ALLOW  read      prod/db/password  svc-payments (sigv4)"
            "  10.0.0.7  aws/GetSecretValue  success 3.2ms  rule=payments-read  ua=Boto3/1.34"
        )

    def test_denied_access_shows_why(self) -> None:
        """A denial without a matching rule shows policy's reason instead."""
        line = render_line(
            access(effect="deny", status=Status.DENIED, code="AccessDenied"), color=False
        ).plain

        assert "  DENY   read  " in line
        assert "denied AccessDenied 3.2ms" in line
        assert "reason=no rule allows read" in line

    @pytest.mark.parametrize(
        ("record", "label", "colour"),
        [
            (access(), "ALLOW", "green"),
            (access(effect="deny", status=Status.DENIED), "DENY", "red"),
            (access(status=Status.ERROR, code="ResourceNotFoundException"), "ERROR", "yellow"),
        ],
    )
    def test_effect_is_coloured(self, record: dict[str, Any], label: str, colour: str) -> None:
        """Allowed is green, denied red, and a failed call yellow."""
        text = render_line(record, color=True)

        style = style_of(text, label)
        assert style.color is not None
        assert style.color.name == colour

    def test_no_colour_means_no_styles(self) -> None:
        """With colour off the line carries no style at all, so no escape is written."""
        text = render_line(access(effect="deny", status=Status.DENIED), color=False)

        assert text.spans == []
        assert not text.style
        assert "\x1b" not in ansi(text)

    def test_control_characters_in_secret_and_user_agent_are_escaped(self) -> None:
        """ESC, CSI and bidi overrides in caller-chosen fields appear as visible escapes."""
        record = access(secret="prod/" + HOSTILE, user_agent="curl/8 " + HOSTILE)

        for color in (True, False):
            text = render_line(record, color=color)
            assert UNSAFE.search(text.plain) is None
            assert "prod/\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\u202eevil" in text.plain
            assert "ua=curl/8 \\x1b[2J" in text.plain
            output = ansi(text)
            # Only rich's own colour codes remain once they are taken out: no ESC at all.
            assert UNSAFE.search(RICH_SGR.sub("", output).rstrip("\n")) is None
            if not color:
                assert RICH_SGR.search(output) is None

    def test_markup_in_event_data_is_only_text(self) -> None:
        """A secret named like rich markup is printed as written, not interpreted."""
        text = render_line(access(secret="[bold red]x[/]"), color=True)

        assert "[bold red]x[/]" in ansi(text)

    def test_auth_failure_is_a_denial_with_its_reason(self) -> None:
        """A failed sign-in shows as DENY with the claimed identity, code and reason."""
        record = auth_failure_event(
            at=AT,
            request="r",
            source_ip="203.0.113.9",
            user_agent="aws-cli/2",
            principal="AKIA\x1bEXAMPLE",
            code="InvalidSignature",
            latency_ms=0.4,
            reason="the signature does not match",
        ).to_record()

        text = render_line(record, color=True)

        assert text.plain == (
            "2026-11-23 21:55:01.123  DENY   sign-in failed  AKIA\\x1bEXAMPLE (sigv4)  "
            "203.0.113.9  aws-json/GetSecretValue  denied InvalidSignature 0.4ms  "
            "reason=the signature does not match  ua=aws-cli/2"
        )
        colour = style_of(text, "DENY").color
        assert colour is not None
        assert colour.name == "red"

    def test_policy_reload(self) -> None:
        """A reload shows the short old and new policy hashes and what changed."""
        record = AuditEvent(
            type=EventType.POLICY_RELOAD,
            time=AT,
            outcome=Outcome(status=Status.SUCCESS),
            detail={
                "cause": "watch",
                "old_hash": "a" * 64,
                "new_hash": "b" * 64,
                "files": ["payments.yaml", "ci.yaml"],
                "rules": 12,
                "warnings": [],
            },
        ).to_record()

        assert render_line(record, color=False).plain == (
            "2026-11-23 21:55:01.123  POLICY  reloaded aaaaaaaaaaaa -> bbbbbbbbbbbb  rules=12"
            "  files=payments.yaml,ci.yaml  cause=watch"
        )

    def test_rejected_policy_reload(self) -> None:
        """A rejected reload says which policy stayed in force and the first problem."""
        record = AuditEvent(
            type=EventType.POLICY_RELOAD,
            time=AT,
            outcome=Outcome(status=Status.ERROR, code="PolicyError"),
            detail={
                "cause": "sighup",
                "old_hash": "a" * 64,
                "new_hash": None,
                "kept_hash": "a" * 64,
                "problems": ["prod.yaml:14:7: unknown action 'reed'", "another"],
            },
        ).to_record()

        assert render_line(record, color=False).plain == (
            "2026-11-23 21:55:01.123  POLICY  rejected, kept aaaaaaaaaaaa  "
            "prod.yaml:14:7: unknown action 'reed' (+1 more)  cause=sighup"
        )

    @pytest.mark.parametrize(
        ("kind", "detail", "expected"),
        [
            (
                EventType.LIFECYCLE,
                {"event": "start", "policy_hash": "c" * 64, "policy_files": ["demo.yaml"]},
                "LIFECYCLE  start  policy_hash=cccccccccccc  policy_files=demo.yaml",
            ),
            (
                EventType.CHECKPOINT,
                {
                    "seals": {"seq": 1000, "hash": "d" * 64},
                    "previous": None,
                    "key_id": "1a2b3c4d5e6f7a8b",
                    "signature": "e" * 88,
                },
                "CHECKPOINT  sealed seq 1000  (dddddddddddd)  key=1a2b3c4d5e6f7a8b",
            ),
            (
                EventType.ALERT,
                {"message": "20 denials in 1m", "principal": "svc-\x1b[31m"},
                "ALERT  20 denials in 1m  principal=svc-\\x1b[31m",
            ),
        ],
    )
    def test_other_events_are_summarised_from_their_detail(
        self, kind: EventType, detail: dict[str, Any], expected: str
    ) -> None:
        """Lifecycle, checkpoint and alert events show their detail briefly."""
        record = AuditEvent(type=kind, time=AT, detail=detail).to_record()

        assert render_line(record, color=False).plain == f"2026-11-23 21:55:01.123  {expected}"

    def test_an_alert_names_its_severity_rule_and_summary(self) -> None:
        """An alert the rules wrote: severity, rule, what happened, how many events and
        repeats held back; a caller's text in it stays inert."""
        detail = {
            "rule": "stranger-denied",
            "severity": "high",
            "key": "principal x",
            "summary": "3 denials for principal str\x1b[31manger within 1m",
            "events": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
            "suppressed": 2,
        }
        record = AuditEvent(type=EventType.ALERT, time=AT, detail=detail).to_record()

        assert render_line(record, color=False).plain == (
            "2026-11-23 21:55:01.123  ALERT  HIGH      stranger-denied  3 denials for principal "
            "str\\x1b[31manger within 1m  events=3  suppressed=2"
        )

    def test_an_unknown_type_is_named(self) -> None:
        """An event type added after this reader was written shows under its own name."""
        record = {"time": "2026-11-23T21:55:01.123456Z", "type": "gap\x1b", "detail": {"n": 3}}

        assert render_line(record, color=False).plain == "2026-11-23 21:55:01.123  GAP\\x1b  n=3"

    @pytest.mark.parametrize(
        "record",
        [
            {},
            {"type": "access", "time": 17, "principal": "x", "outcome": [], "request": None},
            {"type": "\x1b[31mnew_kind", "detail": {"k": {"nested": 1}, "n": None}},
            {"type": "access", "resource": {"secret": "x" * 10_000}},
        ],
    )
    def test_odd_records_render_without_error(self, record: dict[str, Any]) -> None:
        """Missing or oddly shaped fields never stop a tail; long values are cut short."""
        text = render_line(record, color=True)

        assert UNSAFE.search(text.plain) is None
        assert len(text.plain) < 400


class TestSanitize:
    @pytest.mark.parametrize(
        ("raw", "shown"),
        [
            ("\x1b[31m", "\\x1b[31m"),
            ("\x9b31m", "\\x9b31m"),
            ("\x00\x07\x7f", "\\x00\\x07\\x7f"),
            ("a\tb\nc\r", "a\\tb\\nc\\r"),
            ("\u202e\u202a\u2066\u2069", "\\u202e\\u202a\\u2066\\u2069"),
            ("\u200f\u2028", "\\u200f\\u2028"),
            ("C:\\x1b", "C:\\\\x1b"),
        ],
    )
    def test_unsafe_characters_become_visible_escapes(self, raw: str, shown: str) -> None:
        """Each control or bidi character is shown as an escape; a backslash is doubled."""
        assert sanitize(raw) == shown

    def test_ordinary_text_is_unchanged(self) -> None:
        """Names, including non-Latin ones, pass through as they are."""
        for text in ("prod/db/password", "svc-payments", "секрет/ключ", "鍵", "emoji-🔑"):
            assert sanitize(text) == text

    @given(st.text())
    def test_nothing_unsafe_survives(self, text: str) -> None:
        """Whatever the input, the output has no control or bidi character left."""
        assert UNSAFE.search(sanitize(text)) is None


class TestRenderJson:
    def test_one_compact_line_that_round_trips(self) -> None:
        """The JSON form is one line and parses back to the same event."""
        record = access(secret="prod/" + HOSTILE, user_agent="ua\n" + HOSTILE)

        line = render_json(record)

        assert "\n" not in line
        assert ", " not in line
        assert orjson.loads(line) == record

    def test_control_and_bidi_characters_are_escaped(self) -> None:
        """ESC is escaped by JSON itself; C1, DEL and bidi overrides are escaped as well."""
        line = render_json(access(secret=HOSTILE))

        assert UNSAFE.search(line) is None
        assert "\\u001b[2J" in line
        assert "\\u009b31m" in line
        assert "\\u202eevil" in line
        assert "\\u007f" in line

    def test_plain_records_are_orjson_output(self) -> None:
        """Without anything to escape, the line is exactly the compact JSON."""
        record = access()

        assert render_json(record) == orjson.dumps(record).decode()

    def test_values_orjson_cannot_write_still_render(self) -> None:
        """A lone surrogate (possible in hand-made records) falls back to ASCII JSON."""
        line = render_json({"secret": "a\ud800b"})

        assert line == '{"secret":"a\\ud800b"}'
