"""Google Cloud Secret Manager's v1 REST surface, as the SDKs send it (``/v1/projects/...``).

A request is transcoded as ``google.api.http`` says (the routes of
:mod:`keyledger.backends.gcp.rest_routes`, also served by the Google stand-in): the path
variable fills the field it names (``name``, ``parent``, ``resource``, ``secret.name``), the
JSON body fills the whole request (``*``) or one field (``secret``), and query parameters
fill the remaining fields by (dotted, lowerCamel or snake) name. The result is the SDK's own
request message, handed to :func:`~keyledger.proxy.frontends.gcp_common.call_for`.

As Google does, unknown fields and unknown query parameters are INVALID_ARGUMENT (400), a
path no method serves is NOT_FOUND (404), and Google's system parameters (``$alt``,
``alt``, ``$.xgafv``, ``prettyPrint``, ...) and headers (``x-goog-request-params``,
``x-goog-api-client``) are accepted. Answers are the proto3 JSON of the response message
(lowerCamel names, int64 as strings, bytes in base64, enums as names unless
``$alt=json;enum-encoding=int`` asks for numbers); an accessed payload always carries its
``dataCrc32c``. Errors are ``{"error": {"code", "message", "status"}}`` with the HTTP status
Google answers that status with.
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import replace
from typing import Any

import orjson
import proto  # type: ignore[import-untyped]

# No type stubs are published for protobuf's runtime (ignored on purpose).
from google.protobuf import json_format  # type: ignore[import-untyped]

from keyledger.backends import BackendError
from keyledger.backends.gcp import OPERATIONS
from keyledger.backends.gcp.rest_routes import Route, route_for
from keyledger.model import SecretRef, SecretResult
from keyledger.proxy.errors import ErrorKind, ProxyError, RequestError
from keyledger.proxy.frontends.gcp_common import ProjectRoutes, answer, call_for, status_for
from keyledger.proxy.frontends.json_body import MAX_DEPTH, too_deep
from keyledger.proxy.wire import Call, FrontendDefaults, WireRequest, WireResponse, caller_text

__all__ = ["GcpRestFrontend"]

CONTENT_TYPE = "application/json; charset=UTF-8"
# In Call.rendering: the caller asked for enums as numbers.
ENUM_ENCODING = "enum_encoding"

# Standard query parameters of Google APIs: not request fields, accepted everywhere.
_SYSTEM_PARAMETERS = frozenset(
    {
        "$alt",
        "alt",
        "$.xgafv",
        "key",
        "access_token",
        "fields",
        "$fields",
        "prettyPrint",
        "$prettyPrint",
        "quotaUser",
        "userIp",
        "callback",
        "$callback",
        "upload_protocol",
        "uploadType",
        "oauth_token",
    }
)
# A query parameter names a field, possibly nested: options.requestedPolicyVersion.
_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(?:\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,4}")
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]{1,100})" at "([^"]{0,200})"')
_MESSAGE_LIMIT = 300


class GcpRestFrontend(FrontendDefaults):
    protocol = "gcp-rest"
    operations = frozenset(OPERATIONS)

    def __init__(self, routes: ProjectRoutes) -> None:
        self._routes = routes

    def operation_name(self, wire: WireRequest) -> str:
        found = route_for(wire.method, wire.path)
        if found is not None:
            return found[0].method
        return caller_text(f"{wire.method} {wire.path}", limit=128) or "(none)"

    def parse(self, wire: WireRequest) -> Call:
        found = route_for(wire.method, wire.path)
        if found is None:
            raise RequestError(
                f"The requested URL {wire.method} {caller_text(wire.path, limit=200)} "
                "was not found on this server.",
                kind=ErrorKind.UNKNOWN_OPERATION,
            )
        route, value = found
        fields: dict[str, Any] = {}
        if route.body is not None:
            body = _json_object(wire.body)
            if route.body == "*":
                fields.update(body)
            else:
                fields[route.body] = body
        parameters = _request_parameters(route, wire.query)
        for name, text in parameters:
            _put(fields, name, text)
        _put(fields, route.field, value)  # last: the path names what the call is about
        message = _message(route, fields, {name for name, _ in parameters})
        call = call_for(route.method, message, self._routes)
        if _asks_int_enums(wire.query):
            call = replace(call, rendering={ENUM_ENCODING: "int"})
        return call

    def empty_result(self, call: Call) -> SecretResult:
        return SecretResult(data={"response": None})

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
        if response is None:
            body: dict[str, Any] = {}  # DeleteSecret's Empty
        else:
            pb = type(response).pb(response) if isinstance(response, proto.Message) else response
            body = json_format.MessageToDict(
                pb, use_integers_for_enums=call.rendering.get(ENUM_ENCODING) == "int"
            )
        return WireResponse(status=200, body=orjson.dumps(body), headers=_headers())

    def render_error(self, error: ProxyError | BackendError, *, request_id: str) -> WireResponse:
        status, message = status_for(error)
        code, name = status.http_status, status.name
        if isinstance(error, ProxyError) and error.kind is ErrorKind.UNKNOWN_OPERATION:
            # Google answers a path no method serves with 404, not UNIMPLEMENTED.
            code, name = 404, "NOT_FOUND"
        body = {"error": {"code": code, "message": message[:1000], "status": name}}
        return WireResponse(status=code, body=orjson.dumps(body), headers=_headers())


def _headers() -> dict[str, str]:
    return {"Content-Type": CONTENT_TYPE}


def _asks_int_enums(query: tuple[tuple[str, str], ...]) -> bool:
    """``$alt=json;enum-encoding=int``, as the GAPIC REST transport sends it."""
    return any(
        name in ("$alt", "alt") and "enum-encoding=int" in text.split(";")[1:]
        for name, text in query
    )


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError(
            "Invalid JSON payload received. The body is not JSON.",
            kind=ErrorKind.MALFORMED_BODY,
        ) from None
    if not isinstance(parsed, dict):
        raise RequestError(
            "Invalid JSON payload received. Expected an object.", kind=ErrorKind.MALFORMED_BODY
        )
    if too_deep(parsed, body):
        raise RequestError(
            f"Invalid JSON payload received. Nested deeper than {MAX_DEPTH} levels.",
            kind=ErrorKind.MALFORMED_BODY,
        )
    return parsed


def _request_parameters(
    route: Route, query: tuple[tuple[str, str], ...]
) -> list[tuple[str, str | list[str]]]:
    """The query parameters that are request fields (a repeated name: a list of values).

    A parameter may not name the field the path fills or the one the body fills, and none
    is a field when the body is the whole request, as ``google.api.http`` says.
    """
    values: dict[str, list[str]] = {}
    for name, text in query:
        if name in _SYSTEM_PARAMETERS:
            if name in ("$alt", "alt") and not text.startswith("json"):
                raise RequestError(f"Unsupported response format {text[:50]!r}: only json")
            continue
        root = name.split(".", 1)[0]
        bound = {route.field.split(".", 1)[0], route.body}
        if route.body == "*" or root in bound or not _FIELD_PATH.fullmatch(name):
            raise RequestError(
                f'Invalid JSON payload received. Unknown name "{caller_text(name, limit=100)}": '
                "Cannot bind query parameter."
            )
        values.setdefault(name, []).append(text)
    return [(name, texts[0] if len(texts) == 1 else texts) for name, texts in values.items()]


def _put(fields: dict[str, Any], dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    holder = fields
    for name in parents:
        child = holder.setdefault(name, {})
        if not isinstance(child, dict):
            raise RequestError(f"Invalid JSON payload received. {name} is not an object.")
        holder = child
    holder[last] = value


def _message(route: Route, fields: dict[str, Any], parameters: Set[str]) -> Any:
    """The SDK's request message for ``route`` from its JSON fields; unknown fields refused."""
    kind = OPERATIONS[route.method].request
    plus = isinstance(kind, type) and issubclass(kind, proto.Message)
    pb = kind.pb()() if plus else kind()
    try:
        json_format.ParseDict(fields, pb)
    except json_format.ParseError as exc:
        raise RequestError(
            _parse_failure(str(exc), parameters, carries_value=route.method == "AddSecretVersion"),
            kind=ErrorKind.BAD_REQUEST,
        ) from None
    return kind.wrap(pb) if plus else pb


def _parse_failure(detail: str, parameters: Set[str], *, carries_value: bool) -> str:
    """Google's wording for a request that is not its message; the parser's own detail may
    quote a value sent, so a request carrying a secret value gets none of it."""
    unknown = _UNKNOWN_FIELD.search(detail)
    if unknown is not None:
        at = unknown[2].split(".", 1)[1] if "." in unknown[2] else ""
        if any(p == unknown[1] or p == f"{at}.{unknown[1]}" for p in parameters):
            return (
                f'Invalid JSON payload received. Unknown name "{unknown[1]}": Cannot bind '
                f"query parameter. Field '{unknown[1]}' could not be found in request message."
            )
        where = f" at '{at}'" if at else ""
        return (
            f'Invalid JSON payload received. Unknown name "{unknown[1]}"{where}: Cannot find field.'
        )
    if carries_value:
        return "Invalid JSON payload received: the request is not an AddSecretVersionRequest."
    return f"Invalid JSON payload received. {detail.splitlines()[0][:_MESSAGE_LIMIT]}"
