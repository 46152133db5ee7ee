"""The documentation a user reads first must match what the program does."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from keyledger.cli import _parser
from keyledger.proxy.audit.events import EventType
from keyledger.proxy.config import CloudWatchSinkConfig, S3SinkConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^ *```(?:sh|console|bash)\n(.*?)^ *```", re.S | re.M)


def _shell_lines(text: str) -> list[str]:
    """Every command line of the shell and console blocks, continuations joined."""
    lines: list[str] = []
    for block in _BLOCK.findall(text):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            lines.append(line.removeprefix("$ "))
    return lines


def _keyledger_argv(line: str) -> list[str] | None:
    """The arguments of a `keyledger ...` command line, up to the first shell operator."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # an unclosed quote: output, not a command
        return None
    if not words or Path(words[0]).name != "keyledger":
        return None
    argv: list[str] = []
    for word in words[1:]:
        if word and set(word) <= set("();<>|&"):
            if word[0] in "<>" and argv and argv[-1].isdigit():
                argv.pop()  # the 2 of 2>/dev/null
            break
        argv.append(word)
    return argv


DOCUMENTED_COMMANDS = [
    pytest.param(argv, id=f"{path.name}: keyledger {' '.join(argv)}"[:120])
    for path in DOCS
    for line in _shell_lines(path.read_text())
    if (argv := _keyledger_argv(line)) is not None
]


def test_config_example_is_a_valid_config() -> None:
    """config.example.yaml loads without error and says what it claims."""
    config = load_config(ROOT / "config.example.yaml")
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", 8443)
    assert config.listen.tls_cert == Path("/etc/keyledger/tls/server.crt")
    assert config.backends["aws"].region == "eu-central-1"
    assert config.audit.chain_id == "replica-a"
    assert config.audit.checkpoints.key_file == Path("/etc/keyledger/checkpoint.key")
    assert config.audit.rotate_max_age_s == 24 * 3600
    assert config.identities.key_file == Path("/etc/keyledger/identity.key")
    assert config.audit.fingerprint_key_file == Path("/etc/keyledger/fingerprint.key")
    assert config.admin is not None
    assert config.admin.port == 9090
    assert config.admin.token_file == Path("/etc/keyledger/admin.token")
    assert not config.geoip.enabled  # commented out: events are as without GeoIP
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
        ["alerts", "check"],
        ["alerts", "test"],
        ["alerts", "run"],
        ["dev", "token"],
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


def test_the_docs_show_commands() -> None:
    """The command check below has something to check (the block syntax was not missed)."""
    assert len(DOCUMENTED_COMMANDS) > 40


@pytest.mark.parametrize("argv", DOCUMENTED_COMMANDS)
def test_documented_command_parses(argv: list[str]) -> None:
    """Every `keyledger ...` line in the README and docs/ is accepted by the real CLI parser."""
    try:
        _parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"keyledger {shlex.join(argv)}: refused by the parser (exit {exc.code})")


def test_make_targets_in_readme_exist() -> None:
    """Every `make TARGET` the README names is a phony target of the Makefile."""
    makefile = (ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M)[1].split())  # type: ignore[index]
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`make ([a-z][\w-]*)", readme))
    named |= {line.split()[1] for line in _shell_lines(readme) if line.startswith("make ")}
    assert {"run", "test", "reset", "clean"} <= named
    assert named <= targets & phony


def test_python_scripts_in_docs_exist() -> None:
    """Every `python SCRIPT.py` the docs run is a file of the repository."""
    for path in DOCS:
        for script in re.findall(r"python\S* (\S+\.py)\b", path.read_text()):
            assert (ROOT / script).is_file(), f"{path.name} runs {script}, which is not shipped"


def test_readme_names_every_event_type() -> None:
    """The README's audit event section lists every type `--type` accepts."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The audit event") :]
    section = section[: section.index("\n## ")]
    for kind in EventType:
        assert f"`{kind.value}`" in section


def test_admin_api_port_in_docs() -> None:
    """The docs never send the admin API to the data-plane port + 1: it is 9090 by default."""
    for path in [*DOCS, ROOT / "config.example.yaml"]:
        assert "8081" not in path.read_text(), path.name


def test_config_example_commented_clouds_are_valid(tmp_path: Path) -> None:
    """The commented-out gcp, azure, oidc, alerts and geoip blocks of config.example.yaml,
    uncommented as an operator would, load and mean what their comments say."""
    lines = (ROOT / "config.example.yaml").read_text(encoding="utf-8").splitlines()
    block: str | None = None  # the indentation of the "# gcp:" or "# azure:" being opened
    for index, line in enumerate(lines):
        body = line.lstrip()
        indent = line[: len(line) - len(body)]
        if body in ("# gcp:", "# azure:", "# oidc:", "# alerts:", "# geoip:"):
            block = indent
        elif block is None or not line.startswith(f"{block}#   "):
            block = None
            continue
        lines[index] = indent + body[2:]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines), encoding="utf-8")
    config = load_config(path)
    assert config.backends["gcp"].projects == {
        "payments": "acme-payments-prod-4711",
        "shared": "acme-shared-secrets",
    }
    assert config.gcp.grpc_listen == ("0.0.0.0", 8444)
    azure = config.backends["azure"]
    assert azure.vaults is not None
    assert {name: vault.url for name, vault in azure.vaults.items()} == {
        "payments": "https://acme-payments.vault.azure.net",
        "shared": "https://acme-shared.vault.azure.net",
    }
    assert config.azure.hosts == {"payments.kv.internal": ("azure", "payments")}
    assert config.azure.paths == {"/shared": ("azure", "shared")}
    assert config.azure.default == ("azure", "shared")
    assert config.azure.resource == "https://kv.internal"
    github, cluster, idp = config.oidc.issuers
    assert (github.name, github.issuer) == (
        "github-actions",
        "https://token.actions.githubusercontent.com",
    )
    assert (cluster.name, cluster.attributes["namespace"]) == (
        "prod-cluster",
        "kubernetes.io/namespace",
    )
    assert (idp.attributes, idp.groups_claim, config.oidc.clock_skew_s) == (
        {"team": "team"},
        "groups",
        60,
    )
    assert github.groups == ("ci-deployers",)
    assert config.alerts.rules == (Path("/etc/keyledger/alerts"),)
    assert [(d.type, d.name) for d in config.alerts.destinations] == [
        ("webhook", "soc"),
        ("slack", "slack"),
        ("alertmanager", "alertmanager"),
        ("stdout", "stdout"),
    ]
    assert config.geoip.country_db == Path("/var/lib/GeoIP/GeoLite2-Country.mmdb")
    assert config.geoip.asn_db == Path("/var/lib/GeoIP/GeoLite2-ASN.mmdb")
