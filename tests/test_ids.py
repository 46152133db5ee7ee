"""Request and event ids: the formats tools and SDKs read, and never repeated."""

from __future__ import annotations

import os
import time
import uuid

from ulid import ULID

from keyledger.ids import event_id, request_id


def test_request_ids_are_version_4_uuids_as_uuid_writes_them() -> None:
    for _ in range(2000):
        rid = request_id()
        parsed = uuid.UUID(rid)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == rid


def test_event_ids_are_ulids_of_the_time_they_were_made() -> None:
    for _ in range(2000):
        before = time.time_ns() // 1_000_000
        eid = event_id()
        after = time.time_ns() // 1_000_000
        parsed = ULID.from_str(eid)
        assert str(parsed) == eid  # canonical: upper-case Crockford, 26 characters
        assert before <= parsed.milliseconds <= after


def test_ids_are_not_repeated() -> None:
    assert len({request_id() for _ in range(50_000)}) == 50_000
    assert len({event_id() for _ in range(50_000)}) == 50_000


def test_event_ids_sort_by_time_across_milliseconds() -> None:
    first = event_id()
    time.sleep(0.002)
    assert event_id() > first


def test_a_forked_child_makes_ids_of_its_own() -> None:
    """Workers are forked: a child must not repeat the ids its parent would make next."""
    request_id(), event_id()  # the parent holds random bytes not yet handed out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest, whatever happens
        try:
            os.write(write, (request_id() + event_id()).encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    os.close(write)
    assert child[:36] != request_id()
    assert child[36 + 10 :] != event_id()[10:]  # the random part, not the time
