"""Google Cloud Secret Manager over gRPC: ``google.cloud.secretmanager.v1.SecretManagerService``.

The listener (:mod:`keyledger.proxy.grpc_listener`) hands each call over as a
:class:`WireRequest`: method ``POST``, ``path`` the full gRPC method
(``/google.cloud.secretmanager.v1.SecretManagerService/AccessSecretVersion``), ``headers``
the call's text metadata (lower-case keys), ``body`` the serialized request message. The
message is read with the SDK's own request type (no generated stubs), and the answer is the
serialized response message. Errors carry Google's canonical code in ``grpc-status`` and
its text in ``grpc-message``; the listener ends the call with them, so the clients raise
the same exceptions as over REST (see :mod:`.gcp_common`).
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

import proto  # type: ignore[import-untyped]
from google.cloud.secretmanager_v1.types import service

# No stubs are published for protobuf's runtime.
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from keyledger.backends import BackendError
from keyledger.backends.gcp import OPERATIONS
from keyledger.model import SecretRef, SecretResult
from keyledger.proxy.errors import ErrorKind, ProxyError, RequestError
from keyledger.proxy.frontends.gcp_common import ProjectRoutes, answer, call_for, status_for
from keyledger.proxy.wire import Call, FrontendDefaults, WireRequest, WireResponse, caller_text

__all__ = ["SERVICE", "GcpGrpcFrontend", "method_path"]

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
_PREFIX = f"/{SERVICE}/"


def method_path(rpc: str) -> str:
    """The full gRPC method of one SecretManagerService RPC."""
    return _PREFIX + rpc


class GcpGrpcFrontend(FrontendDefaults):
    protocol = "gcp-grpc"
    operations = frozenset(OPERATIONS)

    def __init__(self, routes: ProjectRoutes) -> None:
        self._routes = routes

    def operation_name(self, wire: WireRequest) -> str:
        path = wire.path
        name = path[len(_PREFIX) :] if path.startswith(_PREFIX) else path
        return caller_text(name, limit=128) or "(none)"

    def parse(self, wire: WireRequest) -> Call:
        rpc = wire.path[len(_PREFIX) :] if wire.path.startswith(_PREFIX) else None
        op = OPERATIONS.get(rpc) if rpc is not None else None
        if rpc is None or op is None:
            name = caller_text(wire.path, limit=200)
            raise RequestError(f"Method not found: {name}", kind=ErrorKind.UNKNOWN_OPERATION)
        try:
            message = _deserialize(op.request, wire.body)
        except (DecodeError, ValueError, TypeError):
            # protobuf names neither the field nor the bytes: neither may be a secret here.
            raise RequestError(
                f"{rpc}: the request is not a serialized {op.request.__name__}",
                kind=ErrorKind.MALFORMED_BODY,
            ) from None
        return call_for(rpc, message, self._routes)

    def empty_result(self, call: Call) -> SecretResult:
        return SecretResult(data={"response": service.ListSecretsResponse()})

    def render(
        self,
        call: Call,
        result: SecretResult,
        *,
        hidden: Set[SecretRef],
        denied: Set[SecretRef],
        request_id: str,
    ) -> WireResponse:
        response = answer(call, result, hidden)
        return WireResponse(
            status=200, body=_serialize(response), headers={"x-request-id": request_id}
        )

    def render_error(self, error: ProxyError | BackendError, *, request_id: str) -> WireResponse:
        status, message = status_for(error)
        return WireResponse(
            status=status.http_status,
            body=b"",
            headers={
                "grpc-status": str(status.value),
                "grpc-message": message,
                "x-request-id": request_id,
            },
        )


def _deserialize(kind: type[Any], data: bytes) -> Any:
    if issubclass(kind, proto.Message):
        return kind.deserialize(data)
    return kind.FromString(data)


def _serialize(message: Any) -> bytes:
    if isinstance(message, proto.Message):
        return bytes(type(message).serialize(message))
    return bytes(message.SerializeToString())
