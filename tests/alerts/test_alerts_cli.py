"""``keyledger alerts check | test | run`` as a platform team and CI use them.

Every test runs the real command line (``main(argv)``) on real rule files, case files and
journals written by the real :class:`Journal`, and asserts the lines a user reads and the
exit status a CI job acts on.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
import yaml
from botocore.exceptions import ClientError

from keyledger.alerts.engine import AlertEngine
from keyledger.alerts.model import Alert
from keyledger.alerts.rules import load_alert_files, rule_files
from keyledger.alerts.testing import load_cases
from keyledger.alerts_cli import render_alert
from keyledger.cli import main
from keyledger.proxy.audit.events import AuditEvent
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.audit.reader import iter_records
from keyledger.proxy.audit.sinks import Batch
from keyledger.proxy.audit.sinks.base import parse_line
from keyledger.proxy.audit.sinks.s3 import S3Sink
from keyledger.proxy.config import S3SinkConfig
from tests.audit_records import access_event, auth_failure_event, sealed
from tests.conftest import RunningProxy, write_proxy_files

DEMO = Path(__file__).resolve().parents[2] / "keyledger" / "alerts" / "examples" / "demo"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, in working hours

Capsys = pytest.CaptureFixture[str]
Result = tuple[int, list[str], str]


def run(capsys: Capsys, *argv: str | Path, env_token: str | None = None) -> Result:
    """Run ``keyledger alerts ARGV`` in-process: (exit status, stdout lines, stderr)."""
    capsys.readouterr()  # what came before (a journal's log lines) is not the command's
    with pytest.MonkeyPatch.context() as patch:
        if env_token is not None:
            patch.setenv("KEYLEDGER_ADMIN_TOKEN", env_token)
        code = main(["alerts", *(str(a) for a in argv)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def at(path: Path, line: int, column: int, text: str) -> str:
    """``path:line:col``, after checking that ``text`` starts there (1-based) in the file."""
    source = path.read_text(encoding="utf-8").splitlines()[line - 1]
    assert source[column - 1 :].startswith(text), (source, column, text)
    return f"{path}:{line}:{column}"


def demo_copy(tmp_path: Path, old: str = "", new: str = "") -> Path:
    """The demo's rules and cases in a folder of their own, ``old`` replaced in the rules."""
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder)
    rules = folder / "demo.yaml"
    text = rules.read_text(encoding="utf-8")
    assert old in text
    rules.write_text(text.replace(old, new, 1), encoding="utf-8")
    return folder


RULES = """
    version: 1
    rules:
      - id: burst
        severity: high
        deny_burst: {count: 2, window: 1m}
"""


# -- check -----------------------------------------------------------------------------------


class TestCheck:
    def test_the_demo_is_ok(self, capsys: Capsys) -> None:
        """The shipped demo loads: one line with its files, rules by detector and hash."""
        code, out, err = run(capsys, "check", DEMO)

        digest = load_alert_files(rule_files([DEMO])).hash
        assert (code, err) == (0, "")
        assert out == [
            f"ok: 1 file(s), 3 rule(s) (canary 1, deny_burst 1, off_hours 1); rules hash {digest}"
        ]

    def test_every_problem_of_every_file_with_its_position(
        self, capsys: Capsys, tmp_path: Path
    ) -> None:
        """Problems in two files are all printed, each at its file:line:col; exit 1, and
        their count on stderr."""
        first = write(
            tmp_path / "rules" / "a.yaml",
            """
            rules:
              - id: x
                severity: hihg
                canary: {secrets: [aws:decoy]}
            """,
        )
        second = write(
            tmp_path / "rules" / "b.yaml",
            """
            rules:
              - id: y
                severity: low
                deny_burts: {count: 1, window: 1m}
            """,
        )

        code, out, err = run(capsys, "check", tmp_path / "rules")

        assert (code, err) == (1, "3 problem(s)\n")
        assert out == [
            f"{at(first, 3, 15, 'hihg')}: unknown severity 'hihg' (did you mean 'high'?); "
            "one of info, low, medium, high, critical",
            f"{at(second, 4, 5, 'deny_burts')}: unknown key 'deny_burts' in an alert rule "
            "(did you mean 'deny_burst'?)",
            f"{at(second, 2, 5, 'id: y')}: an alert rule has exactly one detector (deny_burst, "
            "rate, bulk_read, canary, off_hours, first_seen, unusual_source), not none",
        ]

    def test_rules_in_a_file_named_as_cases_are_a_problem(
        self, capsys: Capsys, tmp_path: Path
    ) -> None:
        """A folder's rules_test.yaml is left out of the rules by its name: holding rules,
        it is reported instead of silently dropped."""
        write(tmp_path / "ok.yaml", RULES)
        misnamed = write(tmp_path / "rules_test.yaml", RULES)

        code, out, _ = run(capsys, "check", tmp_path)

        assert code == 1
        assert out == [
            f"{at(misnamed, 2, 1, 'rules:')}: named as a rule case file ('test' in its name), "
            "so its rules are not loaded: rename it"
        ]

    def test_a_folder_without_rules_fails(self, capsys: Capsys, tmp_path: Path) -> None:
        code, out, _ = run(capsys, "check", tmp_path)

        assert code == 1
        assert out == [
            f"no alert rule files found in {tmp_path} (folders' *.yaml, but not *test*.yaml)"
        ]

    def test_a_missing_path_is_a_usage_error(self, capsys: Capsys, tmp_path: Path) -> None:
        """One line on stderr, exit 2, nothing on stdout."""
        code, out, err = run(capsys, "check", tmp_path / "nope")

        assert (code, out) == (2, [])
        assert err == f"keyledger: PATH {tmp_path / 'nope'}: no such file or folder\n"

    def test_no_path_is_a_usage_error(self, capsys: Capsys) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["alerts", "check"])

        assert exited.value.code == 2
        assert "the following arguments are required: PATH" in capsys.readouterr().err


# -- test ------------------------------------------------------------------------------------


class TestTest:
    def test_the_demo_cases_pass(self, capsys: Capsys) -> None:
        """Every case shipped beside the demo rules passes; each line names its case."""
        code, out, err = run(capsys, "test", DEMO)

        cases = load_cases([DEMO / "demo_test.yaml"])
        assert (code, err) == (0, "")
        assert len(cases) >= 6
        assert out == [
            *(f"PASS  {case.where}  {case.name}" for case in cases),
            f"{len(cases)} passed, 0 failed (1 file(s))",
        ]

    def test_a_failing_case_says_what_was_expected_and_what_fired(
        self, capsys: Capsys, tmp_path: Path
    ) -> None:
        """With the burst at six denials, the five-denial case fails: the first difference,
        then what was expected and what fired; the other cases still run; exit 1."""
        folder = demo_copy(tmp_path, "count: 5, window: 1m", "count: 6, window: 1m")
        cases = folder / "demo_test.yaml"

        code, out, _ = run(capsys, "test", folder)

        assert code == 1
        where = at(cases, 15, 5, "name: five denials within a minute")
        start = out.index(f"FAIL  {where}  five denials within a minute are a burst")
        assert out[start : start + 6] == [
            f"FAIL  {where}  five denials within a minute are a burst",
            "      expected 1 alert(s), 0 fired",
            "      expected:",
            "        demo-app-denied-repeatedly  principal demo-app  events [0, 1, 2, 3, 4]  "
            "suppressed 0",
            "      fired:",
            "        (no alert)",
        ]
        assert out[-1] == "11 passed, 3 failed (1 file(s))"

    def test_a_wrong_alert_is_shown_with_its_events_and_time(
        self, capsys: Capsys, tmp_path: Path
    ) -> None:
        """A case expecting other events than fired names both, by index, and the time."""
        write(tmp_path / "rules.yaml", RULES)
        cases = write(
            tmp_path / "rules_test.yaml",
            """
            cases:
              - name: two denials
                defaults: {effect: deny}
                events:
                  - {at: +0s, effect: allow}
                  - {at: +10s, repeat: 2, every: 5s}
                expect:
                  - {rule: burst, key: principal test-app, events: [0, 1]}
            """,
        )

        code, out, _ = run(capsys, "test", tmp_path)

        assert code == 1
        assert out == [
            f"FAIL  {at(cases, 2, 5, 'name: two denials')}  two denials",
            "      alert 1 (burst): expected events [0, 1], it names [1, 2]",
            "      expected:",
            "        burst  principal test-app  events [0, 1]",
            "      fired:",
            "        burst  principal test-app  events [1, 2]  suppressed 0  at +15s",
            "0 passed, 1 failed (1 file(s))",
        ]

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            ("count: 5, window: 1m", "count: 4, window: 1m"),
            ("window: 1m", "window: 2m"),
            ("suppress: 10m", "suppress: 5m"),
            ("principal: [demo-app]", 'principal: ["*-app"]'),
            ("effect: [allow]", "effect: [allow, deny]"),
            ('from: "08:00"', 'from: "07:00"'),
            ('to: "19:00"', 'to: "20:00"'),
            ("days: mon-fri", "days: mon-sun"),
            ('secret: ["aws:prod/*"]', 'secret: ["aws:*"]'),
            ("action: [read]", "action: [read, list]"),
            ("aws:prod/db/admin-password-old", "aws:prod/db/admin-password*"),
            ("suppress: 0s", "suppress: 1m"),
        ],
    )
    def test_the_demo_cases_catch_a_changed_rule(
        self, capsys: Capsys, tmp_path: Path, old: str, new: str
    ) -> None:
        """Each setting of the demo rules is pinned by some case: changing it fails one."""
        code, out, _ = run(capsys, "test", demo_copy(tmp_path, old, new))

        assert code == 1
        assert any(line.startswith("FAIL") for line in out)

    def test_quiet_prints_only_failures(self, capsys: Capsys) -> None:
        code, out, _ = run(capsys, "test", DEMO, "-q")

        assert code == 0
        assert len(out) == 1
        assert re.fullmatch(r"\d+ passed, 0 failed \(1 file\(s\)\)", out[0])

    def test_an_expected_rule_that_does_not_exist(self, capsys: Capsys, tmp_path: Path) -> None:
        """A case naming no loaded rule fails there, with the likely one."""
        write(tmp_path / "rules.yaml", RULES)
        cases = write(
            tmp_path / "rules_test.yaml",
            """
            cases:
              - name: typo
                events: [{effect: deny}, {effect: deny}]
                expect: [{rule: brust, key: principal test-app}]
            """,
        )

        code, out, _ = run(capsys, "test", tmp_path)

        assert code == 1
        assert out[1] == (
            f"      {at(cases, 4, 14, '{rule: brust')}: no rule 'brust' among the rules "
            "loaded (did you mean 'burst'?)"
        )

    def test_malformed_cases_are_reported_where_they_are(
        self, capsys: Capsys, tmp_path: Path
    ) -> None:
        """Every mistake in a case file, each at its file:line:col; no case runs; exit 1."""
        write(tmp_path / "rules.yaml", RULES)
        cases = write(
            tmp_path / "rules_test.yaml",
            """
            cases:
              - name: mistakes
                events:
                  - {at: soon, effect: deny}
                  - {secret: prod/x, efect: deny}
                  - {at: +1m, source_ip: 10.0.0.256}
                  - {type: auth_failure, action: read}
                  - {at: +30s}
                expect:
                  - {rule: burst, events: [0, 9]}
              - name: no expectation
                events: [{}]
            """,
        )

        code, out, err = run(capsys, "test", tmp_path)

        assert (code, err) == (1, "8 problem(s)\n")
        assert out == [
            f"{at(cases, 4, 14, 'soon')}: at is an offset from the case's start (+30s, +1h30m) "
            "or a time (2026-03-07T12:00:00Z), not 'soon'",
            f"{at(cases, 5, 26, 'efect')}: unknown key 'efect' in an event (did you mean "
            "'effect'?)",
            f"{at(cases, 5, 18, 'prod/x')}: secret 'prod/x' must be written backend:name "
            "(aws:prod/db/password)",
            f"{at(cases, 6, 30, '10.0.0.256')}: source_ip is an IP address, not '10.0.0.256'",
            f"{at(cases, 7, 38, 'read')}: a failed sign-in has no action: it is refused before "
            "policy (and counts as a denial)",
            f"{at(cases, 8, 14, '+30s')}: this event is earlier (+30s) than the one before "
            "(+1m): a journal is replayed oldest first",
            f"{at(cases, 10, 9, '{rule: burst')}: an expected alert needs key: what it is "
            "about (principal demo-app)",
            f"{at(cases, 11, 5, 'name: no expectation')}: a rule case needs expect: [the "
            "alerts it raises], or expect: [] for none",
        ]

    def test_an_index_past_the_events(self, capsys: Capsys, tmp_path: Path) -> None:
        write(tmp_path / "rules.yaml", RULES)
        cases = write(
            tmp_path / "rules_test.yaml",
            """
            cases:
              - name: two denials
                events: [{effect: deny, repeat: 2}]
                expect: [{rule: burst, key: principal test-app, events: [0, 2]}]
            """,
        )

        code, out, _ = run(capsys, "test", tmp_path)

        assert code == 1
        assert out == [
            f"{at(cases, 4, 61, '[0, 2]')}: the case has 2 event(s): indexes go from 0 to 1"
        ]

    def test_a_policy_test_file_is_not_taken_for_cases(
        self, capsys: Capsys, tmp_path: Path
    ) -> None:
        write(tmp_path / "rules.yaml", RULES)
        cases = write(tmp_path / "payments_test.yaml", "tests: []\n")

        code, out, _ = run(capsys, "test", tmp_path)

        assert code == 1
        assert out == [
            f"{cases}:1:1: a rule case file needs cases: [list of cases] (tests: is how a "
            "policy test file lists its cases)"
        ]

    def test_no_case_files_fails(self, capsys: Capsys, tmp_path: Path) -> None:
        """A CI job pointed at rules without cases must not pass on nothing."""
        write(tmp_path / "rules.yaml", RULES)

        code, out, _ = run(capsys, "test", tmp_path)

        assert code == 1
        assert out == [
            "no rule case files found (YAML files with 'test' in their name, beside the rules)"
        ]

    def test_case_files_and_rule_files_named_one_by_one(
        self, capsys: Capsys, tmp_path: Path
    ) -> None:
        """A file with 'test' in its name is cases, any other is rules."""
        rules = write(tmp_path / "a" / "rules.yaml", RULES)
        cases = write(
            tmp_path / "b" / "burst_test.yaml",
            """
            cases:
              - name: two denials within a minute
                events: [{effect: deny}, {at: +59s, effect: deny}]
                expect: [{rule: burst, key: principal test-app, events: [0, 1]}]
            """,
        )

        code, out, _ = run(capsys, "test", rules, cases)

        assert code == 0
        assert out[-1] == "1 passed, 0 failed (1 file(s))"

    def test_case_events_are_shaped_as_the_journal_writes_them(self, tmp_path: Path) -> None:
        """An access event and a failed sign-in from a case have the keys, at every level,
        that the journal's own events have."""
        cases = write(
            tmp_path / "shape_test.yaml",
            """
            cases:
              - name: shapes
                events:
                  - {secret: "aws:prod/db/password", effect: deny, groups: [ops]}
                  - {type: auth_failure, principal: null, attributes: {access_key_id: AKX}}
                expect: []
            """,
        )
        (case,) = load_cases([cases])
        journal = sealed(
            access_event(effect="deny"), auth_failure_event(principal=None, request="req-2")
        )

        def keys(value: Any) -> Any:
            """The keys at every level (attributes' are the caller's own)."""
            if isinstance(value, dict):
                return {k: keys(v) if k != "attributes" else {} for k, v in value.items()}
            return None

        assert [keys(r) for r in case.records] == [keys(r) for r in journal]
        assert case.records[0]["decision"]["effect"] == "deny"
        assert case.records[1]["principal"] == {
            "id": None,
            "auth_method": "sigv4",
            "groups": [],
            "attributes": {"access_key_id": "AKX"},
        }


# -- run -------------------------------------------------------------------------------------


def denied(at: datetime, principal: str = "demo-app") -> AuditEvent:
    return access_event(at=at, principal=principal, secret="prod/payments/api-key", effect="deny")


def write_journal(folder: Path, chain: str, events: Sequence[AuditEvent]) -> None:
    """``events`` appended by a real journal on ``chain``. No checkpoints: they are timed
    by the real clock, after these made-up times, and a chain's times never go back."""

    async def append() -> None:
        journal = Journal(directory=folder, chain_id=chain, fsync=False)
        await journal.start()
        try:
            for event in events:
                await journal.append(event)
        finally:
            await journal.close()

    asyncio.run(append())


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """Two chains: demo-app's five denials within a minute split across them (a burst only
    once merged), an allowed read, and mallory's denied read of the canary an hour on."""
    folder = tmp_path / "audit"
    write_journal(
        folder,
        "node-1",
        [
            denied(T0),
            denied(T0 + timedelta(seconds=20)),
            denied(T0 + timedelta(seconds=40)),
            access_event(at=T0 + timedelta(minutes=30), principal="demo-app"),
        ],
    )
    write_journal(
        folder,
        "node-2",
        [
            denied(T0 + timedelta(seconds=10)),
            denied(T0 + timedelta(seconds=30)),
            access_event(
                at=T0 + timedelta(hours=1),
                principal="mallory",
                secret="prod/db/admin-password-old",
                effect="deny",
            ),
        ],
    )
    return folder


def engine_alerts(folder: Path, rules: Path = DEMO) -> list[Alert]:
    """What one engine raises over the journal, every chain merged by time."""
    engine = AlertEngine(load_alert_files(rule_files([rules])))
    return [alert for record in iter_records(folder) for alert in engine.feed(record)]


class TestRun:
    def test_prints_what_would_have_fired(self, capsys: Capsys, journal: Path) -> None:
        """The burst (across both chains) and the canary, one line each, exactly the
        engine's alerts; the summary goes to stderr."""
        code, out, err = run(capsys, "run", journal, "--rules", DEMO)

        assert code == 0
        assert out == [
            "2026-03-02T10:00:40Z  HIGH      demo-app-denied-repeatedly  principal demo-app  "
            "5 denials for principal demo-app within 1m",
            "2026-03-02T11:00:00Z  CRITICAL  prod-db-admin-canary  principal mallory secret "
            "aws:prod/db/admin-password-old  canary aws:prod/db/admin-password-old touched by "
            "mallory (read, deny)",
        ]
        assert out == [render_alert(a) for a in engine_alerts(journal)]
        summary = err.splitlines()
        assert re.fullmatch(
            rf"replayed \d+ event\(s\) from {re.escape(str(journal))}, \S+ \.\. \S+ in "
            r"[\d.]+s \([\d,]+ events/s\)",
            summary[0],
        )
        assert summary[1:] == [
            "2 alert(s), 0 repeat(s) held back by suppress:",
            "  demo-app-denied-repeatedly  1 alert(s)",
            "  prod-db-admin-canary        1 alert(s)",
        ]

    def test_json_lines_are_the_engines_alerts(self, capsys: Capsys, journal: Path) -> None:
        """--json: one object per line, each the alert the engine gives, events named by
        chain and seq."""
        code, out, _ = run(capsys, "run", journal, "--rules", DEMO, "--json")

        printed = [json.loads(line) for line in out]
        assert code == 0
        assert printed == [alert.as_json() for alert in engine_alerts(journal)]
        assert [e["chain"] for e in printed[0]["events"]] == [
            "node-1",
            "node-2",
            "node-1",
            "node-2",
            "node-1",
        ]
        assert [(p["rule"], p["time"]) for p in printed] == [
            ("demo-app-denied-repeatedly", "2026-03-02T10:00:40.000000Z"),
            ("prod-db-admin-canary", "2026-03-02T11:00:00.000000Z"),
        ]

    @pytest.mark.parametrize(
        ("window", "rules"),
        [
            (["--since", "2026-03-02T10:00:30Z"], ["prod-db-admin-canary"]),
            (["--until", "2026-03-02T10:00:40Z"], []),
            (["--until", "2026-03-02T10:00:41Z"], ["demo-app-denied-repeatedly"]),
            (["--since", "2026-03-02", "--until", "2026-03-03"], ["demo-app-denied-repeatedly",
                                                                 "prod-db-admin-canary"]),
            (["--since", "2026-03-02T11:00:01+00:00"], []),
        ],
    )  # fmt: skip
    def test_since_and_until_narrow_the_replay(
        self, capsys: Capsys, journal: Path, window: list[str], rules: list[str]
    ) -> None:
        """Only events in [since, until) are replayed: a burst cut by either is no burst."""
        code, out, err = run(capsys, "run", journal, "--rules", DEMO, "--json", *window)

        assert code == 0
        assert [json.loads(line)["rule"] for line in out] == rules
        if not rules:
            assert err.splitlines()[1] == "no alert would have fired"

    def test_since_takes_an_age(self, capsys: Capsys, journal: Path) -> None:
        """--since 7d is a week before now: the journal's March events are older."""
        code, out, _ = run(capsys, "run", journal, "--rules", DEMO, "--since", "7d")

        assert (code, out) == (0, [])

    def test_repeats_held_back_are_counted(self, capsys: Capsys, tmp_path: Path) -> None:
        """Three bursts of one principal within suppress: one alert, two held back."""
        rules = write(tmp_path / "rules" / "burst.yaml", RULES)
        write_journal(
            tmp_path / "audit",
            "node-1",
            [denied(T0 + timedelta(seconds=n)) for n in range(6)],
        )

        code, out, err = run(capsys, "run", tmp_path / "audit", "--rules", rules)

        assert (code, len(out)) == (0, 1)
        assert err.splitlines()[1:] == [
            "1 alert(s), 2 repeat(s) held back by suppress:",
            "  burst  1 alert(s), 2 held back",
        ]

    def test_names_from_the_journal_cannot_drive_the_terminal(
        self, capsys: Capsys, tmp_path: Path
    ) -> None:
        """A principal name with escape codes is shown escaped in the human line."""
        write_journal(
            tmp_path / "audit",
            "node-1",
            [access_event(at=T0, principal="evil\x1b[2J\n", secret="prod/db/admin-password-old")],
        )

        code, out, _ = run(capsys, "run", tmp_path / "audit", "--rules", DEMO)

        assert code == 0
        assert out == [
            "2026-03-02T10:00:00Z  CRITICAL  prod-db-admin-canary  principal evil\\x1b[2J\\n "
            "secret aws:prod/db/admin-password-old  canary aws:prod/db/admin-password-old "
            "touched by evil\\x1b[2J\\n (read, allow)"
        ]

    def test_rules_that_do_not_load_exit_1(
        self, capsys: Capsys, journal: Path, tmp_path: Path
    ) -> None:
        rules = write(tmp_path / "rules" / "bad.yaml", "rules: [{id: x, severity: low}]\n")

        code, out, err = run(capsys, "run", journal, "--rules", rules)

        assert code == 1
        assert len(out) == 1
        assert "an alert rule has exactly one detector" in out[0]
        assert err == "1 problem(s)\n"

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["{tmp}/nope"], "SOURCE {tmp}/nope: no such file or folder"),
            (["{tmp}"], "SOURCE {tmp}: no journal files (*.jsonl) found"),
            (
                ["gs://bucket/audit"],
                "SOURCE gs://bucket/audit: gs:// is not a source alerts run reads: give a "
                "journal folder, s3://BUCKET[/PREFIX] or cloudwatch://GROUP[/STREAM]",
            ),
            (
                ["{journal}", "--since", "yesterday"],
                "--since: 'yesterday' is not a time: use an RFC 3339 time "
                "(2026-11-23T10:00:00Z), a date (2026-11-23) or an age (15m, 2h, 7d)",
            ),
            (
                ["{journal}", "--since", "2026-03-03", "--until", "2026-03-02"],
                "--since (2026-03-03T00:00:00.000000Z) is after --until "
                "(2026-03-02T00:00:00.000000Z): no event can match",
            ),
            (
                ["{journal}", "--rules", "{tmp}/none"],
                "--rules {tmp}/none: no such file or folder",
            ),
        ],
    )
    def test_mistakes_are_one_line_exit_2(
        self, capsys: Capsys, journal: Path, tmp_path: Path, argv: list[str], message: str
    ) -> None:
        given = [a.format(tmp=tmp_path / "empty", journal=journal) for a in argv]
        (tmp_path / "empty").mkdir()
        rules = [] if "--rules" in given else ["--rules", str(DEMO)]

        code, out, err = run(capsys, "run", *given, *rules)

        assert (code, out) == (2, [])
        assert err == f"keyledger: {message.format(tmp=tmp_path / 'empty')}\n"

    def test_rules_are_required(self, capsys: Capsys, journal: Path) -> None:
        """No --rules and no --config to take them from: one line, exit 2."""
        code, out, err = run(capsys, "run", journal)

        assert (code, out) == (2, [])
        assert err == (
            "keyledger: give the rules: --rules PATH, or --config FILE with alerts.rules\n"
        )

    def test_a_journal_file_is_a_source_too(self, capsys: Capsys, journal: Path) -> None:
        """One chain's file alone: the burst split across chains is not there."""
        segment = journal / "node-2.000000000001.jsonl"

        code, out, _ = run(capsys, "run", segment, "--rules", DEMO, "--json")

        assert code == 0
        assert [orjson.loads(line)["rule"] for line in out] == ["prod-db-admin-canary"]


# -- run over the copies, and --follow -------------------------------------------------------


class Spawned:
    """`keyledger alerts run ARGV` in a process of its own, its output read as it comes."""

    def __init__(self, *argv: str | Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keyledger", "alerts", "run", *(str(a) for a in argv)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _read(stream: IO[bytes] | None, lines: list[str]) -> None:
        assert stream is not None
        with stream:
            for line in stream:
                lines.append(line.decode().rstrip("\n"))

    def wait_for(self, lines: list[str], text: str, within: float = 20.0) -> str:
        """The first line of ``lines`` holding ``text``, once there is one."""
        deadline = time.monotonic() + within
        while True:
            found = [line for line in lines if text in line]
            if found:
                return found[0]
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"no line with {text!r}: out={self.out} err={self.err}")
            time.sleep(0.02)

    def stop(self) -> int:
        """SIGTERM, as a Deployment stops it; the exit status once it has stopped."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        time.sleep(0.1)  # the readers reach the end of the pipes
        return code


def follower_config(tmp_path: Path, rules: Path, destinations: list[dict[str, Any]]) -> Path:
    """A proxy's whole config, its alerts section naming ``rules`` and ``destinations``."""
    doc = write_proxy_files(tmp_path)
    doc["alerts"] = {"rules": [str(rules)], "destinations": destinations}
    path = tmp_path / "keyledger.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


NOW_RULES = """
    version: 1
    rules:
      - id: burst
        severity: high
        suppress: 0s
        deny_burst: {count: 3, window: 1m}
"""


class TestRunOverCopies:
    def test_the_s3_copy_replays_as_the_journal_does(
        self,
        capsys: Capsys,
        journal: Path,
        bucket: str,
    ) -> None:
        """Both chains shipped by the real S3 sink (one of them twice, cut differently):
        replayed from s3://, the alerts are the folder's."""
        sink = S3Sink(S3SinkConfig(name="s3", bucket=bucket, prefix="audit/", region="us-east-1"))

        async def ship() -> None:
            for chain in ("node-1", "node-2"):
                raw = (journal / f"{chain}.000000000001.jsonl").read_bytes().splitlines()
                lines = [parse_line(line) for line in raw]
                await sink.send(Batch(chain, tuple(lines[:3])))
                await sink.send(Batch(chain, tuple(lines)))
            await sink.close()

        asyncio.run(ship())
        code, out, err = run(capsys, "run", f"s3://{bucket}/audit", "--rules", DEMO, "--json")

        assert code == 0, err
        assert [json.loads(line) for line in out] == [a.as_json() for a in engine_alerts(journal)]

    def test_follow_sends_to_the_configs_destinations_until_sigterm(self, tmp_path: Path) -> None:
        """--follow over a folder with --config: the config's rules, and its stdout
        destination prints each new alert's document (so the human line does not); a
        burst in the history is not sent; SIGTERM stops it with exit 0 and a summary."""
        folder = tmp_path / "audit"
        rules = write(tmp_path / "rules" / "burst.yaml", NOW_RULES)
        config = follower_config(tmp_path, rules, [{"type": "stdout", "name": "log"}])
        now = datetime.now(UTC)
        write_journal(folder, "node-w0", [denied(now - timedelta(seconds=s)) for s in (30, 29, 28)])

        follower = Spawned(folder, "--follow", "--config", config, "--interval", "100ms",
                           "--lag", "200ms")  # fmt: skip
        follower.wait_for(follower.err, "following")
        write_journal(folder, "node-w1", [denied(datetime.now(UTC)) for _ in range(3)])
        sent = json.loads(follower.wait_for(follower.out, "keyledger.alert/v1"))
        code = follower.stop()

        assert code == 0, follower.err
        assert sent["alert"]["rule"] == "burst"
        assert {e["chain"] for e in sent["alert"]["events"]} == {"node-w1"}
        assert len(follower.out) == 1  # the history's burst was not sent
        assert follower.err[:2] == [
            follower.err[0],
            "1 alert(s), 0 repeat(s) held back by suppress:",
        ]
        assert follower.err[0].startswith(f"replayed 3 event(s) from {folder}")
        assert follower.err[3] == (
            f"following {folder}: polled every 0.1s, events held back 0.2s to put chains in "
            "time order; alerts go to log"
        )
        assert re.fullmatch(
            r"stopped after \d+s of following: 1 alert\(s\) raised live, offered to log; 0 "
            r"event\(s\) came later than --lag, \d+ repeat\(s\) dropped",
            follower.err[-1],
        )

    def test_admin_streams_are_read_and_followed(self, proxy: RunningProxy) -> None:
        """--url: a running keyledger's admin stream replays its history, then the follower
        gets its live events: three denied reads make one alert, printed."""
        rules = write(proxy.journal.parent / "rules" / "burst.yaml", NOW_RULES)
        token = proxy.config.admin.token_file if proxy.config.admin else None
        follower = Spawned("--url", proxy.admin_url, "--token-file", token or "", "--rules", rules,
                           "--follow", "--lag", "200ms", "--json")  # fmt: skip
        follower.wait_for(follower.err, "following")
        for _ in range(3):
            with pytest.raises(ClientError):
                proxy.client("stranger").get_secret_value(SecretId="app/db/password")
        alert = json.loads(follower.wait_for(follower.out, '"rule"'))
        code = follower.stop()

        assert code == 0, follower.err
        assert (alert["rule"], alert["key"]) == ("burst", "principal stranger")
        assert [e["chain"] for e in alert["events"]] == ["test"] * 3

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["{journal}", "--follow", "--until", "1h"], "--until and --follow: a follower has "
             "no end; give one of them"),
            (["{journal}", "--url", "http://127.0.0.1:9"], "give SOURCE (a journal folder, "
             "s3://BUCKET[/PREFIX] or cloudwatch://GROUP) or --url of each running keyledger, "
             "not both"),
            ([], "give SOURCE (a journal folder, s3://BUCKET[/PREFIX] or cloudwatch://GROUP) "
             "or --url of each running keyledger, not both"),
            (["{journal}", "--follow", "--interval", "soon"], "--interval: 'soon' is not a "
             "duration (e.g. 60s, 15m, 24h, 7d)"),
            (["{journal}", "--follow", "--interval", "0s"], "--interval: expected at least "
             "0.05s, not '0s'"),
            (["--url", "http://127.0.0.1:9", "--token-file", "{journal}/none"],
             "--token-file {journal}/none: No such file or directory"),
        ],
    )  # fmt: skip
    def test_mistakes_are_one_line_exit_2(
        self, capsys: Capsys, journal: Path, argv: list[str], message: str
    ) -> None:
        code, out, err = run(capsys, "run", *(a.format(journal=journal) for a in argv),
                             "--rules", DEMO)  # fmt: skip

        assert (code, out) == (2, [])
        assert err == f"keyledger: {message.format(journal=journal)}\n"

    def test_a_config_without_rules_is_a_usage_error(self, capsys: Capsys, journal: Path) -> None:
        doc = write_proxy_files(journal.parent)
        config = journal.parent / "keyledger.yaml"
        config.write_text(yaml.safe_dump(doc))

        code, _, err = run(capsys, "run", journal, "--config", config)

        assert code == 2
        assert err == f"keyledger: --config {config}: no alerts.rules in it; give --rules PATH\n"

    def test_an_admin_api_that_is_not_there_is_one_line(self, capsys: Capsys) -> None:
        code, _, err = run(capsys, "run", "--url", "http://127.0.0.1:9", "--rules", DEMO,
                           env_token="t" * 32)  # fmt: skip

        assert code == 2
        assert err.startswith("keyledger: cannot connect to http://127.0.0.1:9: ")


@pytest.mark.parametrize("verb", ["check", "test", "run"])
def test_every_verb_explains_itself(capsys: Capsys, verb: str) -> None:
    """--help says what the verb does and its exit codes."""
    with pytest.raises(SystemExit) as exited:
        main(["alerts", verb, "--help"])

    text = " ".join(capsys.readouterr().out.split())
    assert exited.value.code == 0
    assert f"usage: keyledger alerts {verb}" in text
    assert "Exit 0" in text
    assert "2 on a usage mistake" in text
