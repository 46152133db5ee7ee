"""The ``keyledger`` command line.

keyledger serve --config FILE | --dev [--listen HOST:PORT]
keyledger audit verify|tail|export|report ...
keyledger keys generate --out PREFIX
keyledger identity create|list|revoke|rotate ...
keyledger policy check|explain|test|schema ...
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import ssl
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from keyledger.audit_cli import AuditCliError, add_audit_parser, add_keys_parser
from keyledger.policy_cli import add_policy_parser, parse_attributes
from keyledger.proxy.config import (
    AdminConfig,
    Config,
    ConfigError,
    is_loopback_host,
    load_config,
    parse_listen,
)

__all__ = ["main"]


class CliError(Exception):
    """A user error: printed as ``keyledger: <message>``, exit status 2."""


# -- serve -------------------------------------------------------------------------------


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    listen = config.listen
    if listen.tls_cert is None or listen.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(listen.tls_cert, listen.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"tls: cannot load {listen.tls_cert} / {listen.tls_key}: {exc}") from exc
    return context


@dataclass(frozen=True, slots=True)
class _WorkerRole:
    """This process is worker ``index`` of a ``--workers`` supervisor."""

    index: int
    admin_socket: Path  # its admin API, for the supervisor only


async def _serve(
    config: Config,
    *,
    on_ready: Callable[[], None] | None = None,
    worker: _WorkerRole | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    import structlog
    from aiohttp import web

    from keyledger.proxy.app import INFLIGHT, RELOADER, make_app

    log = structlog.get_logger("keyledger")
    context = _ssl_context(config)
    listen = config.listen
    if context is None and not listen.is_loopback:
        if not listen.allow_plaintext:
            raise CliError(
                f"refusing plain HTTP on {listen.host}: secrets travel in responses. Configure "
                "tls.cert and tls.key, or set allow_plaintext: true behind a TLS-terminating "
                "proxy"
            )
        log.warning("plaintext_listener", host=listen.host, port=listen.port)
    admin_token = _admin_token(config, context)  # refused before anything starts

    app = await make_app(config)
    loop = asyncio.get_running_loop()
    # Before anything slow: an early `systemctl reload` must not kill a starting proxy.
    loop.add_signal_handler(signal.SIGHUP, app[RELOADER].request)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if worker is not None:
        # A supervisor killed outright cannot stop us: notice, and stop by ourselves.
        watcher = asyncio.create_task(_stop_when_orphaned(stop))
    # Requests in flight are waited for by InFlight.drain; aiohttp's own wait (twice its
    # shutdown_timeout) is left only as a backstop.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    # Everything loaded so far (botocore's service models above all) lives until exit:
    # keep it out of the collector's way, so collections scan only per-request garbage.
    gc.freeze()
    admin_runner: web.AppRunner | None = None
    try:
        # Workers share the port: the kernel spreads new connections across them.
        site = web.TCPSite(
            runner,
            listen.host,
            listen.port,
            ssl_context=context,
            backlog=1024,
            reuse_port=worker is not None,
        )
        try:
            await site.start()
        except OSError as exc:
            raise CliError(f"cannot listen on {listen.host}:{listen.port}: {exc.strerror}") from exc
        log.info(
            "listening",
            url=f"{'https' if context else 'http'}://{listen.host}:{listen.port}",
            config=config.source,
        )
        if admin_token is not None:
            socket = worker.admin_socket if worker is not None else None
            admin_runner = await _start_admin(config, app, admin_token, context, socket)
        if on_ready is not None:
            on_ready()
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
        cut_off = await app[INFLIGHT].drain(config.limits.shutdown_timeout_s)
        if cut_off:
            log.warning("requests_cut_off", count=cut_off)
        await runner.cleanup()
        if worker is not None:
            watcher.cancel()
        log.info("stopped")


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
        raise CliError(
            f"refusing a plain-HTTP admin API on {admin.host}: the audit stream names who read "
            "what. Configure tls, or set allow_plaintext: true behind a TLS-terminating proxy"
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
    socket: Path | None = None,
) -> Any:
    import structlog
    from aiohttp import web

    from keyledger.proxy.admin import admin_app_for

    admin = config.admin
    assert admin is not None
    runner = web.AppRunner(
        admin_app_for(app, token), access_log=None, handle_signals=False, shutdown_timeout=5
    )
    await runner.setup()
    if socket is not None:  # a worker's: only its supervisor talks to it
        await web.UnixSite(runner, str(socket)).start()
        return runner
    site = web.TCPSite(runner, admin.host, admin.port, ssl_context=context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise CliError(
            f"admin API: cannot listen on {admin.host}:{admin.port}: {exc.strerror} (choose "
            "another port with --admin-listen HOST:PORT)"
        ) from exc
    scheme = "https" if context else "http"
    structlog.get_logger("keyledger").info(
        "admin_listening", url=f"{scheme}://{admin.host}:{admin.port}"
    )
    return runner


async def _supervise(
    config: Config, command: list[str], count: int, context: ssl.SSLContext | None
) -> None:
    """Run ``count`` workers and the admin API that answers for them (see proxy/workers)."""
    import structlog
    from aiohttp import web

    from keyledger.proxy.workers import Supervisor, WorkerFailed, supervisor_admin_app

    log = structlog.get_logger("keyledger")
    token = _admin_token(config, context)
    admin = config.admin
    if token is None or admin is None:
        raise CliError("--workers needs the admin API: the supervisor checks workers through it")
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
        site = web.TCPSite(runner, admin.host, admin.port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            raise CliError(
                f"admin API: cannot listen on {admin.host}:{admin.port}: {exc.strerror}"
            ) from exc
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
    if args.dev:
        from keyledger.proxy import dev

        if args.workers != 1:
            raise CliError("--workers is for --config: the --dev demo runs in one process")
        var = Path(args.var)
        env = dev.start_dev(
            var=var,
            listen=listen or ("127.0.0.1", 8080),
            admin_listen=admin_listen,
            sinks=dev.parse_sinks(args.sinks),
        )
        config = env.config
        configure_logging(format=config.logging.format, level=config.logging.level)
        text = dev.banner(env, var_display=str(args.var).rstrip("/"))
        try:
            _run(_serve(config, on_ready=lambda: print(text, flush=True)))
        except StartupError as exc:
            raise CliError(str(exc)) from exc
        finally:
            env.server.stop()
        return 0
    if not args.config:
        raise CliError("serve needs --config FILE, or --dev for the self-contained demo")
    if args.sinks:
        raise CliError("--sinks is for --dev; with --config, list them under audit.sinks")
    config = load_config(Path(args.config))
    if listen is not None:
        config = replace(config, listen=replace(config.listen, host=listen[0], port=listen[1]))
    if admin_listen is not None:
        admin = config.admin or AdminConfig()
        config = replace(config, admin=replace(admin, host=admin_listen[0], port=admin_listen[1]))
    configure_logging(format=config.logging.format, level=config.logging.level)
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
        _run(_supervise(config, command, args.workers, _ssl_context(config)))
        return 0
    try:
        _run(_serve(config, worker=role))
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


def _identity_store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from keyledger.proxy.auth.identities import IdentityStore, load_store_key

    if args.dev:
        var = Path(args.var)
        return IdentityStore(var / "identities.json", (var / "keys" / "identity.key").read_bytes())
    config_path = args.config or os.environ.get("KEYLEDGER_CONFIG")
    if not config_path:
        raise CliError("pass --config FILE (or set KEYLEDGER_CONFIG), or --dev for ./var")
    config = load_config(Path(config_path))
    key = load_store_key(env=config.identities.key_env, file=config.identities.key_file)
    return IdentityStore(config.identities.path, key)


def cmd_identity(args: argparse.Namespace) -> int:
    store = _identity_store(args)
    if args.identity_command == "create":
        attributes = parse_attributes(args.attr)
        issued = store.create(args.name, groups=tuple(args.group or ()), attributes=attributes)
        _print_issued(issued)
    elif args.identity_command == "rotate":
        issued = store.rotate(args.name)
        _print_issued(issued)
        print("the previous key is revoked", file=sys.stderr)
    elif args.identity_command == "revoke":
        for identity in store.revoke(args.name):
            print(f"revoked {identity.access_key_id} ({identity.name})")
    else:
        print(f"{'NAME':24} {'ACCESS KEY ID':22} {'STATUS':8} {'CREATED':26} GROUPS; ATTRIBUTES")
        for identity in store:
            status = "revoked" if identity.revoked else "active"
            groups = ",".join(identity.groups) or "-"
            facts = ",".join(f"{k}={v}" for k, v in identity.attributes.items())
            print(
                f"{identity.name:24} {identity.access_key_id:22} {status:8} "
                f"{identity.created:26} {groups}{'; ' + facts if facts else ''}"
            )
    return 0


def _print_issued(issued) -> None:  # type: ignore[no-untyped-def]
    print(f"identity           {issued.name}")
    print(f"access key id      {issued.access_key_id}")
    print(f"secret access key  {issued.secret_access_key}")
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy. --dev runs a self-contained demo: an embedded AWS-"
        "compatible store with demo secrets, a demo identity and policy, and a journal under "
        "./var; it prints how to call it and writes var/dev.env. SIGHUP reloads the policy "
        "files; SIGTERM or SIGINT stops gracefully: requests in flight finish (within "
        "limits.shutdown_timeout_s), the journal is sealed, the sinks drain, exit 0.",
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
        "(default: the config's admin.listen, 127.0.0.1:9090)",
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

    identity = sub.add_parser("identity", help="issue and revoke the keys services sign with")
    identity_sub = identity.add_subparsers(
        dest="identity_command", required=True, metavar="COMMAND"
    )
    for name, text in (
        ("create", "issue an access key for a new identity (the secret is printed once)"),
        ("list", "list identities and their keys"),
        ("revoke", "revoke an identity's keys (by name or access key id)"),
        ("rotate", "issue a new key for an identity and revoke the old one"),
    ):
        cmd = identity_sub.add_parser(name, help=text, description=text)
        if name != "list":
            cmd.add_argument("name", metavar="NAME")
        if name == "create":
            cmd.add_argument("--group", action="append", help="a group to put it in (repeatable)")
            cmd.add_argument(
                "--attr",
                action="append",
                metavar="K=V",
                help="an attribute policies can match (principal: {K: V}); repeatable",
            )
        where = cmd.add_mutually_exclusive_group()
        where.add_argument("--config", metavar="FILE", help="config file naming the store")
        where.add_argument("--dev", action="store_true", help="the --dev store under ./var")
        cmd.add_argument("--var", default="var", metavar="DIR", help=argparse.SUPPRESS)
        cmd.set_defaults(func=cmd_identity)

    add_policy_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (CliError, AuditCliError, ConfigError, ValueError) as exc:
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
