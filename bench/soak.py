"""keyledger held at half its measured maximum for a long while: does anything grow?

    .venv/bin/python bench/soak.py [--minutes 30] [--warmup-minutes 1] [--share 0.5]
                                   [--json] [--log-level info|warning]

One keyledger (``keyledger serve --config``: durable journal with fsync, signed checkpoints,
admin API on, as ``make bench`` runs it) in front of bench/upstream.py, the fast stand-in
store, on 127.0.0.1. First its maximum: ``--max-seconds`` (15) of closed-loop signed
GetSecretValue calls at ``--concurrency`` (bench/load.py, in its own process). Then
``--share`` (half) of that rate, held on a fixed schedule (``load.py --rate``), one
minute per load run (a new generator each minute, so its connections are new too), for
``--warmup-minutes`` (1, not reported as "start") and then ``--minutes`` (30).

After each minute: the proxy's resident memory (VmRSS in /proc/PID/status), its open file
descriptors (/proc/PID/fd), its CPU (cores busy), the journal's size on disk, p50/p99 of
that minute's calls as the generator saw them, their errors, and from keyledger's
/metrics on the admin API (bearer token) the journal fsyncs of that minute: how many,
mean, p50/p99 (from the histogram ``keyledger_journal_fsync_duration_seconds``, so p50/p99
are interpolated within its buckets), and events per fsync.

At the end: RSS at the start (after the warm-up) against RSS at the end, and the verdict
line "RSS growth X% (limit 10%)". keyledger is stopped and its journal read: the number of
access events whose outcome is success must equal the calls answered 200 (all of them:
the maximum's run and the warm-up included), and ``keyledger audit verify`` must find it
intact. Exit status 1 if RSS grew more than 10% or a journal check failed.

Other processes on the machine move latency and the maximum (a busy spell during the
maximum's 15 s makes the held rate low). Each minute shows keyledger's cores busy and
the rest of the machine's ("others": the generator, the stand-in and whatever else runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from proxy_overhead import (
    BENCH,
    HOST,
    PYTHON,
    BenchError,
    Children,
    clean_env,
    filesystem_of,
    free_ports,
    journal_closed,
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

RSS_GROWTH_LIMIT = 0.10
MINUTE_S = 60.0
FSYNC = "keyledger_journal_fsync_duration_seconds"
BATCH = "keyledger_journal_events_per_fsync"


@dataclass(frozen=True, slots=True)
class Settings:
    minutes: int
    warmup_minutes: int
    share: float
    max_seconds: float
    concurrency: int
    log_level: str
    minute_s: float = MINUTE_S


# -- what is sampled -------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) * 1024 if found else 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@dataclass(frozen=True, slots=True)
class Histogram:
    """One Prometheus histogram, as /metrics showed it: cumulative counts by upper bound."""

    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count), +Inf last
    count: float
    total: float  # _sum

    def minus(self, before: Histogram) -> Histogram:
        prior = dict(before.buckets)
        return Histogram(
            tuple((le, n - prior.get(le, 0.0)) for le, n in self.buckets),
            self.count - before.count,
            self.total - before.total,
        )

    def quantile(self, q: float) -> float | None:
        """As Prometheus' histogram_quantile: linear within the bucket the rank falls in;
        the highest finite bound if it falls in +Inf."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if le == float("inf"):
                    return lower
                inside = cumulative - below
                return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = le, cumulative
        return lower

    def mean(self) -> float | None:
        return self.total / self.count if self.count > 0 else None


def parse_histogram(text: str, name: str) -> Histogram:
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = re.search(r'le="([^"]+)"', line)
            if le:
                buckets.append((float(le.group(1)), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(f"{name}_count "):
            count = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_sum "):
            total = float(line.rsplit(" ", 1)[1])
    return Histogram(tuple(sorted(buckets)), count, total)


def metrics_text(admin_port: int, token: str) -> str:
    request = urllib.request.Request(
        f"http://{HOST}:{admin_port}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback)
        text: str = answer.read().decode()
    return text


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic
    rss: int
    fds: int
    journal_bytes: int
    proxy_cpu_s: float
    machine_busy_s: float
    fsync: Histogram
    batch: Histogram


def sample(children: Children, pid: int, journal: Path, admin_port: int, token: str) -> Sample:
    text = metrics_text(admin_port, token)
    return Sample(
        at=time.monotonic(),
        rss=rss_bytes(pid),
        fds=open_fds(pid),
        journal_bytes=folder_bytes(journal),
        proxy_cpu_s=children.cpu_s("keyledger"),
        machine_busy_s=machine_busy_s(),
        fsync=parse_histogram(text, FSYNC),
        batch=parse_histogram(text, BATCH),
    )


# -- the load --------------------------------------------------------------------------------


def minute_row(
    index: int, warmup: bool, load: Mapping[str, Any], a: Sample, b: Sample
) -> dict[str, Any]:
    fsync = b.fsync.minus(a.fsync) if a.fsync.buckets else b.fsync
    batch = b.batch.minus(a.batch)
    wall = b.at - a.at
    proxy = b.proxy_cpu_s - a.proxy_cpu_s
    busy = b.machine_busy_s - a.machine_busy_s
    mean = fsync.mean()
    p50, p99 = fsync.quantile(0.50), fsync.quantile(0.99)
    return {
        "minute": index,
        "warmup": warmup,
        "rps": load["rps"],
        "ok": load["ok"],
        "ok_total": load["ok_total"],
        "errors": load["errors"],
        "p50_ms": load["p50_ms"],
        "p99_ms": load["p99_ms"],
        "rss_bytes": b.rss,
        "fds": b.fds,
        "journal_bytes": b.journal_bytes,
        "proxy_cores_busy": proxy / wall if wall else 0.0,
        # Everything but keyledger: the generator and the stand-in, and whatever else runs.
        "other_cores_busy": max(0.0, busy - proxy) / wall if wall else 0.0,
        "fsyncs": int(fsync.count),
        "fsync_mean_ms": None if mean is None else mean * 1000,
        "fsync_p50_ms": None if p50 is None else p50 * 1000,
        "fsync_p99_ms": None if p99 is None else p99 * 1000,
        "events_per_fsync": batch.mean(),
    }


# -- the run ---------------------------------------------------------------------------------


def run(settings: Settings) -> dict[str, Any]:

    begun = time.monotonic()
    load_average = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="keyledger-soak-") as tmp:
        workdir = Path(tmp)
        write_policy(workdir, "aws:bench/*")
        up_port, kl_port, admin_port = free_ports(3)
        kl = write_config(
            workdir,
            "soak",
            port=kl_port,
            upstream=f"http://{HOST}:{up_port}",
            log_level=settings.log_level,
            admin_port=admin_port,
        )
        base_env = clean_env()
        token = secrets.token_hex(24)
        kl_env, credentials = provision(workdir, kl.config, admin_token=token)
        url = f"http://{HOST}:{kl_port}"
        children = Children(workdir)
        minutes: list[dict[str, Any]] = []
        try:
            children.start(
                "upstream", [PYTHON, str(BENCH / "upstream.py"), "--port", str(up_port)], base_env
            )
            children.wait_ready("upstream", children.printed_ready("upstream"), timeout_s=60)
            children.start(
                "keyledger",
                [PYTHON, "-m", "keyledger", "serve", "--config", str(kl.config)],
                kl_env,
            )
            children.wait_ready(
                "keyledger",
                lambda: port_open(kl_port) and port_open(admin_port),
                timeout_s=60,
            )
            pid = children.procs["keyledger"].pid
            rss_idle = rss_bytes(pid)

            say(f"measuring the maximum for {settings.max_seconds:g} s ...")
            maximum = load_generator(
                url,
                base_env,
                credentials,
                concurrency=settings.concurrency,
                warmup_s=2.0,
                duration_s=settings.max_seconds,
            )
            rate = maximum["rps"] * settings.share
            if rate <= 0:
                raise BenchError(f"no calls succeeded while measuring the maximum: {maximum}")
            served = maximum["ok_total"]
            say(f"maximum {maximum['rps']:.0f} req/s; holding {rate:.0f} req/s")

            before = sample(children, pid, kl.journal, admin_port, token)
            total = settings.warmup_minutes + settings.minutes
            for index in range(1 - settings.warmup_minutes, settings.minutes + 1):
                load = load_generator(
                    url,
                    base_env,
                    credentials,
                    concurrency=settings.concurrency,
                    warmup_s=0.0,
                    duration_s=settings.minute_s,
                    rate=rate,
                )
                served += load["ok_total"]
                after = sample(children, pid, kl.journal, admin_port, token)
                row = minute_row(index, index <= 0, load, before, after)
                minutes.append(row)
                before = after
                say(
                    f"minute {index}/{settings.minutes}{' (warm-up)' if index <= 0 else ''}: "
                    f"{row['rps']:.0f} req/s, p99 {ms(row['p99_ms'])} ms, RSS "
                    f"{mib(row['rss_bytes'])} MiB, {row['fds']} fds"
                    f" [{len(minutes)}/{total}]"
                )
                if children.procs["keyledger"].poll() is not None:
                    raise BenchError(f"keyledger exited:\n{children.tail('keyledger')}")

            code = children.stop("keyledger", signal.SIGINT)
            closed = journal_closed(children.err("keyledger"))
            verified = verify_journal(kl.journal, base_env)
            access = count_access(kl.journal)
        finally:
            children.close_all()

        measured = [m for m in minutes if not m["warmup"]]
        warm = [m for m in minutes if m["warmup"]]
        start_rss = warm[-1]["rss_bytes"] if warm else measured[0]["rss_bytes"]
        end_rss = measured[-1]["rss_bytes"]
        growth = (end_rss - start_rss) / start_rss if start_rss else float("nan")
        return {
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_start": load_average,
                "python": platform.python_version(),
                "journal_filesystem": filesystem_of(workdir),
            },
            "settings": asdict(settings),
            "maximum": {
                "rps": maximum["rps"],
                "p50_ms": maximum["p50_ms"],
                "p99_ms": maximum["p99_ms"],
                "errors": maximum["errors"],
            },
            "held_rps": rate,
            "rss_idle_bytes": rss_idle,
            "minutes": minutes,
            "rss": {
                "start_bytes": start_rss,
                "start_is": "after the warm-up" if warm else "after the first minute (no warm-up)",
                "end_bytes": end_rss,
                "peak_bytes": max(m["rss_bytes"] for m in measured),
                "growth": growth,
                "limit": RSS_GROWTH_LIMIT,
                "ok": growth <= RSS_GROWTH_LIMIT,
            },
            "journal": {
                "exit_code": code,
                "journal_closed": closed,
                "verify_intact": verified.intact,
                "verify_events": verified.events,
                "verify_output": None if verified.intact else verified.output,
                "calls_ok": served,
                "access_success": access["success"],
                "access_other": access["other"],
                "matches": access["success"] == served,
            },
            "elapsed_s": round(time.monotonic() - begun, 1),
        }


def count_access(journal: Path) -> dict[str, int]:
    from keyledger.proxy.audit.segments import discover

    counts = {"success": 0, "other": 0}
    for segment in discover(journal).all_segments():
        with segment.path.open("rb") as handle:
            for line in handle:
                event = orjson.loads(line)
                if event.get("type") != "access":
                    continue
                status = (event.get("outcome") or {}).get("status")
                counts["success" if status == "success" else "other"] += 1
    return counts


def say(text: str) -> None:
    print(f"soak: {text}", file=sys.stderr, flush=True)


# -- output ----------------------------------------------------------------------------------


def mib(value: int) -> str:
    return f"{value / (1 << 20):.1f}"


def opt(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def render(report: dict[str, Any]) -> str:
    s, m, mx = report["settings"], report["machine"], report["maximum"]
    lines = [
        f"keyledger soak ({m['cpus']} cores, Python {m['python']}, journal on "
        f"{m['journal_filesystem']}, log level {s['log_level']}, load avg "
        f"{m['load_average_at_start']:.2f} at start)",
        f"maximum: {mx['rps']:.0f} req/s over {s['max_seconds']:g} s at concurrency "
        f"{s['concurrency']} (p50 {ms(mx['p50_ms'])} ms, p99 {ms(mx['p99_ms'])} ms); held "
        f"{report['held_rps']:.0f} req/s ({s['share']:.0%}) for {s['warmup_minutes']} warm-up + "
        f"{s['minutes']} minutes; RSS at idle {mib(report['rss_idle_bytes'])} MiB",
        f"{'min':>5}{'req/s':>7}{'errors':>7}{'p50 ms':>8}{'p99 ms':>8}{'RSS MiB':>9}{'fds':>6}"
        f"{'journal MiB':>12}{'fsyncs':>8}{'fsync mean/p50/p99 ms':>23}{'ev/fsync':>9}"
        f"{'kl cores':>9}{'others':>7}",
    ]
    for row in report["minutes"]:
        label = f"w{row['minute'] + s['warmup_minutes']}" if row["warmup"] else str(row["minute"])
        fsync = f"{opt(row['fsync_mean_ms'])}/{opt(row['fsync_p50_ms'])}/{opt(row['fsync_p99_ms'])}"
        lines.append(
            f"{label:>5}{row['rps']:>7.0f}{sum(row['errors'].values()):>7}"
            f"{ms(row['p50_ms']):>8}{ms(row['p99_ms']):>8}{mib(row['rss_bytes']):>9}"
            f"{row['fds']:>6}{mib(row['journal_bytes']):>12}{row['fsyncs']:>8}{fsync:>23}"
            f"{opt(row['events_per_fsync'], '.1f'):>9}{row['proxy_cores_busy']:>9.2f}"
            f"{row['other_cores_busy']:>7.2f}"
        )
    r, j = report["rss"], report["journal"]
    verdict = "ok" if r["ok"] else "OVER"
    lines += [
        f"RSS start ({r['start_is']}) {mib(r['start_bytes'])} MiB, end {mib(r['end_bytes'])} MiB, "
        f"peak {mib(r['peak_bytes'])} MiB",
        f"RSS growth {r['growth']:.1%} (limit {r['limit']:.0%}): {verdict}",
        f"journal: {'intact' if j['verify_intact'] else 'NOT INTACT'}, {j['verify_events']:,} "
        f"events; access events with success {j['access_success']:,} vs calls answered 200 "
        f"{j['calls_ok']:,}: {'equal' if j['matches'] else 'DIFFERENT'}"
        + (f" ({j['access_other']:,} other access events)" if j["access_other"] else "")
        + (f"; keyledger exit status {j['exit_code']}" if j["exit_code"] else ""),
        f"total {report['elapsed_s']:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--minutes", type=int, default=30, help="measured minutes (30)")
    parser.add_argument(
        "--warmup-minutes", type=int, default=1, help="minutes held before RSS 'start' (1)"
    )
    parser.add_argument("--share", type=float, default=0.5, help="of the maximum held (0.5)")
    parser.add_argument(
        "--max-seconds", type=float, default=15.0, help="seconds the maximum is measured (15)"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight at most")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--log-level",
        choices=("info", "warning"),
        default="info",
        help="keyledger's log level (warning drops the per-request lines)",
    )
    args = parser.parse_args(argv)
    if args.minutes < 1 or args.warmup_minutes < 0:
        parser.error("--minutes must be 1 or more, --warmup-minutes 0 or more")
    if not 0 < args.share <= 1:
        parser.error("--share: above 0, at most 1")
    settings = Settings(
        minutes=args.minutes,
        warmup_minutes=args.warmup_minutes,
        share=args.share,
        max_seconds=args.max_seconds,
        concurrency=args.concurrency,
        log_level=args.log_level,
    )
    report = run_and_print(lambda: run(settings), render, as_json=args.json)
    ok = report["rss"]["ok"] and report["journal"]["verify_intact"] and report["journal"]["matches"]
    return 0 if ok and report["journal"]["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
