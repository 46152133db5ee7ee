"""Errors a backend may raise. Vendor exceptions never cross the Backend Protocol.

::

    BackendError                 base; ``kind`` says what happened in neutral terms
    ├── SecretNotFound           the secret or version does not exist
    ├── InvalidBackendRequest    the store rejected the parameters
    ├── BackendConflict          exists already, scheduled for deletion, wrong state
    └── BackendUnavailable       the store could not be reached or timed out
        └── StoreCredentialsError    keyledger's *own* credentials for the store are
            ├── StoreCredentialsMissing      not there (nothing in boto3's chain)
            └── StoreCredentialsRefused      refused by the store

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
    "StoreCredentialsError",
    "StoreCredentialsMissing",
    "StoreCredentialsRefused",
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


class StoreCredentialsError(BackendUnavailable):
    """The store cannot be used with keyledger's own credentials (never the caller's).

    The caller did nothing wrong and no retry helps until an operator fixes keyledger's
    setup, so frontends render it as an error their SDKs do not retry. ``code`` stays None:
    the audit event records ``kind``, and the store's own code is in ``message``.
    """

    kind = "store_credentials"

    def __init__(self, message: str) -> None:
        super().__init__(message, code=None, status=400)


class StoreCredentialsMissing(StoreCredentialsError):
    kind = "store_credentials_missing"


class StoreCredentialsRefused(StoreCredentialsError):
    kind = "store_credentials_refused"
