"""Secret stores behind one small async Protocol. Never imports ``keyledger.proxy``."""

from keyledger.backends._base import Backend
from keyledger.backends._http import HttpReply, HttpTransport, HttpTransportError
from keyledger.backends.errors import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    InvalidBackendRequest,
    SecretNotFound,
)

__all__ = [
    "Backend",
    "BackendConflict",
    "BackendError",
    "BackendUnavailable",
    "HttpReply",
    "HttpTransport",
    "HttpTransportError",
    "InvalidBackendRequest",
    "SecretNotFound",
]
