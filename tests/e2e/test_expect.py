"""An Expect header keyledger's HTTP server would have answered by itself, unaudited
(417, or a 500 for bytes that are not text), reaches keyledger and is answered in the
caller's protocol, on record; 100-continue still gets its interim answer."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningProxy, running_proxy


def exchange(proxy: RunningProxy, head: bytes, body: bytes = b"", *, wait: bool = False) -> bytes:
    where = urlsplit(proxy.url)
    with socket.create_connection((where.hostname, where.port), timeout=5) as sock:
        sock.sendall(head)
        interim = sock.recv(65536) if wait else b""
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return interim + answer


@pytest.fixture
def proxy(tmp_path: Path, moto_url: str, store: Any, store_credentials: None) -> Any:
    with running_proxy(tmp_path, moto_url) as running:
        yield running


@pytest.mark.parametrize("expect", [b"foo", b"\xff\xfe"])
def test_an_unknown_expectation_is_answered_by_keyledger_on_record(
    proxy: RunningProxy, expect: bytes
) -> None:
    head = (
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: secretsmanager.GetSecretValue\r\n"
        b"Expect: " + expect + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    )
    answer = exchange(proxy, head, b"{}")

    status = answer.split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 4"), answer[:300]
    assert b"Server got itself in trouble" not in answer
    assert b"Unknown Expect" not in answer
    (event,) = proxy.events("auth_failure")
    assert event["outcome"]["code"] == "missing_authentication"


def test_100_continue_gets_its_interim_answer(proxy: RunningProxy) -> None:
    head = (
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: secretsmanager.GetSecretValue\r\n"
        b"Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    )
    answer = exchange(proxy, head, b"{}", wait=True)

    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 4"), answer[:300]
