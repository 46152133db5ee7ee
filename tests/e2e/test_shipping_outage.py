"""Shipping the journal through outages: nothing lost, nothing blocked.

The complaint these tests answer: "S3 or CloudWatch was down for a while, and keyledger was
restarted (or killed) while it still had events to ship; is every audit event there now,
and did callers notice?" The sinks ship to a second moto server that the test stops and
starts on the same port (moto keeps its state in the process, so the buckets and log groups
survive). Afterwards every event of the local journal must be in each sink -- byte for
byte, at least once, and exactly once after deduplication by (chain, seq) -- the remote
copies must verify with no missing range, and every request must have been answered
promptly throughout, because shipping reads the journal files, never the request path.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import orjson
import pytest
from moto.server import ThreadedMotoServer

from keyledger.proxy.app import SHIPPERS
from keyledger.proxy.audit.checkpoints import load_public_keys
from keyledger.proxy.audit.segments import chain_segments
from keyledger.proxy.audit.sinks.cloudwatch import read_cloudwatch
from keyledger.proxy.audit.sinks.cursor import CursorStore
from keyledger.proxy.audit.sinks.s3 import read_s3
from keyledger.proxy.audit.sinks.shipper import Shipper
from keyledger.proxy.audit.verify import ChainReport, Copy, verify_copies
from keyledger.proxy.auth import IssuedKey
from keyledger.proxy.config import Config, parse_config
from tests.conftest import REGION, RunningProxy, issue_keys, sm_client, write_proxy_files
from tests.e2e.test_cli_serve import ServedProxy, free_port, start_proxy
from tests.e2e.test_crash import restart, watching

SECRET = "app/shipping/outage"
SINKS = ("s3", "cloudwatch")
# Longest any one request may take while a sink is down: a request that waited for a sink
# would take botocore's connect retries (seconds), not milliseconds.
MAX_LATENCY_S = 2.0
CALL_TIMEOUTS = botocore.config.Config(
    connect_timeout=5, read_timeout=10, retries={"total_max_attempts": 1, "mode": "standard"}
)


def wait_for(
    what: str,
    condition: Callable[[], bool],
    *,
    within: float = 15.0,
    state: Callable[[], object] | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``within`` seconds,
    with what ``state()`` says then."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            now = f" ({state()})" if state is not None else ""
            pytest.fail(f"timed out after {within:g}s waiting until {what}{now}")
        time.sleep(0.02)


# -- the sinks' server ----------------------------------------------------------------------


class SinkServer:
    """A moto server (S3, CloudWatch Logs) on a fixed port, that the test stops and starts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self.bucket = f"keyledger-outage-{secrets.token_hex(4)}"
        self.log_group = f"keyledger-outage-{secrets.token_hex(4)}"

    def start(self) -> None:
        assert self._server is None
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="sink-reader",
            aws_secret_access_key="sink-reader",
        )

    def create_bucket(self) -> None:
        """An Object Lock bucket, as a security team would make it (GOVERNANCE in the config)."""
        self.client("s3").create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)

    def audit(
        self, *, max_events: int, max_wait: str, drain: str, chain: str = "test"
    ) -> dict[str, Any]:
        """The ``audit`` settings that ship to both sinks here; busy rotation and
        checkpoints, so shipping crosses segment files and ships checkpoint objects too."""
        batch = {"max_events": max_events, "max_wait": max_wait}
        return {
            "journal": "audit",
            "chain_id": chain,
            # Small segments, so shipping follows the chain from file to file.
            "rotate": {"max_bytes": 16384},
            "checkpoints": {"key_file": "keys/checkpoint.key", "every_events": 64},
            "sinks": [
                {
                    "type": "s3",
                    "bucket": self.bucket,
                    "prefix": "audit",
                    "region": REGION,
                    "endpoint_url": self.url,
                    "object_lock": {"mode": "GOVERNANCE", "retention_days": 1},
                    "batch": batch,
                },
                {
                    "type": "cloudwatch",
                    "log_group": self.log_group,
                    "region": REGION,
                    "endpoint_url": self.url,
                    "batch": batch,
                },
            ],
            "shipping": {"retry_min": "50ms", "retry_max": "500ms", "drain": drain},
        }

    def read_back(self) -> dict[str, list[Copy]]:
        """Every line each sink holds (every S3 object version, every log event)."""
        return {
            "s3": read_s3(f"s3://{self.bucket}/audit", client=self.client("s3")).copies,
            "cloudwatch": read_cloudwatch(
                f"cloudwatch://{self.log_group}", client=self.client("logs")
            ).copies,
        }


@pytest.fixture
def sink_server(store: Any) -> Iterator[SinkServer]:
    """The sinks' own moto server, started with an Object Lock bucket (after ``store`` has
    reset moto's shared state)."""
    server = SinkServer()
    server.start()
    try:
        server.create_bucket()
        yield server
    finally:
        server.stop()


# -- keyledger, started and stopped again on one journal ------------------------------------


class Runs:
    """keyledger (in this process) started, stopped and started again on one config."""

    def __init__(self, config: Config, keys: dict[str, IssuedKey]) -> None:
        self.config = config
        self.keys = keys
        self.current: RunningProxy | None = None

    @property
    def journal(self) -> Path:
        return self.config.audit.journal

    def start(self) -> RunningProxy:
        assert self.current is None
        proxy = RunningProxy(self.config, self.keys)
        proxy.start()
        self.current = proxy
        return proxy

    def stop(self) -> tuple[Shipper, ...]:
        """Stop the running keyledger (shipping drains); its shippers, to look at."""
        proxy, self.current = self.current, None
        assert proxy is not None
        assert proxy.app is not None
        proxy.stop()
        return proxy.app[SHIPPERS]


@contextlib.contextmanager
def keyledger_runs(tmp_path: Path, store_url: str, audit: dict[str, Any]) -> Iterator[Runs]:
    doc = write_proxy_files(tmp_path)
    doc["backends"]["aws"]["endpoint_url"] = store_url
    doc["audit"].update(audit)
    config = parse_config(doc, base=tmp_path, source="test")
    runs = Runs(config, issue_keys(config, ("app", ())))
    try:
        yield runs
    finally:
        if runs.current is not None:
            runs.stop()


def shippers_of(proxy: RunningProxy) -> dict[str, Shipper]:
    assert proxy.app is not None
    return {shipper.sink.name: shipper for shipper in proxy.app[SHIPPERS]}


def lag(shippers: dict[str, Shipper]) -> dict[str, int]:
    return {name: shipper.lag_events for name, shipper in shippers.items()}


# -- traffic --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    started: float  # time.monotonic()
    seconds: float
    error: str | None


@dataclass
class Traffic:
    """Threads reading a secret through keyledger, back to back, timing every call."""

    make_client: Callable[[], Any]
    threads: int = 2
    until_error: bool = False  # a thread ends at its first failed call (a killed proxy)
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        # Clients are built here: the default boto3 session that builds them is not
        # thread-safe.
        for _ in range(self.threads):
            thread = threading.Thread(target=self._run, args=(self.make_client(),), daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, client: Any) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            error = None
            try:
                client.get_secret_value(SecretId=SECRET)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            call = Call(started, time.monotonic() - started, error)
            with self._lock:
                self.calls.append(call)
            if error is not None and self.until_error:
                return

    def count(self) -> int:
        with self._lock:
            return len(self.calls)

    def stop(self) -> list[Call]:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"
        return self.calls


def assert_served_throughout(calls: list[Call]) -> None:
    """Every call succeeded, none of them slowly."""
    errors = [c for c in calls if c.error is not None]
    assert not errors, f"{len(errors)} of {len(calls)} calls failed, first: {errors[0]}"
    slowest = sorted(calls, key=lambda c: -c.seconds)[:5]
    assert slowest[0].seconds < MAX_LATENCY_S, f"requests waited on shipping: {slowest}"


# -- what the journal holds, and what the sinks hold ----------------------------------------


def journal_lines(directory: Path, chain: str) -> dict[int, bytes]:
    """Each complete line of the chain (with its newline), by seq; the seqs run 1..n."""
    lines: dict[int, bytes] = {}
    for segment in chain_segments(directory, chain):
        for raw in segment.path.read_bytes().splitlines(keepends=True):
            if raw.endswith(b"\n"):  # a torn last line is not an event (yet)
                seq = orjson.loads(raw)["chain"]["seq"]
                assert seq not in lines, f"seq {seq} twice in the journal"
                lines[seq] = raw
    assert sorted(lines) == list(range(1, len(lines) + 1)), "the journal itself has gaps"
    return lines


def ranges(seqs: list[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1-3, 7``, for messages."""
    parts: list[str] = []
    for seq in sorted(seqs):
        if parts and parts[-1].rpartition("-")[2] == str(seq - 1):
            parts[-1] = f"{parts[-1].partition('-')[0]}-{seq}"
        else:
            parts.append(str(seq))
    return ", ".join(parts)


def assert_exactly_once(
    sink: str, copies: list[Copy], journal: dict[int, bytes], *, chain: str, keys: Path
) -> ChainReport:
    """Every journal event is in ``copies``, byte for byte, and nothing else is; after
    deduplication by seq each is there once, and the copies verify (signatures included)."""
    shipped: dict[int, list[bytes]] = {}
    for copy in copies:
        if copy.kind == "event":
            record = orjson.loads(copy.raw)
            assert record["chain"]["id"] == chain, f"{sink}: {copy.where} holds another chain"
            shipped.setdefault(record["chain"]["seq"], []).append(copy.raw)
    missing = sorted(journal.keys() - shipped.keys())
    assert not missing, (
        f"{sink}: {len(missing)} of {len(journal)} journal events never arrived: "
        f"seqs {ranges(missing)}"
    )
    unknown = sorted(shipped.keys() - journal.keys())
    assert not unknown, f"{sink}: events the journal does not hold: seqs {ranges(unknown)}"
    differing = sorted(s for s, raws in shipped.items() if set(raws) != {journal[s]})
    assert not differing, (
        f"{sink}: copies differ from the journal at seqs {ranges(differing)}: "
        f"{shipped[differing[0]]!r} vs {journal[differing[0]]!r}"
    )
    report = verify_copies(copies, public_keys=load_public_keys([keys]))
    assert report.ok, f"{sink}: " + "; ".join(str(p) for p in report.problems)
    assert set(report.chains) == {chain}, report.chains
    found = report.chains[chain]
    assert found.missing == [], f"{sink}: missing seq ranges {found.missing}"
    assert (found.events, found.last_seq) == (len(journal), len(journal)), found
    assert found.duplicates == sum(len(raws) for raws in shipped.values()) - len(journal)
    return found


def assert_checkpoints_shipped(copies: list[Copy], journal: dict[int, bytes]) -> None:
    """S3 also holds a signed checkpoint object for each checkpoint the journal sealed."""
    sealed = {seq - 1 for seq, raw in journal.items() if orjson.loads(raw)["type"] == "checkpoint"}
    shipped = {orjson.loads(c.raw)["seq"] for c in copies if c.kind == "checkpoint"}
    assert sealed, "no checkpoint was made: the test shipped too little"
    assert shipped == sealed, f"checkpoint objects for {sorted(shipped ^ sealed)}"


def assert_all_shipped(
    server: SinkServer, journal_dir: Path, *, chain: str, keys: Path
) -> dict[str, ChainReport]:
    journal = journal_lines(journal_dir, chain)
    copies = server.read_back()
    reports = {
        sink: assert_exactly_once(sink, copies[sink], journal, chain=chain, keys=keys)
        for sink in SINKS
    }
    assert_checkpoints_shipped(copies["s3"], journal)
    return reports


# -- the tests ------------------------------------------------------------------------------


def test_sink_outage_loses_nothing_and_never_blocks_requests(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None, sink_server: SinkServer
) -> None:
    """While S3 and CloudWatch Logs are unreachable for seconds, every request is answered
    at once, and once they are back every journal event reaches both exactly once."""
    store.create_secret(Name=SECRET, SecretString="outage-value")
    audit = sink_server.audit(max_events=50, max_wait="100ms", drain="5s")
    with keyledger_runs(tmp_path, moto_url, audit) as runs:
        proxy = runs.start()
        shippers = shippers_of(proxy)
        with Traffic(lambda: proxy.client(config=CALL_TIMEOUTS)) as traffic:
            wait_for(
                "both sinks shipped something",
                lambda: all(s.status.batches > 0 for s in shippers.values()),
            )
            failures_before = {name: s.status.failures for name, s in shippers.items()}

            outage_started = time.monotonic()
            sink_server.stop()
            calls_before = traffic.count()
            # Down for at least 3 s, and until each sink has seen it fail (botocore's own
            # connect retries may take a few seconds before the shipper sees an error).
            time.sleep(3)
            wait_for(
                "both sinks failed during the outage",
                lambda: all(s.status.failures > failures_before[n] for n, s in shippers.items()),
                within=10,
                state=lambda: {n: s.status.failures for n, s in shippers.items()},
            )
            failures = {name: s.status.failures for name, s in shippers.items()}
            behind = lag(shippers)
            served_in_outage = traffic.count() - calls_before
            sink_server.start()
            outage_ended = time.monotonic()

            wait_for(
                "traffic ran on after the outage",
                lambda: traffic.count() > calls_before + served_in_outage + 100,
            )
        calls = traffic.calls
        wait_for(
            "both sinks caught up",
            lambda: not any(lag(shippers).values()),
            state=lambda: f"lag {lag(shippers)}",
        )
        stopped = {s.sink.name: s for s in runs.stop()}

    note = (
        f"outage {outage_ended - outage_started:.1f}s, {served_in_outage} calls during it, "
        f"failures {failures}, lag at its end {behind}"
    )
    assert served_in_outage > 20, note
    assert all(behind[name] > 0 for name in SINKS), f"shipping was never behind: {note}"
    assert_served_throughout(calls)

    journal = journal_lines(runs.journal, "test")
    last_seq = max(journal)
    # The closing events (stop, and its checkpoint) were shipped while stopping too.
    assert {name: s.status.shipped_seq for name, s in stopped.items()} == dict.fromkeys(
        SINKS, last_seq
    ), note
    reports = assert_all_shipped(
        sink_server, runs.journal, chain="test", keys=tmp_path / "keys" / "checkpoint.pub"
    )
    print(  # what -s shows: the measurements behind the assertions
        f"{note}; {len(calls)} calls, slowest {max(c.seconds for c in calls):.3f}s; "
        f"{last_seq} events; duplicates "
        f"{ {name: r.duplicates for name, r in reports.items()} }"
    )


def test_proxy_restart_mid_shipping_resumes_from_the_cursor(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None, sink_server: SinkServer
) -> None:
    """keyledger stopped while its sinks are away and behind ships the rest after a restart
    (once they are back), from where each sink got to: every event arrives exactly once
    after dedupe."""
    store.create_secret(Name=SECRET, SecretString="restart-value")
    max_events = 20
    audit = sink_server.audit(max_events=max_events, max_wait="50ms", drain="300ms")
    with keyledger_runs(tmp_path, moto_url, audit) as runs:
        proxy = runs.start()
        shippers = shippers_of(proxy)
        with Traffic(lambda: proxy.client(config=CALL_TIMEOUTS)) as traffic:
            wait_for(
                "both sinks shipped a few batches",
                lambda: all(s.status.batches >= 3 for s in shippers.values()),
            )
            # The sinks go away mid-shipping, and keyledger is stopped before they return.
            sink_server.stop()
            wait_for("a few hundred requests", lambda: traffic.count() >= 300)
        first_calls = traffic.calls
        stopped = {s.sink.name: s for s in runs.stop()}
        first = journal_lines(runs.journal, "test")
        cursors = CursorStore(runs.journal)
        at_stop = {name: cursors.load(name, "test").seq for name in SINKS}
        behind = {name: len(first) - seq for name, seq in at_stop.items()}
        assert {n: s.status.shipped_seq for n, s in stopped.items()} == at_stop
        assert all(0 < seq < len(first) for seq in at_stop.values()), (
            f"not stopped mid-shipping: cursors {at_stop}, journal ends at {len(first)}"
        )

        # Started again while the sinks are still away: it serves, and ships once they
        # are back, from each sink's cursor.
        started = time.monotonic()
        proxy = runs.start()
        startup_s = time.monotonic() - started
        shippers = shippers_of(proxy)
        unready = {n: (s.status.prepared, s.status.failures > 0) for n, s in shippers.items()}
        assert unready == dict.fromkeys(SINKS, (False, True)), "the sinks' check did not fail"
        with Traffic(lambda: proxy.client(config=CALL_TIMEOUTS)) as traffic:
            wait_for("requests with the sinks away", lambda: traffic.count() >= 50)
            sink_server.start()
            wait_for("more requests", lambda: traffic.count() >= 150)
        second_calls = traffic.calls
        wait_for(
            "both sinks caught up",
            lambda: not any(lag(shippers).values()),
            state=lambda: f"lag {lag(shippers)}",
        )
        runs.stop()

    assert_served_throughout(first_calls + second_calls)
    reports = assert_all_shipped(
        sink_server, runs.journal, chain="test", keys=tmp_path / "keys" / "checkpoint.pub"
    )
    # Resumed from the cursor, not from the start: at most the batch in flight at each
    # stop is sent twice.
    for name, report in reports.items():
        assert report.duplicates <= 2 * max_events, (name, report.duplicates, at_stop)
    print(
        f"stopped {behind} events behind at seqs {at_stop}, restarted in {startup_s:.2f}s, "
        f"journal {len(first)} then "
        f"{max(journal_lines(runs.journal, 'test'))} events; duplicates "
        f"{ {name: r.duplicates for name, r in reports.items()} }"
    )


def test_kill_9_mid_shipping_then_restart_ships_every_event_once(
    tmp_path: Path, moto_url: str, store: Any, sink_server: SinkServer
) -> None:
    """`keyledger serve` killed with SIGKILL while shipping resumes after a restart from its
    persisted cursors: every event reaches both sinks exactly once after dedupe."""
    chain = "cli"
    store.create_secret(Name=SECRET, SecretString="kill-value")
    audit = sink_server.audit(max_events=25, max_wait="50ms", drain="5s", chain=chain)
    served = start_proxy(tmp_path, moto_url, extra={"audit": audit})
    cursors = CursorStore(served.journal_dir)

    def shipped() -> dict[str, int]:
        return {name: cursors.load(name, chain).seq for name in SINKS}

    def client_of(proxy: ServedProxy) -> Callable[[], Any]:
        return lambda: sm_client(proxy.url, proxy.key_id, proxy.secret, config=CALL_TIMEOUTS)

    with watching(served) as watched, Traffic(client_of(served), until_error=True) as traffic:
        wait_for("both sinks shipped", lambda: all(shipped().values()), within=20)
        wait_for("more requests", lambda: traffic.count() >= 150)
        killed_at = time.monotonic()
        killed_log = watched.kill_9()
    failed_early = [c for c in traffic.calls if c.error and c.started + c.seconds < killed_at]
    assert not failed_early, failed_early
    assert max(c.seconds for c in traffic.calls if not c.error) < MAX_LATENCY_S
    at_kill = shipped()
    before = journal_lines(served.journal_dir, chain)
    assert all(seq < len(before) for seq in at_kill.values()), (
        f"not killed mid-shipping: cursors {at_kill}, journal ends at {len(before)}",
        killed_log[-2000:],
    )

    again = restart(served)
    with watching(again) as watched:
        with Traffic(client_of(again)) as traffic:
            wait_for("requests after the restart", lambda: traffic.count() >= 50)
        calls = traffic.calls
        last_seq = max(journal_lines(served.journal_dir, chain))
        wait_for(
            f"both sinks shipped up to seq {last_seq}",
            lambda: all(seq >= last_seq for seq in shipped().values()),
            within=20,
            state=lambda: f"cursors {shipped()}",
        )
        code, log = watched.stop()
    assert code == 0, log[-3000:]
    assert_served_throughout(calls)
    journal = journal_lines(served.journal_dir, chain)
    assert shipped() == dict.fromkeys(SINKS, max(journal)), log[-3000:]
    assert "sink_stopped_behind" not in log
    reports = assert_all_shipped(
        sink_server, served.journal_dir, chain=chain, keys=tmp_path / "keys" / "checkpoint.pub"
    )
    print(
        f"killed with cursors at {at_kill}, journal at {len(before)}; "
        f"{len(journal)} events in all; duplicates "
        f"{ {name: r.duplicates for name, r in reports.items()} }"
    )
