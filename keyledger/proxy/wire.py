"""The seams between the HTTP server, frontends, authenticators and the request path.

Frontends and authenticators see a :class:`WireRequest` (already read, size-bounded) and
produce plain values, so they are testable without a server and free of aiohttp.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Protocol

from keyledger.backends import BackendError
from keyledger.model import Action, Principal, SecretRef, SecretRequest, SecretResult
from keyledger.proxy.audit.events import GeoInfo, RequestInfo
from keyledger.proxy.errors import ProxyError

__all__ = [
    "AuthEndpoint",
    "Authenticator",
    "Call",
    "Frontend",
    "FrontendDefaults",
    "WireRequest",
    "WireResponse",
    "caller_text",
]


def caller_text(value: str | None, *, limit: int) -> str | None:
    """Text a caller sent (a header), made safe to record: valid UTF-8, bounded length.

    HTTP headers may carry bytes that are not UTF-8; copied raw into an event they would
    make it unserialisable, and so unrecordable.
    """
    if value is None:
        return None
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:limit]


@dataclass(frozen=True, slots=True, kw_only=True)
class WireRequest:
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]  # lower-case names
    body: bytes = field(repr=False)
    source_ip: str | None
    user_agent: str | None
    request_id: str
    # How the caller reached keyledger ("https" on a TLS listener): what the URLs an answer
    # names (Key Vault's ids) are written with.
    scheme: str = "http"
    # The client's TLS certificate (DER), when the listener asked for one and it was sent:
    # room for mTLS identities.
    peer_certificate: bytes | None = field(default=None, repr=False)

    def audited_as(
        self, protocol: str, operation: str, locate: Locate | None = None
    ) -> RequestInfo:
        """This request as its audit events name it; ``locate`` (GeoIP, when configured)
        says where its source address is."""
        source = self.source_ip
        return RequestInfo(
            id=self.request_id,
            protocol=protocol,
            operation=operation,
            source_ip=source,
            user_agent=self.user_agent,
            geo=locate(source) if locate is not None and source else None,
        )


# Where a source address is (the GeoIP databases' lookup).
Locate = Callable[[str], GeoInfo | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class WireResponse:
    status: int
    body: bytes = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """A parsed request, in canonical terms.

    ``targets`` are the secrets the caller named (each authorised on its own). A listing
    names none; its results are filtered one by one when ``filter_results`` is set.
    """

    operation: str
    action: Action
    backend: str
    targets: tuple[SecretRef, ...]
    request: SecretRequest
    filter_results: bool = False
    # True when the call can execute with only some targets allowed (batch reads).
    partial: bool = False
    # The version stage the call reads or moves, when the protocol has stages (AWS); a
    # policy can condition on it (request.version_stage).
    version_stage: str | None = None
    # How the caller asked for the answer to be written, in its protocol's own terms (Google
    # REST's enum encoding): a frontend keeps nothing between parse and render.
    rendering: Mapping[str, str] = field(default_factory=dict)
    # For a read of one secret's value that the cache may answer: what the store's answer
    # depends on besides the secret (the version or stage asked for, the URL the answer's
    # ids are written with). None: never answered from the cache.
    cache_variant: tuple[str, ...] | None = None

    @property
    def single(self) -> SecretRef | None:
        """The one secret this call names, if it names exactly one."""
        return self.targets[0] if len(self.targets) == 1 else None


class FrontendDefaults:
    """The hooks of :class:`Frontend` most protocols answer alike: no authentication
    handshake, and calls that name one secret or none (only AWS has batch reads to narrow
    and per-secret errors inside a success). A frontend overrides what its protocol has."""

    def challenge(self, wire: WireRequest) -> WireResponse | None:
        return None  # no handshake: every request carries its credentials

    def narrow(self, call: Call, allowed: Set[SecretRef]) -> SecretRequest:
        return call.request  # one secret or none: never a partial call to narrow

    def address(self, call: Call, names: Mapping[SecretRef, SecretRef]) -> SecretRequest:
        return call.request  # a secret has one name: no alias to replace

    def item_errors(self, call: Call, result: SecretResult) -> list[tuple[SecretRef, str]]:
        return []


class Frontend(Protocol):
    """Translate one cloud's wire protocol; do no I/O."""

    protocol: str

    @property
    def operations(self) -> Set[str]:
        """Every operation it serves (a small set: each may be a metric label)."""
        ...

    def parse(self, wire: WireRequest) -> Call:
        """Raise :class:`~keyledger.proxy.errors.RequestError` on anything unusable."""
        ...

    def operation_name(self, wire: WireRequest) -> str:
        """The operation named on the wire, best effort, for audit of failed calls."""
        ...

    def challenge(self, wire: WireRequest) -> WireResponse | None:
        """The answer to a request that starts an authentication handshake (Key Vault's
        clients first send one without credentials, to learn where to get a token), or
        None to authenticate it. A challenge is not a failed authentication: not audited.
        """
        ...

    def narrow(self, call: Call, allowed: Set[SecretRef]) -> SecretRequest:
        """The backend request for only the ``allowed`` targets (batch reads)."""
        ...

    def address(self, call: Call, names: Mapping[SecretRef, SecretRef]) -> SecretRequest:
        """The backend request naming its secret as policy authorised it (``names``: each
        target as the caller wrote it -> its name in the store), so that the store acts on
        that secret and no other, whatever an alias would stand for by the time it arrives.
        """
        ...

    def empty_result(self, call: Call) -> SecretResult:
        """A successful answer with no secrets in it (a batch where all were denied)."""
        ...

    def item_errors(self, call: Call, result: SecretResult) -> Sequence[tuple[SecretRef, str]]:
        """Secrets the store reported as failed inside a successful batch answer."""
        ...

    def render(
        self,
        call: Call,
        result: SecretResult,
        *,
        hidden: Set[SecretRef],
        denied: Set[SecretRef],
        request_id: str,
    ) -> WireResponse:
        """The success response, without ``hidden`` items and reporting ``denied`` targets."""
        ...

    def render_error(
        self, error: ProxyError | BackendError, *, request_id: str
    ) -> WireResponse: ...


class Authenticator(Protocol):
    method: str

    async def authenticate(self, wire: WireRequest) -> Principal:
        """Return the caller or raise :class:`~keyledger.proxy.errors.AuthError`.

        Asynchronous because some proofs need I/O (a token issuer's key set, a revocation
        list); one that needs none, like SigV4, simply never awaits.
        """
        ...

    async def screen(self, head: WireRequest) -> None:
        """Raise :class:`~keyledger.proxy.errors.AuthError` if the headers alone show that
        :meth:`authenticate` will fail (``head`` has no body yet): keyledger then never
        reads, or waits for, the body of a caller it cannot authenticate."""
        ...


class AuthEndpoint(Protocol):
    """Where a caller trades one credential for another (STS, OAuth token exchange):
    answered beside a protocol's requests, on the same listener, and audited by itself."""

    def matches(self, wire: WireRequest) -> bool:
        """This request is for the endpoint, not for the protocol's gateway."""
        ...

    async def handle(self, wire: WireRequest) -> WireResponse: ...
