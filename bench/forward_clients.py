"""Forwarding clients side by side: what one forwarded request costs keyledger's process.

    .venv/bin/python bench/forward_clients.py [--quick] [--json] [--rounds 3]
                                              [--concurrency 1,32] [--only NAME,...]
    .venv/bin/python bench/forward_clients.py profile [--duration 20] [--out FILE]
    .venv/bin/python bench/forward_clients.py analyse FILE

The default command starts the stand-in store (``bench/upstream.py``, its own process) and
then, for every candidate and concurrency, a fresh client process (on uvloop, as ``keyledger
serve`` runs) that sends the proxy's request shape over keep-alive HTTP/1.1 on loopback:
``POST /`` with the headers keyledger's own SigV4 signer produces (content-type,
x-amz-target, host, x-amz-date, authorization; the client adds its own), a 62-byte JSON body,
a ~280-byte JSON answer. ``--concurrency`` tasks share one client, each sending its next
request as soon as its last is answered. After ``--warmup`` seconds the client counts the
answers and its own CPU time (``time.process_time``, every thread) for ``--duration``
seconds: CPU microseconds per request is the figure that matters (on a 2-core machine at
concurrency 32 req/s mostly says how fast the stand-in answers; its cores busy are shown).
Runs take turns (A B C ... C B A ...) over ``--rounds`` rounds; the medians are reported,
with the machine's load average and the CPU other processes used meanwhile.

The candidates (``--only`` picks some; ``--list`` names them):

- ``harness``: no I/O at all (an ``asyncio.sleep(0)`` and a canned answer): the floor the
  measuring loop itself costs.
- ``aiohttp-current``: ``keyledger.proxy.http_client.AiohttpTransport`` as the proxy builds it
  (Azure's store client; AWS's before ``keyledger.proxy.h1``, measured here first).
- ``aio+...``: the same request made as that transport makes it, with one option changed
  (``aio+all``: every change that keeps it correct at once; ``aio+no-timeout`` is for
  reference only, a forward must have a deadline).
- ``httptools``: ``keyledger.proxy.h1.H1Transport``, the keep-alive HTTP/1.1 client on
  asyncio Protocols with ``httptools`` parsing the answers that AWS backends use.
- ``httpx``: if it can be imported.
- ``backend+aiohttp`` / ``backend+httptools``: ``AwsBackend.call`` (JSON, SigV4 re-signing
  with its cached key, the answer's parsing) over each transport: the whole forward step.

After the clients, SigV4 re-signing is timed in this process: ``sign_headers`` with a warm
``SigningKeyCache`` (what ``AwsBackend`` keeps, ``AwsBackend._keys``) against deriving the
key for every request.

``profile`` runs keyledger (the durable journal, logging at info, the admin API: as
``bench/proxy_overhead.py`` configures it) in front of the stand-in under ``bench/load.py``
and samples it with py-spy (``pip install py-spy``; sampling another process may need root
or ``kernel.yama.ptrace_scope=0``), then prints the costs by part of the request path and
the top functions by self and cumulative samples. ``analyse`` prints the same for a raw
profile (``py-spy record -f raw``) already taken.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson
import uvloop
from multidict import CIMultiDict
from proxy_overhead import (  # bench/ is on sys.path: run from it or the repository root
    BENCH,
    HOST,
    PYTHON,
    REGION,
    SECRET_ID,
    UPSTREAM_CREDENTIALS,
    BenchError,
    Children,
    cache_config,
    clean_env,
    free_ports,
    isolate_own_env,
    machine_busy_s,
    port_open,
    provision,
    write_config,
    write_policy,
)
from yarl import URL

from keyledger import sigv4
from keyledger.backends import HttpReply, HttpTransportError
from keyledger.backends.aws import AwsBackend, AwsSettings
from keyledger.model import Action, SecretRef, SecretRequest
from keyledger.proxy.h1 import H1Transport
from keyledger.proxy.http_client import AiohttpTransport

__all__ = ["main"]

SERVICE = "secretsmanager"
CONTENT_TYPE = "application/x-amz-json-1.1"
TIMEOUT_S = 10.0  # backends.<name>.timeout_s's default
BODY = orjson.dumps({"SecretId": SECRET_ID, "VersionStage": "AWSCURRENT"})


def signed_headers(url: str, body: bytes = BODY) -> dict[str, str]:
    """The headers keyledger sends the store for one GetSecretValue (``AwsBackend._send``)."""
    return sigv4.sign_headers(
        keys=sigv4.SigningKeyCache(),
        access_key_id=UPSTREAM_CREDENTIALS[0],
        secret_key=UPSTREAM_CREDENTIALS[1],
        session_token=None,
        region=REGION,
        service=SERVICE,
        method="POST",
        host=urlsplit(url).netloc,
        path="/",
        headers={"content-type": CONTENT_TYPE, "x-amz-target": f"{SERVICE}.GetSecretValue"},
        body=body,
        now=datetime.now(UTC),
    )


# -- the candidates ---------------------------------------------------------------------------


class Client(Protocol):
    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes = b""
    ) -> HttpReply: ...

    async def close(self) -> None: ...


class Harness:
    """No I/O: what the measuring loop costs by itself."""

    def __init__(self) -> None:
        self._reply = HttpReply(200, {"content-type": CONTENT_TYPE}, b"x" * 280)

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes = b""
    ) -> HttpReply:
        await asyncio.sleep(0)
        return self._reply

    async def close(self) -> None:
        return None


class CurrentTransport:
    """``AiohttpTransport`` exactly as ``keyledger.proxy.app`` builds it (for Azure now)."""

    def __init__(self) -> None:
        self._transport = AiohttpTransport(timeout_s=TIMEOUT_S)

    async def start(self) -> None:
        await self._transport.start()

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes = b""
    ) -> HttpReply:
        return await self._transport.request(method, url, headers=headers, body=body)

    async def close(self) -> None:
        await self._transport.close()


@dataclass(frozen=True, slots=True)
class AioOptions:
    """How a trimmed aiohttp request differs from ``AiohttpTransport``'s."""

    no_decompress: bool = False  # auto_decompress=False
    skip_accept: bool = False  # no Accept / Accept-Encoding header either
    dummy_jar: bool = False  # aiohttp.DummyCookieJar(): no cookie filtering per request
    yarl_url: bool = False  # a yarl.URL parsed once instead of a str per request
    cimultidict: bool = False  # headers handed over as a CIMultiDict built per request
    timeout: str = "total"  # total | sock (sock_connect + sock_read) | none
    no_context: bool = False  # ``await session.request()`` then ``read()``: no async with
    reply_headers: bool = False  # the answer's CIMultiDictProxy as is, no lower-cased dict
    read_bufsize: int | None = None


ALL_TRIMS = AioOptions(
    no_decompress=True,
    skip_accept=True,
    dummy_jar=True,
    yarl_url=True,
    no_context=True,
    reply_headers=True,
)


class AioVariant:
    """The request ``AiohttpTransport.request`` makes, with :class:`AioOptions` applied."""

    def __init__(self, options: AioOptions) -> None:
        self._o = options
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    async def start(self) -> None:
        o = self._o
        if o.timeout == "total":
            timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        elif o.timeout == "sock":
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=TIMEOUT_S)
        else:
            timeout = aiohttp.ClientTimeout(total=None)
        skip: tuple[str, ...] = ("User-Agent", "Content-Type")
        if o.skip_accept:
            skip += ("Accept", "Accept-Encoding")
        extra: dict[str, Any] = {}
        if o.read_bufsize is not None:
            extra["read_bufsize"] = o.read_bufsize
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, ssl=True),
            timeout=timeout,
            skip_auto_headers=skip,
            auto_decompress=not o.no_decompress,
            cookie_jar=aiohttp.DummyCookieJar() if o.dummy_jar else None,
            **extra,
        )

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes = b""
    ) -> HttpReply:
        assert self._session is not None
        o = self._o
        target: str | URL = url
        if o.yarl_url:
            target = self._urls.get(url) or self._urls.setdefault(url, URL(url))
        sent: Mapping[str, str] = CIMultiDict(headers) if o.cimultidict else headers
        try:
            if o.no_context:
                response = await self._session.request(
                    method, target, data=body or None, headers=sent, allow_redirects=False
                )
                try:
                    data = await response.read()
                finally:
                    response.release()
            else:
                async with self._session.request(
                    method, target, data=body or None, headers=sent, allow_redirects=False
                ) as response:
                    data = await response.read()
            if o.reply_headers:
                return HttpReply(response.status, response.headers, data)
            reply_headers = {k.lower(): v for k, v in response.headers.items()}
            return HttpReply(response.status, reply_headers, data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HttpTransportError(type(exc).__name__) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class HttpxClient:
    def __init__(self) -> None:
        httpx: Any = importlib.import_module("httpx")
        self._client: Any = httpx.AsyncClient(
            timeout=TIMEOUT_S,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
            follow_redirects=False,
        )
        self._errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes = b""
    ) -> HttpReply:
        try:
            response = await self._client.request(method, url, headers=headers, content=body)
        except self._errors as exc:
            raise HttpTransportError(type(exc).__name__) from exc
        return HttpReply(response.status_code, response.headers, response.content)

    async def close(self) -> None:
        await self._client.aclose()


class BackendClient:
    """``AwsBackend.call`` over a transport: the forward step as the pipeline calls it.
    ``request`` ignores what it is given: the backend builds and signs its own."""

    def __init__(self, url: str, transport: Any) -> None:
        self._transport = transport
        self._backend = AwsBackend(
            AwsSettings(region=REGION, endpoint_url=url, static_credentials=UPSTREAM_CREDENTIALS),
            transport=transport,
        )
        self._call = SecretRequest(
            action=Action.READ,
            ref=SecretRef("aws", SECRET_ID),
            operation="GetSecretValue",
            params={"SecretId": SECRET_ID, "VersionStage": "AWSCURRENT"},
        )

    async def start(self) -> None:
        if hasattr(self._transport, "start"):
            await self._transport.start()
        await self._backend.start()

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes = b""
    ) -> HttpReply:
        result = await self._backend.call(self._call)
        return HttpReply(200, {}, b"x" * 280 if result.items else b"")

    async def close(self) -> None:
        await self._transport.close()


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    about: str
    make: Callable[[str], Awaitable[Client]]
    needs: str | None = None  # a module it cannot run without


async def _started(client: Any) -> Client:
    await client.start()
    c: Client = client
    return c


async def _plain(client: Any) -> Client:
    c: Client = client
    return c


def _aio(**changes: Any) -> Callable[[str], Awaitable[Client]]:
    return lambda url: _started(AioVariant(replace(AioOptions(), **changes)))


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("harness", "no I/O: the measuring loop's own cost", lambda url: _plain(Harness())),
    Candidate(
        "aiohttp-current",
        "AiohttpTransport as keyledger configures it",
        lambda url: _started(CurrentTransport()),
    ),
    Candidate("aio+no-decompress", "auto_decompress=False", _aio(no_decompress=True)),
    Candidate(
        "aio+skip-accept",
        "auto_decompress=False, no Accept/Accept-Encoding",
        _aio(no_decompress=True, skip_accept=True),
    ),
    Candidate("aio+dummy-jar", "cookie_jar=DummyCookieJar()", _aio(dummy_jar=True)),
    Candidate("aio+yarl-url", "a yarl.URL parsed once", _aio(yarl_url=True)),
    Candidate("aio+cimultidict", "headers as a CIMultiDict built per call", _aio(cimultidict=True)),
    Candidate("aio+sock-timeout", "sock_connect/sock_read, no total", _aio(timeout="sock")),
    Candidate("aio+no-timeout", "no timeout (reference only)", _aio(timeout="none")),
    Candidate("aio+no-context", "await request(); read(); release()", _aio(no_context=True)),
    Candidate(
        "aio+reply-headers", "answer headers as aiohttp gives them", _aio(reply_headers=True)
    ),
    Candidate("aio+bufsize-4k", "read_bufsize=4096", _aio(read_bufsize=4096)),
    Candidate(
        "aio+all",
        "every correct trim above at once",
        lambda url: _started(AioVariant(ALL_TRIMS)),
    ),
    Candidate(
        "httptools",
        "keyledger.proxy.h1.H1Transport (asyncio Protocol + httptools), AWS's store client",
        lambda url: _started(H1Transport(timeout_s=TIMEOUT_S)),
    ),
    Candidate("httpx", "httpx.AsyncClient", lambda url: _plain(HttpxClient()), needs="httpx"),
    Candidate(
        "backend+aiohttp",
        "AwsBackend.call over AiohttpTransport",
        lambda url: _started(BackendClient(url, AiohttpTransport(timeout_s=TIMEOUT_S))),
    ),
    Candidate(
        "backend+httptools",
        "AwsBackend.call over keyledger.proxy.h1.H1Transport",
        lambda url: _started(BackendClient(url, H1Transport(timeout_s=TIMEOUT_S))),
    ),
)
BY_NAME = {c.name: c for c in CANDIDATES}


def available(candidate: Candidate) -> bool:
    if candidate.needs is None:
        return True
    try:
        importlib.import_module(candidate.needs)
    except ImportError:
        return False
    return True


# -- one run, in a process of its own -----------------------------------------------------------


async def drive(
    candidate: Candidate, url: str, *, concurrency: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    client = await candidate.make(url)
    headers = signed_headers(url)
    done = 0
    errors: Counter[str] = Counter()
    running = True

    async def worker() -> None:
        nonlocal done
        while running:
            try:
                reply = await client.request("POST", url, headers=headers, body=BODY)
            except HttpTransportError as exc:
                errors[str(exc)[:80]] += 1
                await asyncio.sleep(0.01)
                continue
            if reply.status != 200 or len(reply.body) < 100:
                errors[f"HTTP {reply.status}"] += 1
            else:
                done += 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup_s)
        count0, cpu0, wall0 = done, time.process_time(), time.perf_counter()
        await asyncio.sleep(duration_s)
        count1, cpu1, wall1 = done, time.process_time(), time.perf_counter()
        running = False
        async with asyncio.timeout(TIMEOUT_S + 5):
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await client.close()
    requests = count1 - count0
    return {
        "requests": requests,
        "wall_s": wall1 - wall0,
        "cpu_s": cpu1 - cpu0,
        "errors": dict(errors),
    }


def child(args: argparse.Namespace) -> int:
    result = uvloop.run(
        drive(
            BY_NAME[args.candidate],
            args.url,
            concurrency=args.concurrency,
            warmup_s=args.warmup,
            duration_s=args.duration,
        )
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


# -- the matrix ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Cell:
    """Every run of one candidate at one concurrency."""

    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    upstream_cores: list[float] = field(default_factory=list)
    others_cores: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        med = statistics.median
        return {
            "rps": med(self.rps),
            "cpu_us_per_request": med(self.cpu_us),
            "cpu_us_runs": [round(v, 2) for v in self.cpu_us],
            "rps_runs": [round(v) for v in self.rps],
            "upstream_cores": med(self.upstream_cores),
            "others_cores": med(self.others_cores),
            "errors": dict(self.errors),
        }


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_matrix(
    names: list[str], concurrencies: list[int], *, rounds: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    isolate_own_env()
    env = clean_env()  # it keeps PYTHONPATH: a client installed outside the venv can be tried
    loads = [os.getloadavg()]
    cells: dict[tuple[str, int], Cell] = defaultdict(Cell)
    with tempfile.TemporaryDirectory(prefix="keyledger-forward-") as tmp:
        children = Children(Path(tmp))
        (port,) = free_ports(1)
        url = f"http://{HOST}:{port}/"
        try:
            children.start(
                "upstream", [PYTHON, str(BENCH / "upstream.py"), "--port", str(port)], env
            )
            children.wait_ready("upstream", children.printed_ready("upstream"))
            for r in range(rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    for c in concurrencies:
                        one_run(cells[(name, c)], children, env, name, url, c, warmup_s, duration_s)
                loads.append(os.getloadavg())
                print(f"round {r + 1}/{rounds} done, load {loads[-1][0]:.2f}", file=sys.stderr)
        finally:
            children.close_all()
    return {
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "cpus": os.cpu_count(),
        "loadavg_1m": [round(v[0], 2) for v in loads],
        "rounds": rounds,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "rows": [
            {"candidate": n, "concurrency": c, **cells[(n, c)].summary()}
            for n in names
            for c in concurrencies
        ],
    }


def one_run(
    cell: Cell,
    children: Children,
    env: Mapping[str, str],
    name: str,
    url: str,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> None:
    argv = [
        PYTHON,
        str(Path(__file__).resolve()),
        "_run",
        "--candidate",
        name,
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(warmup_s),
        "--duration",
        str(duration_s),
    ]
    up0, busy0, wall0 = children.cpu_s("upstream"), machine_busy_s(), time.monotonic()
    kids0, own0 = children_cpu_s(), time.process_time()
    done = subprocess.run(
        argv,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=warmup_s + duration_s + 60,
        check=False,
        cwd=BENCH,
    )
    if done.returncode != 0:
        raise BenchError(f"{name} at concurrency {concurrency} failed:\n{done.stderr[-2000:]}")
    wall = time.monotonic() - wall0
    upstream = children.cpu_s("upstream") - up0
    others = machine_busy_s() - busy0 - upstream - (children_cpu_s() - kids0)
    others -= time.process_time() - own0
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    requests = max(1, result["requests"])
    cell.rps.append(result["requests"] / result["wall_s"])
    cell.cpu_us.append(result["cpu_s"] * 1e6 / requests)
    cell.upstream_cores.append(upstream / wall)
    cell.others_cores.append(max(0.0, others) / wall)
    cell.errors.update(result["errors"])


# -- SigV4 re-signing ---------------------------------------------------------------------------


def time_per_call(fn: Callable[[], object], *, calls: int, repeat: int = 3) -> float:
    """Median microseconds per call of ``fn`` over ``repeat`` runs of ``calls`` calls."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - started) * 1e6 / calls)
    return statistics.median(runs)


def sigv4_costs(calls: int) -> dict[str, float]:
    warm = sigv4.SigningKeyCache()
    base = {"content-type": CONTENT_TYPE, "x-amz-target": f"{SERVICE}.GetSecretValue"}

    def sign(keys: sigv4.SigningKeyCache) -> dict[str, str]:
        return sigv4.sign_headers(
            keys=keys,
            access_key_id=UPSTREAM_CREDENTIALS[0],
            secret_key=UPSTREAM_CREDENTIALS[1],
            session_token=None,
            region=REGION,
            service=SERVICE,
            method="POST",
            host="secretsmanager.us-east-1.amazonaws.com",
            path="/",
            headers=base,
            body=BODY,
            now=datetime.now(UTC),
        )

    today = sigv4.amz_date(datetime.now(UTC))[:8]
    return {
        "sign_cached_key_us": time_per_call(functools.partial(sign, warm), calls=calls),
        "sign_uncached_key_us": time_per_call(lambda: sign(sigv4.SigningKeyCache()), calls=calls),
        "derive_key_us": time_per_call(
            lambda: sigv4.SigningKeyCache().key(UPSTREAM_CREDENTIALS[1], today, REGION, SERVICE),
            calls=calls,
        ),
        "now_and_amz_date_us": time_per_call(
            lambda: sigv4.amz_date(datetime.now(UTC)), calls=calls
        ),
        "body_json_us": time_per_call(
            lambda: orjson.dumps({"SecretId": SECRET_ID, "VersionStage": "AWSCURRENT"}),
            calls=calls,
        ),
    }


# -- profile ------------------------------------------------------------------------------------

# Where a sample's time goes, by the most specific part of the request path found anywhere in
# its stack (first rule that matches wins): frames are "function (file:line)", with the full
# file names (py-spy --full-filenames). Counted over the event loop's thread only: the
# journal's fsyncs in worker threads are reported as threads.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SigV4 re-sign (backend)", ("sign_headers (",)),
    ("SigV4 verify (auth)", ("/keyledger/proxy/auth/",)),
    (
        "aiohttp client (forward)",
        ("/aiohttp/client", "/aiohttp/connector.py", "/keyledger/proxy/http_client.py"),
    ),
    ("journal + audit", ("/keyledger/proxy/audit/",)),
    ("policy", ("/keyledger/policies/",)),
    ("logging", ("/structlog/", "/keyledger/proxy/logging.py", "/logging/__init__")),
    ("metrics", ("/prometheus_client/", "/keyledger/proxy/metrics.py")),
    ("backend (aws, not signing)", ("/keyledger/backends/",)),
    ("frontend (aws wire)", ("/keyledger/proxy/frontends/",)),
    ("pipeline", ("/keyledger/proxy/pipeline.py",)),
    ("other keyledger", ("/keyledger/",)),
    ("aiohttp server", ("/aiohttp/",)),
)
LOOP = "event loop (uvloop's C: polling, syscalls)"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_LIB = re.compile(r"^.*/(?:site-packages|lib/python3\.\d+)/")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = _LIB.sub("", match["file"])
    at = path.rfind("/keyledger/")
    return f"{match['func']} ({path[at + 1 :] if at >= 0 else path})"


def analyse(folded: Path, top: int) -> dict[str, Any]:
    """Costs by part of the request path, and the top functions, of a raw py-spy profile."""
    parts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = loop_total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = "MainThread"
        if frames[0].startswith(("thread (", "process ")):
            thread = frames[0].rpartition(": ")[2] or frames[0]
            frames = frames[1:]
        total += count
        threads[re.sub(r"_\d+$", "_N", thread)] += count
        if thread != "MainThread":
            continue
        # What runs the loop (runpy, the CLI, uvloop.run) is in every stack: leave it out.
        runner = max((i for i, f in enumerate(frames) if f.startswith("Runner.run (")), default=-1)
        frames = frames[runner + 1 :]
        loop_total += count
        if not frames:
            parts[LOOP] += count
            own[LOOP] += count
            continue
        joined = ";".join(frames)
        part = next(
            (label for label, needles in PARTS if any(n in joined for n in needles)), "other"
        )
        parts[part] += count
        own[_short(frames[-1])] += count
        for name in {_short(f) for f in frames}:
            inclusive[name] += count

    def share(counter: Counter[str], of: int, n: int | None = None) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / of) for k, v in counter.most_common(n)] if of else []

    return {
        "samples": total,
        "loop_samples": loop_total,
        "threads": share(threads, total),
        "parts": share(parts, loop_total),
        "self": share(own, loop_total, top),
        "cumulative": share(inclusive, loop_total, top),
    }


def render_profile(report: Mapping[str, Any]) -> str:
    lines = [
        f"{report['samples']} samples of active threads, {report['loop_samples']} of them in "
        "the event loop's thread (the shares below are of those)"
    ]
    for title, key in (
        ("by thread (of all samples; worker threads: the journal's fsyncs)", "threads"),
        ("by part of the request path", "parts"),
        ("top self", "self"),
        ("top cumulative", "cumulative"),
    ):
        lines.append(f"\n{title}:")
        lines += [f"  {pct:5.1f}%  {name}" for name, pct in report[key]]
    return "\n".join(lines)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(found).exists():
        raise BenchError("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def profile(args: argparse.Namespace) -> dict[str, Any]:

    spy = py_spy()
    isolate_own_env()
    out = Path(args.out).resolve()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="keyledger-forward-profile-") as tmp:
        workdir = Path(tmp)
        write_policy(workdir, "aws:bench/*")
        up_port, kl_port = free_ports(2)
        upstream = f"http://{HOST}:{up_port}"
        kl = write_config(
            workdir,
            "profile",
            port=kl_port,
            upstream=upstream,
            log_level=args.log_level,
            extra=cache_config() if args.cache else "",
        )
        base_env = clean_env()
        kl_env, (key_id, secret) = provision(workdir, kl.config)
        children = Children(workdir)
        try:
            children.start(
                "upstream", [PYTHON, str(BENCH / "upstream.py"), "--port", str(up_port)], base_env
            )
            children.start(
                "keyledger",
                [PYTHON, "-m", "keyledger", "serve", "--config", str(kl.config)],
                kl_env,
            )
            children.wait_ready("upstream", children.printed_ready("upstream"))
            children.wait_ready("keyledger", functools.partial(port_open, kl_port), timeout_s=60)
            load_argv = [
                PYTHON,
                str(BENCH / "load.py"),
                "--url",
                f"http://{HOST}:{kl_port}",
                "--concurrency",
                str(args.concurrency),
                "--warmup",
                str(args.warmup),
                "--duration",
                str(args.duration + 2),
            ]
            if args.rate:
                load_argv += ["--rate", str(args.rate)]
            children.start(
                "load",
                load_argv,
                {**base_env, "BENCH_ACCESS_KEY_ID": key_id, "BENCH_SECRET_ACCESS_KEY": secret},
            )
            time.sleep(args.warmup + 0.5)
            pid = children.procs["keyledger"].pid
            cpu0 = children.cpu_s("keyledger")
            spy_argv = [
                spy, "record", "-p", str(pid), "-r", str(args.sample_rate),
                "-d", str(round(args.duration)), "--nonblocking", "--threads",
                "--full-filenames", "-f", "raw", "-o", str(out),
            ]  # fmt: skip
            print("$ " + " ".join(spy_argv[1:]).replace(str(pid), "PID"), file=sys.stderr)
            spied = subprocess.run(
                spy_argv, capture_output=True, text=True, timeout=args.duration + 60, check=False
            )
            if spied.returncode != 0:
                raise BenchError(f"py-spy failed:\n{spied.stderr[-2000:]}")
            kl_cores = (children.cpu_s("keyledger") - cpu0) / args.duration
            children.procs["load"].wait(timeout=120)
            load = orjson.loads(children.out("load").read_text().strip().splitlines()[-1])
        finally:
            children.close_all()
    report = analyse(out, args.top)
    report.update(
        {
            "profile": str(out.name),
            "loadavg_1m_before": load0,
            "loadavg_1m_after": os.getloadavg()[0],
            "keyledger_cores": kl_cores,
            "load_rps": load["rps"],
            "load_errors": load["errors"],
        }
    )
    return report


# -- report -------------------------------------------------------------------------------------


def render(report: Mapping[str, Any]) -> str:
    lines = [
        f"Python {report['python']}, aiohttp {report['aiohttp']}, {report['cpus']} CPUs, "
        f"uvloop; medians of {report['rounds']} runs of {report['duration_s']:g} s "
        f"(after {report['warmup_s']:g} s warm-up); 1-min load average over the rounds: "
        + " ".join(f"{v:.2f}" for v in report["loadavg_1m"]),
        "",
        f"{'candidate':<20}{'conc':>5}{'req/s':>9}{'CPU us/req':>12}{'vs aiohttp':>11}"
        f"{'upstream':>10}{'others':>8}  runs (CPU us/req)",
    ]
    current = {
        row["concurrency"]: row["cpu_us_per_request"]
        for row in report["rows"]
        if row["candidate"] == "aiohttp-current"
    }
    for row in report["rows"]:
        base = current.get(row["concurrency"])
        ratio = f"{row['cpu_us_per_request'] / base:.2f}x" if base else "-"
        runs = " ".join(f"{v:.1f}" for v in row["cpu_us_runs"])
        errors = f"  errors {row['errors']}" if row["errors"] else ""
        lines.append(
            f"{row['candidate']:<20}{row['concurrency']:>5}{row['rps']:>9.0f}"
            f"{row['cpu_us_per_request']:>12.1f}{ratio:>11}{row['upstream_cores']:>10.2f}"
            f"{row['others_cores']:>8.2f}  {runs}{errors}"
        )
    lines.append(
        "\nupstream / others: cores the stand-in store / every other process used meanwhile."
    )
    if "sigv4" in report:
        lines.append("\nSigV4 re-signing, one forward (us per call, median of 3):")
        lines += [f"  {k:<24}{v:8.2f}" for k, v in report["sigv4"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_run"]:
        inner = argparse.ArgumentParser()
        inner.add_argument("_run")
        inner.add_argument("--candidate", required=True, choices=sorted(BY_NAME))
        inner.add_argument("--url", required=True)
        inner.add_argument("--concurrency", type=int, required=True)
        inner.add_argument("--warmup", type=float, required=True)
        inner.add_argument("--duration", type=float, required=True)
        return child(inner.parse_args(argv))
    if argv[:1] == ["analyse"]:
        parser = argparse.ArgumentParser(prog="forward_clients.py analyse")
        parser.add_argument("analyse")
        parser.add_argument("file", type=Path)
        parser.add_argument("--top", type=int, default=25)
        parser.add_argument("--json", action="store_true")
        args = parser.parse_args(argv)
        report = analyse(args.file, args.top)
        print(orjson.dumps(report).decode() if args.json else render_profile(report))
        return 0
    if argv[:1] == ["profile"]:
        parser = argparse.ArgumentParser(prog="forward_clients.py profile")
        parser.add_argument("profile")
        parser.add_argument("--duration", type=int, default=20, help="seconds sampled")
        parser.add_argument("--warmup", type=float, default=3.0)
        parser.add_argument("--concurrency", type=int, default=64)
        parser.add_argument("--rate", type=float, default=0.0, help="load.py --rate (0: closed)")
        parser.add_argument("--sample-rate", type=int, default=250)
        parser.add_argument("--log-level", default="info", choices=("info", "warning"))
        parser.add_argument("--out", default="forward-profile.folded")
        parser.add_argument(
            "--cache", action="store_true", help="cache the bench's secrets: profile hits"
        )
        parser.add_argument("--top", type=int, default=25)
        parser.add_argument("--json", action="store_true")
        args = parser.parse_args(argv)
        report = profile(args)
        if args.json:
            print(orjson.dumps(report).decode())
        else:
            print(
                f"keyledger {report['keyledger_cores']:.2f} cores busy, "
                f"{report['load_rps']:.0f} req/s, errors {report['load_errors']}; 1-min load "
                f"{report['loadavg_1m_before']:.2f} -> {report['loadavg_1m_after']:.2f}; "
                f"raw profile in {report['profile']}\n"
            )
            print(render_profile(report))
        return 0

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    parser.add_argument("--list", action="store_true", help="name the candidates and exit")
    parser.add_argument("--sigv4-calls", type=int, default=20000)
    parser.add_argument("--no-sigv4", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        for c in CANDIDATES:
            note = "" if available(c) else f"  (needs {c.needs}: not installed)"
            print(f"{c.name:<20}{c.about}{note}")
        return 0
    if args.quick:
        args.rounds, args.warmup, args.duration = 1, 0.5, 2.0
    wanted = [n for n in args.only.split(",") if n] or [c.name for c in CANDIDATES]
    unknown = [n for n in wanted if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown candidates {unknown}; --list names them")
    names = [n for n in wanted if available(BY_NAME[n])]
    for skipped in set(wanted) - set(names):
        print(f"skipping {skipped}: {BY_NAME[skipped].needs} is not installed", file=sys.stderr)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    report = run_matrix(
        names, concurrencies, rounds=args.rounds, warmup_s=args.warmup, duration_s=args.duration
    )
    if not args.no_sigv4:
        report["sigv4"] = sigv4_costs(args.sigv4_calls)
    print(orjson.dumps(report).decode() if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
