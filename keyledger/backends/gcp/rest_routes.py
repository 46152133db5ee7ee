"""Secret Manager's v1 REST routes: which RPC serves an HTTP method and path.

Each :class:`Route` is one ``google.api.http`` binding as the SDK's REST transport and the v1
discovery document state it (``/v1/{parent=projects/*/secrets/*}:addVersion``), global and
regional (``projects/*/locations/*``). Pure data: the Google stand-in serves these routes and
keyledger's REST front end parses them, so the two cannot disagree about the surface.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ROUTES", "Route", "route_for"]


@dataclass(frozen=True, slots=True)
class Route:
    """One ``google.api.http`` binding: ``template`` as in the SDK, e.g.
    ``/v1/{parent=projects/*/secrets/*}:addVersion``; ``method`` the RPC it calls;
    ``body`` what the JSON body fills (``*`` the whole request, ``secret`` one field)."""

    http_method: str
    template: str
    method: str
    body: str | None = None

    @property
    def field(self) -> str:
        """The request field the path variable fills (``secret.name``: nested)."""
        return self.template.split("{", 1)[1].split("=", 1)[0]

    @property
    def pattern(self) -> re.Pattern[str]:
        head, rest = self.template.split("{", 1)
        variable, tail = rest.split("}", 1)
        segments = variable.split("=", 1)[1].replace("*", "[^/:]+")
        return re.compile(re.escape(head) + f"(?P<value>{segments})" + re.escape(tail))


def _both(http_method: str, template: str, method: str, body: str | None = None) -> list[Route]:
    """The global route and its regional (``locations/*``) twin."""
    regional = template.replace("projects/*", "projects/*/locations/*", 1)
    return [Route(http_method, template, method, body), Route(http_method, regional, method, body)]


ROUTES: tuple[Route, ...] = tuple(
    [
        *_both("POST", "/v1/{parent=projects/*}/secrets", "CreateSecret", "secret"),
        *_both("GET", "/v1/{parent=projects/*}/secrets", "ListSecrets"),
        *_both("GET", "/v1/{name=projects/*/secrets/*}", "GetSecret"),
        *_both("PATCH", "/v1/{secret.name=projects/*/secrets/*}", "UpdateSecret", "secret"),
        *_both("DELETE", "/v1/{name=projects/*/secrets/*}", "DeleteSecret"),
        *_both("POST", "/v1/{parent=projects/*/secrets/*}:addVersion", "AddSecretVersion", "*"),
        *_both("GET", "/v1/{parent=projects/*/secrets/*}/versions", "ListSecretVersions"),
        *_both("GET", "/v1/{name=projects/*/secrets/*/versions/*}", "GetSecretVersion"),
        *_both("GET", "/v1/{name=projects/*/secrets/*/versions/*}:access", "AccessSecretVersion"),
        *_both(
            "POST",
            "/v1/{name=projects/*/secrets/*/versions/*}:disable",
            "DisableSecretVersion",
            "*",
        ),
        *_both(
            "POST", "/v1/{name=projects/*/secrets/*/versions/*}:enable", "EnableSecretVersion", "*"
        ),
        *_both(
            "POST",
            "/v1/{name=projects/*/secrets/*/versions/*}:destroy",
            "DestroySecretVersion",
            "*",
        ),
        *_both("GET", "/v1/{resource=projects/*/secrets/*}:getIamPolicy", "GetIamPolicy"),
        *_both("POST", "/v1/{resource=projects/*/secrets/*}:setIamPolicy", "SetIamPolicy", "*"),
        *_both(
            "POST",
            "/v1/{resource=projects/*/secrets/*}:testIamPermissions",
            "TestIamPermissions",
            "*",
        ),
    ]
)
_COMPILED = tuple((route, route.pattern) for route in ROUTES)


def route_for(http_method: str, path: str) -> tuple[Route, str] | None:
    """The route serving ``http_method path`` (an already unquoted path) and the value of
    its path variable."""
    for route, pattern in _COMPILED:
        if route.http_method == http_method and (match := pattern.fullmatch(path)):
            return route, match["value"]
    return None
