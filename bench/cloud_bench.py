"""What the cloud benchmarks (bench/gcp_overhead.py, bench/azure_overhead.py) do alike, for
any cloud: keyledger in front of a cloud's stand-in, measured against the stand-in direct.

A cloud's script describes its cloud as a :class:`Cloud` (its stand-in, keyledger's config
for it, its SDK's clients, what its report calls things) and hands it to :func:`main`,
which runs it the same way for every cloud:

- two processes of their own on 127.0.0.1: the stand-in (the cloud's script again, with
  ``--role standin``, seeded with :data:`SECRET` = :data:`VALUE`) and keyledger
  (``keyledger serve --config``, the durable journal on, a bearer token from ``keyledger
  identity create bench --token``, a policy that lets it read the secret);
- (a) latency: sequential calls with the SDK's sync client on every target, taking turns in
  blocks (:func:`proxy_overhead.measure_latency`); an answer other than :data:`VALUE`
  counts as an error;
- (b) throughput: a closed loop per target for a few seconds, each run in a load generator
  process of its own (the script again, with ``--role load``: the cloud's load on a
  :class:`Tally`), direct and through keyledger taking turns (A B B A), with the CPU time
  keyledger, the stand-in and the generator used per call;
- ``keyledger audit verify`` on the journal afterwards: it must be intact and hold at least
  as many events as keyledger served calls, or the script exits 1.

The process, environment and journal helpers these build on are bench/proxy_overhead.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import orjson
from proxy_overhead import (  # bench/ is on sys.path: the scripts run from it
    BENCH,
    PYTHON,
    BenchError,
    Children,
    Throughput,
    add_common_options,
    clean_env,
    count_error_lines,
    disturbed,
    filesystem_of,
    group_commit,
    headline,
    isolate_own_env,
    journal_closed,
    load_round,
    measure_latency,
    ms,
    port_open,
    quantile,
    run_and_print,
    verified,
    verify_journal,
    write_keyledger_config,
    write_policy,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "MAX_CALLS",
    "SECRET",
    "VALUE",
    "Cloud",
    "Plan",
    "Read",
    "Settings",
    "Tally",
    "attempt",
    "closed_loop",
    "main",
]

SECRET = "bench-db-password"  # the one secret each stand-in is seeded with
VALUE = b"c0rrect-h0rse-battery-staple-7f3a9b"  # its value: every answer is checked against it
TOKEN_ENV = "BENCH_CLOUD_TOKEN"  # how a load generator is given keyledger's token
MAX_CALLS = 2_000_000  # per load run, whatever the duration: every loop is bounded

Read = Callable[[], bytes]  # one call that reads the secret and returns its value's bytes
AsyncRead = Callable[[], Awaitable[bytes]]
T = TypeVar("T", bound="DataclassInstance")  # a cloud's Target: where one measured path goes


@dataclass(frozen=True, slots=True)
class Settings:
    calls: int
    warmup_calls: int
    block: int  # calls per target before moving to the next one (interleaving)
    load_warmup_s: float
    load_duration_s: float  # measured, per load run
    load_rounds: int  # runs per target, in the order A B B A (A B for one round)
    concurrency: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan(Generic[T]):
    """One run's layout, as a cloud makes it in the run's working directory."""

    port: int  # keyledger's data plane
    more_ports: tuple[int, ...] = ()  # other listeners keyledger must open before it is ready
    store: str  # keyledger's config for this cloud: its backend (and tls, frontends), as YAML
    standin: list[str]  # the stand-in's arguments, after ``--role standin``
    targets: dict[str, T]  # every measured path, by name, in the report's order


class Cloud(ABC, Generic[T]):
    """One cloud's part of the benchmark; :func:`main` does the rest."""

    name: ClassVar[str]  # "gcp": names the run's temporary directory and journal chain
    title: ClassVar[str]  # "GCP", in the report's first line
    script: ClassVar[Path]  # the cloud's script, started again as stand-in and load generator
    quick_takes: ClassVar[str]  # how long --quick takes, for --help
    full: ClassVar[Settings]
    quick: ClassVar[Settings]
    resources: ClassVar[str]  # what keyledger's policy lets the bench identity read
    labels: ClassVar[Mapping[str, str]]  # target name -> its row's label
    # protocol -> (direct, through keyledger) target names, in the order load runs take; the
    # report names the protocols (where there are several) beside keyledger's busy cores
    pairs: ClassVar[Mapping[str, tuple[str, str]]]
    latency_caption: ClassVar[str]  # what the latency calls are made with
    p99_difference: ClassVar[bool] = False  # latency rows show p99's difference in ms too

    @abstractmethod
    def add_standin_options(self, parser: argparse.ArgumentParser) -> None:
        """The stand-in's options (hidden: the script passes them to itself)."""

    @abstractmethod
    def serve_standin(self, args: argparse.Namespace) -> int:
        """Run the stand-in until SIGINT/SIGTERM; print ``ready`` once it listens."""

    @abstractmethod
    def plan(self, workdir: Path, log_level: str) -> Plan[T]:
        """Choose the ports and lay out the run in ``workdir`` (keyledger's policy is there)."""

    @abstractmethod
    def target(self, fields: dict[str, Any]) -> T:
        """A target again, from its fields as a load generator is given them."""

    @abstractmethod
    def sync_reader(self, target: T, token: str) -> tuple[Read, Callable[[], None]]:
        """One sync client for ``target``: a :data:`Read`, and what closes the client."""

    @abstractmethod
    def loader(self, target: T, token: str, concurrency: int) -> Callable[[Tally], None]:
        """What puts ``concurrency`` calls at a time on ``target`` until the tally's window
        ends; anything it does before it returns is outside the measured CPU time."""

    @abstractmethod
    def load_caption(self, concurrency: int) -> str:
        """How the load generator makes its concurrent calls, for the report."""


def error_key(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}" + (f"({code})" if isinstance(code, int) else "")


def attempt(read: Read) -> str | None:
    """Make one call: None if it answered :data:`VALUE`, else what went wrong."""
    try:
        if read() != VALUE:
            return "WrongValue"
    except Exception as exc:  # every failure is tallied, none stops the run
        return error_key(exc)
    return None


# -- (b) throughput: the load generator, as a process of its own -----------------------------


@dataclass(slots=True)
class Tally:
    """What a load generator's workers saw; answers count if they end in the window."""

    window: tuple[float, float]
    ok: int = 0  # successes that ended inside the measured window
    ok_total: int = 0  # every success, warm-up included
    sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, started: float, ended: float, error: str | None) -> None:
        with self.lock:
            self.sent += 1
            if error is not None:
                self.errors[error] += 1
                return
            self.ok_total += 1
            if self.window[0] <= ended <= self.window[1]:
                self.ok += 1
                self.latencies_ms.append((ended - started) * 1e3)


async def closed_loop(read: AsyncRead, concurrency: int, tally: Tally) -> None:
    """``concurrency`` tasks, each awaiting ``read`` again as soon as it answers, gathered,
    until the window ends."""
    per_worker = MAX_CALLS // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            started = time.monotonic()
            if started >= tally.window[1]:
                return
            error = None
            try:
                if await read() != VALUE:
                    error = "WrongValue"
            except Exception as exc:  # tallied, the loop goes on
                error = error_key(exc)
            tally.record(started, time.monotonic(), error)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def generate_load(load: Callable[[Tally], None], warmup_s: float, duration_s: float) -> int:
    """Run one closed-loop load; print one JSON object with what it saw."""
    cpu_before = time.process_time()
    start = time.monotonic()
    tally = Tally((start + warmup_s, start + warmup_s + duration_s))
    load(tally)
    with tally.lock:
        ordered = sorted(tally.latencies_ms)
        result = {
            "ok": tally.ok,
            "ok_total": tally.ok_total,
            "sent": tally.sent,
            "errors": dict(tally.errors),
            "duration_s": duration_s,
            "warmup_s": warmup_s,
            "rps": tally.ok / duration_s,
            "p50_ms": quantile(ordered, 0.50),
            "p99_ms": quantile(ordered, 0.99),
            "latencies_ms": ordered,
            "cpu_s": time.process_time() - cpu_before,
            "cpu_process_s": time.process_time(),  # start-up (imports) included
        }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
    return 0


def run_load(
    script: Path, target: DataclassInstance, token: str, settings: Settings, env: Mapping[str, str]
) -> dict[str, Any]:
    """One load generator process on ``target``; its JSON summary, every latency included."""
    done = subprocess.run(
        [
            PYTHON,
            str(script),
            *("--role", "load"),
            *("--target", orjson.dumps(asdict(target)).decode()),
            *("--concurrency", str(settings.concurrency)),
            *("--warmup", str(settings.load_warmup_s)),
            *("--duration", str(settings.load_duration_s)),
        ],
        env={**env, TOKEN_ENV: token},
        capture_output=True,
        text=True,
        timeout=settings.load_warmup_s + settings.load_duration_s + 60,
        check=False,
        cwd=BENCH,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(f"load on {target} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_throughput(
    cloud: Cloud[T],
    children: Children,
    targets: Mapping[str, T],
    token: str,
    settings: Settings,
    env: Mapping[str, str],
) -> dict[str, Throughput]:
    """Per protocol, direct and through keyledger take turns: A B B A ..."""
    order: list[str] = []
    for pair in cloud.pairs.values():
        for i in range(settings.load_rounds):
            order += pair if i % 2 == 0 else pair[::-1]
    results = {name: Throughput(proxy="keyledger") for name in dict.fromkeys(order)}
    for name in order:
        load_round(
            results[name],
            children,
            {"keyledger": "keyledger", "standin": "standin"},
            "client",
            functools.partial(run_load, cloud.script, targets[name], token, settings, env),
        )
    return results


# -- keyledger setup -------------------------------------------------------------------------


def create_token(config: Path, env: Mapping[str, str]) -> str:
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "keyledger",
            "identity",
            "create",
            "bench",
            "--token",
            *("--config", str(config)),
        ],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=BENCH,
    )
    found = re.search(r"^token\s+(\S+)$", done.stdout, re.M)
    if done.returncode != 0 or found is None:
        raise BenchError(f"keyledger identity create --token failed:\n{done.stdout}{done.stderr}")
    return found.group(1)


# -- the run ---------------------------------------------------------------------------------


def run(cloud: Cloud[T], settings: Settings, *, log_level: str, quick: bool) -> dict[str, Any]:
    from cryptography.fernet import Fernet

    from keyledger.proxy.audit.checkpoints import generate_key_pair

    started = time.monotonic()
    load_average = os.getloadavg()[0]
    isolate_own_env()  # REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE and proxies gone from this process
    with tempfile.TemporaryDirectory(prefix=f"keyledger-bench-{cloud.name}-") as tmp:
        workdir = Path(tmp)
        write_policy(workdir, cloud.resources)
        plan = cloud.plan(workdir, log_level)
        config = workdir / "keyledger.yaml"
        journal = workdir / "audit"
        write_keyledger_config(
            config,
            port=plan.port,
            journal=journal.name,
            chain_id=f"bench-{cloud.name}",
            log_level=log_level,
            store=plan.store,
        )
        base_env = clean_env()  # and from every child's
        kl_env = clean_env(
            KEYLEDGER_IDENTITY_KEY=Fernet.generate_key().decode(),
            KEYLEDGER_FINGERPRINT_KEY=secrets.token_hex(32),
            KEYLEDGER_ADMIN_TOKEN=secrets.token_hex(24),
        )
        generate_key_pair(workdir / "checkpoint")
        token = create_token(config, kl_env)

        children = Children(workdir)
        try:
            children.start(
                "standin", [PYTHON, str(cloud.script), "--role", "standin", *plan.standin], base_env
            )
            children.wait_ready("standin", children.printed_ready("standin"), timeout_s=60)
            children.start(
                "keyledger",
                [PYTHON, "-m", "keyledger", "serve", "--config", str(config)],
                kl_env,
            )
            children.wait_ready(
                "keyledger",
                lambda: all(port_open(port) for port in (plan.port, *plan.more_ports)),
                timeout_s=60,
            )

            clients = {name: cloud.sync_reader(t, token) for name, t in plan.targets.items()}
            latency = measure_latency(
                {name: functools.partial(attempt, read) for name, (read, _) in clients.items()},
                calls=settings.calls,
                warmup=settings.warmup_calls,
                block=settings.block,
                budget_s=120,
            )
            for _, close in clients.values():
                close()
            load = measure_throughput(cloud, children, plan.targets, token, settings, base_env)

            code = children.stop("keyledger", signal.SIGINT)
            closed = journal_closed(children.err("keyledger"))
            errors_logged = count_error_lines(children.err("keyledger"))
            verified = verify_journal(journal, base_env)
        finally:
            children.close_all()

    through = [keyledger for _, keyledger in cloud.pairs.values()]
    served = sum(latency[n].ok_total for n in through) + sum(load[n].ok_total for n in through)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_average,
            "python": platform.python_version(),
            "journal_filesystem": filesystem_of(Path(tempfile.gettempdir())),
        },
        "settings": {**asdict(settings), "quick": quick, "log_level": log_level},
        "latency": {name: result.summary() for name, result in latency.items()},
        "throughput": {name: result.summary() for name, result in load.items()},
        "journal": {
            "exit_code": code,
            "journal_closed": closed,
            "error_log_lines": errors_logged,
            "verify_intact": verified.intact,
            "verify_events": verified.events,
            "verify_output": None if verified.intact else verified.output,
            "calls_served": served,
            "events_cover_calls": verified.events >= served,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
    }


# -- output ----------------------------------------------------------------------------------

_HOW_MANY = ("no", "one", "two", "three", "four", "five", "six")  # targets taking turns


def _ratio(through: float, direct: float) -> str:
    return f"x{through / direct:.2f}" if direct and through == through else "-"


def render(cloud: Cloud[Any], report: dict[str, Any]) -> str:
    s, m, lat, tp, j = (
        report[k] for k in ("settings", "machine", "latency", "throughput", "journal")
    )
    direct_of = {keyledger: direct for direct, keyledger in cloud.pairs.values()}
    lines = [
        headline(f"keyledger {cloud.title} benchmark", report),
        f"{cloud.latency_caption}, sequential: {s['calls']} calls after {s['warmup_calls']} "
        f"warm-up each, the {_HOW_MANY[len(lat)]} taking turns in blocks of {s['block']}",
        f"{'':34}{'p50 ms':>8}{'p99 ms':>9}   through / direct",
    ]
    for name, data in lat.items():
        row = f"  {cloud.labels[name]:32}{ms(data['p50_ms']):>8}{ms(data['p99_ms']):>9}"
        if name in direct_of:
            base = lat[direct_of[name]]
            row += (
                f"   p50 {_ratio(data['p50_ms'], base['p50_ms'])} "
                f"({data['p50_ms'] - base['p50_ms']:+.2f} ms), "
                f"p99 {_ratio(data['p99_ms'], base['p99_ms'])}"
            )
            if cloud.p99_difference:
                row += f" ({data['p99_ms'] - base['p99_ms']:+.2f} ms)"
        errors = sum(data["errors"].values())
        lines.append(row + (f"  {errors} errors" if errors else ""))
    lines += [
        f"throughput: concurrency {s['concurrency']} ({cloud.load_caption(s['concurrency'])}), "
        f"{s['load_rounds']} x {s['load_duration_s']:g} s each after {s['load_warmup_s']:g} s "
        "warm-up" + (", order A B B A" if s["load_rounds"] > 1 else ""),
        f"{'':34}{'calls/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        "   through / direct   CPU us/call: keyledger stand-in client",
    ]
    for name, data in tp.items():
        cpu = data["cpu_us_per_request"]
        through = name in direct_of
        ratio = _ratio(data["rps"], tp[direct_of[name]]["rps"]) if through else ""
        kl_cpu = f"{cpu['keyledger']:.0f}" if through else "-"
        lines.append(
            f"  {cloud.labels[name]:32}{data['rps']:>8.0f}{ms(data['p50_ms']):>9}"
            f"{ms(data['p99_ms']):>9}{sum(data['errors'].values()):>8}   {ratio:>16}"
            f"{kl_cpu:>27}{cpu['standin']:>10.0f}{cpu['client']:>7.0f}"
        )
    lines += disturbed(m["cpus"], tp.values())
    busy = [
        (protocol, tp[keyledger]["proxy_cores_busy"])
        for protocol, (_, keyledger) in cloud.pairs.items()
    ]
    lines.append(
        "  keyledger cores busy under load: "
        + ", ".join(
            f"{protocol} {cores:.2f}" if len(busy) > 1 else f"{cores:.2f}"
            for protocol, cores in busy
        )
    )
    if j["journal_closed"]:
        lines.append(f"  keyledger journal: {group_commit(j['journal_closed'])}")
    served = f"{j['calls_served']} calls served through keyledger"
    lines.append(f"journal verify: {verified(j, j['events_cover_calls'], served)}")
    if j["verify_output"]:
        lines.append(j["verify_output"])
    lines.append(f"total {report['elapsed_s']:.0f} s")
    return "\n".join(lines)


def main(cloud: Cloud[Any], argv: list[str] | None = None, *, doc: str) -> int:
    """The cloud's script's ``main``; ``doc`` is its docstring, for --help."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_common_options(parser, quick=cloud.quick_takes)
    # The processes the script starts of itself: the stand-in and a load generator.
    parser.add_argument("--role", choices=("bench", "standin", "load"), default="bench")
    cloud.add_standin_options(parser)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=3.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "standin":
        return cloud.serve_standin(args)
    if args.role == "load":
        target = cloud.target(orjson.loads(args.target))
        load = cloud.loader(target, os.environ[TOKEN_ENV], args.concurrency)
        return generate_load(load, args.warmup, args.duration)

    settings = cloud.quick if args.quick else cloud.full
    report = run_and_print(
        lambda: run(cloud, settings, log_level=args.log_level, quick=args.quick),
        functools.partial(render, cloud),
        as_json=args.json,
    )
    j = report["journal"]
    ok = j["verify_intact"] and j["events_cover_calls"] and j["exit_code"] == 0
    return 0 if ok else 1
