"""The stand-in's store rules and its HTTP/1.1 edge, below the SDK clients."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from keyledger.backends.gcp_standin import ThreadedGcpStandin
from keyledger.backends.gcp_standin.errors import FailedPrecondition, InvalidArgument, NotFound
from keyledger.backends.gcp_standin.store import MAX_PAYLOAD_BYTES, State, Store

PARENT = "projects/p"


@pytest.fixture
def store() -> Store:
    return Store()


class TestStore:
    def test_unknown_filter_terms_are_refused(self, store: Store) -> None:
        """A filter term the stand-in does not know is INVALID_ARGUMENT, never ignored."""
        with pytest.raises(InvalidArgument, match="create_time"):
            store.list_secrets(PARENT, filter="create_time>2020")
        store.create_secret(PARENT, "s")
        with pytest.raises(InvalidArgument, match="state:ENABLED"):
            store.list_versions(f"{PARENT}/secrets/s", filter="state:GONE")

    def test_label_presence_and_version_state_filters(self, store: Store) -> None:
        """labels.KEY:* keeps labelled secrets; state:DISABLED keeps disabled versions."""
        store.create_secret(PARENT, "a", labels={"team": "x"})
        store.create_secret(PARENT, "b")
        assert [s.name for s in store.list_secrets(PARENT, filter="labels.team:*").items] == [
            f"{PARENT}/secrets/a"
        ]
        for data in (b"1", b"2"):
            store.add_version(f"{PARENT}/secrets/a", data)
        store.set_state(f"{PARENT}/secrets/a/versions/1", State.DISABLED)
        page = store.list_versions(f"{PARENT}/secrets/a", filter="state:DISABLED")
        assert [v.number for v in page.items] == [1]

    def test_a_foreign_page_token_is_invalid(self, store: Store) -> None:
        """A page token the stand-in did not issue is INVALID_ARGUMENT."""
        with pytest.raises(InvalidArgument, match="page_token"):
            store.list_secrets(PARENT, page_token="not a token")

    def test_payloads_over_64_kib_are_refused(self, store: Store) -> None:
        """A payload above Secret Manager's 64 KiB limit is INVALID_ARGUMENT."""
        store.create_secret(PARENT, "big")
        with pytest.raises(InvalidArgument):
            store.add_version(f"{PARENT}/secrets/big", bytes(MAX_PAYLOAD_BYTES + 1))

    def test_version_etag_guards_state_changes(self, store: Store) -> None:
        """Disabling with a stale version etag is FAILED_PRECONDITION; the version stays enabled."""
        store.create_secret(PARENT, "s")
        version = store.add_version(f"{PARENT}/secrets/s", b"v")
        with pytest.raises(FailedPrecondition):
            store.set_state(version.name, State.DISABLED, etag='"old"')
        assert store.get_version(version.name).state is State.ENABLED

    def test_versions_of_a_deleted_secret_are_gone(self, store: Store) -> None:
        """After DeleteSecret its versions are NOT_FOUND, and the id can be used again."""
        store.create_secret(PARENT, "s")
        store.add_version(f"{PARENT}/secrets/s", b"v")
        store.delete_secret(f"{PARENT}/secrets/s")
        with pytest.raises(NotFound):
            store.access_version(f"{PARENT}/secrets/s/versions/1")
        store.create_secret(PARENT, "s")
        assert store.add_version(f"{PARENT}/secrets/s", b"w").number == 1


@pytest.fixture(scope="module")
def standin() -> Iterator[ThreadedGcpStandin]:
    with ThreadedGcpStandin() as server:
        server.seed("http", {"db": "value"})
        yield server


def exchange(standin: ThreadedGcpStandin, raw: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection((standin.host, standin.rest_port)) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class TestHttp:
    def test_chunked_body_and_connection_close(self, standin: ThreadedGcpStandin) -> None:
        """A chunked request body is read whole, and Connection: close ends the connection."""
        body = b'{"payload": {"data": "dHdv"}}'
        raw = (
            b"POST /v1/projects/http/secrets/db:addVersion HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n"
            % (len(body), body)
        )
        reply = exchange(standin, raw)
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b'"name":"projects/http/secrets/db/versions/2"' in reply

    def test_an_unknown_path_is_not_found(self, standin: ThreadedGcpStandin) -> None:
        """A path no method serves is a 404 in Google's error shape."""
        reply = exchange(
            standin, b"GET /v2/anything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert reply.startswith(b"HTTP/1.1 404 Not Found\r\n")
        assert b'"status":"NOT_FOUND"' in reply
