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


class TestIdentityTokens:
    """`identity create|list|revoke|rotate` with bearer tokens beside SigV4 keys."""

    @pytest.fixture
    def config(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        from cryptography.fernet import Fernet

        monkeypatch.setenv("KEYLEDGER_IDENTITY_KEY", Fernet.generate_key().decode())
        config = tmp_path / "keyledger.yaml"
        config.write_text("identities: {path: ids.json}\npolicies: [p.yaml]\nbackends: {aws: {}}\n")
        return config

    @staticmethod
    def run(
        capsys: pytest.CaptureFixture[str], config: Path, *argv: str, status: int = 0
    ) -> tuple[dict[str, str], str]:
        """Run `keyledger identity ARGV`; its stdout as label -> value, and its stderr."""
        assert main(["identity", *argv, "--config", str(config)]) == status
        out, err = capsys.readouterr()
        return {line[:18].strip(): line[18:].strip() for line in out.splitlines()}, err

    @staticmethod
    def listing(capsys: pytest.CaptureFixture[str], config: Path) -> list[list[str]]:
        assert main(["identity", "list", "--config", str(config)]) == 0
        return [line.split() for line in capsys.readouterr().out.splitlines()]

    def test_create_token_prints_it_once(
        self, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """create --token prints the token once with its id and expiry (90 days by default);
        the store file and `list` show the id, never the token."""
        from datetime import UTC, datetime, timedelta

        issued, err = self.run(capsys, config, "create", "svc-a", "--token", "--group", "ops")

        token, token_id = issued["token"], issued["token id"]
        assert token.startswith(token_id + "_")
        assert issued["identity"] == "svc-a"
        expires = datetime.fromisoformat(issued["expires"])
        assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)
        assert "the token is shown only now" in err
        assert token not in (config.parent / "ids.json").read_text()
        rows = self.listing(capsys, config)
        assert rows[0] == [
            "NAME", "KIND", "ID", "STATUS", "CREATED", "EXPIRES", "GROUPS;", "ATTRIBUTES"
        ]  # fmt: skip
        assert [r[:4] + r[5:] for r in rows[1:]] == [
            ["svc-a", "token", token_id, "active", issued["expires"], "ops"]
        ]

    def test_a_token_beside_a_key(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """create --token on an identity with an access key adds the token beside it, says
        so, and list shows both under the identity's groups; revoking the token by its id
        leaves the key active."""
        key, _ = self.run(capsys, config, "create", "svc-a", "--group", "payments")
        token, err = self.run(capsys, config, "create", "svc-a", "--token")

        assert "added to the existing identity svc-a, beside its access key" in err
        assert sorted((r[1], r[2], r[3], r[-1]) for r in self.listing(capsys, config)[1:]) == [
            ("sigv4", key["access key id"], "active", "payments"),
            ("token", token["token id"], "active", "payments"),
        ]

        assert main(["identity", "revoke", token["token id"], "--config", str(config)]) == 0
        assert capsys.readouterr().out == f"revoked {token['token id']} (svc-a)\n"
        assert sorted((r[1], r[3]) for r in self.listing(capsys, config)[1:]) == [
            ("sigv4", "active"),
            ("token", "revoked"),
        ]

    def test_a_second_token_is_refused(
        self, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A second active token for one identity is refused, pointing at rotate --token."""
        self.run(capsys, config, "create", "svc-a", "--token")

        _, err = self.run(capsys, config, "create", "svc-a", "--token", status=2)

        assert err == (
            "keyledger: identity 'svc-a' already has an active token; use rotate --token\n"
        )

    def test_rotate_token(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """rotate --token issues a new token with the lifetime asked for and revokes the old."""
        old, _ = self.run(capsys, config, "create", "svc-a", "--token")

        new, err = self.run(capsys, config, "rotate", "svc-a", "--token", "--expires", "12h")

        assert new["token"] != old["token"]
        assert "the previous token is revoked" in err
        statuses = {r[2]: (r[3], r[5]) for r in self.listing(capsys, config)[1:]}
        assert statuses == {
            old["token id"]: ("revoked", old["expires"]),
            new["token id"]: ("active", new["expires"]),
        }

    def test_never_expiring_token_is_flagged(
        self, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--expires never is allowed, printed as never, and warned about on stderr."""
        issued, err = self.run(capsys, config, "create", "svc-a", "--token", "--expires", "never")

        assert issued["expires"] == "never"
        assert "it never expires: rotate it yourself" in err
        assert self.listing(capsys, config)[1][5] == "never"

    def test_an_expired_token_is_listed_as_expired(
        self, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A token past its expiry shows as expired, and a new one may be created beside it."""
        import json

        self.run(capsys, config, "create", "svc-a", "--token")
        store = config.parent / "ids.json"
        doc = json.loads(store.read_text())
        doc["tokens"][0]["expires"] = "2020-01-01T00:00:00+00:00"
        store.write_text(json.dumps(doc))

        assert self.listing(capsys, config)[1][3] == "expired"
        self.run(capsys, config, "create", "svc-a", "--token")

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (
                ["rotate", "svc-a", "--overlap", "never"],
                "keyledger: --overlap never would keep the old credential for good: give a "
                "duration\n",
            ),
            (
                ["create", "svc-a", "--token", "--expires", "3 months"],
                "keyledger: --expires: expected a duration like 90d, 12h or 30m, or never; not "
                "'3 months'\n",
            ),
            (
                ["rotate", "svc-a", "--token"],
                "keyledger: no active identity named 'svc-a'\n",
            ),
        ],
    )
    def test_mistakes_are_one_line(
        self, config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
    ) -> None:
        """Misused token options exit 2 with one line saying what to do, writing nothing."""
        _, err = self.run(capsys, config, *argv, status=2)

        assert err == message
        assert not (config.parent / "ids.json").exists()

    def test_rotate_with_an_overlap(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """rotate --overlap 1h keeps the old key active until an hour from now, says so, and
        list shows both keys with the old one's end; a key created with --expires shows it."""
        from datetime import UTC, datetime, timedelta

        old, _ = self.run(capsys, config, "create", "svc-a", "--expires", "30d")
        new, err = self.run(capsys, config, "rotate", "svc-a", "--overlap", "1h")

        until = err.split("keeps working until ", 1)[1].split()[0]
        in_an_hour = datetime.now(UTC) + timedelta(hours=1)
        assert abs(datetime.fromisoformat(until) - in_an_hour) < timedelta(seconds=5)
        assert "expires" not in new  # the new key lives until revoked
        listed = {r[2]: (r[3], r[5]) for r in self.listing(capsys, config)[1:]}
        assert listed == {
            old["access key id"]: ("active", until),
            new["access key id"]: ("active", "never"),
        }

    def test_revoke_sessions(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """revoke --sessions PRINCIPAL records a cutoff for that caller's sessions, shown by
        list, and says that new ones are still issued."""
        self.run(capsys, config, "create", "svc-a")

        assert (
            main(["identity", "revoke", "--sessions", "repo:acme/*", "--config", str(config)]) == 0
        )
        out, err = capsys.readouterr()
        assert out.startswith("revoked the sessions and workload tokens of repo:acme/* issued ")
        assert "new ones are still issued to it" in err
        assert self.listing(capsys, config)[-1][:3] == ["sessions", "of", "repo:acme/*"]

    def test_rotate_token_of_a_key_only_identity_says_how(
        self, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """rotate --token for an identity that has only a key names the command that adds
        a token."""
        self.run(capsys, config, "create", "svc-a")

        _, err = self.run(capsys, config, "rotate", "svc-a", "--token", status=2)

        assert err == (
            "keyledger: identity 'svc-a' has no token to rotate; issue a token with: "
            "keyledger identity create svc-a --token\n"
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
