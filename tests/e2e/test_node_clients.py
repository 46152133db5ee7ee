"""Other languages' official clients through keyledger, unchanged but for endpoint and
credential: Azure's Node.js SecretClient, trusting the demo's CA as the banner says."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from keyledger.proxy.dev import AZURE_VAULT, DEMO_AZURE_SECRETS
from tests.conftest import journal_events
from tests.e2e.test_dev_mode import paster, spawn_dev, wait_for

CLIENTS = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def node_clients(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the Node.js scripts and the SDKs they import, at the versions
    package-lock.json pins (installed from the npm registry)."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.skip("Node.js and npm are not installed: the Node.js SDK tests need them")
    folder = tmp_path_factory.mktemp("node-clients")
    for path in CLIENTS.iterdir():
        shutil.copy(path, folder / path.name)
    installed = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    return folder


def test_the_node_sdk_reads_through_keyledger(tmp_path: Path, node_clients: Path) -> None:
    """@azure/keyvault-secrets in Node.js, with NODE_EXTRA_CA_CERTS="$KEYLEDGER_CA" as the
    --dev banner prints it: reads staging-db-password, lists only what policy lets it
    list, and gets Key Vault's 403 for prod-payments-api-key; each call is in the journal
    under protocol azure with the Node SDK's user agent."""
    process, env, _ = spawn_dev(tmp_path)
    try:
        banner = wait_for(process, "Ctrl-C stops")
        assert 'NODE_EXTRA_CA_CERTS="$KEYLEDGER_CA" node' in banner
        paste = paster(banner, tmp_path, env)
        script = node_clients / "read_azure_secret.mjs"

        def node(secret: str) -> subprocess.CompletedProcess[str]:
            return paste(f'NODE_EXTRA_CA_CERTS="$KEYLEDGER_CA" node {script} {secret}')

        read = node("staging-db-password")
        refused = node("prod-payments-api-key")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)

    assert read.returncode == 0, read.stderr
    value, listed = read.stdout.splitlines()
    assert value == DEMO_AZURE_SECRETS["staging-db-password"]
    assert listed.split(",") == ["prod-db-password", "staging-db-password"]
    assert (refused.returncode, refused.stdout) == (3, "refused 403 Forbidden\n"), refused.stderr
    assert DEMO_AZURE_SECRETS["prod-payments-api-key"] not in refused.stdout + refused.stderr
    access = [
        (e["request"]["operation"], e["resource"]["secret"], e["decision"]["effect"])
        for e in journal_events(tmp_path / "var" / "audit")
        if e["type"] == "access"
    ]
    assert access == [
        ("GetSecret", f"{AZURE_VAULT}/staging-db-password", "allow"),
        ("GetSecrets", None, "allow"),
        ("GetSecret", f"{AZURE_VAULT}/prod-payments-api-key", "deny"),
    ]
    agents = {
        e["request"]["user_agent"]
        for e in journal_events(tmp_path / "var" / "audit")
        if e["type"] == "access"
    }
    assert all("azsdk-js-keyvault-secrets" in agent for agent in agents), agents
