"""`keyledger serve --dev`, tried the way a newcomer tries it: paste what it prints."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.conftest import clean_env, journal_events
from tests.e2e.test_cli_serve import KEYLEDGER, free_port


def wait_for(process: subprocess.Popen[str], text: str, timeout: float = 60) -> str:
    """Read stdout until ``text`` appears; return everything read."""
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"never printed {text!r}; got:\n{seen}")
            continue
        seen += line
    return seen


def spawn_dev(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, str], int]:
    """`keyledger serve --dev ARGS` from ``tmp_path`` on free ports: the process, its
    environment and its data-plane port."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    process = subprocess.Popen(
        [
            *(*KEYLEDGER, "serve", "--dev", *args),
            *("--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{free_port()}"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, env, port


def paster(
    banner: str, tmp_path: Path, env: dict[str, str]
) -> Callable[[str], subprocess.CompletedProcess[str]]:
    """Runs a command as a newcomer would: after pasting the banner's env-file line."""
    env_line = next(line.strip() for line in banner.splitlines() if "dev.env" in line)

    def paste(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", f"{env_line}\n{command}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return paste


def test_printed_commands_work_from_any_directory(tmp_path: Path) -> None:
    """From an empty folder, the printed env file + aws commands read and get denied."""
    process, env, port = spawn_dev(tmp_path)
    try:
        banner = wait_for(process, "Ctrl-C stops")
        assert f"http://127.0.0.1:{port}" in banner
        # The exact lines the banner tells a newcomer to paste.
        paste = paster(banner, tmp_path, env)
        allowed = re.search(r"^\s*(aws secretsmanager get-secret-value .*staging.*)$", banner, re.M)
        denied = re.search(r"^\s*(aws secretsmanager get-secret-value .*payments\S*)", banner, re.M)
        verify_line = re.search(r"^\s*keyledger (audit verify .*--public-key \S+)$", banner, re.M)
        assert allowed is not None
        assert denied is not None
        assert verify_line is not None

        ok = paste(allowed.group(1))
        assert ok.returncode == 0, ok.stderr
        assert orjson.loads(ok.stdout)["SecretString"] == "demo-staging-db-password"
        no = paste(denied.group(1))
        assert no.returncode != 0
        assert "AccessDeniedException" in no.stderr

        # The admin API, as printed: its URL and token come from dev.env.
        admin_token = (tmp_path / "var" / "keys" / "admin.token").read_text().strip()
        assert admin_token in banner
        tail = re.search(
            r'^\s*(keyledger audit tail --url "\$KEYLEDGER_ADMIN_URL") -f$', banner, re.M
        )
        assert tail is not None
        tailed = paste(f"{tail.group(1)} -n 2 --json")
        assert tailed.returncode == 0, tailed.stderr
        assert [orjson.loads(line)["type"] for line in tailed.stdout.splitlines()] == [
            "access",
            "access",
        ]
        if shutil.which("curl"):
            readyz = re.search(r"^\s*(curl .*/readyz\")$", banner, re.M)
            assert readyz is not None
            ready = paste(readyz.group(1))
            assert orjson.loads(ready.stdout)["ready"] is True, ready.stdout

        dev_env = (tmp_path / "var" / "dev.env").read_text()
        for name in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "KEYLEDGER_ADMIN_URL",
            "KEYLEDGER_ADMIN_TOKEN",
        ):
            assert f"{name}=" in dev_env
        assert "AWS_DEFAULT_REGION=us-east-1" in dev_env
        assert (tmp_path / "var" / "dev.env").stat().st_mode & 0o077 == 0
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0

    assert (tmp_path / "var" / "keys" / "checkpoint.key").stat().st_mode & 0o077 == 0
    events = journal_events(tmp_path / "var" / "audit")
    access = [
        (e["resource"]["secret"], e["decision"]["effect"]) for e in events if e["type"] == "access"
    ]
    assert access == [("staging/db/password", "allow"), ("prod/payments/api-key", "deny")]
    # Checkpoints are on from the first request: the printed verify command passes even
    # under --strict, which demands that every event is sealed by a verified signature.
    assert [e["type"] for e in events][-1] == "checkpoint"
    verified = subprocess.run(
        [*KEYLEDGER, *verify_line.group(1).split(), "--strict"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout
    assert "signatures checked" in verified.stdout


def test_dev_sinks_ship_to_the_embedded_aws_as_printed(tmp_path: Path) -> None:
    """With --sinks s3,cloudwatch, the printed aws and verify commands see the shipped events."""
    process, env, _ = spawn_dev(tmp_path, "--sinks", "s3,cloudwatch")
    try:
        banner = wait_for(process, "Ctrl-C stops")
        paste = paster(banner, tmp_path, env)
        allowed = re.search(r"^\s*(aws secretsmanager get-secret-value .*staging.*)$", banner, re.M)
        listing = re.search(r"^\s*(aws s3 ls s3://keyledger-audit --recursive)$", banner, re.M)
        verify_s3 = re.search(
            r"^\s*(keyledger audit verify s3://\S+ --public-key \S+)$", banner, re.M
        )
        verify_cw = re.search(
            r"^\s*(keyledger audit verify cloudwatch://\S+ --public-key \S+)$", banner, re.M
        )
        assert allowed is not None, banner
        assert listing is not None, banner
        assert verify_s3 is not None, banner
        assert verify_cw is not None, banner

        assert paste(allowed.group(1)).returncode == 0
        dev_env = (tmp_path / "var" / "dev.env").read_text()
        assert "AWS_ENDPOINT_URL_S3=" in dev_env
        assert "AWS_ENDPOINT_URL_LOGS=" in dev_env
        # Shipped within about a second (the dev batches wait at most 1 s to fill).
        deadline = time.monotonic() + 20
        while True:
            s3 = paste(verify_s3.group(1))
            cloudwatch = paste(verify_cw.group(1))
            shipped = "events in" in s3.stdout and "events in" in cloudwatch.stdout
            if shipped and "last seq 1," not in s3.stdout + cloudwatch.stdout:
                break
            assert time.monotonic() < deadline, s3.stdout + s3.stderr + cloudwatch.stderr
            time.sleep(0.3)
        listed = paste(listing.group(1))
        assert listed.returncode == 0, listed.stderr
        assert re.search(r"dev/\d{4}/\d\d/\d\d/000000000001-\d{12}\.jsonl\.gz", listed.stdout)
        for result in (s3, cloudwatch):
            assert result.returncode == 0, result.stdout + result.stderr
            assert "intact:" in result.stdout
            assert "signatures checked" in result.stdout
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0
