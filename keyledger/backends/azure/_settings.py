"""The Azure backend's settings."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["CREDENTIALS", "AzureSettings", "is_loopback_url"]

# How keyledger gets its own Azure credentials: azure-identity's DefaultAzureCredential, one
# member of its chain, or a fixed token for a stand-in on loopback.
CREDENTIALS = ("default", "environment", "workload_identity", "managed_identity", "standin")


@dataclass(frozen=True, slots=True, kw_only=True)
class AzureSettings:
    """One Azure backend: the Key Vaults it serves, by the names policies use for them
    (``{"payments": "https://acme-payments.vault.azure.net"}``), and how it signs in."""

    name: str = "azure"
    vaults: Mapping[str, str]
    credentials: str = "default"
    client_id: str | None = None  # a user-assigned managed identity's client id
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.vaults:
            raise ValueError(f"backend '{self.name}': no vaults")
        if self.credentials not in CREDENTIALS:
            raise ValueError(
                f"backend '{self.name}': credentials must be one of {', '.join(CREDENTIALS)}"
            )
        for vault, url in self.vaults.items():
            if urlsplit(url).scheme != "https":
                raise ValueError(f"backend '{self.name}': vault {vault}: {url} is not https://")
            if self.credentials == "standin" and not is_loopback_url(url):
                raise ValueError(
                    f"backend '{self.name}': credentials 'standin' is for a stand-in on "
                    f"loopback only, and vault {vault} is at {url}"
                )
        if not self.timeout_s > 0:
            raise ValueError(f"backend '{self.name}': timeout_s must be positive")


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
