"""The config file: one validated model, and errors that name the key and its position."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from keyledger.proxy.app import StartupError, load_checkpointing
from keyledger.proxy.config import ConfigError, load_config, parse_listen


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "keyledger.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


MINIMAL = """
    policies: [policies/]
    backends:
      aws: {region: eu-west-1}
"""


class TestLoadConfig:
    def test_full_config(self, tmp_path: Path) -> None:
        """Every setting is read, and relative paths are taken from the config's folder."""
        path = write(
            tmp_path,
            """
            listen: "0.0.0.0:8443"
            tls:
              cert: certs/proxy.pem
              key: certs/proxy.key
            allow_plaintext: false
            identities:
              path: state/identities.json
              key_env: MY_IDENTITY_KEY
              key_file: keys/identity.key
            policies:
              - policies/
              - /etc/keyledger/extra/*.yaml
            backends:
              prod:
                type: aws
                region: eu-west-1
                endpoint_url: http://127.0.0.1:4566
                profile: keyledger
                timeout_s: 5
              aws:
                region: us-east-1
            frontends:
              aws:
                backend: prod
            audit:
              journal: var/audit
              chain_id: node-1
              fsync: false
              fingerprint_key_env: MY_FP_KEY
              fingerprint_key_file: keys/fp.key
            limits:
              max_body_bytes: 65536
              request_timeout_s: 10
              max_clock_skew_s: 120
            logging:
              format: console
              level: debug
            """,
        )
        base = path.parent

        config = load_config(path)

        assert (config.listen.host, config.listen.port) == ("0.0.0.0", 8443)
        assert not config.listen.is_loopback
        assert config.listen.tls_cert == base / "certs/proxy.pem"
        assert config.listen.tls_key == base / "certs/proxy.key"
        assert config.listen.allow_plaintext is False
        assert config.identities.path == base / "state/identities.json"
        assert config.identities.key_env == "MY_IDENTITY_KEY"
        assert config.identities.key_file == base / "keys/identity.key"
        assert config.policies == (base / "policies", Path("/etc/keyledger/extra/*.yaml"))
        assert set(config.backends) == {"prod", "aws"}
        prod = config.backends["prod"]
        assert (prod.name, prod.type, prod.region) == ("prod", "aws", "eu-west-1")
        assert (prod.endpoint_url, prod.profile) == ("http://127.0.0.1:4566", "keyledger")
        assert prod.timeout_s == 5.0
        assert isinstance(prod.timeout_s, float)
        assert config.backends["aws"].type == "aws"
        assert config.aws_backend == "prod"
        assert config.audit.journal == base / "var/audit"
        assert config.audit.chain_id == "node-1"
        assert config.audit.fsync is False
        assert config.audit.fingerprint_key_env == "MY_FP_KEY"
        assert config.audit.fingerprint_key_file == base / "keys/fp.key"
        assert config.limits.max_body_bytes == 65536
        assert config.limits.request_timeout_s == 10.0
        assert config.limits.max_clock_skew_s == 120
        assert (config.logging.format, config.logging.level) == ("console", "debug")
        assert config.source == str(path)

    def test_minimal_config_defaults(self, tmp_path: Path) -> None:
        """With only policies and a backend, the defaults are safe: loopback, fsync on."""
        path = write(tmp_path, MINIMAL)
        base = path.parent

        config = load_config(path)

        assert (config.listen.host, config.listen.port) == ("127.0.0.1", 8080)
        assert config.listen.is_loopback
        assert config.listen.tls_cert is None
        assert config.identities.path == base / "identities.json"
        assert config.audit.journal == base / "var" / "audit"
        assert config.audit.fsync is True
        assert config.aws_backend == "aws"
        assert config.limits.max_clock_skew_s == 300
        assert config.logging.format == "json"

    def test_single_policy_path_as_a_string(self, tmp_path: Path) -> None:
        """`policies:` may be one path instead of a list."""
        path = write(tmp_path, "policies: p.yaml\nbackends: {aws: {}}\n")

        assert load_config(path).policies == (path.parent / "p.yaml",)

    def test_unknown_key_suggests_the_closest(self, tmp_path: Path) -> None:
        """A misspelt key is named, on its line, with the likely intended key."""
        path = write(tmp_path, MINIMAL + "    listne: 127.0.0.1:9000\n")

        message = error(path)

        assert message.startswith(f"{path}:4:")
        assert message.endswith(": listne: unknown key (did you mean 'listen'?)")

    def test_unknown_nested_key_suggests_the_closest(self, tmp_path: Path) -> None:
        """A misspelt key inside a section is named with its full dotted path."""
        path = write(tmp_path, MINIMAL + "    audit: {jornal: var/audit}\n")

        message = error(path)

        assert message.startswith(f"{path}:4:")
        assert message.endswith(": audit.jornal: unknown key (did you mean 'journal'?)")

    def test_unknown_key_is_reported_at_the_key_position(self, tmp_path: Path) -> None:
        """An unknown key is reported where the key is written, not where its value starts."""
        path = write(
            tmp_path,
            """
            policies: [p.yaml]
            backend:
              aws: {region: eu-west-1}
            """,
        )

        assert error(path) == f"{path}:2:1: backend: unknown key (did you mean 'backends'?)"

    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            pytest.param(
                "    audit: {fsync: 'yes'}\n",
                "4:16: audit.fsync: expected bool, got str",
                id="bool",
            ),
            pytest.param(
                "    limits: {max_body_bytes: true}\n",
                "4:26: limits.max_body_bytes: expected int, got bool",
                id="int",
            ),
            pytest.param(
                "    limits: {request_timeout_s: '5'}\n",
                "4:29: limits.request_timeout_s: expected float, got str",
                id="float",
            ),
            pytest.param("    audit: [journal]\n", "4:8: audit: expected a mapping", id="mapping"),
        ],
    )
    def test_wrong_type(self, tmp_path: Path, extra: str, expected: str) -> None:
        """A value of the wrong type is reported at the value, naming the key and both types."""
        path = write(tmp_path, MINIMAL + extra)

        assert error(path) == f"{path}:{expected}"

    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            pytest.param(
                "    limits: {max_body_bytes: -1}\n",
                "4:26: limits.max_body_bytes: expected 1024 to 67108864, got -1",
                id="negative-body",
            ),
            pytest.param(
                "    limits: {request_timeout_s: 0}\n",
                "4:29: limits.request_timeout_s: expected 0.1 to 600, got 0",
                id="zero-timeout",
            ),
            pytest.param(
                "    limits: {max_clock_skew_s: 86400}\n",
                "4:28: limits.max_clock_skew_s: expected 1 to 3600, got 86400",
                id="day-of-skew",
            ),
            pytest.param(
                "    limits: {max_connections: 0}\n",
                "4:27: limits.max_connections: expected 1 to 1000000, got 0",
                id="no-connections",
            ),
            pytest.param(
                "    limits: {rate: {per_source: 0}}\n",
                "4:29: limits.rate.per_source: expected 0.01 to 1000000, got 0",
                id="zero-rate",
            ),
        ],
    )
    def test_limits_out_of_range(self, tmp_path: Path, extra: str, expected: str) -> None:
        """A limit that would turn its protection off (0 s, a negative size, a day of clock
        skew) is refused at its value with the range it may take."""
        path = write(tmp_path, MINIMAL + extra)

        assert error(path) == f"{path}:{expected}"

    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            pytest.param(
                "    cache: {rules: [{secrets: 'gcp:x/*', ttl: 60s}]}\n",
                "4:27: cache.rules[0].secrets: gcp:x/*: no backend 'gcp' (aws)",
                id="unknown-backend",
            ),
            pytest.param(
                "    cache: {rules: [{secrets: 'aws:prod/*'}]}\n",
                "4:17: cache.rules[0].ttl: required: how long an answer is served from memory"
                " (60s)",
                id="no-ttl",
            ),
            pytest.param(
                "    cache: {rules: [{secrets: 'prod/*', ttl: 60s}]}\n",
                "4:27: cache.rules[0].secrets: resource 'prod/*' must be written backend:name"
                " (aws:prod/*)",
                id="no-backend",
            ),
        ],
    )
    def test_a_cache_rule_names_secrets_of_a_backend_with_a_ttl(
        self, tmp_path: Path, extra: str, expected: str
    ) -> None:
        """A cache rule is checked at load: its secrets as policies write them, on a
        configured backend, and a TTL."""
        path = write(tmp_path, MINIMAL + extra)

        assert error(path) == f"{path}:{expected}"

    def test_the_cache_is_off_unless_a_rule_names_secrets(self, tmp_path: Path) -> None:
        """No cache section: off; a rule: on, with its TTL."""
        assert not load_config(write(tmp_path, MINIMAL)).cache.enabled
        path = write(tmp_path, MINIMAL + "    cache: {rules: [{secrets: 'aws:prod/*', ttl: 2m}]}\n")

        cache = load_config(path).cache

        assert cache.enabled
        assert [(r.secrets, r.ttl_s) for r in cache.rules] == [(("aws:prod/*",), 120.0)]

    def test_rate_limits_and_connection_bounds(self, tmp_path: Path) -> None:
        """Rate limits are off unless set; connection bounds have safe defaults."""
        path = write(
            tmp_path,
            MINIMAL
            + "    limits: {rate: {per_source: 50, per_principal: 20.5}, max_connections: 64}\n",
        )

        limits = load_config(path).limits

        assert (limits.rate_per_source, limits.rate_per_principal) == (50.0, 20.5)
        assert limits.max_connections == 64
        assert load_config(write(tmp_path, MINIMAL)).limits.rate_per_source is None
        assert load_config(write(tmp_path, MINIMAL)).limits.header_timeout_s == 10.0

    @pytest.mark.parametrize("listen", ["localhost", "127.0.0.1:65536", "127.0.0.1:-1", "h:http"])
    def test_bad_listen(self, tmp_path: Path, listen: str) -> None:
        """A listen address that is not HOST:PORT is refused with an example."""
        path = write(tmp_path, f"listen: '{listen}'\n" + textwrap.dedent(MINIMAL))

        assert error(path) == (
            f"{path}:1:9: listen: {listen!r} is not HOST:PORT (e.g. 127.0.0.1:8080)"
        )

    def test_listen_of_wrong_type_is_reported_once(self, tmp_path: Path) -> None:
        """A listen value that is not a string gets one plain `file:line:col: listen:` error."""
        path = write(tmp_path, MINIMAL + "    listen: 8080\n")

        assert error(path) == f"{path}:4:9: listen: expected str, got int"

    def test_tls_needs_both_cert_and_key(self, tmp_path: Path) -> None:
        """TLS with a certificate but no key is refused."""
        path = write(tmp_path, MINIMAL + "    tls:\n      cert: proxy.pem\n")

        assert error(path) == f"{path}:5:9: tls.cert: tls needs both cert and key"

    def test_unknown_backend_type(self, tmp_path: Path) -> None:
        """A backend type keyledger does not support is refused, listing those it does."""
        path = write(tmp_path, "policies: [p.yaml]\nbackends:\n  vault: {type: hashicorp}\n")

        assert error(path) == (
            f"{path}:3:17: backends.vault.type: unknown backend type 'hashicorp' "
            "(available: aws, gcp, azure)"
        )

    def test_frontend_backend_must_exist(self, tmp_path: Path) -> None:
        """The AWS frontend must serve from a configured backend."""
        path = write(tmp_path, MINIMAL + "    frontends:\n      aws: {backend: prod}\n")

        assert error(path) == f"{path}:5:18: frontends.aws.backend: no backend named 'prod'"

    def test_policies_required(self, tmp_path: Path) -> None:
        """A config without policy paths is refused: it would deny everything."""
        path = write(tmp_path, "policies: []\nbackends: {aws: {}}\n")

        message = error(path)

        assert message.startswith(str(path))
        assert message.endswith("policies: at least one policy path is required")

    def test_backends_required(self, tmp_path: Path) -> None:
        """A config without backends is refused with an example."""
        path = write(tmp_path, "policies: [p.yaml]\nbackends: {}\n")

        message = error(path)

        assert message.startswith(str(path))
        assert "backends: configure at least one" in message

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param(
                "policies: []\nbackends: {aws: {}}\n",
                ":1:11: policies: at least one policy path is required",
                id="policies",
            ),
            pytest.param(
                "policies: [p.yaml]\nbackends: {}\n",
                ":2:11: backends: configure at least one (e.g. aws: {region: ...})",
                id="backends",
            ),
        ],
    )
    def test_empty_required_section_gives_its_position(
        self, tmp_path: Path, text: str, expected: str
    ) -> None:
        """An empty required section is reported as `file:line:col: key:` like other errors."""
        path = write(tmp_path, text)

        assert error(path) == f"{path}{expected}"

    def test_policies_must_be_strings(self, tmp_path: Path) -> None:
        """Policy entries that are not paths are refused at their position."""
        path = write(tmp_path, "policies: [1, 2]\nbackends: {aws: {}}\n")

        assert error(path) == f"{path}:1:11: policies: expected a list of files, folders or globs"

    def test_yaml_syntax_error(self, tmp_path: Path) -> None:
        """Broken YAML is reported at the position the parser stopped."""
        path = write(tmp_path, "listen: a: b\n")

        # The reason is the parser's own: libyaml's where PyYAML has it, else PyYAML's.
        assert error(path) in (
            f"{path}:1:10: mapping values are not allowed in this context",
            f"{path}:1:10: mapping values are not allowed here",
        )

    def test_not_a_mapping(self, tmp_path: Path) -> None:
        """A config that is not a mapping is refused."""
        path = write(tmp_path, "- listen\n")

        assert error(path) == f"{path}: the config must be a YAML mapping"

    def test_missing_file(self, tmp_path: Path) -> None:
        """A config path that does not exist is named in the error."""
        missing = tmp_path / "absent.yaml"

        assert re.fullmatch(rf"{re.escape(str(missing))}: cannot read config: .+", error(missing))


class TestParseListen:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("127.0.0.1:8080", ("127.0.0.1", 8080)),
            (":9000", ("127.0.0.1", 9000)),
            ("[::1]:8443", ("::1", 8443)),
            ("proxy.internal:443", ("proxy.internal", 443)),
            ("127.0.0.1:0", ("127.0.0.1", 0)),
        ],
    )
    def test_accepts_host_port(self, text: str, expected: tuple[str, int]) -> None:
        """HOST:PORT, an empty host (loopback), bracketed IPv6 and port 0 (any free port) work."""
        assert parse_listen(text) == expected


class TestAuditTrailSettings:
    def test_rotation_checkpoints_and_admin(self, tmp_path: Path) -> None:
        """Rotation, checkpoint and admin settings parse, durations with units included."""
        path = write(
            tmp_path,
            MINIMAL
            + """
    audit:
      rotate: {max_bytes: 1048576, max_age: 6h}
      checkpoints: {key_file: keys/checkpoint.key, every_events: 500, every: 30s}
    admin:
      listen: 127.0.0.1:9191
      token_file: keys/admin.token
      stream_backlog: 500
""",
        )
        config = load_config(path)
        base = path.parent

        assert config.audit.rotate_max_bytes == 1 << 20
        assert config.audit.rotate_max_age_s == 6 * 3600
        checkpoints = config.audit.checkpoints
        assert checkpoints.enabled
        assert checkpoints.key_file == base / "keys" / "checkpoint.key"
        assert (checkpoints.every_events, checkpoints.every_s) == (500, 30.0)
        assert config.admin is not None
        assert (config.admin.host, config.admin.port) == ("127.0.0.1", 9191)
        assert config.admin.token_file == base / "keys" / "admin.token"
        assert config.admin.stream_backlog == 500

    def test_defaults_sign_rotate_and_serve_admin_on_loopback(self, tmp_path: Path) -> None:
        """By default checkpoints are on (a key is required), files rotate daily or at 64 MiB,
        and the admin API listens on loopback behind a token, /readyz included."""
        config = load_config(write(tmp_path, MINIMAL))

        assert config.audit.checkpoints.enabled
        assert config.audit.checkpoints.key_env == "KEYLEDGER_CHECKPOINT_KEY"
        assert config.audit.rotate_max_bytes == 64 << 20
        assert config.audit.rotate_max_age_s == 86400
        assert config.admin is not None
        assert (config.admin.host, config.admin.port) == ("127.0.0.1", 9090)
        assert config.admin.token_env == "KEYLEDGER_ADMIN_TOKEN"
        assert not config.admin.open_readyz

    def test_admin_can_be_turned_off_or_open_its_readiness(self, tmp_path: Path) -> None:
        off = load_config(write(tmp_path, MINIMAL + "    admin: {enabled: false}\n"))
        assert off.admin is None
        probes = load_config(write(tmp_path, MINIMAL + "    admin: {open_readyz: true}\n"))
        assert probes.admin is not None
        assert probes.admin.open_readyz

    def test_zero_turns_a_rotation_trigger_off(self, tmp_path: Path) -> None:
        """max_bytes: 0 and max_age: 0 mean no size or age limit."""
        path = write(tmp_path, MINIMAL + "    audit: {rotate: {max_bytes: 0, max_age: 0}}\n")

        config = load_config(path)

        assert (config.audit.rotate_max_bytes, config.audit.rotate_max_age_s) == (None, None)

    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            (
                "    audit: {rotate: {max_bytes: 100}}\n",
                "audit.rotate.max_bytes: expected at least 4096",
            ),
            (
                "    audit: {rotate: {max_age: soon}}\n",
                "audit.rotate.max_age: 'soon' is not a duration",
            ),
            (
                "    audit: {checkpoints: {every_events: 0}}\n",
                "audit.checkpoints.every_events: expected at least 1",
            ),
            ("    admin: {listen: '127.0.0.1:8080'}\n", "admin.listen: the admin API needs a port"),
            ("    admin: {stream_backlog: 1}\n", "admin.stream_backlog: expected 10 to"),
        ],
    )
    def test_mistakes_are_named(self, tmp_path: Path, extra: str, expected: str) -> None:
        """Each wrong audit or admin setting names its key and what would be right."""
        assert expected in error(write(tmp_path, MINIMAL + extra))

    def test_no_checkpoint_key_refuses_to_start(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a signing key keyledger does not start, and says how to make one."""
        monkeypatch.delenv("KEYLEDGER_CHECKPOINT_KEY", raising=False)
        config = load_config(write(tmp_path, MINIMAL))

        with pytest.raises(StartupError, match="keyledger keys generate --out PREFIX"):
            load_checkpointing(config)

    def test_checkpoints_can_be_turned_off(self, tmp_path: Path) -> None:
        """enabled: false is the explicit way to run without signed checkpoints."""
        path = write(tmp_path, MINIMAL + "    audit: {checkpoints: {enabled: false}}\n")

        assert load_checkpointing(load_config(path)) is None


class TestLoggingSettings:
    @pytest.mark.parametrize(
        ("setting", "expected"),
        [
            (
                "level: verbose",
                "5:10: logging.level: expected one of debug, info, warning, error, critical",
            ),
            (
                "level: warn",
                "5:10: logging.level: expected one of debug, info, warning, error, "
                "critical (did you mean 'warning'?)",
            ),
            (
                "format: jsn",
                "5:11: logging.format: expected json or console (did you mean 'json'?)",
            ),
        ],
    )
    def test_logging_mistakes_are_refused_with_their_position(
        self, tmp_path: Path, setting: str, expected: str
    ) -> None:
        """A logging level or format keyledger does not know is refused at file:line:col."""
        path = write(tmp_path, MINIMAL + f"    logging:\n      {setting}\n")

        assert error(path) == f"{path}:{expected}"

    def test_logging_level_is_read_in_any_case(self, tmp_path: Path) -> None:
        """INFO and info are the same level (both spellings appear in real configs)."""
        path = write(tmp_path, MINIMAL + "    logging: {level: WARNING}\n")

        assert load_config(path).logging.level == "warning"


class TestGoogleBackends:
    def test_projects_map_to_their_backends_and_grpc_listens(self, tmp_path: Path) -> None:
        """Each gcp backend serves the projects it maps; one without a map serves the rest;
        the AWS protocol stays on the aws backend."""
        path = write(
            tmp_path,
            """
            policies: [p/]
            backends:
              aws: {region: eu-west-1}
              gcp-eu:
                type: gcp
                projects: {shop: shop-prod-4711, billing: billing-prod}
                timeout_s: 5
              gcp: {type: gcp}
            frontends:
              gcp: {grpc_listen: "127.0.0.1:8444"}
            """,
        )

        config = load_config(path)

        assert config.aws_backend == "aws"
        assert config.backends["gcp-eu"].projects == {
            "shop": "shop-prod-4711",
            "billing": "billing-prod",
        }
        assert config.backends["gcp-eu"].timeout_s == 5
        assert config.gcp.projects == {"shop": "gcp-eu", "billing": "gcp-eu"}
        assert config.gcp.default == "gcp"
        assert config.gcp.grpc_listen == ("127.0.0.1", 8444)

    def test_a_google_only_config_serves_no_aws_protocol(self, tmp_path: Path) -> None:
        """Without an aws backend, the AWS protocol is served by nothing."""
        path = write(tmp_path, "policies: [p/]\nbackends:\n  gcp: {type: gcp}\n")

        config = load_config(path)

        assert config.aws_backend == ""
        assert config.gcp.enabled

    @pytest.mark.parametrize(
        ("backends", "expected"),
        [
            (
                "  g: {type: gcp, credentials: anonymous, endpoint: 'secretmanager.example:443'}",
                "backends.g.credentials: anonymous is only for a stand-in on a loopback endpoint",
            ),
            ("  g: {type: gcp, credentials: anon}", "(did you mean 'anonymous'?)"),
            ("  g: {type: gcp, projects: {}}", "backends.g.projects: expected a mapping"),
            ("  g: {type: gcp, region: eu}", "backends.g.region: unknown key"),
            (
                "  a: {type: gcp}\n  b: {type: gcp}",
                "backends.b.projects: 'a' already passes every project through",
            ),
            (
                "  a: {type: gcp, projects: {p: x}}\n  b: {type: gcp, projects: {p: y}}",
                "backends.b.projects.p: already served by 'a'",
            ),
        ],
    )
    def test_mistakes_are_named(self, tmp_path: Path, backends: str, expected: str) -> None:
        """Each mistake in a gcp backend is refused naming the setting."""
        path = write(tmp_path, f"policies: [p/]\nbackends:\n{backends}\n")

        assert expected in error(path)

    def test_the_aws_protocol_needs_an_aws_backend(self, tmp_path: Path) -> None:
        """frontends.aws.backend naming a gcp backend is refused."""
        path = write(
            tmp_path,
            "policies: [p/]\nbackends:\n  g: {type: gcp}\nfrontends:\n  aws: {backend: g}\n",
        )

        assert "frontends.aws.backend: 'g' is not an aws backend" in error(path)


class TestAlertSettings:
    def test_rules_and_destinations(self, tmp_path: Path) -> None:
        """Rule paths are taken from the config's folder; a destination's URL and secret
        may come from files or env vars; its name defaults to its type."""
        path = write(
            tmp_path,
            MINIMAL
            + """
    alerts:
      rules: [alerts/]
      backlog: 500
      destinations:
        - {type: webhook, name: soc, url_env: SOC_HOOK, secret_file: keys/hook.key}
        - {type: slack, url_file: keys/slack.url, timeout: 2s}
        - {type: alertmanager, url: "http://alertmanager:9093", max_attempts: 3}
        - {type: stdout}
    """,
        )
        alerts = load_config(path).alerts
        folder = path.parent
        assert alerts.rules == (folder / "alerts",)
        assert alerts.backlog == 500
        webhook, slack, manager, stdout = alerts.destinations
        assert (webhook.name, webhook.url_env, webhook.secret_file) == (
            "soc",
            "SOC_HOOK",
            folder / "keys" / "hook.key",
        )
        assert (slack.name, slack.url_file, slack.timeout_s) == (
            "slack",
            folder / "keys" / "slack.url",
            2.0,
        )
        assert (manager.url, manager.max_attempts) == ("http://alertmanager:9093", 3)
        assert stdout.type == "stdout"

    def test_off_unless_rules_are_named(self, tmp_path: Path) -> None:
        assert not load_config(write(tmp_path, MINIMAL)).alerts.enabled

    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            (
                "alerts: {rules: [a/], destinations: [{type: slak}]}",
                "alerts.destinations[0].type: expected one of webhook, slack, alertmanager, "
                "stdout (did you mean 'slack'?)",
            ),
            (
                "alerts: {rules: [a/], destinations: [{type: webhook, url: 'http://x'}]}",
                "alerts.destinations[0].secret_file: a webhook signs every alert",
            ),
            (
                "alerts: {rules: [a/], destinations: [{type: slack}]}",
                "alerts.destinations[0].url: a slack destination needs one of url, url_file, "
                "url_env",
            ),
            (
                "alerts: {destinations: [{type: stdout}]}",
                "alerts.destinations: alerts need rules",
            ),
            (
                "alerts: {rules: [a/], destinations: [{type: stdout}, {type: stdout}]}",
                "alerts.destinations: two destinations are named 'stdout'",
            ),
            (
                "alerts: {rules: [a/], destinations: "
                "[{type: alertmanager, url: u, secret_env: X}]}",
                "alerts.destinations[0].secret_env: unknown key",
            ),
        ],
    )
    def test_mistakes_are_named(self, tmp_path: Path, extra: str, expected: str) -> None:
        assert expected in error(write(tmp_path, MINIMAL + "    " + extra + "\n"))


class TestRetentionSettings:
    S3 = "      sinks: [{type: s3, bucket: acme-audit}]\n"

    def test_off_unless_max_age_is_set(self, tmp_path: Path) -> None:
        """Without audit.retention keyledger deletes nothing."""
        config = load_config(write(tmp_path, MINIMAL))

        assert not config.audit.retention.enabled

    def test_max_age_and_interval_with_a_sink(self, tmp_path: Path) -> None:
        """With an S3 sink, max_age and interval parse as durations; no opt-in is needed."""
        path = write(
            tmp_path,
            MINIMAL + "    audit:\n" + self.S3 + "      retention: {max_age: 90d, interval: 10m}\n",
        )

        retention = load_config(path).audit.retention

        assert retention.enabled
        assert (retention.max_age_s, retention.interval_s) == (90 * 86400, 600)
        assert not retention.without_sinks

    def test_no_sink_is_refused_at_its_line(self, tmp_path: Path) -> None:
        """Retention with no s3 or cloudwatch sink would delete the only copy: refused at the
        max_age line, naming the way out."""
        path = write(
            tmp_path,
            MINIMAL
            + """
    audit:
      sinks: [{type: stdout}]
      retention:
        max_age: 30d
""",
        )

        message = error(path)

        assert message.startswith(f"{path}:8:")
        assert "audit.retention.max_age: no s3 or cloudwatch sink is configured" in message
        assert "the only copy" in message
        assert "audit.retention.without_sinks: true" in message

    def test_without_sinks_is_the_explicit_opt_in(self, tmp_path: Path) -> None:
        """without_sinks: true accepts deleting the only copy."""
        path = write(
            tmp_path, MINIMAL + "    audit: {retention: {max_age: 30d, without_sinks: true}}\n"
        )

        retention = load_config(path).audit.retention

        assert retention.enabled
        assert retention.without_sinks

    @pytest.mark.parametrize(
        ("retention", "expected"),
        [
            ("{interval: 1h}", "audit.retention: expected max_age (e.g. 90d)"),
            ("{max_age: 10m}", "audit.retention.max_age: expected 1h to 36500d"),
            ("{max_age: soon}", "audit.retention.max_age: 'soon' is not a duration"),
            ("{max_age: 90d, interval: 0}", "audit.retention.interval: expected 1s to 24h"),
            ("{max_age: 90d, keep: 3}", "audit.retention.keep: unknown key"),
            (
                "{max_age: 90d, without_sinks: true}",
                "audit.retention.without_sinks: sinks s3 are configured",
            ),
        ],
    )
    def test_mistakes_are_named(self, tmp_path: Path, retention: str, expected: str) -> None:
        """Each wrong retention setting names its key and what would be right."""
        path = write(
            tmp_path, MINIMAL + "    audit:\n" + self.S3 + f"      retention: {retention}\n"
        )
        assert expected in error(path)
