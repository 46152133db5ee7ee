"""SecretManagerService's methods over the SDK's own protobuf messages, for both transports.

Each :class:`Method` takes the request message ``google-cloud-secret-manager`` defines
(``secretmanager_v1.types`` as raw protobuf, or ``google.iam.v1`` for the IAM methods) and
returns its response message; gRPC (de)serializes them as they are, REST through the proto3
JSON mapping. So the two transports cannot disagree, and neither can invent a field.

IAM is answered minimally: the stand-in checks no credentials, so ``SetIamPolicy`` stores the
policy (with a new etag) and ``GetIamPolicy`` returns it (empty until set), and
``TestIamPermissions`` grants every permission asked about. Not served (UNIMPLEMENTED):
``EnableManagedRotation`` and ``RotateSecret``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from secrets import token_bytes
from typing import Any

from google.cloud.secretmanager_v1.types import resources, service

# No type stubs are published for protobuf's runtime nor grpc-google-iam-v1 (ignored on
# purpose: the message classes are Any to mypy either way).
from google.iam.v1 import iam_policy_pb2, policy_pb2  # type: ignore[import-untyped]
from google.protobuf import empty_pb2, timestamp_pb2  # type: ignore[import-untyped]
from google_crc32c import value as crc32c

from keyledger.backends.gcp_standin.errors import InvalidArgument
from keyledger.backends.gcp_standin.store import SecretView, State, Store, VersionView

__all__ = ["METHODS", "SERVICE", "UNSERVED", "Method", "automatic_replication"]

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
# Methods of the SDK's service the stand-in deliberately does not serve.
UNSERVED = frozenset({"EnableManagedRotation", "RotateSecret"})
UPDATABLE = frozenset({"labels", "annotations"})

Message = Any  # a protobuf message (the runtime has no type stubs)


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    request: type[Message]
    response: type[Message]
    call: Callable[[Store, Message], Message]


def automatic_replication() -> bytes:
    """``Replication(automatic={})``, serialized as the store keeps it."""
    return bytes(resources.Replication.pb()(automatic={}).SerializeToString())


def _timestamp(when: datetime) -> Message:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _secret(view: SecretView) -> Message:
    secret = resources.Secret.pb()(
        name=view.name,
        create_time=_timestamp(view.create_time),
        labels=view.labels,
        annotations=view.annotations,
        etag=view.etag,
    )
    if view.replication is not None:
        secret.replication.ParseFromString(view.replication)
    return secret


def _version(view: VersionView) -> Message:
    version = resources.SecretVersion.pb()(
        name=view.name,
        create_time=_timestamp(view.create_time),
        state=view.state.value,
        etag=view.etag,
        client_specified_payload_checksum=view.client_specified_payload_checksum,
    )
    if view.destroy_time is not None:
        version.destroy_time.CopyFrom(_timestamp(view.destroy_time))
    return version


def create_secret(store: Store, request: Message) -> Message:
    secret = request.secret
    replication = secret.replication.SerializeToString() if secret.HasField("replication") else None
    # A global secret must say how it is replicated; a regional one lives in its location.
    if replication is None and "/locations/" not in request.parent:
        raise InvalidArgument("Secret.replication is required, e.g. {'automatic': {}}.")
    view = store.create_secret(
        request.parent,
        request.secret_id,
        replication=replication,
        labels=dict(secret.labels),
        annotations=dict(secret.annotations),
    )
    return _secret(view)


def get_secret(store: Store, request: Message) -> Message:
    return _secret(store.get_secret(request.name))


def _paging(request: Message) -> dict[str, Any]:
    """What a listing request asks of the store's pages."""
    return {
        "page_size": request.page_size,
        "page_token": request.page_token,
        "filter": request.filter,
    }


def _paged(response: Any, field: str, page: Any, render: Callable[[Any], Message]) -> Message:
    """One page of the store as the listing's response message, its items under ``field``."""
    return response.pb()(
        **{field: [render(item) for item in page.items]},
        next_page_token=page.next_page_token,
        total_size=page.total_size,
    )


def list_secrets(store: Store, request: Message) -> Message:
    page = store.list_secrets(request.parent, **_paging(request))
    return _paged(service.ListSecretsResponse, "secrets", page, _secret)


def update_secret(store: Store, request: Message) -> Message:
    paths = set(request.update_mask.paths)
    if not paths:
        raise InvalidArgument(
            "update_mask is required: the fields to change (labels, annotations)."
        )
    if paths - UPDATABLE:
        raise InvalidArgument(
            f"The stand-in updates only {sorted(UPDATABLE)}, not {sorted(paths - UPDATABLE)}."
        )
    secret = request.secret
    view = store.update_secret(
        secret.name,
        labels=dict(secret.labels) if "labels" in paths else None,
        annotations=dict(secret.annotations) if "annotations" in paths else None,
        etag=secret.etag,
    )
    return _secret(view)


def delete_secret(store: Store, request: Message) -> Message:
    store.delete_secret(request.name, etag=request.etag)
    return empty_pb2.Empty()


def add_secret_version(store: Store, request: Message) -> Message:
    payload = request.payload
    given = payload.data_crc32c if payload.HasField("data_crc32c") else None
    return _version(store.add_version(request.parent, payload.data, crc32c_given=given))


def get_secret_version(store: Store, request: Message) -> Message:
    return _version(store.get_version(request.name))


def list_secret_versions(store: Store, request: Message) -> Message:
    page = store.list_versions(request.parent, **_paging(request))
    return _paged(service.ListSecretVersionsResponse, "versions", page, _version)


def access_secret_version(store: Store, request: Message) -> Message:
    view = store.access_version(request.name)
    # The response names the version that was read (a number even when "latest" was asked).
    return service.AccessSecretVersionResponse.pb()(
        name=view.name,
        payload=resources.SecretPayload.pb()(data=view.payload, data_crc32c=crc32c(view.payload)),
    )


def _set_state(state: State) -> Callable[[Store, Message], Message]:
    def call(store: Store, request: Message) -> Message:
        return _version(store.set_state(request.name, state, etag=request.etag))

    return call


def get_iam_policy(store: Store, request: Message) -> Message:
    policy = policy_pb2.Policy()
    policy.ParseFromString(store.get_secret(request.resource).iam_policy or b"")
    return policy


def set_iam_policy(store: Store, request: Message) -> Message:
    policy = policy_pb2.Policy()
    policy.CopyFrom(request.policy)
    policy.etag = token_bytes(8)
    store.update_secret(request.resource, iam_policy=policy.SerializeToString())
    return policy


def grant_permissions(store: Store, request: Message) -> Message:
    store.get_secret(request.resource)
    return iam_policy_pb2.TestIamPermissionsResponse(permissions=list(request.permissions))


def _protobuf(message_type: Any) -> type[Message]:
    # proto-plus types are unwrapped to the protobuf classes the wire uses.
    return message_type.pb() if hasattr(message_type, "pb") else message_type  # type: ignore[no-any-return]


def _method(
    name: str, request: Any, response: Any, call: Callable[[Store, Message], Message]
) -> Method:
    return Method(name, _protobuf(request), _protobuf(response), call)


_Secret, _Version, _Policy = resources.Secret, resources.SecretVersion, policy_pb2.Policy

METHODS: Mapping[str, Method] = {
    m.name: m
    for m in [
        _method("CreateSecret", service.CreateSecretRequest, _Secret, create_secret),
        _method("GetSecret", service.GetSecretRequest, _Secret, get_secret),
        _method(
            "ListSecrets", service.ListSecretsRequest, service.ListSecretsResponse, list_secrets
        ),
        _method("UpdateSecret", service.UpdateSecretRequest, _Secret, update_secret),
        _method("DeleteSecret", service.DeleteSecretRequest, empty_pb2.Empty, delete_secret),
        _method("AddSecretVersion", service.AddSecretVersionRequest, _Version, add_secret_version),
        _method("GetSecretVersion", service.GetSecretVersionRequest, _Version, get_secret_version),
        _method(
            "ListSecretVersions",
            service.ListSecretVersionsRequest,
            service.ListSecretVersionsResponse,
            list_secret_versions,
        ),
        _method(
            "AccessSecretVersion",
            service.AccessSecretVersionRequest,
            service.AccessSecretVersionResponse,
            access_secret_version,
        ),
        _method(
            "DisableSecretVersion",
            service.DisableSecretVersionRequest,
            _Version,
            _set_state(State.DISABLED),
        ),
        _method(
            "EnableSecretVersion",
            service.EnableSecretVersionRequest,
            _Version,
            _set_state(State.ENABLED),
        ),
        _method(
            "DestroySecretVersion",
            service.DestroySecretVersionRequest,
            _Version,
            _set_state(State.DESTROYED),
        ),
        _method("GetIamPolicy", iam_policy_pb2.GetIamPolicyRequest, _Policy, get_iam_policy),
        _method("SetIamPolicy", iam_policy_pb2.SetIamPolicyRequest, _Policy, set_iam_policy),
        _method(
            "TestIamPermissions",
            iam_policy_pb2.TestIamPermissionsRequest,
            iam_policy_pb2.TestIamPermissionsResponse,
            grant_permissions,
        ),
    ]
}
