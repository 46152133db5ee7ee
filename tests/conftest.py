"""Fixtures shared by the suite: a real moto server and a real running keyledger.

The proxy runs on its own event loop in a background thread and listens on a real socket,
so the tests drive it with the real, synchronous boto3 and AWS CLI, exactly as a service
would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import ssl
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import orjson
import pytest
from aiohttp import web
from cryptography.fernet import Fernet

from keyledger import sigv4
from keyledger.backends._loop_thread import LoopThread
from keyledger.proxy.admin import admin_app_for
from keyledger.proxy.app import CONNECTIONS, make_app
from keyledger.proxy.audit.checkpoints import generate_key_pair
from keyledger.proxy.audit.segments import discover
from keyledger.proxy.auth import IdentityStore, IssuedKey
from keyledger.proxy.config import Config, parse_config
from keyledger.proxy.connections import GuardedSite

REGION = "us-east-1"

TEST_POLICY = """\
version: 1
groups:
  auditors: [auditor]
roles:
  - id: app
    rules:
      - id: app-read
        actions: [read, describe, list]
        resources: ["aws:app/*"]
      - id: app-manage
        actions: [write, rotate, delete]
        resources: ["aws:app/*"]
      - id: app-no-forbidden
        effect: deny
        actions: ["*"]
        resources: ["aws:app/forbidden*"]
      - id: app-no-backups
        effect: deny
        actions: ["*"]
        resources: ["aws:app/*-backup"]
  - id: auditor
    rules:
      - id: auditor-describe
        actions: [describe, list]
        resources: ["aws:*"]
bindings:
  - role: app
    principals: [app]
  - role: auditor
    groups: [auditors]
"""


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A real moto server (AWS Secrets Manager) on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def store(moto_url: str) -> Any:
    """A boto3 client straight to the store (not through keyledger), reset per test."""
    reset = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")  # noqa: S310
    urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310 (loopback http)
    return boto3.client(
        "secretsmanager",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="store-admin",
        aws_secret_access_key="store-admin",
    )


@dataclass
class RunningProxy:
    """keyledger serving on a real socket from a background thread."""

    config: Config
    keys: dict[str, IssuedKey]
    url: str = ""
    admin_url: str = ""  # the admin API, when the config has one
    app: web.Application | None = None
    _thread: LoopThread = field(default_factory=lambda: LoopThread("keyledger", timeout=30))
    _runners: list[web.AppRunner] = field(default_factory=list)

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        """keyledger's loop, for tests that schedule on it."""
        return self._thread.loop

    @property
    def admin_token(self) -> str:
        assert self.config.admin is not None
        assert self.config.admin.token_file is not None
        return self.config.admin.token_file.read_text().strip()

    def start(self) -> None:
        self._thread.start(self._serve)

    def stop(self) -> None:
        self._thread.stop(self._close)

    async def _serve(self) -> None:
        try:
            self.app = app = await make_app(self.config)
            self.url = await self._listen(app)
            if self.config.admin is not None:
                # As `keyledger serve` wires it: the data plane's objects, another listener.
                self.admin_url = await self._listen(admin_app_for(app, self.admin_token.encode()))
        except BaseException:
            await self._close()
            raise

    async def _listen(self, app: web.Application) -> str:
        self._runners.append(runner := await listen(app))
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def _close(self) -> None:
        while self._runners:
            await self._runners.pop().cleanup()

    @property
    def journal(self) -> Path:
        """The journal folder."""
        return self.config.audit.journal

    def events(self, *types: str) -> list[dict[str, Any]]:
        """Every event in the journal, in chain order, optionally only of the given types."""
        return journal_events(self.journal, *types)

    def client(self, identity: str = "app", **overrides: Any) -> Any:
        """A boto3 Secrets Manager client signing as ``identity``, pointed at keyledger."""
        key = self.keys[identity]
        return sm_client(self.url, key.access_key_id, key.secret_access_key, **overrides)


async def listen(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    """``app`` served on a free loopback port (the runner's ``addresses``), on this loop;
    the data plane behind its connection guard, as ``keyledger serve`` listens."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        if (guard := app.get(CONNECTIONS)) is not None:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            await GuardedSite(runner, sock, guard, ssl_context=ssl_context).start()
        else:
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def journal_events(directory: Path, *types: str) -> list[dict[str, Any]]:
    """Every event of every segment in ``directory``, in seq order, optionally by type."""
    events = [
        orjson.loads(line)
        for segment in discover(directory).all_segments()
        for line in segment.path.read_bytes().splitlines()
    ]
    return [e for e in events if not types or e["type"] in types]


def sm_client(url: str, key_id: str, secret: str, **overrides: Any) -> Any:
    """An unmodified boto3 Secrets Manager client for ``url``, one attempt per call."""
    options: dict[str, Any] = {
        "endpoint_url": url,
        "region_name": REGION,
        "aws_access_key_id": key_id,
        "aws_secret_access_key": secret,
        "config": botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    }
    options.update(overrides)
    return boto3.client("secretsmanager", **options)


def write_proxy_files(tmp_path: Path, *, policy: str = TEST_POLICY) -> dict[str, Any]:
    """Keys, identity store and policy under ``tmp_path``; returns the config document."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "identity.key").write_bytes(Fernet.generate_key())
    (keys / "fingerprint.key").write_text(secrets.token_hex(32))
    (keys / "admin.token").write_text(secrets.token_hex(24))
    generate_key_pair(keys / "checkpoint")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "app.yaml").write_text(policy)
    return {
        "listen": "127.0.0.1:0",
        "identities": {"path": "identities.json", "key_file": "keys/identity.key"},
        "policies": ["policies/"],
        "backends": {"aws": {"type": "aws", "region": REGION}},
        "audit": {
            "journal": "audit",
            "chain_id": "test",
            "fingerprint_key_file": "keys/fingerprint.key",
            "checkpoints": {"key_file": "keys/checkpoint.key"},
        },
        "admin": {"listen": "127.0.0.1:0", "token_file": "keys/admin.token"},
        "logging": {"format": "json"},
    }


def issue_keys(
    config: Config,
    *names_and_groups: tuple[str, tuple[str, ...]],
    attributes: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, IssuedKey]:
    store = IdentityStore(config.identities.path, config.identities.key_file.read_bytes())  # type: ignore[union-attr]
    return {
        name: store.create(name, groups=groups, attributes=(attributes or {}).get(name))
        for name, groups in names_and_groups
    }


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the machine's AWS settings or CA overrides, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("REQUESTS_CA_BUNDLE", None)
    env.pop("CURL_CA_BUNDLE", None)
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.update(extra)
    return env


def use_env(monkeypatch: pytest.MonkeyPatch, wanted: Mapping[str, str]) -> None:
    """This test's environment is exactly ``wanted``."""
    for name in set(os.environ) - set(wanted):
        monkeypatch.delenv(name)
    for name, value in wanted.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def store_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """keyledger's own AWS credentials for the store, found through the boto3 chain."""
    use_env(
        monkeypatch,
        clean_env(
            AWS_ACCESS_KEY_ID="keyledger-proxy", AWS_SECRET_ACCESS_KEY="keyledger-proxy-secret"
        ),
    )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_url: str) -> str:
    """An auditor's AWS settings (credentials, region, S3 and CloudWatch Logs endpoints) from
    the environment, as the audit CLI and the alert follower find them, pointed at moto."""
    use_env(
        monkeypatch,
        clean_env(
            AWS_ACCESS_KEY_ID="auditor",
            AWS_SECRET_ACCESS_KEY="auditor-secret",
            AWS_DEFAULT_REGION=REGION,
            AWS_ENDPOINT_URL_S3=moto_url,
            AWS_ENDPOINT_URL_LOGS=moto_url,
        ),
    )
    return moto_url


@pytest.fixture
def bucket(aws_env: str) -> str:
    """A new bucket with Object Lock on, as the S3 sink wants it."""
    name = f"audit-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@contextlib.contextmanager
def running_proxy(
    tmp_path: Path,
    endpoint_url: str,
    *,
    backend: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    audit: dict[str, Any] | None = None,
    policy: str = TEST_POLICY,
    attributes: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[RunningProxy]:
    """keyledger in front of ``endpoint_url``, with identities app, auditor and stranger.

    ``backend``, ``limits`` and ``audit`` add to those sections of the config document;
    ``extra`` adds top-level sections; ``attributes`` gives identities attributes.
    """
    doc = write_proxy_files(tmp_path, policy=policy)
    doc["backends"]["aws"].update(endpoint_url=endpoint_url, **(backend or {}))
    doc["audit"].update(audit or {})
    if limits:
        doc["limits"] = limits
    doc.update(extra or {})
    config = parse_config(doc, base=tmp_path, source="test")
    keys = issue_keys(
        config,
        ("app", ()),
        ("auditor", ("auditors",)),
        ("stranger", ()),
        attributes=attributes,
    )
    running = RunningProxy(config, keys)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def proxy(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> Iterator[RunningProxy]:
    """keyledger in front of the moto server."""
    with running_proxy(tmp_path, moto_url) as running:
        yield running


def signed_head(proxy: RunningProxy, body: bytes, *, key_id: str | None = None) -> bytes:
    """A GetSecretValue's head, signed by the app's key over ``body`` (or claiming another
    key id), with a Content-Length for all of ``body``."""
    key = proxy.keys["app"]
    host = proxy.url.removeprefix("http://")
    headers = sigv4.sign_headers(
        keys=sigv4.SigningKeyCache(),
        access_key_id=key_id or key.access_key_id,
        secret_key=key.secret_access_key,
        session_token=None,
        region=REGION,
        service="secretsmanager",
        method="POST",
        host=host,
        path="/",
        headers={
            "content-type": "application/x-amz-json-1.1",
            "x-amz-target": "secretsmanager.GetSecretValue",
        },
        body=body,
        now=datetime.now(UTC),
    )
    lines = [f"{name}: {value}" for name, value in {**headers, "host": host}.items()]
    return ("POST / HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\n").encode() + (
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
