"""`kill -9` under load: every secret a client received is in the journal, which verifies.

The complaint these tests answer: "the proxy was killed with kill -9 while serving; can we
still prove who read what?" keyledger makes each request's event durable before it
responds, so whatever a client got must be on disk when the process dies, and the chain
must run on, unbroken, when keyledger starts again on the same folder. A write cut short
by the kill (a torn last line) is set aside on start-up and recorded on the chain.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.config
import orjson
import pytest

from keyledger.proxy.audit.events import Fingerprinter
from keyledger.proxy.audit.segments import chain_segments
from tests.conftest import journal_events
from tests.e2e.test_cli_serve import (
    ServedProxy,
    spawn_serve,
    start_proxy,
    verify,
    wait_listening,
)

CHAIN = "cli"
THREADS = 8

# Rotation and checkpoints as busy as the config allows, so a kill can land in the middle
# of either: a checkpoint durable in the journal but not yet in the checkpoint file, or a
# new segment half made.
BUSY_AUDIT = {
    "journal": "audit",
    "chain_id": CHAIN,
    "rotate": {"max_bytes": 16384},
    "checkpoints": {"key_file": "keys/checkpoint.key", "every_events": 7, "every": "50ms"},
}
SETTINGS: dict[str, dict[str, Any] | None] = {"default": None, "busy": {"audit": BUSY_AUDIT}}


@dataclass(frozen=True, slots=True)
class Served:
    """One secret value a client received, and the request id keyledger answered with."""

    request_id: str
    name: str
    value: str


@dataclass
class Load:
    """Client threads reading secrets in a loop through keyledger until a call fails."""

    served: ServedProxy
    values: dict[str, str]
    seed: int
    received: list[Served] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (when, what)
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        # Clients are built here, not in the threads: the default boto3 session that builds
        # them is not thread-safe.
        timeouts = botocore.config.Config(
            connect_timeout=5,
            read_timeout=10,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        for number in range(THREADS):
            client = self.served.client(config=timeouts)
            rng = random.Random(self.seed + number)
            thread = threading.Thread(target=self._read, args=(client, rng), daemon=True)
            self._threads.append(thread)
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def _read(self, client: Any, rng: random.Random) -> None:
        names = sorted(self.values)
        while not self.stop.is_set():
            name = rng.choice(names)
            try:
                response = client.get_secret_value(SecretId=name)
            except Exception as exc:  # the kill ends every thread, somehow
                with self._lock:
                    self.failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
                return
            got = Served(response["ResponseMetadata"]["RequestId"], name, response["SecretString"])
            with self._lock:
                self.received.append(got)

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(20)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"


class Watched:
    """A running keyledger, killed or stopped by the test, never left behind."""

    def __init__(self, served: ServedProxy) -> None:
        self.served = served

    def kill_9(self) -> str:
        """SIGKILL keyledger and reap it; its log up to the kill."""
        self.served.process.kill()
        self.served.process.wait(30)
        assert self.served.process.returncode == -signal.SIGKILL
        return self.served.read_log()

    def stop(self) -> tuple[int, str]:
        """SIGTERM, as an operator stops it; the exit code and the whole log."""
        return self.served.stop()

    def close(self) -> None:
        if self.served.process.poll() is None:
            self.served.process.kill()
        self.served.process.wait(30)


@contextlib.contextmanager
def watching(served: ServedProxy) -> Iterator[Watched]:
    watched = Watched(served)
    try:
        yield watched
    finally:
        watched.close()


def restart(served: ServedProxy) -> ServedProxy:
    """`keyledger serve` again on the same config, keys, identities, journal and port."""
    process = spawn_serve(served.config, served.env, served.log)
    wait_listening(process, int(served.url.rsplit(":", 1)[1]), served.log)
    return dataclasses.replace(served, process=process)


def complete_events(directory: Path) -> tuple[list[dict[str, Any]], bytes]:
    """Every complete line of the chain, in order, and any partial last line (a torn write)."""
    events: list[dict[str, Any]] = []
    torn = b""
    for segment in chain_segments(directory, CHAIN):
        data = segment.path.read_bytes()
        whole, _, torn = data.rpartition(b"\n")
        events.extend(orjson.loads(line) for line in whole.splitlines())
    return events, torn


def lifecycle_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "lifecycle"]


def lifecycle(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in lifecycle_of(events) if e["detail"]["event"] == name]


def assert_chain_runs_on(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    """The events before the kill are unchanged, and the chain continues from the last."""
    assert [e["chain"]["seq"] for e in after] == list(range(1, len(after) + 1))
    assert after[: len(before)] == before
    assert after[len(before)]["chain"]["prev"] == before[-1]["chain"]["hash"]


def assert_verifies(served: ServedProxy, *options: str) -> None:
    public_key = served.journal_dir.parent / "keys" / "checkpoint.pub"
    result = verify(served.journal_dir, "--public-key", str(public_key), *options)
    assert result.returncode == 0, result.stdout + result.stderr


def read_once(served: ServedProxy, name: str) -> str:
    """One read through ``served``; the request id it was answered with."""
    response = served.client().get_secret_value(SecretId=name)
    return str(response["ResponseMetadata"]["RequestId"])


class TestKill9:
    @pytest.mark.parametrize("settings", sorted(SETTINGS))
    @pytest.mark.parametrize("round", range(3))
    def test_every_secret_served_before_kill_9_is_in_the_journal(
        self, tmp_path: Path, moto_url: str, store: Any, round: int, settings: str
    ) -> None:
        """Each value a client got before SIGKILL has its allow/success event; the chain
        runs on unbroken after a restart and verifies under --strict."""
        seed = secrets.randbits(32)
        rng = random.Random(seed)
        token = secrets.token_hex(4)
        values = {f"app/crash/{i}": f"value-{i}-{token}" for i in range(4)}
        for name, value in values.items():
            store.create_secret(Name=name, SecretString=value)
        served = start_proxy(tmp_path, moto_url, extra=SETTINGS[settings])
        load = Load(served, values, seed)
        with watching(served) as proxy:
            load.start()
            time.sleep(rng.uniform(0.3, 1.5))
            killed_at = time.monotonic()
            killed_log = proxy.kill_9()
            load.join()
        note = f"seed {seed}, {load.count()} served, log:\n{killed_log[-3000:]}"
        assert load.count() > 0, note
        assert all(when >= killed_at for when, _ in load.failures), (load.failures, note)

        before, torn = complete_events(served.journal_dir)
        access: dict[str, dict[str, Any]] = {}
        for event in before:
            if event["type"] == "access":
                assert event["request"]["id"] not in access, event
                access[event["request"]["id"]] = event
        fingerprint = Fingerprinter(served.env["KEYLEDGER_FINGERPRINT_KEY"].encode())
        assert len({got.request_id for got in load.received}) == load.count()
        for got in load.received:
            assert got.request_id in access, f"{got} is not in the journal ({note})"
            recorded = access[got.request_id]
            assert recorded["request"]["operation"] == "GetSecretValue"
            assert recorded["principal"]["id"] == "app"
            assert recorded["resource"]["secret"] == got.name
            assert recorded["decision"]["effect"] == "allow"
            assert recorded["outcome"]["status"] == "success"
            assert recorded["outcome"]["value_fingerprint"] == fingerprint(got.value.encode())
            assert got.value == values[got.name]
        # Events for requests whose answer the kill cut off may be there too, never fewer.
        assert len(access) >= load.count()
        if torn:  # the kill cut a write short (rare): verify names it until a restart
            at_kill = verify(served.journal_dir)
            assert "last line is incomplete (torn write)" in at_kill.stdout, at_kill.stdout
        else:  # intact, if not all sealed
            assert_verifies(served)

        again = restart(served)
        with watching(again) as proxy:
            request_id = read_once(again, "app/crash/0")
            code, log = proxy.stop()
        assert code == 0, log
        after = journal_events(served.journal_dir)
        assert_chain_runs_on(before, after)
        recovered = lifecycle(after, "journal_recovered")
        if torn:  # set aside on start-up, and recorded
            assert [e["detail"]["torn_bytes"] for e in recovered] == [len(torn)]
        else:
            assert all("torn_bytes" not in e["detail"] for e in recovered)
        new = after[len(before) :]
        stages = [
            e["detail"]["event"]
            for e in lifecycle_of(new)
            if e["detail"]["event"] != "segment_start"
        ]
        assert stages == [*(["journal_recovered"] if recovered else []), "start", "stop"]
        assert new[-1]["type"] == "checkpoint"
        (last_read,) = [e for e in new if e["type"] == "access"]
        assert last_read["request"]["id"] == request_id
        assert last_read["outcome"]["status"] == "success"
        assert_verifies(served, "--strict")
        print(  # what -s shows: the measurements behind the assertions
            f"round {round} {settings}: seed {seed}, killed after "
            f"{killed_at - load.started:.2f}s, {load.count()} served, "
            f"{len(access)} access events, {len(before)} events, "
            f"{len(chain_segments(served.journal_dir, CHAIN))} segment(s), torn {len(torn)}, "
            f"recovered {[e['detail'] for e in recovered]}"
        )


class TestTornWrite:
    @pytest.mark.parametrize("settings", sorted(SETTINGS))
    def test_a_torn_last_line_is_set_aside_and_recorded(
        self, tmp_path: Path, moto_url: str, store: Any, settings: str
    ) -> None:
        """Half a line left at the end of the newest segment is moved, byte for byte, to a
        .torn- file; a journal_recovered event says so, and the chain runs on and verifies."""
        store.create_secret(Name="app/torn", SecretString="torn-value")
        served = start_proxy(tmp_path, moto_url, extra=SETTINGS[settings])
        with watching(served) as proxy:
            request_ids = [read_once(served, "app/torn") for _ in range(40)]
            proxy.kill_9()
        segment = chain_segments(served.journal_dir, CHAIN)[-1].path
        intact = segment.read_bytes()
        torn = intact.splitlines(keepends=True)[-1][:37]
        with segment.open("ab") as handle:
            handle.write(torn)
        torn_at_kill = verify(served.journal_dir)
        assert torn_at_kill.returncode == 1
        assert "last line is incomplete (torn write)" in torn_at_kill.stdout, torn_at_kill.stdout
        before, found = complete_events(served.journal_dir)
        assert found == torn
        served_ids = {e["request"]["id"] for e in before if e["type"] == "access"}
        assert served_ids == set(request_ids)

        again = restart(served)
        with watching(again) as proxy:
            request_ids.append(read_once(again, "app/torn"))
            code, log = proxy.stop()
        assert code == 0, log
        aside = segment.with_name(f"{segment.name}.torn-{len(intact)}")
        assert aside.read_bytes() == torn
        assert segment.read_bytes().startswith(intact)
        after = journal_events(served.journal_dir)
        assert_chain_runs_on(before, after)
        recovered = after[len(before)]
        assert recovered["type"] == "lifecycle"
        detail = dict(recovered["detail"])
        # The kill may also have come between a checkpoint's fsync and its filing.
        detail.pop("checkpoint_filed", None)
        assert detail == {
            "event": "journal_recovered",
            "torn_bytes": len(torn),
            "moved_to": aside.name,
        }
        assert "journal_torn_tail" in log
        assert {e["request"]["id"] for e in after if e["type"] == "access"} == set(request_ids)
        assert_verifies(served, "--strict")

    def test_a_torn_checkpoint_record_is_set_aside_and_recorded(
        self, tmp_path: Path, moto_url: str, store: Any
    ) -> None:
        """Half a record at the end of the checkpoint file is moved to a .torn- file too,
        and named in the journal_recovered event."""
        store.create_secret(Name="app/torn", SecretString="torn-value")
        served = start_proxy(tmp_path, moto_url, extra=SETTINGS["busy"])
        with watching(served) as proxy:
            for _ in range(20):
                read_once(served, "app/torn")
            proxy.kill_9()
        cp_file = served.journal_dir / f"{CHAIN}.checkpoints.jsonl"
        intact = cp_file.read_bytes()
        torn = intact.splitlines(keepends=True)[-1][:37]
        with cp_file.open("ab") as handle:
            handle.write(torn)
        before, _ = complete_events(served.journal_dir)

        again = restart(served)
        with watching(again) as proxy:
            read_once(again, "app/torn")
            code, log = proxy.stop()
        assert code == 0, log
        aside = cp_file.with_name(f"{cp_file.name}.torn-{len(intact)}")
        assert aside.read_bytes() == torn
        assert cp_file.read_bytes().startswith(intact)
        after = journal_events(served.journal_dir)
        assert_chain_runs_on(before, after)
        (recovered,) = lifecycle(after, "journal_recovered")
        assert recovered["detail"]["checkpoint_file_torn_moved_to"] == aside.name
        assert "torn_bytes" not in recovered["detail"]
        assert_verifies(served, "--strict")
