"""Good callers beside a flood of bad signatures, measured side by side in one run.

    .venv/bin/python bench/flood.py [--quick] [--json] [--log-level info|warning]
                                    [--duration 10] [--flood-concurrency 256] ...

Everything runs on this machine, on loopback: bench/upstream.py (the fast stand-in store),
keyledger (``keyledger serve --config``: durable journal with fsync, admin API on, as
``make bench`` runs it), the good callers (bench/load.py in its own process: closed-loop
signed GetSecretValue calls) and the flood (this script with ``--role flood`` in its own
process: as many requests as it can send over ``--flood-concurrency`` connections, each
signed with a wrong secret key, by default for the good identity's access key id, which
is no secret). Rows:

(a)  the good callers alone;
(b)  the good callers with the flood beside them;
(a') the good callers alone against a second keyledger whose config adds
     ``limits: {rate: {per_source: N, per_principal: M, burst_s: 2}}`` (what the limits
     cost good callers who stay under them);
(c)  the flood again, against that second keyledger.

Keyledger sees callers by the address they connect from, and every process here is on
one machine: the good callers' connections are bound to ``--good-sources`` loopback
addresses (127.0.0.1, then 127.0.1.1, 127.0.1.2, ...; a few services, each well under
the per-source limit) and the flood's to 127.0.0.2 (one source). N defaults to twice
what one good source made in (a) (so the good callers are never throttled and the flood
is held near N); M to four times all the good callers together (so it is checked but
never reached: the flood claims the good identity, which must not get it throttled).

Each row reports the good callers' req/s, its ratio to (a), p50/p99 of their calls,
keyledger's CPU (cores busy, over the row) and the flood's rate (its answers per second
during the good callers' measured window, and how they were answered). Afterwards each
keyledger is stopped (an aggregate is written when its window closes or at shutdown)
and its journal read: the good callers' access events (by count, from their addresses,
status success) must equal the calls they got a 200 for; the flood's events are counted by
type and outcome code, individual ones (the first ``limits.auth_failures_recorded`` of a
source and reason in each window: ``auth_failure/signature_mismatch``, and in (c)
``access/throttled``) apart from aggregates (``detail.aggregate``, standing for
``detail.count`` calls each), and together they must count every answer the flood got;
and ``keyledger audit verify`` must find the journal intact. Exit status 1 if a check
fails.

If nothing was throttled in (c), the report says so ("NO EFFECT") and why: the flood
stayed under ``per_source`` (keyledger holds a flood's refusals for ``limits.flood_delay_s``,
so 256 connections make about 256 calls a second), or the limits were not enforced.

The generators share the machine's cores with keyledger and the stand-in: a flood from
the same machine takes CPU from keyledger that a flood from elsewhere would not, so part
of (b)'s drop is the machine's, not keyledger's. keyledger's cores busy, and the CPU
the flood process used, are shown beside each row to tell the two apart.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from proxy_overhead import (
    BENCH,
    HOST,
    LOAD_STARTUP_S,
    PYTHON,
    SECRET_ID,
    BenchError,
    Children,
    add_common_options,
    clean_env,
    filesystem_of,
    free_ports,
    load_generator,
    machine_busy_s,
    ms,
    port_open,
    provision,
    run_and_print,
    verify_journal,
    write_config,
    write_policy,
)

__all__ = ["main"]

FLOOD_ADDR = "127.0.0.2"
FLOOD_LEAD_S = 2.0  # the flood runs this long before the good callers start


@dataclass(frozen=True, slots=True)
class Settings:
    duration_s: float  # measured, per row
    warmup_s: float  # per row, before the measured window
    concurrency: int  # good callers, in all
    good_sources: int
    flood_concurrency: int
    flood_key: str  # known | unknown
    per_source: float | None  # None: twice one good source's rate in (a)
    per_principal: float | None  # None: four times the good callers' rate in (a)
    burst_s: float
    log_level: str
    quick: bool


def good_addrs(count: int) -> list[str]:
    """127.0.0.1, then 127.0.1.1, 127.0.1.2, ...: never the flood's 127.0.0.2."""
    return [HOST] + [f"127.0.1.{i}" for i in range(1, count)]


# -- the flood (its own process) -----------------------------------------------------------


async def flood(
    *,
    url: str,
    access_key_id: str,
    concurrency: int,
    duration_s: float,
    local_addr: str,
) -> dict[str, Any]:
    """Requests signed with a wrong secret, as fast as ``concurrency`` connections bound to
    ``local_addr`` go, for ``duration_s``; answers counted by status and by wall second."""
    import aiohttp
    from load import Signer
    from yarl import URL

    body = orjson.dumps({"SecretId": SECRET_ID})
    signer = Signer(
        host=URL(url).raw_authority,
        access_key_id=access_key_id,
        secret_key=secrets.token_urlsafe(30),  # not the identity's: every signature is wrong
        body=body,
    )
    statuses: Counter[str] = Counter()
    per_second: Counter[int] = Counter()
    sent = 0
    cpu_start = time.process_time()
    stop_at = time.perf_counter() + duration_s

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while time.perf_counter() < stop_at:
            sent += 1
            status = "exception"
            try:
                async with session.post(url, data=body, headers=signer.headers()) as resp:
                    await resp.read()
                    code = resp.headers.get("x-amzn-ErrorType")
                    status = f"{resp.status} {code}" if code else str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            statuses[status] += 1
            if status[:3].isdigit():
                per_second[int(time.time())] += 1

    connector = aiohttp.TCPConnector(limit=concurrency, local_addr=(local_addr, 0))
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=10),
        skip_auto_headers=("User-Agent",),
    ) as session:
        async with asyncio.timeout(duration_s + 30):
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {
        "sent": sent,
        "statuses": dict(statuses),
        "per_second": {str(k): v for k, v in sorted(per_second.items())},
        "cpu_s": time.process_time() - cpu_start,
        "duration_s": duration_s,
    }


def flood_main(args: argparse.Namespace) -> int:
    import uvloop

    key_id = os.environ.get("BENCH_ACCESS_KEY_ID")
    if not key_id or not args.url:
        print("--role flood needs --url and BENCH_ACCESS_KEY_ID", file=sys.stderr)
        return 2
    result = uvloop.run(
        flood(
            url=args.url,
            access_key_id=key_id,
            concurrency=args.flood_concurrency,
            duration_s=args.duration,
            local_addr=args.local_addr,
        )
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


# -- one row ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    name: str
    label: str
    keyledger: str  # which keyledger process: "plain" or "limited"
    good: dict[str, Any]  # bench/load.py's summary
    window: tuple[float, float]  # the good callers' measured window, wall clock (epoch s)
    proxy_cores: float
    others_cores: float
    flood: dict[str, Any] | None = None

    def flood_rps(self) -> float | None:
        """The flood's answers per second within the good callers' measured window."""
        if self.flood is None:
            return None
        start, end = self.window
        seconds = [
            n for t, n in self.flood["per_second"].items() if start <= int(t) and int(t) + 1 <= end
        ]
        return sum(seconds) / len(seconds) if seconds else None


def run_row(
    children: Children,
    name: str,
    label: str,
    keyledger: str,
    port: int,
    settings: Settings,
    env: Mapping[str, str],
    credentials: tuple[str, str],
    *,
    with_flood: bool,
) -> Row:
    url = f"http://{HOST}:{port}"
    process = f"keyledger-{keyledger}"
    flood_name = f"flood-{name}"
    if with_flood:
        flood_key = (
            credentials[0]
            if settings.flood_key == "known"
            else "AKIA" + secrets.token_hex(8).upper()
        )
        total = FLOOD_LEAD_S + LOAD_STARTUP_S + settings.warmup_s + settings.duration_s + 1.0
        children.start(
            flood_name,
            [
                PYTHON,
                str(BENCH / "flood.py"),
                "--role",
                "flood",
                "--url",
                url,
                "--flood-concurrency",
                str(settings.flood_concurrency),
                "--duration",
                f"{total:.1f}",
                "--local-addr",
                FLOOD_ADDR,
            ],
            {**env, "BENCH_ACCESS_KEY_ID": flood_key},
        )
        time.sleep(FLOOD_LEAD_S + LOAD_STARTUP_S)
    cpu_before = children.cpu_s(process)
    upstream_before = children.cpu_s("upstream")
    busy, wall = machine_busy_s(), time.monotonic()
    own = time.process_time()
    started = time.time()
    good = load_generator(
        url,
        env,
        credentials,
        concurrency=settings.concurrency,
        warmup_s=settings.warmup_s,
        duration_s=settings.duration_s,
        local_addrs=good_addrs(settings.good_sources),
    )
    ended = time.time()
    wall_s = time.monotonic() - wall
    proxy_s = children.cpu_s(process) - cpu_before
    upstream_s = children.cpu_s("upstream") - upstream_before
    flood_result = None
    flood_cpu = 0.0
    if with_flood:
        proc = children.procs[flood_name]
        try:
            proc.wait(settings.duration_s + 60)
        except subprocess.TimeoutExpired:
            raise BenchError("the flood did not finish") from None
        if proc.returncode != 0:
            raise BenchError(f"the flood failed:\n{children.tail(flood_name)}")
        flood_result = orjson.loads(children.out(flood_name).read_bytes().splitlines()[-1])
        # Its share of the row's wall time (it ran a little longer than the good callers).
        flood_cpu = flood_result["cpu_s"] * min(1.0, wall_s / total)
    ours = proxy_s + upstream_s + good["cpu_process_s"] + flood_cpu + (time.process_time() - own)
    others = max(0.0, machine_busy_s() - busy - ours)
    # The good callers' measured window: after their start-up and warm-up, before the end.
    measured_from = started + LOAD_STARTUP_S + settings.warmup_s
    return Row(
        name=name,
        label=label,
        keyledger=keyledger,
        good=good,
        window=(measured_from, min(ended, measured_from + settings.duration_s)),
        proxy_cores=proxy_s / (settings.warmup_s + settings.duration_s),
        others_cores=others / wall_s if wall_s else 0.0,
        flood=flood_result,
    )


# -- the journal -----------------------------------------------------------------------------


@dataclass(slots=True)
class Recorded:
    """Events of one type and code: their own, and aggregates standing for a flood."""

    individual: int = 0
    aggregates: int = 0
    aggregated: int = 0  # the calls the aggregates count (their detail.count)

    def add(self, event: Mapping[str, Any]) -> None:
        detail = event.get("detail") or {}
        if detail.get("aggregate"):
            self.aggregates += 1
            self.aggregated += int(detail.get("count", 0))
        else:
            self.individual += 1

    @property
    def calls(self) -> int:
        return self.individual + self.aggregated


@dataclass(slots=True)
class JournalCount:
    good_access_success: int = 0
    good_other: dict[str, Recorded] = field(default_factory=dict)  # by "type/code"
    flood: dict[str, Recorded] = field(default_factory=dict)  # by "type/code"


def count_journal(journal: Path, good: Sequence[str]) -> JournalCount:
    """The good callers' successful access events, and every other event from the good
    callers' and the flood's addresses by type and outcome code."""
    from keyledger.proxy.audit.segments import discover

    counted = JournalCount()
    sources = set(good)
    for segment in discover(journal).all_segments():
        with segment.path.open("rb") as handle:
            for line in handle:
                event = orjson.loads(line)
                source = (event.get("request") or {}).get("source_ip")
                kind = event.get("type")
                outcome = event.get("outcome") or {}
                key = f"{kind}/{outcome.get('code')}"
                if source in sources:
                    if kind == "access" and outcome.get("status") == "success":
                        counted.good_access_success += 1
                    else:
                        counted.good_other.setdefault(key, Recorded()).add(event)
                elif source == FLOOD_ADDR:
                    counted.flood.setdefault(key, Recorded()).add(event)
    return counted


# -- the run ---------------------------------------------------------------------------------


def run(settings: Settings) -> dict[str, Any]:

    begun = time.monotonic()
    load_average = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="keyledger-flood-") as tmp:
        workdir = Path(tmp)
        write_policy(workdir, "aws:bench/*")
        up_port, plain_port, limited_port = free_ports(3)
        upstream = f"http://{HOST}:{up_port}"
        plain = write_config(
            workdir, "plain", port=plain_port, upstream=upstream, log_level=settings.log_level
        )
        base_env = clean_env()
        kl_env, credentials = provision(workdir, plain.config)
        children = Children(workdir)
        rows: list[Row] = []
        journals: dict[str, dict[str, Any]] = {}
        try:
            children.start(
                "upstream", [PYTHON, str(BENCH / "upstream.py"), "--port", str(up_port)], base_env
            )
            children.wait_ready("upstream", children.printed_ready("upstream"), timeout_s=60)
            serve = [PYTHON, "-m", "keyledger", "serve", "--config"]
            children.start("keyledger-plain", [*serve, str(plain.config)], kl_env)
            children.wait_ready("keyledger-plain", lambda: port_open(plain_port), timeout_s=60)

            def row(name: str, label: str, which: str, port: int, with_flood: bool) -> Row:
                print(f"flood: row {name} ...", file=sys.stderr, flush=True)
                done = run_row(
                    children,
                    name,
                    label,
                    which,
                    port,
                    settings,
                    base_env,
                    credentials,
                    with_flood=with_flood,
                )
                rows.append(done)
                return done

            alone = row("a", "good callers alone", "plain", plain_port, False)
            row("b", "good + flood", "plain", plain_port, True)

            rps_a = alone.good["rps"]
            per_source = settings.per_source or max(
                10.0, math.ceil(2 * rps_a / settings.good_sources)
            )
            per_principal = settings.per_principal or max(100.0, math.ceil(4 * rps_a))
            limits = (
                "limits:\n"
                f"  rate: {{per_source: {per_source:g}, per_principal: {per_principal:g}, "
                f"burst_s: {settings.burst_s:g}}}\n"
            )
            limited = write_config(
                workdir,
                "limited",
                port=limited_port,
                upstream=upstream,
                log_level=settings.log_level,
                extra=limits,
            )
            children.start("keyledger-limited", [*serve, str(limited.config)], kl_env)
            children.wait_ready("keyledger-limited", lambda: port_open(limited_port), timeout_s=60)
            row("a2", "good alone, rate limits set", "limited", limited_port, False)
            row("c", "good + flood, rate limits set", "limited", limited_port, True)

            addrs = good_addrs(settings.good_sources)
            for which, kl in (("plain", plain), ("limited", limited)):
                process = f"keyledger-{which}"
                code = children.stop(process, signal.SIGINT)
                verified = verify_journal(kl.journal, base_env)
                counted = count_journal(kl.journal, addrs)
                served = sum(r.good["ok_total"] for r in rows if r.keyledger == which)
                answered = sum(
                    n
                    for r in rows
                    if r.keyledger == which and r.flood is not None
                    for status, n in r.flood["statuses"].items()
                    if status[:3].isdigit()
                )
                recorded = sum(r.calls for r in counted.flood.values())
                journals[which] = {
                    "exit_code": code,
                    "verify_intact": verified.intact,
                    "verify_events": verified.events,
                    "verify_output": None if verified.intact else verified.output,
                    "good_calls_ok": served,
                    "good_access_events": counted.good_access_success,
                    "good_other_events": {k: asdict(v) for k, v in counted.good_other.items()},
                    "every_good_call_journaled": counted.good_access_success == served,
                    "flood_answered": answered,
                    "flood_events": {k: asdict(v) for k, v in counted.flood.items()},
                    "flood_calls_recorded": recorded,
                    "every_flood_answer_journaled": recorded >= answered,
                }
        finally:
            children.close_all()

        return {
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_start": load_average,
                "python": platform.python_version(),
                "journal_filesystem": filesystem_of(workdir),
            },
            "settings": {
                **asdict(settings),
                "per_source": per_source,
                "per_principal": per_principal,
                "good_addrs": good_addrs(settings.good_sources),
                "flood_addr": FLOOD_ADDR,
            },
            "rows": {r.name: summarize(r, rps_a) for r in rows},
            "rate_limits_effect": rate_limits_effect(rows),
            "journals": journals,
            "elapsed_s": round(time.monotonic() - begun, 1),
        }


def summarize(row: Row, rps_a: float) -> dict[str, Any]:
    good = row.good
    flood = row.flood
    data: dict[str, Any] = {
        "label": row.label,
        "keyledger": row.keyledger,
        "good_rps": good["rps"],
        "ratio_to_a": good["rps"] / rps_a if rps_a else float("nan"),
        "good_p50_ms": good["p50_ms"],
        "good_p99_ms": good["p99_ms"],
        "good_ok": good["ok"],
        "good_ok_total": good["ok_total"],
        "good_errors": good["errors"],
        "proxy_cores_busy": row.proxy_cores,
        "other_processes_cores": row.others_cores,
    }
    if flood is not None:
        data["flood"] = {
            "rps": row.flood_rps(),
            "sent": flood["sent"],
            "statuses": flood["statuses"],
            "cpu_s": flood["cpu_s"],
            "generator_cores_busy": flood["cpu_s"] / flood["duration_s"],
        }
    return data


def throttled(statuses: Mapping[str, int]) -> int:
    """Answers that say "slow down": 429, 503, or AWS's ThrottlingException (a 400)."""
    return sum(n for s, n in statuses.items() if s[:3] in ("429", "503") or "Throttl" in s)


def rate_limits_effect(rows: Sequence[Row]) -> dict[str, Any]:
    """Did the rate limits change how the flood was answered or how fast it went?"""
    by = {r.name: r for r in rows}
    b, c = by["b"].flood or {}, by["c"].flood or {}
    throttled_b = throttled(b.get("statuses", {}))
    throttled_c = throttled(c.get("statuses", {}))
    statuses_b = set(b.get("statuses", {}))
    statuses_c = set(c.get("statuses", {}))
    return {
        "flood_throttled_answers_b": throttled_b,
        "flood_throttled_answers_c": throttled_c,
        "flood_answers_c": sum(c.get("statuses", {}).values()),
        "statuses_changed": statuses_b != statuses_c,
        "seen": throttled_c > throttled_b or statuses_b != statuses_c,
    }


# -- output ----------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    s, m = report["settings"], report["machine"]
    lines = [
        f"keyledger under a flood of bad signatures ({m['cpus']} cores, Python {m['python']}, "
        f"journal on {m['journal_filesystem']}, log level {s['log_level']}, load avg "
        f"{m['load_average_at_start']:.2f} at start)" + ("  [--quick]" if s["quick"] else ""),
        f"good callers: {s['concurrency']} concurrent signed GetSecretValue (closed loop) from "
        f"{s['good_sources']} addresses ({s['good_addrs'][0]}, 127.0.1.x); flood: "
        f"{s['flood_concurrency']} connections from {s['flood_addr']}, wrong signatures for "
        f"{'the good identity' if s['flood_key'] == 'known' else 'an unknown'} access key id; "
        f"{s['duration_s']:g} s measured per row after {s['warmup_s']:g} s warm-up",
        f"rate limits in (a') and (c): per_source {s['per_source']:g}/s, per_principal "
        f"{s['per_principal']:g}/s, burst {s['burst_s']:g} s",
        f"{'':36}{'good req/s':>10}{'x (a)':>7}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
        f"{'kl cores':>9}{'flood req/s':>12}{'flood cores':>12}   flood answers",
    ]
    names = {"a": "(a)", "b": "(b)", "a2": "(a')", "c": "(c)"}
    for name, row in report["rows"].items():
        flood = row.get("flood")
        errors = sum(row["good_errors"].values())
        flood_rps = "-" if flood is None or flood["rps"] is None else f"{flood['rps']:.0f}"
        flood_cores = "-" if flood is None else f"{flood['generator_cores_busy']:.2f}"
        answers = (
            ", ".join(f"{k}: {v:,}" for k, v in sorted(flood["statuses"].items())) if flood else ""
        )
        lines.append(
            f"  {names[name] + ' ' + row['label']:34}{row['good_rps']:>10.0f}"
            f"{row['ratio_to_a']:>7.2f}{ms(row['good_p50_ms']):>8}{ms(row['good_p99_ms']):>8}"
            f"{errors:>7}{row['proxy_cores_busy']:>9.2f}{flood_rps:>12}{flood_cores:>12}"
            f"   {answers}"
        )
    noise = max(r["other_processes_cores"] for r in report["rows"].values())
    if noise > 0.2:
        lines.append(
            f"  WARNING: processes outside this bench used up to {noise:.2f} of {m['cpus']} "
            "cores during the rows; figures are disturbed"
        )
    effect = report["rate_limits_effect"]
    if not effect["seen"]:
        limit = report["settings"]["per_source"]
        flood_rate = (report["rows"]["c"].get("flood") or {}).get("rps") or 0.0
        why = (
            f"the flood's {flood_rate:.0f} req/s stayed under per_source {limit:g}/s (its "
            "refusals are held for limits.flood_delay_s)"
            if flood_rate < limit
            else "not enforced by this keyledger?"
        )
        lines.append(
            "  rate limits: NO EFFECT seen in (c): the flood was answered as in (b), nothing "
            f"throttled ({why})"
        )
    else:
        lines.append(
            f"  rate limits: {effect['flood_throttled_answers_c']:,} of the flood's "
            f"{effect['flood_answers_c']:,} answers in (c) were throttled"
        )
    lines.append("journals (read after each keyledger stopped):")
    for which, j in report["journals"].items():
        state = "intact" if j["verify_intact"] else "NOT INTACT"
        good = "ok" if j["every_good_call_journaled"] else "MISSING"
        flood = "ok" if j["every_flood_answer_journaled"] else "MISSING"
        lines.append(
            f"  {which}: {state}, {j['verify_events']:,} events; good calls answered 200: "
            f"{j['good_calls_ok']:,}, their access events: {j['good_access_events']:,} [{good}]"
        )
        if j["good_other_events"]:
            lines.append(f"    good callers' other events: {recorded(j['good_other_events'])}")
        lines.append(
            f"    flood: {j['flood_answered']:,} answered; its events: "
            f"{recorded(j['flood_events']) or 'none'} = {j['flood_calls_recorded']:,} calls "
            f"recorded [{flood}]"
        )
    lines.append(f"total {report['elapsed_s']:.0f} s")
    return "\n".join(lines)


def recorded(events: Mapping[str, Mapping[str, int]]) -> str:
    """Events by type/code: "auth_failure/signature_mismatch 10 + 1 aggregate (count 9,990)"."""
    return "; ".join(
        f"{key} {e['individual']:,}"
        + (
            f" + {e['aggregates']:,} aggregate (count {e['aggregated']:,})"
            if e["aggregates"]
            else ""
        )
        for key, e in sorted(events.items())
    )


def checks_pass(report: Mapping[str, Any]) -> bool:
    return all(
        j["verify_intact"]
        and j["every_good_call_journaled"]
        and j["exit_code"] == 0
        and j["every_flood_answer_journaled"]
        for j in report["journals"].values()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    add_common_options(parser, quick="5 s per row after 1 s warm-up")
    parser.add_argument("--duration", type=float, default=10.0, help="measured s per row (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up s per row (2)")
    parser.add_argument("--concurrency", type=int, default=32, help="good callers in flight (32)")
    parser.add_argument("--good-sources", type=int, default=8, help="good callers' addresses (8)")
    parser.add_argument(
        "--flood-concurrency", type=int, default=256, help="flood connections (256)"
    )
    parser.add_argument(
        "--flood-key",
        choices=("known", "unknown"),
        default="known",
        help="the flood claims the good identity's access key id, or one nobody has",
    )
    parser.add_argument(
        "--per-source",
        type=float,
        help="limits.rate.per_source, req/s (2 x one good address in (a))",
    )
    parser.add_argument(
        "--per-principal", type=float, help="limits.rate.per_principal, req/s (4 x (a))"
    )
    parser.add_argument("--burst-s", type=float, default=2.0, help="limits.rate.burst_s (2)")
    parser.add_argument(
        "--role", choices=("bench", "flood"), default="bench", help=argparse.SUPPRESS
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--local-addr", default=FLOOD_ADDR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "flood":
        return flood_main(args)
    if not 1 <= args.good_sources <= 254:
        parser.error("--good-sources: 1 to 254")
    settings = Settings(
        duration_s=5.0 if args.quick else args.duration,
        warmup_s=1.0 if args.quick else args.warmup,
        concurrency=args.concurrency,
        good_sources=args.good_sources,
        flood_concurrency=args.flood_concurrency,
        flood_key=args.flood_key,
        per_source=args.per_source,
        per_principal=args.per_principal,
        burst_s=args.burst_s,
        log_level=args.log_level,
        quick=args.quick,
    )
    report = run_and_print(lambda: run(settings), render, as_json=args.json)
    return 0 if checks_pass(report) else 1


if __name__ == "__main__":
    sys.exit(main())
