"""keyledger's own Azure credential (never a caller's), as the settings name it."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken

__all__ = ["STANDIN_TOKEN", "make_credential", "scope_for"]

# What keyledger shows a stand-in vault: any token will do, but it must be one.
STANDIN_TOKEN = "keyledger-standin"  # noqa: S105 (not a secret)

# Key Vault's resource in each Azure cloud, by the vault host's suffix.
_RESOURCES = {
    ".vault.azure.net": "https://vault.azure.net",
    ".vault.azure.cn": "https://vault.azure.cn",
    ".vault.usgovcloudapi.net": "https://vault.usgovcloudapi.net",
    ".vault.microsoftazure.de": "https://vault.microsoftazure.de",
    ".managedhsm.azure.net": "https://managedhsm.azure.net",
}


class StandinCredential:
    """An async token credential with a fixed token, for a stand-in vault on loopback."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(STANDIN_TOKEN, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StandinCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def make_credential(kind: str, *, client_id: str | None) -> Any:
    """An azure-identity async credential: ``default`` is DefaultAzureCredential (the
    environment's service principal, workload identity, managed identity, the Azure CLI);
    the others are one member of that chain."""
    from azure.identity import aio

    if kind == "standin":
        return StandinCredential()
    if kind == "environment":
        return aio.EnvironmentCredential()
    if kind == "workload_identity":
        return (
            aio.WorkloadIdentityCredential(client_id=client_id)
            if client_id
            else (aio.WorkloadIdentityCredential())
        )
    if kind == "managed_identity":
        return aio.ManagedIdentityCredential(client_id=client_id)
    return aio.DefaultAzureCredential(managed_identity_client_id=client_id)


def scope_for(vault_url: str) -> str:
    """The token scope for a vault (what its challenge would name), by its host's cloud."""
    host = (urlsplit(vault_url).hostname or "").lower()
    for suffix, resource in _RESOURCES.items():
        if host.endswith(suffix):
            return f"{resource}/.default"
    return "https://vault.azure.net/.default"
