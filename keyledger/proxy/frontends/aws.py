"""AWS Secrets Manager's wire protocol: JSON 1.1 on ``POST /``.

The operation comes from ``X-Amz-Target: secretsmanager.<Operation>``, the input is the
JSON body, and errors are ``{"__type": code, "message": text}`` with the code also in
``x-amzn-ErrorType`` -- what botocore parses into ``ClientError`` codes. Inputs are passed
to the store as parsed (re-encoded, so duplicate keys cannot mean one thing to keyledger and
another to the store), and the store keeps validating them exactly as AWS does. A SecretId
may be an ARN; the frontend does not guess the name inside it (a partial ARN is ambiguous
when a name ends in "-" and six characters): the backend resolves it before authorisation.

What reaches policy and the audit event (the secret named, VersionId, VersionStage) is held to
the service model's bounds first, as AWS does: a value outside them is refused with AWS's
ValidationException before anything is decided or recorded, and the refusal never quotes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, replace
from typing import Any

import orjson

from keyledger.backends import BackendError
from keyledger.backends.errors import StoreCredentialsError
from keyledger.model import Action, SecretRef, SecretRequest, SecretResult
from keyledger.proxy.errors import AccessDenied, ErrorKind, ProxyError, RequestError
from keyledger.proxy.frontends.json_body import MAX_DEPTH, too_deep
from keyledger.proxy.wire import Call, FrontendDefaults, WireRequest, WireResponse, caller_text

__all__ = ["OPERATIONS", "AwsFrontend"]

CONTENT_TYPE = "application/x-amz-json-1.1"
BATCH_LIMIT = 20  # SecretIdListType max in the service model
TARGET_PREFIX = "secretsmanager."
# The service model's bounds (botocore secretsmanager 2017-10-17) on what reaches policy
# and the audit event, so nothing AWS itself would refuse is decided on or recorded.
MAX_ID_LENGTH = 2048  # SecretIdType: names and ARNs
MAX_NAME_LENGTH = 512  # NameType: CreateSecret's Name
# (min, max) lengths of the inputs naming a version.
_VERSION_FIELDS: Mapping[str, tuple[int, int]] = {
    "VersionId": (32, 64),  # SecretVersionIdType
    "VersionStage": (1, 256),  # SecretVersionStageType
    "MoveToVersionId": (32, 64),
    "RemoveFromVersionId": (32, 64),
}


class ValidationError(RequestError):
    """An input outside the service model's bounds: AWS answers ValidationException."""

    code = "ValidationException"

    def __init__(self, field: str, constraint: str) -> None:
        # AWS's wording, less the value it quotes: that may be anything, of any size.
        super().__init__(
            f"1 validation error detected: Value at '{field[:1].lower()}{field[1:]}' failed "
            f"to satisfy constraint: Member must {constraint}"
        )


def _bounded(field: str, value: str, low: int, high: int) -> None:
    if len(value) < low:
        raise ValidationError(field, f"have length greater than or equal to {low}")
    if len(value) > high:
        raise ValidationError(field, f"have length less than or equal to {high}")


@dataclass(frozen=True, slots=True)
class _Op:
    action: Action
    id_field: str | None = "SecretId"  # the input field naming the secret


OPERATIONS: Mapping[str, _Op] = {
    "GetSecretValue": _Op(Action.READ),
    "BatchGetSecretValue": _Op(Action.READ, None),
    "DescribeSecret": _Op(Action.DESCRIBE),
    "ListSecretVersionIds": _Op(Action.DESCRIBE),
    "GetResourcePolicy": _Op(Action.DESCRIBE),
    "ListSecrets": _Op(Action.LIST, None),
    "CreateSecret": _Op(Action.WRITE, "Name"),
    "PutSecretValue": _Op(Action.WRITE),
    "UpdateSecret": _Op(Action.WRITE),
    "UpdateSecretVersionStage": _Op(Action.WRITE),
    "RestoreSecret": _Op(Action.WRITE),
    "TagResource": _Op(Action.WRITE),
    "UntagResource": _Op(Action.WRITE),
    "PutResourcePolicy": _Op(Action.WRITE),
    "DeleteResourcePolicy": _Op(Action.WRITE),
    "ReplicateSecretToRegions": _Op(Action.WRITE),
    "RemoveRegionsFromReplication": _Op(Action.WRITE),
    "StopReplicationToReplica": _Op(Action.WRITE),
    "RotateSecret": _Op(Action.ROTATE),
    "CancelRotateSecret": _Op(Action.ROTATE),
    "DeleteSecret": _Op(Action.DELETE),
}

# ErrorKind -> (HTTP status, AWS error code). Codes are the ones AWS itself returns, so
# SDKs raise (and retry, or not) exactly as they would against AWS.
_ERRORS: Mapping[ErrorKind, tuple[int, str]] = {
    ErrorKind.MISSING_AUTH: (400, "MissingAuthenticationTokenException"),
    ErrorKind.MALFORMED_AUTH: (400, "IncompleteSignatureException"),
    ErrorKind.UNKNOWN_KEY: (400, "UnrecognizedClientException"),
    ErrorKind.BAD_SIGNATURE: (400, "InvalidSignatureException"),
    ErrorKind.EXPIRED: (400, "InvalidSignatureException"),
    ErrorKind.BAD_SCOPE: (400, "InvalidSignatureException"),
    # Bearer tokens are not AWS's; should one reach this protocol, it is a bad credential.
    ErrorKind.UNKNOWN_TOKEN: (400, "UnrecognizedClientException"),
    ErrorKind.BAD_TOKEN: (400, "UnrecognizedClientException"),
    ErrorKind.REVOKED_TOKEN: (400, "UnrecognizedClientException"),
    ErrorKind.EXPIRED_TOKEN: (400, "ExpiredTokenException"),
    ErrorKind.NOT_YET_VALID: (400, "InvalidIdentityTokenException"),
    ErrorKind.UNKNOWN_ISSUER: (400, "InvalidIdentityTokenException"),
    ErrorKind.UNKNOWN_SIGNING_KEY: (400, "InvalidIdentityTokenException"),
    ErrorKind.WRONG_AUDIENCE: (400, "InvalidIdentityTokenException"),
    ErrorKind.UNKNOWN_OPERATION: (400, "UnknownOperationException"),
    ErrorKind.BAD_REQUEST: (400, "InvalidParameterException"),
    ErrorKind.MALFORMED_BODY: (400, "SerializationException"),
    ErrorKind.TOO_LARGE: (413, "RequestEntityTooLargeException"),
    ErrorKind.TIMEOUT: (408, "RequestTimeoutException"),
    ErrorKind.ACCESS_DENIED: (400, "AccessDeniedException"),
    # botocore's retry handler knows this code: it backs off and tries again.
    ErrorKind.THROTTLED: (400, "ThrottlingException"),
    ErrorKind.AUDIT_UNAVAILABLE: (503, "ServiceUnavailable"),
    ErrorKind.INTERNAL: (500, "InternalServiceError"),
}

_BACKEND_CODES: Mapping[str, str] = {
    "not_found": "ResourceNotFoundException",
    "invalid_request": "InvalidRequestException",
    "conflict": "ResourceExistsException",
    "unavailable": "InternalServiceError",
}


# keyledger's own credentials towards the store are missing or refused: nothing the caller
# can fix, nothing a retry fixes. AWS answers AccessDeniedException (400) when the service
# itself may not use what it depends on (a KMS key), and no SDK retries it; a 5xx is retried
# by status (4 more attempts in botocore's legacy mode, the AWS CLI's default) first.
_STORE_CREDENTIALS = (400, "AccessDeniedException")


class AwsFrontend(FrontendDefaults):
    protocol = "aws-json"
    operations = frozenset(OPERATIONS)

    def __init__(self, *, backend: str) -> None:
        self.backend = backend

    def operation_name(self, wire: WireRequest) -> str:
        target = wire.headers.get("x-amz-target", "")
        return caller_text(target.removeprefix(TARGET_PREFIX), limit=128) or "(none)"

    def parse(self, wire: WireRequest) -> Call:
        target = wire.headers.get("x-amz-target", "")
        operation = target.removeprefix(TARGET_PREFIX)
        op = OPERATIONS.get(operation) if target.startswith(TARGET_PREFIX) else None
        if op is None:
            raise RequestError("", kind=ErrorKind.UNKNOWN_OPERATION)
        try:
            params = orjson.loads(body := wire.body or b"{}")
        except orjson.JSONDecodeError:
            raise RequestError(
                "Start of structure or map found where not expected: the body is not JSON",
                kind=ErrorKind.MALFORMED_BODY,
            ) from None
        if not isinstance(params, dict):
            raise RequestError(
                "the request body must be a JSON object", kind=ErrorKind.MALFORMED_BODY
            )
        if too_deep(params, body):
            raise RequestError(
                f"the request body nests deeper than {MAX_DEPTH} levels",
                kind=ErrorKind.MALFORMED_BODY,
            )
        _check_versions(params)

        if operation == "ListSecrets":
            return Call(
                operation=operation,
                action=op.action,
                backend=self.backend,
                targets=(),
                request=self._request(op, operation, None, params),
                filter_results=True,
            )
        if operation == "BatchGetSecretValue":
            return self._parse_batch(op, params)

        assert op.id_field is not None
        secret_id = params.get(op.id_field)
        if not isinstance(secret_id, str) or not secret_id:
            raise RequestError(f"{op.id_field} is required and must be a non-empty string")
        _bounded(
            op.id_field, secret_id, 1, MAX_NAME_LENGTH if op.id_field == "Name" else MAX_ID_LENGTH
        )
        ref = SecretRef(self.backend, secret_id)
        return Call(
            operation=operation,
            action=op.action,
            backend=self.backend,
            targets=(ref,),
            request=self._request(op, operation, ref, params),
            version_stage=_version_stage(operation, params),
            cache_variant=_cache_variant(operation, params),
        )

    def _parse_batch(self, op: _Op, params: dict[str, Any]) -> Call:
        ids = params.get("SecretIdList")
        if ids is None:
            # Selected by Filters: the results are filtered one by one.
            return Call(
                operation="BatchGetSecretValue",
                action=op.action,
                backend=self.backend,
                targets=(),
                request=self._request(op, "BatchGetSecretValue", None, params),
                filter_results=True,
                version_stage="AWSCURRENT",  # a batch always reads the current versions
            )
        if not isinstance(ids, list) or not all(
            isinstance(i, str) and 0 < len(i) <= MAX_ID_LENGTH for i in ids
        ):
            raise RequestError(
                f"SecretIdList must be a list of secret names or ARNs (1 to {MAX_ID_LENGTH} "
                "characters each)"
            )
        if not 1 <= len(ids) <= BATCH_LIMIT:
            # The service's own limit; it also bounds the ARN lookups done before authorising.
            raise RequestError(f"SecretIdList must name 1 to {BATCH_LIMIT} secrets")
        if params.get("Filters") is not None:
            raise RequestError("Either SecretIdList or Filters must be given, not both")
        refs = tuple(dict.fromkeys(SecretRef(self.backend, i) for i in ids))
        return Call(
            operation="BatchGetSecretValue",
            action=op.action,
            backend=self.backend,
            targets=refs,
            request=self._request(op, "BatchGetSecretValue", None, params),
            filter_results=True,
            partial=True,
            version_stage="AWSCURRENT",  # a batch always reads the current versions
        )

    @staticmethod
    def _request(
        op: _Op, operation: str, ref: SecretRef | None, params: dict[str, Any]
    ) -> SecretRequest:
        version = params.get("VersionId") or params.get("VersionStage")
        return SecretRequest(
            action=op.action,
            ref=ref,
            operation=operation,
            params=params,
            version=version if isinstance(version, str) else None,
        )

    def narrow(self, call: Call, allowed: Set[SecretRef]) -> SecretRequest:
        ids = call.request.params.get("SecretIdList") or []
        keep = [i for i in ids if SecretRef(self.backend, i) in allowed]
        params = {**call.request.params, "SecretIdList": keep}
        return SecretRequest(action=call.action, ref=None, operation=call.operation, params=params)

    def address(self, call: Call, names: Mapping[SecretRef, SecretRef]) -> SecretRequest:
        target = call.single
        if target is None or "SecretId" not in call.request.params:
            return call.request
        name = names.get(target, target)
        if name == target:
            return call.request  # the common case: a name, not an ARN
        params = {**call.request.params, "SecretId": name.name}
        return replace(call.request, params=params)

    def empty_result(self, call: Call) -> SecretResult:
        return SecretResult(data={"SecretValues": [], "Errors": []})

    def item_errors(self, call: Call, result: SecretResult) -> list[tuple[SecretRef, str]]:
        if call.operation != "BatchGetSecretValue":
            return []
        return [
            (SecretRef(self.backend, e["SecretId"]), str(e.get("ErrorCode")))
            for e in result.data.get("Errors") or []
            if isinstance(e, Mapping) and isinstance(e.get("SecretId"), str)
        ]

    def render(
        self,
        call: Call,
        result: SecretResult,
        *,
        hidden: Set[SecretRef],
        denied: Set[SecretRef],
        request_id: str,
    ) -> WireResponse:
        data: Mapping[str, Any] = result.data
        if call.filter_results:
            data = self._filtered(call, data, hidden, denied)
        return WireResponse(
            status=200,
            body=orjson.dumps(data),
            headers={"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id},
        )

    def _filtered(
        self,
        call: Call,
        data: Mapping[str, Any],
        hidden: Set[SecretRef],
        denied: Set[SecretRef],
    ) -> dict[str, Any]:
        def visible(entry: Any, key: str) -> bool:
            # Fail closed: an entry we cannot name is an entry we cannot authorise.
            name = entry.get(key) if isinstance(entry, Mapping) else None
            return isinstance(name, str) and SecretRef(self.backend, name) not in hidden

        out = dict(data)
        list_key = "SecretList" if call.operation == "ListSecrets" else "SecretValues"
        if list_key in out:
            out[list_key] = [e for e in out[list_key] if visible(e, "Name")]
        if call.operation == "BatchGetSecretValue":
            ids = call.request.params.get("SecretIdList") or []
            errors = [e for e in out.get("Errors") or [] if visible(e, "SecretId")]
            for secret_id in ids:
                if SecretRef(self.backend, secret_id) in denied:
                    errors.append(
                        {
                            "SecretId": secret_id,
                            "ErrorCode": "AccessDeniedException",
                            "Message": "keyledger policy does not allow reading this secret",
                        }
                    )
            out["Errors"] = errors
        return out

    def render_error(self, error: ProxyError | BackendError, *, request_id: str) -> WireResponse:
        if isinstance(error, StoreCredentialsError):
            (status, code), message = _STORE_CREDENTIALS, error.message
        elif isinstance(error, BackendError):
            code = error.code or _BACKEND_CODES.get(error.kind, "InternalServiceError")
            status, message = error.status, error.message
        elif isinstance(error, ValidationError):
            status, code, message = 400, error.code, error.message
        elif isinstance(error, AccessDenied):
            status, code = _ERRORS[error.kind]
            why = (
                "with an explicit deny in a keyledger policy"
                if error.explicit
                else "because no keyledger policy allows it"
            )
            resource = error.ref.name if error.ref is not None else "*"
            message = (
                f"User: keyledger:{error.principal} is not authorized to perform: "
                f"secretsmanager:{error.operation} on resource: {resource} {why}"
            )
        else:
            status, code = _ERRORS[error.kind]
            message = error.message
        if error_kind_is_unknown_op(error):
            body: dict[str, str] = {"__type": "com.amazon.coral.service#UnknownOperationException"}
        else:
            body = {"__type": code, "message": message}
        return WireResponse(
            status=status,
            body=orjson.dumps(body),
            headers={
                "Content-Type": CONTENT_TYPE,
                "x-amzn-RequestId": request_id,
                "x-amzn-ErrorType": code,
            },
        )


def error_kind_is_unknown_op(error: ProxyError | BackendError) -> bool:
    return isinstance(error, ProxyError) and error.kind is ErrorKind.UNKNOWN_OPERATION


def _check_versions(params: Mapping[str, Any]) -> None:
    """The inputs naming a version are strings within the service model's bounds."""
    for field, (low, high) in _VERSION_FIELDS.items():
        value = params.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise RequestError(f"{field} must be a string", kind=ErrorKind.MALFORMED_BODY)
        _bounded(field, value, low, high)


def _cache_variant(operation: str, params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """A GetSecretValue's answer depends on the version id or stage it names (none: the
    current version, as AWSCURRENT)."""
    if operation != "GetSecretValue":
        return None
    version, stage = params.get("VersionId"), params.get("VersionStage")
    if version is None and stage is None:
        stage = "AWSCURRENT"
    return (str(version or ""), str(stage or ""))


def _version_stage(operation: str, params: Mapping[str, Any]) -> str | None:
    """The stage a call reads (GetSecretValue) or moves (UpdateSecretVersionStage).

    A read naming neither a stage nor a version id reads AWSCURRENT; one naming only a
    version id has no stage we can know without asking the store, so conditions on the
    stage do not hold for it.
    """
    stage = params.get("VersionStage")
    if isinstance(stage, str):
        return stage
    if operation == "GetSecretValue" and params.get("VersionId") is None:
        return "AWSCURRENT"
    return None
