"""Caller authentication: who is calling, proven. One authenticator per scheme."""

from keyledger.proxy.auth.bearer import BearerAuthenticator
from keyledger.proxy.auth.identities import (
    IdentityError,
    IdentityStore,
    IssuedKey,
    IssuedToken,
    StoreFollower,
    Token,
)
from keyledger.proxy.auth.sigv4 import SigV4Authenticator

__all__ = [
    "BearerAuthenticator",
    "IdentityError",
    "IdentityStore",
    "IssuedKey",
    "IssuedToken",
    "SigV4Authenticator",
    "StoreFollower",
    "Token",
]
