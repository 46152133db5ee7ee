"""Caller authentication: who is calling, proven. One authenticator per scheme."""

from keyledger.proxy.auth.identities import IdentityError, IdentityStore, IssuedKey
from keyledger.proxy.auth.sigv4 import SigV4Authenticator

__all__ = ["IdentityError", "IdentityStore", "IssuedKey", "SigV4Authenticator"]
