"""keyledger's configuration: one frozen model, parsed once from YAML.

Every error names the key and where it is: ``config.yaml:12:3: audit.journal: expected a
string``. Relative paths are resolved against the config file's folder, so a config works
the same from any working directory.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from keyledger._yaml import YamlError, did_you_mean, load_located, where, where_key
from keyledger.policies.model import ResourcePattern
from keyledger.proxy.audit.minimise import IpHandling, MinimiseConfig
from keyledger.proxy.issuers import ALGORITHMS as OIDC_ALGORITHMS
from keyledger.proxy.issuers import DEFAULT_ALGORITHMS, IssuerSettings
from keyledger.proxy.issuers import PRESETS as OIDC_PRESETS

__all__ = [
    "AZURE_CREDENTIALS",
    "BACKEND_TYPES",
    "AdminConfig",
    "AuditConfig",
    "AzureFrontendConfig",
    "AzureVaultConfig",
    "BackendConfig",
    "CacheConfig",
    "CacheRuleConfig",
    "CheckpointConfig",
    "CloudWatchSinkConfig",
    "Config",
    "ConfigError",
    "ConsoleConfig",
    "GeoIpConfig",
    "IdentitiesConfig",
    "LimitsConfig",
    "ListenConfig",
    "LoggingConfig",
    "OidcConfig",
    "S3SinkConfig",
    "ShippingConfig",
    "SinkBatch",
    "SinkConfig",
    "StdoutSinkConfig",
    "is_loopback_host",
    "load_config",
    "parse_duration",
    "parse_listen",
    "read_key",
    "require_key",
]

# The stores `serve` can front (`backends.<name>.type`); `policy check` without a config
# allows only these too.
BACKEND_TYPES: tuple[str, ...] = ("aws", "gcp", "azure")
# How the azure backend gets its own Azure credentials (never the caller's): azure-identity's
# chain, one of its members, or a fixed token for a stand-in on loopback.
AZURE_CREDENTIALS: tuple[str, ...] = (
    "default",
    "environment",
    "workload_identity",
    "managed_identity",
    "standin",
)

T = TypeVar("T")
N = TypeVar("N", int, float)


class ConfigError(ValueError):
    """A config problem; the message starts with ``file:line:col: key:``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # HTTPS on an address of its own beside the plain listener (None: ``host:port`` itself
    # serves HTTPS when tls_cert is set).
    tls_listen: tuple[str, int] | None = None
    # Ask TLS clients for a certificate and verify it against this CA (not required).
    tls_client_ca: Path | None = None
    # Secrets travel in responses: plain HTTP is refused off loopback unless this is set.
    allow_plaintext: bool = False

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def plain_is_tls(self) -> bool:
        """``host:port`` serves HTTPS (no HTTPS listener of its own is configured)."""
        return self.tls and self.tls_listen is None


def is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentitiesConfig:
    path: Path
    key_env: str | None = "KEYLEDGER_IDENTITY_KEY"
    key_file: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AzureVaultConfig:
    """One Key Vault an azure backend serves, and how callers reach it through keyledger."""

    name: str  # as policies name it
    url: str  # the real vault: https://acme-payments.vault.azure.net
    hosts: tuple[str, ...] = ()  # the Host names callers use for it (payments.kv.internal)
    path: str | None = None  # or a path prefix on any host (/payments)
    default: bool = False  # the vault of requests no host or path names


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendConfig:
    name: str
    type: str  # aws | gcp
    region: str | None = None  # aws
    endpoint_url: str | None = None  # aws
    profile: str | None = None  # aws
    timeout_s: float = 10.0
    # gcp: "host:port" of the gRPC API (None: Google's), the projects callers name mapped to
    # the real ones (None: passed through), and "default" or "anonymous" credentials.
    endpoint: str | None = None
    projects: Mapping[str, str] | None = None
    credentials: str = "default"
    # azure: the vaults it serves (policies name them: azure:{vault}/{secret}); its
    # credentials are one of AZURE_CREDENTIALS (``client_id`` picks a managed identity),
    # and ``ca_file`` trusts a private CA on the way to the vaults (a stand-in).
    vaults: Mapping[str, AzureVaultConfig] | None = None
    client_id: str | None = None
    ca_file: Path | None = None
    # Only `serve --dev` sets these (for its embedded store); real deployments use the
    # boto3 credential chain and never put keys in a config file.
    static_credentials: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointConfig:
    """Signed checkpoints: on unless turned off; the key lives outside the journal."""

    enabled: bool = True
    key_env: str | None = "KEYLEDGER_CHECKPOINT_KEY"  # the PEM text itself
    key_file: Path | None = None
    every_events: int = 1000
    every_s: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkBatch:
    """How big a batch may grow, and how long its oldest event may wait for more."""

    max_events: int
    max_bytes: int
    max_wait_s: float


# The defaults are also the most each sink takes: one object, one PutLogEvents call (at
# most 10,000 events and 1 MiB), one write.
S3_BATCH = SinkBatch(max_events=10_000, max_bytes=8 << 20, max_wait_s=10.0)
CLOUDWATCH_BATCH = SinkBatch(max_events=10_000, max_bytes=1 << 20, max_wait_s=2.0)
STDOUT_BATCH = SinkBatch(max_events=1000, max_bytes=1 << 20, max_wait_s=0.2)


@dataclass(frozen=True, slots=True, kw_only=True)
class _AwsSink:
    name: str
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    # Only `serve --dev` sets these (its embedded moto); see BackendConfig.
    static_credentials: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class S3SinkConfig(_AwsSink):
    bucket: str
    prefix: str = ""  # empty, or ending in "/"
    lock_mode: str | None = "COMPLIANCE"  # None: the bucket's default retention applies
    retention_days: int = 365
    require_object_lock: bool = True
    batch: SinkBatch = S3_BATCH


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudWatchSinkConfig(_AwsSink):
    log_group: str
    retention_days: int | None = None  # None: leave the group's retention alone
    batch: SinkBatch = CLOUDWATCH_BATCH


@dataclass(frozen=True, slots=True, kw_only=True)
class StdoutSinkConfig:
    name: str
    batch: SinkBatch = STDOUT_BATCH


SinkConfig = S3SinkConfig | CloudWatchSinkConfig | StdoutSinkConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class ShippingConfig:
    """How every sink's shipper retries, when its lag raises the alarm, how it stops."""

    retry_min_s: float = 0.5
    retry_max_s: float = 60.0
    lag_alarm_events: int = 100_000
    lag_alarm_s: float = 300.0
    drain_s: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionConfig:
    """When closed journal segments may be deleted; off (None) unless max_age is set."""

    max_age_s: float | None = None  # a segment whose newest event is older than this ...
    interval_s: float = 3600.0  # ... is looked for this often ...
    without_sinks: bool = False  # ... and, with no s3/cloudwatch sink, only with this opt-in

    @property
    def enabled(self) -> bool:
        return self.max_age_s is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditConfig:
    journal: Path
    chain_id: str
    fsync: bool = True
    fingerprint_key_env: str | None = "KEYLEDGER_FINGERPRINT_KEY"
    fingerprint_key_file: Path | None = None
    rotate_max_bytes: int | None = 64 << 20
    rotate_max_age_s: float | None = 24 * 3600.0
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    minimise: MinimiseConfig = field(default_factory=MinimiseConfig)
    sinks: tuple[SinkConfig, ...] = ()
    shipping: ShippingConfig = field(default_factory=ShippingConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 30.0
    max_clock_skew_s: int = 300
    # Slow and many clients: data-plane connections open at once (per process), the time a
    # caller has to send a request's headers, and how long an idle keep-alive connection stays.
    max_connections: int = 1024
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 75.0
    # Requests per second one source address, or one principal, may make (token buckets
    # holding ``rate_burst_s`` seconds' worth); None: no limit.
    rate_per_source: float | None = None
    rate_per_principal: float | None = None
    rate_burst_s: float = 2.0
    # At SIGTERM: how long requests in flight may take to finish before they are cut off.
    shutdown_timeout_s: float = 20.0
    # Sign-in failures of one source for one reason: this many per window are each an
    # event; the rest of a flood is one aggregate event per window.
    auth_failures_recorded: int = 10
    auth_failure_window_s: float = 60.0
    # The answers to the rest of such a flood (and of throttled calls) wait this long: a
    # flood then cannot take the event loop from good callers.
    flood_delay_s: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyReloadConfig:
    watch: bool = True  # poll the policy files; SIGHUP reloads either way
    interval_s: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleConfig:
    """The web console on the admin listener (``/ui/``): the admin token buys a session."""

    enabled: bool = True
    session_ttl_s: float = 8 * 3600.0  # a session ends this long after its sign-in
    max_sessions: int = 100  # past this, a sign-in ends the oldest session


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminConfig:
    """The admin API: its own listener, never the data plane's, behind a bearer token."""

    host: str = "127.0.0.1"
    port: int = 9090
    token_env: str | None = "KEYLEDGER_ADMIN_TOKEN"  # noqa: S105 (a variable's name)
    token_file: Path | None = None
    # Events a stream reader may fall behind before it is dropped.
    stream_backlog: int = 10_000
    # Serve /readyz without the token (pass/fail per check, no details): kubelet probes
    # and load balancer health checks cannot send a secret header.
    open_readyz: bool = False
    console: ConsoleConfig = field(default_factory=ConsoleConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class GcpFrontendConfig:
    """Google's protocols: REST on the data plane (``/v1/...``), gRPC on a port of its own."""

    # The project callers name -> the backend serving it; ``default`` serves the rest.
    projects: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None
    grpc_listen: tuple[str, int] | None = None  # None: no gRPC listener

    @property
    def enabled(self) -> bool:
        return bool(self.projects) or self.default is not None


# No tenant: each client asks its own. A tenant in the challenge must be every caller's, or
# azure-identity refuses to get a token (its multi-tenant check).
AZURE_AUTHORITY = "https://login.microsoftonline.com"


@dataclass(frozen=True, slots=True, kw_only=True)
class AzureFrontendConfig:
    """Key Vault's protocol (``/secrets/...``, ``/deletedsecrets/...``) on the data plane.

    Which (backend, vault) a request is for: by its Host name, else by a path prefix, else
    the default vault. The challenge tells clients where to get a token for which resource.
    """

    hosts: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    paths: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    default: tuple[str, str] | None = None
    authority: str = AZURE_AUTHORITY
    resource: str = "https://vault.azure.net"

    @property
    def enabled(self) -> bool:
        return bool(self.hosts) or bool(self.paths) or self.default is not None


ALERT_DESTINATIONS = ("webhook", "slack", "alertmanager", "stdout")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertDestinationConfig:
    """One place alerts go. URLs that are credentials (Slack's, a webhook's with a token)
    and the webhook's signing secret may come from a file or an env var instead."""

    type: str  # webhook | slack | alertmanager | stdout
    name: str
    url: str | None = field(default=None, repr=False)
    url_file: Path | None = None
    url_env: str | None = None
    secret_file: Path | None = None  # webhook: the HMAC key receivers check signatures with
    secret_env: str | None = None
    generator_url: str | None = None  # alertmanager: the alerts' back-link
    queue_size: int = 1000
    # Backoff doubles from 0.5s up to 30s: 12 attempts ride out a receiver down for ~3 min.
    max_attempts: int = 12
    timeout_s: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertsConfig:
    """Alert rules over the live audit stream, and where their alerts go."""

    rules: tuple[Path, ...] = ()  # rule files or folders of them
    destinations: tuple[AlertDestinationConfig, ...] = ()
    backlog: int = 10_000  # durable batches waiting for detection before they are dropped

    @property
    def enabled(self) -> bool:
        return bool(self.rules)


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheRuleConfig:
    """Cache the reads of the secrets ``secrets`` names (``backend:glob``) for ``ttl_s``."""

    secrets: tuple[str, ...]
    ttl_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """The audited secret cache (see proxy/cache.py); off unless a rule names secrets."""

    rules: tuple[CacheRuleConfig, ...] = ()
    max_entries: int = 10_000
    max_bytes: int = 64 << 20
    stale_for_s: float = 0.0  # serve an expired entry this long while the store is down

    @property
    def enabled(self) -> bool:
        return bool(self.rules)


@dataclass(frozen=True, slots=True, kw_only=True)
class GeoIpConfig:
    """MaxMind DB files that place callers' addresses: events then carry ``request.geo``."""

    country_db: Path | None = None  # GeoLite2-Country / GeoIP2-Country (or a City database)
    asn_db: Path | None = None  # GeoLite2-ASN

    @property
    def enabled(self) -> bool:
        return self.country_db is not None or self.asn_db is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class OidcConfig:
    """Workload identities: the OIDC issuers whose JWTs are accepted as bearer tokens."""

    issuers: tuple[IssuerSettings, ...] = ()
    clock_skew_s: float = 60.0
    refresh_min_s: float = 30.0  # the least time between two fetches of one issuer's keys
    # How long AWS credentials traded for a token (STS) last, unless the caller asks less.
    session_ttl_s: float = 3600.0

    @property
    def enabled(self) -> bool:
        return bool(self.issuers)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    format: str = "json"  # json | console
    level: str = "info"  # debug | info | warning | error | critical


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    listen: ListenConfig
    identities: IdentitiesConfig
    policies: tuple[Path | str, ...]
    policy_reload: PolicyReloadConfig = field(default_factory=PolicyReloadConfig)
    backends: Mapping[str, BackendConfig]
    aws_backend: str  # the backend the AWS wire protocol is served from ("": none)
    gcp: GcpFrontendConfig = field(default_factory=lambda: GcpFrontendConfig())
    azure: AzureFrontendConfig = field(default_factory=lambda: AzureFrontendConfig())
    oidc: OidcConfig = field(default_factory=lambda: OidcConfig())
    alerts: AlertsConfig = field(default_factory=lambda: AlertsConfig())
    geoip: GeoIpConfig = field(default_factory=lambda: GeoIpConfig())
    cache: CacheConfig = field(default_factory=lambda: CacheConfig())
    audit: AuditConfig
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    admin: AdminConfig | None = field(default_factory=AdminConfig)  # None: turned off
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = "<built-in>"
    base: Path | None = None  # the config file's folder, which relative paths start from
    # "file:line:col" of settings that are only checked at start-up (files they name),
    # so those errors can point into the config too.
    positions: Mapping[str, str] = field(default_factory=dict)

    @property
    def lower_case(self) -> tuple[str, ...]:
        """The backends whose secret names reach policy in lower case (Key Vault's)."""
        return tuple(name for name, b in self.backends.items() if b.type == "azure")

    def where(self, setting: str) -> str:
        """The ``file:line:col`` of ``setting`` (e.g. ``tls.cert``), else the config's name."""
        return self.positions.get(setting, self.source)


def read_key(*, env: str | None, file: Path | None) -> bytes | None:
    """Key material the config points at: the named file's content, else the env var's.

    None when neither holds one; OSError when the file cannot be read.
    """
    if file is not None:
        return file.read_bytes().strip()  # editors and `echo` leave a newline
    value = os.environ.get(env) if env else None
    return value.encode() if value else None


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def require_key(
    *,
    env: str | None,
    file: Path | None,
    setting: str,
    missing: str,
    error: type[Exception] = ConfigError,
) -> bytes:
    """Key material the config points at, or ``error``: naming ``setting`` when the file
    cannot be read, saying ``missing`` when neither the file nor the env var holds one."""
    try:
        key = read_key(env=env, file=file)
    except OSError as exc:
        raise error(f"cannot read {setting} {file}: {exc.strerror}") from exc
    if key is None:
        raise error(missing)
    return key


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d``, ``250ms`` or plain seconds, as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 60s, 15m, 24h, 7d)")
    return float(match[1]) * _UNITS[match[2] or "s"]


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host.strip("[]") or "127.0.0.1", int(port)


def default_chain_id() -> str:
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return host.strip("-._")[:128] or "keyledger"


def _type_name(value: object) -> str:
    """What a YAML value is, as its author wrote it (not the located list it is read as)."""
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


class _Section:
    """Typed access to one mapping of the YAML, with positions for errors."""

    def __init__(self, data: Any, path: str, base: Path, source: str) -> None:
        self.data = data if isinstance(data, dict) else {}
        self.path = path
        self.base = base
        self.source = source

    def _where(self, position: str) -> str:
        return self.source if position == "<unknown>" else position

    def _fail(self, key: str, reason: str) -> ConfigError:
        name = f"{self.path}.{key}" if self.path else key
        return ConfigError(f"{self._where(where(self.data, key))}: {name}: {reason}")

    def allow_only(self, *keys: str) -> None:
        for key in self.data:
            if key not in keys:
                name = f"{self.path}.{key}" if self.path else key
                position = self._where(where_key(self.data, key))
                raise ConfigError(f"{position}: {name}: unknown key{did_you_mean(key, keys)}")

    def get(self, key: str, kind: type[T], default: T) -> T:
        value = self.data.get(key, default)
        if value is None:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self._fail(key, f"expected {kind.__name__}, got {_type_name(value)}")
        return value

    def bounded(self, key: str, kind: type[N], default: N, low: N, high: N) -> N:
        """A number from ``low`` to ``high``: a limit of 0 s or -1 bytes is a mistake."""
        value = self.get(key, kind, default)
        if not low <= value <= high:
            expected = f"expected {_number(low)} to {_number(high)}"
            raise self._fail(key, f"{expected}, got {_number(value)}")
        return value

    def optional_str(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._fail(key, f"expected a string, got {_type_name(value)}")
        return value

    def duration(self, key: str, default: float) -> float:
        """Seconds, written as a number or with a unit: 90s, 15m, 24h, 7d."""
        value = self.data.get(key, default)
        if isinstance(value, bool):
            raise self._fail(key, "expected a duration such as 60s, 15m, 24h or 7d")
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            raise self._fail(key, str(exc)) from None

    def optional_path(self, key: str) -> Path | None:
        value = self.optional_str(key)
        return None if value is None else self.base / Path(value).expanduser()

    def position(self, key: str) -> str | None:
        """The ``file:line:col`` of the value of ``key``, when it is set."""
        at = where(self.data, key)
        return at if key in self.data and at != "<unknown>" else None

    def section(self, key: str) -> _Section:
        value = self.data.get(key)
        if value is not None and not isinstance(value, dict):
            raise self._fail(key, "expected a mapping")
        return _Section(value, f"{self.path}.{key}" if self.path else key, self.base, self.source)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _parse_limits(section: _Section) -> LimitsConfig:
    section.allow_only(
        "max_body_bytes",
        "request_timeout_s",
        "max_clock_skew_s",
        "shutdown_timeout_s",
        "auth_failures_recorded",
        "auth_failure_window",
        "flood_delay_s",
        "max_connections",
        "header_timeout_s",
        "idle_timeout_s",
        "rate",
    )
    failure_window = section.duration("auth_failure_window", 60.0)
    if not 1 <= failure_window <= 3600:
        raise section._fail("auth_failure_window", "expected 1s to 1h")
    shutdown = section.duration("shutdown_timeout_s", 20.0)
    if not 0 <= shutdown <= 3600:
        raise section._fail("shutdown_timeout_s", "expected 0s to 1h")
    rate = section.section("rate")
    rate.allow_only("per_source", "per_principal", "burst_s")
    per_source, per_principal = (
        None if rate.data.get(key) is None else rate.bounded(key, float, 0.0, 0.01, 1e6)
        for key in ("per_source", "per_principal")
    )
    # Bounds: what a real deployment could want, a little beyond; the rest is a typo (or a
    # misplaced unit) that would otherwise quietly turn a protection off.
    return LimitsConfig(
        max_body_bytes=section.bounded("max_body_bytes", int, 1 << 20, 1024, 64 << 20),
        request_timeout_s=section.bounded("request_timeout_s", float, 30.0, 0.1, 600.0),
        max_clock_skew_s=section.bounded("max_clock_skew_s", int, 300, 1, 3600),
        shutdown_timeout_s=shutdown,
        auth_failures_recorded=section.bounded("auth_failures_recorded", int, 10, 1, 1_000_000),
        auth_failure_window_s=failure_window,
        flood_delay_s=section.bounded("flood_delay_s", float, 1.0, 0.0, 30.0),
        max_connections=section.bounded("max_connections", int, 1024, 1, 1_000_000),
        header_timeout_s=section.bounded("header_timeout_s", float, 10.0, 0.1, 300.0),
        idle_timeout_s=section.bounded("idle_timeout_s", float, 75.0, 1.0, 3600.0),
        rate_per_source=per_source,
        rate_per_principal=per_principal,
        rate_burst_s=rate.bounded("burst_s", float, 2.0, 0.01, 3600.0),
    )


def load_config(path: Path) -> Config:
    """Read and validate a config file; raise :class:`ConfigError` naming file:line."""
    try:
        doc = load_located(path)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping")
    return parse_config(doc, base=path.resolve().parent, source=str(path))


def parse_config(doc: Mapping[str, Any], *, base: Path, source: str) -> Config:
    root = _Section(doc, "", base, source)
    root.allow_only(
        "listen",
        "tls",
        "allow_plaintext",
        "identities",
        "oidc",
        "policies",
        "policy_reload",
        "alerts",
        "geoip",
        "cache",
        "backends",
        "frontends",
        "audit",
        "limits",
        "admin",
        "logging",
    )

    listen_text = root.get("listen", str, "127.0.0.1:8080")
    try:
        host, port = parse_listen(listen_text)
    except ValueError as exc:
        raise root._fail("listen", str(exc)) from None
    tls = root.section("tls")
    tls.allow_only("cert", "key", "listen", "client_ca")
    tls_listen_text = tls.optional_str("listen")
    try:
        tls_listen = parse_listen(tls_listen_text) if tls_listen_text is not None else None
    except ValueError as exc:
        raise tls._fail("listen", str(exc)) from None
    listen = ListenConfig(
        host=host,
        port=port,
        tls_cert=tls.optional_path("cert"),
        tls_key=tls.optional_path("key"),
        tls_listen=tls_listen,
        tls_client_ca=tls.optional_path("client_ca"),
        allow_plaintext=root.get("allow_plaintext", bool, False),
    )
    if (listen.tls_cert is None) != (listen.tls_key is None):
        raise tls._fail("cert", "tls needs both cert and key")
    if not listen.tls and (tls_listen is not None or listen.tls_client_ca is not None):
        raise tls._fail("listen" if tls_listen else "client_ca", "needs tls.cert and tls.key")
    if tls_listen is not None and tls_listen == (host, port) and port != 0:
        raise tls._fail("listen", "HTTPS needs a port of its own, not the plain listener's")

    ident = root.section("identities")
    ident.allow_only("path", "key_env", "key_file")
    identities = IdentitiesConfig(
        path=ident.optional_path("path") or base / "identities.json",
        key_env=ident.get("key_env", str, "KEYLEDGER_IDENTITY_KEY"),
        key_file=ident.optional_path("key_file"),
    )

    oidc = _parse_oidc(root.section("oidc"))
    alerts = _parse_alerts(root.section("alerts"))
    geoip_section = root.section("geoip")
    geoip_section.allow_only("country_db", "asn_db")
    for key in ("country_db", "asn_db"):
        if geoip_section.data.get(key) == "":
            raise geoip_section._fail(key, "expected the path of a .mmdb file")
    geoip = GeoIpConfig(
        country_db=geoip_section.optional_path("country_db"),
        asn_db=geoip_section.optional_path("asn_db"),
    )

    policies_raw = doc.get("policies", [])
    if isinstance(policies_raw, str):
        policies_raw = [policies_raw]
    if not isinstance(policies_raw, list) or not all(isinstance(p, str) for p in policies_raw):
        raise root._fail("policies", "expected a list of files, folders or globs")
    if not policies_raw:
        raise root._fail("policies", "at least one policy path is required")
    policies = tuple(base / Path(p).expanduser() for p in policies_raw)
    reload_section = root.section("policy_reload")
    reload_section.allow_only("watch", "interval_s")
    policy_reload = PolicyReloadConfig(
        watch=reload_section.get("watch", bool, True),
        interval_s=reload_section.get("interval_s", float, 1.0),
    )
    if not 0.05 <= policy_reload.interval_s <= 3600:
        raise reload_section._fail("interval_s", "expected 0.05 to 3600 seconds")

    backends_section = root.section("backends")
    backends: dict[str, BackendConfig] = {}
    for name in backends_section.data:
        backends[name] = _parse_backend(name, backends_section.section(name))
    if not backends:
        raise root._fail("backends", "configure at least one (e.g. aws: {region: ...})")

    frontends = root.section("frontends")
    frontends.allow_only("aws", "gcp", "azure")
    aws_frontend = frontends.section("aws")
    aws_frontend.allow_only("backend")
    of_aws = [name for name, b in backends.items() if b.type == "aws"]
    aws_backend = aws_frontend.get("backend", str, of_aws[0] if of_aws else "")
    if aws_backend and backends.get(aws_backend) is None:
        raise aws_frontend._fail("backend", f"no backend named {aws_backend!r}")
    if aws_backend and backends[aws_backend].type != "aws":
        raise aws_frontend._fail("backend", f"{aws_backend!r} is not an aws backend")
    gcp = _parse_gcp_frontend(frontends.section("gcp"), backends)
    azure = _parse_azure_frontend(frontends.section("azure"), backends)

    audit_section = root.section("audit")
    audit_section.allow_only(
        "journal",
        "chain_id",
        "fsync",
        "fingerprint_key_env",
        "fingerprint_key_file",
        "rotate",
        "checkpoints",
        "minimise",
        "sinks",
        "shipping",
        "retention",
    )
    rotate = audit_section.section("rotate")
    rotate.allow_only("max_bytes", "max_age")
    max_bytes = rotate.get("max_bytes", int, 64 << 20)
    if max_bytes and max_bytes < 4096:
        raise rotate._fail("max_bytes", "expected at least 4096 (or 0 for no size limit)")
    max_age = rotate.duration("max_age", 24 * 3600.0)
    if max_age and max_age < 1:
        raise rotate._fail("max_age", "expected at least 1s (or 0 for no age limit)")
    cp = audit_section.section("checkpoints")
    cp.allow_only("enabled", "key_env", "key_file", "every_events", "every")
    checkpoints = CheckpointConfig(
        enabled=cp.get("enabled", bool, True),
        key_env=cp.get("key_env", str, "KEYLEDGER_CHECKPOINT_KEY"),
        key_file=cp.optional_path("key_file"),
        every_events=cp.get("every_events", int, 1000),
        every_s=cp.duration("every", 60.0),
    )
    if checkpoints.every_events < 1:
        raise cp._fail("every_events", "expected at least 1")
    if not 0.01 <= checkpoints.every_s <= 86400:
        raise cp._fail("every", "expected 10ms to 24h")
    audit = AuditConfig(
        minimise=_parse_minimise(audit_section.section("minimise")),
        rotate_max_bytes=max_bytes or None,
        rotate_max_age_s=max_age or None,
        checkpoints=checkpoints,
        journal=audit_section.optional_path("journal") or base / "var" / "audit",
        chain_id=audit_section.get("chain_id", str, default_chain_id()),
        fsync=audit_section.get("fsync", bool, True),
        fingerprint_key_env=audit_section.get(
            "fingerprint_key_env", str, "KEYLEDGER_FINGERPRINT_KEY"
        ),
        fingerprint_key_file=audit_section.optional_path("fingerprint_key_file"),
        sinks=_parse_sinks(audit_section),
        shipping=_parse_shipping(audit_section.section("shipping")),
        retention=_parse_retention(audit_section),
    )

    limits = _parse_limits(root.section("limits"))

    admin = _parse_admin(root, listen)

    logging_section = root.section("logging")
    logging_section.allow_only("format", "level")
    log_format = logging_section.get("format", str, "json")
    if log_format not in _LOG_FORMATS:
        raise logging_section._fail(
            "format", f"expected json or console{did_you_mean(log_format, _LOG_FORMATS)}"
        )
    # Levels as Python's logging names them; any case, as operators write INFO or info.
    level = logging_section.get("level", str, "info").lower()
    if level not in _LOG_LEVELS:
        raise logging_section._fail(
            "level",
            f"expected one of {', '.join(_LOG_LEVELS)}{did_you_mean(level, _LOG_LEVELS)}",
        )
    logging = LoggingConfig(format=log_format, level=level)

    positions = {
        f"{section.path}.{key}": at
        for section, key in (
            (tls, "cert"),
            (tls, "key"),
            (tls, "client_ca"),
            (ident, "path"),
            (ident, "key_file"),
            (audit_section, "journal"),
            (geoip_section, "country_db"),
            (geoip_section, "asn_db"),
        )
        if (at := section.position(key)) is not None
    }
    return Config(
        listen=listen,
        identities=identities,
        policies=policies,
        policy_reload=policy_reload,
        backends=backends,
        aws_backend=aws_backend,
        gcp=gcp,
        azure=azure,
        oidc=oidc,
        alerts=alerts,
        geoip=geoip,
        cache=_parse_cache(root.section("cache"), backends),
        audit=audit,
        limits=limits,
        admin=admin,
        logging=logging,
        source=source,
        base=base,
        positions=positions,
    )


def _parse_backend(name: str, b: _Section) -> BackendConfig:
    kind = b.get("type", str, name)
    if kind not in BACKEND_TYPES:
        raise b._fail(
            "type", f"unknown backend type {kind!r} (available: {', '.join(BACKEND_TYPES)})"
        )
    timeout_s = b.get("timeout_s", float, 10.0)
    if kind == "aws":
        b.allow_only("type", "region", "endpoint_url", "profile", "timeout_s")
        return BackendConfig(
            name=name,
            type=kind,
            region=b.optional_str("region"),
            endpoint_url=b.optional_str("endpoint_url"),
            profile=b.optional_str("profile"),
            timeout_s=timeout_s,
        )
    if kind == "azure":
        return _parse_azure_backend(name, b, timeout_s)
    b.allow_only("type", "endpoint", "projects", "credentials", "timeout_s")
    projects = b.data.get("projects")
    if projects is not None and (
        not isinstance(projects, dict)
        or not projects
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in projects.items())
    ):
        raise b._fail(
            "projects",
            "expected a mapping of the projects callers name to the real ones "
            "({keyledger-demo: my-project}), or leave it out to pass projects through",
        )
    credentials = b.get("credentials", str, "default")
    if credentials not in ("default", "anonymous"):
        raise b._fail(
            "credentials",
            f"expected default or anonymous{did_you_mean(credentials, ('default', 'anonymous'))}",
        )
    endpoint = b.optional_str("endpoint")
    if credentials == "anonymous" and (
        endpoint is None or not is_loopback_host(parse_listen(endpoint)[0])
    ):
        raise b._fail("credentials", "anonymous is only for a stand-in on a loopback endpoint")
    return BackendConfig(
        name=name,
        type=kind,
        endpoint=endpoint,
        projects=dict(projects) if projects is not None else None,
        credentials=credentials,
        timeout_s=timeout_s,
    )


def _parse_gcp_frontend(
    section: _Section, backends: Mapping[str, BackendConfig]
) -> GcpFrontendConfig:
    """Which gcp backend serves each project callers name; where gRPC listens."""
    section.allow_only("grpc_listen")
    projects: dict[str, str] = {}
    default: str | None = None
    for name, backend in backends.items():
        if backend.type != "gcp":
            continue
        if backend.projects is None:
            if default is not None:
                raise ConfigError(
                    f"{section.source}: backends.{name}.projects: {default!r} already passes "
                    "every project through: give one of them a projects map"
                )
            default = name
            continue
        for project in backend.projects:
            if project in projects:
                raise ConfigError(
                    f"{section.source}: backends.{name}.projects.{project}: already served by "
                    f"{projects[project]!r}"
                )
            projects[project] = name
    listen = section.optional_str("grpc_listen")
    try:
        grpc_listen = parse_listen(listen) if listen is not None else None
    except ValueError as exc:
        raise section._fail("grpc_listen", str(exc)) from None
    return GcpFrontendConfig(projects=projects, default=default, grpc_listen=grpc_listen)


def _parse_azure_backend(name: str, b: _Section, timeout_s: float) -> BackendConfig:
    b.allow_only("type", "vaults", "credentials", "client_id", "ca_file", "timeout_s")
    vaults_section = b.section("vaults")
    if not vaults_section.data:
        raise b._fail(
            "vaults",
            "list the vaults it serves, each by the name policies use: "
            "{payments: {url: https://acme-payments.vault.azure.net, default: true}}",
        )
    vaults: dict[str, AzureVaultConfig] = {}
    for vault in vaults_section.data:
        if not isinstance(vault, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", vault):
            raise vaults_section._fail(
                str(vault), "a vault's name is 1-63 letters, digits and dashes"
            )
        vaults[vault] = _parse_vault(vault, vaults_section.section(vault))
    credentials = b.get("credentials", str, "default")
    if credentials not in AZURE_CREDENTIALS:
        raise b._fail(
            "credentials",
            f"expected one of {', '.join(AZURE_CREDENTIALS)}"
            f"{did_you_mean(credentials, AZURE_CREDENTIALS)}",
        )
    if credentials == "standin" and not all(
        is_loopback_host(urlsplit(v.url).hostname or "") for v in vaults.values()
    ):
        raise b._fail("credentials", "standin is only for a stand-in vault on a loopback address")
    return BackendConfig(
        name=name,
        type="azure",
        vaults=vaults,
        credentials=credentials,
        client_id=b.optional_str("client_id"),
        ca_file=b.optional_path("ca_file"),
        timeout_s=timeout_s,
    )


def _parse_vault(name: str, section: _Section) -> AzureVaultConfig:
    section.allow_only("url", "hosts", "path", "default")
    url = section.get("url", str, "")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
        raise section._fail("url", "expected the vault's URL: https://NAME.vault.azure.net")
    hosts = section.data.get("hosts", [])
    if isinstance(hosts, str):
        hosts = [hosts]
    if not isinstance(hosts, list) or not all(
        isinstance(h, str) and re.fullmatch(r"[A-Za-z0-9.-]{1,253}", h) for h in hosts
    ):
        raise section._fail("hosts", "expected a list of host names (payments.kv.internal)")
    path = section.optional_str("path")
    if path is not None and not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", path.rstrip("/")):
        raise section._fail("path", "expected a path prefix such as /payments")
    return AzureVaultConfig(
        name=name,
        url=url.rstrip("/"),
        hosts=tuple(h.lower() for h in hosts),
        path=path.rstrip("/") if path is not None else None,
        default=section.get("default", bool, False),
    )


def _parse_azure_frontend(
    section: _Section, backends: Mapping[str, BackendConfig]
) -> AzureFrontendConfig:
    """Which (backend, vault) serves each Host name and path prefix; the challenge."""
    section.allow_only("authority", "resource")
    hosts: dict[str, tuple[str, str]] = {}
    paths: dict[str, tuple[str, str]] = {}
    default: tuple[str, str] | None = None
    vaults = [
        (name, vault)
        for name, backend in backends.items()
        if backend.type == "azure" and backend.vaults
        for vault in backend.vaults.values()
    ]
    for backend, vault in vaults:
        where = f"{section.source}: backends.{backend}.vaults.{vault.name}"
        for host in vault.hosts:
            if host in hosts:
                raise ConfigError(f"{where}.hosts: {host} already names {hosts[host][1]!r}")
            hosts[host] = (backend, vault.name)
        if vault.path is not None:
            if vault.path in paths:
                raise ConfigError(f"{where}.path: {vault.path} already names another vault")
            paths[vault.path] = (backend, vault.name)
        if vault.default:
            if default is not None:
                raise ConfigError(f"{where}.default: {default[1]!r} is the default already")
            default = (backend, vault.name)
    if len(vaults) == 1 and default is None and not hosts and not paths:
        default = (vaults[0][0], vaults[0][1].name)  # one vault: every request is for it
    authority = section.get("authority", str, AZURE_AUTHORITY)
    resource = section.get("resource", str, "https://vault.azure.net")
    for key, value in (("authority", authority), ("resource", resource)):
        if urlsplit(value).scheme != "https" or '"' in value:
            raise section._fail(key, "expected an https:// URL")
    return AzureFrontendConfig(
        hosts=hosts, paths=paths, default=default, authority=authority, resource=resource
    )


def _parse_oidc(section: _Section) -> OidcConfig:
    section.allow_only("issuers", "clock_skew", "refresh_min", "session_ttl")
    raw = section.data.get("issuers", [])
    if not isinstance(raw, list):
        raise section._fail("issuers", "expected a list of issuers (each with a preset or issuer)")
    issuers: list[IssuerSettings] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise section._fail("issuers", f"item {index + 1}: expected a mapping")
        issuer = _parse_issuer(
            _Section(item, f"oidc.issuers[{index}]", section.base, section.source)
        )
        if any(i.issuer == issuer.issuer or i.name == issuer.name for i in issuers):
            raise section._fail("issuers", f"{issuer.name} ({issuer.issuer}) is listed twice")
        issuers.append(issuer)
    skew = section.duration("clock_skew", 60.0)
    if not 0 <= skew <= 600:
        raise section._fail("clock_skew", "expected 0s to 10m")
    refresh = section.duration("refresh_min", 30.0)
    if not 0 <= refresh <= 3600:
        raise section._fail("refresh_min", "expected 0s to 1h")
    session_ttl = section.duration("session_ttl", 3600.0)
    if not 900 <= session_ttl <= 43200:
        raise section._fail("session_ttl", "expected 15m to 12h (as STS allows)")
    return OidcConfig(
        issuers=tuple(issuers),
        clock_skew_s=skew,
        refresh_min_s=refresh,
        session_ttl_s=session_ttl,
    )


def _parse_cache(section: _Section, backends: Mapping[str, BackendConfig]) -> CacheConfig:
    section.allow_only("rules", "max_entries", "max_bytes", "stale_for")
    raw = section.data.get("rules", [])
    if not isinstance(raw, list):
        raise section._fail("rules", "expected a list of rules (each with secrets and a ttl)")
    rules: list[CacheRuleConfig] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise section._fail("rules", f"item {index + 1}: expected a mapping")
        rule = _Section(item, f"cache.rules[{index}]", section.base, section.source)
        rule.allow_only("secrets", "ttl")
        secrets = rule.data.get("secrets")
        if isinstance(secrets, str):
            secrets = [secrets]
        if not isinstance(secrets, list) or not secrets:
            raise rule._fail("secrets", "expected backend:glob patterns (aws:prod/*)")
        for text in secrets:
            if not isinstance(text, str):
                raise rule._fail("secrets", "expected backend:glob patterns (aws:prod/*)")
            try:
                pattern = ResourcePattern.parse(text)
            except ValueError as exc:
                raise rule._fail("secrets", str(exc)) from None
            if pattern.backend != "*" and pattern.backend not in backends:
                known = ", ".join(sorted(backends))
                raise rule._fail("secrets", f"{text}: no backend {pattern.backend!r} ({known})")
        if "ttl" not in rule.data:
            raise rule._fail("ttl", "required: how long an answer is served from memory (60s)")
        ttl = rule.duration("ttl", 60.0)
        if not 1 <= ttl <= 86400:
            raise rule._fail("ttl", "expected 1s to 24h")
        rules.append(CacheRuleConfig(secrets=tuple(secrets), ttl_s=ttl))
    stale_for = section.duration("stale_for", 0.0)
    if not 0 <= stale_for <= 86400:
        raise section._fail("stale_for", "expected 0s to 24h")
    return CacheConfig(
        rules=tuple(rules),
        max_entries=section.bounded("max_entries", int, 10_000, 1, 10_000_000),
        max_bytes=section.bounded("max_bytes", int, 64 << 20, 64 << 10, 16 << 30),
        stale_for_s=stale_for,
    )


def _parse_alerts(section: _Section) -> AlertsConfig:
    section.allow_only("rules", "destinations", "backlog")
    raw = section.data.get("rules", [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(p, str) and p for p in raw):
        raise section._fail("rules", "expected a list of rule files or folders")
    listed = section.data.get("destinations", [])
    if not isinstance(listed, list):
        raise section._fail("destinations", "expected a list of destinations (each with a type)")
    destinations: list[AlertDestinationConfig] = []
    for index, item in enumerate(listed):
        if not isinstance(item, dict):
            raise section._fail("destinations", f"item {index + 1}: expected a mapping")
        destination = _parse_alert_destination(
            _Section(item, f"alerts.destinations[{index}]", section.base, section.source)
        )
        if any(d.name == destination.name for d in destinations):
            raise section._fail(
                "destinations", f"two destinations are named {destination.name!r}: name one"
            )
        destinations.append(destination)
    if destinations and not raw:
        raise section._fail("destinations", "alerts need rules: list the rule files in rules")
    backlog = section.get("backlog", int, 10_000)
    if not 1 <= backlog <= 1_000_000:
        raise section._fail("backlog", "expected 1 to 1000000")
    return AlertsConfig(
        rules=tuple(section.base / Path(p).expanduser() for p in raw),
        destinations=tuple(destinations),
        backlog=backlog,
    )


def _parse_alert_destination(section: _Section) -> AlertDestinationConfig:
    kind = section.optional_str("type")
    if kind not in ALERT_DESTINATIONS:
        raise section._fail(
            "type",
            f"expected one of {', '.join(ALERT_DESTINATIONS)}"
            f"{did_you_mean(kind or '', ALERT_DESTINATIONS)}",
        )
    allowed = {
        "webhook": ("url", "url_file", "url_env", "secret_file", "secret_env"),
        "slack": ("url", "url_file", "url_env"),
        "alertmanager": ("url", "generator_url"),
        "stdout": (),
    }[kind]
    section.allow_only("type", "name", "queue_size", "max_attempts", "timeout", *allowed)
    sources = [key for key in ("url", "url_file", "url_env") if key in section.data]
    if kind != "stdout" and len(sources) != 1:
        keys = ", ".join(k for k in ("url", "url_file", "url_env") if k in allowed)
        raise section._fail("url", f"a {kind} destination needs one of {keys}")
    if kind == "webhook" and ("secret_file" in section.data) == ("secret_env" in section.data):
        raise section._fail(
            "secret_file",
            "a webhook signs every alert: give secret_file or secret_env (openssl rand -hex 32)",
        )
    queue_size = section.get("queue_size", int, 1000)
    if not 1 <= queue_size <= 1_000_000:
        raise section._fail("queue_size", "expected 1 to 1000000")
    attempts = section.get("max_attempts", int, 12)
    if not 1 <= attempts <= 100:
        raise section._fail("max_attempts", "expected 1 to 100")
    timeout = section.duration("timeout", 5.0)
    if not 0 < timeout <= 300:
        raise section._fail("timeout", "expected more than 0s, up to 5m")
    return AlertDestinationConfig(
        type=kind,
        name=section.optional_str("name") or kind,
        url=section.optional_str("url"),
        url_file=section.optional_path("url_file"),
        url_env=section.optional_str("url_env"),
        secret_file=section.optional_path("secret_file"),
        secret_env=section.optional_str("secret_env"),
        generator_url=section.optional_str("generator_url"),
        queue_size=queue_size,
        max_attempts=attempts,
        timeout_s=timeout,
    )


def _names(section: _Section, key: str) -> tuple[str, ...]:
    raw = section.data.get(key, [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(n, str) and n for n in raw):
        raise section._fail(key, "expected a list of names")
    return tuple(raw)


def _parse_issuer(section: _Section) -> IssuerSettings:
    section.allow_only(
        "name",
        "preset",
        "issuer",
        "audiences",
        "principal",
        "attributes",
        "groups",
        "groups_claim",
        "jwks_url",
        "jwks_file",
        "algorithms",
    )
    preset_name = section.optional_str("preset")
    if preset_name is not None and preset_name not in OIDC_PRESETS:
        # "github" is short for github-actions, not a misspelt gitlab.
        started = [p for p in OIDC_PRESETS if preset_name and p.startswith(preset_name)]
        hint = f" (did you mean {started[0]!r}?)" if len(started) == 1 else ""
        raise section._fail(
            "preset",
            f"expected one of {', '.join(OIDC_PRESETS)}"
            f"{hint or did_you_mean(preset_name, OIDC_PRESETS)}",
        )
    preset = OIDC_PRESETS.get(preset_name or "", {})
    issuer = section.optional_str("issuer") or preset.get("issuer")
    if not issuer or urlsplit(issuer).scheme not in ("https", "http"):
        raise section._fail("issuer", "expected the issuer URL, as tokens name it in iss")
    audiences = section.data.get("audiences")
    if isinstance(audiences, str):
        audiences = [audiences]
    if (
        not isinstance(audiences, list)
        or not audiences
        or not all(isinstance(a, str) and a for a in audiences)
    ):
        raise section._fail("audiences", "expected the audiences tokens must carry (aud)")
    attributes = section.data.get("attributes", preset.get("attributes", {}))
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise section._fail("attributes", "expected attribute names mapped to claim paths")
    algorithms = section.data.get("algorithms", list(DEFAULT_ALGORITHMS))
    if not isinstance(algorithms, list) or not all(a in OIDC_ALGORITHMS for a in algorithms):
        raise section._fail(
            "algorithms", f"expected a list of {', '.join(OIDC_ALGORITHMS)} (never none or HS*)"
        )
    name = section.optional_str("name") or preset_name or urlsplit(issuer).hostname or issuer
    jwks_url = section.optional_str("jwks_url")
    jwks_file = section.optional_path("jwks_file")
    if jwks_url is not None and jwks_file is not None:
        raise section._fail("jwks_file", "give jwks_url or jwks_file, not both")
    return IssuerSettings(
        name=name,
        issuer=issuer,
        audiences=tuple(audiences),
        principal=section.get("principal", str, preset.get("principal", "{sub}")),
        attributes=dict(attributes),
        groups=_names(section, "groups"),
        groups_claim=section.optional_str("groups_claim"),
        jwks_url=jwks_url,
        jwks_file=jwks_file,
        algorithms=tuple(algorithms),
    )


_LOG_FORMATS = ("json", "console")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _parse_minimise(section: _Section) -> MinimiseConfig:
    section.allow_only("user_agent", "source_ip", "principal_attributes")
    user_agent = section.get("user_agent", str, "keep")
    if user_agent not in ("keep", "drop"):
        raise section._fail("user_agent", "expected keep or drop")
    choices = [h.value for h in IpHandling]
    source_ip = section.get("source_ip", str, "keep")
    if source_ip not in choices:
        raise section._fail("source_ip", f"expected one of {', '.join(choices)}")
    names = section.data.get("principal_attributes")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise section._fail("principal_attributes", "expected a list of attribute names")
    return MinimiseConfig(
        user_agent=user_agent == "keep",
        source_ip=IpHandling(source_ip),
        principal_attributes=None if names is None else frozenset(names),
    )


def _parse_admin(root: _Section, data_plane: ListenConfig) -> AdminConfig | None:
    section = root.section("admin")
    section.allow_only(
        "enabled", "listen", "token_env", "token_file", "stream_backlog", "open_readyz", "console"
    )
    if not section.get("enabled", bool, True):
        return None
    try:
        host, port = parse_listen(section.get("listen", str, "127.0.0.1:9090"))
    except ValueError as exc:
        raise section._fail("listen", str(exc)) from None
    if port == data_plane.port and port != 0:
        raise section._fail("listen", "the admin API needs a port of its own, not the data plane's")
    backlog = section.get("stream_backlog", int, 10_000)
    if not 10 <= backlog <= 1_000_000:
        raise section._fail("stream_backlog", "expected 10 to 1000000 events")
    return AdminConfig(
        host=host,
        port=port,
        token_env=section.get("token_env", str, "KEYLEDGER_ADMIN_TOKEN"),
        token_file=section.optional_path("token_file"),
        stream_backlog=backlog,
        open_readyz=section.get("open_readyz", bool, False),
        console=_parse_console(section.section("console")),
    )


def _parse_console(section: _Section) -> ConsoleConfig:
    section.allow_only("enabled", "session_ttl", "max_sessions")
    ttl = section.duration("session_ttl", 8 * 3600.0)
    # Shorter than 5 minutes signs people out mid-task; longer than a week outlives a shift.
    if not 300 <= ttl <= 7 * 86400:
        raise section._fail("session_ttl", f"expected 5m to 7d, got {_number(ttl)}s")
    return ConsoleConfig(
        enabled=section.get("enabled", bool, True),
        session_ttl_s=ttl,
        max_sessions=section.bounded("max_sessions", int, 100, 1, 10_000),
    )


# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy).
_LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
_SINK_TYPES = ("s3", "cloudwatch", "stdout")


def _parse_sinks(audit: _Section) -> tuple[SinkConfig, ...]:
    raw = audit.data.get("sinks")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise audit._fail("sinks", "expected a list of sinks (each with a type)")
    sinks: list[SinkConfig] = []
    for index, item in enumerate(raw):
        section = _Section(item, f"audit.sinks[{index}]", audit.base, audit.source)
        if not isinstance(item, dict):
            raise audit._fail("sinks", f"item {index + 1}: expected a mapping with a type")
        kind = section.get("type", str, "")
        if kind not in _SINK_TYPES:
            raise section._fail("type", f"expected one of {', '.join(_SINK_TYPES)}")
        name = section.get("name", str, kind)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise section._fail("name", "expected 1-64 letters, digits, '_' or '-'")
        if any(sink.name == name for sink in sinks):
            raise section._fail("name", f"two sinks are named {name!r}; give each a name")
        sinks.append(_parse_sink(section, kind, name))
    return tuple(sinks)


def _parse_sink(section: _Section, kind: str, name: str) -> SinkConfig:
    common = ("type", "name", "batch")
    aws = ("region", "endpoint_url", "profile")
    if kind == "stdout":
        section.allow_only(*common)
        return StdoutSinkConfig(name=name, batch=_parse_batch(section, STDOUT_BATCH))
    region = section.optional_str("region")
    endpoint_url = section.optional_str("endpoint_url")
    profile = section.optional_str("profile")
    if kind == "cloudwatch":
        section.allow_only(*common, *aws, "log_group", "retention_days")
        log_group = section.get("log_group", str, "")
        if not re.fullmatch(r"[\w\-./#]{1,512}", log_group):
            raise section._fail("log_group", "expected a log group name (e.g. keyledger-audit)")
        retention = section.data.get("retention_days")
        if retention is not None and (
            not isinstance(retention, int)
            or isinstance(retention, bool)
            or retention not in _LOG_RETENTION_DAYS
        ):
            raise section._fail(
                "retention_days",
                f"CloudWatch accepts only {', '.join(map(str, _LOG_RETENTION_DAYS))}",
            )
        return CloudWatchSinkConfig(
            name=name,
            region=region,
            endpoint_url=endpoint_url,
            profile=profile,
            log_group=log_group,
            retention_days=retention,
            batch=_parse_batch(section, CLOUDWATCH_BATCH),
        )
    section.allow_only(*common, *aws, "bucket", "prefix", "object_lock", "require_object_lock")
    bucket = section.get("bucket", str, "")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise section._fail("bucket", "expected an S3 bucket name")
    prefix = section.get("prefix", str, "").strip("/")
    lock = section.section("object_lock")
    lock.allow_only("mode", "retention_days")
    mode = lock.get("mode", str, "COMPLIANCE").upper()
    if mode not in ("COMPLIANCE", "GOVERNANCE", "BUCKET_DEFAULT"):
        raise lock._fail("mode", "expected COMPLIANCE, GOVERNANCE or bucket_default")
    days = lock.get("retention_days", int, 365)
    if not 1 <= days <= 36500:
        raise lock._fail("retention_days", "expected 1 to 36500 days")
    return S3SinkConfig(
        name=name,
        region=region,
        endpoint_url=endpoint_url,
        profile=profile,
        bucket=bucket,
        prefix=f"{prefix}/" if prefix else "",
        lock_mode=None if mode == "BUCKET_DEFAULT" else mode,
        retention_days=days,
        require_object_lock=section.get("require_object_lock", bool, True),
        batch=_parse_batch(section, S3_BATCH),
    )


def _parse_batch(sink: _Section, default: SinkBatch) -> SinkBatch:
    section = sink.section("batch")
    section.allow_only("max_events", "max_bytes", "max_wait")
    batch = SinkBatch(
        max_events=section.get("max_events", int, default.max_events),
        max_bytes=section.get("max_bytes", int, default.max_bytes),
        max_wait_s=section.duration("max_wait", default.max_wait_s),
    )
    if not 1 <= batch.max_events <= default.max_events:
        raise section._fail("max_events", f"expected 1 to {default.max_events}")
    if not 4096 <= batch.max_bytes <= default.max_bytes:
        raise section._fail("max_bytes", f"expected 4096 to {default.max_bytes}")
    if not 0 <= batch.max_wait_s <= 3600:
        raise section._fail("max_wait", "expected 0s to 1h")
    return batch


def _parse_retention(audit: _Section) -> RetentionConfig:
    section = audit.section("retention")
    section.allow_only("max_age", "interval", "without_sinks")
    if not section.data:
        return RetentionConfig()
    if "max_age" not in section.data:
        raise audit._fail("retention", "expected max_age (e.g. 90d): how old a segment may get")
    retention = RetentionConfig(
        max_age_s=section.duration("max_age", 0.0),
        interval_s=section.duration("interval", 3600.0),
        without_sinks=section.get("without_sinks", bool, False),
    )
    if not 3600 <= (retention.max_age_s or 0) <= 36500 * 86400:
        raise section._fail("max_age", "expected 1h to 36500d")
    if not 1 <= retention.interval_s <= 86400:
        raise section._fail("interval", "expected 1s to 24h")
    # Only a sink that keeps what it gets is a copy: stdout's collector may keep nothing.
    sinks = _parse_sinks(audit)
    copies = [s.name for s in sinks if isinstance(s, S3SinkConfig | CloudWatchSinkConfig)]
    if not copies and not retention.without_sinks:
        raise section._fail(
            "max_age",
            "no s3 or cloudwatch sink is configured, so deleting old journal segments would "
            "delete the only copy of their events; add a sink under audit.sinks, or set "
            "audit.retention.without_sinks: true to delete them anyway",
        )
    if copies and retention.without_sinks:
        # A stale opt-in would quietly allow deleting the only copy once the sinks go.
        raise section._fail(
            "without_sinks",
            f"sinks {', '.join(copies)} are configured, and segments are deleted only once "
            "they acknowledged them; remove without_sinks",
        )
    return retention


def _parse_shipping(section: _Section) -> ShippingConfig:
    section.allow_only("retry_min", "retry_max", "lag_alarm_events", "lag_alarm", "drain")
    shipping = ShippingConfig(
        retry_min_s=section.duration("retry_min", 0.5),
        retry_max_s=section.duration("retry_max", 60.0),
        lag_alarm_events=section.get("lag_alarm_events", int, 100_000),
        lag_alarm_s=section.duration("lag_alarm", 300.0),
        drain_s=section.duration("drain", 10.0),
    )
    if not 0.01 <= shipping.retry_min_s <= shipping.retry_max_s <= 3600:
        raise section._fail("retry_max", "expected 10ms <= retry_min <= retry_max <= 1h")
    if shipping.lag_alarm_events < 1:
        raise section._fail("lag_alarm_events", "expected at least 1")
    if shipping.lag_alarm_s < 1:
        raise section._fail("lag_alarm", "expected at least 1s")
    if not 0 <= shipping.drain_s <= 600:
        raise section._fail("drain", "expected 0s to 10m")
    return shipping
