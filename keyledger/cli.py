"""The ``keyledger`` command line.

keyledger serve --config FILE | --dev [--listen HOST:PORT] [--admin-listen HOST:PORT]
                [--tls-listen HOST:PORT]
keyledger --version
keyledger audit verify|tail|export|report ...
keyledger keys generate --out PREFIX
keyledger identity create|list|revoke|rotate ...
keyledger policy check|explain|test|schema ...
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import os
import re
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keyledger.alerts_cli import add_alerts_parser
from keyledger.audit_cli import AuditCliError, add_audit_parser, add_keys_parser
from keyledger.dev_cli import add_dev_parser
from keyledger.policy_cli import add_policy_parser, parse_attributes
from keyledger.proxy import listeners
from keyledger.proxy.config import (
    AdminConfig,
    Config,
    ConfigError,
    is_loopback_host,
    load_config,
    parse_listen,
)
from keyledger.proxy.listeners import ListenError

if TYPE_CHECKING:
    from aiohttp import web

    from keyledger.proxy.auth.identities import (
        Identity,
        IdentityStore,
        IssuedKey,
        IssuedToken,
        Token,
    )
    from keyledger.proxy.logging import LogWriter

__all__ = ["main"]


class CliError(Exception):
    """A user error: printed as ``keyledger: <message>``, exit status 2."""


# -- serve -------------------------------------------------------------------------------


# What an operator trying TLS out needs first; production certificates come from their CA.
_TEST_CERT_HINT = (
    "a self-signed one for testing: openssl req -x509 -newkey ec -pkeyopt "
    "ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost -keyout key.pem -out cert.pem"
)


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    """The data plane's TLS context; CliError at the setting's file:line:col if it fails.

    With tls.client_ca, clients are asked for a certificate, verified against that CA alone
    (not the system's), and not required.
    """
    listen = config.listen
    if listen.tls_cert is None or listen.tls_key is None:
        return None
    client_ca = listen.tls_client_ca
    files = [
        ("tls.cert", listen.tls_cert, f"make {_TEST_CERT_HINT}"),
        ("tls.key", listen.tls_key, f"make {_TEST_CERT_HINT}"),
    ]
    if client_ca is not None:
        files.append(("tls.client_ca", client_ca, "the CA that signs client certificates"))
    for setting, path, fix in files:
        try:
            path.open("rb").close()
        except OSError as exc:
            raise CliError(
                f"{config.where(setting)}: {setting}: cannot read {path}: {exc.strerror} ({fix})"
            ) from exc
    try:
        # cafile= loads that CA instead of the system's: no public CA vouches for clients.
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(
            f"{config.where('tls.client_ca')}: tls.client_ca: {client_ca} holds no PEM CA "
            f"certificate ({_ssl_reason(exc)})"
        ) from exc
    if client_ca is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # An empty password: an encrypted key fails here instead of prompting on a tty.
        context.load_cert_chain(listen.tls_cert, listen.tls_key, password=b"")
    except (OSError, ssl.SSLError) as exc:
        raise CliError(
            f"{config.where('tls.cert')}: tls.cert, tls.key: {listen.tls_cert} and "
            f"{listen.tls_key} are not a PEM certificate and its unencrypted private key "
            f"({_ssl_reason(exc)}); {_TEST_CERT_HINT}"
        ) from exc
    return context


def _ssl_reason(exc: OSError) -> str:
    """OpenSSL's reason, without its library tag and source line."""
    return re.sub(r"^\[\w+\] |\s*\(_ssl\.c:\d+\)$", "", exc.strerror or str(exc))


@dataclass(frozen=True, slots=True)
class _WorkerRole:
    """This process is worker ``index`` of a ``--workers`` supervisor."""

    index: int
    admin_socket: Path  # its admin API, for the supervisor only


async def _serve(
    config: Config,
    *,
    on_ready: Callable[[web.Application], None] | None = None,
    worker: _WorkerRole | None = None,
    bound: listeners.Listeners | None = None,
    log_writer: LogWriter | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully (on ``bound``, when given);
    ``log_writer``'s drops are one of the metrics."""
    import structlog

    log = structlog.get_logger("keyledger")
    listen = config.listen
    context = _ssl_context(config)  # tls.listen's, and listen's without one
    plain_context = context if listen.plain_is_tls else None  # listen's, and the admin API's
    if plain_context is None and not listen.is_loopback:
        if not listen.allow_plaintext:
            if config.source == "--dev":
                raise CliError(
                    f"refusing plain HTTP on {listen.host}: secrets travel in responses, and "
                    "the --dev demo serves plain HTTP on --listen: keep it on loopback "
                    "(--listen 127.0.0.1:PORT); for more than a demo, use --config"
                )
            fix = (
                "With tls.listen, listen serves plain HTTP: keep it on loopback, or remove "
                "tls.listen to serve HTTPS on listen"
                if listen.tls
                else "Configure tls.cert and tls.key"
            )
            raise CliError(
                f"refusing plain HTTP on {listen.host}: secrets travel in responses. {fix}, or "
                "set allow_plaintext: true behind a TLS-terminating proxy"
            )
        log.warning("plaintext_listener", host=listen.host, port=listen.port)
    admin_token = _admin_token(config, plain_context)  # refused before anything starts
    grpc_listen = config.gcp.grpc_listen
    if grpc_listen is not None and grpc_listen[1] and worker is None:
        # The gRPC server binds when it starts, after the journal: a taken port is found
        # now instead (a probe, released at once: grpc binds its own socket).
        listeners.probe(*grpc_listen, listeners.GRPC)
    if bound is None:
        # Every port is claimed before anything starts: a taken one costs nothing to undo.
        # Workers share the data ports: the kernel spreads new connections across them.
        admin = config.admin
        bound = listeners.bind_listeners(
            (listen.host, listen.port),
            (admin.host, admin.port) if admin and admin_token and worker is None else None,
            listen.tls_listen,
            reuse_port=worker is not None,
        )
    try:
        await _serve_on(
            config, plain_context, context, admin_token, bound, on_ready, worker, log_writer
        )
    finally:
        bound.close()


async def _serve_on(
    config: Config,
    plain_context: ssl.SSLContext | None,
    tls_context: ssl.SSLContext | None,
    admin_token: bytes | None,
    bound: listeners.Listeners,
    on_ready: Callable[[web.Application], None] | None,
    worker: _WorkerRole | None,
    log_writer: LogWriter | None,
) -> None:
    import structlog
    from aiohttp import web

    from keyledger.proxy.app import (
        CONNECTIONS,
        METRICS,
        finish_requests,
        make_app,
        request_reload,
    )
    from keyledger.proxy.metrics import LogCollector

    log = structlog.get_logger("keyledger")
    _check_journal_folder(config)
    app = await make_app(config, shared_ports=worker is not None)
    if log_writer is not None:
        app[METRICS].register(LogCollector(log_writer))
    loop = asyncio.get_running_loop()
    # Before anything slow: an early `systemctl reload` must not kill a starting proxy.
    loop.add_signal_handler(signal.SIGHUP, request_reload, app)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if worker is not None:
        # A supervisor killed outright cannot stop us: notice, and stop by ourselves.
        watcher = asyncio.create_task(_stop_when_orphaned(stop))
    # Requests in flight are waited for by InFlight.drain; aiohttp's own wait (twice its
    # shutdown_timeout) is left only as a backstop.
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=2,
        # aiohttp's own idle close agrees with the guard's (its default is an hour).
        keepalive_timeout=config.limits.idle_timeout_s,
    )
    await runner.setup()
    # Everything loaded so far (botocore's service models above all) lives until exit:
    # keep it out of the collector's way, so collections scan only per-request garbage.
    gc.freeze()
    admin_runner: web.AppRunner | None = None
    try:
        # The admin API first: once the data port answers, /readyz does too.
        if admin_token is not None:
            socket_path = worker.admin_socket if worker is not None else None
            admin_runner = await _start_admin(
                config, app, admin_token, plain_context, bound.admin, socket_path
            )
        # HTTPS before plain: once the data port answers, tls.listen does too.
        listen = config.listen
        if listen.tls_listen is not None and bound.tls_port is not None:
            await listeners.start_sites(
                runner, bound.tls, tls_context, listeners.TLS, app[CONNECTIONS]
            )
            url = listeners.url("https", listen.tls_listen[0], bound.tls_port)
            log.info("listening", url=url, config=config.source)
        await listeners.start_sites(
            runner, bound.data, plain_context, listeners.DATA, app[CONNECTIONS]
        )
        # The real port, when the config says 0.
        url = listeners.url("https" if plain_context else "http", listen.host, bound.port)
        log.info("listening", url=url, config=config.source)
        if on_ready is not None:
            on_ready(app)
        await stop.wait()
        log.info("stopping", shutdown_timeout_s=config.limits.shutdown_timeout_s)
    finally:
        # The admin API first: /readyz stops answering, so load balancers stop sending, and
        # its streams end before the journal they read closes. Then the data plane stops
        # accepting, lets the requests it took up finish (shutdown_timeout_s), and cleans
        # up: the journal closes with a checkpoint, the sinks drain.
        if admin_runner is not None:
            await admin_runner.cleanup()
        for listener in runner.sites:
            await listener.stop()
        cut_off = await finish_requests(app, config.limits.shutdown_timeout_s)
        if cut_off:
            log.warning("requests_cut_off", count=cut_off)
        await runner.cleanup()
        if worker is not None:
            watcher.cancel()
        log.info("stopped")


def _check_journal_folder(config: Config) -> None:
    """The journal's folder, made and writable, or CliError at audit.journal's position."""
    path = config.audit.journal
    setting = "audit.journal"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        problem = f"cannot create {path}: {exc.strerror}"
    else:
        if os.access(path, os.W_OK | os.X_OK):
            return
        problem = f"cannot write in {path}"
    raise CliError(
        f"{config.where(setting)}: {setting}: {problem} (make it writable for the account "
        f"keyledger runs as, or set {setting} to a folder that is)"
    )


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 (nothing signals a parent's death)
        await asyncio.sleep(1)
    stop.set()


def _admin_token(config: Config, context: ssl.SSLContext | None) -> bytes | None:
    """The admin API's token, or None when it is turned off; CliError if it cannot run."""
    from keyledger.proxy.admin import AdminError, load_admin_token

    admin = config.admin
    if admin is None:
        return None
    if context is None and not is_loopback_host(admin.host) and not config.listen.allow_plaintext:
        fix = (
            "With tls.listen, the admin API serves plain HTTP as listen does: keep admin.listen "
            "on loopback"
            if config.listen.tls
            else "Configure tls"
        )
        raise CliError(
            f"refusing a plain-HTTP admin API on {admin.host}: the audit stream names who read "
            f"what. {fix}, or set allow_plaintext: true behind a TLS-terminating proxy"
        )
    try:
        return load_admin_token(admin)
    except AdminError as exc:
        raise CliError(f"{exc}; or turn the admin API off with admin: {{enabled: false}}") from exc


async def _start_admin(
    config: Config,
    app: Any,
    token: bytes,
    context: ssl.SSLContext | None,
    sockets: list[socket.socket],
    socket_path: Path | None = None,
) -> Any:
    import structlog
    from aiohttp import web

    from keyledger.proxy.admin import admin_app_for

    runner = web.AppRunner(
        admin_app_for(app, token), access_log=None, handle_signals=False, shutdown_timeout=5
    )
    await runner.setup()
    try:
        if socket_path is not None:  # a worker's: only its supervisor talks to it
            await web.UnixSite(runner, str(socket_path)).start()
            return runner
        await listeners.start_sites(runner, sockets, context, listeners.ADMIN)
    except BaseException:
        await runner.cleanup()
        raise
    admin = config.admin
    assert admin is not None
    port = sockets[0].getsockname()[1] if sockets else admin.port
    scheme = "https" if context else "http"
    structlog.get_logger("keyledger").info("admin_listening", url=f"{scheme}://{admin.host}:{port}")
    return runner


async def _supervise(
    config: Config, command: list[str], count: int, context: ssl.SSLContext | None
) -> None:
    """Run ``count`` workers and the admin API that answers for them (see proxy/workers).

    ``context``: the admin API's (the data plane's, when ``listen`` itself serves HTTPS).
    """
    token = _admin_token(config, context)
    admin = config.admin
    if token is None or admin is None:
        raise CliError("--workers needs the admin API: the supervisor checks workers through it")
    # Every port before any worker starts: the data ports as the workers will claim them (a
    # probe, closed at once: a listener of ours there would take the workers' connections).
    listen = config.listen
    listeners.probe(listen.host, listen.port, listeners.DATA, reuse_port=True)
    if listen.tls_listen is not None:
        listeners.probe(*listen.tls_listen, listeners.TLS, reuse_port=True)
    if config.gcp.grpc_listen is not None and config.gcp.grpc_listen[1]:
        listeners.probe(*config.gcp.grpc_listen, listeners.GRPC, reuse_port=True)
    admin_sockets = listeners.bind(admin.host, admin.port, listeners.ADMIN)
    try:
        await _supervise_on(config, command, count, context, token, admin_sockets)
    finally:
        for sock in admin_sockets:
            sock.close()


async def _supervise_on(
    config: Config,
    command: list[str],
    count: int,
    context: ssl.SSLContext | None,
    token: bytes,
    admin_sockets: list[socket.socket],
) -> None:
    import structlog
    from aiohttp import web

    from keyledger.proxy.workers import Supervisor, WorkerFailed, supervisor_admin_app

    log = structlog.get_logger("keyledger")
    admin = config.admin
    assert admin is not None
    supervisor = Supervisor(command=command, count=count, token=token)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, supervisor.forward, signal.SIGHUP)
    try:
        await supervisor.start()
    except WorkerFailed as exc:
        raise CliError(f"{exc} (its log is above)") from exc
    runner = web.AppRunner(
        supervisor_admin_app(
            supervisor,
            token=token,
            journal_dir=config.audit.journal,
            open_readyz=admin.open_readyz,
        ),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=5,
    )
    await runner.setup()
    clean = False
    try:
        await listeners.start_sites(runner, admin_sockets, context, listeners.ADMIN)
        scheme = "https" if context else "http"
        log.info("supervising", workers=count, admin_url=f"{scheme}://{admin.host}:{admin.port}")
        await stop.wait()
        log.info("stopping", workers=count)
    finally:
        await runner.cleanup()
        # Each worker drains in flight, closes its journal and drains its sinks.
        bound = config.limits.shutdown_timeout_s + config.audit.shipping.drain_s + 30
        clean = await supervisor.stop(bound)
    if not clean:
        raise CliError("a worker did not stop cleanly (its log is above)")
    log.info("stopped")


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop where it is installed (~15% more requests/s per core)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def cmd_serve(args: argparse.Namespace) -> int:
    from keyledger.proxy.app import StartupError
    from keyledger.proxy.logging import configure_logging

    listen = parse_listen(args.listen) if args.listen else None
    admin_listen = parse_listen(args.admin_listen) if args.admin_listen else None
    tls_listen = parse_listen(args.tls_listen) if args.tls_listen else None
    if args.dev:
        from keyledger.proxy import dev

        if args.workers != 1:
            raise CliError("--workers is for --config: the --dev demo runs in one process")
        sinks = dev.parse_sinks(args.sinks)
        listen = listen or dev.DEFAULT_LISTEN
        admin_listen = admin_listen or ("127.0.0.1", dev.admin_port_for(listen[1]))
        tls_listen = tls_listen or (listen[0], dev.tls_port_for(listen[1]))
        # The ports, then ./var, before anything is written: a second demo beside a running
        # one fails here, leaving the first one's dev.env, identities and cursors alone.
        bound = listeners.bind_listeners(listen, admin_listen, tls_listen, dev=True)
        try:
            env = dev.start_dev(
                var=Path(args.var),
                listen=(listen[0], bound.port),
                admin_listen=(admin_listen[0], bound.admin_port or admin_listen[1]),
                tls_listen=(tls_listen[0], bound.tls_port or tls_listen[1]),
                sinks=sinks,
            )
        except BaseException:
            bound.close()
            raise
        config = env.config
        writer = configure_logging(format=config.logging.format, level=config.logging.level)
        var_display = str(args.var).rstrip("/")
        try:
            # The banner and var/dev.env once every port is bound (gRPC's is any free one).
            _run(
                _serve(
                    config,
                    on_ready=lambda app: print(
                        dev.ready(env, app, var_display=var_display), flush=True
                    ),
                    bound=bound,
                    log_writer=writer,
                )
            )
        except StartupError as exc:
            raise CliError(str(exc)) from exc
        finally:
            env.close()
            writer.close()
        return 0
    if not args.config:
        raise CliError("serve needs --config FILE, or --dev for the self-contained demo")
    if args.sinks:
        raise CliError("--sinks is for --dev; with --config, list them under audit.sinks")
    if tls_listen is not None:
        raise CliError("--tls-listen is for --dev; with --config, set tls.listen")
    config = load_config(Path(args.config))
    if listen is not None:
        config = replace(config, listen=replace(config.listen, host=listen[0], port=listen[1]))
    if admin_listen is not None:
        admin = config.admin or AdminConfig()
        config = replace(config, admin=replace(admin, host=admin_listen[0], port=admin_listen[1]))
    writer = configure_logging(format=config.logging.format, level=config.logging.level)
    try:
        return _serve_configured(args, config, writer)
    finally:
        writer.close()  # what is queued is written, within a bound


def _serve_configured(args: argparse.Namespace, config: Config, writer: LogWriter) -> int:
    from keyledger.proxy.app import StartupError

    role = None
    if args.worker is not None:
        import structlog

        from keyledger.proxy.workers import worker_chain_id

        structlog.contextvars.bind_contextvars(worker=args.worker)  # on each log line
        role = _WorkerRole(args.worker, Path(args.worker_socket))
        chain_id = worker_chain_id(config.audit.chain_id, args.worker)
        config = replace(config, audit=replace(config.audit, chain_id=chain_id))
    elif args.workers > 1:
        command = [sys.executable, "-m", "keyledger", "serve", "--config", args.config]
        if args.listen:
            command += ["--listen", args.listen]
        context = _ssl_context(config)  # checked here: a worker would fail on it
        admin_context = context if config.listen.plain_is_tls else None
        _run(_supervise(config, command, args.workers, admin_context))
        return 0
    try:
        _run(_serve(config, worker=role, log_writer=writer))
    except StartupError as exc:
        raise CliError(str(exc)) from exc
    return 0


def _worker_count(text: str) -> int:
    from keyledger.proxy.workers import MAX_WORKERS

    count = int(text) if text.isdigit() else 0
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_WORKERS}, not {text!r}")
    return count


# -- identity ----------------------------------------------------------------------------


def _identity_store(args: argparse.Namespace) -> tuple[IdentityStore, str]:
    """The store the command names, and where its path is set (for messages)."""
    from keyledger.proxy.auth.identities import (
        IdentityError,
        IdentityStore,
        load_store_key,
        store_key_source,
    )

    if args.dev:
        var = Path(args.var)
        key_file = var / "keys" / "identity.key"
        if not key_file.is_file():
            raise CliError(
                f"no --dev state in {var.absolute()} ({key_file} is missing): run this in the "
                "folder where `keyledger serve --dev` ran, or pass --var DIR"
            )
        key = load_store_key(env=None, file=key_file)
        path = var / "identities.json"
        return IdentityStore(path, key, key_source=store_key_source(env=None, file=key_file)), (
            f"the --dev store in {var}"
        )
    config_path = args.config or os.environ.get("KEYLEDGER_CONFIG")
    if not config_path:
        raise CliError("pass --config FILE (or set KEYLEDGER_CONFIG), or --dev for ./var")
    config = load_config(Path(config_path))
    ids = config.identities
    try:
        key = load_store_key(env=ids.key_env, file=ids.key_file)
    except IdentityError as exc:
        if ids.key_file is None:
            raise
        setting = "identities.key_file"
        raise CliError(f"{config.where(setting)}: {setting}: {exc}") from exc
    source = store_key_source(env=ids.key_env, file=ids.key_file)
    return IdentityStore(ids.path, key, key_source=source), (
        f"identities.path at {config.where('identities.path')}"
        if "identities.path" in config.positions
        else f"the default identities.path of {config.source}"
    )


def cmd_identity(args: argparse.Namespace) -> int:
    store, set_at = _identity_store(args)
    new_store = not store.path.exists()
    lifetime = _lifetime(args)
    by = _actor()
    if args.identity_command == "create":
        folder = store.path.parent
        if new_store and not folder.is_dir():
            # Not made silently: a path left as the example's is seldom what was meant.
            raise CliError(
                f"no folder {folder} for a new identity store ({set_at}): create it, or set "
                "identities.path to where the proxy will read it"
            )
        attributes = parse_attributes(args.attr)
        groups = tuple(args.group or ())
        beside = _held_kinds(store, args.name)
        if args.token:
            issued: IssuedKey | IssuedToken = store.create_token(
                args.name, groups=groups, attributes=attributes, lifetime=lifetime, by=by
            )
        else:
            issued = store.create(
                args.name, groups=groups, attributes=attributes, lifetime=lifetime, by=by
            )
        if new_store:
            print(f"created a new identity store {store.path} ({set_at})", file=sys.stderr)
        _print_issued(issued)
        if beside:
            print(
                f"added to the existing identity {args.name}, beside its {beside}", file=sys.stderr
            )
    elif args.identity_command == "rotate":
        overlap = _overlap(args)
        if args.token:
            issued = store.rotate_token(args.name, overlap=overlap, lifetime=lifetime, by=by)
        else:
            issued = store.rotate(args.name, overlap=overlap, lifetime=lifetime, by=by)
        _print_issued(issued)
        previous = "token" if args.token else "key"
        if overlap is None:
            print(f"the previous {previous} is revoked", file=sys.stderr)
        else:
            ends = (datetime.now(UTC) + overlap).replace(microsecond=0).isoformat()
            print(f"the previous {previous} keeps working until {ends}", file=sys.stderr)
    elif args.identity_command == "revoke" and args.sessions:
        cutoff = store.revoke_sessions(args.name, by=by)
        print(
            f"revoked the sessions and workload tokens of {cutoff.pattern} issued before "
            f"{cutoff.before.isoformat()}"
        )
        print(
            "new ones are still issued to it: to keep it out, remove its issuer's trust or "
            "deny it in the policy",
            file=sys.stderr,
        )
    elif args.identity_command == "revoke":
        for credential in store.revoke(args.name, by=by):
            print(f"revoked {credential.credential_id} ({credential.name})")
    else:
        if new_store:
            print(f"no identity store at {store.path} yet ({set_at})", file=sys.stderr)
        now = datetime.now(UTC)
        print(
            f"{'NAME':24} {'KIND':6} {'ID':22} {'STATUS':8} {'CREATED':26} {'EXPIRES':26} "
            "GROUPS; ATTRIBUTES"
        )
        for credential in store.credentials():
            expires = _expiry_text(credential)
            shown = ",".join(credential.groups) or "-"
            facts = ",".join(f"{k}={v}" for k, v in credential.attributes.items())
            print(
                f"{credential.name:24} {credential.kind:6} {credential.credential_id:22} "
                f"{credential.status(now):8} {credential.created:26} {expires:26} "
                f"{shown}{'; ' + facts if facts else ''}"
            )
        for cutoff in store.session_cutoffs():
            print(
                f"sessions of {cutoff.pattern} issued before {cutoff.before.isoformat()} "
                "are revoked"
            )
    return 0


def _lifetime(args: argparse.Namespace) -> timedelta | None:
    """The lifetime ``--expires`` asks for; when not given, 90d for a token and never for
    an access key (None), as AWS's keys."""
    from keyledger.proxy.auth.identities import DEFAULT_TOKEN_LIFETIME, parse_lifetime

    text: str | None = getattr(args, "expires", None)
    if text is None:
        return DEFAULT_TOKEN_LIFETIME if getattr(args, "token", False) else None
    try:
        return parse_lifetime(text)
    except ValueError as exc:
        raise CliError(f"--expires: {exc}") from exc


def _overlap(args: argparse.Namespace) -> timedelta | None:
    """How long ``rotate --overlap`` keeps the old credential working; None: not at all."""
    from keyledger.proxy.auth.identities import parse_lifetime

    if args.overlap is None:
        return None
    try:
        overlap = parse_lifetime(args.overlap)
    except ValueError as exc:
        raise CliError(f"--overlap: {exc}") from exc
    if overlap is None:
        raise CliError("--overlap never would keep the old credential for good: give a duration")
    return overlap


def _actor() -> str:
    """Who runs this command, for the record: the OS account (the one sudo was run from,
    too) and host. What the machine says, not a proof: the audit trail names it as such."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no passwd entry (a container's arbitrary uid)
        user = f"uid {os.getuid()}"
    via = os.environ.get("SUDO_USER")
    if via and via != user:
        user = f"{via} (sudo as {user})"
    return f"{user}@{socket.gethostname()}"


def _expiry_text(credential: Identity | Token | IssuedKey | IssuedToken) -> str:
    return credential.expires.isoformat() if credential.expires else "never"


def _held_kinds(store: IdentityStore, name: str) -> str:
    """What an identity in use already holds, in words ("access key", "token"), or ""."""
    held = {c.kind for c in store.credentials() if c.name == name and not c.revoked}
    return " and ".join(
        words for kind, words in (("sigv4", "access key"), ("token", "token")) if kind in held
    )


def _print_issued(issued: IssuedKey | IssuedToken) -> None:
    from keyledger.proxy.auth.identities import IssuedToken

    print(f"identity           {issued.name}")
    if isinstance(issued, IssuedToken):
        print(f"token id           {issued.token_id}")
        print(f"token              {issued.token}")
        print(f"expires            {_expiry_text(issued)}")
        print(
            "the token is shown only now (keyledger keeps only its hash); store it in the "
            "service's secret configuration",
            file=sys.stderr,
        )
        if issued.expires is None:
            print(
                f"it never expires: rotate it yourself (keyledger identity rotate "
                f"{issued.name} --token)",
                file=sys.stderr,
            )
        return
    print(f"access key id      {issued.access_key_id}")
    print(f"secret access key  {issued.secret_access_key}")
    if issued.expires is not None:
        print(f"expires            {_expiry_text(issued)}")
    print(
        "the secret is shown only now; store it in the service's secret configuration",
        file=sys.stderr,
    )


# -- parser ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyledger",
        description="An audit-logging proxy for cloud secret stores.",
    )
    parser.add_argument("--version", action="version", version=f"keyledger {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy. --dev runs a self-contained demo: an embedded AWS-"
        "compatible store with demo secrets, a demo identity and policy, and a journal under "
        "./var; it prints how to call it and writes var/dev.env. SIGHUP reloads the policy "
        "and alert rule files; SIGTERM or SIGINT stops gracefully: requests in flight "
        "finish (within limits.shutdown_timeout_s), the journal is sealed, the sinks drain, "
        "exit 0.",
    )
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--config", metavar="FILE", help="config file (see config.example.yaml)")
    mode.add_argument("--dev", action="store_true", help="run the self-contained demo")
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="data-plane address (default 127.0.0.1:8080)"
    )
    serve.add_argument(
        "--admin-listen",
        metavar="HOST:PORT",
        help="admin API address: /healthz, /readyz, /metrics, the live audit stream "
        "(default: the config's admin.listen, 127.0.0.1:9090; with --dev, the --listen "
        "port + 1010: 8080 -> 9090, 9000 -> 10010)",
    )
    serve.add_argument(
        "--tls-listen",
        metavar="HOST:PORT",
        help="--dev: the HTTPS listener (default: 363 above --listen's port, 8443)",
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="run N processes on the data-plane port (SO_REUSEPORT), each with its own audit "
        "chain <chain_id>-w<i>, behind one admin API (default 1)",
    )
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-socket", help=argparse.SUPPRESS)
    serve.add_argument("--var", default="var", metavar="DIR", help="--dev state folder (./var)")
    serve.add_argument(
        "--sinks",
        metavar="LIST",
        default="",
        help="--dev: also ship the audit journal to the embedded AWS: s3 (an Object Lock "
        "bucket keyledger-audit), cloudwatch (log group keyledger-audit), stdout; comma-"
        "separated, e.g. --sinks s3,cloudwatch",
    )
    serve.set_defaults(func=cmd_serve)

    add_audit_parser(sub)
    add_keys_parser(sub)

    identity = sub.add_parser(
        "identity", help="issue and revoke the keys and tokens services authenticate with"
    )
    identity_sub = identity.add_subparsers(
        dest="identity_command", required=True, metavar="COMMAND"
    )
    for name, text in (
        (
            "create",
            "issue an access key (or with --token, a bearer token) for an identity, new or in "
            "use (then it keeps its groups and attributes); the secret is printed once",
        ),
        ("list", "list identities and their keys and tokens"),
        (
            "revoke",
            "revoke all of an identity's keys and tokens (by name), or one (by key or token id)",
        ),
        ("rotate", "issue a new key (or --token) for an identity and revoke the old one"),
    ):
        cmd = identity_sub.add_parser(name, help=text, description=text)
        if name == "revoke":
            cmd.add_argument("name", metavar="NAME|KEY-ID|TOKEN-ID|PRINCIPAL")
            cmd.add_argument(
                "--sessions",
                action="store_true",
                help="revoke what workload identities were issued instead: the STS and token "
                "exchange sessions and the OIDC tokens of PRINCIPAL (a caller id as audit "
                "events name it, or a glob like 'repo:acme/shop:*') issued before now",
            )
        elif name != "list":
            cmd.add_argument("name", metavar="NAME")
        if name == "create":
            cmd.add_argument("--group", action="append", help="a group to put it in (repeatable)")
            cmd.add_argument(
                "--attr",
                action="append",
                metavar="K=V",
                help="an attribute policies can match (principal: {K: V}); repeatable",
            )
        if name in ("create", "rotate"):
            cmd.add_argument(
                "--token",
                action="store_true",
                help="a bearer token (Authorization: Bearer ...) instead of a SigV4 access key",
            )
            cmd.add_argument(
                "--expires",
                metavar="DURATION",
                help="how long it is valid, like 90d, 12h or 30m, or never (default: 90d for "
                "a token, never for an access key)",
            )
        if name == "rotate":
            cmd.add_argument(
                "--overlap",
                metavar="DURATION",
                help="keep the old key (or token) working this long, like 1h, while services "
                "move to the new one (default: revoke it now)",
            )
        where = cmd.add_mutually_exclusive_group()
        where.add_argument("--config", metavar="FILE", help="config file naming the store")
        where.add_argument("--dev", action="store_true", help="the --dev store under ./var")
        cmd.add_argument(
            "--var", default="var", metavar="DIR", help="with --dev: its state folder (./var)"
        )
        cmd.set_defaults(func=cmd_identity)

    add_policy_parser(sub)
    add_alerts_parser(sub)
    add_dev_parser(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keyledger")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The deepest subcommand's parser that ``args`` went through (``identity list``'s)."""
    for action in parser._actions:  # argparse keeps no public list of its subparsers
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _chosen(chosen, args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # parse_args would report these with the top-level usage; the subcommand's own
        # usage is the one that shows what it takes. Exits 2, as argparse does.
        _chosen(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        result: int = args.func(args)
    except (CliError, AuditCliError, ConfigError, ListenError, ValueError) as exc:
        print(f"keyledger: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `keyledger policy explain ... | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return result


if __name__ == "__main__":
    sys.exit(main())
