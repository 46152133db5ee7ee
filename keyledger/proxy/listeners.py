"""The listening sockets of ``keyledger serve``, bound before anything else starts.

The data plane listens on ``listen`` (plain HTTP, or HTTPS when tls is set without
``tls.listen``) and, with ``tls.listen``, on an HTTPS address of its own beside it; the admin
API listens on a port of its own. Binding first means a taken port (or an address that is not
this machine's) fails in one line, before the journal, the sinks or the embedded demo store
have done anything that would need undoing. Listening starts only when aiohttp starts a site
on the socket, so nothing connects to a proxy that is not ready yet.
"""

from __future__ import annotations

import errno
import itertools
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyledger.proxy.connections import ConnectionGuard

__all__ = [
    "ADMIN",
    "DATA",
    "DEV_ADMIN",
    "DEV_DATA",
    "DEV_TLS",
    "GRPC",
    "TLS",
    "ListenError",
    "Listener",
    "Listeners",
    "bind",
    "bind_listeners",
    "probe",
    "start_sites",
    "url",
]


class ListenError(RuntimeError):
    """A socket could not be bound or listened on; the message names the fix."""


@dataclass(frozen=True, slots=True)
class Listener:
    """Which listener a socket is for, as an error about it names it and its fix."""

    what: str  # "" (the data plane), "HTTPS listener: ", "admin API: "...
    option: str | None  # the command-line option that moves it, if one does
    setting: str | None  # the config setting that moves it; None under --dev

    def error(self, host: str, port: int | str, exc: OSError) -> ListenError:
        ways = [f"{self.option} HOST:PORT"] if self.option else []
        ways += [f"set {self.setting}"] if self.setting else []
        choose = "with " + ", or ".join(ways)
        if exc.errno == errno.EADDRINUSE:
            fix = f"is another keyledger running? Choose another port {choose}"
        elif exc.errno == errno.EADDRNOTAVAIL:
            fix = f"{host} is not an address of this machine: choose one {choose}"
        elif exc.errno == errno.EACCES:
            fix = f"ports below 1024 need privileges: choose another {choose}"
        else:
            fix = f"choose another address {choose}"
        reason = exc.strerror or str(exc)
        return ListenError(f"{self.what}cannot listen on {host}:{port}: {reason} ({fix})")


DATA = Listener("", "--listen", "listen")
ADMIN = Listener("admin API: ", "--admin-listen", "admin.listen")
DEV_DATA = Listener("", "--listen", None)
DEV_ADMIN = Listener("admin API: ", "--admin-listen", None)
TLS = Listener("HTTPS listener: ", None, "tls.listen")
DEV_TLS = Listener("HTTPS listener: ", "--tls-listen", None)
GRPC = Listener("gRPC API: ", None, "frontends.gcp.grpc_listen")


def bind(host: str, port: int, role: Listener, *, reuse_port: bool = False) -> list[socket.socket]:
    """Sockets bound to ``host:port`` (one per address it resolves to), not yet listening.

    SO_REUSEADDR and IPV6_V6ONLY as asyncio sets them; SO_REUSEPORT for ``--workers``.
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise role.error(host, port, exc) from exc
    bound: list[socket.socket] = []
    try:
        # "localhost" may resolve to ::1 and 127.0.0.1, each more than once.
        unique = {(info[0], info[4]): info for info in infos}.values()
        for family, kind, proto, _, address in unique:
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError as exc:
        for sock in bound:
            sock.close()
        raise role.error(host, port, exc) from exc
    return bound


def probe(host: str, port: int, role: Listener, *, reuse_port: bool = False) -> None:
    """ListenError now if ``host:port`` is taken, for a listener bound later by someone else
    (gRPC's server, ``--workers``' processes); nothing is left bound."""
    for sock in bind(host, port, role, reuse_port=reuse_port):
        sock.close()


def url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def start_sites(
    runner: Any,
    sockets: list[socket.socket],
    context: ssl.SSLContext | None,
    role: Listener,
    guard: ConnectionGuard | None = None,
) -> None:
    """Listen on ``sockets`` with aiohttp ``runner`` (set up already), behind ``guard``
    (the data plane's bounds on connections) when given."""
    from aiohttp import web

    from keyledger.proxy.connections import GuardedSite

    for sock in sockets:
        host, port = sock.getsockname()[:2]
        site = (
            web.SockSite(runner, sock, ssl_context=context, backlog=1024)
            if guard is None
            else GuardedSite(runner, sock, guard, ssl_context=context, backlog=1024)
        )
        try:
            await site.start()
        except OSError as exc:  # listen(): a second start-up won the race for the port
            raise role.error(host, port, exc) from exc


@dataclass(frozen=True, slots=True)
class Listeners:
    """The data plane's, its HTTPS listener's and the admin API's sockets, bound, not yet
    listening (``tls`` and ``admin`` empty when there is none)."""

    data: list[socket.socket]
    admin: list[socket.socket]
    tls: list[socket.socket] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.data[0].getsockname()[1])

    @property
    def admin_port(self) -> int | None:
        return int(self.admin[0].getsockname()[1]) if self.admin else None

    @property
    def tls_port(self) -> int | None:
        """The HTTPS listener's port (the real one when 0 was asked for)."""
        return int(self.tls[0].getsockname()[1]) if self.tls else None

    def close(self) -> None:
        for sock in (*self.data, *self.tls, *self.admin):
            sock.close()


def bind_listeners(
    listen: tuple[str, int],
    admin: tuple[str, int] | None,
    tls: tuple[str, int] | None = None,
    *,
    reuse_port: bool = False,
    dev: bool = False,
) -> Listeners:
    """Every listener's sockets, or ListenError with nothing left bound.

    ``reuse_port`` (``--workers``) for the data plane's ports; the admin port is never shared.
    """
    bound: list[list[socket.socket]] = []
    try:
        for address, role, shared in (
            (listen, DEV_DATA if dev else DATA, reuse_port),
            (tls, DEV_TLS if dev else TLS, reuse_port),
            (admin, DEV_ADMIN if dev else ADMIN, False),
        ):
            bound.append([] if address is None else bind(*address, role, reuse_port=shared))
    except BaseException:
        for sock in itertools.chain.from_iterable(bound):
            sock.close()
        raise
    data, tls_sockets, admin_sockets = bound
    return Listeners(data, admin_sockets, tls_sockets)
