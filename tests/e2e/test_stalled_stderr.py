"""An operator's log collector stalls (or nobody reads the pipe keyledger's stderr is on):
keyledger keeps answering, at debug level too, and the lines it kept arrive once the pipe
is read again."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from botocore.config import Config as BotoConfig

from tests.conftest import sm_client
from tests.e2e.test_cli_serve import KEYLEDGER, prepare_config, wait_listening

READS = 600  # ~250 KiB of debug lines: four times what a pipe holds


def test_keyledger_answers_while_nobody_reads_its_stderr(
    tmp_path: Path, moto_url: str, store: Any
) -> None:
    store.create_secret(Name="app/db/password", SecretString="answered")
    prepared = prepare_config(tmp_path, moto_url)  # logging at debug: a line per request
    created = subprocess.run(
        [*KEYLEDGER, "identity", "create", "app", "--config", str(prepared.path)],
        env=prepared.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    fields = {line[:18].strip(): line[18:].strip() for line in created.stdout.splitlines()}
    process = subprocess.Popen(
        [*KEYLEDGER, "serve", "--config", str(prepared.path)],
        env=prepared.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # and never read, until the end
    )
    try:
        wait_listening(process, prepared.port, tmp_path / "unused.log")
        client = sm_client(
            f"http://127.0.0.1:{prepared.port}",
            fields["access key id"],
            fields["secret access key"],
            config=BotoConfig(read_timeout=5, connect_timeout=5, retries={"max_attempts": 1}),
        )
        started = time.monotonic()
        values = [
            client.get_secret_value(SecretId="app/db/password")["SecretString"]
            for _ in range(READS)
        ]
        took = time.monotonic() - started
        assert values == ["answered"] * READS
        assert took < 60, took

        # The collector is back: what was queued comes out, newest requests included.
        stderr = process.stderr
        assert stderr is not None
        lines: list[bytes] = []
        reader = threading.Thread(target=lambda: lines.extend(stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 10
        while sum(b'"event":"request"' in line for line in lines) < READS:
            assert time.monotonic() < deadline, f"{len(lines)} lines so far"
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)
    requests = [orjson.loads(line) for line in lines if b'"event":"request"' in line]
    assert len(requests) == READS
