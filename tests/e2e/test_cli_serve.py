"""`keyledger serve --config` as a real process, driven by the AWS CLI and boto3.

These tests see keyledger exactly as an operator does: a config file, a command, its logs
on stderr, and a journal on disk.
"""

from __future__ import annotations

import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
import yaml
from botocore.exceptions import ClientError
from cryptography.fernet import Fernet

from keyledger.proxy.audit.segments import segment_path
from tests.conftest import REGION, TEST_POLICY, clean_env, journal_events, sm_client

KEYLEDGER = [sys.executable, "-m", "keyledger"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_serve(
    config: Path, env: dict[str, str], log: Path, args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """`keyledger serve --config`, its stderr copied to ``log`` by a thread of ours.

    Not a pipe left unread (it fills after ~64 KiB of logs and then blocks keyledger's event
    loop), nor the file itself (a test limiting keyledger's file sizes would cut its log).
    """
    process = subprocess.Popen(
        [*KEYLEDGER, "serve", "--config", str(config), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def copy(stream: IO[bytes]) -> None:
        with stream, log.open("ab") as out:  # closed at EOF: read_log waits for that
            for line in stream:
                out.write(line)
                out.flush()

    assert process.stderr is not None
    threading.Thread(target=copy, args=(process.stderr,), daemon=True).start()
    return process


def wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Return once ``port`` on loopback accepts connections; if keyledger exits first or
    30 s pass, stop it and raise with what it logged."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=5)
                said = log.read_text()
                raise RuntimeError(f"keyledger is not listening on {port}:\n{said}") from None
            time.sleep(0.05)


@dataclass
class ServedProxy:
    url: str
    journal_dir: Path
    env: dict[str, str]  # keyledger's own environment (keys, store credentials)
    config: Path
    process: subprocess.Popen[bytes]
    key_id: str
    secret: str
    admin_url: str  # the admin API ("" when the test turned it off)
    admin_token: str
    # stderr goes to a file: a pipe nobody reads fills up (~64 KiB of debug logs, some 240
    # requests) and then blocks keyledger's event loop on its next log line.
    log: Path

    def client(self, **overrides: Any) -> Any:
        return sm_client(self.url, self.key_id, self.secret, **overrides)

    def aws(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The AWS CLI, configured only through the environment, as `dev.env` does it."""
        env = clean_env(
            AWS_ENDPOINT_URL=self.url,
            AWS_ACCESS_KEY_ID=self.key_id,
            AWS_SECRET_ACCESS_KEY=self.secret,
            AWS_DEFAULT_REGION=REGION,
            AWS_MAX_ATTEMPTS="1",
        )
        return subprocess.run(
            [sys.executable, "-m", "awscli", *args, "--output", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> tuple[int, str]:
        """SIGTERM, wait; the exit code and everything keyledger logged."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return self.process.returncode, self.read_log()

    def read_log(self) -> str:
        """Everything keyledger logged, once it has exited (the copier then sees EOF)."""
        deadline = time.monotonic() + 10
        while self.process.stderr is not None and not self.process.stderr.closed:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return self.log.read_text()


@dataclass
class PreparedConfig:
    """A complete config for ``keyledger serve`` (keys made), not yet served."""

    path: Path
    env: dict[str, str]
    port: int
    admin_port: int
    admin_token: str


def prepare_config(
    tmp_path: Path,
    moto_url: str,
    *,
    tls: tuple[Path, Path] | None = None,
    extra: dict[str, Any] | None = None,
) -> PreparedConfig:
    port, admin_port = free_port(), free_port()
    admin_token = secrets.token_hex(24)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "admin.token").write_text(admin_token)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "app.yaml").write_text(TEST_POLICY)
    config = tmp_path / "keyledger.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": f"127.0.0.1:{port}",
                "identities": {"path": "identities.json"},
                "policies": ["policies/"],
                "backends": {"aws": {"type": "aws", "region": REGION, "endpoint_url": moto_url}},
                "audit": {
                    "journal": "audit",
                    "chain_id": "cli",
                    "checkpoints": {"key_file": "keys/checkpoint.key"},
                },
                "logging": {"format": "json", "level": "debug"},
                "admin": {"listen": f"127.0.0.1:{admin_port}", "token_file": "keys/admin.token"},
                **({"tls": {"cert": str(tls[0]), "key": str(tls[1])}} if tls else {}),
                **(extra or {}),
            }
        )
    )
    env = clean_env(
        KEYLEDGER_IDENTITY_KEY=Fernet.generate_key().decode(),
        KEYLEDGER_FINGERPRINT_KEY=secrets.token_hex(32),
        AWS_ACCESS_KEY_ID="keyledger-proxy",
        AWS_SECRET_ACCESS_KEY="keyledger-proxy-secret",
    )
    subprocess.run(
        [*KEYLEDGER, "keys", "generate", "--out", str(tmp_path / "keys" / "checkpoint")],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return PreparedConfig(config, env, port, admin_port, admin_token)


def start_proxy(
    tmp_path: Path,
    moto_url: str,
    *,
    tls: tuple[Path, Path] | None = None,
    extra: dict[str, Any] | None = None,
    args: Sequence[str] = (),
) -> ServedProxy:
    prepared = prepare_config(tmp_path, moto_url, tls=tls, extra=extra)
    config, env, port = prepared.path, prepared.env, prepared.port
    admin_port, admin_token = prepared.admin_port, prepared.admin_token
    created = subprocess.run(
        [*KEYLEDGER, "identity", "create", "app", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    fields = {line[:18].strip(): line[18:].strip() for line in created.stdout.splitlines() if line}
    log = tmp_path / "keyledger.log"
    process = spawn_serve(config, env, log, args)
    wait_listening(process, port, log)
    admin = yaml.safe_load(config.read_text()).get("admin") or {}
    admin_url = ""
    if admin.get("enabled", True):
        scheme = "https" if tls else "http"
        admin_url = f"{scheme}://{admin.get('listen', f'127.0.0.1:{admin_port}')}"
    return ServedProxy(
        url=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
        journal_dir=tmp_path / "audit",
        env=env,
        config=config,
        process=process,
        key_id=fields["access key id"],
        secret=fields["secret access key"],
        admin_url=admin_url,
        admin_token=admin_token,
        log=log,
    )


@pytest.fixture
def served(tmp_path: Path, moto_url: str, store: Any) -> Iterator[ServedProxy]:
    proxy = start_proxy(tmp_path, moto_url)
    yield proxy
    proxy.stop()


def verify(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYLEDGER, "audit", "verify", str(path), *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestServe:
    def test_aws_cli_reads_and_is_denied_through_keyledger(
        self, served: ServedProxy, store: Any
    ) -> None:
        """The AWS CLI, pointed at keyledger by env vars only, reads and gets denied."""
        store.create_secret(Name="app/db/password", SecretString="cli-visible")
        store.create_secret(Name="app/forbidden", SecretString="cli-hidden")

        ok = served.aws("secretsmanager", "get-secret-value", "--secret-id", "app/db/password")
        assert ok.returncode == 0, ok.stderr
        assert orjson.loads(ok.stdout)["SecretString"] == "cli-visible"

        denied = served.aws("secretsmanager", "get-secret-value", "--secret-id", "app/forbidden")
        assert denied.returncode != 0
        assert "AccessDeniedException" in denied.stderr
        assert "cli-hidden" not in denied.stdout + denied.stderr

        listed = served.aws("secretsmanager", "list-secrets")
        assert {s["Name"] for s in orjson.loads(listed.stdout)["SecretList"]} == {"app/db/password"}
        code, _ = served.stop()
        assert code == 0

    def test_identity_changes_apply_to_the_running_proxy(
        self, served: ServedProxy, store: Any
    ) -> None:
        """A key revoked with `keyledger identity revoke` stops working without a restart."""
        store.create_secret(Name="app/db/password", SecretString="x")
        assert served.client().get_secret_value(SecretId="app/db/password")["Name"]

        def identity(*args: str) -> str:
            return subprocess.run(
                [*KEYLEDGER, "identity", *args, "--config", str(served.config)],
                env=served.env,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout

        rotated = {
            line[:18].strip(): line[18:].strip() for line in identity("rotate", "app").splitlines()
        }

        def old_key_error() -> str | None:
            try:
                served.client().get_secret_value(SecretId="app/db/password")
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])
            return None

        deadline = time.monotonic() + 10
        while (code := old_key_error()) is None:
            assert time.monotonic() < deadline, "the old key still works"
            time.sleep(0.2)
        assert code == "UnrecognizedClientException"
        new_client = served.client(
            aws_access_key_id=rotated["access key id"],
            aws_secret_access_key=rotated["secret access key"],
        )
        assert new_client.get_secret_value(SecretId="app/db/password")["SecretString"] == "x"
        assert "revoked" in identity("list")

    def test_sighup_reloads_the_policy(self, tmp_path: Path, moto_url: str, store: Any) -> None:
        """With file watching off, an edited policy applies on SIGHUP, and the journal
        records the reload and still verifies."""
        served = start_proxy(tmp_path, moto_url, extra={"policy_reload": {"watch": False}})
        try:
            name = f"app/hup-{time.monotonic_ns()}"
            store.create_secret(Name=name, SecretString="x")
            client = served.client()
            assert client.get_secret_value(SecretId=name)["SecretString"] == "x"
            policy = tmp_path / "policies" / "app.yaml"
            policy.write_text(
                TEST_POLICY.replace("actions: [read, describe, list]", "actions: [list]")
            )
            time.sleep(1.5)  # watching is off: nothing happens by itself
            assert client.get_secret_value(SecretId=name)["SecretString"] == "x"

            served.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while (error := read_error(client, name)) is None:
                assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
                time.sleep(0.1)
            assert error == "AccessDeniedException"
        finally:
            exit_code, err = served.stop()
        assert exit_code == 0, err
        journal = segment_path(served.journal_dir, "cli", 1)
        reloads = [
            e
            for e in map(orjson.loads, journal.read_bytes().splitlines())
            if e["type"] == "policy_reload"
        ]
        assert [(e["detail"]["cause"], e["outcome"]["status"]) for e in reloads] == [
            ("signal", "success")
        ]
        assert verify(served.journal_dir).returncode == 0

    def test_canary_value_never_leaves_the_response_body(
        self, served: ServedProxy, store: Any
    ) -> None:
        """A canary secret appears in no journal line, log line or error body."""
        canary = f"CANARY-{secrets.token_hex(12)}"
        written = f"WRITTEN-CANARY-{secrets.token_hex(12)}"
        store.create_secret(Name="app/canary", SecretString=canary)
        store.create_secret(Name="app/forbidden-canary", SecretString=canary)
        client = served.client()
        bodies: list[str] = []

        assert client.get_secret_value(SecretId="app/canary")["SecretString"] == canary
        batch = client.batch_get_secret_value(SecretIdList=["app/canary", "app/forbidden-canary"])
        assert [v["SecretString"] for v in batch["SecretValues"]] == [canary]
        bodies.append(repr(batch["Errors"]))
        client.put_secret_value(SecretId="app/canary", SecretString=written)
        calls: list[Callable[[], object]] = [
            lambda: client.get_secret_value(SecretId="app/forbidden-canary"),
            lambda: client.put_secret_value(SecretId="app/forbidden-canary", SecretString=written),
            lambda: client.create_secret(Name="app/canary", SecretString=written),
            lambda: client.get_secret_value(SecretId="app/canary", VersionId="0" * 32),
            lambda: served.client(aws_secret_access_key="wrong").put_secret_value(
                SecretId="app/canary", SecretString=written
            ),
        ]
        for call in calls:
            with pytest.raises(ClientError) as exc:
                call()
            bodies.append(repr(exc.value.response))
        cli = served.aws("secretsmanager", "get-secret-value", "--secret-id", "app/canary")
        assert orjson.loads(cli.stdout)["SecretString"] == written

        code, logs = served.stop()
        assert code == 0
        journal = b"".join(p.read_bytes() for p in served.journal_dir.glob("*.jsonl"))
        assert journal.count(b'"type":"access"') >= 8
        for text in (journal.decode(), logs, *bodies):
            assert canary not in text
            assert written not in text
        assert '"event": "request"' in logs or '"event":"request"' in logs

    def test_journal_verifies_and_every_tampering_is_caught(
        self, served: ServedProxy, store: Any
    ) -> None:
        """`keyledger audit verify` passes on the real journal and fails on any edit."""
        store.create_secret(Name="app/a", SecretString="x")
        client = served.client()
        for _ in range(5):
            client.get_secret_value(SecretId="app/a")
        served.stop()
        journal = segment_path(served.journal_dir, "cli", 1)
        public_key = str(served.journal_dir.parent / "keys" / "checkpoint.pub")
        intact = verify(served.journal_dir, "--public-key", public_key, "--strict")
        assert intact.returncode == 0, intact.stdout
        assert "intact" in intact.stdout
        lines = journal.read_bytes().splitlines(keepends=True)
        # start, the identity found at start, five reads, stop, the closing checkpoint
        assert len(lines) == 9
        assert orjson.loads(lines[1])["detail"]["event"] == "identity_issued"
        assert orjson.loads(lines[-1])["type"] == "checkpoint"

        cases = {
            "edited": [*lines[:3], lines[3].replace(b'"app"', b'"eve"'), *lines[4:]],
            "deleted": [*lines[:3], *lines[4:]],
            "reordered": [*lines[:3], lines[4], lines[3], *lines[5:]],
            "inserted": [*lines[:3], lines[2], *lines[3:]],
        }
        expected = {
            "edited": "seq 4: hash mismatch",
            "deleted": "seq 5: gap: seq 4 missing",
            "reordered": "seq 5: gap: seq 4 missing",
            "inserted": "seq 3: out of order or repeated",
        }
        for name, content in cases.items():
            journal.write_bytes(b"".join(content))
            result = verify(journal)
            assert result.returncode == 1, name
            assert expected[name] in result.stdout, (name, result.stdout)
            assert f"{journal}:4:" in result.stdout, (name, result.stdout)

        # Cutting the end, checkpoint and all, leaves the checkpoint file reaching past it.
        journal.write_bytes(b"".join(lines[:5]))
        result = verify(served.journal_dir, "--public-key", public_key)
        assert result.returncode == 1
        assert "seals seq 8 (its checkpoint event is seq 9), but the journal ends at seq 5" in (
            result.stdout
        ), result.stdout


def read_error(client: Any, name: str) -> str | None:
    """The error code reading ``name`` gets, or None if it is served."""
    try:
        client.get_secret_value(SecretId=name)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return None


def read_or_error(served: ServedProxy) -> str:
    """The value of app/db/password, or the error code (one client per call: thread-safe)."""
    try:
        return str(served.client().get_secret_value(SecretId="app/db/password")["SecretString"])
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])


def admin_get(served: ServedProxy, path: str) -> tuple[int, Any]:
    """GET on the admin API with the token; the status and the decoded JSON body."""
    request = urllib.request.Request(  # noqa: S310 (loopback http)
        served.admin_url + path, headers={"Authorization": f"Bearer {served.admin_token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


class TestFailClosed:
    def test_no_secret_is_served_while_the_journal_cannot_be_written(
        self, tmp_path: Path, moto_url: str, store: Any
    ) -> None:
        """When the journal write fails, reads are refused; when it recovers, they resume."""
        store.create_secret(Name="app/db/password", SecretString="guarded")
        served = start_proxy(tmp_path, moto_url)
        try:
            client = served.client()
            assert client.get_secret_value(SecretId="app/db/password")["SecretString"] == "guarded"
            journal = segment_path(served.journal_dir, "cli", 1)
            size = journal.stat().st_size
            # The kernel refuses writes past this size: a full disk, as the proxy sees it.
            _, hard = resource.prlimit(served.process.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(served.process.pid, resource.RLIMIT_FSIZE, (size, hard))
            for _ in range(3):
                with pytest.raises(ClientError) as exc:
                    client.get_secret_value(SecretId="app/db/password")
                assert exc.value.response["Error"]["Code"] == "ServiceUnavailable"
                assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
                assert "guarded" not in repr(exc.value.response)
            assert journal.stat().st_size == size
            with ThreadPoolExecutor(16) as pool:
                outcomes = list(pool.map(lambda _: read_or_error(served), range(32)))
            assert outcomes == ["ServiceUnavailable"] * 32
            assert journal.stat().st_size == size

            resource.prlimit(served.process.pid, resource.RLIMIT_FSIZE, (hard, hard))
            assert client.get_secret_value(SecretId="app/db/password")["SecretString"] == "guarded"
            with ThreadPoolExecutor(16) as pool:
                outcomes = list(pool.map(lambda _: read_or_error(served), range(32)))
            assert outcomes == ["guarded"] * 32
        finally:
            code, logs = served.stop()
        assert code == 0
        assert "journal_write_failed" in logs
        assert verify(served.journal_dir).returncode == 0
        reads = [
            orjson.loads(line)
            for line in (segment_path(served.journal_dir, "cli", 1)).read_bytes().splitlines()
            if b'"GetSecretValue"' in line
        ]
        assert [r["outcome"]["status"] for r in reads] == ["success"] * 34

    def test_readyz_is_503_while_the_journal_cannot_be_written(
        self, tmp_path: Path, moto_url: str, store: Any
    ) -> None:
        """A load balancer stops sending traffic to a replica that could not audit it, and
        sends it again once the journal can be written."""
        store.create_secret(Name="app/db/password", SecretString="guarded")
        served = start_proxy(tmp_path, moto_url)
        try:
            assert admin_get(served, "/readyz")[0] == 200
            journal = segment_path(served.journal_dir, "cli", 1)
            _, hard = resource.prlimit(served.process.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(
                served.process.pid, resource.RLIMIT_FSIZE, (journal.stat().st_size, hard)
            )
            assert read_or_error(served) == "ServiceUnavailable"

            unready = admin_get(served, "/readyz")
            again = admin_get(served, "/readyz")  # probing does not mend it by itself

            resource.prlimit(served.process.pid, resource.RLIMIT_FSIZE, (hard, hard))
            ready = admin_get(served, "/readyz")
            served_after = read_or_error(served)
        finally:
            code, _ = served.stop()

        assert unready[0] == 503
        assert again[0] == 503
        checks = unready[1]["checks"]
        assert checks["journal"]["ok"] is False
        assert "cannot write" in checks["journal"]["detail"]
        assert all(checks[name]["ok"] for name in ("config", "policy", "backend"))
        assert ready[0] == 200
        assert ready[1]["ready"] is True
        assert served_after == "guarded"
        assert code == 0
        assert verify(served.journal_dir).returncode == 0
        # Readiness probed the journal the way a request would: the recovery is on record.
        mended = [e["detail"]["event"] for e in journal_events(served.journal_dir, "lifecycle")]
        assert "journal_writable" in mended


def serve_once(config: Path, env: dict[str, str], *args: str) -> tuple[int, str, float]:
    """`keyledger serve --config` expected to exit by itself: code, stderr, seconds taken."""
    began = time.monotonic()
    done = subprocess.run(
        [*KEYLEDGER, "serve", "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr, time.monotonic() - began


def held_port() -> socket.socket:
    """A loopback port taken by a plain listening socket, as another program holds one."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


class TestStartupFailsFast:
    @pytest.mark.parametrize(
        ("taken", "args"),
        [
            ("data", ()),
            ("admin", ()),
            ("admin", ("--workers", "2")),
            ("grpc", ()),
            ("grpc", ("--workers", "2")),
        ],
        ids=["data-port", "admin-port", "admin-port-workers", "grpc-port", "grpc-port-workers"],
    )
    def test_a_taken_port_fails_at_once_with_one_line(
        self, tmp_path: Path, moto_url: str, taken: str, args: tuple[str, ...]
    ) -> None:
        """A taken data or admin port ends start-up with one line and exit 2, before the
        journal, the sinks or the workers start (nothing logged, nothing written)."""
        with held_port() as holder:
            port = holder.getsockname()[1]
            listen: dict[str, Any] = {"listen": f"127.0.0.1:{port}"}
            if taken == "admin":
                listen = {
                    "admin": {"listen": f"127.0.0.1:{port}", "token_file": "keys/admin.token"}
                }
            if taken == "grpc":  # Google's gRPC API, on a port of its own
                listen = {
                    "backends": {"gcp": {"type": "gcp", "projects": {"p": "p"}}},
                    "frontends": {"gcp": {"grpc_listen": f"127.0.0.1:{port}"}},
                }
            # A sink that cannot reach its store: it would warn for seconds if it started.
            sink = {
                "type": "cloudwatch",
                "log_group": "g",
                "region": REGION,
                "endpoint_url": "http://127.0.0.1:9",
            }
            audit = {
                "journal": "audit",
                "chain_id": "cli",
                "checkpoints": {"key_file": "keys/checkpoint.key"},
                "sinks": [sink],
            }
            prepared = prepare_config(tmp_path, moto_url, extra={**listen, "audit": audit})
            code, err, took = serve_once(prepared.path, prepared.env, *args)

        what, choose = {
            "data": ("", "--listen HOST:PORT, or set listen"),
            "admin": ("admin API: ", "--admin-listen HOST:PORT, or set admin.listen"),
            "grpc": ("gRPC API: ", "set frontends.gcp.grpc_listen"),
        }[taken]
        fix = f"is another keyledger running? Choose another port with {choose}"
        assert err.splitlines() == [
            f"keyledger: {what}cannot listen on 127.0.0.1:{port}: Address already in use ({fix})"
        ]
        assert code == 2
        assert not (tmp_path / "audit").exists()
        assert took < 10  # the interpreter's start-up; the sinks' retries took longer

    def test_missing_tls_certificate_names_the_setting_and_its_line(
        self, tmp_path: Path, moto_url: str
    ) -> None:
        """A TLS file that cannot be read is reported at tls.cert's file:line:col, with how
        to make a certificate."""
        prepared = prepare_config(
            tmp_path, moto_url, tls=(tmp_path / "cert.pem", tmp_path / "key.pem")
        )
        line = next(
            number
            for number, text in enumerate(prepared.path.read_text().splitlines(), 1)
            if text.strip().startswith("cert:")
        )

        code, err, _ = serve_once(prepared.path, prepared.env)

        assert code == 2
        (message,) = err.splitlines()
        assert message.startswith(
            f"keyledger: {prepared.path}:{line}:9: tls.cert: cannot read {tmp_path}/cert.pem: "
            "No such file or directory (make a self-signed one for testing: openssl req -x509"
        ), message

    def test_a_file_that_is_not_a_certificate_is_named(self, tmp_path: Path, moto_url: str) -> None:
        """Unreadable PEM is reported with both paths, the config position and the fix."""
        (tmp_path / "cert.pem").write_text("not a certificate\n")
        (tmp_path / "key.pem").write_text("not a key\n")
        prepared = prepare_config(
            tmp_path, moto_url, tls=(tmp_path / "cert.pem", tmp_path / "key.pem")
        )

        code, err, _ = serve_once(prepared.path, prepared.env)

        assert code == 2
        (message,) = err.splitlines()
        assert re.match(
            rf"keyledger: {re.escape(str(prepared.path))}:\d+:\d+: tls.cert, tls.key: "
            rf"{re.escape(str(tmp_path))}/cert.pem and {re.escape(str(tmp_path))}/key.pem are "
            r"not a PEM certificate and its unencrypted private key \(.+\); a self-signed one",
            message,
        ), message

    def test_a_journal_folder_that_cannot_be_made_is_named_with_its_line(
        self, tmp_path: Path, moto_url: str
    ) -> None:
        """A journal folder keyledger cannot create is one line at audit.journal's position,
        not a traceback."""
        (tmp_path / "blocker").write_text("a file where the journal's parent should be\n")
        audit = {
            "journal": "blocker/audit",
            "chain_id": "cli",
            "checkpoints": {"key_file": "keys/checkpoint.key"},
        }
        prepared = prepare_config(tmp_path, moto_url, extra={"audit": audit})
        line = next(
            number
            for number, text in enumerate(prepared.path.read_text().splitlines(), 1)
            if "journal: blocker/audit" in text
        )

        code, err, _ = serve_once(prepared.path, prepared.env)

        assert code == 2
        assert err.splitlines() == [
            f"keyledger: {prepared.path}:{line}:12: audit.journal: cannot create "
            f"{tmp_path}/blocker/audit: Not a directory (make it writable for the account "
            "keyledger runs as, or set audit.journal to a folder that is)"
        ]
