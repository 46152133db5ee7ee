"""Key Vault's challenge authentication, as far as a stand-in needs it.

Key Vault clients send their first request without a token (and without its body) to learn
where to get one: the 401 answer's ``WWW-Authenticate: Bearer authorization="<authority>",
resource="<resource>"`` names the authority (its path is the tenant) and the token's
audience. Every 401 carries that challenge, so a client whose token was refused can ask
again. No token is validated as a JWT: any bearer token is accepted, or only ``token`` when
one is set.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from keyledger.backends.azure_standin.errors import Unauthorized

__all__ = ["DEFAULT_AUTHORITY", "DEFAULT_RESOURCE", "Challenge"]

DEFAULT_AUTHORITY = "https://login.microsoftonline.com/keyledger-standin"
DEFAULT_RESOURCE = "https://vault.azure.net"


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    authority: str = DEFAULT_AUTHORITY
    resource: str = DEFAULT_RESOURCE
    token: str | None = field(default=None, repr=False)

    @property
    def header(self) -> str:
        """The ``WWW-Authenticate`` value every 401 carries."""
        return f'Bearer authorization="{self.authority}", resource="{self.resource}"'

    def check(self, authorization: str | None) -> None:
        """Raise :class:`Unauthorized` unless ``authorization`` is an acceptable bearer token."""
        scheme, _, given = (authorization or "").strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            # Key Vault's answer to a request without a token, and the SDK's cue to get one.
            raise Unauthorized("AKV10000: Request is missing a Bearer or PoP token.")
        if self.token is not None and not hmac.compare_digest(given.encode(), self.token.encode()):
            # Key Vault's answer to a bearer token it cannot read.
            raise Unauthorized("[BearerReadAccessTokenFailed] Error validating token: 'S2S12005'.")
