"""Closed-loop load generator: N concurrent signed GetSecretValue calls for a fixed time.

``--concurrency`` tasks share one aiohttp connector of the same size; each sends a request,
waits for the full answer and sends the next. Requests carry a real SigV4 signature (so
keyledger authenticates them as it would an SDK's); signing with botocore per request would
cost the generator more CPU than the proxy under test on a 2-core machine, so the headers
are signed with keyledger's own :func:`keyledger.sigv4.sign_headers` once per second (the
body never changes and keyledger allows minutes of clock skew).

Only answers that complete inside the measured window (after ``--warmup``) count; only
HTTP 200 counts as a success, anything else is tallied as an error. Prints one JSON object.

``--rate R`` holds the load at R requests/s in all (each request leaves at its turn on a
fixed schedule; the concurrency caps how many are in flight, so a target that cannot keep
up gets fewer). ``--local-addr A,B,...`` binds the connections to those local addresses
(127.0.0.x on loopback), the tasks spread over them, so keyledger sees several sources.

    BENCH_ACCESS_KEY_ID=... BENCH_SECRET_ACCESS_KEY=... \\
        python bench/load.py --url http://127.0.0.1:8102 --duration 10 --warmup 2
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
import orjson
import uvloop

from keyledger.sigv4 import SigningKeyCache, sign_headers

__all__ = ["LoadResult", "Signer", "run_load"]

REGION = "us-east-1"
SERVICE = "secretsmanager"
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_REQUESTS = 5_000_000  # per run, whatever the duration: every loop is bounded


class Signer:
    """SigV4 headers for one fixed request, re-signed when the clock's second changes."""

    def __init__(self, *, host: str, access_key_id: str, secret_key: str, body: bytes) -> None:
        self._host = host
        self._key_id = access_key_id
        self._secret = secret_key
        self._body = body
        self._keys = SigningKeyCache()
        self._second = -1
        self._headers: dict[str, str] = {}

    def headers(self) -> dict[str, str]:
        second = int(time.time())
        if second != self._second:
            self._headers = sign_headers(
                keys=self._keys,
                access_key_id=self._key_id,
                secret_key=self._secret,
                session_token=None,
                region=REGION,
                service=SERVICE,
                method="POST",
                host=self._host,
                path="/",
                headers={
                    "content-type": CONTENT_TYPE,
                    "x-amz-target": "secretsmanager.GetSecretValue",
                },
                body=self._body,
                now=datetime.fromtimestamp(second, UTC),
            )
            self._second = second
        return self._headers


@dataclass(slots=True)
class LoadResult:
    duration_s: float
    warmup_s: float
    ok: int = 0  # HTTP 200 answers completed inside the measured window
    ok_total: int = 0  # ... and during warm-up and the drain, for the journal check
    sent: int = 0
    cpu_s: float = 0.0  # this process's CPU time over the whole run, warm-up included
    cpu_process_s: float = 0.0  # ... and start-up (imports) too
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self, *, raw: bool = False) -> dict[str, object]:
        lat = sorted(self.latencies_ms)
        extra = {"latencies_ms": [round(v, 3) for v in self.latencies_ms]} if raw else {}
        return {
            **extra,
            "rps": self.ok / self.duration_s if self.duration_s else 0.0,
            "ok": self.ok,
            "ok_total": self.ok_total,
            "sent": self.sent,
            "cpu_s": self.cpu_s,
            "cpu_process_s": self.cpu_process_s,
            "errors": dict(self.errors),
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "p50_ms": _quantile(lat, 0.50),
            "p99_ms": _quantile(lat, 0.99),
        }


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


async def run_load(
    *,
    url: str,
    secret_id: str,
    access_key_id: str,
    secret_key: str,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    rate: float | None = None,
    local_addrs: Sequence[str] = (),
) -> LoadResult:
    """``rate``: requests/s in all, on a fixed schedule (None: each task sends its next
    request as soon as its last is answered). ``local_addrs``: the local addresses the
    connections are bound to, the tasks spread evenly over them (none: the kernel's pick)."""
    body = orjson.dumps({"SecretId": secret_id})
    signer = Signer(
        host=urlsplit(url).netloc, access_key_id=access_key_id, secret_key=secret_key, body=body
    )
    result = LoadResult(duration_s=duration_s, warmup_s=warmup_s)
    cpu_start = time.process_time()
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    turns = itertools.count()

    async def paced() -> bool:
        """Wait for this task's next turn on the schedule; False: the run is over."""
        if rate is None:
            return True
        due = start + next(turns) / rate
        if due >= stop_at:
            return False
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        return True

    async def worker(session: aiohttp.ClientSession) -> None:
        while (
            result.sent < MAX_REQUESTS
            and await paced()
            and (sent_at := time.perf_counter()) < stop_at
        ):
            result.sent += 1
            status = "exception"
            try:
                async with session.post(url, data=body, headers=signer.headers()) as resp:
                    await resp.read()
                    status = str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            done_at = time.perf_counter()
            if status == "200":
                result.ok_total += 1
            if measure_from <= done_at <= stop_at:
                if status == "200":
                    result.ok += 1
                    result.latencies_ms.append((done_at - sent_at) * 1000)
                else:
                    result.errors[status] += 1

    addrs: list[str | None] = list(local_addrs) or [None]
    per_addr = math.ceil(concurrency / len(addrs))
    sessions = [
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=per_addr,
                force_close=False,
                local_addr=None if addr is None else (addr, 0),
            ),
            timeout=aiohttp.ClientTimeout(total=10),
            skip_auto_headers=("User-Agent",),
        )
        for addr in addrs
    ]
    try:
        async with asyncio.timeout(warmup_s + duration_s + 30):
            await asyncio.gather(*(worker(sessions[i % len(sessions)]) for i in range(concurrency)))
    finally:
        for session in sessions:
            await session.close()
    result.cpu_s = time.process_time() - cpu_start
    result.cpu_process_s = time.process_time()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret-id", default="bench/db/password")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--raw", action="store_true", help="include every latency sample")
    parser.add_argument(
        "--rate", type=float, help="hold this many requests/s in all (default: closed loop)"
    )
    parser.add_argument(
        "--local-addr",
        default="",
        help="comma-separated local addresses to bind the connections to (127.0.0.x)",
    )
    args = parser.parse_args(argv)
    key_id = os.environ.get("BENCH_ACCESS_KEY_ID")
    secret = os.environ.get("BENCH_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        parser.error("set BENCH_ACCESS_KEY_ID and BENCH_SECRET_ACCESS_KEY")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be above 0")
    result = uvloop.run(
        run_load(
            url=args.url,
            secret_id=args.secret_id,
            access_key_id=key_id,
            secret_key=secret,
            concurrency=args.concurrency,
            warmup_s=args.warmup,
            duration_s=args.duration,
            rate=args.rate,
            local_addrs=[a for a in args.local_addr.split(",") if a],
        )
    )
    sys.stdout.write(orjson.dumps(result.summary(raw=args.raw)).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
