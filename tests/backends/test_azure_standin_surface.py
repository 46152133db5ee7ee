"""The Azure stand-in agrees with the machine-readable surface the Key Vault SDK ships.

Nothing here lists Key Vault's operations or fields by hand: they are read from the SDK's
generated code, so an SDK that adds an operation or a field fails these tests until the
stand-in (and the shared route table) handle it.

- Requests: every ``build_key_vault_*_request`` builder is routed by
  :func:`keyledger.backends.azure.routes.route_for` to the operation it is named for, the
  stand-in serves it, and the builders and :data:`~keyledger.backends.azure.routes.OPERATIONS`
  cover each other.
- Responses: every key the stand-in writes is a REST field of the model the SDK reads that
  answer into (the return type of the generated operation), recursively; pages carry only
  the keys the SDK's pager reads; errors fit ``KeyVaultError``.
- Request bodies: a body with every field of ``SecretSetParameters``,
  ``SecretUpdateParameters`` and ``SecretRestoreParameters`` (read-only ones included) is
  accepted, and what can be written is written.

Field names come from the SDK's model machinery (``_attr_to_rest_field``), nested models
from the fields' type hints.
"""

from __future__ import annotations

import datetime
import inspect
import re
import time
import typing
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.core.credentials import AccessToken
from azure.core.paging import ItemPaged
from azure.core.rest import HttpRequest
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._generated import models
from azure.keyvault.secrets._generated._operations import _operations as generated
from azure.keyvault.secrets._generated._utils.model_base import Model

from keyledger.backends.azure.routes import OPERATIONS, route_for
from keyledger.backends.azure_standin import ThreadedAzureStandin
from keyledger.backends.azure_standin.wire import b64url_encode
from keyledger.devtls import DevTls, ensure_dev_tls, server_context

Json = dict[str, Any]

BUILDERS: dict[str, Callable[..., HttpRequest]] = {
    name: function
    for name, function in inspect.getmembers(generated, inspect.isfunction)
    if name.startswith("build_key_vault_") and name.endswith("_request")
}
# The generated client's operations, one per builder, typed with the models they exchange.
MIXIN = generated._KeyVaultClientOperationsMixin
# What to pass a builder's required arguments; a builder wanting another one fails the test.
PLACEHOLDERS = {"secret_name": "s", "secret_version": "v"}


def operation_id(builder: str) -> str:
    """build_key_vault_get_secret_versions_request -> GetSecretVersions."""
    words = builder.removeprefix("build_key_vault_").removesuffix("_request").split("_")
    return "".join(word.title() for word in words)


def method_of(operation: str) -> Callable[..., Any]:
    """The generated client's method for an operationId: GetSecrets -> get_secrets."""
    return getattr(MIXIN, re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())  # type: ignore[no-any-return]


def hints(function: Any) -> dict[str, Any]:
    return typing.get_type_hints(function, localns={"_models": models})


def model_in(hint: Any) -> type[Model] | None:
    """The SDK model a type hint names (Optional, Union and ItemPaged seen through)."""
    for candidate in typing.get_args(hint) or (hint,):
        if isinstance(candidate, type) and issubclass(candidate, Model):
            return candidate
    return None


def rest_fields(model: type[Model]) -> dict[str, tuple[Any, type[Model] | None, Any]]:
    """A model's REST field names, each with its rest field and the model of its value."""
    model({})  # the SDK builds a model's field table when it is first instantiated
    types = hints(model)
    return {
        rf._rest_name: (rf, model_in(types[attr]), types[attr])
        for attr, rf in model.__dict__["_attr_to_rest_field"].items()
    }


def undeclared(body: Json, model: type[Model], at: str = "") -> list[str]:
    """The keys of ``body`` (recursively) that are no REST field of ``model``."""
    fields = rest_fields(model)
    found = []
    for key, value in body.items():
        if key not in fields:
            found.append(f"{at}{key}")
        elif (nested := fields[key][1]) is not None and isinstance(value, dict):
            found += undeclared(value, nested, f"{at}{key}.")
    return found


def answer_model(operation: str) -> tuple[type[Model] | None, bool]:
    """The model the SDK reads an operation's answer into, and whether it comes in pages."""
    returned = hints(method_of(operation))["return"]
    return model_in(returned), typing.get_origin(returned) is ItemPaged


def page_keys(operation: str) -> set[str]:
    """The keys of a page the SDK's pager reads (``deserialized.get("value")``...)."""
    source = inspect.getsource(method_of(operation))
    return set(re.findall(r'deserialized\.get\(\s*"(\w+)"', source))


def request_model(operation: str) -> type[Model] | None:
    parameters = hints(method_of(operation)).get("parameters")
    return model_in(parameters) if parameters is not None else None


def full_body(model: type[Model], given: Json) -> Json:
    """Every REST field of ``model`` filled: from ``given``, else a placeholder of its type."""
    body: Json = {}
    for rest_name, (rf, nested, hint) in rest_fields(model).items():
        kinds = [k for k in typing.get_args(hint) or (hint,) if k is not type(None)]
        if rest_name in given:
            body[rest_name] = given[rest_name]
        elif nested is not None:
            body[rest_name] = full_body(nested, {})
        elif kinds[0] is datetime.datetime and rf._format == "unix-timestamp":
            body[rest_name] = 1_700_000_000
        elif kinds[0] in (bool, int, str) or typing.get_origin(kinds[0]) is dict:
            body[rest_name] = {bool: True, int: 7, str: "x"}.get(kinds[0], {"k": "v"})
        else:
            pytest.fail(f"{model.__name__}.{rest_name} ({hint}) needs a placeholder")
    return body


def writable(model: type[Model]) -> set[str]:
    return {
        name
        for name, (rf, _, _) in rest_fields(model).items()
        if {"create", "update"} & set(rf._visibility or ())
    }


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("t", int(time.time()) + 3600)


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedAzureStandin]:
    tls = ensure_dev_tls(tmp_path_factory.mktemp("tls"))
    with ThreadedAzureStandin(ssl_context=server_context(tls.cert, tls.key)) as server:
        server.tls = tls  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def client(standin: ThreadedAzureStandin) -> Iterator[SecretClient]:
    tls: DevTls = standin.tls  # type: ignore[attr-defined]
    with SecretClient(
        vault_url=standin.url,
        credential=StaticToken(),
        connection_verify=str(tls.ca_cert),
        verify_challenge_resource=False,
    ) as made:
        yield made


class TestRequests:
    def test_builders_and_the_route_table_cover_each_other(self) -> None:
        """One builder per operation of the route table, and no other."""
        assert {operation_id(b) for b in BUILDERS} == set(OPERATIONS)

    @pytest.mark.parametrize("builder", sorted(BUILDERS))
    def test_each_builder_is_routed_and_served(
        self, builder: str, client: SecretClient, standin: ThreadedAzureStandin
    ) -> None:
        """The request the SDK builds routes to its operation, and the stand-in serves it."""
        arguments = {}
        for parameter in inspect.signature(BUILDERS[builder]).parameters.values():
            if parameter.default is inspect.Parameter.empty and parameter.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY,
            ):
                if parameter.name not in PLACEHOLDERS:
                    pytest.fail(f"{builder} takes {parameter.name}: give it a placeholder")
                arguments[parameter.name] = PLACEHOLDERS[parameter.name]
        request = BUILDERS[builder](**arguments)
        path = urlsplit(request.url).path
        route = route_for(request.method, path)
        assert route is not None, f"{request.method} {path}"
        assert route.operation.name == operation_id(builder)
        assert route.operation.http_method == request.method
        assert route.operation.path("s", "v") == path

        before = standin.traffic.snapshot()
        response = client.send_request(request)
        assert response.status_code != 405
        assert response.status_code == 204 or response.json().get("error", {}).get("code") != (
            "NotFound"
        )
        after = standin.traffic.snapshot()
        assert any(
            op == operation_id(builder) and n > before.get((op, status), 0)
            for (op, status), n in after.items()
        )


def send(client: SecretClient, method: str, url: str, body: Json | None = None) -> Any:
    response = client.send_request(HttpRequest(method, url, json=body))
    assert response.status_code < 500, response.text()
    return None if response.status_code == 204 else response.json()


@pytest.fixture(scope="module")
def answers(client: SecretClient) -> dict[str, list[Json]]:
    """Every operation's answers, successes with every optional field set, and errors."""
    name, gone = f"s-{uuid.uuid4().hex[:12]}", f"g-{uuid.uuid4().hex[:12]}"
    seen: dict[str, list[Json]] = {}

    def call(operation: str, method: str, url: str, body: Json | None = None) -> Any:
        answer = send(client, method, url, body)
        if answer is not None:
            seen.setdefault(operation, []).append(answer)
        return answer

    set_body = full_body(models.SecretSetParameters, {})
    made = call("SetSecret", "PUT", f"/secrets/{name}", set_body)
    version = made["id"].rsplit("/", 1)[1]
    call("SetSecret", "PUT", f"/secrets/{name}", set_body)
    for other in (gone, f"{gone}-2"):  # two more, so each listing below has a second page
        call("SetSecret", "PUT", f"/secrets/{other}", {"value": "x", "contentType": "t"})
    call("GetSecret", "GET", f"/secrets/{name}/")
    call("GetSecret", "GET", f"/secrets/{name}/{version}")
    call("UpdateSecret", "PATCH", f"/secrets/{name}/", {"contentType": "y"})
    call("UpdateSecret", "PATCH", f"/secrets/{name}/{version}", {"tags": {"a": "b"}})
    call("GetSecrets", "GET", "/secrets?maxresults=1")
    call("GetSecretVersions", "GET", f"/secrets/{name}/versions?maxresults=1")
    backup = call("BackupSecret", "POST", f"/secrets/{name}/backup")
    call("DeleteSecret", "DELETE", f"/secrets/{gone}")
    call("DeleteSecret", "DELETE", f"/secrets/{gone}-2")
    call("GetDeletedSecret", "GET", f"/deletedsecrets/{gone}")
    call("GetDeletedSecrets", "GET", "/deletedsecrets?maxresults=1")
    call("RecoverDeletedSecret", "POST", f"/deletedsecrets/{gone}/recover")
    call("DeleteSecret", "DELETE", f"/secrets/{name}")
    call("PurgeDeletedSecret", "DELETE", f"/deletedsecrets/{name}")
    call("RestoreSecret", "POST", "/secrets/restore", {"value": backup["value"]})
    # Refusals, one of each kind, innererror included.
    call(
        "SetSecret", "PUT", f"/secrets/{gone}-off", {"value": "x", "attributes": {"enabled": False}}
    )
    for method, url in [
        ("GET", f"/secrets/{gone}-off/"),
        ("GET", "/secrets/missing-one/"),
        ("PUT", "/secrets/bad_name"),
        ("GET", "/secrets?maxresults=99"),
        ("GET", "/keys"),
        ("POST", "/secrets"),
    ]:
        call("error", method, url, {"value": "x"} if method == "PUT" else None)
    call("DeleteSecret", "DELETE", f"/secrets/{gone}")
    call("error", "PUT", f"/secrets/{gone}", {"value": "x"})
    return seen


class TestResponses:
    @pytest.mark.parametrize("operation", sorted(OPERATIONS))
    def test_every_key_is_a_field_of_the_sdks_model(
        self, operation: str, answers: dict[str, list[Json]]
    ) -> None:
        """What the stand-in writes, the SDK has a field for (errors aside)."""
        model, paged = answer_model(operation)
        if model is None:  # no body: PurgeDeletedSecret's 204
            assert operation not in answers
            return
        successes = [a for a in answers[operation] if "error" not in a]
        assert successes, f"no successful {operation} was seen"
        for answer in successes:
            if paged:
                assert set(answer) <= page_keys(operation)
                assert answer["value"], "an empty page shows no item fields"
                for found in answer["value"]:
                    assert undeclared(found, model) == []
            else:
                assert undeclared(answer, model) == []

    def test_pages_link_to_the_next(self, answers: dict[str, list[Json]]) -> None:
        """With one item a page, each listing above links on (the key the pager follows)."""
        for operation in ("GetSecrets", "GetSecretVersions", "GetDeletedSecrets"):
            assert all(a["nextLink"] for a in answers[operation]), operation

    def test_errors_fit_key_vault_error(self, answers: dict[str, list[Json]]) -> None:
        """Every refusal is a KeyVaultError, innererror and all."""
        errors = [a for seen in answers.values() for a in seen if "error" in a]
        assert len(errors) >= 7
        assert any("innererror" in e["error"] for e in errors)
        for found in errors:
            assert undeclared(found, models.KeyVaultError) == []


class TestRequestBodies:
    @pytest.mark.parametrize("operation", sorted(o for o in OPERATIONS if OPERATIONS[o].body))
    def test_every_field_is_accepted(self, operation: str, client: SecretClient) -> None:
        """A body with all the SDK's fields is accepted; the writable ones are written."""
        model = request_model(operation)
        assert model is not None, f"the SDK sends {operation} no body model"
        name = f"b-{uuid.uuid4().hex[:12]}"
        send(client, "PUT", f"/secrets/{name}", {"value": "before"})
        given: Json = {}
        if operation == "RestoreSecret":
            given["value"] = send(client, "POST", f"/secrets/{name}/backup")["value"]
            send(client, "DELETE", f"/secrets/{name}")
            send(client, "DELETE", f"/deletedsecrets/{name}")
        body = full_body(model, given)
        url = OPERATIONS[operation].path(name, "")
        response = client.send_request(
            HttpRequest(OPERATIONS[operation].http_method, url, json=body)
        )
        assert response.status_code == 200, response.text()
        answer = response.json()
        answered, _ = answer_model(operation)
        assert answered is not None
        for key in writable(model) & set(rest_fields(answered)) - {"value"}:
            sent, got = body[key], answer[key]
            if isinstance(sent, dict) and key == "attributes":
                sent = {k: v for k, v in sent.items() if k in writable(models.SecretAttributes)}
                got = {k: v for k, v in got.items() if k in sent}
            assert got == sent, key
        if "value" in writable(model) and "value" in answer:
            assert answer["value"] == body["value"]


def test_backup_blobs_are_base64url(answers: dict[str, list[Json]]) -> None:
    """BackupSecretResult.value is base64url, as the SDK decodes it."""
    (backup,) = answers["BackupSecret"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", backup["value"])
    assert b64url_encode(b"\xff\xfe") == "__4"
