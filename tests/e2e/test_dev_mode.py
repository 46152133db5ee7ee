"""`keyledger serve --dev`, tried the way a newcomer tries it: paste what it prints."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from keyledger.proxy.dev import (
    AZURE_VAULT,
    DEMO_AZURE_SECRETS,
    DEMO_CANARY,
    DEMO_GCP_SECRETS,
    DEMO_SECRETS,
    GCP_PROJECT,
)
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


def bare_path() -> str:
    """This PATH without any folder that holds an ``aws`` or ``keyledger`` command: a new
    terminal where no virtualenv is active and no AWS CLI is installed."""
    return os.pathsep.join(
        folder
        for folder in os.environ.get("PATH", "").split(os.pathsep)
        if folder and not any(shutil.which(name, path=folder) for name in ("aws", "keyledger"))
    )


def spawn_dev(
    tmp_path: Path, *args: str, port: int | None = None, admin_listen: bool = True
) -> tuple[subprocess.Popen[str], dict[str, str], int]:
    """`keyledger serve --dev ARGS` from ``tmp_path`` on free ports (the admin and HTTPS
    ports left to keyledger's rule unless ``admin_listen``): the process, a new terminal's
    environment (no venv, no aws on PATH) and its data-plane port."""
    port = port or free_port()
    others = (
        ("--admin-listen", f"127.0.0.1:{free_port()}", "--tls-listen", f"127.0.0.1:{free_port()}")
        if admin_listen
        else ()
    )
    process = subprocess.Popen(
        [*KEYLEDGER, "serve", "--dev", *args, "--listen", f"127.0.0.1:{port}", *others],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, clean_env(PATH=bare_path()), port


def dev_env(tmp_path: Path, *prefixes: str) -> dict[str, str]:
    """The settings var/dev.env holds whose names start with one of ``prefixes``."""
    lines = (tmp_path / "var" / "dev.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.startswith(prefixes))


def paster(
    banner: str, tmp_path: Path, env: dict[str, str]
) -> Callable[[str], subprocess.CompletedProcess[str]]:
    """Runs a command as a newcomer would in a new terminal (opened in its home folder):
    after pasting the banner's `cd` and env-file lines."""
    cd_line = next(line.strip() for line in banner.splitlines() if line.strip().startswith("cd "))
    env_line = next(line.strip() for line in banner.splitlines() if "set -a;" in line)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def paste(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", f"{cd_line}\n{env_line}\n{command}"],
            cwd=home,
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
    # Only what dev.env puts on PATH can provide these in the pasted commands.
    assert shutil.which("keyledger", path=env["PATH"]) is None
    assert shutil.which("aws", path=env["PATH"]) is None
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
        # The one-liner "without the env file", pasted as it is: no dev.env, no venv.
        one_line = re.search(r"^\s*(AWS_ACCESS_KEY_ID=.*\\\n.*\\\n.*)$", banner, re.M)
        assert one_line is not None, banner
        alone = subprocess.run(
            ["bash", "-c", one_line.group(1)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert alone.returncode == 0, alone.stderr
        assert orjson.loads(alone.stdout)["SecretString"] == "demo-staging-db-password"

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

        # docs/policies.md's inventory: from the embedded store itself, not through keyledger.
        inventory = paste(
            "AWS_ACCESS_KEY_ID=store AWS_SECRET_ACCESS_KEY=store aws --endpoint-url "
            '"$KEYLEDGER_DEV_STORE_URL" secretsmanager list-secrets '
            "--query 'SecretList[].Name' --output text"
        )
        assert inventory.returncode == 0, inventory.stderr
        assert sorted(inventory.stdout.split()) == sorted([*DEMO_SECRETS, DEMO_CANARY])

        # The demo's alert rules, as the banner shows them: the canary trips, the alert
        # is in the journal (after its event is durable: give detection a moment).
        canary = re.search(
            r"^\s*(aws secretsmanager get-secret-value .*admin-password-old)", banner, re.M
        )
        shown = re.search(r"^\s*(keyledger audit tail \S+ --type alert -n 1)$", banner, re.M)
        assert canary is not None, banner
        assert shown is not None, banner
        tripped = paste(canary.group(1))
        assert "AccessDeniedException" in tripped.stderr
        deadline = time.monotonic() + 10
        while "prod-db-admin-canary" not in (alert := paste(shown.group(1))).stdout:
            assert time.monotonic() < deadline, alert.stdout + alert.stderr
            time.sleep(0.2)
        assert "CRITICAL" in alert.stdout
        assert DEMO_CANARY in alert.stdout

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
    assert access == [
        ("staging/db/password", "allow"),
        ("prod/payments/api-key", "deny"),
        ("staging/db/password", "allow"),  # the one-liner
        (DEMO_CANARY, "deny"),
    ]
    # Checkpoints are on from the first request: the printed verify command passes even
    # under --strict, which demands that every event is sealed by a verified signature.
    assert [e["type"] for e in events][-1] == "checkpoint"
    verified = paste(f"keyledger {verify_line.group(1)} --strict")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "signatures checked" in verified.stdout


def test_printed_google_calls_work_as_pasted(tmp_path: Path) -> None:
    """The banner's curl line and its two Python snippets (Google's client over REST and over
    gRPC), pasted in a new terminal that only loaded dev.env, read staging-db-password; the
    same calls for prod-payments-api-key are refused as Google refuses them; each call is in
    the journal under its protocol."""
    process, env, _ = spawn_dev(tmp_path)
    try:
        banner = wait_for(process, "Ctrl-C stops")
        paste = paster(banner, tmp_path, env)
        curl = re.search(r'^\s*(curl .*KEYLEDGER_TOKEN.*/versions/latest:access")$', banner, re.M)
        snippets = re.findall(r"^(python - <<'EOF'\n.*?\nEOF)$", banner, re.M | re.S)
        assert curl is not None, banner
        rest, grpc, _ = snippets  # and Azure's
        assert 'transport="rest"' in rest
        assert "grpc.insecure_channel" in grpc
        # The README's Google Cloud and Azure sections show the same lines.
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
        assert curl.group(1) in readme
        assert re.findall(r"^(python - <<'EOF'\n.*?\nEOF)$", readme, re.M | re.S) == snippets

        dev_env = (tmp_path / "var" / "dev.env").read_text()
        for name in ("KEYLEDGER_GCP_ENDPOINT", "KEYLEDGER_GCP_GRPC_TARGET", "KEYLEDGER_TOKEN"):
            assert f"\n{name}=" in dev_env
        assert f"\nKEYLEDGER_GCP_PROJECT={GCP_PROJECT}\n" in dev_env
        value = DEMO_GCP_SECRETS["staging-db-password"]
        if shutil.which("curl"):
            read = paste(curl.group(1))
            assert read.returncode == 0, read.stderr
            answer = orjson.loads(read.stdout)
            assert base64.b64decode(answer["payload"]["data"]).decode() == value
            assert answer["name"] == (
                f"projects/{GCP_PROJECT}/secrets/staging-db-password/versions/1"
            )
            refused = paste(curl.group(1).replace("staging-db-password", "prod-payments-api-key"))
            assert orjson.loads(refused.stdout)["error"]["status"] == "PERMISSION_DENIED"
        for snippet, raised in ((rest, "Forbidden"), (grpc, "PermissionDenied")):
            read = paste(snippet)
            assert read.returncode == 0, read.stderr
            assert read.stdout == f"{value}\n"
            refused = paste(snippet.replace("staging-db-password", "prod-payments-api-key"))
            assert refused.returncode != 0
            assert f"google.api_core.exceptions.{raised}: 403 " in refused.stderr, refused.stderr
            assert DEMO_GCP_SECRETS["prod-payments-api-key"] not in refused.stdout + refused.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0

    events = journal_events(tmp_path / "var" / "audit")
    access = [
        (e["request"]["protocol"], e["resource"]["secret"], e["decision"]["effect"])
        for e in events
        if e["type"] == "access"
    ]
    calls = [("gcp-rest", "rest"), ("gcp-grpc", "grpc")]
    if shutil.which("curl"):
        calls.insert(0, ("gcp-rest", "curl"))
    assert access == [
        (protocol, f"{GCP_PROJECT}/{secret}", effect)
        for protocol, _ in calls
        for secret, effect in (("staging-db-password", "allow"), ("prod-payments-api-key", "deny"))
    ]
    assert {e["principal"]["auth_method"] for e in events if e["type"] == "access"} == {"token"}


def test_printed_azure_calls_work_as_pasted(tmp_path: Path) -> None:
    """The banner's Azure curl line and SecretClient snippet, pasted in a new terminal that
    only loaded dev.env, read staging-db-password over HTTPS trusting the demo's CA; the
    same calls for prod-payments-api-key are refused with Key Vault's 403; the challenge
    is not in the journal, every call is, under protocol azure. The printed aws-over-HTTPS
    line reads too."""
    process, env, _ = spawn_dev(tmp_path)
    try:
        banner = wait_for(process, "Ctrl-C stops")
        paste = paster(banner, tmp_path, env)
        curl = re.search(r'^\s*(curl .*--cacert.*KEYLEDGER_AZURE_VAULT_URL.*")$', banner, re.M)
        snippets = re.findall(r"^(python - <<'EOF'\n.*?\nEOF)$", banner, re.M | re.S)
        assert curl is not None, banner
        snippet = snippets[-1]
        assert "SecretClient(" in snippet
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
        assert curl.group(1) in readme
        aws_https = re.search(
            r"^\s*aws, boto3\s+(AWS_CA_BUNDLE=.*\\)\n\s*(secretsmanager .*)$", banner, re.M
        )
        assert aws_https is not None, banner

        dev_env = (tmp_path / "var" / "dev.env").read_text()
        ca = tmp_path / "var" / "tls" / "ca.pem"
        assert f"\nKEYLEDGER_CA={ca}\n" in dev_env
        assert re.search(r"\nKEYLEDGER_AZURE_VAULT_URL=https://127\.0\.0\.1:\d+\n", dev_env)
        value = DEMO_AZURE_SECRETS["staging-db-password"]
        if shutil.which("curl"):
            read = paste(curl.group(1))
            assert read.returncode == 0, read.stderr
            assert orjson.loads(read.stdout)["value"] == value
            refused = paste(curl.group(1).replace("staging-db-password", "prod-payments-api-key"))
            assert orjson.loads(refused.stdout)["error"]["code"] == "Forbidden"
        read = paste(snippet)
        assert read.returncode == 0, read.stderr
        assert read.stdout == f"{value}\n"
        refused = paste(snippet.replace("staging-db-password", "prod-payments-api-key"))
        assert refused.returncode != 0
        assert "HttpResponseError: (Forbidden)" in refused.stderr, refused.stderr
        assert DEMO_AZURE_SECRETS["prod-payments-api-key"] not in refused.stdout + refused.stderr
        over_https = paste(f"{aws_https.group(1)[:-1]} {aws_https.group(2)}")
        assert over_https.returncode == 0, over_https.stderr
        assert DEMO_SECRETS["staging/db/password"] in over_https.stdout
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0

    events = journal_events(tmp_path / "var" / "audit")
    access = [
        (e["request"]["protocol"], e["resource"]["secret"], e["decision"]["effect"])
        for e in events
        if e["type"] == "access"
    ]
    calls = 2 if shutil.which("curl") else 1
    assert access == [
        *(
            ("azure", f"{AZURE_VAULT}/{secret}", effect)
            for _ in range(calls)
            for secret, effect in (
                ("staging-db-password", "allow"),
                ("prod-payments-api-key", "deny"),
            )
        ),
        ("aws-json", "staging/db/password", "allow"),
    ]
    assert not [e for e in events if e["type"] == "auth_failure"]


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
            # No checkpoint is due yet (every 60 s, and at shutdown, when the embedded
            # store goes away): the shipped events verify as a chain, unsealed.
            assert "intact:" in result.stdout
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0


def port_pair() -> int:
    """A free loopback port whose admin and HTTPS ports under the --dev rules (+1010,
    +363) are free too."""
    while True:
        port = free_port()
        if port + 1010 < 65536:
            try:
                for other in (port + 1010, port + 363):
                    with socket.socket() as sock:
                        sock.bind(("127.0.0.1", other))
            except OSError:
                continue
            return port


def test_a_second_demo_moves_its_admin_port_or_is_refused(tmp_path: Path) -> None:
    """Given only --listen, the admin API goes to that port + 1010; a second demo on the
    same ./var is refused in one line before it rewrites anything of the first."""
    port = port_pair()
    process, env, _ = spawn_dev(tmp_path, port=port, admin_listen=False)
    try:
        banner = wait_for(process, "Ctrl-C stops")
        admin_url = f"http://127.0.0.1:{port + 1010}"
        assert f"admin API          {admin_url}   " in banner
        dev_env = tmp_path / "var" / "dev.env"
        written = dev_env.read_bytes()
        assert f"KEYLEDGER_ADMIN_URL={admin_url}\n".encode() in written
        if shutil.which("curl"):
            readyz = re.search(r"^\s*(curl .*/readyz\")$", banner, re.M)
            assert readyz is not None
            ready = paster(banner, tmp_path, env)(readyz.group(1))
            assert orjson.loads(ready.stdout)["ready"] is True, ready.stdout + ready.stderr
        cursors = sorted(tmp_path.glob("var/**/*"))

        began = time.monotonic()
        second = subprocess.run(
            # Its HTTPS and admin ports (+363, +1010) free too: the refusal must be the
            # folder's, not a port some connection of the first demo happens to hold.
            [*KEYLEDGER, "serve", "--dev", "--listen", f"127.0.0.1:{port_pair()}"],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        took = time.monotonic() - began

        assert second.returncode == 2
        assert second.stdout == ""
        assert re.fullmatch(
            rf"keyledger: another `keyledger serve --dev` \(pid {process.pid}\) is running on "
            r"var/: stop it \(Ctrl-C in its terminal\), or give this one its own folder with "
            r"--var DIR\n",
            second.stderr,
        ), second.stderr
        assert dev_env.read_bytes() == written
        assert sorted(tmp_path.glob("var/**/*")) == cursors
        assert took < 10  # no embedded store was started for it
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0
