"""A running keyledger whose live journal file is edited, cut, moved or removed by hand:
boto3 keeps getting answers, every value served has its event where `audit verify` reads,
and /readyz and /metrics say what happened."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from keyledger.proxy.audit.segments import chain_segments
from tests.conftest import RunningProxy, running_proxy
from tests.e2e.test_cli_serve import (
    prepare_config,
    serve_once,
    spawn_serve,
    start_proxy,
    wait_listening,
)
from tests.proxy.test_operate import Metrics, readyz

CHAIN = "test"  # the chain id running_proxy configures

CHANGES: dict[str, list[str]] = {
    "sed -i": ["sed", "-i", 's/"app"/"someone-else"/'],
    "truncate": ["truncate", "-s", "100"],
    "mv": ["mv"],  # to a name of its own in the same folder
    "rm": ["rm"],
}


@pytest.fixture
def served(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> Iterator[RunningProxy]:
    store.create_secret(Name="app/db", SecretString="s3cr3t-db")
    with running_proxy(tmp_path, moto_url) as proxy:
        yield proxy


def live_segment(proxy: RunningProxy) -> Path:
    return chain_segments(proxy.journal, CHAIN)[-1].path


def change(how: str, path: Path) -> None:
    """Change ``path`` with the real command a person would type."""
    command = [*CHANGES[how], str(path)]
    if how == "mv":
        command.append(str(path.with_name("set-aside-by-hand.jsonl")))
    subprocess.run(command, check=True)


def read(proxy: RunningProxy) -> tuple[str | None, str]:
    """One GetSecretValue: (the request id if a value was served, else None; the code)."""
    try:
        response = proxy.client().get_secret_value(SecretId="app/db")
    except ClientError as exc:
        return None, str(exc.response["Error"]["Code"])
    assert response["SecretString"] == "s3cr3t-db"
    return response["ResponseMetadata"]["RequestId"], "ok"


def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.05)


class TestLiveSegmentChanged:
    @pytest.mark.parametrize("how", list(CHANGES))
    def test_every_value_served_is_recorded_where_verify_reads(
        self, served: RunningProxy, how: str
    ) -> None:
        """Calls made across the change either get their value, with its event in a file of
        the journal folder, or a ServiceUnavailable; the chain goes on in a new segment that
        records what was found."""
        assert read(served)[1] == "ok"
        first = live_segment(served)
        change(how, first)
        outcomes = [read(served) for _ in range(30)]
        until(lambda: live_segment(served) != first)
        outcomes.append(read(served))

        codes = {code for _, code in outcomes}
        assert codes <= {"ok", "ServiceUnavailable"}, codes
        assert outcomes[-1][1] == "ok"
        recorded = {
            e["request"]["id"]
            for e in served.events("access")
            if e["outcome"]["status"] == "success"
        }
        assert {request_id for request_id, _ in outcomes if request_id} <= recorded
        (header,) = [
            e
            for e in served.events("lifecycle")
            if e["detail"].get("reason", "").startswith("file_")
        ]
        assert header["detail"]["previous_segment"] == first.name
        assert readyz(served, served.admin_token)[0] == 200
        assert Metrics(served).value("keyledger_journal_files_lost_total") == 1

    def test_refused_and_unready_while_no_new_segment_can_be_made(
        self, served: RunningProxy
    ) -> None:
        """With the journal folder gone and a file in its place, reads are refused and
        /readyz is 503 naming the journal; once the folder can be made, both recover."""
        assert read(served)[1] == "ok"
        shutil.rmtree(served.journal)
        os.close(os.open(served.journal, os.O_CREAT | os.O_WRONLY))

        def journal_check() -> dict[str, Any]:
            status, body = readyz(served, served.admin_token)
            assert status == 200 or not body["ready"]
            return dict(body["checks"]["journal"])

        # Unready at once (the folder probe fails); then the journal itself says why.
        until(lambda: "no new segment can be written" in journal_check()["detail"])
        assert not journal_check()["ok"]
        assert read(served) == (None, "ServiceUnavailable")

        os.unlink(served.journal)
        until(lambda: readyz(served, served.admin_token)[0] == 200)
        request_id, code = read(served)
        assert code == "ok"
        assert request_id in {e["request"]["id"] for e in served.events("access")}


class TestStartBehindCheckpoints:
    def test_serve_refuses_a_journal_cut_behind_its_checkpoints_in_one_line(
        self, tmp_path: Path, moto_url: str, store: Any
    ) -> None:
        """With the last line cut off a stopped proxy's journal, `keyledger serve` exits 2
        with one line naming both seqs and the command that moves the evidence aside; the
        proxy starts afresh once that command has run."""
        served = start_proxy(tmp_path, moto_url)
        served.client().list_secrets()
        assert served.stop()[0] == 0
        (segment,) = [s.path for s in chain_segments(served.journal_dir, "cli")]
        subprocess.run(["sed", "-i", "$d", str(segment)], check=True)
        cut = segment.read_bytes()

        code, stderr, _ = serve_once(served.config, served.env)

        assert code == 2
        line = stderr.strip().splitlines()[-1]
        assert line.startswith("keyledger: the journal in ")
        assert f"keyledger audit verify {served.journal_dir}" in line
        assert segment.read_bytes() == cut  # nothing was written
        move = line.rsplit("`mv ", 1)[1].rstrip("`").split()
        subprocess.run(["mv", *move], check=True)
        log = tmp_path / "again.log"
        process = spawn_serve(served.config, served.env, log)
        wait_listening(process, int(served.url.rsplit(":", 1)[1]), log)
        process.terminate()
        assert process.wait(timeout=30) == 0

    def test_a_journal_file_that_cannot_be_opened_is_one_line(
        self, tmp_path: Path, moto_url: str
    ) -> None:
        """A folder where the first segment file should be: exit 2, one line naming the
        journal and the path, no traceback."""
        prepared = prepare_config(tmp_path, moto_url)
        (tmp_path / "audit" / "cli.000000000001.jsonl").mkdir(parents=True)

        code, stderr, _ = serve_once(prepared.path, prepared.env)

        assert code == 2
        assert "Traceback" not in stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("keyledger: audit.journal: cannot open the journal in ")
        assert "cli.000000000001.jsonl: Is a directory" in last
