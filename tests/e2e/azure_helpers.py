"""What the Azure end-to-end tests drive keyledger with: keyledger over TLS on a real socket,
Key Vault clients as a service builds them, and a record of what those clients received.

- :class:`TlsProxy`: keyledger as ``serve`` builds it (``make_app``), serving HTTPS from a
  loop in a background thread (the SDKs send bearer tokens only over HTTPS).
- :class:`StaticToken` / :class:`AsyncStaticToken`: a service's token credential handing out
  a keyledger-issued bearer token for whatever scope the challenge names.
- :class:`WireLog`: every response the SDK received, read below its authentication policy
  (azure-core's ``raw_response_hook``), so challenges and retries are seen, not inferred.
  keyledger answers every call it served with ``x-ms-request-id`` (the id its audit event
  carries); the challenge has none, as it is not a call.
- :class:`PinnedResolver`: DNS for the aiohttp transport, so ``https://payments.kv.test``
  reaches keyledger on loopback with the name (SNI, Host, certificate) intact.
- :func:`serve`: ``keyledger serve --config`` as a real process, its tokens made with
  ``keyledger identity create --token`` (:class:`ServedProcess`).
"""

from __future__ import annotations

import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from azure.core.credentials import AccessToken
from azure.core.pipeline import PipelineResponse
from azure.keyvault.secrets import SecretClient
from cryptography.fernet import Fernet

from keyledger.backends._loop_thread import LoopThread
from keyledger.devtls import client_context
from keyledger.proxy.app import METRICS, make_app
from keyledger.proxy.config import Config
from tests.conftest import clean_env, journal_events, listen
from tests.e2e.test_cli_serve import KEYLEDGER, free_port, spawn_serve, wait_listening

T = TypeVar("T")


class StaticToken:
    """A token credential that hands out ``token`` for any scope."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


class AsyncStaticToken:
    """The aio form of :class:`StaticToken`."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> AsyncStaticToken:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Seen:
    """One response a client received: its status and keyledger's request id (None for
    the challenge)."""

    method: str
    url: str
    status: int
    request_id: str | None


@dataclass
class WireLog:
    """Every response the SDK received on the wire, in order (``raw_response_hook``)."""

    seen: list[Seen] = field(default_factory=list)

    def __call__(self, response: PipelineResponse[Any, Any]) -> None:
        http = response.http_response
        self.seen.append(
            Seen(
                method=response.http_request.method,
                url=response.http_request.url,
                status=http.status_code,
                request_id=http.headers.get("x-ms-request-id"),
            )
        )

    @property
    def request_ids(self) -> list[str]:
        """keyledger's id of every call answered (challenges have none)."""
        return [s.request_id for s in self.seen if s.request_id is not None]

    @property
    def challenges(self) -> list[Seen]:
        return [s for s in self.seen if s.request_id is None]

    def clear(self) -> None:
        self.seen.clear()


def audited_once(events: list[dict[str, Any]], wire: WireLog) -> dict[str, str]:
    """Check that every call the client got an answer to is in ``events`` exactly once (a
    change: once as pending, once as its outcome) and that ``events`` hold no call the
    client did not make; returns each request id mapped to its operation."""
    finals = [e for e in events if e["outcome"]["status"] != "pending"]
    pending = Counter(e["request"]["id"] for e in events if e["outcome"]["status"] == "pending")
    recorded = Counter(e["request"]["id"] for e in finals)
    assert sorted(recorded) == sorted(wire.request_ids), (recorded, wire.seen)
    assert set(recorded.values()) <= {1}, recorded
    assert set(pending.values()) <= {1}, pending
    assert set(pending) <= set(recorded), pending
    # The challenge (no request id) is the only answer that is not a call.
    assert {s.status for s in wire.challenges} <= {401}, wire.challenges
    return {e["request"]["id"]: e["request"]["operation"] for e in finals}


class PinnedResolver(AbstractResolver):
    """Resolves the names given to a fixed address and port, and no other name."""

    def __init__(self, names: Mapping[str, tuple[str, int]]) -> None:
        self._names = dict(names)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self._names:
            raise OSError(f"PinnedResolver knows no {host}")
        address, pinned = self._names[host]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=pinned,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


@dataclass
class TlsProxy:
    """keyledger (``make_app``) serving HTTPS on a loopback port from a background thread."""

    config: Config
    context: ssl.SSLContext
    port: int = 0
    app: web.Application | None = None
    _thread: LoopThread = field(default_factory=lambda: LoopThread("keyledger", timeout=30))
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start(self._serve)

    def stop(self) -> None:
        self._thread.stop(self._close)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on keyledger's loop and wait for it."""
        return self._thread.run(coroutine)

    async def _serve(self) -> None:
        self.app = await make_app(self.config)
        self._runner = await listen(self.app, self.context)
        self.port = int(self._runner.addresses[0][1])

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def events(self, *types: str) -> list[dict[str, Any]]:
        """Every event in the journal, in chain order, optionally of the given types."""
        return journal_events(self.config.audit.journal, *types)

    def calls(self) -> list[dict[str, Any]]:
        """The journal's events about calls: access and auth_failure."""
        return self.events("access", "auth_failure")

    def requests_total(self, **labels: str) -> float:
        """``keyledger_requests_total`` for these labels (0 when never counted)."""
        assert self.app is not None
        value = self.app[METRICS].get_sample_value("keyledger_requests_total", labels)
        return value or 0.0


@dataclass
class ServedProcess:
    """`keyledger serve --config` as a real process: HTTPS data plane and admin API."""

    url: str
    admin_url: str
    admin_token: str
    config: Path
    env: dict[str, str]
    journal: Path
    log: Path  # keyledger's stderr
    process: subprocess.Popen[bytes]
    tokens: dict[str, str]  # identity -> its bearer token
    token_ids: dict[str, str]
    ca: Path

    def client(self, who: str = "app", *, wire: WireLog | None = None, **kw: Any) -> SecretClient:
        """A sync SecretClient holding ``who``'s token; ``wire`` records its responses."""
        options: dict[str, Any] = {"verify_challenge_resource": False, **kw}
        if wire is not None:
            options["raw_response_hook"] = wire
        return SecretClient(
            vault_url=self.url,
            credential=StaticToken(self.tokens[who]),
            connection_verify=str(self.ca),
            **options,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`keyledger ARGS --config CONFIG`, as an operator runs it beside the server."""
        return subprocess.run(
            [*KEYLEDGER, *args, "--config", str(self.config)],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )

    def events(self) -> list[dict[str, Any]]:
        """The journal's events about calls (access and auth_failure), in chain order."""
        return journal_events(self.journal, "access", "auth_failure")

    def metrics(self) -> str:
        """What the admin API's /metrics shows (over HTTPS, with the admin token)."""
        request = urllib.request.Request(  # noqa: S310 (https to loopback)
            f"{self.admin_url}/metrics", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(  # noqa: S310
            request, context=client_context(self.ca), timeout=10
        ) as answer:
            return str(answer.read().decode())

    def stop(self) -> int:
        """SIGTERM; keyledger's exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def serve(
    folder: Path,
    sections: Mapping[str, Any],
    *,
    policy: str,
    identities: tuple[str, ...],
    ca: Path,
) -> ServedProcess:
    """`keyledger serve --config` on free loopback ports with ``sections`` (backends,
    frontends, tls) added to a config written in ``folder``; ``identities`` get a token
    each from `keyledger identity create NAME --token`."""
    port, admin_port = free_port(), free_port()
    admin_token = secrets.token_hex(24)
    (folder / "admin.token").write_text(admin_token)
    (folder / "policies").mkdir()
    (folder / "policies" / "policy.yaml").write_text(policy)
    config = folder / "keyledger.yaml"
    document = {
        "listen": f"127.0.0.1:{port}",
        "identities": {"path": "identities.json"},
        "policies": ["policies/"],
        "audit": {"journal": "audit", "chain_id": "serve", "checkpoints": {"enabled": False}},
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token_file": "admin.token"},
        "logging": {"format": "json", "level": "debug"},
        **sections,
    }
    config.write_text(yaml.safe_dump(document))
    env = clean_env(
        KEYLEDGER_IDENTITY_KEY=Fernet.generate_key().decode(),
        KEYLEDGER_FINGERPRINT_KEY=secrets.token_hex(32),
    )
    tokens: dict[str, str] = {}
    token_ids: dict[str, str] = {}
    for who in identities:
        made = subprocess.run(
            [*KEYLEDGER, "identity", "create", who, "--token", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        fields = {line[:18].strip(): line[18:].strip() for line in made.stdout.splitlines()}
        tokens[who], token_ids[who] = fields["token"], fields["token id"]
    log = folder / "keyledger.log"
    process = spawn_serve(config, env, log)
    wait_listening(process, port, log)
    return ServedProcess(
        url=f"https://127.0.0.1:{port}",
        admin_url=f"https://127.0.0.1:{admin_port}",
        admin_token=admin_token,
        config=config,
        env=env,
        journal=folder / "audit",
        log=log,
        process=process,
        tokens=tokens,
        token_ids=token_ids,
        ca=ca,
    )
