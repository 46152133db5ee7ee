"""Resource names, and the translation between the projects callers see and the real ones.

Callers name secrets in their own project (``projects/{p}/secrets/{s}``, or regional
``projects/{p}/locations/{l}/secrets/{s}``); the store sees the real project. Google answers
with names in the project *number* even when asked by id, so an answer's names count as the
project asked about when they carry its id or a number: one request is about one project.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from keyledger.backends.errors import BackendUnavailable, InvalidBackendRequest

__all__ = ["Projects", "ResourceName", "Shape", "parse"]

Shape = Literal["project", "secret", "version"]

_NAME = re.compile(
    r"projects/(?P<project>[^/]+)(?P<location>/locations/[^/]+)?"
    r"(?:/secrets/(?P<secret>[^/]+)(?:/versions/(?P<version>[^/]+))?)?"
)


@dataclass(frozen=True, slots=True)
class ResourceName:
    project: str
    location: str  # "" or "/locations/{l}"
    secret: str | None = None
    version: str | None = None

    @property
    def shape(self) -> Shape:
        return "version" if self.version else "secret" if self.secret else "project"

    def in_project(self, project: str) -> ResourceName:
        return replace(self, project=project)

    def __str__(self) -> str:
        name = f"projects/{self.project}{self.location}"
        if self.secret is not None:
            name += f"/secrets/{self.secret}"
        if self.version is not None:
            name += f"/versions/{self.version}"
        return name


def parse(name: str) -> ResourceName | None:
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return ResourceName(
        match["project"], match["location"] or "", match["secret"], match["version"]
    )


class Projects:
    """The caller-visible projects and the real ones behind them (None: pass-through)."""

    def __init__(self, mapping: Mapping[str, str] | None) -> None:
        self._mapping = dict(mapping) if mapping is not None else None

    @property
    def first(self) -> tuple[str, str] | None:
        """The first mapped (caller, real) pair, for readiness; None when passing through."""
        if not self._mapping:
            return None
        return next(iter(self._mapping.items()))

    def real(self, caller: str) -> str:
        if self._mapping is None:
            return caller
        try:
            return self._mapping[caller]
        except KeyError:
            raise InvalidBackendRequest(
                f"project '{caller}' is not served here", code="INVALID_ARGUMENT", status=400
            ) from None

    @staticmethod
    def back(name: str, *, caller: str, real: str) -> str:
        """A name the store answered with, in the caller's project."""
        parsed = parse(name)
        if parsed is None or not (parsed.project == real or parsed.project.isdigit()):
            # The gateway relies on answers naming only what was asked about.
            raise BackendUnavailable(
                "Google Secret Manager answered with a name outside the project asked about",
                code="INTERNAL",
                status=502,
            )
        return str(parsed.in_project(caller))

    @staticmethod
    def back_in_text(text: str, *, caller: str, real: str) -> str:
        """A store message in the caller's project: the real one is not the caller's business."""
        pattern = rf"projects/(?:{re.escape(real)}|\d+)(?![A-Za-z0-9_.:-])"
        return re.sub(pattern, lambda _: f"projects/{caller}", text)
