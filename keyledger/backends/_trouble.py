"""Why a store cannot be used with keyledger's own credentials: said once, not per call.

A missing or refused credential fails every call until an operator fixes it; logging each
failure would bury the one line that says why. Each cause is logged once, and again only
after a call has succeeded in between.
"""

from __future__ import annotations

from typing import Any

from keyledger.backends.errors import StoreCredentialsError

__all__ = ["CredentialTrouble"]

# Causes remembered at most; a permission error's cause names its secret, so they are many.
_MAX_CAUSES = 256


class CredentialTrouble:
    def __init__(self, *, backend: str, log: Any) -> None:
        self._backend = backend
        self._log = log
        self._told: set[str] = set()

    def report(self, error: StoreCredentialsError, *, cause: str, why: str) -> None:
        """Log ``error`` and ``why``, unless ``cause`` was told since the last success."""
        if cause in self._told:
            return
        if len(self._told) >= _MAX_CAUSES:
            self._told.clear()
        self._told.add(cause)
        self._log.error(error.kind, backend=self._backend, error=error.message, why=why)

    def succeeded(self) -> None:
        """A call went through: a new failure is news worth logging."""
        if self._told:
            self._told.clear()
