"""Errors a backend may raise. Vendor exceptions never cross the Backend Protocol.

::

    BackendError                 base; ``kind`` says what happened in neutral terms
    ├── SecretNotFound           the secret or version does not exist
    ├── InvalidBackendRequest    the store rejected the parameters
    ├── BackendConflict          exists already, scheduled for deletion, wrong state
    └── BackendUnavailable       the store could not be reached or timed out

``code`` keeps the store's own error code (``ResourceNotFoundException``) so a frontend
for the same cloud can render it verbatim; ``message`` is the store's text, which never
contains a secret value.
"""

from __future__ import annotations

__all__ = [
    "BackendConflict",
    "BackendError",
    "BackendUnavailable",
    "InvalidBackendRequest",
    "SecretNotFound",
]


class BackendError(Exception):
    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int = 400,
        names: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        # For an alias that could not be resolved: the names it may stand for. The proxy
        # shows this error only to a caller allowed on one of them.
        self.names = names


class SecretNotFound(BackendError):
    kind = "not_found"


class InvalidBackendRequest(BackendError):
    kind = "invalid_request"


class BackendConflict(BackendError):
    kind = "conflict"


class BackendUnavailable(BackendError):
    kind = "unavailable"

    def __init__(self, message: str, *, code: str | None = None, status: int = 503) -> None:
        super().__init__(message, code=code, status=status)
