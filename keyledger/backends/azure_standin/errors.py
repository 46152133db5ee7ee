"""The refusals the stand-in answers with, worded as Key Vault words them.

::

    StandinError            status, code (Key Vault's error code), inner (its innererror code)
    ├── BadParameter        400 BadParameter
    │   └── InvalidName     400 BadParameter  "The request URI contains an invalid name: ..."
    ├── MalformedBackup     400 "Malformed backup blob"
    ├── Unauthorized        401 Unauthorized  (answered with the WWW-Authenticate challenge)
    ├── SecretDisabled      403 Forbidden / SecretDisabled
    ├── SecretNotFound      404 SecretNotFound
    ├── DeletedSecretNotFound  404 SecretNotFound  "Deleted Secret not found: ..."
    ├── NoSuchRoute         404 NotFound
    ├── MethodNotAllowed    405 MethodNotAllowed
    ├── Conflict            409 Conflict
    │   └── DeletedButRecoverable  409 Conflict / ObjectIsDeletedButRecoverable
    └── BodyTooLarge        413 RequestEntityTooLarge

The server renders each once, as ``{"error": {"code", "message"[, "innererror": {"code"}]}}``
with ``status``. Where a wording below is Key Vault's own, it was read from the service's
recorded answers (the azure-sdk-for-js Key Vault recordings); the others are marked as the
stand-in's.
"""

from __future__ import annotations

__all__ = [
    "BadParameter",
    "BodyTooLarge",
    "Conflict",
    "DeletedButRecoverable",
    "DeletedSecretNotFound",
    "InvalidName",
    "MalformedBackup",
    "MethodNotAllowed",
    "NoSuchRoute",
    "SecretDisabled",
    "SecretNotFound",
    "StandinError",
    "Unauthorized",
]


class StandinError(Exception):
    """A request the stand-in refuses, as Key Vault would."""

    status = 400
    code = "BadParameter"
    inner: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadParameter(StandinError):
    pass


class InvalidName(BadParameter):
    def __init__(self, name: str) -> None:
        super().__init__(f"The request URI contains an invalid name: {name}")


class MalformedBackup(StandinError):
    code = "Malformed backup blob"  # sic: Key Vault's code has spaces

    def __init__(self) -> None:
        super().__init__("Backup blob contains invalid or corrupt version.")


class Unauthorized(StandinError):
    status = 401
    code = "Unauthorized"


class SecretDisabled(StandinError):
    status = 403
    code = "Forbidden"
    inner = "SecretDisabled"

    def __init__(self) -> None:
        super().__init__("Operation get is not allowed on a disabled secret.")


class SecretNotFound(StandinError):
    status = 404
    code = "SecretNotFound"

    def __init__(self, name: str, version: str | None = None) -> None:
        ident = f"{name}/{version}" if version else name
        super().__init__(
            f"A secret with (name/id) {ident} was not found in this key vault. If you recently"
            " deleted this secret you may be able to recover it using the correct recovery"
            " command. For help resolving this issue, please see"
            " https://go.microsoft.com/fwlink/?linkid=2125182"
        )


class DeletedSecretNotFound(StandinError):
    status = 404
    code = "SecretNotFound"

    def __init__(self, name: str) -> None:
        super().__init__(f"Deleted Secret not found: {name}")


class NoSuchRoute(StandinError):
    """The stand-in's wording: no Key Vault secrets operation has this path."""

    status = 404
    code = "NotFound"


class MethodNotAllowed(StandinError):
    """The stand-in's wording: the path exists, not for this method."""

    status = 405
    code = "MethodNotAllowed"


class Conflict(StandinError):
    status = 409
    code = "Conflict"


class DeletedButRecoverable(Conflict):
    inner = "ObjectIsDeletedButRecoverable"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Secret {name} is currently in a deleted but recoverable state, and its name cannot"
            " be reused; in this state, the secret can only be recovered or purged."
        )


class BodyTooLarge(StandinError):
    """The stand-in's wording: a request body past the stand-in's bound."""

    status = 413
    code = "RequestEntityTooLarge"
