"""The errors the stand-in answers with, named by their ``google.rpc.Code``.

::

    StandinError            code: Code (the gRPC name and the HTTP status Google maps it to)
    ├── NotFound            404 NOT_FOUND
    ├── AlreadyExists       409 ALREADY_EXISTS
    ├── InvalidArgument     400 INVALID_ARGUMENT
    ├── FailedPrecondition  400 FAILED_PRECONDITION
    ├── PermissionDenied    403 PERMISSION_DENIED
    ├── Unauthenticated     401 UNAUTHENTICATED
    └── Unimplemented       501 UNIMPLEMENTED

Each transport renders them once: REST as ``{"error": {"code", "message", "status"}}`` with
the HTTP status, gRPC as the status code of the same name.
"""

from __future__ import annotations

from keyledger.backends.gcp.codes import Code

__all__ = [
    "AlreadyExists",
    "Code",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "StandinError",
    "Unauthenticated",
    "Unimplemented",
]


class StandinError(Exception):
    """A request the stand-in refuses, as Secret Manager would."""

    code = Code.INVALID_ARGUMENT

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(StandinError):
    code = Code.NOT_FOUND


class AlreadyExists(StandinError):
    code = Code.ALREADY_EXISTS


class InvalidArgument(StandinError):
    code = Code.INVALID_ARGUMENT


class FailedPrecondition(StandinError):
    code = Code.FAILED_PRECONDITION


class PermissionDenied(StandinError):
    code = Code.PERMISSION_DENIED


class Unauthenticated(StandinError):
    code = Code.UNAUTHENTICATED


class Unimplemented(StandinError):
    code = Code.UNIMPLEMENTED
