"""The stand-in's one optional credential check: a fixed bearer token.

By default any caller is served (the clients send ``AnonymousCredentials``, i.e. no
``authorization`` header). Given a token, a call without one is UNAUTHENTICATED and a call
with another is PERMISSION_DENIED, which lets a backend's tests see the store refuse it.
"""

from __future__ import annotations

import hmac

from keyledger.backends.gcp_standin.errors import PermissionDenied, Unauthenticated

__all__ = ["check_bearer"]


def check_bearer(header: str | None, token: str | None) -> None:
    """Raise unless ``token`` is None or ``header`` is ``Bearer <token>``."""
    if token is None:
        return
    if not header:
        raise Unauthenticated(
            "Request is missing required authentication credential. Expected OAuth 2 access token."
        )
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise PermissionDenied("Permission denied: the caller's token is not the stand-in's.")
