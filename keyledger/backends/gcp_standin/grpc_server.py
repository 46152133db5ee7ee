"""SecretManagerService over gRPC (``grpc.aio``), without generated stubs.

Each method of :data:`.methods.METHODS` is registered as a generic unary-unary handler at
``/google.cloud.secretmanager.v1.SecretManagerService/<Method>``, (de)serialized with the
SDK's own protobuf classes; refusals become the gRPC status of the same name. Methods the
stand-in does not serve answer UNIMPLEMENTED (grpc's answer for an unknown method).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from keyledger.backends.gcp_standin.auth import check_bearer
from keyledger.backends.gcp_standin.errors import StandinError
from keyledger.backends.gcp_standin.methods import METHODS, SERVICE, Message, Method
from keyledger.backends.gcp_standin.store import Store

__all__ = ["GrpcServer", "service_handler"]

Behaviour = Callable[[Message, grpc.aio.ServicerContext], Awaitable[Message]]


def _behaviour(method: Method, store: Store, token: str | None) -> Behaviour:
    async def behaviour(request: Message, context: grpc.aio.ServicerContext) -> Message:
        metadata = dict(context.invocation_metadata() or ())
        try:
            check_bearer(metadata.get("authorization"), token)
            return method.call(store, request)
        except StandinError as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)
            raise  # abort() raises; this line only tells the type checker so

    return behaviour


def service_handler(store: Store, *, token: str | None = None) -> grpc.GenericRpcHandler:
    """The generic handler serving every stand-in method on ``store``."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _behaviour(method, store, token),
            request_deserializer=method.request.FromString,
            response_serializer=method.response.SerializeToString,
        )
        for name, method in METHODS.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


class GrpcServer:
    """A ``grpc.aio`` server on ``host:port`` (port 0: any free port, then see :attr:`port`)."""

    def __init__(self, store: Store, *, host: str, port: int, token: str | None = None) -> None:
        self._store, self._host, self._port, self._token = store, host, port, token
        self._server: grpc.aio.Server | None = None
        self._bound = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the gRPC server has not been started")
        return self._bound

    async def start(self) -> None:
        # Made here, not in __init__: a grpc.aio server belongs to the running event loop.
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((service_handler(self._store, token=self._token),))
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._bound = server.add_insecure_port(f"{host}:{self._port}")
        await server.start()
        self._server = server

    async def close(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
