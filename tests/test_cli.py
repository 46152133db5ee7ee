"""The command line as scripts and CI jobs use it: exit codes and what is printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyledger.cli import main


class TestPolicyCheck:
    def test_shipped_example_passes(self, capsys: pytest.CaptureFixture[str]) -> None:
        """With no path, the shipped example policy is checked and passes."""
        assert main(["policy", "check"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("ok: 1 file(s), 1 role(s), 3 rule(s), 1 binding(s); policy hash ")

    def test_problems_exit_1_with_positions(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every problem is printed as file:line:col and the exit status is 1 (for CI)."""
        path = tmp_path / "prod.yaml"
        path.write_text(
            "roles:\n  - id: r\n    rules:\n      - actions: [reed]\n        resources: [prod/*]\n"
        )
        assert main(["policy", "check", str(tmp_path)]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert lines == [
            f"{path}:4:19: unknown action 'reed' (did you mean 'read'?)",
            f"{path}:5:21: resource 'prod/*' must be written backend:name (aws:prod/*)",
        ]


class TestAuditVerify:
    def test_missing_source_is_a_usage_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A path that does not exist exits 2 with a message, not a traceback."""
        assert main(["audit", "verify", str(tmp_path / "nope")]) == 2
        assert "no such file or folder" in capsys.readouterr().err

    def test_folder_without_journals_is_a_usage_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An empty folder is not 'intact': there is nothing to vouch for."""
        assert main(["audit", "verify", str(tmp_path)]) == 2
        assert "no journal files" in capsys.readouterr().err


class TestIdentity:
    def test_create_list_revoke(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """create prints the key once; list shows it active; revoke marks it revoked."""
        from cryptography.fernet import Fernet

        monkeypatch.setenv("KEYLEDGER_IDENTITY_KEY", Fernet.generate_key().decode())
        config = tmp_path / "keyledger.yaml"
        config.write_text("identities: {path: ids.json}\npolicies: [p.yaml]\nbackends: {aws: {}}\n")
        assert (
            main(
                [
                    "identity",
                    "create",
                    "svc-a",
                    "--group",
                    "payments",
                    "--attr",
                    "team=checkout",
                    "--config",
                    str(config),
                ]
            )
            == 0
        )
        created = capsys.readouterr().out
        key_id = created.split("access key id")[1].split()[0]
        assert key_id.startswith("AKKL")
        assert "secret access key" in created

        assert main(["identity", "list", "--config", str(config)]) == 0
        listing = capsys.readouterr().out
        assert "svc-a" in listing
        assert key_id in listing
        assert "active" in listing
        assert "payments; team=checkout" in listing
        assert "secret" not in listing.lower().replace("secret access", "")

        assert main(["identity", "revoke", key_id, "--config", str(config)]) == 0
        assert main(["identity", "list", "--config", str(config)]) == 0
        assert "revoked" in capsys.readouterr().out
        assert main(["identity", "rotate", "svc-a", "--config", str(config)]) == 2
