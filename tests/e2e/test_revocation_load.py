"""Revocation under load: a key revoked with `keyledger identity revoke` is refused within
one second on a two-worker proxy, and the change is on record once, in chains that verify.

`keyledger serve --workers 2` in front of moto; an identity made with the real CLI while it
serves; threads reading with its key on a fresh connection per call, so the kernel spreads
them over both workers; the key revoked with the real CLI while they read. Each call is
matched to the worker that answered it through its request id, which the journal holds.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError

from tests.conftest import REGION, journal_events
from tests.e2e.test_cli_serve import KEYLEDGER, ServedProxy, start_proxy, verify
from tests.e2e.test_workers import wait_ready

SECRET, VALUE = "app/db/password", "guarded"
# The loader reads as the role the fixture's policy gives `app`.
LOAD_POLICY = """\
version: 1
bindings:
  - role: app
    principals: [loader]
"""
WITHIN_S = 1.0  # the requirement: refused within one second of the revocation
LOAD_THREADS = 6  # with the revoked key; one more reads as `app` throughout
BEFORE_S = 1.5  # load before the revocation
AFTER_S = 3.0  # load after it
REFUSED = "UnrecognizedClientException"  # AWS's answer to a key it does not know
WORKERS = {"cli-w0", "cli-w1"}  # each worker's chain


@dataclass(frozen=True, slots=True)
class Call:
    who: str
    started: float  # time.monotonic(), just before the request was sent
    ended: float
    outcome: str  # "ok", or the error code
    request_id: str


def call_once(session: Any, url: str, who: str, key: tuple[str, str]) -> Call:
    """One read on a client of its own: a new connection, which either worker may take."""
    client = session.client(
        "secretsmanager",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    request_id = ""
    try:
        started = time.monotonic()
        try:
            response = client.get_secret_value(SecretId=SECRET)
        except ClientError as exc:
            outcome = str(exc.response["Error"]["Code"])
            request_id = exc.response.get("ResponseMetadata", {}).get("RequestId", "")
        except BotoCoreError as exc:  # no answer at all: reported by the outcome checks
            outcome = f"{type(exc).__name__}: {exc}"
        else:
            outcome = "ok" if response["SecretString"] == VALUE else "wrong value"
            request_id = response["ResponseMetadata"]["RequestId"]
        return Call(who, started, time.monotonic(), outcome, request_id)
    finally:
        client.close()


def keep_calling(
    stop: threading.Event, url: str, who: str, key: tuple[str, str], calls: list[Call]
) -> None:
    session = boto3.session.Session()  # one per thread: sessions are not thread-safe
    while not stop.is_set():
        calls.append(call_once(session, url, who, key))


def identity(served: ServedProxy, *args: str) -> str:
    """`keyledger identity ... --config` against the served store; its stdout."""
    result = subprocess.run(
        [*KEYLEDGER, "identity", *args, "--config", str(served.config)],
        env=served.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def workers(calls: Iterable[Call], chain_of: dict[str, str]) -> set[str]:
    return {chain_of[c.request_id] for c in calls}


def test_a_revoked_key_is_refused_within_a_second_on_both_workers(
    tmp_path: Path, moto_url: str, store: Any
) -> None:
    store.create_secret(Name=SECRET, SecretString=VALUE)
    (tmp_path / "load-policy.yaml").write_text(LOAD_POLICY)
    served = start_proxy(
        tmp_path,
        moto_url,
        extra={
            "policies": ["policies/", "load-policy.yaml"],
            # Every refusal an event of its own (not folded into a flood's aggregate):
            # each call is matched to the worker that answered it.
            "limits": {"auth_failures_recorded": 1_000_000},
        },
        args=("--workers", "2"),
    )
    calls: list[Call] = []
    stop = threading.Event()
    try:
        wait_ready(served)
        created = identity(served, "create", "loader")
        issued_at = time.monotonic()
        fields = {line[:18].strip(): line[18:].strip() for line in created.splitlines() if line}
        key = (fields["access key id"], fields["secret access key"])
        # A new key is taken within a second, as a revoked one is refused: from then on,
        # every call with it must be served, whichever worker takes it.
        time.sleep(max(0.0, issued_at + WITHIN_S - time.monotonic()))
        with ThreadPoolExecutor(LOAD_THREADS + 1) as pool:
            try:
                running = [
                    pool.submit(keep_calling, stop, served.url, "loader", key, calls)
                    for _ in range(LOAD_THREADS)
                ]
                control = (served.key_id, served.secret)
                running.append(pool.submit(keep_calling, stop, served.url, "app", control, calls))
                time.sleep(BEFORE_S)
                asked = time.monotonic()
                said = identity(served, "revoke", key[0])
                revoked_at, revoked_wall = time.monotonic(), time.time()
                time.sleep(AFTER_S)
            finally:
                stop.set()
            for future in running:
                future.result()
        store_written = (tmp_path / "identities.json").stat().st_mtime
    finally:
        code, log = served.stop()
    assert code == 0, log
    assert said == f"revoked {key[0]} (loader)\n"

    events = journal_events(served.journal_dir)
    chain_of = {
        e["request"]["id"]: e["chain"]["id"]
        for e in events
        if e["type"] in ("access", "auth_failure")
    }
    loader = sorted((c for c in calls if c.who == "loader"), key=lambda c: c.started)
    # Every call was answered, and journaled by the worker that answered it.
    assert {c.outcome for c in calls} <= {"ok", REFUSED}, {c.outcome for c in calls}
    assert all(c.request_id in chain_of for c in calls)

    # Before the revocation: the key served on both workers, and was never refused.
    before = [c for c in loader if c.ended < asked]
    assert {c.outcome for c in before} == {"ok"}
    assert workers(before, chain_of) == WORKERS

    # Every call started more than a second after `revoke` returned was refused, on both
    # workers, with the code AWS gives an unknown key.
    late = [c for c in loader if c.started > revoked_at + WITHIN_S]
    assert late
    assert [c for c in late if c.outcome != REFUSED] == []
    assert workers(late, chain_of) == WORKERS
    served_ok = [c for c in loader if c.outcome == "ok"]
    refused = [c for c in loader if c.outcome == REFUSED]
    last_ok = max(c.started for c in served_ok)
    first_refused = min(c.started for c in refused)
    per_worker = {
        w: round(max(c.started for c in served_ok if chain_of[c.request_id] == w) - revoked_at, 3)
        for w in sorted(WORKERS)
    }
    written = revoked_at - (revoked_wall - store_written)  # the store's mtime, monotonic
    print(
        f"\nrevocation: relative to `revoke` returning, the last call served started at "
        f"{last_ok - revoked_at:+.3f} s (by worker: {per_worker}), the first refused at "
        f"{first_refused - revoked_at:+.3f} s; the store was written "
        f"{revoked_at - written:.3f} s before `revoke` returned, so the last served call "
        f"started {last_ok - written:.3f} s after it; {len(loader)} calls with the key, "
        f"{len(refused)} refused"
    )
    assert last_ok - revoked_at <= WITHIN_S
    # Once a worker refused the key, it stays refused there: every call sent after a
    # refusal came back (the reload happened before it) is refused too.
    for worker in WORKERS:
        on_worker = [c for c in loader if chain_of[c.request_id] == worker]
        seen = min(c.ended for c in on_worker if c.outcome == REFUSED)
        assert {c.outcome for c in on_worker if c.started > seen} == {REFUSED}, worker

    # Another identity's key kept working throughout: the revocation is of that key only.
    others = [c for c in calls if c.who == "app"]
    assert {c.outcome for c in others} == {"ok"}
    assert [c for c in others if c.started > revoked_at + WITHIN_S]

    # Each call is on record: every read served as an access by `loader`, every refusal
    # as an auth_failure naming the key it presented.
    assert {
        e["request"]["id"]
        for e in events
        if e["type"] == "access" and e["principal"]["id"] == "loader"
    } == {c.request_id for c in served_ok}
    failures = [
        e
        for e in events
        if e["type"] == "auth_failure"
        and e["principal"]["attributes"].get("access_key_id") == key[0]
    ]
    assert sorted(e["request"]["id"] for e in failures) == sorted(c.request_id for c in refused)
    # Named as revoked and whose: a stale deployment, not a guesser.
    assert {e["outcome"]["code"] for e in failures} == {"revoked_token"}
    assert {e["principal"]["id"] for e in failures} == {"loader"}
    assert {e["chain"]["id"] for e in failures} == WORKERS

    # The key's issue and revocation are on record once across the two workers.
    lifecycle = sorted(
        (
            e
            for e in events
            if e["type"] == "lifecycle" and e["detail"].get("credential_id") == key[0]
        ),
        key=lambda e: str(e["time"]),
    )
    assert [(e["detail"]["event"], e["principal"]["id"]) for e in lifecycle] == [
        ("identity_issued", "loader"),
        ("identity_revoked", "loader"),
    ], lifecycle
    assert lifecycle[1]["chain"]["id"] in WORKERS
    checked = verify(
        served.journal_dir,
        "--public-key",
        str(tmp_path / "keys" / "checkpoint.pub"),
        "--strict",
    )
    assert checked.returncode == 0, checked.stdout
    assert all(chain in checked.stdout for chain in WORKERS), checked.stdout
