"""The one contract every secret store implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from keyledger.model import SecretRef, SecretRequest, SecretResult

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A secret store. Implementations map their vendor errors to ``BackendError``."""

    name: str

    async def start(self) -> None:
        """Open connections; called once before the first request."""

    async def close(self) -> None:
        """Release connections; called once at shutdown."""

    async def resolve(self, ref: SecretRef) -> SecretRef:
        """The store's own name for a secret given by an alias (an ARN, a resource path).

        Policies are written against names, so an alias is resolved before authorisation;
        plain names come back unchanged without any I/O.
        """
        ...

    async def call(self, request: SecretRequest) -> SecretResult:
        """Execute one authorised request."""
        ...

    async def check(self) -> None:
        """Raise ``BackendError`` if the store cannot be reached (readiness)."""
