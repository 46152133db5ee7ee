"""deploy/systemd: keyledger on a VM, as an unprivileged, sandboxed service."""

from __future__ import annotations

import re
import shutil
from pathlib import Path, PurePosixPath

import pytest

from keyledger.proxy.config import load_config, parse_duration
from tests.deploy.conftest import SYSTEMD, run

UNIT = SYSTEMD / "keyledger.service"
Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """A systemd unit as {section: {key: [values in order]}}: keys repeat in units, and an
    empty assignment (``CapabilityBoundingSet=``) is a value of its own."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    logical = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not logical and (not line.strip() or line.lstrip().startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        header = re.fullmatch(r"\[(\w+)\]", line.strip())
        if header:
            section = unit.setdefault(header[1], {})
            continue
        assert section is not None, f"{line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text())


def one(unit: Unit, key: str, section: str = "Service") -> str:
    (value,) = unit[section][key]
    return value


def test_runs_as_a_dedicated_user_and_restarts_on_failure(unit: Unit) -> None:
    service = unit["Service"]
    assert service.get("DynamicUser") == ["yes"] or one(unit, "User") == "keyledger"
    assert one(unit, "User") != "root"
    assert one(unit, "Restart") == "on-failure"
    sysusers = (SYSTEMD / "keyledger.sysusers").read_text()
    assert re.search(r"^u keyledger ", sysusers, re.MULTILINE)
    assert one(unit, "WantedBy", "Install") == "multi-user.target"


def test_hardening(unit: Unit) -> None:
    """No privileges, a read-only system, the state directory its only writable place."""
    assert one(unit, "NoNewPrivileges") == "yes"
    assert one(unit, "CapabilityBoundingSet") == ""
    assert one(unit, "AmbientCapabilities") == ""
    assert one(unit, "ProtectSystem") == "strict"
    assert one(unit, "ProtectHome") == "yes"
    assert one(unit, "PrivateTmp") == "yes"
    assert one(unit, "PrivateDevices") == "yes"
    assert one(unit, "RestrictSUIDSGID") == "yes"
    assert one(unit, "SystemCallArchitectures") == "native"
    assert unit["Service"]["SystemCallFilter"][0] == "@system-service"
    assert one(unit, "UMask") == "0077"
    # AF_UNIX stays: asyncio's event loop wakes itself through a socketpair.
    assert set(one(unit, "RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_state_directory_holds_everything_keyledger_writes(unit: Unit) -> None:
    """ProtectSystem=strict leaves /var/lib/<StateDirectory> writable, and the journal, its
    cursors and the identity store all live there."""
    state = PurePosixPath("/var/lib") / one(unit, "StateDirectory")
    assert one(unit, "StateDirectoryMode") == "0700"
    assert unit["Service"]["ReadWritePaths"] == [str(state)]
    config = load_config(SYSTEMD / "config.yaml")
    assert PurePosixPath(config.audit.journal).is_relative_to(state)
    assert PurePosixPath(config.identities.path).is_relative_to(state)


def test_reload_and_stop_signals(unit: Unit) -> None:
    """`systemctl reload` sends SIGHUP (policies reload); stop sends SIGTERM and waits long
    enough for calls in flight and the shipping drain."""
    assert one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "KillSignal") == "SIGTERM"
    timeout_s = parse_duration(one(unit, "TimeoutStopSec"))
    config = load_config(SYSTEMD / "config.yaml")
    needed = config.limits.shutdown_timeout_s + config.audit.shipping.drain_s
    assert timeout_s >= needed + 10, (timeout_s, needed)


def test_secrets_come_from_the_environment_file_and_credentials(unit: Unit) -> None:
    """The env file provides every key the config reads from the environment; the files it
    reads (checkpoint key, TLS key) are LoadCredential'd to the paths the config names."""
    config = load_config(SYSTEMD / "config.yaml")
    assert one(unit, "EnvironmentFile") == "/etc/keyledger/keyledger.env"
    example = (SYSTEMD / "keyledger.env.example").read_text()
    provided = dict(re.findall(r"^([A-Z_]+)=(.*)$", example, re.MULTILINE))
    assert config.admin is not None
    wanted = {
        config.identities.key_env,
        config.audit.fingerprint_key_env,
        config.admin.token_env,
    }
    assert set(provided) == wanted
    assert all(value == "" for value in provided.values()), "no secret values in the example"
    credentials = dict(c.split(":", 1) for c in unit["Service"]["LoadCredential"])
    directory = PurePosixPath("/run/credentials") / UNIT.name
    assert config.audit.checkpoints.key_file == Path(directory / "checkpoint.key")
    assert config.listen.tls_key == Path(directory / "tls.key")
    assert {"checkpoint.key", "tls.key"} == set(credentials)
    exec_start = one(unit, "ExecStart").split()
    assert exec_start[1:] == ["serve", "--config", "/etc/keyledger/config.yaml"]


def test_vm_config_loads() -> None:
    config = load_config(SYSTEMD / "config.yaml")
    assert config.listen.tls_cert is not None
    assert config.admin is not None
    assert config.admin.host == "127.0.0.1"
    assert {sink.name for sink in config.audit.sinks} == {"s3", "cloudwatch"}


# -- systemd's own checks -------------------------------------------------------------------


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a stand-in executable (verify checks it exists)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here; the parsed checks above still ran")
    stand_in = tmp_path / "keyledger"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/keyledger/bin/keyledger", str(stand_in)))
    return copy


def test_systemd_analyze_verify_is_silent(verifiable_unit: Path) -> None:
    """`systemd-analyze verify` knows every directive and value (it only warns on unknown
    ones, so any output at all is a failure)."""
    result = run(["systemd-analyze", "verify", verifiable_unit], cwd=verifiable_unit.parent)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_systemd_analyze_verify_catches_a_typo(verifiable_unit: Path) -> None:
    """The check above is real: a misspelt directive is reported."""
    verifiable_unit.write_text(
        verifiable_unit.read_text().replace("NoNewPrivileges=", "NoNewPrivilege=")
    )
    result = run(["systemd-analyze", "verify", verifiable_unit], cwd=verifiable_unit.parent)
    assert "NoNewPrivilege" in result.stdout + result.stderr


def test_systemd_analyze_security_rates_it_ok(verifiable_unit: Path) -> None:
    """systemd's own exposure score for the sandbox: 2.0 or lower ("OK" starts at 2.0)."""
    result = run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", verifiable_unit],
        cwd=verifiable_unit.parent,
    )
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert score is not None, result.stdout + result.stderr
    assert float(score[1]) <= 2.0, result.stdout
    assert result.returncode == 0, result.stdout
