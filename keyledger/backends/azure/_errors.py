"""Key Vault's error answers as :mod:`keyledger.backends.errors` kinds.

``code`` keeps Key Vault's own error code (``SecretNotFound``) and ``status`` its HTTP
status, so the Azure front end renders the error as the vault gave it. What says that
keyledger's *own* identity may not use the vault (401, or a 403 that is not about the
secret's state) is a :class:`StoreCredentialsRefused`: the caller did nothing wrong.
"""

from __future__ import annotations

from typing import Any

from keyledger.backends.errors import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    SecretNotFound,
    StoreCredentialsRefused,
)

__all__ = ["error_parts", "map_error"]

# A 403 about the secret itself, not about who asks: the caller's to know.
_SECRET_STATE = frozenset({"SecretDisabled", "SecretNotYetValid", "SecretExpired"})


def error_parts(body: Any) -> tuple[str | None, str | None, str]:
    """Key Vault's ``{"error": {"code", "message", "innererror": {"code"}}}``, as
    (code, inner code, message); missing parts are None or ""."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, ""
    inner = error.get("innererror")
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    code = error.get("code")
    message = error.get("message")
    return (
        code if isinstance(code, str) else None,
        inner_code if isinstance(inner_code, str) else None,
        message if isinstance(message, str) else "",
    )


def map_error(status: int, code: str | None, inner: str | None, message: str) -> BackendError:
    code = code or {404: "NotFound", 409: "Conflict", 429: "Throttled"}.get(status)
    if status == 401 or (status == 403 and inner not in _SECRET_STATE):
        return StoreCredentialsRefused(
            f"Azure Key Vault refused keyledger's own identity ({status} {code}): "
            "grant it access to the vault (Key Vault Secrets Officer, or an access policy)"
        )
    if status == 404:
        return SecretNotFound(message, code=code, status=404)
    if status == 409:
        return BackendConflict(message, code=code, status=409)
    if status == 429 or status >= 500:
        return BackendUnavailable(message, code=code, status=status)
    if status == 400:
        return InvalidBackendRequest(message, code=code, status=400)
    return BackendError(message, code=code, status=status)
