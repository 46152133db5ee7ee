"""The stand-in's REST surface against Secret Manager's v1 discovery document.

The document ships with google-api-python-client; walking it keeps the stand-in from drifting
into a private dialect: every documented secrets method it claims has a route (same HTTP
method, same path), every route is documented, and every JSON field it emits is a field of
the documented schema, with the documented JSON type. The discovery-based client is a second,
independent client driven against it.
"""

from __future__ import annotations

import base64
import http.client
import importlib.resources
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from keyledger.backends.gcp_standin import ThreadedGcpStandin
from keyledger.backends.gcp_standin.methods import METHODS
from keyledger.backends.gcp_standin.rest import ROUTES, route_for

Document = dict[str, Any]
# Documented methods the stand-in does not serve (and must not route).
UNSERVED = {"enableManagedRotation", "rotateSecret"}
# (resource, documented method) -> the RPC serving it.
RPC = {
    ("secrets", "create"): "CreateSecret",
    ("secrets", "list"): "ListSecrets",
    ("secrets", "get"): "GetSecret",
    ("secrets", "patch"): "UpdateSecret",
    ("secrets", "delete"): "DeleteSecret",
    ("secrets", "addVersion"): "AddSecretVersion",
    ("secrets", "getIamPolicy"): "GetIamPolicy",
    ("secrets", "setIamPolicy"): "SetIamPolicy",
    ("secrets", "testIamPermissions"): "TestIamPermissions",
    ("versions", "list"): "ListSecretVersions",
    ("versions", "get"): "GetSecretVersion",
    ("versions", "access"): "AccessSecretVersion",
    ("versions", "enable"): "EnableSecretVersion",
    ("versions", "disable"): "DisableSecretVersion",
    ("versions", "destroy"): "DestroySecretVersion",
}
JSON_TYPES: dict[str, type[Any]] = {
    "string": str,
    "integer": int,
    "boolean": bool,
    "array": list,
    "object": dict,
}


@pytest.fixture(scope="module")
def document() -> Document:
    files = importlib.resources.files("googleapiclient")
    path = files / "discovery_cache" / "documents" / "secretmanager.v1.json"
    loaded: Document = json.loads(path.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def standin() -> Iterator[ThreadedGcpStandin]:
    with ThreadedGcpStandin() as server:
        yield server


def secrets_methods(document: Document) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(resource, method name, method) of the secrets and versions resources, both kinds."""
    projects = document["resources"]["projects"]["resources"]
    for top in (projects, projects["locations"]["resources"]):
        secrets = top["secrets"]
        for resource, methods in [
            ("secrets", secrets["methods"]),
            ("versions", secrets["resources"]["versions"]["methods"]),
        ]:
            for name, method in methods.items():
                yield resource, name, method


def concrete(flat_path: str) -> str:
    """A request path for a documented flatPath: each {xId} replaced by a sample value."""
    return "/" + re.sub(r"\{(\w+)Id\}", lambda m: f"{m[1]}-1", flat_path).replace(
        "versions-1", "latest"
    )


class TestRoutes:
    def test_every_documented_method_is_served_or_deliberately_not(
        self, document: Document
    ) -> None:
        """Each documented secrets method routes to its RPC, except the two left unserved."""
        seen = set()
        for resource, name, method in secrets_methods(document):
            found = route_for(method["httpMethod"], concrete(method["flatPath"]))
            if name in UNSERVED:
                assert found is None, method["id"]
                continue
            assert found is not None, method["id"]
            route, _ = found
            assert route.method == RPC[resource, name], method["id"]
            # The path variable fills the request field the document names ({+name}, ...).
            documented = re.search(r"\{\+(\w+)\}", method["path"])
            assert documented is not None
            assert route.field.rsplit(".", 1)[-1] == documented[1], method["id"]
            seen.add(route.method)
        assert seen == set(METHODS)

    def test_every_route_is_documented(self, document: Document) -> None:
        """No route is the stand-in's own invention: each matches a documented method and path."""
        documented = [
            (m["httpMethod"], concrete(m["flatPath"])) for _, _, m in secrets_methods(document)
        ]
        for route in ROUTES:
            assert any(
                verb == route.http_method and route.pattern.fullmatch(path)
                for verb, path in documented
            ), route.template

    def test_messages_are_the_documented_schemas(self, document: Document) -> None:
        """Each route's request body and response are the schemas the document names."""
        for resource, name, method in secrets_methods(document):
            if name in UNSERVED:
                continue
            served = METHODS[RPC[resource, name]]
            assert served.response.DESCRIPTOR.name == method["response"]["$ref"], method["id"]
            found = route_for(method["httpMethod"], concrete(method["flatPath"]))
            assert found is not None
            if found[0].body == "*":
                assert served.request.DESCRIPTOR.name == method["request"]["$ref"], method["id"]
            elif found[0].body == "secret":
                assert method["request"]["$ref"] == "Secret", method["id"]
            else:
                assert "request" not in method, method["id"]


class Rest:
    """Plain HTTP calls to the stand-in, answering (status, parsed JSON)."""

    def __init__(self, standin: ThreadedGcpStandin) -> None:
        self.connection = http.client.HTTPConnection(standin.host, standin.rest_port)

    def __call__(self, verb: str, path: str, body: object = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        self.connection.request(verb, path, body=data, headers={"content-type": "application/json"})
        response = self.connection.getresponse()
        return response.status, json.loads(response.read())


def check_schema(document: Document, schema: str, value: Any, where: str) -> None:
    """Every field of ``value`` is a property of ``schema``, of the documented JSON type."""
    properties = document["schemas"][schema].get("properties", {})
    assert isinstance(value, dict), where
    for key, item in value.items():
        assert key in properties, f"{where}.{key} is not a field of {schema}"
        check_property(document, properties[key], item, f"{where}.{key}")


def check_property(document: Document, spec: dict[str, Any], item: Any, where: str) -> None:
    if "$ref" in spec:
        check_schema(document, spec["$ref"], item, where)
        return
    kind: type[Any] = JSON_TYPES[spec["type"]]
    assert isinstance(item, kind), f"{where}: {item!r} is not {spec['type']}"
    if "enum" in spec:
        assert item in spec["enum"], where
    if spec["type"] == "array":
        for i, element in enumerate(item):
            check_property(document, spec["items"], element, f"{where}[{i}]")
    if spec["type"] == "object" and "additionalProperties" in spec:
        for key, element in item.items():
            check_property(document, spec["additionalProperties"], element, f"{where}.{key}")


class TestJsonFields:
    def test_every_response_field_is_documented(
        self, document: Document, standin: ThreadedGcpStandin
    ) -> None:
        """Secrets, versions, payloads, lists, policies: only documented fields and types."""
        rest, base = Rest(standin), "/v1/projects/fields/secrets"
        replies: list[tuple[str, tuple[int, Any]]] = [
            (
                "Secret",
                rest(
                    "POST",
                    f"{base}?secretId=a",
                    {"replication": {"automatic": {}}, "labels": {"k": "v"}},
                ),
            ),
            ("Secret", rest("POST", f"{base}?secretId=b", {"replication": {"automatic": {}}})),
            (
                "Secret",
                rest("PATCH", f"{base}/a?updateMask=annotations", {"annotations": {"n": "x"}}),
            ),
            ("Secret", rest("GET", f"{base}/a")),
            ("ListSecretsResponse", rest("GET", f"{base}?pageSize=1")),
            (
                "SecretVersion",
                rest(
                    "POST",
                    f"{base}/a:addVersion",
                    {"payload": {"data": "MTIzNDU2Nzg5", "dataCrc32c": str(0xE3069283)}},
                ),
            ),
            ("AccessSecretVersionResponse", rest("GET", f"{base}/a/versions/1:access")),
            ("SecretVersion", rest("POST", f"{base}/a/versions/1:disable", {})),
            ("SecretVersion", rest("POST", f"{base}/a/versions/1:destroy", {})),
            ("ListSecretVersionsResponse", rest("GET", f"{base}/a/versions")),
            (
                "Policy",
                rest(
                    "POST",
                    f"{base}/a:setIamPolicy",
                    {"policy": {"bindings": [{"role": "roles/viewer", "members": ["user:a@b.c"]}]}},
                ),
            ),
            ("Policy", rest("GET", f"{base}/a:getIamPolicy")),
            (
                "TestIamPermissionsResponse",
                rest("POST", f"{base}/a:testIamPermissions", {"permissions": ["p.q.r"]}),
            ),
            ("Empty", rest("DELETE", f"{base}/b")),
        ]
        for i, (schema, (status, body)) in enumerate(replies):
            assert status == 200, (i, body)
            check_schema(document, schema, body, f"{i}:{schema}")
        # The payload arrives as documented: base64 data, int64 checksum as a JSON string.
        access = replies[6][1][1]
        assert access["payload"] == {"data": "MTIzNDU2Nzg5", "dataCrc32c": str(0xE3069283)}
        assert replies[8][1][1]["state"] == "DESTROYED"

    def test_enum_encoding_int_gives_numbers(self, standin: ThreadedGcpStandin) -> None:
        """$alt=json;enum-encoding=int, as the GAPIC client sends it, turns state into a number."""
        rest, base = Rest(standin), "/v1/projects/enums/secrets"
        rest("POST", f"{base}?secretId=a", {"replication": {"automatic": {}}})
        rest("POST", f"{base}/a:addVersion", {"payload": {"data": "eA=="}})
        _, named = rest("GET", f"{base}/a/versions/1")
        _, numbered = rest("GET", f"{base}/a/versions/1?%24alt=json%3Benum-encoding%3Dint")
        assert (named["state"], numbered["state"]) == ("ENABLED", 1)

    def test_errors_have_google_shape(self, standin: ThreadedGcpStandin) -> None:
        """A refusal is {"error": {"code", "message", "status"}} with the matching HTTP status."""
        rest = Rest(standin)
        status, body = rest("GET", "/v1/projects/errors/secrets/missing")
        assert status == 404
        assert body == {
            "error": {
                "code": 404,
                "message": "Secret [projects/errors/secrets/missing] not found or has no versions.",
                "status": "NOT_FOUND",
            }
        }
        status, body = rest("POST", "/v1/projects/errors/secrets?secretId=x", {"colour": "red"})
        assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")


def test_discovery_client_round_trip(standin: ThreadedGcpStandin) -> None:
    """The discovery client creates, adds a version, reads it back, lists, and gets a 404."""
    service = build(
        "secretmanager",
        "v1",
        static_discovery=True,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": standin.rest_url},
    )
    with service:
        secrets = service.projects().secrets()
        parent = "projects/discovery"
        secret = secrets.create(
            parent=parent, secretId="db", body={"replication": {"automatic": {}}}
        ).execute()
        assert secret["name"] == f"{parent}/secrets/db"
        data = base64.b64encode(b"hunter2").decode()
        version = secrets.addVersion(
            parent=secret["name"], body={"payload": {"data": data}}
        ).execute()
        assert (version["name"], version["state"]) == (f"{parent}/secrets/db/versions/1", "ENABLED")
        access = secrets.versions().access(name=f"{secret['name']}/versions/latest").execute()
        assert base64.b64decode(access["payload"]["data"]) == b"hunter2"
        listed = secrets.list(parent=parent).execute()
        assert [s["name"] for s in listed["secrets"]] == [secret["name"]]
        with pytest.raises(HttpError) as caught:
            secrets.get(name=f"{parent}/secrets/missing").execute()
        assert caught.value.status_code == 404
        assert json.loads(caught.value.content)["error"]["status"] == "NOT_FOUND"
