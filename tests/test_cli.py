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


class TestIdentityMistakes:
    def test_dev_outside_a_dev_folder_names_the_folder_and_the_fix(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`identity list --dev` where `serve --dev` never ran is one line, not a traceback."""
        monkeypatch.chdir(tmp_path)

        assert main(["identity", "list", "--dev"]) == 2

        assert capsys.readouterr().err == (
            f"keyledger: no --dev state in {tmp_path}/var (var/keys/identity.key is missing): "
            "run this in the folder where `keyledger serve --dev` ran, or pass --var DIR\n"
        )

    def test_a_new_store_is_announced(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The first create says on stderr that it made a new store, and where that is set."""
        from cryptography.fernet import Fernet

        monkeypatch.setenv("KEYLEDGER_IDENTITY_KEY", Fernet.generate_key().decode())
        config = tmp_path / "keyledger.yaml"
        config.write_text("identities: {path: ids.json}\npolicies: [p.yaml]\nbackends: {aws: {}}\n")

        assert main(["identity", "create", "svc-a", "--config", str(config)]) == 0
        first = capsys.readouterr().err
        assert main(["identity", "create", "svc-b", "--config", str(config)]) == 0
        second = capsys.readouterr().err

        assert first.splitlines()[0] == (
            f"created a new identity store {tmp_path}/ids.json (identities.path at {config}:1:20)"
        )
        assert "new identity store" not in second

    def test_no_folder_for_a_new_store_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A store path in a folder that does not exist (the example's /var/lib/keyledger on
        a laptop) is refused, naming the folder and the setting, and nothing is created."""
        from cryptography.fernet import Fernet

        monkeypatch.setenv("KEYLEDGER_IDENTITY_KEY", Fernet.generate_key().decode())
        config = tmp_path / "keyledger.yaml"
        config.write_text(
            "identities:\n  path: lib/keyledger/ids.json\npolicies: [p.yaml]\nbackends: {aws: {}}\n"
        )

        assert main(["identity", "create", "svc-a", "--config", str(config)]) == 2

        assert capsys.readouterr().err == (
            f"keyledger: no folder {tmp_path}/lib/keyledger for a new identity store "
            f"(identities.path at {config}:2:9): create it, or set identities.path to where "
            "the proxy will read it\n"
        )
        assert not (tmp_path / "lib").exists()

    def test_create_under_another_key_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A create under a different KEYLEDGER_IDENTITY_KEY exits 2 naming the env var and
        leaves the store as it was."""
        from cryptography.fernet import Fernet

        config = tmp_path / "keyledger.yaml"
        config.write_text("identities: {path: ids.json}\npolicies: [p.yaml]\nbackends: {aws: {}}\n")
        monkeypatch.setenv("KEYLEDGER_IDENTITY_KEY", Fernet.generate_key().decode())
        assert main(["identity", "create", "svc-a", "--config", str(config)]) == 0
        before = (tmp_path / "ids.json").read_bytes()
        capsys.readouterr()

        monkeypatch.setenv("KEYLEDGER_IDENTITY_KEY", Fernet.generate_key().decode())
        assert main(["identity", "create", "svc-b", "--config", str(config)]) == 2

        err = capsys.readouterr().err
        assert err.startswith(f"keyledger: the identity store {tmp_path}/ids.json was written ")
        assert "from the env var KEYLEDGER_IDENTITY_KEY" in err
        assert (tmp_path / "ids.json").read_bytes() == before

    def test_missing_key_file_is_named_with_its_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An identity key file that cannot be read is reported at identities.key_file."""
        config = tmp_path / "keyledger.yaml"
        config.write_text(
            "identities:\n  key_file: keys/identity.key\npolicies: [p.yaml]\nbackends: {aws: {}}\n"
        )

        assert main(["identity", "list", "--config", str(config)]) == 2

        assert capsys.readouterr().err == (
            f"keyledger: {config}:2:13: identities.key_file: cannot read identity key file "
            f"{tmp_path}/keys/identity.key: No such file or directory\n"
        )


class TestUsage:
    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--version prints the installed distribution's version and exits 0."""
        from importlib.metadata import version

        with pytest.raises(SystemExit) as caught:
            main(["--version"])

        assert caught.value.code == 0
        assert capsys.readouterr().out == f"keyledger {version('keyledger')}\n"

    @pytest.mark.parametrize(
        ("argv", "usage"),
        [
            (["identity", "list", "--bogus"], "usage: keyledger identity list "),
            (["audit", "verify", "x", "--bogus"], "usage: keyledger audit verify "),
            (["policy", "check", "--bogus"], "usage: keyledger policy check "),
            (["serve", "--bogus"], "usage: keyledger serve "),
        ],
    )
    def test_unknown_flag_shows_the_subcommand_usage(
        self, argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unknown flag is reported with the usage of the subcommand it was given to."""
        with pytest.raises(SystemExit) as caught:
            main(argv)

        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(usage), err
        name = usage.removeprefix("usage: ").strip()
        assert err.endswith(f"{name}: error: unrecognized arguments: --bogus\n"), err


class TestServeMistakes:
    def test_dev_state_folder_that_cannot_be_made_is_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`serve --dev --var` on a path that cannot be a folder says so, not a traceback."""
        taken = tmp_path / "state"
        taken.write_text("a file, not a folder\n")

        code = main(
            [
                *("serve", "--dev", "--var", str(taken)),
                *("--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"),
            ]
        )

        assert code == 2
        assert capsys.readouterr().err == (
            f"keyledger: cannot keep the --dev state in {taken}/: File exists; run it in a "
            "folder you can write, or pass --var DIR\n"
        )
