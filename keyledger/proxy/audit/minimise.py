"""Data minimisation: record only the personal data the audit trail needs.

Applied to every event before it is sealed, so what was dropped was never written (the
policy engine has already seen the full request). See docs/audit.md for what SOC 2,
ISO 27001 and GDPR ask, and which setting fits which.

- ``user_agent: drop`` leaves ``request.user_agent`` null.
- ``source_ip: truncate`` keeps the network (IPv4 /24, IPv6 /48): "which office or
  subnet" survives, the host does not. ``pseudonymise`` replaces the address with a keyed
  HMAC: the same caller stays recognisable across events (and replicas sharing the key),
  but the address cannot be read back without the key. ``drop`` leaves it null.
- ``principal_attributes: [team, repo]`` keeps only the listed attributes (e.g. of OIDC
  claims, which can carry e-mail addresses); the default keeps all.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import Any

__all__ = ["IpHandling", "MinimiseConfig", "Minimiser"]


# What a failed sign-in presented, as AuthError.claimed names it (never the secret).
_CREDENTIAL_IDS = frozenset({"access_key_id", "token_id"})


class IpHandling(enum.StrEnum):
    KEEP = "keep"
    TRUNCATE = "truncate"
    PSEUDONYMISE = "pseudonymise"
    DROP = "drop"


@dataclass(frozen=True, slots=True, kw_only=True)
class MinimiseConfig:
    user_agent: bool = True  # keep it
    source_ip: IpHandling = IpHandling.KEEP
    principal_attributes: frozenset[str] | None = None  # None: keep all
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48

    @property
    def keeps_everything(self) -> bool:
        return (
            self.user_agent
            and self.source_ip is IpHandling.KEEP
            and self.principal_attributes is None
        )


@dataclass(frozen=True, slots=True)
class Minimiser:
    """Rewrites a record's personal fields as configured; a no-op when nothing is asked."""

    config: MinimiseConfig
    key: bytes = field(repr=False)  # for pseudonymised addresses

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        config = self.config
        request = record.get("request")
        if request is not None:
            if not config.user_agent:
                request["user_agent"] = None
            ip = request.get("source_ip")
            if ip is not None and config.source_ip is not IpHandling.KEEP:
                request["source_ip"] = self.source_ip(ip)
        principal = record.get("principal")
        if principal is not None and config.principal_attributes is not None:
            # The key or token id a failed sign-in tried is no personal data, and what an
            # investigation starts from.
            kept = config.principal_attributes | _CREDENTIAL_IDS
            principal["attributes"] = {
                k: v for k, v in principal.get("attributes", {}).items() if k in kept
            }
        return record

    def source_ip(self, text: str) -> str | None:
        handling = self.config.source_ip
        if handling is IpHandling.DROP:
            return None
        if handling is IpHandling.PSEUDONYMISE:
            # Domain-separated: the key may be shared with the value fingerprints.
            digest = hmac.new(self.key, b"source_ip\0" + text.encode(), hashlib.sha256)
            return "ip-hmac:" + digest.hexdigest()[:20]
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return None  # not an address (a unix socket peer): nothing to keep
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        prefix = self.config.ipv4_prefix if address.version == 4 else self.config.ipv6_prefix
        network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
        return str(network)
