"""Alert rules over crafted event sequences: each detector fires exactly when it should,
across window edges and time zones, stays silent otherwise; suppression counts; a reload
keeps what it can; a restart neither loses nor repeats an alert."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keyledger.alerts.engine import AlertEngine, history_needed
from keyledger.alerts.model import Alert
from keyledger.alerts.rules import AlertRuleError, AlertRules, load_alert_files
from keyledger.proxy.audit.events import format_time

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday


class Stream:
    """Events as the journal writes them, numbered along one chain."""

    def __init__(self) -> None:
        self.seq = 0

    def event(
        self,
        at: datetime,
        *,
        principal: str | None = "svc-a",
        secret: str | None = "prod/db/password",
        effect: str = "allow",
        kind: str = "access",
        action: str = "read",
        source: str = "10.0.0.5",
        groups: tuple[str, ...] = (),
        method: str = "sigv4",
        geo: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.seq += 1
        record: dict[str, Any] = {
            "id": f"ev{self.seq:04d}",
            "time": format_time(at),
            "type": kind,
            "request": {"id": f"r{self.seq}", "protocol": "aws-json", "source_ip": source},
            "principal": {
                "id": principal,
                "auth_method": method,
                "groups": list(groups),
                "attributes": {} if principal else {"access_key_id": "AKKLUNKNOWN"},
            },
            "chain": {"id": "test", "seq": self.seq},
        }
        if geo is not None:  # as GeoIP adds it: only with a database that knew the address
            record["request"]["geo"] = geo
        if kind == "access":
            record["action"] = action
            record["resource"] = {"backend": "aws", "secret": secret}
            record["decision"] = {"effect": effect, "rule": None}
        return record


@pytest.fixture
def stream() -> Stream:
    return Stream()


def rules(tmp_path: Path, text: str) -> AlertRules:
    path = tmp_path / "alerts.yaml"
    path.write_text(textwrap.dedent(text))
    return load_alert_files([path])


def engine(tmp_path: Path, text: str) -> AlertEngine:
    return AlertEngine(rules(tmp_path, text))


def fired(engine: AlertEngine, events: list[dict[str, Any]]) -> list[Alert]:
    return [alert for record in events for alert in engine.feed(record)]


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


DENY_BURST = """
    version: 1
    rules:
      - id: burst
        severity: high
        suppress: 0s
        deny_burst: {count: 3, window: 1m, by: principal}
"""


class TestDenyBurst:
    def test_fires_at_the_count_within_the_window_and_names_the_events(
        self, tmp_path: Path, stream: Stream
    ) -> None:
        """Three denials in a minute fire once, naming the three events and their chain
        positions; allowed calls do not count; a failed sign-in counts."""
        alerts = fired(
            engine(tmp_path, DENY_BURST),
            [
                stream.event(T0, effect="deny"),
                stream.event(T0 + seconds(10)),
                stream.event(T0 + seconds(20), effect="deny"),
                stream.event(T0 + seconds(30), kind="auth_failure"),
            ],
        )

        (alert,) = alerts
        assert (alert.rule, alert.key, alert.detector) == ("burst", "principal svc-a", "deny_burst")
        assert [(e.id, e.chain, e.seq) for e in alert.events] == [
            ("ev0001", "test", 1),
            ("ev0003", "test", 3),
            ("ev0004", "test", 4),
        ]
        assert alert.time == T0 + seconds(30)
        assert alert.as_json()["severity"] == "high"

    def test_silent_across_the_window_edge(self, tmp_path: Path, stream: Stream) -> None:
        """The first denial has left the window exactly one minute later: no alert."""
        alerts = fired(
            engine(tmp_path, DENY_BURST),
            [
                stream.event(T0, effect="deny"),
                stream.event(T0 + seconds(30), effect="deny"),
                stream.event(T0 + seconds(60), effect="deny"),
            ],
        )
        assert alerts == []

    def test_each_principal_and_each_source_counts_apart(
        self, tmp_path: Path, stream: Stream
    ) -> None:
        by_source = DENY_BURST.replace("by: principal", "by: source")
        events = [
            stream.event(T0, effect="deny", principal="a", source="10.0.0.1"),
            stream.event(T0 + seconds(1), effect="deny", principal="b", source="10.0.0.1"),
            stream.event(T0 + seconds(2), effect="deny", principal="c", source="10.0.0.1"),
        ]
        assert fired(engine(tmp_path, DENY_BURST), events) == []
        (alert,) = fired(engine(tmp_path, by_source), events)
        assert alert.key == "source 10.0.0.1"


class TestFloods:
    def test_a_floods_aggregate_counts_for_every_call_it_stands_for(
        self, tmp_path: Path, stream: Stream
    ) -> None:
        """One aggregate auth_failure event for 40 folded failures trips a burst of 3 by
        source, as 40 events would."""
        by_source = DENY_BURST.replace("by: principal", "by: source")
        flood = stream.event(T0, kind="auth_failure", principal=None, source="203.0.113.9")
        flood["detail"] = {"aggregate": True, "count": 40}

        (alert,) = fired(engine(tmp_path, by_source), [flood])

        assert alert.key == "source 203.0.113.9"
        assert alert.detail["count"] == 40


class TestSuppression:
    def test_repeats_are_held_back_and_counted(self, tmp_path: Path, stream: Stream) -> None:
        """With suppress 10m, bursts two and three of one principal are held; the next
        alert after the period carries their count; another principal is not held."""
        text = DENY_BURST.replace("suppress: 0s", "suppress: 10m").replace("count: 3", "count: 1")
        alerts = fired(
            engine(tmp_path, text),
            [
                stream.event(T0, effect="deny"),
                stream.event(T0 + seconds(60), effect="deny"),
                stream.event(T0 + seconds(120), effect="deny"),
                stream.event(T0 + seconds(130), effect="deny", principal="svc-b"),
                stream.event(T0 + seconds(600), effect="deny"),
            ],
        )
        assert [(a.key, a.suppressed, a.time) for a in alerts] == [
            ("principal svc-a", 0, T0),
            ("principal svc-b", 0, T0 + seconds(130)),
            ("principal svc-a", 2, T0 + seconds(600)),
        ]


class TestRate:
    def test_more_than_count_per_window_per_secret(self, tmp_path: Path, stream: Stream) -> None:
        """rate: more than 3 calls: the fourth within the minute fires, keyed by secret."""
        text = """
            version: 1
            rules:
              - id: scraper
                severity: medium
                rate: {count: 3, window: 1m, by: secret}
        """
        events = [stream.event(T0 + seconds(i), principal=f"p{i}") for i in range(4)]
        (alert,) = fired(engine(tmp_path, text), events)
        assert alert.key == "secret aws:prod/db/password"
        assert alert.detail["count"] == 4
        assert fired(engine(tmp_path, text), events[:3]) == []


class TestBulkRead:
    TEXT = """
        version: 1
        rules:
          - id: bulk
            severity: high
            bulk_read: {count: 3, window: 10m}
    """

    def test_distinct_secrets_only(self, tmp_path: Path, stream: Stream) -> None:
        """Reading one secret five times is not bulk; three distinct ones within ten
        minutes is; a describe does not count; the alert names the three reads."""
        same = [stream.event(T0 + seconds(i)) for i in range(5)]
        assert fired(engine(tmp_path, self.TEXT), same) == []
        events = [
            stream.event(T0, secret="a"),
            stream.event(T0 + seconds(1), secret="b", action="describe"),
            stream.event(T0 + seconds(2), secret="b"),
            stream.event(T0 + seconds(3), secret="a"),
            stream.event(T0 + seconds(599), secret="c"),
        ]
        (alert,) = fired(engine(tmp_path, self.TEXT), events)
        assert [e.id for e in alert.events] == [events[2]["id"], events[3]["id"], events[4]["id"]]

    def test_reads_older_than_the_window_drop_out(self, tmp_path: Path, stream: Stream) -> None:
        events = [
            stream.event(T0, secret="a"),
            stream.event(T0 + seconds(300), secret="b"),
            stream.event(T0 + seconds(600), secret="c"),
        ]
        assert fired(engine(tmp_path, self.TEXT), events) == []


class TestCanary:
    def test_any_touch_allowed_or_denied(self, tmp_path: Path, stream: Stream) -> None:
        text = """
            version: 1
            rules:
              - id: decoy
                severity: critical
                suppress: 0s
                canary: {secrets: ["aws:prod/db/admin-password-old"]}
        """
        armed = engine(tmp_path, text)
        assert fired(armed, [stream.event(T0)]) == []
        alerts = fired(
            armed,
            [
                stream.event(T0, secret="prod/db/admin-password-old", effect="deny"),
                stream.event(T0, secret="prod/db/admin-password-old", action="describe"),
            ],
        )
        assert [a.detail["effect"] for a in alerts] == ["deny", "allow"]
        assert "canary aws:prod/db/admin-password-old touched by svc-a" in alerts[0].summary


class TestOffHours:
    TEXT = """
        version: 1
        rules:
          - id: night-reads
            severity: medium
            suppress: 0s
            filter: {secret: ["aws:prod/*"]}
            off_hours:
              hours: {days: mon-fri, from: "08:00", to: "19:00", timezone: Europe/Berlin}
    """

    @pytest.mark.parametrize(
        ("moment", "fires"),
        [
            (datetime(2026, 3, 2, 7, 0, tzinfo=UTC), False),  # 08:00 CET, Monday
            (datetime(2026, 3, 2, 6, 59, tzinfo=UTC), True),  # 07:59 CET
            (datetime(2026, 3, 2, 17, 59, tzinfo=UTC), False),  # 18:59 CET
            (datetime(2026, 3, 2, 18, 0, tzinfo=UTC), True),  # 19:00 CET
            (datetime(2026, 3, 7, 12, 0, tzinfo=UTC), True),  # Saturday
            # After the switch to summer time (29 March 2026), 08:00 is 06:00 UTC.
            (datetime(2026, 3, 30, 6, 0, tzinfo=UTC), False),
            (datetime(2026, 3, 30, 5, 59, tzinfo=UTC), True),
        ],
    )
    def test_in_the_windows_time_zone_across_dst(
        self, tmp_path: Path, stream: Stream, moment: datetime, fires: bool
    ) -> None:
        alerts = fired(engine(tmp_path, self.TEXT), [stream.event(moment, secret="prod/x")])
        assert bool(alerts) is fires

    def test_the_filter_narrows_it(self, tmp_path: Path, stream: Stream) -> None:
        saturday = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
        assert fired(engine(tmp_path, self.TEXT), [stream.event(saturday, secret="dev/x")]) == []


class TestFirstSeen:
    TEXT = """
        version: 1
        rules:
          - id: new-pair
            severity: low
            suppress: 0s
            first_seen: {of: secret, learning: 14d}
    """

    def test_silent_while_learning_then_fires_on_a_new_pair(
        self, tmp_path: Path, stream: Stream
    ) -> None:
        """For its first 14 days the detector learns; then a secret new for svc-a fires,
        one read within the 14 days does not, and one last read over 14 days ago does."""
        armed = engine(tmp_path, self.TEXT)
        day = timedelta(days=1)
        learning = [stream.event(T0, secret="a"), stream.event(T0 + 13 * day, secret="b")]
        assert fired(armed, learning) == []
        later = [
            stream.event(T0 + 14 * day, secret="a"),  # last seen exactly 14d ago: not new
            stream.event(T0 + 15 * day, secret="c"),  # never seen
            stream.event(T0 + 20 * day, secret="b"),  # seen 7 days ago
            stream.event(T0 + 35 * day, secret="b"),  # 15 days since
        ]
        alerts = fired(armed, later)
        assert [(a.key, a.time) for a in alerts] == [
            ("principal svc-a secret aws:c", T0 + 15 * day),
            ("principal svc-a secret aws:b", T0 + 35 * day),
        ]

    def test_networks_of_a_principal(self, tmp_path: Path, stream: Stream) -> None:
        text = self.TEXT.replace("of: secret, learning: 14d", "of: network, learning: 1d")
        armed = engine(tmp_path, text)
        events = [
            stream.event(T0, source="10.1.2.3"),
            stream.event(T0 + timedelta(days=1), source="10.1.2.200"),  # same /24, a day on
            stream.event(T0 + timedelta(days=1), source="::ffff:192.0.2.9"),
        ]
        (alert,) = fired(armed, events)
        assert alert.key == "principal svc-a network 192.0.2.0/24"


class TestUnusualSource:
    def test_outside_the_configured_networks(self, tmp_path: Path, stream: Stream) -> None:
        text = """
            version: 1
            rules:
              - id: where-from
                severity: high
                suppress: 0s
                unusual_source:
                  networks:
                    "svc-*": [10.0.0.0/8, "2001:db8::/32"]
        """
        alerts = fired(
            engine(tmp_path, text),
            [
                stream.event(T0, source="10.9.9.9"),
                stream.event(T0, source="2001:db8::1"),
                stream.event(T0, source="203.0.113.7"),
                stream.event(T0, source="203.0.113.7", principal="web-1"),  # not judged
            ],
        )
        assert [a.key for a in alerts] == ["principal svc-a source 203.0.113.7"]


class TestFilter:
    def test_groups_and_auth_method(self, tmp_path: Path, stream: Stream) -> None:
        text = """
            version: 1
            rules:
              - id: ci-denials
                severity: low
                filter: {groups: [ci], auth_method: [oidc]}
                deny_burst: {count: 1, window: 1m}
        """
        armed = engine(tmp_path, text)
        assert fired(armed, [stream.event(T0, effect="deny", groups=("ci",))]) == []
        alerts = fired(
            armed, [stream.event(T0, effect="deny", groups=("ops", "ci"), method="oidc")]
        )
        assert len(alerts) == 1


class TestReloadAndRestart:
    def test_a_reload_keeps_the_state_of_unchanged_rules(
        self, tmp_path: Path, stream: Stream
    ) -> None:
        """Two denials, a reload that adds a rule, a third denial: the burst completes;
        a rule whose text changed starts afresh."""
        armed = engine(tmp_path, DENY_BURST)
        fired(armed, [stream.event(T0, effect="deny"), stream.event(T0, effect="deny")])
        added = DENY_BURST + textwrap.indent(
            textwrap.dedent("""
              - id: other
                severity: low
                canary: {secrets: ["aws:decoy"]}
            """),
            "      ",
        )
        armed.replace_rules(rules(tmp_path, added))
        assert len(fired(armed, [stream.event(T0 + seconds(1), effect="deny")])) == 1

        changed = engine(tmp_path, DENY_BURST)
        fired(changed, [stream.event(T0, effect="deny"), stream.event(T0, effect="deny")])
        changed.replace_rules(rules(tmp_path, DENY_BURST.replace("window: 1m", "window: 2m")))
        assert fired(changed, [stream.event(T0 + seconds(1), effect="deny")]) == []

    def journal(self, stream: Stream, alert: Alert | None = None) -> Iterator[dict[str, Any]]:
        yield stream.event(T0, effect="deny")
        yield stream.event(T0 + seconds(1), effect="deny")
        yield stream.event(T0 + seconds(2), effect="deny")
        if alert is not None:
            yield {"id": "alert1", "time": format_time(T0 + seconds(2)), "type": "alert",
                   **{"detail": alert.as_json()}}  # fmt: skip

    def test_a_restart_mid_burst_completes_it_once(self, tmp_path: Path, stream: Stream) -> None:
        """Restored from two denials, the third after the restart fires."""
        restarted = engine(tmp_path, DENY_BURST)
        events = list(self.journal(stream))
        assert restarted.restore(events[:2]) == []
        assert len(restarted.feed(events[2])) == 1

    def test_a_restart_after_the_alert_does_not_repeat_it(
        self, tmp_path: Path, stream: Stream
    ) -> None:
        """The journal holds the burst and its alert: a restart sends nothing; a burst
        whose alert never reached the journal is handed back once."""
        live = engine(tmp_path, DENY_BURST.replace("suppress: 0s", "suppress: 5m"))
        events = list(self.journal(stream))
        (alert,) = fired(live, events)
        with_alert = [*events, *list(self.journal(Stream(), alert))[3:]]

        again = engine(tmp_path, DENY_BURST.replace("suppress: 0s", "suppress: 5m"))
        assert again.restore(with_alert) == []
        # Suppression carries over: a new burst a minute later is held back.
        late = [stream.event(T0 + seconds(60 + i), effect="deny") for i in range(3)]
        assert fired(again, late) == []

        lost = engine(tmp_path, DENY_BURST.replace("suppress: 0s", "suppress: 5m"))
        (handed_back,) = lost.restore(events)
        assert handed_back.events == alert.events

    def test_history_needed_covers_the_longest_window(self, tmp_path: Path) -> None:
        text = DENY_BURST + textwrap.indent(
            textwrap.dedent("""
              - id: pairs
                severity: low
                first_seen: {learning: 7d}
            """),
            "      ",
        )
        assert history_needed(rules(tmp_path, text)) == timedelta(days=14)


class TestRuleFiles:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            (
                "rules:\n  - id: x\n    severity: hihg\n    canary: {secrets: [a]}\n",
                "alerts.yaml:3:15: unknown severity 'hihg' (did you mean 'high'?)",
            ),
            (
                "rules:\n  - id: x\n    severity: low\n",
                "alerts.yaml:2:5: an alert rule has exactly one detector",
            ),
            (
                "rules:\n  - id: x\n    severity: low\n    rate: {count: 5, window: soon}\n",
                "alerts.yaml:4:30: window is a duration like 1m, 10m or 14d, not 'soon'",
            ),
            (
                "rules:\n  - id: x\n    severity: low\n    deny_burts: {count: 1, window: 1m}\n",
                "alerts.yaml:4:5: unknown key 'deny_burts' in an alert rule (did you mean "
                "'deny_burst'?)",
            ),
            (
                "rules:\n  - id: x\n    severity: low\n    off_hours:\n      hours: "
                "{days: mon-fri, timezone: Mars/Olympus}\n",
                "alerts.yaml:5:40: unknown time zone 'Mars/Olympus'",
            ),
            (
                "rules:\n  - id: x\n    severity: low\n    filter: {effect: [denied]}\n"
                "    canary: {secrets: [a]}\n",
                "alerts.yaml:4:22: unknown effect 'denied'",
            ),
        ],
    )
    def test_mistakes_are_reported_where_they_are(
        self, tmp_path: Path, text: str, problem: str
    ) -> None:
        path = tmp_path / "alerts.yaml"
        path.write_text(text)
        with pytest.raises(AlertRuleError) as caught:
            load_alert_files([path])
        assert any(p.startswith(f"{tmp_path}/{problem}") for p in caught.value.problems), (
            caught.value.problems
        )

    def test_duplicate_ids_across_files(self, tmp_path: Path) -> None:
        for name in ("a.yaml", "b.yaml"):
            (tmp_path / name).write_text(
                "rules:\n  - id: same\n    severity: low\n    canary: {secrets: [x]}\n"
            )
        with pytest.raises(AlertRuleError, match=r"b.yaml:2:9: duplicate rule id 'same' \(first"):
            load_alert_files([tmp_path / "a.yaml", tmp_path / "b.yaml"])

    def test_a_folder_takes_every_rule_file_but_the_cases(self, tmp_path: Path) -> None:
        """latest.yaml holds rules (test is not a word in it); demo_test.yaml holds cases."""
        from keyledger.alerts.rules import rule_files

        for name in ("latest.yaml", "demo_test.yaml", "attestation.yml"):
            (tmp_path / name).write_text("rules: []\n")
        assert [p.name for p in rule_files([tmp_path])] == ["attestation.yml", "latest.yaml"]

    @pytest.mark.parametrize(
        ("line", "problem"),
        [
            ("    description: [a, list]\n", "a rule's description is text"),
            ('    suppress: " 10m"\n', "suppress is a duration"),
        ],
    )
    def test_what_the_schema_refuses_the_loader_refuses(
        self, tmp_path: Path, line: str, problem: str
    ) -> None:
        path = tmp_path / "alerts.yaml"
        path.write_text(
            "rules:\n  - id: x\n    severity: low\n" + line + "    canary: {secrets: [a]}\n"
        )
        with pytest.raises(AlertRuleError, match=problem):
            load_alert_files([path])
