"""Trusted OIDC issuers: their settings and the presets that fill them in. Plain data,
read by the config and used by :mod:`keyledger.proxy.auth.oidc`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHMS", "PRESETS", "IssuerSettings"]

# Asymmetric algorithms only: with HS*, the issuer's *public* key would verify an HMAC any
# caller can compute.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")

# What each preset fills in; the config names the issuer where it varies (Kubernetes,
# Entra's tenant) and always the audiences.
PRESETS: Mapping[str, Mapping[str, Any]] = {
    # GitHub's sub: repo:OWNER/REPO:environment:NAME or repo:OWNER/REPO:ref:REF.
    "github-actions": {
        "issuer": "https://token.actions.githubusercontent.com",
        "principal": "{sub}",
        "attributes": {
            name: name
            for name in (
                "repository",
                "repository_owner",
                "ref",
                "environment",
                "workflow_ref",
                "job_workflow_ref",
            )
        },
    },
    # GitLab's sub: project_path:GROUP/PROJECT:ref_type:branch:ref:NAME.
    "gitlab": {
        "issuer": "https://gitlab.com",
        "principal": "{sub}",
        "attributes": {
            name: name
            for name in (
                "namespace_path",
                "project_path",
                "ref",
                "ref_type",
                "environment",
                "pipeline_source",
            )
        },
    },
    # A projected service-account token: sub system:serviceaccount:NS:NAME.
    "kubernetes": {
        "principal": "{sub}",
        "attributes": {
            "namespace": "kubernetes.io/namespace",
            "service_account": "kubernetes.io/serviceaccount/name",
            "pod": "kubernetes.io/pod/name",
        },
    },
    "google": {
        "issuer": "https://accounts.google.com",
        "principal": "{email}",
        "attributes": {"email": "email", "azp": "azp"},
    },
    # Entra (v2 tokens): iss https://login.microsoftonline.com/TENANT/v2.0.
    "entra": {
        "principal": "{oid}",
        "attributes": {"tenant": "tid", "oid": "oid", "azp": "azp", "appid": "appid"},
    },
}


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuerSettings:
    """One trusted issuer. ``principal`` is a template over claims (``{sub}``); claim paths
    in it and in ``attributes`` go down nested objects with ``/``
    (``kubernetes.io/namespace``)."""

    name: str  # as events and errors name it
    issuer: str
    audiences: tuple[str, ...]
    principal: str = "{sub}"
    attributes: Mapping[str, str] = field(default_factory=dict)  # attribute: claim path
    # Every caller from this issuer is in ``groups`` (bind roles to them), and in those a
    # claim lists, when ``groups_claim`` names one.
    groups: tuple[str, ...] = ()
    groups_claim: str | None = None
    jwks_url: str | None = None  # None: from the issuer's discovery document
    jwks_file: Path | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS

    def __post_init__(self) -> None:
        if not self.audiences:
            raise ValueError(f"issuer {self.name}: list the audiences tokens must carry")
        unsafe = [a for a in self.algorithms if a not in ALGORITHMS]
        if unsafe:
            raise ValueError(
                f"issuer {self.name}: algorithm {unsafe[0]} is not allowed "
                f"(only {', '.join(ALGORITHMS)})"
            )
