"""keyledger's own credentials for the store missing or refused: callers hear it at once.

keyledger reaches AWS Secrets Manager with its own credentials (boto3's chain), never the
caller's. When it has none, or the store refuses them, the caller gets an error its SDK does
not retry, one attempt reaches the proxy, the event names the cause, and the log says the fix.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import orjson
import pytest
import yaml
from botocore.exceptions import ClientError

from keyledger.proxy.auth import IssuedKey
from keyledger.proxy.config import parse_config
from tests.conftest import (
    REGION,
    RunningProxy,
    clean_env,
    issue_keys,
    running_proxy,
    write_proxy_files,
)
from tests.e2e.test_cli_serve import free_port
from tests.proxy.test_operate import get

MISSING = (
    "keyledger has no AWS credentials of its own for backend 'aws' (it never uses the "
    "caller's): set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or give it an "
    "instance role"
)
REFUSED = "AWS Secrets Manager refused keyledger's own credentials for backend 'aws'"
STORE_KEY_ID, STORE_SECRET = "keyledger-proxy", "keyledger-proxy-secret"


def no_credentials_env(folder: Path, **extra: str) -> dict[str, str]:
    """An environment in which botocore's chain finds no credentials at all."""
    folder.mkdir(exist_ok=True)
    (folder / "credentials").write_text("")
    (folder / "config").write_text("")
    return clean_env(
        AWS_SHARED_CREDENTIALS_FILE=str(folder / "credentials"),
        AWS_CONFIG_FILE=str(folder / "config"),
        AWS_EC2_METADATA_DISABLED="true",
        **extra,
    )


@pytest.fixture
def without_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's environment without any AWS credentials for keyledger to find."""
    wanted = no_credentials_env(tmp_path / "aws-home")
    for name in {n for n in os.environ if n.startswith("AWS_")} - set(wanted):
        monkeypatch.delenv(name)
    for name, value in wanted.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def no_credentials_proxy(
    tmp_path: Path, moto_url: str, store: Any, without_credentials: None
) -> Iterator[RunningProxy]:
    """keyledger in front of moto, with no credentials of its own."""
    store.create_secret(Name="app/db/password", SecretString="never-served")
    with running_proxy(tmp_path, moto_url) as running:
        yield running


def reset_auth(moto_url: str, count: str) -> None:
    """Make moto check every request's credentials against its IAM ("0"), or none ("inf")."""
    request = urllib.request.Request(  # noqa: S310 (loopback http)
        f"{moto_url}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(request, timeout=10).close()  # noqa: S310


@pytest.fixture
def refused_proxy(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> Iterator[RunningProxy]:
    """keyledger with credentials the store does not know (moto enforcing IAM auth)."""
    store.create_secret(Name="app/db/password", SecretString="never-served")
    reset_auth(moto_url, "0")
    try:
        with running_proxy(tmp_path, moto_url) as running:
            yield running
    finally:
        reset_auth(moto_url, "inf")


def caller(proxy: RunningProxy, mode: str) -> tuple[Any, list[str]]:
    """A boto3 client with ``mode``'s default attempts, and the list its attempts go to."""
    return caller_of(proxy.url, proxy.keys["app"], mode)


def caller_of(url: str, key: IssuedKey, mode: str) -> tuple[Any, list[str]]:
    """A boto3 client signing with ``key``, for ``url``; see :func:`caller`."""
    client = boto3.session.Session().client(
        "secretsmanager",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=key.secret_access_key,
        config=botocore.config.Config(retries={"mode": mode}),
    )
    attempts: list[str] = []
    client.meta.events.register(
        "before-send.secretsmanager", lambda request, **_: attempts.append(request.url)
    )
    return client, attempts


def failed_call(client: Any) -> dict[str, Any]:
    """The error response of a GetSecretValue that must fail."""
    with pytest.raises(ClientError) as exc:
        client.get_secret_value(SecretId="app/db/password")
    return dict(exc.value.response)


def aws_cli(proxy: RunningProxy, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The AWS CLI with its default retry settings, calling through keyledger."""
    key = proxy.keys["app"]
    env = {
        **env,
        "AWS_ACCESS_KEY_ID": key.access_key_id,
        "AWS_SECRET_ACCESS_KEY": key.secret_access_key,
        "AWS_DEFAULT_REGION": REGION,
    }
    return subprocess.run(
        [
            *(sys.executable, "-m", "awscli", "secretsmanager", "get-secret-value"),
            *("--secret-id", "app/db/password", "--endpoint-url", proxy.url, "--debug"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_fails_once_saying(proxy: RunningProxy, reason: str, tmp_path: Path) -> None:
    """The AWS CLI with its default retries: one request, a non-zero exit, ``reason`` shown,
    one audit event."""
    done = aws_cli(proxy, no_credentials_env(tmp_path / "cli-home"))
    assert done.returncode != 0  # 255 from CLI v1, 254 from v2
    assert "(AccessDeniedException)" in done.stderr
    assert reason in done.stderr
    assert done.stderr.count("Sending http request:") == 1
    assert len(proxy.events("access")) == 1


class TestNoCredentials:
    @pytest.mark.parametrize("mode", ["legacy", "standard", "adaptive"])
    def test_boto3_gets_a_non_retried_error_after_one_attempt(
        self, no_credentials_proxy: RunningProxy, mode: str
    ) -> None:
        """With default retries, boto3 sends once and gets AccessDeniedException (400)."""
        client, attempts = caller(no_credentials_proxy, mode)
        response = failed_call(client)
        assert response["Error"]["Code"] == "AccessDeniedException"
        assert response["Error"]["Message"] == MISSING
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert response["ResponseMetadata"]["RetryAttempts"] == 0
        assert len(attempts) == 1

    def test_the_one_attempt_is_audited_as_missing_store_credentials(
        self, no_credentials_proxy: RunningProxy
    ) -> None:
        """The call leaves exactly one event: allowed, then an error naming the cause."""
        client, _ = caller(no_credentials_proxy, "legacy")
        failed_call(client)
        (event,) = no_credentials_proxy.events("access")
        assert event["decision"]["effect"] == "allow"
        assert event["outcome"]["status"] == "error"
        assert event["outcome"]["code"] == "store_credentials_missing"

    def test_the_aws_cli_fails_at_once_saying_why(
        self, no_credentials_proxy: RunningProxy, tmp_path: Path
    ) -> None:
        """The AWS CLI, default retries, sends once, fails and prints keyledger's reason."""
        cli_fails_once_saying(no_credentials_proxy, MISSING, tmp_path)

    def test_the_caller_is_answered_without_asking_the_chain_again(
        self, no_credentials_proxy: RunningProxy
    ) -> None:
        """A burst of calls is answered from the remembered miss, each one audited."""
        client, attempts = caller(no_credentials_proxy, "standard")
        for _ in range(3):
            assert failed_call(client)["Error"]["Message"] == MISSING
        assert len(attempts) == 3
        codes = [e["outcome"]["code"] for e in no_credentials_proxy.events("access")]
        assert codes == ["store_credentials_missing"] * 3


class TestRefusedCredentials:
    @pytest.mark.parametrize("mode", ["legacy", "standard"])
    def test_boto3_gets_a_non_retried_error_after_one_attempt(
        self, refused_proxy: RunningProxy, mode: str
    ) -> None:
        """When the store refuses keyledger's key, boto3 sends once and is told it is not
        the caller's key that was refused."""
        client, attempts = caller(refused_proxy, mode)
        response = failed_call(client)
        assert response["Error"]["Code"] == "AccessDeniedException"
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert response["ResponseMetadata"]["RetryAttempts"] == 0
        assert len(attempts) == 1
        message = response["Error"]["Message"]
        assert message.startswith(REFUSED)
        assert "(InvalidClientTokenId), not the caller's" in message
        assert STORE_KEY_ID not in message
        assert STORE_SECRET not in message

    def test_the_one_attempt_is_audited_as_refused_store_credentials(
        self, refused_proxy: RunningProxy
    ) -> None:
        """The call leaves one error event, and no event carries keyledger's own keys."""
        client, _ = caller(refused_proxy, "legacy")
        failed_call(client)
        (event,) = refused_proxy.events("access")
        assert event["outcome"] == {**event["outcome"], "status": "error"}
        assert event["outcome"]["code"] == "store_credentials_refused"
        journal = b"".join(p.read_bytes() for p in refused_proxy.journal.rglob("*") if p.is_file())
        assert STORE_SECRET.encode() not in journal
        assert STORE_KEY_ID.encode() not in journal

    def test_the_aws_cli_fails_at_once_saying_why(
        self, refused_proxy: RunningProxy, tmp_path: Path
    ) -> None:
        """The AWS CLI, default retries, sends once and prints that keyledger was refused."""
        cli_fails_once_saying(refused_proxy, REFUSED, tmp_path)


class TestServeWithoutCredentials:
    def test_start_up_readiness_and_log_say_why_once(
        self, tmp_path: Path, moto_url: str, store: Any
    ) -> None:
        """`keyledger serve` without credentials starts, warns, is not ready, and logs the
        cause and its fix once however many calls fail."""
        doc = write_proxy_files(tmp_path)
        port, admin_port = free_port(), free_port()
        doc["listen"] = f"127.0.0.1:{port}"
        doc["admin"]["listen"] = f"127.0.0.1:{admin_port}"
        doc["backends"]["aws"]["endpoint_url"] = moto_url
        keys = issue_keys(parse_config(doc, base=tmp_path, source="test"), ("app", ()))
        config = tmp_path / "keyledger.yaml"
        config.write_text(yaml.safe_dump(doc))
        log = tmp_path / "keyledger.log"
        env = no_credentials_env(tmp_path / "aws-home")
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "keyledger", "serve", "--config", str(config)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            client, _ = caller_of(f"http://127.0.0.1:{port}", keys["app"], "standard")
            for _ in range(3):
                assert failed_call(client)["Error"]["Message"] == MISSING
            token = (tmp_path / "keys" / "admin.token").read_text().strip()
            status, body = get(f"http://127.0.0.1:{admin_port}/readyz", token)
            ready = orjson.loads(body)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        assert status == 503
        assert ready["checks"]["backend"] == {"ok": False, "detail": f"aws: {MISSING}"}
        lines = [orjson.loads(line) for line in log.read_text().splitlines() if line]
        missing = [line for line in lines if line["event"] == "store_credentials_missing"]
        assert len(missing) == 1, lines
        assert missing[0]["error"] == MISSING
        assert missing[0]["backend"] == "aws"
        (warning,) = [line for line in lines if line["event"] == "backend_unreachable"]
        assert warning["error"] == MISSING
