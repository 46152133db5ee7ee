"""Each SecretManagerService RPC keyledger forwards: its request type, the field naming what
it is about, the client method that sends it, and the secrets its answer names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import proto  # type: ignore[import-untyped]
from google.cloud.secretmanager_v1.types import resources, service

# No stubs are published for grpc-google-iam-v1 nor protobuf's runtime.
from google.iam.v1 import iam_policy_pb2  # type: ignore[import-untyped]

from keyledger.backends.errors import InvalidBackendRequest
from keyledger.backends.gcp._names import ResourceName, Shape, parse
from keyledger.model import SecretItem, SecretRef

__all__ = ["OPERATIONS", "Operation", "items", "names_back", "outgoing", "target"]


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    request: type[Any]  # a proto-plus request, or a google.iam.v1 protobuf one
    method: str  # of SecretManagerServiceAsyncClient
    field: str  # the request field naming what the call is about ("secret.name": nested)
    shape: Shape  # what that field must name
    pages: bool = False  # the client answers with a pager: keyledger forwards one page


def _op(name: str, request: type[Any], method: str, field: str, shape: Shape) -> Operation:
    return Operation(name, request, method, field, shape, pages=method.startswith("list_"))


OPERATIONS: Mapping[str, Operation] = {
    op.name: op
    for op in [
        _op(
            "AccessSecretVersion",
            service.AccessSecretVersionRequest,
            "access_secret_version",
            "name",
            "version",
        ),
        _op("GetSecret", service.GetSecretRequest, "get_secret", "name", "secret"),
        _op("ListSecrets", service.ListSecretsRequest, "list_secrets", "parent", "project"),
        _op("CreateSecret", service.CreateSecretRequest, "create_secret", "parent", "project"),
        _op(
            "AddSecretVersion",
            service.AddSecretVersionRequest,
            "add_secret_version",
            "parent",
            "secret",
        ),
        _op("UpdateSecret", service.UpdateSecretRequest, "update_secret", "secret.name", "secret"),
        _op("DeleteSecret", service.DeleteSecretRequest, "delete_secret", "name", "secret"),
        _op(
            "GetSecretVersion",
            service.GetSecretVersionRequest,
            "get_secret_version",
            "name",
            "version",
        ),
        _op(
            "ListSecretVersions",
            service.ListSecretVersionsRequest,
            "list_secret_versions",
            "parent",
            "secret",
        ),
        _op(
            "DisableSecretVersion",
            service.DisableSecretVersionRequest,
            "disable_secret_version",
            "name",
            "version",
        ),
        _op(
            "EnableSecretVersion",
            service.EnableSecretVersionRequest,
            "enable_secret_version",
            "name",
            "version",
        ),
        _op(
            "DestroySecretVersion",
            service.DestroySecretVersionRequest,
            "destroy_secret_version",
            "name",
            "version",
        ),
        _op(
            "GetIamPolicy",
            iam_policy_pb2.GetIamPolicyRequest,
            "get_iam_policy",
            "resource",
            "secret",
        ),
        _op(
            "SetIamPolicy",
            iam_policy_pb2.SetIamPolicyRequest,
            "set_iam_policy",
            "resource",
            "secret",
        ),
        _op(
            "TestIamPermissions",
            iam_policy_pb2.TestIamPermissionsRequest,
            "test_iam_permissions",
            "resource",
            "secret",
        ),
    ]
}


def _get(message: Any, field: str) -> Any:
    for part in field.split("."):
        message = getattr(message, part)
    return message


def target(op: Operation, message: Any) -> ResourceName:
    """What the request is about, in the caller's project; refused unless op.shape."""
    if not isinstance(message, op.request):
        raise InvalidBackendRequest(
            f"{op.name} takes a {op.request.__name__}, not {type(message).__name__}",
            code="INVALID_ARGUMENT",
        )
    given = _get(message, op.field)
    name = parse(given) if isinstance(given, str) else None
    if name is None or name.shape != op.shape:
        raise InvalidBackendRequest(
            f"{op.name}: {op.field} {str(given)[:300]!r} is not a {op.shape} name "
            f"(projects/{{project}}[/locations/{{location}}]...)",
            code="INVALID_ARGUMENT",
        )
    return name


def outgoing(op: Operation, message: Any, real: ResourceName) -> Any:
    """A copy of the request naming ``real``: the caller's message stays as it was sent."""
    if isinstance(message, proto.Message):
        copy = type(message)(message)
    else:
        copy = type(message)()
        copy.CopyFrom(message)
    *path, last = op.field.split(".")
    holder = _get(copy, ".".join(path)) if path else copy
    setattr(holder, last, str(real))
    return copy


def names_back(response: Any, back: Callable[[str], str]) -> None:
    """Rewrite, in place, every secret or version name the response carries."""
    if isinstance(
        response,
        resources.Secret | resources.SecretVersion | service.AccessSecretVersionResponse,
    ):
        response.name = back(response.name)
    elif isinstance(response, service.ListSecretsResponse):
        for secret in response.secrets:
            secret.name = back(secret.name)
    elif isinstance(response, service.ListSecretVersionsResponse):
        for version in response.versions:
            version.name = back(version.name)


def _item(backend: str, name: ResourceName, value: bytes | None = None) -> SecretItem:
    return SecretItem(
        ref=SecretRef(backend, f"{name.project}/{name.secret}"),
        version_id=name.version,
        value=value,
    )


def items(
    backend: str, op: Operation, asked: ResourceName, response: Any
) -> tuple[SecretItem, ...]:
    """The secrets an answer (already in the caller's project) is about.

    A listing of secrets names each; anything else names its one secret once: a version
    listing too (its versions are metadata of one secret, and policy is per secret), with
    ``version_id`` only where one version is the subject. Only AccessSecretVersion carries
    a value.
    """
    if isinstance(response, service.ListSecretsResponse):
        listed = (parse(s.name) for s in response.secrets)
        return tuple(_item(backend, n) for n in listed if n is not None and n.secret)
    answered = (
        parse(response.name)
        if isinstance(
            response,
            resources.Secret | resources.SecretVersion | service.AccessSecretVersionResponse,
        )
        else None
    )
    name = answered if answered is not None and answered.secret else asked
    if name.secret is None:  # a CreateSecret answer without its name: nothing to name
        return ()
    served = isinstance(response, service.AccessSecretVersionResponse)
    return (_item(backend, name, bytes(response.payload.data) if served else None),)
