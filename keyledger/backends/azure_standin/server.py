"""The stand-in's HTTP side: aiohttp in front of :class:`.operations.Operations`.

One handler reads every request top to bottom, in the order Key Vault answers: the bearer
token first (so the SDK's bodiless first request gets its challenge whatever it asks), then
the route (404 for a path no operation has, 405 for a method the path does not take), the
``api-version``, the secret name, and only then the body. Errors leave as Key Vault's JSON
error with its status. A stand-in plays the cloud's side of the wire, so unlike a backend it
may use the web stack (tests/test_architecture.py allows it here).

Nothing here logs a request body or a secret value.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Mapping

import orjson
from aiohttp import web

from keyledger.backends.azure.routes import API_VERSIONS, Route, route_for, valid_name
from keyledger.backends.azure_standin import wire
from keyledger.backends.azure_standin.auth import Challenge
from keyledger.backends.azure_standin.errors import (
    BadParameter,
    BodyTooLarge,
    InvalidName,
    MethodNotAllowed,
    NoSuchRoute,
    StandinError,
)
from keyledger.backends.azure_standin.operations import Answer, Call, Operations

__all__ = ["MAX_BODY", "KeyVaultHttp", "Traffic"]

# Far above a 25 KB value and its JSON; a restore blob of many versions still fits.
MAX_BODY = 1 << 20
SERVICE_VERSION = "keyledger-standin"  # x-ms-keyvault-service-version; opaque to clients
_METHODS = ("GET", "PUT", "PATCH", "POST", "DELETE")
_log = logging.getLogger(__name__)


def _latest(versions: frozenset[str]) -> str:
    # Dated versions from 2020 on are newer than 7.x; 2016-10-01 is older than 7.0.
    return max(versions, key=lambda v: (v[:4].isdigit() and v >= "2020", v))


class Traffic:
    """How many answers of each status each operation gave ("-": no route), for tests that
    count round trips (a challenge is a 401, a page a 200)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, int]] = Counter()

    def record(self, operation: str, status: int) -> None:
        with self._lock:
            self._counts[operation, status] += 1

    def snapshot(self) -> dict[tuple[str, int], int]:
        with self._lock:
            return dict(self._counts)


class KeyVaultHttp:
    """The aiohttp handler serving one vault; :meth:`app` builds the application."""

    def __init__(self, operations: Operations, *, challenge: Challenge, traffic: Traffic) -> None:
        self._operations, self._challenge, self._traffic = operations, challenge, traffic
        self._latest = _latest(API_VERSIONS)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        path = request.rel_url.raw_path  # names as sent: an escaped "/" is no separator
        route = route_for(request.method, path)
        operation = route.operation.name if route else "-"
        allow: tuple[str, ...] = ()
        try:
            self._challenge.check(request.headers.get("Authorization"))
            if route is None:
                allow = tuple(m for m in _METHODS if route_for(m, path) is not None)
                raise self._unrouted(request.method, path, allow)
            query = {k: request.rel_url.query[k] for k in request.rel_url.query}
            api_version = self._api_version(query.get("api-version"))
            if route.name is not None and not valid_name(route.name):
                raise InvalidName(route.name)
            call = Call(
                route=route,
                vault=f"{request.scheme}://{request.host}",
                api_version=api_version,
                query=query,
                body=await self._body(request, route),
            )
            answer = self._operations(call)
        except StandinError as exc:
            answer = Answer(exc.status, wire.error(exc))
        except Exception:  # a stand-in bug: answer it as a service error, do not hang up
            _log.exception("the Azure stand-in failed serving %s", operation)
            failed = {"code": "InternalServerError", "message": "The stand-in failed: see its log."}
            answer = Answer(500, {"error": failed})
        self._traffic.record(operation, answer.status)
        return self._respond(request, answer, allow)

    @staticmethod
    def _unrouted(method: str, path: str, allow: tuple[str, ...]) -> StandinError:
        if allow:
            return MethodNotAllowed(
                f"The requested resource does not support http method '{method}'."
            )
        return NoSuchRoute(f"No Key Vault secrets operation serves {path}.")

    def _api_version(self, given: str | None) -> str:
        if given is None:
            # The stand-in's wording and code; unlike the one below, not read from the service.
            raise BadParameter("The api-version query parameter is required.")
        if given not in API_VERSIONS:
            raise BadParameter(
                f"The specified version ({given}) is not recognized. Consider using the latest"
                f" supported version ({self._latest})."
            )
        return given

    @staticmethod
    async def _body(request: web.Request, route: Route) -> bytes:
        if not route.operation.body:
            return b""
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(f"The request body is larger than {MAX_BODY} bytes.") from None

    def _respond(
        self, request: web.Request, answer: Answer, allow: tuple[str, ...]
    ) -> web.Response:
        headers: dict[str, str] = {
            "Cache-Control": "no-cache",
            "x-ms-request-id": str(uuid.uuid4()),
            "x-ms-keyvault-service-version": SERVICE_VERSION,
        }
        headers |= _echoed(request.headers)
        if answer.status == 401:
            headers["WWW-Authenticate"] = self._challenge.header
        if allow:
            headers["Allow"] = ", ".join(allow)
        if answer.body is None:
            return web.Response(status=answer.status, headers=headers)
        return web.Response(
            status=answer.status,
            body=orjson.dumps(answer.body),
            headers=headers,
            content_type="application/json",
            charset="utf-8",
        )


def _echoed(headers: Mapping[str, str]) -> dict[str, str]:
    """Key Vault echoes the client's request id, which the SDK logs against its own."""
    given = headers.get("x-ms-client-request-id")
    return {"x-ms-client-request-id": given} if given else {}
