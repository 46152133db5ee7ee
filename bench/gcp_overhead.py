"""What keyledger costs Google Cloud callers, REST and gRPC, measured side by side in one run.

    .venv/bin/python bench/gcp_overhead.py [--quick] [--json] [--log-level info|warning]

Each server in its own process, all on 127.0.0.1: the Google stand-in
(:class:`keyledger.backends.gcp_standin.GcpStandin`, REST and gRPC on one in-memory store,
started by this script with ``--role standin``) and keyledger (``keyledger serve --config``,
a gcp backend on the stand-in's gRPC target with anonymous credentials, the gcp-rest front
end on its data plane and the gcp-grpc one on ``frontends.gcp.grpc_listen``, the durable
journal on, a bearer token from ``keyledger identity create bench --token``). Calls are made
with Google's own client, google-cloud-secret-manager, changed only in endpoint and
credentials, as in tests/e2e/test_gcp.py:

(a) Latency: ``access_secret_version`` called sequentially, p50/p99, for REST direct to the
    stand-in, REST through keyledger, gRPC direct and gRPC through keyledger. The four take
    turns in blocks so that drift (CPU frequency, a busy neighbour) hits all alike.
(b) Throughput: a closed loop at concurrency 32 for a few seconds, through keyledger and
    direct, taking turns (A B B A): gRPC with the SDK's async client (32 tasks under
    ``asyncio.gather``), REST with the SDK's sync client in 32 threads (the REST transport
    is requests, so the generator is GIL-bound: its own CPU per call is shown). Each load
    generator is a process of its own (``--role load``); the CPU time each process used
    per call says where the time goes.

Through keyledger, both protocols reach the stand-in over gRPC (the backend speaks gRPC
only), so "REST through keyledger" is REST in, gRPC out; "REST direct" is REST end to end.

The figures are ratios through / direct. Afterwards ``keyledger audit verify`` checks the
journal: it must be intact and hold at least as many events as keyledger served calls.
``--quick`` takes about 20 s, a full run about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from proxy_overhead import (  # bench/ is on sys.path: this script runs from it
    BENCH,
    HOST,
    PYTHON,
    BenchError,
    Children,
    Latency,
    Throughput,
    add_common_options,
    clean_env,
    count_error_lines,
    filesystem_of,
    free_ports,
    isolate_own_env,
    journal_closed,
    machine_busy_s,
    port_open,
    quantile,
    run_and_print,
    verify_journal,
)

__all__ = ["main"]

CALLER_PROJECT = "keyledger-bench"  # the project callers name through keyledger
REAL_PROJECT = "bench-project"  # the stand-in's, which keyledger maps it to
SECRET = "bench-db-password"
VALUE = b"c0rrect-h0rse-battery-staple-7f3a9b"
CALL_TIMEOUT_S = 10.0
TOKEN_ENV = "BENCH_GCP_TOKEN"
MAX_CALLS = 2_000_000  # per load run, whatever the duration: every loop is bounded
TARGETS = ("rest-direct", "rest-keyledger", "grpc-direct", "grpc-keyledger")
LABELS = {
    "rest-direct": "REST direct to the stand-in",
    "rest-keyledger": "REST through keyledger",
    "grpc-direct": "gRPC direct to the stand-in",
    "grpc-keyledger": "gRPC through keyledger",
}


@dataclass(frozen=True, slots=True)
class Settings:
    calls: int
    warmup_calls: int
    block: int  # calls per target before moving to the next one (interleaving)
    load_warmup_s: float
    load_duration_s: float  # measured, per load run
    load_rounds: int  # runs per target, in the order A B B A (A B for one round)
    concurrency: int


FULL = Settings(1000, 100, 100, 1.0, 5.0, 2, 32)
QUICK = Settings(400, 50, 50, 0.5, 2.0, 1, 32)


def version_name(project: str) -> str:
    return f"projects/{project}/secrets/{SECRET}/versions/latest"


# -- the stand-in, as a process of its own ---------------------------------------------------


def serve_standin(rest_port: int, grpc_port: int) -> int:
    """Run the Google stand-in until SIGINT/SIGTERM; print ``ready`` once both listen."""
    import uvloop

    from keyledger.backends.gcp_standin import GcpStandin

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with GcpStandin(host=HOST, rest_port=rest_port, grpc_port=grpc_port) as standin:
            standin.seed(REAL_PROJECT, {SECRET: VALUE})
            print(f"ready {standin.rest_url} {standin.grpc_target}", flush=True)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve())
    return 0


# -- Google's clients ------------------------------------------------------------------------

_GRPC_OPTIONS = [("grpc.enable_http_proxy", 0)]


def rest_client(endpoint: str, token: str) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient
    from google.oauth2.credentials import Credentials

    return SecretManagerServiceClient(
        transport="rest",
        credentials=Credentials(token=token),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=endpoint),
    )


def grpc_client(target: str) -> Any:
    import grpc
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient
    from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
        SecretManagerServiceGrpcTransport,
    )

    channel = grpc.insecure_channel(target, options=_GRPC_OPTIONS)
    return SecretManagerServiceClient(transport=SecretManagerServiceGrpcTransport(channel=channel))


@dataclass(frozen=True, slots=True)
class Target:
    """Where one of the four measured paths goes, and how its client authenticates."""

    protocol: str  # rest | grpc
    address: str  # REST: an http:// URL; gRPC: host:port
    project: str
    token: str

    def to_json(self) -> str:
        """All but the token, which a load generator is given in its environment."""
        return orjson.dumps({**asdict(self), "token": None}).decode()


Call = Callable[[], bytes]


def sync_caller(target: Target) -> tuple[Call, Callable[[], None]]:
    """One sync client for ``target``: a call that reads the secret and returns its bytes,
    and what closes the client's connection."""
    name = version_name(target.project)
    if target.protocol == "rest":
        client = rest_client(target.address, target.token)
        metadata: list[tuple[str, str]] = []  # the token travels as the OAuth access token
    else:
        client = grpc_client(target.address)
        metadata = [("authorization", f"Bearer {target.token}")]

    def call() -> bytes:
        answer = client.access_secret_version(
            name=name, retry=None, timeout=CALL_TIMEOUT_S, metadata=metadata
        )
        data: bytes = answer.payload.data
        return data

    return call, client.transport.close


def error_key(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}" + (f"({code})" if isinstance(code, int) else "")


# -- (a) latency -----------------------------------------------------------------------------


def measure_latency(
    callers: Mapping[str, Call], settings: Settings, *, budget_s: float
) -> dict[str, Latency]:
    """Sequential calls, interleaved across ``callers`` in blocks, within ``budget_s``."""
    results = {name: Latency() for name in callers}
    deadline = time.monotonic() + budget_s

    def one(name: str, call: Call, record: bool) -> None:
        started = time.perf_counter_ns()
        try:
            data = call()
        except Exception as exc:  # every failure is tallied, none stops the run
            key = error_key(exc)
            results[name].errors[key] = results[name].errors.get(key, 0) + 1
            return
        elapsed_ms = (time.perf_counter_ns() - started) / 1e6
        if data != VALUE:
            results[name].errors["WrongValue"] = results[name].errors.get("WrongValue", 0) + 1
            return
        results[name].ok_total += 1
        if record:
            results[name].samples_ms.append(elapsed_ms)

    for name, call in callers.items():
        for _ in range(settings.warmup_calls):
            one(name, call, record=False)
    done = 0
    while done < settings.calls and time.monotonic() < deadline:
        size = min(settings.block, settings.calls - done)
        for name, call in callers.items():
            for _ in range(size):
                one(name, call, record=True)
        done += size
    for name, latency in results.items():
        if latency.errors:
            print(f"warning: {name}: errors {latency.errors}", file=sys.stderr)
    return results


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


def load_grpc(target: Target, concurrency: int, tally: Tally) -> None:
    """``concurrency`` tasks of the SDK's async gRPC client, gathered, until the window ends."""
    import grpc
    from google.cloud.secretmanager_v1 import SecretManagerServiceAsyncClient
    from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
        SecretManagerServiceGrpcAsyncIOTransport,
    )

    name = version_name(target.project)
    metadata = [("authorization", f"Bearer {target.token}")]
    per_worker = MAX_CALLS // concurrency

    async def load() -> None:
        channel = grpc.aio.insecure_channel(target.address, options=_GRPC_OPTIONS)
        client = SecretManagerServiceAsyncClient(
            transport=SecretManagerServiceGrpcAsyncIOTransport(channel=channel)
        )

        async def worker() -> None:
            for _ in range(per_worker):
                started = time.monotonic()
                if started >= tally.window[1]:
                    return
                error = None
                try:
                    answer = await client.access_secret_version(
                        name=name, retry=None, timeout=CALL_TIMEOUT_S, metadata=metadata
                    )
                    if answer.payload.data != VALUE:
                        error = "WrongValue"
                except Exception as exc:  # tallied, the loop goes on
                    error = error_key(exc)
                tally.record(started, time.monotonic(), error)

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            await channel.close()

    import uvloop

    uvloop.run(load())


def load_rest(target: Target, concurrency: int, tally: Tally) -> None:
    """``concurrency`` threads, each with its own sync REST client, until the window ends."""
    per_worker = MAX_CALLS // concurrency
    callers = [sync_caller(target)[0] for _ in range(concurrency)]

    def worker(call: Call) -> None:
        for _ in range(per_worker):
            started = time.monotonic()
            if started >= tally.window[1]:
                return
            error = None
            try:
                if call() != VALUE:
                    error = "WrongValue"
            except Exception as exc:  # tallied, the loop goes on
                error = error_key(exc)
            tally.record(started, time.monotonic(), error)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(tally.window[1] - time.monotonic() + 2 * CALL_TIMEOUT_S)


def generate_load(target: Target, concurrency: int, warmup_s: float, duration_s: float) -> int:
    """Run one closed-loop load on ``target``; print one JSON object with what it saw."""
    if target.protocol == "rest":
        call, close = sync_caller(target)
        call()  # imports done and the path warm before the clock starts
        close()
    cpu_before = time.process_time()
    start = time.monotonic()
    tally = Tally((start + warmup_s, start + warmup_s + duration_s))
    (load_grpc if target.protocol == "grpc" else load_rest)(target, concurrency, tally)
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


def run_load(target: Target, settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    """One load generator process on ``target``; its JSON summary, every latency included."""
    done = subprocess.run(
        [
            PYTHON,
            str(Path(__file__).resolve()),
            "--role",
            "load",
            "--target",
            target.to_json(),
            "--concurrency",
            str(settings.concurrency),
            "--warmup",
            str(settings.load_warmup_s),
            "--duration",
            str(settings.load_duration_s),
        ],
        env={**env, TOKEN_ENV: target.token},
        capture_output=True,
        text=True,
        timeout=settings.load_warmup_s + settings.load_duration_s + 60,
        check=False,
        cwd=BENCH,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(
            f"load on {target.protocol} {target.address} failed:\n{done.stderr[-2000:]}"
        )
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_throughput(
    children: Children, targets: Mapping[str, Target], settings: Settings, env: Mapping[str, str]
) -> dict[str, Throughput]:
    """Per protocol, direct and through keyledger take turns: A B B A ..."""
    order: list[str] = []
    for protocol in ("grpc", "rest"):
        pair = [f"{protocol}-direct", f"{protocol}-keyledger"]
        for i in range(settings.load_rounds):
            order += pair if i % 2 == 0 else pair[::-1]
    results = {name: Throughput(proxy="keyledger") for name in dict.fromkeys(order)}
    for name in order:
        watched = ("keyledger", "standin")
        before = {p: children.cpu_s(p) for p in watched}
        busy, wall, own = machine_busy_s(), time.monotonic(), time.process_time()
        run = run_load(targets[name], settings, env)
        used = {p: children.cpu_s(p) - before[p] for p in watched}
        used["client"] = run["cpu_s"]
        # Everything else the machine did meanwhile: other sessions, tests, daemons.
        ours = sum(used.values()) + run["cpu_process_s"] - run["cpu_s"]
        others = machine_busy_s() - busy - ours - (time.process_time() - own)
        used["others"] = max(0.0, others)
        results[name].add(run, used, time.monotonic() - wall)
    return results


# -- keyledger setup -------------------------------------------------------------------------

POLICY = f"""\
version: 1
roles:
  - id: bench
    rules:
      - id: bench-read
        effect: allow
        actions: [read, describe, list]
        resources: ["gcp:{CALLER_PROJECT}/bench-*"]
bindings:
  - role: bench
    principals: [bench]
"""


def write_config(
    workdir: Path, *, port: int, grpc_port: int, standin_grpc: str, log_level: str
) -> Path:
    config = workdir / "keyledger.yaml"
    config.write_text(
        f"""\
listen: {HOST}:{port}
identities:
  path: identities.json
  key_env: KEYLEDGER_IDENTITY_KEY
policies: [policies/]
backends:
  gcp:
    type: gcp
    endpoint: "{standin_grpc}"
    projects: {{{CALLER_PROJECT}: {REAL_PROJECT}}}
    credentials: anonymous
frontends:
  gcp: {{grpc_listen: "{HOST}:{grpc_port}"}}
audit:
  journal: audit
  chain_id: bench-gcp
  fsync: true
  fingerprint_key_env: KEYLEDGER_FINGERPRINT_KEY
  checkpoints: {{key_file: checkpoint.key}}
admin: {{listen: "{HOST}:0"}}
logging: {{format: json, level: {log_level}}}
""",
        encoding="utf-8",
    )
    return config


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


def run(settings: Settings, *, log_level: str, quick: bool) -> dict[str, Any]:
    from cryptography.fernet import Fernet

    from keyledger.proxy.audit.checkpoints import generate_key_pair

    started = time.monotonic()
    load_average = os.getloadavg()[0]
    isolate_own_env()
    with tempfile.TemporaryDirectory(prefix="keyledger-bench-gcp-") as tmp:
        workdir = Path(tmp)
        (workdir / "policies").mkdir()
        (workdir / "policies" / "bench.yaml").write_text(POLICY, encoding="utf-8")
        rest_port, grpc_port, kl_port, kl_grpc_port = free_ports(4)
        config = write_config(
            workdir,
            port=kl_port,
            grpc_port=kl_grpc_port,
            standin_grpc=f"{HOST}:{grpc_port}",
            log_level=log_level,
        )
        journal = workdir / "audit"
        base_env = clean_env()
        kl_env = clean_env(
            KEYLEDGER_IDENTITY_KEY=Fernet.generate_key().decode(),
            KEYLEDGER_FINGERPRINT_KEY=secrets.token_hex(32),
            KEYLEDGER_ADMIN_TOKEN=secrets.token_hex(24),
        )
        generate_key_pair(workdir / "checkpoint")
        token = create_token(config, kl_env)
        targets = {
            "rest-direct": Target("rest", f"http://{HOST}:{rest_port}", REAL_PROJECT, token),
            "rest-keyledger": Target("rest", f"http://{HOST}:{kl_port}", CALLER_PROJECT, token),
            "grpc-direct": Target("grpc", f"{HOST}:{grpc_port}", REAL_PROJECT, token),
            "grpc-keyledger": Target("grpc", f"{HOST}:{kl_grpc_port}", CALLER_PROJECT, token),
        }

        children = Children(workdir)
        try:
            children.start(
                "standin",
                [
                    PYTHON,
                    str(Path(__file__).resolve()),
                    *("--role", "standin"),
                    *("--rest-port", str(rest_port), "--grpc-port", str(grpc_port)),
                ],
                base_env,
            )
            children.wait_ready("standin", children.printed_ready("standin"), timeout_s=60)
            children.start(
                "keyledger",
                [PYTHON, "-m", "keyledger", "serve", "--config", str(config)],
                kl_env,
            )
            children.wait_ready(
                "keyledger",
                lambda: port_open(kl_port) and port_open(kl_grpc_port),
                timeout_s=60,
            )

            clients = {name: sync_caller(targets[name]) for name in TARGETS}
            latency = measure_latency(
                {name: call for name, (call, _) in clients.items()}, settings, budget_s=120
            )
            for _, close in clients.values():
                close()
            load = measure_throughput(children, targets, settings, base_env)

            code = children.stop("keyledger", signal.SIGINT)
            closed = journal_closed(children.err("keyledger"))
            errors_logged = count_error_lines(children.err("keyledger"))
            verified = verify_journal(journal, base_env)
        finally:
            children.close_all()

    served = sum(latency[n].ok_total for n in TARGETS if n.endswith("-keyledger")) + sum(
        load[n].ok_total for n in load if n.endswith("-keyledger")
    )
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_average,
            "python": platform.python_version(),
            "journal_filesystem": filesystem_of(Path(tempfile.gettempdir())),
        },
        "settings": {**asdict(settings), "quick": quick, "log_level": log_level},
        "latency": {name: latency[name].summary() for name in TARGETS},
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


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def _ratio(through: float, direct: float) -> str:
    return f"x{through / direct:.2f}" if direct and through == through else "-"


def render(report: dict[str, Any]) -> str:
    s, m, lat, tp, j = (
        report[k] for k in ("settings", "machine", "latency", "throughput", "journal")
    )
    lines = [
        f"keyledger GCP benchmark ({m['cpus']} cores, Python {m['python']}, journal on "
        f"{m['journal_filesystem']}, log level {s['log_level']}, load avg "
        f"{m['load_average_at_start']:.2f} at start)" + ("  [--quick]" if s["quick"] else ""),
        f"AccessSecretVersion with google-cloud-secret-manager, sequential: {s['calls']} calls "
        f"after {s['warmup_calls']} warm-up each, the four taking turns in blocks of {s['block']}",
        f"{'':34}{'p50 ms':>8}{'p99 ms':>9}   through / direct",
    ]
    for name in TARGETS:
        data = lat[name]
        row = f"  {LABELS[name]:32}{_ms(data['p50_ms']):>8}{_ms(data['p99_ms']):>9}"
        if name.endswith("-keyledger"):
            base = lat[name.replace("-keyledger", "-direct")]
            row += (
                f"   p50 {_ratio(data['p50_ms'], base['p50_ms'])} "
                f"({data['p50_ms'] - base['p50_ms']:+.2f} ms), "
                f"p99 {_ratio(data['p99_ms'], base['p99_ms'])}"
            )
        errors = sum(data["errors"].values())
        lines.append(row + (f"  {errors} errors" if errors else ""))
    lines += [
        f"throughput: concurrency {s['concurrency']} (gRPC: async client, asyncio.gather; REST: "
        f"sync client in {s['concurrency']} threads), {s['load_rounds']} x "
        f"{s['load_duration_s']:g} s each after {s['load_warmup_s']:g} s warm-up"
        + (", order A B B A" if s["load_rounds"] > 1 else ""),
        f"{'':34}{'calls/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        "   through / direct   CPU us/call: keyledger stand-in client",
    ]
    noise = 0.0
    for name in ("grpc-direct", "grpc-keyledger", "rest-direct", "rest-keyledger"):
        data = tp[name]
        cpu = data["cpu_us_per_request"]
        ratio = ""
        if name.endswith("-keyledger"):
            ratio = _ratio(data["rps"], tp[name.replace("-keyledger", "-direct")]["rps"])
        kl_cpu = f"{cpu['keyledger']:.0f}" if name.endswith("-keyledger") else "-"
        lines.append(
            f"  {LABELS[name]:32}{data['rps']:>8.0f}{_ms(data['p50_ms']):>9}"
            f"{_ms(data['p99_ms']):>9}{sum(data['errors'].values()):>8}   {ratio:>16}"
            f"{kl_cpu:>27}{cpu['standin']:>10.0f}{cpu['client']:>7.0f}"
        )
        noise = max(noise, data["other_processes_cores"])
    if noise > 0.2:
        lines.append(
            f"  WARNING: other processes used up to {noise:.2f} of {m['cpus']} cores during "
            "the load runs; throughput figures are disturbed"
        )
    busy = ", ".join(
        f"{LABELS[n].split()[0]} {tp[n]['proxy_cores_busy']:.2f}"
        for n in ("grpc-keyledger", "rest-keyledger")
    )
    lines.append(f"  keyledger cores busy under load: {busy}")
    closed = j["journal_closed"]
    if closed:
        lines.append(
            f"  keyledger journal: {closed['events']} events in {closed['fsyncs']} fsyncs = "
            f"{closed['events_per_fsync']:.1f} events/fsync"
        )
    state = "intact" if j["verify_intact"] else "NOT INTACT"
    cover = ">=" if j["events_cover_calls"] else "< !"
    extra = f", {j['error_log_lines']} error log lines" if j["error_log_lines"] else ""
    extra += f", exit status {j['exit_code']}" if j["exit_code"] else ""
    lines.append(
        f"journal verify: {state}, {j['verify_events']} events ({cover} {j['calls_served']} "
        f"calls served through keyledger){extra}"
    )
    if j["verify_output"]:
        lines.append(j["verify_output"])
    lines.append(f"total {report['elapsed_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser, quick="about 20 s")
    # The processes this script starts of itself: the stand-in and a load generator.
    parser.add_argument("--role", choices=("bench", "standin", "load"), default="bench")
    parser.add_argument("--rest-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=3.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "standin":
        return serve_standin(args.rest_port, args.grpc_port)
    if args.role == "load":
        target = Target(**{**orjson.loads(args.target), "token": os.environ[TOKEN_ENV]})
        return generate_load(target, args.concurrency, args.warmup, args.duration)

    settings = QUICK if args.quick else FULL
    report = run_and_print(
        lambda: run(settings, log_level=args.log_level, quick=args.quick),
        render,
        as_json=args.json,
    )
    j = report["journal"]
    ok = j["verify_intact"] and j["events_cover_calls"] and j["exit_code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
