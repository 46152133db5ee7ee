"""What keyledger costs Azure Key Vault callers, through keyledger and direct, in one run.

    .venv/bin/python bench/azure_overhead.py [--quick] [--json] [--log-level info|warning]

Each server in its own process, all on 127.0.0.1 and all over HTTPS (Key Vault's SDKs send
their token over nothing else), with one CA made for the run by
:func:`keyledger.devtls.ensure_dev_tls`: the Key Vault stand-in
(:class:`keyledger.backends.azure_standin.AzureStandin`, started by this script with
``--role standin``, seeded with one secret) and keyledger (``keyledger serve --config``, its
data plane on HTTPS with ``tls: {cert, key}``, an azure backend on the stand-in as vault
``bench`` with ``credentials: standin`` and the run's CA as ``ca_file``, the durable journal
on, a bearer token from ``keyledger identity create bench --token``). Calls are made with
Microsoft's own client, azure-keyvault-secrets, changed only in vault URL and credential (a
token credential handing out keyledger's token; the stand-in takes any token) and trusting
the run's CA explicitly (``connection_verify``; REQUESTS_CA_BUNDLE and the like are dropped
from every process's environment so that they cannot override it):

(a) Latency: ``SecretClient.get_secret`` (the sync client, on requests) called sequentially,
    p50/p99, direct to the stand-in and through keyledger. The two take turns in blocks so
    that drift (CPU frequency, a busy neighbour) hits both alike.
(b) Throughput: a closed loop at concurrency 32 for a few seconds with the SDK's aio client
    (``azure.keyvault.secrets.aio``, one client shared by 32 tasks under ``asyncio.gather``),
    through keyledger and direct, taking turns (A B B A). Each load generator is a process of
    its own (``--role load``); the CPU time each process used per call says where the time
    goes.

Through keyledger a call crosses two TLS connections (client -> keyledger -> stand-in, the
second from the pooled aiohttp session keyledger lends its backend's aio SecretClient);
direct, one. All keep their connections alive: handshakes are paid in the warm-up.

The figures are ratios through / direct. Afterwards ``keyledger audit verify`` checks the
journal: it must be intact and hold at least as many events as keyledger served calls.
``--quick`` takes about 25 s, a full run about 40 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from gcp_overhead import (  # the Google bench's helpers that know nothing of Google
    VALUE,  # measure_latency checks every answer against it: the secret seeded here
    Call,
    Settings,  # the same knobs: latency calls and blocks, load rounds
    Tally,
    create_token,
    error_key,
    measure_latency,
)
from proxy_overhead import (  # bench/ is on sys.path: this script runs from it
    BENCH,
    HOST,
    PYTHON,
    BenchError,
    Children,
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

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken

__all__ = ["main"]

VAULT = "bench"  # as keyledger's config and policy name the stand-in
SECRET = "bench-db-password"
TOKEN_ENV = "BENCH_AZURE_TOKEN"
TOKEN_LIFETIME_S = 3600
MAX_CALLS = 2_000_000  # per load run, whatever the duration: every loop is bounded
TARGETS = ("direct", "keyledger")
LABELS = {
    "direct": "direct to the stand-in",
    "keyledger": "through keyledger",
}


FULL = Settings(1500, 100, 100, 1.0, 5.0, 2, 32)
QUICK = Settings(800, 50, 50, 0.5, 3.0, 2, 32)


# -- the stand-in, as a process of its own ---------------------------------------------------


def serve_standin(port: int, cert: Path, key: Path) -> int:
    """Run the Key Vault stand-in over HTTPS until SIGINT/SIGTERM; print ``ready`` and its
    URL once it listens."""
    import uvloop

    from keyledger.backends.azure_standin import AzureStandin
    from keyledger.devtls import server_context

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        context = server_context(cert, key)
        async with AzureStandin(host=HOST, port=port, ssl_context=context) as standin:
            standin.seed({SECRET: VALUE.decode()})
            print(f"ready {standin.url}", flush=True)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve())
    return 0


# -- Microsoft's clients ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A vault URL, the CA its certificate is checked against, and the bearer token sent."""

    url: str
    ca: str
    token: str

    def to_json(self) -> str:
        """All but the token, which a load generator is given in its environment."""
        return orjson.dumps({**asdict(self), "token": None}).decode()


class StaticToken:
    """A token credential that hands out keyledger's token, as Azure's SDKs take one."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + TOKEN_LIFETIME_S)


class AsyncStaticToken:
    """The same, for the aio client."""

    def __init__(self, token: str) -> None:
        self._sync = StaticToken(token)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self._sync.get_token(*scopes, **kwargs)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> AsyncStaticToken:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        pass


def _client_options(target: Target) -> dict[str, Any]:
    return {
        "connection_verify": target.ca,  # the run's CA, whatever the environment says
        "verify_challenge_resource": False,  # 127.0.0.1 is not a name under vault.azure.net
        "retry_total": 0,
    }


def sync_caller(target: Target) -> tuple[Call, Callable[[], None]]:
    """One sync SecretClient for ``target``: a call that reads the secret and returns its
    value's bytes, and what closes the client's connections."""
    from azure.keyvault.secrets import SecretClient

    client = SecretClient(target.url, StaticToken(target.token), **_client_options(target))

    def call() -> bytes:
        value = client.get_secret(SECRET).value
        return value.encode() if value is not None else b""

    return call, client.close


# -- (b) throughput: the load generator, as a process of its own -----------------------------


def load_aio(target: Target, concurrency: int, tally: Tally) -> None:
    """``concurrency`` tasks sharing one aio SecretClient, gathered, until the window ends."""
    import uvloop
    from azure.keyvault.secrets.aio import SecretClient

    expected = VALUE.decode()
    per_worker = MAX_CALLS // concurrency

    async def load() -> None:
        async with (
            AsyncStaticToken(target.token) as credential,
            SecretClient(target.url, credential, **_client_options(target)) as client,
        ):

            async def worker() -> None:
                for _ in range(per_worker):
                    started = time.monotonic()
                    if started >= tally.window[1]:
                        return
                    error = None
                    try:
                        secret = await client.get_secret(SECRET)
                        if secret.value != expected:
                            error = "WrongValue"
                    except Exception as exc:  # tallied, the loop goes on
                        error = error_key(exc)
                    tally.record(started, time.monotonic(), error)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    uvloop.run(load())


def generate_load(target: Target, concurrency: int, warmup_s: float, duration_s: float) -> int:
    """Run one closed-loop load on ``target``; print one JSON object with what it saw."""
    cpu_before = time.process_time()
    start = time.monotonic()
    tally = Tally((start + warmup_s, start + warmup_s + duration_s))
    load_aio(target, concurrency, tally)
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
            *("--role", "load"),
            *("--target", target.to_json()),
            *("--concurrency", str(settings.concurrency)),
            *("--warmup", str(settings.load_warmup_s)),
            *("--duration", str(settings.load_duration_s)),
        ],
        env={**env, TOKEN_ENV: target.token},
        capture_output=True,
        text=True,
        timeout=settings.load_warmup_s + settings.load_duration_s + 60,
        check=False,
        cwd=BENCH,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(f"load on {target.url} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_throughput(
    children: Children, targets: Mapping[str, Target], settings: Settings, env: Mapping[str, str]
) -> dict[str, Throughput]:
    """Direct and through keyledger take turns: A B B A ..."""
    order: list[str] = []
    for i in range(settings.load_rounds):
        order += ["direct", "keyledger"] if i % 2 == 0 else ["keyledger", "direct"]
    results = {name: Throughput(proxy="keyledger") for name in TARGETS}
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
        resources: ["azure:{VAULT}/*"]
bindings:
  - role: bench
    principals: [bench]
"""


def write_config(
    workdir: Path, *, port: int, cert: Path, key: Path, ca: Path, vault_url: str, log_level: str
) -> Path:
    config = workdir / "keyledger.yaml"
    config.write_text(
        f"""\
listen: {HOST}:{port}
tls: {{cert: "{cert}", key: "{key}"}}
identities:
  path: identities.json
  key_env: KEYLEDGER_IDENTITY_KEY
policies: [policies/]
backends:
  azure:
    type: azure
    credentials: standin
    ca_file: "{ca}"
    vaults: {{{VAULT}: {{url: "{vault_url}", default: true}}}}
audit:
  journal: audit
  chain_id: bench-azure
  fsync: true
  fingerprint_key_env: KEYLEDGER_FINGERPRINT_KEY
  checkpoints: {{key_file: checkpoint.key}}
admin: {{listen: "{HOST}:0"}}
logging: {{format: json, level: {log_level}}}
""",
        encoding="utf-8",
    )
    return config


# -- the run ---------------------------------------------------------------------------------


def run(settings: Settings, *, log_level: str, quick: bool) -> dict[str, Any]:
    from cryptography.fernet import Fernet

    from keyledger.devtls import ensure_dev_tls
    from keyledger.proxy.audit.checkpoints import generate_key_pair

    started = time.monotonic()
    load_average = os.getloadavg()[0]
    isolate_own_env()  # REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE and proxies gone from this process
    with tempfile.TemporaryDirectory(prefix="keyledger-bench-azure-") as tmp:
        workdir = Path(tmp)
        tls = ensure_dev_tls(workdir / "tls")
        (workdir / "policies").mkdir()
        (workdir / "policies" / "bench.yaml").write_text(POLICY, encoding="utf-8")
        standin_port, kl_port = free_ports(2)
        standin_url = f"https://{HOST}:{standin_port}"
        config = write_config(
            workdir,
            port=kl_port,
            cert=tls.cert,
            key=tls.key,
            ca=tls.ca_cert,
            vault_url=standin_url,
            log_level=log_level,
        )
        journal = workdir / "audit"
        base_env = clean_env()  # and from every child's
        kl_env = clean_env(
            KEYLEDGER_IDENTITY_KEY=Fernet.generate_key().decode(),
            KEYLEDGER_FINGERPRINT_KEY=secrets.token_hex(32),
            KEYLEDGER_ADMIN_TOKEN=secrets.token_hex(24),
        )
        generate_key_pair(workdir / "checkpoint")
        token = create_token(config, kl_env)
        ca = str(tls.ca_cert)
        targets = {
            "direct": Target(standin_url, ca, token),
            "keyledger": Target(f"https://{HOST}:{kl_port}", ca, token),
        }

        children = Children(workdir)
        try:
            children.start(
                "standin",
                [
                    PYTHON,
                    str(Path(__file__).resolve()),
                    *("--role", "standin", "--port", str(standin_port)),
                    *("--cert", str(tls.cert), "--key", str(tls.key)),
                ],
                base_env,
            )
            children.wait_ready("standin", children.printed_ready("standin"), timeout_s=60)
            children.start(
                "keyledger",
                [PYTHON, "-m", "keyledger", "serve", "--config", str(config)],
                kl_env,
            )
            children.wait_ready("keyledger", lambda: port_open(kl_port), timeout_s=60)

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

    served = latency["keyledger"].ok_total + load["keyledger"].ok_total
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_average,
            "python": platform.python_version(),
            "journal_filesystem": filesystem_of(Path(tempfile.gettempdir())),
        },
        "settings": {**asdict(settings), "quick": quick, "log_level": log_level},
        "latency": {name: latency[name].summary() for name in TARGETS},
        "throughput": {name: load[name].summary() for name in TARGETS},
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
        f"keyledger Azure benchmark ({m['cpus']} cores, Python {m['python']}, journal on "
        f"{m['journal_filesystem']}, log level {s['log_level']}, load avg "
        f"{m['load_average_at_start']:.2f} at start)" + ("  [--quick]" if s["quick"] else ""),
        f"get_secret with azure-keyvault-secrets (sync client), HTTPS, sequential: {s['calls']} "
        f"calls after {s['warmup_calls']} warm-up each, the two taking turns in blocks of "
        f"{s['block']}",
        f"{'':34}{'p50 ms':>8}{'p99 ms':>9}   through / direct",
    ]
    direct = lat["direct"]
    for name in TARGETS:
        data = lat[name]
        row = f"  {LABELS[name]:32}{_ms(data['p50_ms']):>8}{_ms(data['p99_ms']):>9}"
        if name == "keyledger":
            row += (
                f"   p50 {_ratio(data['p50_ms'], direct['p50_ms'])} "
                f"({data['p50_ms'] - direct['p50_ms']:+.2f} ms), "
                f"p99 {_ratio(data['p99_ms'], direct['p99_ms'])} "
                f"({data['p99_ms'] - direct['p99_ms']:+.2f} ms)"
            )
        errors = sum(data["errors"].values())
        lines.append(row + (f"  {errors} errors" if errors else ""))
    lines += [
        f"throughput: concurrency {s['concurrency']} (aio client, one shared by "
        f"{s['concurrency']} tasks under asyncio.gather), {s['load_rounds']} x "
        f"{s['load_duration_s']:g} s each after {s['load_warmup_s']:g} s warm-up"
        + (", order A B B A" if s["load_rounds"] > 1 else ""),
        f"{'':34}{'calls/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        "   through / direct   CPU us/call: keyledger stand-in client",
    ]
    noise = 0.0
    for name in TARGETS:
        data = tp[name]
        cpu = data["cpu_us_per_request"]
        through = name == "keyledger"
        ratio = _ratio(data["rps"], tp["direct"]["rps"]) if through else ""
        kl_cpu = f"{cpu['keyledger']:.0f}" if through else "-"
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
    lines.append(f"  keyledger cores busy under load: {tp['keyledger']['proxy_cores_busy']:.2f}")
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
    add_common_options(parser, quick="about 25 s")
    # The processes this script starts of itself: the stand-in and a load generator.
    parser.add_argument("--role", choices=("bench", "standin", "load"), default="bench")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=3.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "standin":
        return serve_standin(args.port, args.cert, args.key)
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
