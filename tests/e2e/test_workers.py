"""`keyledger serve --workers 2`: two processes on one port, each with its own chain.

A real supervisor and real workers; boto3 clients, each on a fresh connection, so the
kernel spreads them across the workers; the admin API answers for both.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import journal_events
from tests.e2e.test_cli_serve import (
    KEYLEDGER,
    ServedProxy,
    admin_get,
    read_or_error,
    start_proxy,
    verify,
)

READS = 48


def wait_ready(served: ServedProxy, timeout: float = 30) -> dict[str, Any]:
    """The supervisor's /readyz once it says ready (it listens once every worker serves)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = admin_get(served, "/readyz")
        except urllib.error.URLError as exc:  # not listening yet
            status, body = 0, str(exc)
        if status == 200:
            return dict(body)
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def requests_by_worker(served: ServedProxy) -> dict[str, float]:
    request = urllib.request.Request(  # noqa: S310 (loopback http)
        served.admin_url + "/metrics", headers={"Authorization": f"Bearer {served.admin_token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "keyledger_requests_total":
                worker = sample.labels["worker"]
                counts[worker] = counts.get(worker, 0) + sample.value
    return counts


def started(served: ServedProxy) -> list[int]:
    """The pids of the workers the supervisor started so far, from its JSON log lines."""
    pids = []
    for line in served.log.read_text().splitlines():
        if '"worker_started"' in line:
            pids.append(orjson.loads(line)["pid"])
    return pids


def reads(served: ServedProxy, count: int) -> list[str]:
    # One client per call (read_or_error): a new connection each time.
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: read_or_error(served), range(count)))


@pytest.fixture
def served(tmp_path: Path, moto_url: str, store: Any) -> Iterator[ServedProxy]:
    """`keyledger serve --workers 2` in front of a secret, stopped by the test."""
    store.create_secret(Name="app/db/password", SecretString="guarded")
    proxy = start_proxy(tmp_path, moto_url, args=("--workers", "2"))
    yield proxy
    if proxy.process.poll() is None:  # the test failed before it stopped it
        proxy.stop()


def test_two_workers_share_the_port_and_both_chains_verify(served: ServedProxy) -> None:
    try:
        ready = wait_ready(served)
        served_reads = reads(served, READS)
        by_worker = requests_by_worker(served)
        sinks = admin_get(served, "/v1/sinks")
        tail = subprocess.run(
            [*KEYLEDGER, "audit", "tail", "--url", served.admin_url, "-n", "100", "--json"],
            env={**served.env, "KEYLEDGER_ADMIN_TOKEN": served.admin_token},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        code, log = served.stop()

    assert served_reads == ["guarded"] * READS
    assert ready["checks"]["workers"]["detail"] == "2 of 2 answer"
    assert {"w0", "w1"} <= set(re.findall(r"\bw\d\b", ready["checks"]["journal"]["detail"]))
    # Both workers took connections, and together they answered every request.
    assert set(by_worker) == {"0", "1"}
    assert min(by_worker.values()) > 0
    assert sum(by_worker.values()) == READS
    assert sinks == (200, {"sinks": []})
    # The supervisor's stream merges both chains.
    assert tail.returncode == 0, tail.stderr
    tailed = [line for line in tail.stdout.splitlines() if '"GetSecretValue"' in line]
    assert len(tailed) == READS

    assert code == 0, log
    events = journal_events(served.journal_dir)
    chains = {e["chain"]["id"] for e in events}
    assert chains == {"cli-w0", "cli-w1"}
    successes = [e for e in events if e["type"] == "access"]
    assert len(successes) == READS
    assert {e["chain"]["id"] for e in successes} == chains
    checked = verify(
        served.journal_dir,
        "--public-key",
        str(served.journal_dir.parent / "keys" / "checkpoint.pub"),
        "--strict",
    )
    assert checked.returncode == 0, checked.stdout
    assert "cli-w0" in checked.stdout
    assert "cli-w1" in checked.stdout


def test_a_worker_that_dies_is_restarted_and_its_chain_goes_on(served: ServedProxy) -> None:
    try:
        wait_ready(served)
        assert reads(served, 8) == ["guarded"] * 8
        os.kill(started(served)[0], signal.SIGKILL)
        # The supervisor notices, says so, and starts it again.
        deadline = time.monotonic() + 30
        while len(started(served)) < 3:
            assert time.monotonic() < deadline, served.log.read_text()
            time.sleep(0.1)
        wait_ready(served)
        after = reads(served, 16)
    finally:
        code, log = served.stop()

    assert after == ["guarded"] * 16
    assert "worker_died" in log
    assert code == 0, log
    checked = verify(served.journal_dir)
    assert checked.returncode == 0, checked.stdout
    events = journal_events(served.journal_dir)
    assert len([e for e in events if e["type"] == "access"]) == 24


def test_workers_refuse_a_bad_count(tmp_path: Path) -> None:
    result = subprocess.run(
        [*KEYLEDGER, "serve", "--dev", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--workers: expected 1 to 64, not '0'" in result.stderr
