"""The documentation a user reads first must match what the program does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from keyledger.proxy.config import CloudWatchSinkConfig, S3SinkConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_config_example_is_a_valid_config() -> None:
    """config.example.yaml loads without error and says what it claims."""
    config = load_config(ROOT / "config.example.yaml")
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", 8443)
    assert config.listen.tls_cert == Path("/etc/keyledger/tls/server.crt")
    assert config.backends["aws"].region == "eu-central-1"
    assert config.audit.chain_id == "replica-a"
    assert config.audit.checkpoints.key_file == Path("/etc/keyledger/checkpoint.key")
    assert config.audit.rotate_max_age_s == 24 * 3600
    assert config.admin is not None
    assert config.admin.port == 9090
    s3, cloudwatch = config.audit.sinks
    assert isinstance(s3, S3SinkConfig)
    assert (s3.bucket, s3.lock_mode, s3.retention_days) == (
        "acme-keyledger-audit",
        "COMPLIANCE",
        2555,
    )
    assert isinstance(cloudwatch, CloudWatchSinkConfig)
    assert (cloudwatch.log_group, cloudwatch.retention_days) == ("/keyledger/audit", 3653)


@pytest.mark.parametrize(
    "verb",
    [
        ["serve"],
        ["audit", "verify"],
        ["audit", "tail"],
        ["audit", "export"],
        ["audit", "report"],
        ["keys", "generate"],
        ["identity", "create"],
        ["identity", "list"],
        ["identity", "revoke"],
        ["identity", "rotate"],
        ["policy", "check"],
        ["policy", "explain"],
        ["policy", "test"],
        ["policy", "schema"],
    ],
)
def test_every_verb_has_help(verb: list[str]) -> None:
    """Each CLI verb explains itself with --help."""
    result = subprocess.run(
        [sys.executable, "-m", "keyledger", *verb, "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0
    assert "usage: keyledger" in result.stdout
    assert len(result.stdout.splitlines()) > 3


def test_readme_starts_with_the_two_commands() -> None:
    """The README's first instructions are `make run` and `make test`."""
    text = (ROOT / "README.md").read_text()
    head = text[: text.index("## ", text.index("make test"))]
    assert "make run" in head
    assert "make test" in head
