"""The GCP backend's settings, and where its endpoint may be spoken to in plaintext."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_ENDPOINT", "GcpSettings", "is_loopback", "split_endpoint"]

DEFAULT_ENDPOINT = "secretmanager.googleapis.com:443"


@dataclass(frozen=True, slots=True, kw_only=True)
class GcpSettings:
    """One Google Secret Manager backend.

    ``projects`` maps the projects callers name to the real ones behind them; ``None`` passes
    every project through as named. ``credentials`` is ``"default"`` (Google's chain:
    ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's ADC file, the metadata server) or
    ``"anonymous"`` (no credentials, for a stand-in on loopback only).
    """

    name: str = "gcp"
    endpoint: str | None = None  # "host:port" for gRPC; None: Google's own
    projects: Mapping[str, str] | None = None
    credentials: Literal["default", "anonymous"] = "default"
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.credentials not in ("default", "anonymous"):
            raise ValueError(
                f"backend '{self.name}': credentials must be 'default' or 'anonymous', "
                f"not {self.credentials!r}"
            )
        host, _ = split_endpoint(self.endpoint or DEFAULT_ENDPOINT)
        if self.credentials == "anonymous" and not is_loopback(host):
            raise ValueError(
                f"backend '{self.name}': credentials 'anonymous' is for a stand-in on loopback "
                f"only, and {self.endpoint or DEFAULT_ENDPOINT!r} is not loopback: use "
                "credentials 'default'"
            )
        if self.projects is not None and not self.projects:
            raise ValueError(
                f"backend '{self.name}': projects is empty; map at least one project, or "
                "leave it out to pass projects through"
            )
        if not self.timeout_s > 0:
            raise ValueError(f"backend '{self.name}': timeout_s must be positive")


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; port 443 when left out) as host and port."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or (host.count(":") and not host.startswith("[")):
        # No port, or a bare IPv6 address.
        host, port = endpoint, "443"
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    return host, int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
