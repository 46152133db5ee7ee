"""Fuzz a live keyledger: generated and mutated requests, per wire protocol served.

    .venv/bin/python bench/fuzz.py [--requests 100000] [--seed 1] [--concurrency 32]
                                   [--protocols aws-json,gcp-rest,gcp-grpc,azure]
                                   [--findings DIR] [--json]

One ``keyledger serve --config`` process, in a folder of its own, serves all of its wire
protocols on 127.0.0.1: AWS Secrets Manager's JSON protocol in front of bench/upstream.py
(a fast stand-in for the store), Google Secret Manager's REST (/v1/) and gRPC (a port of
its own) in front of the Google stand-in, and Azure Key Vault's REST (/secrets/...) in front
of the Key Vault stand-in (both started as the cloud benchmarks start them, by
bench/gcp_overhead.py and bench/azure_overhead.py with ``--role standin``). The journal is
durable (fsync), the request body limit 1 MiB (keyledger's default) and the body read
timeout 2 s (so that a body that never comes is answered soon). One identity holds a SigV4
key and a bearer token; its policy lets it read the stand-ins' secrets, write a few
``fuzz-*`` ones and nothing else.

``--requests`` cases per protocol (bench/fuzz_cases.py: valid calls and mutations of
them) go over ``--concurrency`` raw sockets (HTTP) or gRPC calls, one protocol after the
other. Afterwards, and exit status 1 if any fails:

- keyledger is still running, answers a valid call on every protocol, and stops cleanly;
- its memory stayed bounded: RSS (VmRSS in /proc) sampled every 0.2 s, reported at the
  start, peak and end of each protocol, must never exceed the RSS at the start of the run
  by more than ``--rss-growth-mib``;
- no 500 the code did not mean: one that is not in a protocol's shape (aiohttp's own
  page, a handler that raised), or the gateway's catch-all for a bug of ours ("keyledger
  failed to process the request", logged as request_failed with a traceback), or over
  gRPC an INTERNAL or UNKNOWN without keyledger's request id;
- no request hung: every request, or what was sent of it, is answered or its connection
  closed within 15 s (keyledger's body read timeout is 2 s here), a request head that
  never ends included;
- every answer keyledger gave is in the journal: by its request id (x-amzn-RequestId,
  x-ms-request-id, gRPC's x-request-id), or, for Google's REST answers, which carry none,
  by the User-Agent every fuzzed request is tagged with; or it refused the caller's
  credentials and is one of a flood, which keyledger records in aggregate (past the first
  ten failures a minute from one source for one reason: one ``auth_failure`` event per
  window, with ``detail.count``): once keyledger has stopped, the aggregate events must
  count at least as many failures as were answered without an event of their own (the
  "aggregated" column; "answered" counts them too). Key Vault's authentication
  challenge (401 to a request without credentials) is not an audit event by design and
  is counted apart; so are answers aiohttp gives before keyledger sees a request (its HTTP
  parser's 400s, a CONNECT's 404, an Expect it does not know: text/plain, no request id),
  connections closed without an answer (and how many of those keyledger recorded all the
  same), and gRPC's own refusals. The journal must verify intact (``keyledger audit
  verify``).

The request that caused each violation is printed (its first bytes) and, with
``--findings DIR``, written there whole, as a reproducer: ``nc 127.0.0.1 PORT < file``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cloud_bench import create_token
from fuzz_cases import (
    GCP_PROJECT,
    AwsCases,
    AzureCases,
    Case,
    Credentials,
    GcpRestCases,
    GrpcCase,
    GrpcCases,
    HttpCases,
    write,
)
from proxy_overhead import (
    BENCH,
    HOST,
    PYTHON,
    BenchError,
    Children,
    clean_env,
    create_identity,
    free_ports,
    port_open,
    verify_journal,
)

__all__ = ["main"]

PROTOCOLS = ("aws-json", "gcp-rest", "gcp-grpc", "azure")
MAX_BODY = 1 << 20  # keyledger's default limits.max_body_bytes
READ_TIMEOUT_S = 2.0  # limits.request_timeout_s here
ANSWER_TIMEOUT_S = 15.0  # no answer within this: the request hung
GCP_REAL_PROJECT = "bench-project"  # bench/gcp_overhead.py's stand-in project
AZURE_VAULT = "bench"  # as bench/azure_overhead.py's config names its stand-in
CATCH_ALL = b"keyledger failed to process the request"  # pipeline.Gateway.handle's bug answer
GCP_CONTENT_TYPE = "application/json; charset=UTF-8"  # keyledger's Google REST answers
REPRODUCERS_PER_KIND = 3

POLICY = f"""\
version: 1
roles:
  - id: fuzz
    rules:
      - id: fuzz-read
        actions: [read, describe, list]
        resources: ["aws:bench/*", "gcp:{GCP_PROJECT}/*", "azure:{AZURE_VAULT}/*"]
      - id: fuzz-write
        actions: [write]
        resources: ["aws:fuzz/*", "gcp:{GCP_PROJECT}/fuzz-*", "azure:{AZURE_VAULT}/fuzz-*"]
      - id: fuzz-not-the-token
        effect: deny
        actions: ["*"]
        resources: ["aws:bench/api/*"]
bindings:
  - role: fuzz
    principals: [bench]
"""


# -- the processes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ports:
    keyledger: int
    grpc: int
    upstream: int
    gcp_rest: int
    gcp_grpc: int
    azure: int


def write_config(workdir: Path, ports: Ports, ca_file: Path) -> Path:
    """keyledger's config: all three clouds' stand-ins, the durable journal, a short body
    read timeout, warnings only on stderr (so that what is there stands out)."""
    config = workdir / "keyledger.yaml"
    config.write_text(
        f"""\
listen: {HOST}:{ports.keyledger}
identities:
  path: identities.json
  key_env: KEYLEDGER_IDENTITY_KEY
policies: [policies/]
backends:
  aws:
    type: aws
    region: us-east-1
    endpoint_url: http://{HOST}:{ports.upstream}
  gcp:
    type: gcp
    endpoint: "{HOST}:{ports.gcp_grpc}"
    projects: {{{GCP_PROJECT}: {GCP_REAL_PROJECT}}}
    credentials: anonymous
  azure:
    type: azure
    credentials: standin
    ca_file: "{ca_file}"
    vaults: {{{AZURE_VAULT}: {{url: "https://{HOST}:{ports.azure}", default: true}}}}
frontends:
  aws: {{backend: aws}}
  gcp: {{grpc_listen: "{HOST}:{ports.grpc}"}}
audit:
  journal: audit
  chain_id: fuzz
  fsync: true
  fingerprint_key_env: KEYLEDGER_FINGERPRINT_KEY
  checkpoints: {{key_file: checkpoint.key}}
admin: {{listen: "{HOST}:0"}}
limits:
  max_body_bytes: {MAX_BODY}
  request_timeout_s: {READ_TIMEOUT_S:g}
  flood_delay_s: 0  # most fuzzed calls fail to sign in: answered at once, not held as a flood
logging: {{format: json, level: warning}}
""",
        encoding="utf-8",
    )
    (workdir / "policies").mkdir()
    (workdir / "policies" / "fuzz.yaml").write_text(POLICY, encoding="utf-8")
    return config


@dataclass
class Served:
    """keyledger and its stand-ins, running."""

    children: Children
    ports: Ports
    credentials: Credentials
    journal: Path
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return self.children.procs["keyledger"].pid

    def alive(self) -> bool:
        return self.children.procs["keyledger"].poll() is None


@contextlib.contextmanager
def serving(workdir: Path) -> Iterator[Served]:
    from cryptography.fernet import Fernet

    from keyledger.devtls import ensure_dev_tls
    from keyledger.proxy.audit.checkpoints import generate_key_pair

    tls = ensure_dev_tls(workdir / "tls")
    ports = Ports(*free_ports(6))
    config = write_config(workdir, ports, tls.ca_cert)
    generate_key_pair(workdir / "checkpoint")
    base_env = clean_env()
    env = clean_env(
        # keyledger's own credentials towards the store (bench/upstream.py checks none).
        AWS_ACCESS_KEY_ID="AKIAFUZZUPSTREAM0000",
        AWS_SECRET_ACCESS_KEY="fuzz-upstream-secret-not-checked",
        KEYLEDGER_IDENTITY_KEY=Fernet.generate_key().decode(),
        KEYLEDGER_FINGERPRINT_KEY=secrets.token_hex(32),
        KEYLEDGER_ADMIN_TOKEN=secrets.token_hex(24),
    )
    key_id, secret = create_identity(config, env)
    token = create_token(config, env)
    children = Children(workdir)
    try:
        children.start(
            "upstream",
            [PYTHON, str(BENCH / "upstream.py"), "--port", str(ports.upstream)],
            base_env,
        )
        children.start(
            "gcp",
            [PYTHON, str(BENCH / "gcp_overhead.py"), "--role", "standin",
             "--rest-port", str(ports.gcp_rest), "--grpc-port", str(ports.gcp_grpc)],
            base_env,
        )  # fmt: skip
        children.start(
            "azure",
            [PYTHON, str(BENCH / "azure_overhead.py"), "--role", "standin",
             "--port", str(ports.azure), "--cert", str(tls.cert), "--key", str(tls.key)],
            base_env,
        )  # fmt: skip
        for name in ("upstream", "gcp", "azure"):
            children.wait_ready(name, children.printed_ready(name), timeout_s=60)
        argv = [PYTHON, "-m", "keyledger", "serve", "--config", str(config)]
        children.start("keyledger", argv, env)
        children.wait_ready(
            "keyledger",
            lambda: port_open(ports.keyledger) and port_open(ports.grpc),
            timeout_s=60,
        )
        yield Served(children, ports, Credentials(key_id, secret, token), workdir / "audit", env)
    finally:
        children.close_all()


def rss_of(status: Path) -> int:
    """VmRSS in bytes, from a process's /proc/PID/status; 0 once the process is gone."""
    try:
        text = status.read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) * 1024 if found else 0


class RssSampler:
    """keyledger's resident memory (VmRSS), sampled every 0.2 s in a thread of its own."""

    def __init__(self, pid: int) -> None:
        self._path = Path(f"/proc/{pid}/status")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._since: list[int] = []
        self.first = self.read()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def read(self) -> int:
        return rss_of(self._path)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            value = self.read()
            with self._lock:
                self._since.append(value)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def window(self) -> list[int]:
        """The samples since the last call (and one read now)."""
        with self._lock:
            taken, self._since = self._since, []
        return [*taken, self.read()]


# -- what came back --------------------------------------------------------------------------


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Finding:
    what: str
    kind: str
    detail: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Expected:
    request_id: str | None
    tag: str
    kind: str
    auth_failure: bool
    data: bytes


@dataclass
class Tally:
    """One protocol's run: what was sent and what came back."""

    protocol: str
    status: Path  # keyledger's /proc/PID/status
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    answered: int = 0  # answers keyledger gave (protocol-shaped)
    challenges: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # before keyledger saw a request
    unanswered: Counter[str] = field(default_factory=Counter)  # closed, or hung
    # Answers to find in the journal: their request id (or None), tag, kind, whether they
    # refused the caller's credentials (which may be folded into an aggregate event), and
    # the request's first bytes.
    expected: list[Expected] = field(default_factory=list)
    # Those whose event is not in the journal on its own: sign-in failures, to be counted
    # in the aggregate events of a flood once keyledger has written them (at shutdown).
    folded: list[Expected] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    samples: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    unjournaled: int = 0
    # Connections closed without an answer: their tags, and how many are in the journal
    # all the same (keyledger read the request, the caller was gone when it answered).
    closed_tags: list[str] = field(default_factory=list)
    closed_journaled: int = 0
    cpu_keyledger_s: float = 0.0
    cpu_fuzzer_s: float = 0.0
    unmeant_500: int = 0
    hung: int = 0
    rss: tuple[int, int, int] = (0, 0, 0)  # start, peak, end
    rss_trend: list[int] = field(default_factory=list)  # every 20,000 requests

    def sample(self, what: str, kind: str, body: bytes, data: bytes) -> None:
        """An example of an answer that is not a violation, for the report."""
        key = (what, kind)
        if key not in self.samples and len(self.samples) < 200:
            self.samples[key] = (body.decode(errors="replace"), data[:1000])

    def find(self, what: str, kind: str, detail: str, data: bytes) -> None:
        if sum(1 for f in self.findings if (f.what, f.kind) == (what, kind)) < REPRODUCERS_PER_KIND:
            self.findings.append(Finding(what, kind, detail, data))


# What each HTTP protocol answers a refused sign-in with (AWS's error codes for every
# authentication ErrorKind; Google's UNAUTHENTICATED and Key Vault's Unauthorized are 401).
AWS_AUTH_CODES = frozenset(
    {
        "MissingAuthenticationTokenException",
        "IncompleteSignatureException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "InvalidIdentityTokenException",
    }
)


def auth_failure(answer: Answer) -> bool:
    if "x-amzn-errortype" in answer.headers:
        return answer.headers["x-amzn-errortype"] in AWS_AUTH_CODES
    return answer.status == 401


def request_id(headers: dict[str, str]) -> str | None:
    return headers.get("x-amzn-requestid") or headers.get("x-ms-request-id")


def sends_credentials(data: bytes) -> bool:
    """The request's first Authorization header has a value (what keyledger reads)."""
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            return bool(value.strip())
    return False


def judge(tally: Tally, case: Case, answer: Answer, *, tag: str) -> None:
    """Count one HTTP answer, and hold it against the rules."""
    tally.statuses[str(answer.status)] += 1
    tally.by_kind[case.kind][str(answer.status)] += 1
    rid = request_id(answer.headers)
    ours = rid is not None or answer.headers.get("content-type") == GCP_CONTENT_TYPE
    challenge = rid is None and answer.status == 401 and "www-authenticate" in answer.headers
    if challenge and sends_credentials(case.data):
        # Only a request without credentials gets the (unaudited) challenge.
        tally.unjournaled += 1
        tally.find("unjournaled", case.kind, "a challenge to a request with credentials", case.data)
    elif challenge:
        tally.challenges += 1
    elif ours:
        tally.answered += 1
        refused = auth_failure(answer)
        tally.expected.append(Expected(rid, tag, case.kind, refused, case.data[:2048]))
    else:
        tally.refused[str(answer.status)] += 1
        tally.sample(f"refused {answer.status}", case.kind, answer.body[:200], case.data)
    if answer.status >= 500 and (not (ours or challenge) or CATCH_ALL in answer.body):
        tally.unmeant_500 += 1
        tally.find("unmeant 500", case.kind, answer.body[:300].decode(errors="replace"), case.data)


def progress(tally: Tally) -> None:
    """Every 20,000 requests: a line on stderr, and keyledger's RSS then (for the trend)."""
    if tally.requests % 20_000 == 0:
        rss = rss_of(tally.status)
        tally.rss_trend.append(rss)
        print(
            f"  {tally.protocol}: {tally.requests:,} sent, keyledger RSS {mib(rss)}",
            file=sys.stderr,
            flush=True,
        )


# -- HTTP -------------------------------------------------------------------------------------


async def read_answer(reader: asyncio.StreamReader, *, head: bool) -> Answer:
    while True:
        block = await reader.readuntil(b"\r\n\r\n")
        lines = block[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if status != 100:
            break
    if head or status in (204, 304):
        return Answer(status, headers, b"")
    if "content-length" in headers:
        return Answer(status, headers, await reader.readexactly(int(headers["content-length"])))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
        return Answer(status, headers, body)
    return Answer(status, headers, await reader.read())


class HttpRun:
    """``count`` cases from ``cases`` over ``concurrency`` connections of their own."""

    def __init__(self, cases: HttpCases, port: int, tally: Tally, count: int) -> None:
        self.cases = cases
        self.port = port
        self.tally = tally
        self.count = count
        self.next = 0

    async def run(self, concurrency: int) -> None:
        await asyncio.gather(*(self.worker() for _ in range(concurrency)))

    async def worker(self) -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while self.next < self.count:
            n, self.next = self.next, self.next + 1
            case = self.cases.case(n)
            self.tally.requests += 1
            progress(self.tally)
            if connection is None:
                connection = await asyncio.open_connection(HOST, self.port, limit=1 << 22)
            keep = await self.one(case, *connection)
            if not keep:
                connection[1].close()
                with contextlib.suppress(OSError):
                    await connection[1].wait_closed()
                connection = None
        if connection is not None:
            connection[1].close()

    async def one(
        self, case: Case, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Send one case, read its answers; whether the connection may be used again."""
        tally = self.tally
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                with contextlib.suppress(OSError):  # an early answer may close it while we write
                    writer.write(case.data)
                    await writer.drain()
                    if case.then == "shut" and writer.can_write_eof():
                        writer.write_eof()
                answers = []
                for number in range(case.answers):
                    tag = case.tag if number == 0 else case.tag + "b"
                    answer = await read_answer(reader, head=case.head)
                    answers.append(answer)
                    judge(tally, case, answer, tag=tag)
        except TimeoutError:
            tally.unanswered["hung"] += 1
            tally.statuses["hung"] += 1
            tally.by_kind[case.kind]["hung"] += 1
            tally.hung += 1
            tally.find("hung", case.kind, f"no answer within {ANSWER_TIMEOUT_S:g} s", case.data)
            return False
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            tally.closed_tags.append(case.tag)
            tally.unanswered["closed"] += 1
            tally.statuses["closed"] += 1
            tally.by_kind[case.kind]["closed"] += 1
            return False
        closing = any(a.headers.get("connection", "").lower() == "close" for a in answers)
        return case.reuse and case.then == "read" and not closing


# -- gRPC -------------------------------------------------------------------------------------


class GrpcRun:
    """``count`` calls from ``cases`` on one channel, ``concurrency`` at a time."""

    def __init__(self, cases: GrpcCases, port: int, tally: Tally, count: int) -> None:
        self.cases = cases
        self.target = f"{HOST}:{port}"
        self.tally = tally
        self.count = count
        self.next = 0

    async def run(self, concurrency: int) -> None:
        import grpc

        options = [
            ("grpc.enable_http_proxy", 0),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
        ]
        async with grpc.aio.insecure_channel(self.target, options=options) as channel:
            methods: dict[str, Any] = {}

            async def worker() -> None:
                while self.next < self.count:
                    n, self.next = self.next, self.next + 1
                    case = self.cases.case(n)
                    if case.method not in methods:
                        methods[case.method] = channel.unary_unary(case.method)
                    await self.one(case, methods[case.method])

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def one(self, case: GrpcCase, method: Any) -> None:
        import grpc

        tally = self.tally
        tally.requests += 1
        progress(tally)
        try:
            call = method(case.body, metadata=case.metadata, timeout=ANSWER_TIMEOUT_S)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call
            code = await call.code()
            details = await call.details() or ""
            metadata = dict(await call.initial_metadata() or ())
        except (ValueError, TypeError, grpc.aio.UsageError) as exc:
            tally.unanswered[f"client-refused:{type(exc).__name__}"] += 1
            tally.statuses["client-refused"] += 1
            tally.by_kind[case.kind]["client-refused"] += 1
            return
        name = code.name
        tally.statuses[name] += 1
        tally.by_kind[case.kind][name] += 1
        rid = metadata.get("x-request-id")
        if code is grpc.StatusCode.DEADLINE_EXCEEDED and rid is None:
            tally.hung += 1
            tally.unanswered["hung"] += 1
            tally.find("hung", case.kind, details, _grpc_repro(case))
            return
        if isinstance(rid, str):
            tally.answered += 1
            refused = code is grpc.StatusCode.UNAUTHENTICATED
            tally.expected.append(Expected(rid, "", case.kind, refused, _grpc_repro(case)[:2048]))
        else:
            tally.refused[name] += 1
        unmeant = code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and (
            rid is None or CATCH_ALL.decode() in details
        )
        if unmeant:
            tally.unmeant_500 += 1
            tally.find("unmeant 500", case.kind, f"{name}: {details[:300]}", _grpc_repro(case))


def _grpc_repro(case: GrpcCase) -> bytes:
    """A gRPC call, written down: method, metadata, then the message's bytes (hex)."""
    metadata = ", ".join(f"{k}={v!r}" for k, v in case.metadata)
    return f"{case.method}\n{metadata}\n{case.body.hex()}\n".encode()


# -- the journal -----------------------------------------------------------------------------


@dataclass(slots=True)
class JournalIndex:
    """What the journal holds, for finding answers in it."""

    ids: set[str] = field(default_factory=set)  # request ids of events
    tags: set[str] = field(default_factory=set)  # the fuzz User-Agents of events
    aggregates: int = 0  # auth_failure events that stand for a flood
    aggregated: int = 0  # the sign-in failures they count
    ends: set[str] = field(default_factory=set)  # their first and last request ids


def journal_index(journal: Path) -> JournalIndex:
    from keyledger.proxy.audit.segments import discover

    index = JournalIndex()
    for segment in discover(journal).all_segments():
        with segment.path.open("rb") as handle:
            for line in handle:
                event = orjson.loads(line)
                request = event.get("request")
                if not request:
                    continue
                detail = event.get("detail") or {}
                if detail.get("aggregate"):
                    index.aggregates += 1
                    index.aggregated += int(detail.get("count", 0))
                    index.ends.update((detail["first_request_id"], detail["last_request_id"]))
                    continue
                index.ids.add(request["id"])
                agent = request.get("user_agent")
                if agent and agent.startswith("keyledger-fuzz/"):
                    index.tags.add(agent)
    return index


def check_journal(tally: Tally, journal: Path) -> None:
    """Every answer keyledger gave has its own event (by request id, else by tag), or is a
    refused sign-in, which a flood's aggregate event may stand for (:func:`check_folded`)."""
    index = journal_index(journal)
    for answer in tally.expected:
        if answer.request_id is not None:
            recorded = answer.request_id in index.ids
        else:
            recorded = answer.tag in index.tags
        if recorded:
            continue
        if answer.auth_failure:
            tally.folded.append(answer)
            continue
        tally.unjournaled += 1
        detail = f"request id {answer.request_id}, tag {answer.tag}"
        tally.find("unjournaled", answer.kind, detail, answer.data)
    tally.expected.clear()


@dataclass(frozen=True, slots=True)
class Folding:
    """Refused sign-ins without an event of their own, against the aggregate events."""

    answers: int  # answered as refused, without an event of their own
    aggregates: int
    aggregated: int  # failures the aggregates count (answered or not: >= answers)
    ends_seen: int  # aggregates' first/last request ids that are answers we hold


def check_folded(tallies: list[Tally], journal: Path) -> Folding:
    """Once keyledger has stopped (and written every aggregate): the aggregates count at
    least as many failures as were answered without an event of their own; the rest of
    those answers, if any, are unjournaled. And how many requests left without an answer
    keyledger recorded all the same (it read them; the caller had gone)."""
    index = journal_index(journal)
    answers = sum(len(t.folded) for t in tallies)
    held = {a.request_id for t in tallies for a in t.folded if a.request_id}
    missing = max(0, answers - index.aggregated)
    for tally in tallies:
        tally.closed_journaled = sum(1 for tag in tally.closed_tags if tag in index.tags)
        share = min(missing, len(tally.folded))
        if share:
            tally.unjournaled += share
            for answer in tally.folded[:REPRODUCERS_PER_KIND]:
                tally.find("unjournaled", answer.kind, "more refusals than aggregated", answer.data)
        missing -= share
    return Folding(answers, index.aggregates, index.aggregated, len(index.ends & held))


# -- the run ----------------------------------------------------------------------------------


def http_cases(protocol: str, seed: int, served: Served) -> HttpCases:
    rng = random.Random(f"{seed}/{protocol}")
    host = f"{HOST}:{served.ports.keyledger}"
    token = served.credentials.token
    if protocol == "aws-json":
        return AwsCases(rng, host=host, max_body=MAX_BODY, credentials=served.credentials)
    if protocol == "gcp-rest":
        return GcpRestCases(rng, host=host, max_body=MAX_BODY, token=token)
    return AzureCases(rng, host=host, max_body=MAX_BODY, token=token)


def fuzz(served: Served, protocol: str, *, count: int, seed: int, concurrency: int) -> Tally:
    tally = Tally(protocol, Path(f"/proc/{served.pid}/status"))
    started = time.monotonic()
    cpu = served.children.cpu_s("keyledger"), time.process_time()
    if protocol == "gcp-grpc":
        cases = GrpcCases(
            random.Random(f"{seed}/{protocol}"), token=served.credentials.token, max_body=MAX_BODY
        )
        asyncio.run(GrpcRun(cases, served.ports.grpc, tally, count).run(concurrency))
    else:
        http = HttpRun(http_cases(protocol, seed, served), served.ports.keyledger, tally, count)
        asyncio.run(http.run(concurrency))
    tally.seconds = time.monotonic() - started
    tally.cpu_keyledger_s = served.children.cpu_s("keyledger") - cpu[0]
    tally.cpu_fuzzer_s = time.process_time() - cpu[1]
    return tally


def still_serving(served: Served) -> list[str]:
    """A valid call on every protocol, after the run: what did not answer 200."""
    import grpc
    from google.cloud.secretmanager_v1.types import service

    failed = []
    rng = random.Random(0)
    host = f"{HOST}:{served.ports.keyledger}"
    credentials = served.credentials

    async def http(data: bytes) -> int:
        reader, writer = await asyncio.open_connection(HOST, served.ports.keyledger)
        writer.write(data)
        answer = await asyncio.wait_for(read_answer(reader, head=False), ANSWER_TIMEOUT_S)
        writer.close()
        return answer.status

    aws = AwsCases(rng, host=host, max_body=MAX_BODY, credentials=credentials)
    read = aws.sign(aws.call("GetSecretValue", {"SecretId": "bench/db/password"}))
    gcp = GcpRestCases(rng, host=host, max_body=MAX_BODY, token=credentials.token)
    access = gcp.authorized(
        "GET", f"/v1/projects/{GCP_PROJECT}/secrets/bench-db-password/versions/latest:access"
    )
    azure = AzureCases(rng, host=host, max_body=MAX_BODY, token=credentials.token)
    get = azure.authorized("GET", "/secrets/bench-db-password?api-version=7.5")
    for name, request in (("aws-json", read), ("gcp-rest", access), ("azure", get)):
        status = asyncio.run(http(write(request, f"keyledger-fuzz/{name}/after")[0]))
        if status != 200:
            failed.append(f"{name}: {status}")
    with grpc.insecure_channel(
        f"{HOST}:{served.ports.grpc}", options=[("grpc.enable_http_proxy", 0)]
    ) as channel:
        message = service.AccessSecretVersionRequest(
            name=f"projects/{GCP_PROJECT}/secrets/bench-db-password/versions/latest"
        )
        call = channel.unary_unary(
            "/google.cloud.secretmanager.v1.SecretManagerService/AccessSecretVersion"
        )
        try:
            call(
                service.AccessSecretVersionRequest.serialize(message),
                metadata=(("authorization", f"Bearer {credentials.token}"),),
                timeout=ANSWER_TIMEOUT_S,
            )
        except grpc.RpcError as exc:
            failed.append(f"gcp-grpc: {exc.code().name}")
    return failed


def logged_errors(stderr: Path) -> Counter[str]:
    """keyledger's error lines, by event and the exception's last line."""
    found: Counter[str] = Counter()
    with stderr.open("rb") as handle:
        for line in handle:
            if b'"level":"error"' not in line and b'"level":"critical"' not in line:
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                found[line[:120].decode(errors="replace")] += 1
                continue
            exception = str(record.get("exception", "")).strip().splitlines()
            last = exception[-1] if exception else ""
            # One line per kind of error: positions and the bytes themselves vary.
            last = re.sub(r"'[^']*' in position \d+|characters? in position [\d-]+", "...", last)
            found[f"{record.get('event')}: {last}"[:200]] += 1
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise BenchError(
            f"--protocols: unknown {', '.join(unknown)} (known: {', '.join(PROTOCOLS)})"
        )
    findings_dir = Path(args.findings) if args.findings else None
    tallies: list[Tally] = []
    with tempfile.TemporaryDirectory(prefix="keyledger-fuzz-") as tmp, serving(Path(tmp)) as served:
        print(f"keyledger pid {served.pid} on {HOST}:{served.ports.keyledger} (gRPC "
              f"{served.ports.grpc}); {args.requests:,} requests per protocol, seed "
              f"{args.seed}, concurrency {args.concurrency}", file=sys.stderr)  # fmt: skip
        with RssSampler(served.pid) as rss:
            first = rss.first
            for protocol in protocols:
                rss.window()
                start = rss.read()
                tally = fuzz(
                    served,
                    protocol,
                    count=args.requests,
                    seed=args.seed,
                    concurrency=args.concurrency,
                )
                samples = rss.window()
                tally.rss = (start, max(samples), samples[-1])
                check_journal(tally, served.journal)
                tallies.append(tally)
                print(render_row(tally), file=sys.stderr)
                if not served.alive():
                    break
        alive = served.alive()
        failed_after = still_serving(served) if alive else ["keyledger is not running"]
        exit_code = served.children.stop("keyledger", signal.SIGTERM, timeout_s=60)
        folding = check_folded(tallies, served.journal)
        errors = logged_errors(served.children.err("keyledger"))
        verified = verify_journal(served.journal, served.env)
        peak = max((t.rss[1] for t in tallies), default=first)
        if findings_dir is not None:
            write_findings(findings_dir, tallies)
    growth = peak - first
    return {
        "protocols": [summary(t) for t in tallies],
        "rss_first": first,
        "rss_peak": peak,
        "rss_growth_limit": args.rss_growth_mib << 20,
        "rss_bounded": growth <= args.rss_growth_mib << 20,
        "alive_after": alive,
        "answers_after": failed_after,
        "exit_code": exit_code,
        "logged_errors": dict(errors),
        "journal_intact": verified.intact,
        "journal_events": verified.events,
        "journal_output": None if verified.intact else verified.output,
        "refusals_folded": folding.answers,
        "aggregate_events": folding.aggregates,
        "aggregated_failures": folding.aggregated,
        "aggregate_ends_answered": folding.ends_seen,
    }


def summary(tally: Tally) -> dict[str, Any]:
    return {
        "protocol": tally.protocol,
        "requests": tally.requests,
        "seconds": round(tally.seconds, 1),
        "rps": round(tally.requests / tally.seconds, 1) if tally.seconds else 0.0,
        "statuses": dict(tally.statuses.most_common()),
        "by_kind": {k: dict(v.most_common()) for k, v in sorted(tally.by_kind.items())},
        "answered": tally.answered,
        "challenges": tally.challenges,
        "refused_before_keyledger": dict(tally.refused),
        "unanswered": dict(tally.unanswered),
        "closed_but_journaled": tally.closed_journaled,
        "cpu_keyledger_s": round(tally.cpu_keyledger_s, 1),
        "cpu_fuzzer_s": round(tally.cpu_fuzzer_s, 1),
        "unjournaled": tally.unjournaled,
        "in_an_aggregate": len(tally.folded),
        "unmeant_500": tally.unmeant_500,
        "hung": tally.hung,
        "rss_start": tally.rss[0],
        "rss_peak": tally.rss[1],
        "rss_end": tally.rss[2],
        "rss_every_20000": tally.rss_trend,
        "samples": [
            {"what": what, "kind": kind, "answer": answer, "request": repr(data[:300])}
            for (what, kind), (answer, data) in sorted(tally.samples.items())
        ],
        "findings": [
            {"what": f.what, "kind": f.kind, "detail": f.detail, "request": repr(f.data[:300])}
            for f in tally.findings
        ],
    }


def write_findings(folder: Path, tallies: list[Tally]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for tally in tallies:
        for number, finding in enumerate(tally.findings):
            name = f"{tally.protocol}-{finding.what.replace(' ', '-')}-{finding.kind}-{number}.bin"
            (folder / name).write_bytes(finding.data)


def mib(value: int) -> str:
    return f"{value / (1 << 20):.0f} MiB"


def render_row(tally: Tally) -> str:
    statuses = ", ".join(f"{k} x{v:,}" for k, v in tally.statuses.most_common())
    return (
        f"{tally.protocol}: {tally.requests:,} requests in {tally.seconds:.0f} s "
        f"({tally.requests / tally.seconds if tally.seconds else 0:,.0f}/s); {statuses}"
    )


def render(report: dict[str, Any]) -> str:
    lines = ["", "keyledger under fuzzing", ""]
    header = (
        f"{'protocol':<9} {'requests':>9} {'req/s':>5} {'answered':>9} {'aggregated':>10} "
        f"{'challenge':>9} {'refused':>7} {'no answer':>9} {'unjournaled':>11} "
        f"{'unmeant 500':>11} {'RSS start / peak / end':>24}"
    )
    lines += [header, "-" * len(header)]
    for p in report["protocols"]:
        rss = f"{mib(p['rss_start'])} / {mib(p['rss_peak'])} / {mib(p['rss_end'])}"
        lines.append(
            f"{p['protocol']:<9} {p['requests']:>9,} {p['rps']:>5,.0f} {p['answered']:>9,} "
            f"{p['in_an_aggregate']:>10,} {p['challenges']:>9,} "
            f"{sum(p['refused_before_keyledger'].values()):>7,} "
            f"{sum(p['unanswered'].values()):>9,} {p['unjournaled']:>11,} "
            f"{p['unmeant_500']:>11,} {rss:>24}"
        )
    lines.append("")
    for p in report["protocols"]:
        statuses = ", ".join(f"{k}: {v:,}" for k, v in p["statuses"].items())
        lines.append(f"{p['protocol']} answers by status: {statuses}")
        if p["refused_before_keyledger"]:
            refused = ", ".join(f"{k}: {v:,}" for k, v in p["refused_before_keyledger"].items())
            lines.append(f"  refused before keyledger saw a request (no request id): {refused}")
        if p["unanswered"]:
            lines.append(
                "  no answer: "
                + ", ".join(f"{k}: {v:,}" for k, v in p["unanswered"].items())
                + f" (of the closed, {p['closed_but_journaled']:,} are in the journal: "
                "keyledger read the request, the caller had gone)"
            )
        lines.append(
            f"  CPU: keyledger {p['cpu_keyledger_s']:.0f} s, this fuzzer {p['cpu_fuzzer_s']:.0f} s "
            f"in {p['seconds']:.0f} s"
        )
    lines.append("")
    lines.append(
        f"RSS: {mib(report['rss_first'])} at the start, peak {mib(report['rss_peak'])} "
        f"(limit: start + {mib(report['rss_growth_limit'])}): "
        + ("bounded" if report["rss_bounded"] else "NOT BOUNDED")
    )
    lines.append(
        f"keyledger after the run: {'running' if report['alive_after'] else 'NOT RUNNING'}, "
        + (
            "answering every protocol"
            if not report["answers_after"]
            else "NOT ANSWERING " + "; ".join(report["answers_after"])
        )
        + f"; exit code {report['exit_code']} on SIGTERM"
    )
    lines.append(
        f"refused sign-ins answered without an event of their own: "
        f"{report['refusals_folded']:,}; the journal's {report['aggregate_events']:,} aggregate "
        f"events count {report['aggregated_failures']:,} failures (a flood's, past the first "
        f"ten a minute; those include requests whose caller left before the answer), "
        f"{report['aggregate_ends_answered']:,} of their first and last request ids are answers "
        "held here"
    )
    verdict = "intact" if report["journal_intact"] else "NOT INTACT"
    lines.append(f"journal: {verdict}, {report['journal_events']:,} events verified")
    if report["journal_output"]:
        lines.append(report["journal_output"])
    errors = report["logged_errors"]
    ours = {what: n for what, n in errors.items() if not what.startswith("Error handling request")}
    if ours:
        lines.append("keyledger's own errors (request_failed: a bug the gateway caught):")
        lines += [f"  {count:,} x {what}" for what, count in ours.items()]
    theirs = {what: n for what, n in errors.items() if what not in ours}
    if theirs:
        lines.append("aiohttp's errors, each a request it refused before keyledger saw it:")
        lines += [f"  {count:,} x {what}" for what, count in theirs.items()]
    for p in report["protocols"]:
        for sample in p["samples"]:
            if sample["what"] != "refused 400":  # the HTTP parser's: expected
                lines.append(
                    f"{p['protocol']}: {sample['what']} ({sample['kind']}), not audited: "
                    f"{sample['answer'][:80]!r}"
                )
                lines.append(f"    request: {sample['request'][:160]}")
    for p in report["protocols"]:
        for f in p["findings"]:
            lines.append(f"{p['protocol']}: {f['what']} ({f['kind']}): {f['detail'][:200]}")
            lines.append(f"    request: {f['request']}")
    lines.append("")
    lines.append("PASS" if violations(report) == [] else "FAIL: " + "; ".join(violations(report)))
    return "\n".join(lines)


def violations(report: dict[str, Any]) -> list[str]:
    found = []
    if not report["alive_after"]:
        found.append("keyledger died")
    if report["answers_after"]:
        found.append("keyledger stopped answering")
    if report["exit_code"] != 0:
        found.append(f"exit code {report['exit_code']}")
    if not report["rss_bounded"]:
        found.append("memory not bounded")
    if not report["journal_intact"]:
        found.append("journal not intact")
    for p in report["protocols"]:
        for key in ("unmeant_500", "unjournaled", "hung"):
            if p[key]:
                found.append(f"{p['protocol']}: {p[key]:,} {key.replace('_', ' ')}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000, help="per protocol")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument(
        "--rss-growth-mib",
        type=int,
        default=256,
        help="how far keyledger's RSS may rise above its start (default 256)",
    )
    parser.add_argument("--findings", help="write each violation's request to this folder")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except BenchError as exc:
        print(f"fuzz: {exc}", file=sys.stderr)
        return 2
    print(
        orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if args.json else render(report)
    )
    return 1 if violations(report) else 0


if __name__ == "__main__":
    sys.exit(main())
