"""The gRPC listener: Google's SecretManagerService on a port of its own (``grpc.aio``).

It does for gRPC what the data plane's HTTP handler does for HTTP, and no more: each call
becomes a :class:`WireRequest` (the full method as ``path``, the text metadata as
``headers``, the request message's bytes as ``body``, the peer's address as ``source_ip``),
goes through :meth:`Gateway.handle`, and the :class:`WireResponse` becomes the call's answer:
the response message's bytes, or the ``grpc-status`` and ``grpc-message`` it carries. Bytes
pass through untouched (no (de)serializer here): the front end reads and writes messages.

Every call is audited, including ones the front end cannot serve: a catch-all handler takes
any method, so an unknown one is answered UNIMPLEMENTED by the front end, which records it.
A message larger than ``max_message_bytes`` is refused (audited) too; only one beyond
gRPC's own ceiling (twice that, plus 1 MiB) is dropped by gRPC before keyledger sees it.

The gateway's work on a call runs in a task of its own that outlives the call: a caller
hanging up or its deadline passing does not cut the request path between a change and its
record. ``deadline_s`` bounds how long a caller waits (DEADLINE_EXCEEDED after it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import grpc
import structlog

from keyledger.backends.gcp import OPERATIONS
from keyledger.ids import request_id
from keyledger.proxy.errors import ErrorKind, RequestError
from keyledger.proxy.frontends.gcp_grpc import SERVICE
from keyledger.proxy.inflight import Arrived, InFlight
from keyledger.proxy.wire import WireRequest, WireResponse, caller_text

if TYPE_CHECKING:
    from keyledger.proxy.pipeline import Gateway

__all__ = ["REQUEST_ID", "GrpcListener", "peer_ip", "server_credentials"]

log = structlog.get_logger("keyledger.grpc")

REQUEST_ID = "x-request-id"  # initial metadata of every answer
_CEILING_SLACK = 1 << 20
_MAX_DETAILS = 1000
_CODES: Mapping[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}

Behaviour = Callable[[bytes, Any], Awaitable[bytes]]


def server_credentials(
    *, cert_file: Path, key_file: Path, client_ca_file: Path | None = None
) -> grpc.ServerCredentials:
    """TLS for the listener from PEM files; with ``client_ca_file``, clients must present a
    certificate it signed (mTLS)."""
    ca = client_ca_file.read_bytes() if client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(key_file.read_bytes(), cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


class GrpcListener:
    """``gateway`` served over gRPC on ``host:port`` (port 0: any free one, see :meth:`start`).

    ``ssl``: server credentials (see :func:`server_credentials`), or None for plaintext;
    whether plaintext is acceptable (loopback only) is the wiring's decision.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        host: str,
        port: int,
        ssl: grpc.ServerCredentials | None = None,
        max_message_bytes: int,
        deadline_s: float = 30.0,
        inflight: InFlight | None = None,
        reuse_port: bool = False,
        max_concurrent_rpcs: int | None = None,
        idle_timeout_s: float | None = None,
        handshake_timeout_s: float | None = None,
    ) -> None:
        """``max_concurrent_rpcs``: past it, a call is refused with RESOURCE_EXHAUSTED
        before it is read; ``idle_timeout_s``: a connection with no call for that long is
        closed (GOAWAY: clients reconnect when they next call); ``handshake_timeout_s``:
        a connection that has not finished its TLS and HTTP/2 handshake by then is closed
        (the data plane's ``limits``, as HTTP gets them)."""
        bounds = {
            "grpc.max_connection_idle_ms": idle_timeout_s,
            "grpc.server_handshake_timeout_ms": handshake_timeout_s,
        }
        self._limits = [(name, round(s * 1000)) for name, s in bounds.items() if s is not None]
        self._max_concurrent_rpcs = max_concurrent_rpcs
        self._gateway = gateway
        self._reuse_port = reuse_port
        self._host, self._port = host, port
        self._ssl = ssl
        self._max_message = max_message_bytes
        self._deadline_s = deadline_s
        self._inflight = inflight
        self._server: grpc.aio.Server | None = None
        self._bound = 0
        self._tasks: set[asyncio.Task[WireResponse]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the gRPC listener has not been started")
        return self._bound

    async def start(self) -> int:
        """Listen (made here: a grpc.aio server belongs to the running loop); the port bound."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 2 * self._max_message + _CEILING_SLACK),
                # Another process on the same port is an error, not a shared port, except
                # among `serve --workers` processes, which share it like the data port.
                ("grpc.so_reuseport", int(self._reuse_port)),
                *self._limits,
            ],
            maximum_concurrent_rpcs=self._max_concurrent_rpcs,
        )
        served = grpc.method_handlers_generic_handler(
            SERVICE, {rpc: self._handler(f"/{SERVICE}/{rpc}") for rpc in sorted(OPERATIONS)}
        )
        server.add_generic_rpc_handlers((served, _AnyMethod(self)))
        host = f"[{self._host}]" if ":" in self._host else self._host
        address = f"{host}:{self._port}"
        try:
            if self._ssl is None:
                bound = int(server.add_insecure_port(address))
            else:
                bound = int(server.add_secure_port(address, self._ssl))
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from exc
        if not bound:
            raise OSError(f"cannot listen for gRPC on {address}")
        await server.start()
        self._server, self._bound = server, bound
        log.info("grpc_listening", host=self._host, port=bound, tls=self._ssl is not None)
        return bound

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking calls; those in flight get ``grace`` seconds, their audit too."""
        server, self._server = self._server, None
        if server is None:
            return
        await server.stop(grace)
        left = set(self._tasks)
        if left and grace:
            _, left = await asyncio.wait(left, timeout=grace)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    # -- calls ----------------------------------------------------------------------

    def _handler(self, method: str) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            self._behaviour(method), request_deserializer=None, response_serializer=None
        )

    def _behaviour(self, method: str) -> Behaviour:
        async def behaviour(request: bytes, context: Any) -> bytes:
            return await self._serve(method, request, context)

        return behaviour

    async def _serve(self, method: str, body: bytes, context: Any) -> bytes:
        wire = _wire(method, body, context)
        await context.send_initial_metadata(((REQUEST_ID, wire.request_id),))
        task = asyncio.create_task(self._handle(wire), name=f"grpc-{wire.request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            async with asyncio.timeout(self._deadline_s):
                # Shielded: the caller leaving does not cancel the request path.
                response = await asyncio.shield(task)
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"keyledger did not answer within {self._deadline_s:g} s",
            )
            raise  # abort() raises; this only tells the type checker so
        if response.status == 200 and "grpc-status" not in response.headers:
            return response.body
        code = _CODES.get(_int(response.headers.get("grpc-status")), grpc.StatusCode.INTERNAL)
        if code is grpc.StatusCode.OK:  # a front end's bug: never an empty success
            code = grpc.StatusCode.INTERNAL
        details = response.headers.get("grpc-message", "")[:_MAX_DETAILS]
        await context.abort(code, details)
        raise AssertionError("unreachable: abort() raises")

    async def _handle(self, wire: WireRequest) -> WireResponse:
        if self._inflight is None:
            return await self._through_gateway(wire)
        arrived = Arrived(
            request_id=wire.request_id,
            method="gRPC",
            path=wire.path,
            source_ip=wire.source_ip,
            user_agent=wire.user_agent,
        )
        with self._inflight.track(arrived):
            return await self._through_gateway(wire)

    async def _through_gateway(self, wire: WireRequest) -> WireResponse:
        if len(wire.body) > self._max_message:
            error = RequestError(
                f"the request message exceeds {self._max_message} bytes",
                kind=ErrorKind.TOO_LARGE,
            )
            return await self._gateway.refuse(wire, error)
        return await self._gateway.handle(wire)


class _AnyMethod(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc has no stubs
    """Every method the served ones are not: to the gateway, so that the call is audited
    (the front end answers UNIMPLEMENTED)."""

    def __init__(self, listener: GrpcListener) -> None:
        self._listener = listener

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if isinstance(method, bytes):
            method = method.decode("utf-8", "replace")
        return self._listener._handler(str(method))


def _int(text: str | None) -> int:
    try:
        return int(text) if text is not None else -1
    except ValueError:
        return -1


def _wire(method: str, body: bytes, context: Any) -> WireRequest:
    headers: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        name = str(key).lower()
        # Binary metadata is not text a header could carry; the first of repeated keys
        # counts, as an HTTP header's first value does.
        if name.endswith("-bin") or not isinstance(value, str) or name in headers:
            continue
        headers[name] = value
    return WireRequest(
        method="POST",
        path=method,
        query=(),
        headers=headers,
        body=bytes(body),
        source_ip=peer_ip(context.peer()),
        user_agent=caller_text(headers.get("user-agent"), limit=512),
        request_id=request_id(),
        peer_certificate=_peer_certificate(context),
    )


def peer_ip(peer: str | None) -> str | None:
    """The address in a gRPC peer string: ``ipv4:127.0.0.1:5555`` -> ``127.0.0.1``,
    ``ipv6:[::1]:5555`` (or its percent-encoded form) -> ``::1``; None for anything else."""
    if not peer:
        return None
    family, _, rest = unquote(peer).partition(":")
    if family not in ("ipv4", "ipv6"):
        return None
    host, _, _port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _peer_certificate(context: Any) -> bytes | None:
    """The client's certificate (DER), on a TLS connection where it presented one."""
    pems = (context.auth_context() or {}).get("x509_pem_cert") or []
    if not pems:
        return None
    pem = pems[0].decode("ascii", "replace") if isinstance(pems[0], bytes) else str(pems[0])
    try:
        return ssl.PEM_cert_to_DER_cert(pem)
    except ValueError:
        return None
