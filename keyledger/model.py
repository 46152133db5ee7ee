"""The canonical request and result types that every layer shares.

A frontend turns a wire request into a :class:`SecretRequest`; the policy engine decides
on its :class:`Action` and :class:`SecretRef`; a backend executes it and answers with a
:class:`SecretResult`. None of these types ever hold a secret value except
``SecretResult.value``, which only the frontend reads (to render) and the audit layer reads
(to fingerprint) -- it is never serialised anywhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Action", "Principal", "SecretItem", "SecretRef", "SecretRequest", "SecretResult"]


class Action(enum.StrEnum):
    """What a call does to a secret, in the vocabulary policies are written in."""

    READ = "read"
    DESCRIBE = "describe"
    LIST = "list"
    WRITE = "write"
    ROTATE = "rotate"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A secret as policies name it: ``backend:name`` (``aws:prod/db/password``).

    A name ending in ``/*`` stands for every secret under that prefix, for a call that
    may touch any of them (a Key Vault restore): no store allows ``*`` in a name.
    """

    backend: str
    name: str

    @property
    def under(self) -> str | None:
        """For ``vault/*``, the prefix ``vault/`` every secret it stands for starts with."""
        return self.name[:-1] if self.name.endswith("/*") else None

    def __str__(self) -> str:
        return f"{self.backend}:{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """An authenticated caller."""

    id: str
    auth_method: str
    groups: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretRequest:
    """One backend call, already authorised.

    ``operation`` and ``params`` stay in the backend's native vocabulary (for AWS, the
    Secrets Manager operation name and its JSON input) so responses round-trip exactly;
    ``action`` and ``ref`` are the canonical view that policy and audit reason about.
    """

    action: Action
    ref: SecretRef | None
    operation: str
    # May carry a value being written (SecretString): never in a repr, so never in a log.
    params: Mapping[str, Any] = field(repr=False)
    version: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretItem:
    """One secret named in a backend's answer, and its value if the answer carries one."""

    ref: SecretRef
    version_id: str | None = None
    # Used only to compute the audit fingerprint; never serialised.
    value: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretResult:
    """A backend's answer: the native response body plus the secrets it names.

    ``items`` lets the proxy filter a listing or a batch by policy and fingerprint every
    served value without knowing the store's response shape.
    """

    data: Mapping[str, Any] = field(repr=False)
    items: tuple[SecretItem, ...] = ()
