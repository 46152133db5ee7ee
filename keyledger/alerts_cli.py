"""``keyledger alerts check | test | run``: writing alert rules, and tuning them on history.

keyledger alerts check PATH...
keyledger alerts test PATH... [-q]
keyledger alerts run (SOURCE | --url URL...) (--rules PATH... | --config FILE)
                     [--follow [--interval 5s] [--lag 10s]] [--since T] [--until T] [--json]

SOURCE: a journal folder, s3://BUCKET[/PREFIX] or cloudwatch://GROUP[/STREAM].

Each verb reads rule files exactly as the proxy does (same loader, same engine), so what
passes here is what the proxy watches for, and ``run`` shows what it would have raised;
``run --follow`` is the fleet-wide detector (:mod:`keyledger.alerts.fleet`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
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


def open_source(text: str, filt: EventFilter) -> Iterable[Record]:
    """The events of SOURCE that ``filt`` keeps, oldest first, every chain merged.

    SOURCE is a journal folder (or one journal file), ``s3://BUCKET[/PREFIX]`` or
    ``cloudwatch://GROUP[/STREAM]`` (every chain: the copies the sinks ship). An event
    found twice (by chain and seq) is read once.
    """
    from keyledger.alerts.fleet import event_source
    from keyledger.alerts.follow import Seen

    source = _checked(lambda: event_source(text, warn=_warn))
    records: Iterable[Record] = _checked(lambda: source.history(filt))
    # A copy is shipped at least once (and a folder may gather copies): each event once.
    return filter(Seen(), records)


def _checked(read: Callable[[], Any]) -> Any:
    """``read()``, a source that cannot be read said in one line."""
    from keyledger.alerts.sources import SourceError

    try:
        return read()
    except SourceError as exc:
        raise AlertsCliError(str(exc)) from None


def _warn(message: str) -> None:
    print(f"keyledger: {message}", file=sys.stderr, flush=True)


def _readable(records: Iterable[Record]) -> Iterator[Record]:
    """``records``, an object or stream that cannot be read on the way said in one line."""
    from keyledger.alerts.sources import SourceError

    try:
        yield from records
    except SourceError as exc:
        raise AlertsCliError(str(exc)) from None


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


def _duration(option: str, text: str, *, least: float) -> float:
    from keyledger.proxy.config import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise AlertsCliError(f"{option}: {exc}") from None
    if seconds < least:
        raise AlertsCliError(f"{option}: expected at least {least:g}s, not {text!r}")
    return seconds


def _rules_and_config(args: argparse.Namespace) -> tuple[AlertRules | list[str], Any]:
    """The rules (--rules, else the config's alerts.rules) and the loaded --config."""
    config = None
    if args.config is not None:
        from keyledger.proxy.config import load_config

        config = load_config(Path(args.config))
    if args.rules:
        return _load_rules(_paths(args.rules, "--rules")), config
    if config is None:
        raise AlertsCliError("give the rules: --rules PATH, or --config FILE with alerts.rules")
    if not config.alerts.rules:
        raise AlertsCliError(f"--config {args.config}: no alerts.rules in it; give --rules PATH")
    return _load_rules(config.alerts.rules), config


def cmd_run(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    since = _moment("--since", args.since, now)
    until = _moment("--until", args.until, now)
    if since is not None and until is not None and since > until:
        raise AlertsCliError(
            f"--since ({format_time(since)}) is after --until ({format_time(until)}): "
            "no event can match"
        )
    if (args.source is None) == (not args.url):
        raise AlertsCliError(
            "give SOURCE (a journal folder, s3://BUCKET[/PREFIX] or cloudwatch://GROUP) or "
            "--url of each running keyledger, not both"
        )
    if args.follow and until is not None:
        raise AlertsCliError("--until and --follow: a follower has no end; give one of them")
    interval = _duration("--interval", args.interval, least=0.05)
    lag = _duration("--lag", args.lag, least=0.0)
    loaded, config = _rules_and_config(args)
    if isinstance(loaded, list):
        return _print_problems(loaded)
    if args.follow or args.url:
        return _run_fleet(args, loaded, config, since=since, interval=interval, lag=lag)
    records = _readable(open_source(args.source, EventFilter(since=since, until=until)))
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


def _run_fleet(
    args: argparse.Namespace,
    rules: AlertRules,
    config: Any,
    *,
    since: datetime | None,
    interval: float,
    lag: float,
) -> int:
    """Admin streams (--url), or --follow: the history, then what arrives, to destinations."""
    import asyncio

    from keyledger.alerts.engine import history_needed
    from keyledger.alerts.fleet import destinations_for, event_source, follow_fleet, live_sources
    from keyledger.alerts.sources import SourceError
    from keyledger.alerts.streams import AdminStream, admin_token

    if since is None and args.follow:
        since = datetime.now(UTC) - history_needed(rules)  # windows and baselines rebuilt
    polled, streams = [], []
    if args.source is not None:
        polled.append(_checked(lambda: event_source(args.source, warn=_warn)))
    if args.url:
        token = _checked(lambda: admin_token(args.token_file))
        streams = [AdminStream(u, token=token, cacert=args.cacert, warn=_warn) for u in args.url]
    destinations = _checked(lambda: destinations_for(config)) if config is not None else []
    names = [d.name for d in destinations]
    # A stdout destination prints each alert's document: the human line would garble it.
    printing = config is None or all(d.type != "stdout" for d in config.alerts.destinations)
    where = args.source or ", ".join(args.url)
    tally = _Tally(rules)
    out: TextIO = sys.stdout

    def show(alert: Alert) -> None:
        tally.alerts[alert.rule] += 1
        if printing:
            out.write((render_json(alert.as_json()) if args.json else render_alert(alert)) + "\n")
            out.flush()

    def following(run: Any) -> None:
        _fleet_summary(tally, run, where, run.history_s)
        sent = f"alerts go to {', '.join(names)}" if names else "alerts are printed here"
        polled = f"polled every {interval:g}s, " if args.source else ""
        print(
            f"following {where}: {polled}events held back {lag:g}s to put chains in time "
            f"order; {sent}",
            file=sys.stderr,
            flush=True,
        )

    sources = live_sources(polled, streams, interval_s=interval, warn=_warn)
    filt = EventFilter(since=since)
    try:
        run = asyncio.run(
            follow_fleet(
                sources,
                rules,
                filt=filt,
                follow=args.follow,
                lag=timedelta(seconds=lag),
                show=show,
                destinations=destinations,
                on_suppressed=tally.hold,
                on_following=following,
            )
        )
    except SourceError as exc:
        raise AlertsCliError(str(exc)) from None
    out.flush()
    if not args.follow:
        _fleet_summary(tally, run, where, run.history_s)
        return 0
    sent = f", offered to {', '.join(names)}" if names and run.sent else ""
    print(
        f"stopped after {run.followed_s:.0f}s of following: {run.sent:,} alert(s) raised live"
        f"{sent}; {run.late:,} event(s) came later than --lag, {run.repeats:,} repeat(s) "
        "dropped",
        file=sys.stderr,
    )
    return 0


def _fleet_summary(tally: _Tally, run: Any, where: str, seconds: float) -> None:
    tally.events, tally.first, tally.last = run.events, run.first, run.last
    for line in tally.summary(where, seconds):
        print(line, file=sys.stderr, flush=True)
    tally.alerts.clear()  # live alerts are counted apart
    tally.held.clear()


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
        help="replay history through rules, or follow a whole fleet's events live",
        description="Read the events of SOURCE (a journal folder, or the S3 or CloudWatch copy "
        "the sinks ship: every chain of every replica and worker) or of running keyledgers' "
        "admin streams (--url), oldest first and every chain merged by time, through one "
        "engine holding the rules, and print each alert as it fires: time, severity, rule, "
        "key and summary (or, with --json, one alert object per line). The summary (events "
        "read, alerts by rule, repeats held back, events/s) goes to stderr. Without --follow "
        "it replays history: tune rules before enabling them. With --follow it is the "
        "fleet-wide detector: it rebuilds windows and baselines from --since (the rules' "
        "longest window, suppression or twice a learning period), then keeps reading "
        "(polling SOURCE every --interval, or holding the streams open), holds events back "
        "--lag to put chains in time order, drops repeats, and sends each new alert to the "
        "destinations of --config (alerts the history raised are printed, never sent; none "
        "is written to a journal) until SIGTERM or SIGINT. Exit 0 after the replay or once "
        "stopped, whatever fired; 1 when the rules do not load; 2 on a usage mistake (or a "
        "source that cannot be read at start).",
    )
    run.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="a journal folder or file; s3://BUCKET[/PREFIX] (the S3 sink's objects, every "
        "chain); or cloudwatch://GROUP[/STREAM] (every stream: one per chain). AWS "
        "credentials, region and endpoints come from the usual AWS settings (AWS_PROFILE, "
        "AWS_ENDPOINT_URL_S3, ...)",
    )
    run.add_argument(
        "--url",
        action="append",
        metavar="URL",
        help="a running keyledger's admin API instead of SOURCE (http://10.0.0.5:9090); repeat "
        "for each replica. One `serve --workers N` supervisor's stream holds all its workers",
    )
    run.add_argument(
        "--token-file", metavar="FILE", help="admin token for --url (else KEYLEDGER_ADMIN_TOKEN)"
    )
    run.add_argument("--cacert", metavar="PEM", help="CA bundle to trust for an https --url")
    run.add_argument(
        "--rules",
        action="append",
        metavar="PATH",
        help=f"{paths_help}; repeat for more (instead of the rules of --config)",
    )
    run.add_argument(
        "--config",
        metavar="FILE",
        help="a proxy's config: its alerts.rules (unless --rules) and alerts.destinations, so "
        "a follower sends to the same webhook, Slack or Alertmanager as the proxies",
    )
    run.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="after the history, keep following and send new alerts (the fleet-wide detector)",
    )
    run.add_argument(
        "--interval",
        default="5s",
        metavar="DURATION",
        help="with --follow: how often SOURCE is polled (5s)",
    )
    run.add_argument(
        "--lag",
        default="10s",
        metavar="DURATION",
        help="with --follow: how long events are held back so that chains arriving at "
        "different times are fed in time order (10s; S3 with its default 10s batches wants "
        "max_wait + --interval, 15-20s)",
    )
    run.add_argument(
        "--since",
        metavar="TIME",
        help="read events at or after TIME: an RFC 3339 time (2026-11-23T10:00:00Z), a date "
        "(2026-11-23) or an age (15m, 2h, 7d); UTC unless given. Windows and baselines start "
        "empty there. With --follow the default is what the rules need",
    )
    run.add_argument("--until", metavar="TIME", help="events before TIME (same forms as --since)")
    run.add_argument("--json", action="store_true", help="one alert JSON object per line")
    run.set_defaults(func=cmd_run)
