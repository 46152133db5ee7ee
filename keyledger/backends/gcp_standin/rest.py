"""Secret Manager's v1 REST surface: HTTP routes transcoded onto :data:`.methods.METHODS`.

The routes are :mod:`keyledger.backends.gcp.rest_routes`, shared with keyledger's REST front
end (re-exported here for the stand-in's tests).

Transcoding follows ``google.api.http`` as the SDK's REST transport and the discovery document
describe it: path variables and query parameters fill request fields by name, the body fills
the whole request (``*``) or one field (``secret``), and the response is the proto3 JSON of the
response message (enums as numbers when ``$alt=json;enum-encoding=int`` asks for them).
Errors are Google's JSON error shape with the matching HTTP status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

# No type stubs are published for protobuf's runtime (ignored on purpose).
from google.protobuf import json_format  # type: ignore[import-untyped]

from keyledger.backends.gcp.rest_routes import ROUTES, Route, route_for
from keyledger.backends.gcp_standin._http import HttpRequest, HttpResponse
from keyledger.backends.gcp_standin.auth import check_bearer
from keyledger.backends.gcp_standin.errors import Code, InvalidArgument, NotFound, StandinError
from keyledger.backends.gcp_standin.methods import METHODS
from keyledger.backends.gcp_standin.store import Store

__all__ = ["ROUTES", "RestApi", "Route", "route_for"]

# Standard query parameters of Google APIs that are not request fields.
_SYSTEM_PARAMETERS = frozenset(
    {"$alt", "alt", "$.xgafv", "key", "access_token", "fields", "prettyPrint", "quotaUser"}
)


def _put(request: dict[str, Any], dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for name in parents:
        request = request.setdefault(name, {})
    request[last] = value


def _json_error(code: Code, message: str) -> HttpResponse:
    error = {"error": {"code": code.http_status, "message": message, "status": code.name}}
    return HttpResponse(code.http_status, orjson.dumps(error))


class RestApi:
    """The REST front of one :class:`Store`: call it with a request, get the response."""

    def __init__(self, store: Store, *, token: str | None = None) -> None:
        self._store, self._token = store, token

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            return self._answer(request)
        except StandinError as exc:
            return _json_error(exc.code, exc.message)
        except Exception as exc:  # a stand-in bug: answer it as Google would, do not hang up
            return _json_error(Code.INTERNAL, f"Internal error: {type(exc).__name__}: {exc}")

    def _answer(self, request: HttpRequest) -> HttpResponse:
        check_bearer(request.headers.get("authorization"), self._token)
        url = urlsplit(request.target)
        found = route_for(request.method, unquote(url.path))
        if found is None:
            raise NotFound(f"No method serves {request.method} {url.path}.")
        route, value = found
        method = METHODS[route.method]
        fields: dict[str, Any] = {}
        if route.body is not None and request.body.strip():
            body = self._json(request.body)
            if route.body == "*":
                fields.update(body)
            else:
                fields[route.body] = body
        _put(fields, route.field, value)
        int_enums = False
        for name, text in parse_qsl(url.query, keep_blank_values=True):
            if name == "$alt":
                int_enums = "enum-encoding=int" in text
            elif name not in _SYSTEM_PARAMETERS:
                _put(fields, name, text)
        message = method.request()
        try:
            json_format.ParseDict(fields, message)
        except json_format.ParseError as exc:
            raise InvalidArgument(f"Invalid JSON payload received. {exc}") from None
        reply = method.call(self._store, message)
        body = json_format.MessageToDict(reply, use_integers_for_enums=int_enums)
        return HttpResponse(200, orjson.dumps(body))

    @staticmethod
    def _json(body: bytes) -> Mapping[str, Any]:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidArgument(f"Invalid JSON payload received. {exc}") from None
        if not isinstance(parsed, dict):
            raise InvalidArgument("Invalid JSON payload received. Expected an object.")
        return parsed
