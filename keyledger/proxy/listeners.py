"""The listening sockets of ``keyledger serve``, bound before anything else starts.

Binding first means a taken port (or an address that is not this machine's) fails in one
line, before the journal, the sinks or the embedded demo store have done anything that would
need undoing. Listening starts only when aiohttp starts a site on the socket, so nothing
connects to a proxy that is not ready yet.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ADMIN",
    "DATA",
    "DEV_ADMIN",
    "DEV_DATA",
    "GRPC",
    "ListenError",
    "Listener",
    "Listeners",
    "bind",
    "bind_listeners",
    "start_sites",
]


class ListenError(RuntimeError):
    """A socket could not be bound or listened on; the message names the fix."""


@dataclass(frozen=True, slots=True)
class Listener:
    """Which listener a socket is for, as an error about it names it and its fix."""

    what: str  # "" (the data plane) or "admin API: "
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


async def start_sites(
    runner: Any, sockets: list[socket.socket], context: ssl.SSLContext | None, role: Listener
) -> None:
    """Listen on ``sockets`` with aiohttp ``runner`` (set up already)."""
    from aiohttp import web

    for sock in sockets:
        host, port = sock.getsockname()[:2]
        try:
            await web.SockSite(runner, sock, ssl_context=context, backlog=1024).start()
        except OSError as exc:  # listen(): a second start-up won the race for the port
            raise role.error(host, port, exc) from exc


@dataclass(frozen=True, slots=True)
class Listeners:
    """The data plane's and the admin API's sockets, bound, not yet listening."""

    data: list[socket.socket]
    admin: list[socket.socket]

    @property
    def port(self) -> int:
        return int(self.data[0].getsockname()[1])

    @property
    def admin_port(self) -> int | None:
        return int(self.admin[0].getsockname()[1]) if self.admin else None

    def close(self) -> None:
        for sock in (*self.data, *self.admin):
            sock.close()


def bind_listeners(
    listen: tuple[str, int],
    admin: tuple[str, int] | None,
    *,
    reuse_port: bool = False,
    dev: bool = False,
) -> Listeners:
    """Both listeners' sockets, or ListenError with nothing left bound."""
    data = bind(*listen, DEV_DATA if dev else DATA, reuse_port=reuse_port)
    try:
        admin_sockets = [] if admin is None else bind(*admin, DEV_ADMIN if dev else ADMIN)
    except BaseException:
        for sock in data:
            sock.close()
        raise
    return Listeners(data, admin_sockets)
