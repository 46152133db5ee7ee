"""Build the aiohttp Application: every dependency hangs off it under a typed key.

Resources (backend connections, the journal) live in ``cleanup_ctx`` generators: created
at start-up, closed at shutdown, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry

from keyledger.alerts.delivery import build_destinations, settings_for
from keyledger.alerts.rules import AlertRuleError
from keyledger.alerts.service import AlertService, load_rules
from keyledger.backends import Backend, BackendError
from keyledger.backends.aws import AwsBackend, AwsSettings
from keyledger.backends.azure import AzureBackend, AzureSettings
from keyledger.backends.errors import StoreCredentialsError
from keyledger.backends.gcp import GcpBackend, GcpSettings
from keyledger.ids import request_id
from keyledger.policies.model import ResourcePattern
from keyledger.proxy.audit.checkpoints import CheckpointSigner, load_private_key
from keyledger.proxy.audit.events import AuditEvent, EventType, Fingerprinter
from keyledger.proxy.audit.journal import Checkpointing, Journal, JournalUnavailable, Rotation
from keyledger.proxy.audit.minimise import Minimiser
from keyledger.proxy.audit.retention import Retention
from keyledger.proxy.audit.sinks import (
    Shipper,
    SinkMisconfigured,
    make_sink,
    shipping_settings,
)
from keyledger.proxy.audit.sinks.cursor import CursorStore
from keyledger.proxy.audit.stream import AuditBroadcaster
from keyledger.proxy.auth import BearerAuthenticator, IdentityStore, SigV4Authenticator
from keyledger.proxy.auth.identities import load_store_key
from keyledger.proxy.auth.lifecycle import IdentityRecorder
from keyledger.proxy.auth.oidc import OidcVerifier, http_fetch
from keyledger.proxy.auth.sessions import SessionSealer
from keyledger.proxy.cache import CacheRule, SecretCache
from keyledger.proxy.config import (
    Config,
    ConfigError,
    is_loopback_host,
    require_key,
)
from keyledger.proxy.connections import ConnectionGuard
from keyledger.proxy.errors import ErrorKind, RequestError
from keyledger.proxy.failures import FailureFold
from keyledger.proxy.frontends import AwsFrontend, GcpGrpcFrontend, GcpRestFrontend
from keyledger.proxy.frontends.azure import AzureFrontend, VaultRoutes
from keyledger.proxy.frontends.gcp_common import ProjectRoutes
from keyledger.proxy.geoip import GeoIp, GeoIpError
from keyledger.proxy.grpc_listener import GrpcListener, server_credentials
from keyledger.proxy.h1 import H1Transport
from keyledger.proxy.health import Readiness
from keyledger.proxy.http_client import AiohttpTransport
from keyledger.proxy.inflight import Arrived, InFlight
from keyledger.proxy.metrics import (
    AlertMetrics,
    CacheCollector,
    ConnectionCollector,
    JournalCollector,
    PolicyCollector,
    ProxyMetrics,
    RetentionCollector,
    SinkCollector,
)
from keyledger.proxy.pipeline import Gateway, PolicyHolder
from keyledger.proxy.ratelimit import Limits
from keyledger.proxy.reload import PolicyReloader, load_policy
from keyledger.proxy.sts import StsEndpoint
from keyledger.proxy.token_exchange import (
    ENTRA_CLIENT_ASSERTION,
    GOOGLE_TOKEN_EXCHANGE,
    Grant,
    TokenExchange,
)
from keyledger.proxy.wire import AuthEndpoint, Authenticator, Frontend, WireRequest, caller_text

__all__ = [
    "BROADCASTER",
    "CACHE",
    "CHECKPOINTING",
    "CONFIG",
    "GATEWAYS",
    "GEOIP",
    "GRPC",
    "INFLIGHT",
    "JOURNAL",
    "METRICS",
    "POLICIES",
    "READINESS",
    "RELOADER",
    "RETENTION",
    "SHIPPERS",
    "finish_requests",
    "load_checkpointing",
    "load_fingerprint_key",
    "load_geoip",
    "make_app",
]

log = structlog.get_logger("keyledger")

CONFIG = web.AppKey("config", Config)
POLICIES = web.AppKey("policies", PolicyHolder)
JOURNAL = web.AppKey("journal", Journal)
# How the journal signs its checkpoints, when it does (the admin API verifies with its key).
CHECKPOINTING = web.AppKey("checkpointing", Checkpointing)
BACKENDS = web.AppKey("backends", dict[str, Backend])
# The request path of each protocol served, by protocol (aws-json, gcp-rest, gcp-grpc).
GATEWAYS = web.AppKey("gateways", dict[str, Gateway])
GRPC = web.AppKey("grpc", GrpcListener)  # Google's gRPC listener, when configured
# One HTTP client per backend (and the OIDC verifier's): its own timeout and connection pool.
Transport = AiohttpTransport | H1Transport
TRANSPORTS = web.AppKey("transports", tuple[Transport, ...])
RELOADER = web.AppKey("reloader", PolicyReloader)
IDENTITIES = web.AppKey("identities", IdentityRecorder)
BROADCASTER = web.AppKey("broadcaster", AuditBroadcaster)
ALERTS = web.AppKey("alerts", AlertService)
FAILURES = web.AppKey("failures", FailureFold)
SHIPPERS = web.AppKey("shippers", tuple[Shipper, ...])
METRICS = web.AppKey("metrics", CollectorRegistry)  # everything /metrics shows
READINESS = web.AppKey("readiness", Readiness)
RETENTION = web.AppKey("retention", Retention)  # when audit.retention is configured
CACHE = web.AppKey("cache", SecretCache)  # when cache.rules names secrets
CONNECTIONS = web.AppKey("connections", ConnectionGuard)  # the data plane's, bounded
GEOIP = web.AppKey("geoip", GeoIp)  # the GeoIP databases, when the config names any

# How long start-up waits for each sink's first check (Object Lock, log group).
_SINK_CHECK_S = 15.0


class StartupError(RuntimeError):
    """keyledger cannot start; the message says what to fix."""


def load_fingerprint_key(config: Config) -> bytes:
    audit = config.audit
    return require_key(
        env=audit.fingerprint_key_env,
        file=audit.fingerprint_key_file,
        setting="audit.fingerprint_key_file",
        missing=f"no audit fingerprint key: set {audit.fingerprint_key_env} or "
        "audit.fingerprint_key_file (any 32+ random bytes, e.g. `openssl rand -hex 32`)",
        error=StartupError,
    )


def load_checkpointing(config: Config) -> Checkpointing | None:
    """The checkpoint signer the config names; None only when checkpoints are turned off."""
    settings = config.audit.checkpoints
    if not settings.enabled:
        return None
    pem = require_key(
        env=settings.key_env,
        file=settings.key_file,
        setting="audit.checkpoints.key_file",
        missing="no checkpoint signing key: run `keyledger keys generate --out PREFIX` and set "
        f"audit.checkpoints.key_file: PREFIX.key (or put the PEM in {settings.key_env}); "
        "audit.checkpoints.enabled: false turns signed checkpoints off",
        error=StartupError,
    )
    try:
        signer = CheckpointSigner(load_private_key(pem, source="audit.checkpoints key"))
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    return Checkpointing(
        signer=signer, every_events=settings.every_events, every_s=settings.every_s
    )


def load_geoip(config: Config) -> GeoIp | None:
    """The GeoIP databases the config names, opened; None when it names none."""
    settings = config.geoip
    if not settings.enabled:
        return None
    try:
        geoip = GeoIp(country_db=settings.country_db, asn_db=settings.asn_db)
    except GeoIpError as exc:
        setting = f"geoip.{exc.setting}"
        raise StartupError(f"{config.where(setting)}: {setting}: {exc.message}") from exc
    if not geoip.extension:
        log.warning(
            "geoip_pure_python",
            problem="maxminddb's C extension is not installed: lookups are ~20x slower",
        )
    return geoip


def _make_backends(config: Config) -> tuple[dict[str, Backend], list[Transport]]:
    """Every configured backend by name, and the HTTP clients lent to them (one each: its
    own timeout and connection pool). A Google backend brings its own gRPC client."""
    backends: dict[str, Backend] = {}
    transports: list[Transport] = []
    for name, settings in config.backends.items():
        if settings.type == "gcp":
            try:
                backends[name] = GcpBackend(
                    GcpSettings(
                        name=name,
                        endpoint=settings.endpoint,
                        projects=settings.projects,
                        credentials="anonymous"
                        if settings.credentials == "anonymous"
                        else "default",
                        timeout_s=settings.timeout_s,
                    )
                )
            except ValueError as exc:
                raise StartupError(f"backends.{name}: {exc}") from exc
            continue
        if settings.type == "azure":
            assert settings.vaults is not None
            lent = AiohttpTransport(
                timeout_s=settings.timeout_s, ca_file=settings.ca_file, decompress=False
            )
            transports.append(lent)
            try:
                backends[name] = AzureBackend(
                    AzureSettings(
                        name=name,
                        vaults={vault.name: vault.url for vault in settings.vaults.values()},
                        credentials=settings.credentials,
                        client_id=settings.client_id,
                        timeout_s=settings.timeout_s,
                    ),
                    http=lent,
                )
            except ValueError as exc:
                raise StartupError(f"backends.{name}: {exc}") from exc
            continue
        # Its own HTTP/1.1 client: a quarter of aiohttp's CPU per forwarded call.
        transport = H1Transport(timeout_s=settings.timeout_s)
        transports.append(transport)
        backends[name] = AwsBackend(
            AwsSettings(
                name=name,
                region=settings.region,
                endpoint_url=settings.endpoint_url,
                profile=settings.profile,
                static_credentials=settings.static_credentials,
            ),
            transport=transport,
        )
    return backends, transports


INFLIGHT = web.AppKey("inflight", InFlight)


async def finish_requests(app: web.Application, timeout_s: float) -> int:
    """Let the data plane's requests in flight finish within ``timeout_s``; cut off the
    rest (recorded in a ``cut_off`` event) and return how many."""
    return await app[INFLIGHT].finish(app[JOURNAL], timeout_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Handler:
    gateway: Gateway
    max_body: int
    read_timeout: float
    inflight: InFlight
    connections: ConnectionGuard
    # Where callers trade credentials, on this protocol's routes: STS beside AWS's JSON
    # protocol, the OAuth token exchange at Google's /v1/token, Entra's token endpoint
    # beside Key Vault's.
    endpoints: tuple[AuthEndpoint, ...] = ()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        arrived = Arrived(
            request_id=request_id(),
            method=request.method,
            path=request.path,
            source_ip=request.remote,
            user_agent=caller_text(request.headers.get("User-Agent"), limit=512),
        )
        connection = self.connections.connection(request.transport)
        if connection is not None:
            connection.busy()  # the head is whole: from here this handler's bounds hold
        try:
            with self.inflight.track(arrived):
                response = await self._handle(request, arrived)
        finally:
            if connection is not None:
                connection.idle()
        if self.inflight.draining:
            response.force_close()  # no next request on this connection: we are stopping
        return response

    async def _handle(self, request: web.Request, arrived: Arrived) -> web.StreamResponse:
        if not request.content.is_eof() or (request.content_length or 0) > self.max_body:
            # A body still to come (up to max_body, for up to read_timeout): first refuse a
            # caller whose headers alone fail authentication, without reading any of it.
            refusal = await self._screen(_wire(request, arrived, b""))
            if refusal is not None:
                return refusal
        unreadable: RequestError | None = None
        try:
            body = await self._read_body(request)
        except RequestError as exc:
            body, unreadable = b"", exc
        wire = _wire(request, arrived, body)
        if unreadable is not None:
            # Audited like any other call, though the caller may be gone already.
            response = await self.gateway.refuse(wire, unreadable)
        elif endpoint := next((e for e in self.endpoints if e.matches(wire)), None):
            response = await endpoint.handle(wire)
        else:
            response = await self.gateway.handle(wire)
        return web.Response(status=response.status, body=response.body, headers=response.headers)

    async def _screen(self, head: WireRequest) -> web.StreamResponse | None:
        """The refusal of a caller its headers fail, or None; credential exchanges carry
        their credentials in the body, so they are not screened."""
        if any(endpoint.matches(head) for endpoint in self.endpoints):
            return None
        refused = await self.gateway.screen(head)
        if refused is None:
            return None
        response = web.Response(status=refused.status, body=refused.body, headers=refused.headers)
        response.force_close()  # its body is left unread on the connection
        return response

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole body, bounded in size and in time; RequestError if it cannot be had."""
        if (request.content_length or 0) > self.max_body:
            raise _too_large(self.max_body)
        try:
            if request.content.is_eof():
                # The whole body has already arrived (the usual small JSON call): no timer.
                return await request.read()
            async with asyncio.timeout(self.read_timeout):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(self.max_body) from None
        except TimeoutError:
            raise RequestError(
                f"the request body did not arrive within {self.read_timeout:g} s",
                kind=ErrorKind.TIMEOUT,
            ) from None
        except (OSError, aiohttp.ClientError, HttpProcessingError) as exc:
            raise RequestError(
                f"the request body could not be read ({type(exc).__name__})",
                kind=ErrorKind.MALFORMED_BODY,
            ) from None


def _wire(request: web.Request, arrived: Arrived, body: bytes) -> WireRequest:
    return WireRequest(
        method=request.method,
        path=request.path,
        query=tuple(request.query.items()),
        headers=request.headers,  # case-insensitive: lower-case lookups work
        body=body,
        source_ip=arrived.source_ip,
        user_agent=arrived.user_agent,
        request_id=arrived.request_id,
        scheme=request.scheme,
        peer_certificate=_peer_certificate(request),
    )


def _peer_certificate(request: web.Request) -> bytes | None:
    """The client's certificate (DER) on a TLS connection that asked for one."""
    transport = request.transport
    tls = transport.get_extra_info("ssl_object") if transport is not None else None
    if tls is None:
        return None
    der: bytes | None = tls.getpeercert(binary_form=True)
    return der


def _too_large(limit: int) -> RequestError:
    return RequestError(f"request body exceeds {limit} bytes", kind=ErrorKind.TOO_LARGE)


async def make_app(config: Config, *, shared_ports: bool = False) -> web.Application:
    """The data-plane application for ``config``; resources open when it starts.

    ``shared_ports``: one of ``serve --workers``' processes, which share the listening
    ports (SO_REUSEPORT) the application binds itself (gRPC's).
    """
    try:
        loaded = load_policy(config.policies, config.backends, lower_case=config.lower_case)
        policies = PolicyHolder(loaded.engine)
        store_key = load_store_key(env=config.identities.key_env, file=config.identities.key_file)
        store = IdentityStore(config.identities.path, store_key)
    except ValueError as exc:  # PolicyError, IdentityError
        raise StartupError(str(exc)) from exc
    fingerprint_key = load_fingerprint_key(config)
    fingerprint = Fingerprinter(fingerprint_key)
    geoip = load_geoip(config)
    locate = geoip.lookup if geoip is not None else None
    backends, transports = _make_backends(config)
    audit = config.audit
    registry = CollectorRegistry(auto_describe=False)
    metrics = ProxyMetrics(registry)
    broadcaster = AuditBroadcaster(backlog=config.admin.stream_backlog if config.admin else 10_000)
    # Who hears of each batch of lines once it is durable: the live stream, the alert rules.
    listeners: list[Callable[[Sequence[bytes]], None]] = [broadcaster.publish]
    checkpointing = load_checkpointing(config)
    journal = Journal(
        directory=audit.journal,
        chain_id=audit.chain_id,
        fsync=audit.fsync,
        rotation=Rotation(max_bytes=audit.rotate_max_bytes, max_age_s=audit.rotate_max_age_s),
        checkpoints=checkpointing,
        on_durable=functools.partial(_tell, listeners),
        minimise=None
        if audit.minimise.keeps_everything
        else Minimiser(audit.minimise, key=fingerprint_key),
        on_fsync=metrics.fsync,
    )

    # One fold for every protocol: a flood is one, whichever door it knocks on.
    failures = FailureFold(
        journal,
        window_s=config.limits.auth_failure_window_s,
        individual=config.limits.auth_failures_recorded,
        delay_s=config.limits.flood_delay_s,
    )

    cache = _secret_cache(config)
    rate_limits = Limits.of(
        config.limits.rate_per_source,
        config.limits.rate_per_principal,
        burst_s=config.limits.rate_burst_s,
    )

    def gateway(frontend: Frontend, authenticator: Authenticator) -> Gateway:
        return Gateway(
            frontend=frontend,
            authenticator=authenticator,
            policies=policies,
            backends=backends,
            journal=journal,
            fingerprint=fingerprint,
            observer=metrics,
            geo=locate,
            failures=failures,
            limits=rate_limits,
            cache=cache,
        )

    oidc = _oidc_verifier(config, transports, store)
    # Workload tokens traded for AWS credentials (STS), which then sign like keys do, or for
    # a bearer token (Google's token exchange, Entra's client assertion grant).
    sessions = SessionSealer(store_key) if oidc is not None else None
    bearer = BearerAuthenticator(store=store, oidc=oidc, sessions=sessions)

    def exchange(grant: Grant) -> TokenExchange | None:
        if oidc is None or sessions is None:
            return None
        ttl = timedelta(seconds=config.oidc.session_ttl_s)
        return TokenExchange(
            grant, verifier=oidc, sessions=sessions, journal=journal, ttl=ttl, geo=locate
        )

    sts = (
        StsEndpoint(
            verifier=oidc,
            sessions=sessions,
            policies=policies,
            journal=journal,
            default_ttl=timedelta(seconds=config.oidc.session_ttl_s),
            max_ttl=timedelta(seconds=config.oidc.session_ttl_s),
            geo=locate,
        )
        if oidc is not None and sessions is not None and config.aws_backend
        else None
    )
    # One request path per protocol; all share the policy, the backends and the journal.
    gateways: dict[str, Gateway] = {}
    if config.aws_backend:
        skew = timedelta(seconds=config.limits.max_clock_skew_s)
        aws = AwsFrontend(backend=config.aws_backend)
        sigv4 = SigV4Authenticator(store=store, max_skew=skew, sessions=sessions)
        gateways[aws.protocol] = gateway(aws, sigv4)
    if config.gcp.enabled:
        routes = ProjectRoutes(config.gcp.projects, default=config.gcp.default)
        for frontend in (GcpRestFrontend(routes), GcpGrpcFrontend(routes)):
            gateways[frontend.protocol] = gateway(frontend, bearer)
    vaults = VaultRoutes(
        hosts=config.azure.hosts, paths=config.azure.paths, default=config.azure.default
    )
    if config.azure.enabled:
        azure = AzureFrontend(
            vaults, authority=config.azure.authority, resource=config.azure.resource
        )
        gateways[azure.protocol] = gateway(azure, bearer)

    limits = config.limits
    guard = ConnectionGuard(
        max_connections=limits.max_connections,
        header_timeout_s=limits.header_timeout_s,
        idle_timeout_s=limits.idle_timeout_s,
    )
    app = web.Application(client_max_size=limits.max_body_bytes)
    app[CONNECTIONS] = guard
    app.cleanup_ctx.append(_connections_ctx)
    app[CONFIG] = config
    app[POLICIES] = policies
    app[JOURNAL] = journal
    if checkpointing is not None:
        app[CHECKPOINTING] = checkpointing
    app[BROADCASTER] = broadcaster
    app[SHIPPERS] = shippers = tuple(
        Shipper(
            sink=make_sink(sink, chain=audit.chain_id),
            journal=journal,
            cursors=CursorStore(audit.journal),
            settings=shipping_settings(audit.shipping, sink),
        )
        for sink in audit.sinks
    )
    app[BACKENDS] = backends
    if geoip is not None:
        app[GEOIP] = geoip
        app.cleanup_ctx.append(_geoip_ctx)
    app[TRANSPORTS] = tuple(transports)
    app[GATEWAYS] = gateways
    app[RELOADER] = reloader = PolicyReloader(
        patterns=config.policies,
        backends=config.backends,
        lower_case=config.lower_case,
        holder=policies,
        journal=journal,
        loaded_from=loaded.files,
        interval_s=config.policy_reload.interval_s,
        watch=config.policy_reload.watch,
        base=config.base,
    )
    registry.register(JournalCollector(journal))
    registry.register(ConnectionCollector(guard))
    if cache is not None:
        app[CACHE] = cache
        registry.register(CacheCollector(cache))
    registry.register(PolicyCollector(policies, lambda: (reloader.reloads, reloader.failures)))
    if shippers:
        registry.register(SinkCollector(shippers))
    app[METRICS] = registry
    app[READINESS] = Readiness(
        config_source=config.source, policies=policies, journal=journal, backends=backends
    )
    for warning in loaded.warnings:
        log.warning("policy_warning", problem=str(warning))
    # Shipping stops after the journal closes, so the closing events are shipped too.
    app.cleanup_ctx.append(_shipping_ctx)
    app.cleanup_ctx.append(_journal_ctx)
    if (max_age_s := audit.retention.max_age_s) is not None:
        # After the journal in the list: started once it is open, stopped before it closes.
        app[RETENTION] = retention = Retention(
            journal=journal, sinks=[sink.name for sink in audit.sinks], max_age_s=max_age_s
        )
        registry.register(RetentionCollector(retention))
        app.cleanup_ctx.append(_retention_ctx)
    app[FAILURES] = failures
    app.cleanup_ctx.append(_failures_ctx)
    app.cleanup_ctx.append(_reloader_ctx)
    app[IDENTITIES] = IdentityRecorder(store=store, journal=journal, folder=audit.journal)
    app.cleanup_ctx.append(_identities_ctx)
    alerts = _alerting(config, journal, registry)
    if alerts is not None:
        app[ALERTS] = alerts
        listeners.append(alerts.on_durable)
        app.cleanup_ctx.append(_alerts_ctx)
    app.cleanup_ctx.append(_backend_ctx)
    if cache is not None:
        # After the backends: cleaned up before them, so no refresh outlives its backend.
        app.cleanup_ctx.append(_cache_ctx)
    app[INFLIGHT] = inflight = InFlight()

    endpoints: dict[str, AuthEndpoint | None] = {
        "aws-json": sts,
        "gcp-rest": exchange(GOOGLE_TOKEN_EXCHANGE),
        "azure": exchange(ENTRA_CLIENT_ASSERTION),
    }

    def handler(protocol: str) -> _Handler:
        return _Handler(
            gateway=gateways[protocol],
            max_body=config.limits.max_body_bytes,
            read_timeout=config.limits.request_timeout_s,
            inflight=inflight,
            connections=guard,
            endpoints=tuple(e for e in (endpoints.get(protocol),) if e is not None),
        )

    # Google's REST API lives under /v1/; Key Vault's under /secrets and /deletedsecrets
    # (behind a vault's path prefix, if it has one); AWS's JSON protocol is POST / (and
    # answers, in its own shape, whatever else arrives). Without AWS, the first of the
    # others answers everything.
    if "gcp-rest" in gateways:
        app.router.add_route(
            "*", "/v1/{tail:.*}", handler("gcp-rest").handle, expect_handler=_expect
        )
    if "azure" in gateways:
        azure_handler = handler("azure").handle
        for prefix in ("", *vaults.prefixes):
            for collection in ("secrets", "deletedsecrets"):
                path = f"{prefix}/{collection}{{tail:(/.*)?}}"
                app.router.add_route("*", path, azure_handler, expect_handler=_expect)
        if endpoints["azure"] is not None:  # keyledger as the authority azure-identity asks
            app.router.add_route(
                "POST", "/{tenant}/oauth2/v2.0/token", azure_handler, expect_handler=_expect
            )
    fallback = handler(next(p for p in ("aws-json", "gcp-rest", "azure") if p in gateways))
    # "/" on its own too: AWS's every call, found by aiohttp's index of plain paths rather
    # than by the catch-all's regular expression (4% of a cached read's samples).
    app.router.add_route("*", "/", fallback.handle, expect_handler=_expect)
    app.router.add_route("*", "/{tail:.*}", fallback.handle, expect_handler=_expect)
    if "gcp-grpc" in gateways and config.gcp.grpc_listen is not None:
        app[GRPC] = _grpc_listener(config, gateways["gcp-grpc"], inflight, shared_ports)
        app.cleanup_ctx.append(_grpc_ctx)
    return app


async def _expect(request: web.Request) -> None:
    """``Expect: 100-continue`` answered as aiohttp does; any other expectation ignored (as
    HTTP allows) rather than refused by aiohttp itself: then the request reaches keyledger
    and is answered in its protocol and audited like any other."""
    expect = request.headers.get("Expect", "")
    if request.version == aiohttp.HttpVersion11 and expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the body proper has not started


def request_reload(app: web.Application) -> None:
    """SIGHUP: look at the policy files and the alert rule files now."""
    app[RELOADER].request()
    if ALERTS in app:
        app[ALERTS].request_reload()


def _tell(listeners: Sequence[Callable[[Sequence[bytes]], None]], lines: Sequence[bytes]) -> None:
    for listener in listeners:
        try:
            listener(lines)
        except Exception:
            log.exception("durable_listener_failed")  # the others still hear


def _alerting(config: Config, journal: Journal, registry: CollectorRegistry) -> AlertService | None:
    """The alert rules and their destinations, when the config names rules."""
    settings = config.alerts
    if not settings.enabled:
        return None
    try:
        rules = load_rules(settings.rules)
    except AlertRuleError as exc:
        raise StartupError(
            f"{config.where('alerts.rules')}: alerts.rules: the alert rules do not load:\n"
            + "\n".join(exc.problems)
        ) from exc
    try:
        destinations = [settings_for(d) for d in settings.destinations]
    except (ConfigError, ValueError) as exc:
        raise StartupError(f"{config.source}: alerts.destinations: {exc}") from exc
    metrics = AlertMetrics(registry)
    return AlertService(
        paths=settings.rules,
        rules=rules,
        journal=journal,
        destinations=build_destinations(destinations, observer=metrics),
        observer=metrics,
        backlog=settings.backlog,
    )


def _oidc_verifier(
    config: Config, transports: list[Transport], store: IdentityStore
) -> OidcVerifier | None:
    """The verifier of OIDC JWTs from the trusted issuers, fetching their keys with an HTTP
    client of its own (started and closed with the backends'); None without issuers. The
    store's session cutoffs revoke tokens issued before them."""
    oidc = config.oidc
    if not oidc.enabled:
        return None
    transport = AiohttpTransport(timeout_s=10.0, max_connections=16)
    transports.append(transport)
    return OidcVerifier(
        oidc.issuers,
        fetch=http_fetch(transport),
        clock_skew_s=oidc.clock_skew_s,
        refresh_min_s=oidc.refresh_min_s,
        revoked=store.sessions_revoked,
    )


def _grpc_listener(
    config: Config, gateway: Gateway, inflight: InFlight, shared_ports: bool
) -> GrpcListener:
    """Google's gRPC API on a port of its own: TLS with the data plane's certificate, or
    plaintext where the data plane may be (loopback, or allow_plaintext behind a proxy).

    With HTTPS on a listener of its own beside plain HTTP, gRPC on loopback follows the
    plain one, as the demo's does.
    """
    assert config.gcp.grpc_listen is not None
    host, port = config.gcp.grpc_listen
    listen = config.listen
    credentials = None
    if (
        listen.tls_cert is not None
        and listen.tls_key is not None
        and (listen.plain_is_tls or not is_loopback_host(host))
    ):
        try:
            credentials = server_credentials(cert_file=listen.tls_cert, key_file=listen.tls_key)
        except OSError as exc:
            raise StartupError(f"tls: cannot read {exc.filename}: {exc.strerror}") from exc
    elif not is_loopback_host(host) and not listen.allow_plaintext:
        raise StartupError(
            f"refusing plain gRPC on {host}: secrets travel in responses. Configure tls.cert "
            "and tls.key, or set allow_plaintext: true behind a TLS-terminating proxy"
        )
    return GrpcListener(
        gateway,
        host=host,
        port=port,
        ssl=credentials,
        max_message_bytes=config.limits.max_body_bytes,
        deadline_s=config.limits.request_timeout_s,
        inflight=inflight,
        reuse_port=shared_ports,
        max_concurrent_rpcs=config.limits.max_connections,
        idle_timeout_s=config.limits.idle_timeout_s,
        handshake_timeout_s=config.limits.header_timeout_s,
    )


async def _grpc_ctx(app: web.Application) -> AsyncIterator[None]:
    """Listening once the journal and the backends are up; stopped first at shutdown."""
    listener = app[GRPC]
    try:
        await listener.start()  # logs grpc_listening with its address
    except OSError as exc:
        raise StartupError(f"frontends.gcp.grpc_listen: {exc}") from exc
    yield
    await listener.stop(app[CONFIG].limits.shutdown_timeout_s)


def _secret_cache(config: Config) -> SecretCache | None:
    settings = config.cache
    if not settings.enabled:
        return None
    rules = [
        CacheRule(ResourcePattern.parse(text), rule.ttl_s)
        for rule in settings.rules
        for text in rule.secrets
    ]
    return SecretCache(
        rules,
        max_entries=settings.max_entries,
        max_bytes=settings.max_bytes,
        stale_for_s=settings.stale_for_s,
    )


async def _cache_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[CACHE].close()  # background refreshes stop before the backends close


async def _connections_ctx(app: web.Application) -> AsyncIterator[None]:
    """The sweep that closes connections past their header or idle deadline."""
    task = asyncio.create_task(app[CONNECTIONS].run(), name="keyledger-connections")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """Old segments every sink has acknowledged are pruned while the journal is open."""
    interval_s = app[CONFIG].audit.retention.interval_s
    task = asyncio.create_task(app[RETENTION].run(interval_s), name="keyledger-retention")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _journal_ctx(app: web.Application) -> AsyncIterator[None]:
    journal = app[JOURNAL]
    try:
        await journal.start()
    except JournalUnavailable as exc:
        raise StartupError(str(exc)) from exc
    except OSError as exc:  # a folder or file of the journal that cannot be made or read
        where = f": {exc.filename}" if exc.filename else ""
        raise StartupError(
            f"audit.journal: cannot open the journal in {journal.directory}{where}: "
            f"{exc.strerror or exc}"
        ) from exc
    policy = app[POLICIES].engine
    await journal.append(
        AuditEvent(
            type=EventType.LIFECYCLE,
            detail={
                "event": "start",
                "policy_hash": policy.hash,
                "policy_files": [Path(f).name for f in policy.policy.files],
            },
        )
    )
    log.info("journal_open", path=str(journal.path), seq=journal.state.seq)
    yield
    with contextlib.suppress(Exception):
        await journal.append(AuditEvent(type=EventType.LIFECYCLE, detail={"event": "stop"}))
    await journal.close()


async def _geoip_ctx(app: web.Application) -> AsyncIterator[None]:
    geoip = app[GEOIP]
    settings = app[CONFIG].geoip
    log.info(
        "geoip_open",
        country_db=str(settings.country_db) if settings.country_db else None,
        asn_db=str(settings.asn_db) if settings.asn_db else None,
    )
    yield
    geoip.close()


async def _shipping_ctx(app: web.Application) -> AsyncIterator[None]:
    shippers = app[SHIPPERS]
    try:
        await asyncio.gather(*(shipper.check(_SINK_CHECK_S) for shipper in shippers))
    except SinkMisconfigured as exc:
        raise StartupError(f"audit sink: {exc}") from exc
    for shipper in shippers:
        shipper.start()
    yield
    await asyncio.gather(*(shipper.stop() for shipper in shippers))


async def _identities_ctx(app: web.Application) -> AsyncIterator[None]:
    """Credentials issued and revoked, recorded as the store changes (and at start)."""
    recorder = app[IDENTITIES]
    await recorder.check()
    task = asyncio.create_task(recorder.run(), name="identity-recorder")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    """Alert rules on the durable stream: started once the journal is open (they read its
    recent past), closed before it closes (their last alerts are recorded)."""
    alerts = app[ALERTS]
    await alerts.start()
    yield
    await alerts.close()


async def _failures_ctx(app: web.Application) -> AsyncIterator[None]:
    """A flood's aggregate events, written as their windows close; the last ones before the
    journal closes."""
    failures = app[FAILURES]
    task = asyncio.create_task(failures.run(), name="auth-failure-fold")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await failures.close()


async def _reloader_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[RELOADER].run(), name="policy-reloader")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _backend_ctx(app: web.Application) -> AsyncIterator[None]:
    backends, transports = app[BACKENDS], app[TRANSPORTS]
    try:
        for transport in transports:
            await transport.start()
        for backend in backends.values():
            try:
                await backend.start()
            except StoreCredentialsError as exc:
                raise StartupError(f"backends.{backend.name}: {exc.message}") from exc
        await asyncio.gather(*(_first_check(backend) for backend in backends.values()))
        yield
    finally:
        # Also when a start failed: nothing left open behind a refused start-up.
        for backend in backends.values():
            await backend.close()
        for transport in transports:
            await transport.close()


async def _first_check(backend: Backend) -> None:
    try:
        await backend.check()
    except BackendError as exc:
        # Not fatal: the store may come up after us. Requests fail (audited) until it does.
        log.warning("backend_unreachable", backend=backend.name, error=exc.message)
    else:
        log.info("backend_ready", backend=backend.name)
