"""``keyledger alerts check | test | run``: writing alert rules, and tuning them on history.

keyledger alerts check PATH...
keyledger alerts test PATH... [-q]
keyledger alerts run SOURCE --rules PATH [--rules PATH...] [--since T] [--until T] [--json]

Each verb reads rule files exactly as the proxy does (same loader, same engine), so what
passes here is what the proxy watches for, and ``run`` shows what it would have raised.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from keyledger.alerts.engine import AlertEngine
from keyledger.alerts.model import Alert
from keyledger.alerts.rules import AlertRuleError, AlertRules, load_alert_files, rule_files
from keyledger.alerts.testing import load_cases, misnamed_rule_files, run_cases, split_paths
from keyledger.proxy.audit.events import format_time
from keyledger.proxy.audit.filters import EventFilter, parse_time
from keyledger.proxy.audit.render import render_json, sanitize

__all__ = ["AlertsCliError", "add_alerts_parser", "open_source", "render_alert"]

Record = dict[str, Any]


class AlertsCliError(ValueError):
    """A usage problem: printed as ``keyledger: <message>``, exit status 2."""


def _paths(texts: Sequence[str], option: str = "PATH") -> list[Path]:
    paths = [Path(text) for text in texts]
    for path in paths:
        if not path.exists():
            raise AlertsCliError(f"{option} {path}: no such file or folder")
    return paths


def _print_problems(problems: Sequence[str]) -> int:
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)", file=sys.stderr)
    return 1


def _load_rules(paths: Sequence[Path], named: Sequence[Path] = ()) -> AlertRules | list[str]:
    """The rules in ``paths`` (files, folders), or every problem found."""
    files = rule_files(paths)
    problems = misnamed_rule_files(paths)
    if not files:
        where = ", ".join(str(p) for p in named or paths)
        return [f"no alert rule files found in {where} (folders' *.yaml, but not *test*.yaml)"]
    try:
        rules = load_alert_files(files)
    except AlertRuleError as exc:
        return [*exc.problems, *problems]
    return problems or rules


# -- check -----------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _load_rules(_paths(args.paths))
    if isinstance(loaded, list):
        return _print_problems(loaded)
    kinds = Counter(rule.detector.kind for rule in loaded)
    detectors = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
    print(
        f"ok: {len(loaded.files)} file(s), {len(loaded.rules)} rule(s)"
        f"{f' ({detectors})' if detectors else ''}; rules hash {loaded.hash}"
    )
    return 0


# -- test ------------------------------------------------------------------------------------


def cmd_test(args: argparse.Namespace) -> int:
    paths = _paths(args.paths)
    rule_paths, case_paths = split_paths(paths)
    loaded = _load_rules([p for p in paths if p.is_dir() or p in rule_paths], paths)
    if isinstance(loaded, list):
        return _print_problems(loaded)
    if not case_paths:
        print("no rule case files found (YAML files with 'test' in their name, beside the rules)")
        return 1
    try:
        cases = load_cases(case_paths)
    except AlertRuleError as exc:
        return _print_problems(exc.problems)
    results = run_cases(loaded, cases)
    for result in results:
        case = result.case
        if result.passed:
            if not args.quiet:
                print(f"PASS  {case.where}  {case.name}")
            continue
        print(f"FAIL  {case.where}  {case.name}")
        for line in (result.failure or "").splitlines():
            print(f"      {line}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed ({len(case_paths)} file(s))")
    return 1 if failed else 0


# -- run -------------------------------------------------------------------------------------

# A SOURCE written as a URL: its scheme's reader (s3://, cloudwatch:// to come).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
Opener = Callable[[str, EventFilter], Iterable[Record]]
_SOURCES: Mapping[str, Opener] = {}


def open_source(text: str, filt: EventFilter) -> Iterable[Record]:
    """The events of SOURCE that ``filt`` keeps, oldest first, every chain merged.

    SOURCE is a journal folder (or one journal file); a URL's scheme picks its reader
    from ``_SOURCES`` (none yet).
    """
    scheme = _SCHEME.match(text)
    if scheme is not None:
        opener = _SOURCES.get(scheme.group(1).lower())
        if opener is None:
            raise AlertsCliError(
                f"SOURCE {text}: {scheme.group(1)}:// is not a source alerts run reads (yet); "
                "give a journal folder"
            )
        return opener(text, filt)
    return _journal(Path(text), filt)


def _journal(source: Path, filt: EventFilter) -> Iterator[Record]:
    from keyledger.proxy.audit.reader import iter_records
    from keyledger.proxy.audit.segments import discover

    if not source.exists():
        raise AlertsCliError(f"SOURCE {source}: no such file or folder")
    if not discover(source).segments:
        raise AlertsCliError(f"SOURCE {source}: no journal files (*.jsonl) found")
    return iter_records(source, filt)


def render_alert(alert: Alert) -> str:
    """One alert on one line, for a human: time, severity, rule, key, summary."""
    moment = alert.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    held = f"  ({alert.suppressed} repeat(s) held back before)" if alert.suppressed else ""
    return (
        f"{moment}  {alert.severity.value.upper():8}  {alert.rule}  {sanitize(alert.key)}  "
        f"{sanitize(alert.summary)}{held}"
    )


class _Tally:
    """What a replay read and raised, for its summary."""

    def __init__(self, rules: AlertRules) -> None:
        self.order = [rule.id for rule in rules]  # the summary lists rules as the files do
        self.events = 0
        self.first: str | None = None
        self.last: str | None = None
        self.alerts: Counter[str] = Counter()
        self.held: Counter[str] = Counter()

    def hold(self, rule: str) -> None:
        self.held[rule] += 1

    def summary(self, source: str, seconds: float) -> list[str]:
        rate = f" ({self.events / seconds:,.0f} events/s)" if seconds > 0 else ""
        span = f", {self.first} .. {self.last}" if self.first and self.last else ""
        lines = [f"replayed {self.events:,} event(s) from {source}{span} in {seconds:.1f}s{rate}"]
        if not self.alerts and not self.held:
            lines.append("no alert would have fired")
            return lines
        lines.append(
            f"{self.alerts.total():,} alert(s), {self.held.total():,} repeat(s) held back by "
            "suppress:"
        )
        rules = [rule for rule in self.order if self.alerts[rule] or self.held[rule]]
        width = max(len(rule) for rule in rules)
        for rule in rules:
            held = f", {self.held[rule]:,} held back" if self.held[rule] else ""
            lines.append(f"  {rule:{width}}  {self.alerts[rule]:,} alert(s){held}")
        return lines


def replay(
    records: Iterable[Mapping[str, Any]],
    rules: AlertRules,
    show: Callable[[Alert], None],
    tally: _Tally,
) -> None:
    """Feed every record to one engine, in order; ``show`` each alert as it fires."""
    feed = AlertEngine(rules, on_suppressed=tally.hold).feed
    count = 0
    record: Mapping[str, Any] | None = None
    try:
        for record in records:
            count += 1
            if tally.first is None:
                tally.first = record.get("time")
            fired = feed(record)
            if fired:
                for alert in fired:
                    tally.alerts[alert.rule] += 1
                    show(alert)
    finally:
        tally.events += count
        if record is not None:
            tally.last = record.get("time")


def _moment(option: str, text: str | None, now: datetime) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text, now)
    except ValueError as exc:
        raise AlertsCliError(f"{option}: {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    since = _moment("--since", args.since, now)
    until = _moment("--until", args.until, now)
    if since is not None and until is not None and since > until:
        raise AlertsCliError(
            f"--since ({format_time(since)}) is after --until ({format_time(until)}): "
            "no event can match"
        )
    records = open_source(args.source, EventFilter(since=since, until=until))
    loaded = _load_rules(_paths(args.rules, "--rules"))
    if isinstance(loaded, list):
        return _print_problems(loaded)
    out: TextIO = sys.stdout

    def show(alert: Alert) -> None:
        out.write((render_json(alert.as_json()) if args.json else render_alert(alert)) + "\n")

    tally = _Tally(loaded)
    started = time.perf_counter()
    try:
        replay(records, loaded, show, tally)
    finally:
        out.flush()
        for line in tally.summary(args.source, time.perf_counter() - started):
            print(line, file=sys.stderr)
    return 0


# -- parser ----------------------------------------------------------------------------------


def add_alerts_parser(sub: Any) -> None:
    alerts = sub.add_parser(
        "alerts",
        help="check and test alert rules, and replay a journal through them",
        description="Work with alert rule files the way the proxy reads them.",
    )
    verbs = alerts.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    paths_help = (
        "alert rule files or folders (a folder's *.yaml, except those with 'test' in the name)"
    )

    check = verbs.add_parser(
        "check",
        help="validate alert rule files (for CI)",
        description="Load alert rule files and report every problem as file:line:col: reason: "
        "syntax, unknown keys (with the likely one), severities, durations, filters, time "
        "windows and zones, networks, a rule with no detector or two, duplicate rule ids. "
        "Exit 0 when all load, 1 on any problem, 2 on a usage mistake (a PATH that is not "
        "there).",
    )
    check.add_argument("paths", nargs="+", metavar="PATH", help=paths_help)
    check.set_defaults(func=cmd_check)

    test = verbs.add_parser(
        "test",
        help="run the rule cases kept next to the rules: events in, expected alerts out",
        description="Load the rules from PATH (files, folders) and run every case in the YAML "
        "files there with 'test' in their name (demo_test.yaml): each case's events go "
        "through a fresh engine holding every rule, and the alerts they raise must be the "
        "ones the case expects, in order (expect: [] for none). Prints PASS/FAIL per case "
        "with its file:line:col, and for a failure what was expected and what fired. Exit 0 "
        "when all pass, 1 on any failure or problem, 2 on a usage mistake.",
    )
    test.add_argument("paths", nargs="+", metavar="PATH", help=paths_help)
    test.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    test.set_defaults(func=cmd_test)

    run = verbs.add_parser(
        "run",
        help="replay a journal through rules: what would have fired",
        description="Read the events under SOURCE, oldest first and every chain merged, "
        "through one engine holding the rules, and print each alert that would have fired, "
        "as it fires: time, severity, rule, key and summary (or, with --json, one alert "
        "object per line). The summary (events read, alerts by rule, repeats held back, "
        "events/s) goes to stderr. Tune rules against real history before enabling them. "
        "Exit 0 after the replay, whatever fired; 1 when the rules do not load; 2 on a "
        "usage mistake.",
    )
    run.add_argument("source", metavar="SOURCE", help="a journal folder")
    run.add_argument(
        "--rules",
        action="append",
        required=True,
        metavar="PATH",
        help=f"{paths_help}; repeat for more",
    )
    run.add_argument(
        "--since",
        metavar="TIME",
        help="replay events at or after TIME: an RFC 3339 time (2026-11-23T10:00:00Z), a date "
        "(2026-11-23) or an age (15m, 2h, 7d); UTC unless given. Windows and baselines start "
        "empty there",
    )
    run.add_argument("--until", metavar="TIME", help="events before TIME (same forms as --since)")
    run.add_argument("--json", action="store_true", help="one alert JSON object per line")
    run.set_defaults(func=cmd_run)
