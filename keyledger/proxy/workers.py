"""``keyledger serve --workers N``: N processes on one port, one supervisor in front.

Each worker is a whole ``keyledger serve`` of its own: it binds the data-plane port with
``SO_REUSEPORT`` (the kernel spreads connections across the workers), keeps its own audit
chain (``<chain_id>-w<index>``, one journal per chain in the same folder), ships it, and
serves its admin API on a Unix socket only the supervisor uses.

The supervisor starts the workers, restarts one that dies, passes SIGHUP on (policy reload)
and, on SIGTERM or SIGINT, stops them all gracefully and waits. It owns the admin port and
answers there for all workers at once:

- ``/healthz``: the supervisor runs.
- ``/readyz``: ready when every worker is; each check fails if it fails in any worker.
- ``/metrics``: every worker's metrics with a ``worker`` label, plus the supervisor's own.
- ``/v1/sinks``: every worker's sinks, each with its ``worker``.
- ``/v1/audit/stream``: every worker's stream merged (``last=N`` replays N per chain).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from keyledger.proxy.admin import (
    JOURNAL_DIR,
    STREAM_HEADERS,
    guarded_app,
    has_token,
    parse_stream_query,
    replay_frames,
)
from keyledger.proxy.audit.reader import Unseen
from keyledger.proxy.audit.segments import validate_chain_id

__all__ = ["MAX_WORKERS", "Supervisor", "WorkerFailed", "supervisor_admin_app", "worker_chain_id"]

log = structlog.get_logger("keyledger.workers")

MAX_WORKERS = 64
_START_TIMEOUT_S = 60.0
_ASK_TIMEOUT_S = 5.0  # a worker's admin answer, for /readyz, /metrics, /v1/sinks
_RESTART_MIN_S, _RESTART_MAX_S = 1.0, 30.0


class WorkerFailed(RuntimeError):
    """A worker could not start; its own log says why."""


def worker_chain_id(base: str, index: int) -> str:
    return validate_chain_id(f"{base}-w{index}")


@dataclass(slots=True)
class Worker:
    index: int
    socket: Path
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    session: aiohttp.ClientSession | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def client(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.socket)),
                timeout=aiohttp.ClientTimeout(total=None, connect=_ASK_TIMEOUT_S),
            )
        return self.session


class Supervisor:
    """Runs ``count`` workers, each ``command`` plus its index and admin socket."""

    def __init__(self, *, command: Sequence[str], count: int, token: bytes) -> None:
        self._command = tuple(command)
        self._token = token
        # Sockets live in a private folder: only this user may reach the workers' admin.
        self._folder = Path(tempfile.mkdtemp(prefix="keyledger-workers-"))
        self.workers = tuple(Worker(i, self._folder / f"w{i}.sock") for i in range(count))
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every worker and wait until each serves; WorkerFailed if one exits first."""
        for worker in self.workers:
            await self._spawn(worker)
        try:
            await asyncio.gather(*(self._wait_serving(w) for w in self.workers))
        except WorkerFailed:
            await self.stop()
            raise
        self._watchers = [
            asyncio.create_task(self._watch(w), name=f"keyledger-worker-{w.index}")
            for w in self.workers
        ]

    def forward(self, sig: signal.Signals) -> None:
        for worker in self.workers:
            if worker.running:
                assert worker.process is not None
                worker.process.send_signal(sig)

    async def stop(self, timeout_s: float = 120.0) -> bool:
        """Stop every worker gracefully; True when all exited 0."""
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        # A worker that died and waits for its restart has nothing left to stop.
        stopping = [w for w in self.workers if w.running]
        self.forward(signal.SIGTERM)
        clean = True
        for worker in stopping:
            assert worker.process is not None
            try:
                async with asyncio.timeout(timeout_s):
                    code = await worker.process.wait()
            except TimeoutError:
                log.error("worker_stop_timeout", worker=worker.index)
                worker.process.kill()
                code = await worker.process.wait()
            if code != 0:
                log.error("worker_exit", worker=worker.index, code=code)
                clean = False
        for worker in self.workers:
            if worker.session is not None:
                await worker.session.close()
        with contextlib.suppress(OSError):
            for worker in self.workers:
                worker.socket.unlink(missing_ok=True)
            self._folder.rmdir()
        return clean

    async def _spawn(self, worker: Worker) -> None:
        worker.socket.unlink(missing_ok=True)
        worker.process = await asyncio.create_subprocess_exec(
            *self._command,
            "--worker",
            str(worker.index),
            "--worker-socket",
            str(worker.socket),
            # Ctrl-C in a terminal signals the whole process group; the supervisor alone
            # decides when workers stop, so they get exactly one SIGTERM.
            start_new_session=True,
        )
        log.info("worker_started", worker=worker.index, pid=worker.process.pid)

    async def _wait_serving(self, worker: Worker) -> None:
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        while True:
            if not worker.running:
                raise WorkerFailed(f"worker {worker.index} exited while starting")
            try:
                async with worker.client().get("http://worker/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise WorkerFailed(f"worker {worker.index} did not start in {_START_TIMEOUT_S} s")
            await asyncio.sleep(0.05)

    async def _watch(self, worker: Worker) -> None:
        """Restart ``worker`` whenever it dies, backing off while it keeps dying."""
        pause = _RESTART_MIN_S
        while True:
            assert worker.process is not None
            started = asyncio.get_running_loop().time()
            code = await worker.process.wait()
            if self._stopping:
                return
            log.error("worker_died", worker=worker.index, code=code, restart_in_s=pause)
            await asyncio.sleep(pause)
            worker.restarts += 1
            await self._spawn(worker)
            lived = asyncio.get_running_loop().time() - started
            pause = _RESTART_MIN_S if lived > 60 else min(pause * 2, _RESTART_MAX_S)

    # -- asking workers ----------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.decode()}"}

    async def ask(self, worker: Worker, path: str) -> tuple[int, bytes] | None:
        """A worker's admin answer to GET ``path``; None when it does not answer."""
        if not worker.running:
            return None
        try:
            async with asyncio.timeout(_ASK_TIMEOUT_S):
                async with worker.client().get(
                    f"http://worker{path}", headers=self._auth()
                ) as response:
                    return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return None

    @contextlib.asynccontextmanager
    async def stream(self, worker: Worker, query: str) -> AsyncIterator[aiohttp.StreamReader]:
        """A worker's live audit stream (``query``: its filters), once it is subscribed."""
        async with worker.client().get(
            f"http://worker/v1/audit/stream?{query}", headers=self._auth()
        ) as response:
            if response.status != 200:
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status, message="refused"
                )
            yield response.content


# -- the supervisor's admin API --------------------------------------------------------

SUPERVISOR = web.AppKey("supervisor", Supervisor)


def supervisor_admin_app(
    supervisor: Supervisor, *, token: bytes, journal_dir: Path, open_readyz: bool
) -> web.Application:
    app = guarded_app(token, journal_dir, open_readyz=open_readyz)
    app[SUPERVISOR] = supervisor
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/v1/sinks", _sinks)
    app.router.add_get("/v1/audit/stream", _stream)
    return app


async def _readyz(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    answers = await asyncio.gather(*(supervisor.ask(w, "/readyz") for w in supervisor.workers))
    merged: dict[str, dict[str, Any]] = {}
    silent = []
    for worker, answer in zip(supervisor.workers, answers, strict=True):
        if answer is None:
            silent.append(worker.index)
            continue
        for name, check in orjson.loads(answer[1]).get("checks", {}).items():
            entry = merged.setdefault(name, {"ok": True, "detail": []})
            entry["ok"] = entry["ok"] and check.get("ok", False)
            entry["detail"].append(f"w{worker.index}: {check.get('detail', '')}")
    running = len(supervisor.workers) - len(silent)
    merged["workers"] = {
        "ok": not silent,
        "detail": [f"{running} of {len(supervisor.workers)} answer"]
        + [f"w{index} does not answer" for index in silent],
    }
    ready = all(entry["ok"] for entry in merged.values())
    authenticated = has_token(request)
    checks = {
        name: {"ok": entry["ok"], "detail": "; ".join(entry["detail"])}
        if authenticated
        else {"ok": entry["ok"]}
        for name, entry in merged.items()
    }
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


class _Relabelled(Collector):
    """Families parsed from each worker's /metrics, every sample labelled with its worker."""

    def __init__(self, supervisor: Supervisor, texts: Sequence[tuple[int, str]]) -> None:
        self._supervisor = supervisor
        self._texts = texts

    def collect(self) -> Any:
        families: dict[str, Metric] = {}
        for index, text in self._texts:
            for family in text_string_to_metric_families(text):
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(index)}
                    merged.add_sample(sample.name, labels, sample.value, sample.timestamp)
        yield from families.values()
        workers = self._supervisor.workers
        yield GaugeMetricFamily(
            "keyledger_workers_running",
            "Worker processes running",
            value=sum(w.running for w in workers),
        )
        restarts = CounterMetricFamily(
            "keyledger_worker_restarts",
            "Times a worker died and was started again",
            labels=["worker"],
        )
        for worker in workers:
            restarts.add_metric([str(worker.index)], worker.restarts)
        yield restarts


async def _metrics(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    answers = await asyncio.gather(*(supervisor.ask(w, "/metrics") for w in supervisor.workers))
    texts = [
        (worker.index, answer[1].decode())
        for worker, answer in zip(supervisor.workers, answers, strict=True)
        if answer is not None and answer[0] == 200
    ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Relabelled(supervisor, texts))
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _sinks(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR]
    answers = await asyncio.gather(*(supervisor.ask(w, "/v1/sinks") for w in supervisor.workers))
    sinks = [
        {**sink, "worker": worker.index}
        for worker, answer in zip(supervisor.workers, answers, strict=True)
        if answer is not None and answer[0] == 200
        for sink in orjson.loads(answer[1])["sinks"]
    ]
    return web.json_response({"sinks": sinks})


async def _stream(request: web.Request) -> web.StreamResponse:
    """Every worker's live stream merged into one, after a replay read from the folder.

    As in one process: subscribe first (every worker's stream is open), then replay the
    last N events of every chain in the journal folder, then pass on live events the
    replay did not already hold.
    """
    supervisor = request.app[SUPERVISOR]
    try:
        filt, replay = parse_stream_query(request.query)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    live = urlencode([(k, v) for k, v in request.query.items() if k != "last"])
    workers = [w for w in supervisor.workers if w.running]
    frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1024)
    subscribed = [asyncio.Event() for _ in workers]

    async def pump(worker: Worker, subscribed: asyncio.Event) -> None:
        try:
            async with supervisor.stream(worker, live) as content:
                subscribed.set()
                frame = b""
                async for line in content:
                    frame += line
                    if line in (b"\n", b"\r\n"):
                        await frames.put(frame)
                        frame = b""
        except aiohttp.ClientError as exc:
            log.warning("worker_stream_failed", worker=worker.index, error=str(exc))
        finally:
            subscribed.set()
            await frames.put(None)  # this worker's stream ended

    pumps = [asyncio.create_task(pump(w, s)) for w, s in zip(workers, subscribed, strict=True)]
    response = web.StreamResponse(headers=STREAM_HEADERS)
    try:
        await asyncio.gather(*(event.wait() for event in subscribed))
        await response.prepare(request)
        unseen = Unseen()
        if replay is not None:
            journal_dir = request.app[JOURNAL_DIR]
            await response.write(await replay_frames(journal_dir, replay, filt, unseen))
        while (frame := await frames.get()) is not None:  # None: a worker stopped; end
            if frame.startswith(b"id: "):
                chain, _, seq = frame[4 : frame.index(b"\n")].decode().rpartition(":")
                if seq.isdigit() and not unseen({"chain": {"id": chain, "seq": int(seq)}}):
                    continue
            await response.write(frame)
            if frame.startswith(b"event: dropped"):
                break
    except ConnectionResetError:
        pass  # the reader left
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
    return response
