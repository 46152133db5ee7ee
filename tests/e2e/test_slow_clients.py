"""Slow and greedy clients (slowloris): a request head trickled a line at a time, connections
left idle, more connections than the proxy takes. Each is cut off by its bound while boto3
callers beside them are served, and /metrics counts what was closed and why."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningProxy, running_proxy, signed_head
from tests.proxy.test_operate import Metrics

SLOW = {"header_timeout_s": 0.5, "idle_timeout_s": 1.0, "request_timeout_s": 5}


@pytest.fixture
def guarded(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> Iterator[RunningProxy]:
    store.create_secret(Name="app/db/password", SecretString="served-beside-the-flood")
    with running_proxy(tmp_path, moto_url, limits={**SLOW, "max_connections": 8}) as proxy:
        yield proxy


def connect(proxy: RunningProxy) -> socket.socket:
    host, port = proxy.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def closed_after(
    sock: socket.socket, trickle: bytes = b"", every_s: float = 0.1, since: float | None = None
) -> float:
    """Seconds from ``since`` (a ``time.monotonic()``; default now) until the proxy closes
    ``sock``, sending ``trickle`` every ``every_s`` meanwhile (at most 10 s)."""
    started = time.monotonic() if since is None else since
    sock.settimeout(every_s)
    while time.monotonic() - started < 10:
        try:
            if trickle:
                sock.sendall(trickle)
            if not sock.recv(4096):
                break
        except TimeoutError:
            continue
        except OSError:  # reset, or a write after the close
            break
    return time.monotonic() - started


def closed_by(proxy: RunningProxy, reason: str) -> float:
    return Metrics(proxy).value("keyledger_connections_closed_total", reason=reason)


def test_a_trickled_request_head_is_cut_off_while_good_callers_are_served(
    guarded: RunningProxy,
) -> None:
    """Six connections each sending a header line every 0.1 s are closed at the header
    timeout (0.5 s), however long they keep trickling; boto3 reads go on meanwhile."""
    slow = [connect(guarded) for _ in range(6)]
    first_byte = time.monotonic()  # the timeout counts from each head's first byte
    for sock in slow:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: keyledger\r\n")
    client = guarded.client("app")
    with ThreadPoolExecutor(len(slow)) as pool:
        held = pool.map(lambda s: closed_after(s, b"X-Slow: 1\r\n", since=first_byte), slow)
        reads = [client.get_secret_value(SecretId="app/db/password")["SecretString"]]
        held_s = list(held)

    assert reads == ["served-beside-the-flood"]
    assert all(0.4 <= s < 3 for s in held_s), held_s
    assert closed_by(guarded, "header_timeout") == 6


def test_an_idle_connection_is_closed(guarded: RunningProxy) -> None:
    """A connection that sends nothing is closed after idle_timeout_s (a request under way
    is not: see the slow body below)."""
    idle = connect(guarded)
    assert 0.9 <= closed_after(idle) < 4
    assert closed_by(guarded, "idle_timeout") == 1


def test_connections_past_the_limit_are_told_to_retry(guarded: RunningProxy) -> None:
    """With max_connections 8 held by idle sockets, a ninth connection gets 503 with
    Retry-After and is closed; once some let go, boto3 is served again."""
    held = [connect(guarded) for _ in range(8)]
    time.sleep(0.2)  # each accepted and counted (their idle timeout is 1 s)
    extra = connect(guarded)
    extra.settimeout(5)
    refused = extra.recv(4096)

    assert refused.startswith(b"HTTP/1.1 503")
    assert b"Retry-After: 1" in refused
    assert extra.recv(4096) == b""  # and closed
    assert closed_by(guarded, "limit") == 1
    for sock in held:
        sock.close()
    time.sleep(0.2)
    read = guarded.client("app").get_secret_value(SecretId="app/db/password")
    assert read["SecretString"] == "served-beside-the-flood"


@pytest.mark.parametrize(
    ("key_id", "code", "reason"),
    [
        ("AKIAUNKNOWNKEY000000", b"UnrecognizedClientException", "unknown_access_key"),
        ("", b"MissingAuthenticationTokenException", "missing_authentication"),
    ],
    ids=["unknown-key", "no-credentials"],
)
def test_a_caller_its_headers_refuse_is_answered_before_its_body_is_read(
    guarded: RunningProxy, key_id: str, code: bytes, reason: str
) -> None:
    """A megabyte announced by a caller whose headers already fail (a key keyledger never
    issued, no credentials at all) is refused at once: keyledger does not read (or wait
    for) the body of someone it cannot authenticate, and records the refusal."""
    body = b'{"SecretId": "app/db/password", "Pad": "' + b"x" * ((1 << 20) - 64) + b'"}'
    sock = connect(guarded)
    head = signed_head(guarded, body, key_id=key_id or None)
    if not key_id:
        head = b"\r\n".join(
            line for line in head.split(b"\r\n") if not line.lower().startswith(b"authorization")
        )
    sock.sendall(head + body[:100])  # the rest never comes
    sock.settimeout(3)  # well under request_timeout_s (5 s)
    answer = sock.recv(65536)

    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert code in answer
    assert b"Connection: close" in answer
    assert guarded.events("auth_failure")[-1]["outcome"]["code"] == reason


def test_a_known_callers_slow_body_is_still_waited_for(guarded: RunningProxy) -> None:
    """The head of a known key passes the early check, so its body is read as ever: slowly
    sent, it is answered once it is whole."""
    body = b'{"SecretId": "app/db/password"}'
    sock = connect(guarded)
    sock.sendall(signed_head(guarded, body) + body[:10])
    time.sleep(1.2)  # past the header and idle timeouts: the request is under way
    sock.sendall(body[10:])
    sock.settimeout(10)
    answer = sock.recv(65536)

    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"served-beside-the-flood" in answer
