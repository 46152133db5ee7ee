"""keyledger.proxy.listeners: every port bound before anything starts, on real sockets."""

from __future__ import annotations

import socket

import pytest

from keyledger.proxy import listeners
from keyledger.proxy.listeners import ListenError, bind_listeners

LOOPBACK_ANY = ("127.0.0.1", 0)


def taken() -> socket.socket:
    """A loopback port another program listens on."""
    sock = socket.socket()
    sock.bind(LOOPBACK_ANY)
    sock.listen()
    return sock


def free(port: int) -> bool:
    """Nothing of ours is left bound on ``port``."""
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


class TestBindListeners:
    def test_the_https_listener_is_bound_beside_the_plain_one(self) -> None:
        """With a tls address, its sockets are bound too, and port 0 tells the real port."""
        bound = bind_listeners(LOOPBACK_ANY, LOOPBACK_ANY, LOOPBACK_ANY)
        try:
            ports = [bound.port, bound.tls_port, bound.admin_port]
        finally:
            bound.close()
        assert None not in ports
        assert len(set(ports)) == 3
        assert all(free(port) for port in ports if port is not None)

    def test_without_a_tls_address_there_is_no_https_listener(self) -> None:
        """No tls address: no HTTPS sockets, and no port to tell."""
        bound = bind_listeners(LOOPBACK_ANY, None)
        try:
            assert bound.tls == []
            assert bound.tls_port is None
        finally:
            bound.close()

    @pytest.mark.parametrize(
        ("dev", "choose"),
        [(False, "set tls.listen"), (True, "--tls-listen HOST:PORT")],
        ids=["config", "dev"],
    )
    def test_a_taken_https_port_names_its_fix_and_leaves_nothing_bound(
        self, dev: bool, choose: str
    ) -> None:
        """A taken HTTPS port fails naming tls.listen (--tls-listen under --dev), and the
        data port bound before it is released."""
        with socket.socket() as probe:
            probe.bind(LOOPBACK_ANY)
            data_port = probe.getsockname()[1]
        with taken() as holder:
            port = holder.getsockname()[1]
            with pytest.raises(ListenError) as raised:
                bind_listeners(("127.0.0.1", data_port), None, ("127.0.0.1", port), dev=dev)
        assert str(raised.value) == (
            f"HTTPS listener: cannot listen on 127.0.0.1:{port}: Address already in use "
            f"(is another keyledger running? Choose another port with {choose})"
        )
        assert free(data_port)

    def test_workers_share_the_https_port(self) -> None:
        """With reuse_port (``--workers``), a second process binds the same HTTPS port."""
        first = bind_listeners(LOOPBACK_ANY, None, LOOPBACK_ANY, reuse_port=True)
        try:
            assert first.tls_port is not None
            second = bind_listeners(
                ("127.0.0.1", first.port), None, ("127.0.0.1", first.tls_port), reuse_port=True
            )
            second.close()
        finally:
            first.close()


class TestProbe:
    def test_a_probe_leaves_the_port_free(self) -> None:
        """probe binds and releases: the listener that binds later finds the port free."""
        with socket.socket() as sock:
            sock.bind(LOOPBACK_ANY)
            port = sock.getsockname()[1]
        listeners.probe("127.0.0.1", port, listeners.TLS)
        assert free(port)

    def test_a_probe_of_a_taken_port_fails(self) -> None:
        with taken() as holder:
            port = holder.getsockname()[1]
            with pytest.raises(ListenError, match=r"^HTTPS listener: .*set tls\.listen\)$"):
                listeners.probe("127.0.0.1", port, listeners.TLS, reuse_port=True)


class TestUrl:
    @pytest.mark.parametrize(
        ("host", "expected"),
        [("127.0.0.1", "https://127.0.0.1:8443"), ("::1", "https://[::1]:8443")],
    )
    def test_ipv6_hosts_are_bracketed(self, host: str, expected: str) -> None:
        assert listeners.url("https", host, 8443) == expected
