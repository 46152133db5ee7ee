"""`keyledger audit tail --url`: a security team watching a running keyledger's reads live.

keyledger runs as a real process (`keyledger serve --config`) with its admin API on its own
port; boto3 reads secrets through it; `keyledger audit tail --url` runs as another process,
as it would on an analyst's machine.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
from botocore.exceptions import ClientError

from tests.conftest import clean_env, journal_events
from tests.e2e.test_cli_serve import (
    KEYLEDGER,
    ServedProxy,
    free_port,
    start_proxy,
    wait_listening,
)


@dataclass
class Watched:
    """keyledger serving, with its admin API at ``admin_url`` behind the token in ``token_file``."""

    proxy: ServedProxy
    admin_url: str
    token_file: Path


@pytest.fixture
def watched(tmp_path: Path, moto_url: str, store: Any) -> Iterator[Watched]:
    token_file = tmp_path / "admin.token"
    token_file.write_text(secrets.token_hex(32) + "\n")
    admin_port = free_port()
    proxy = start_proxy(
        tmp_path,
        moto_url,
        extra={"admin": {"listen": f"127.0.0.1:{admin_port}", "token_file": str(token_file)}},
    )
    try:
        wait_listening(proxy.process, admin_port, proxy.log)
        yield Watched(proxy, f"http://127.0.0.1:{admin_port}", token_file)
    finally:
        proxy.stop()


def tail(
    watched: Watched, *args: str, token_file: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *KEYLEDGER,
            "audit",
            "tail",
            "--url",
            watched.admin_url,
            "--token-file",
            str(token_file or watched.token_file),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=clean_env(),
    )


class Lines:
    """A process's stdout, line by line, read in a thread so that waits can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self, within: float) -> str | None:
        """The next line, or None once the process closed its stdout."""
        try:
            return self._lines.get(timeout=within)
        except queue.Empty:
            raise AssertionError(f"nothing printed within {within}s") from None


def reads(watched: Watched, store: Any) -> list[str]:
    """Three allowed reads and one denied, through keyledger; their request ids."""
    store.create_secret(Name="app/db/password", SecretString="s1")
    store.create_secret(Name="app/api-key", SecretString="s2")
    store.create_secret(Name="app/forbidden", SecretString="s3")
    client = watched.proxy.client()
    ids = []
    for name in ("app/db/password", "app/api-key", "app/db/password"):
        response = client.get_secret_value(SecretId=name)
        ids.append(response["ResponseMetadata"]["RequestId"])
    with pytest.raises(ClientError) as denied:
        client.get_secret_value(SecretId="app/forbidden")
    ids.append(denied.value.response["ResponseMetadata"]["RequestId"])
    return ids


class TestTailUrl:
    def test_last_events_are_the_reads_made_through_the_proxy(
        self, watched: Watched, store: Any
    ) -> None:
        """`tail --url --token-file -n 5` prints the last five journal events, the boto3
        reads among them; filters and readable lines work over the stream too."""
        request_ids = reads(watched, store)

        as_json = tail(watched, "-n", "5", "--json")
        readable = tail(watched, "-n", "4")
        denies = tail(watched, "--json", "--effect", "deny")

        assert as_json.returncode == 0, as_json.stderr
        printed = [orjson.loads(line) for line in as_json.stdout.splitlines()]
        assert printed == journal_events(watched.proxy.journal_dir)[-5:]
        accesses = [r for r in printed if r["type"] == "access"]
        assert [r["request"]["id"] for r in accesses] == request_ids
        assert [r["resource"]["secret"] for r in accesses] == [
            "app/db/password",
            "app/api-key",
            "app/db/password",
            "app/forbidden",
        ]
        assert [r["decision"]["effect"] for r in accesses] == ["allow"] * 3 + ["deny"]

        assert readable.returncode == 0, readable.stderr
        lines = readable.stdout.splitlines()
        assert len(lines) == 4
        assert "ALLOW" in lines[0]
        assert "app/db/password" in lines[0]
        assert "app (sigv4)" in lines[0]
        assert "DENY" in lines[-1]
        assert "app/forbidden" in lines[-1]
        assert "\x1b" not in readable.stdout

        assert denies.returncode == 0, denies.stderr
        assert [orjson.loads(line)["request"]["id"] for line in denies.stdout.splitlines()] == [
            request_ids[-1]
        ]

    def test_follow_streams_a_new_read_within_seconds(self, watched: Watched, store: Any) -> None:
        """`tail --url -f` prints a read made after it started within a few seconds, and
        ends cleanly when keyledger shuts down."""
        store.create_secret(Name="app/live", SecretString="x")
        client = watched.proxy.client()
        client.get_secret_value(SecretId="app/live")
        process = subprocess.Popen(
            [
                *KEYLEDGER,
                "audit",
                "tail",
                "--url",
                watched.admin_url,
                "--token-file",
                str(watched.token_file),
                "-n",
                "1",
                "-f",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        try:
            assert process.stdout is not None
            lines = Lines(process.stdout)
            first = lines.next(within=20)
            assert first is not None
            assert orjson.loads(first)["resource"]["secret"] == "app/live"

            started = time.monotonic()
            request_id = client.get_secret_value(SecretId="app/live")["ResponseMetadata"][
                "RequestId"
            ]
            line = lines.next(within=5)
            assert time.monotonic() - started < 5
            assert line is not None
            record = orjson.loads(line)
            assert record["request"]["id"] == request_id
            assert record["outcome"]["status"] == "success"

            stopped = time.monotonic()
            code, logs = watched.proxy.stop()
            assert code == 0, logs
            assert lines.next(within=10) is None
            assert process.wait(timeout=10) == 0
            assert time.monotonic() - stopped < 10
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
            assert process.stderr is not None
            process.stderr.close()

    def test_a_wrong_token_exits_2_with_http_401(self, watched: Watched, tmp_path: Path) -> None:
        """A wrong token is refused by the server, and tail exits 2 saying HTTP 401."""
        wrong = tmp_path / "wrong.token"
        wrong.write_text(secrets.token_hex(32))

        result = tail(watched, "-n", "5", token_file=wrong)

        assert result.returncode == 2
        assert result.stdout == ""
        assert "HTTP 401" in result.stderr
        assert watched.admin_url in result.stderr

    def test_the_token_can_come_from_the_environment(self, watched: Watched, store: Any) -> None:
        """Without --token-file, KEYLEDGER_ADMIN_TOKEN carries the token."""
        reads(watched, store)

        result = subprocess.run(
            [*KEYLEDGER, "audit", "tail", "--url", watched.admin_url, "-n", "1", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=clean_env(KEYLEDGER_ADMIN_TOKEN=watched.token_file.read_text().strip()),
        )

        assert result.returncode == 0, result.stderr
        (line,) = result.stdout.splitlines()
        assert orjson.loads(line)["resource"]["secret"] == "app/forbidden"

    def test_since_is_sent_as_a_time_the_server_reads(self, watched: Watched, store: Any) -> None:
        """`tail --url --since 1h` sends an absolute time the server accepts, and keeps the
        recent events."""
        request_ids = reads(watched, store)

        result = tail(watched, "--json", "--since", "1h", "--type", "access")

        assert result.returncode == 0, result.stderr
        printed = [orjson.loads(line)["request"]["id"] for line in result.stdout.splitlines()]
        assert printed == request_ids

    def test_zero_lines_without_follow_exits_at_once(self, watched: Watched, store: Any) -> None:
        """`tail --url -n 0` (nothing to show, not following) prints nothing and exits 0."""
        reads(watched, store)

        try:
            result = tail(watched, "-n", "0", timeout=8)
        except subprocess.TimeoutExpired:
            pytest.fail("`keyledger audit tail --url URL -n 0` did not exit within 8 s")

        assert result.returncode == 0, result.stderr
        assert result.stdout == ""
