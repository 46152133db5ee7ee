"""The admin API's proof of integrity: where each chain stands, the sinks, and a verification
started over HTTP that finds a tampered line and puts its result on record.

A real ``Journal`` with signed checkpoints writes in ``tmp_path``; ``make_admin_app`` serves
it over a real socket with that journal and the checkpoint key's public half, as
``admin_app_for`` wires them; the last test goes through a running keyledger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient

from keyledger.proxy.admin import make_admin_app
from keyledger.proxy.audit.checkpoints import CheckpointSigner, key_id
from keyledger.proxy.audit.journal import Checkpointing, Journal
from keyledger.proxy.audit.segments import segment_path
from keyledger.proxy.audit.sinks import Shipper, ShippingSettings
from keyledger.proxy.audit.sinks.cursor import CursorStore
from keyledger.proxy.audit.sinks.s3 import S3Sink
from keyledger.proxy.audit.stream import AuditBroadcaster
from keyledger.proxy.config import S3SinkConfig
from tests.conftest import RunningProxy, journal_events
from tests.proxy.test_admin import NotAsked, closed_port
from tests.proxy.test_admin_query import AUTH, CHAIN, TOKEN, access, call

Client = TestClient[web.Request, web.Application]


@dataclass
class Admin:
    client: Client
    journal: Journal
    directory: Path
    key: Ed25519PrivateKey

    @property
    def segment(self) -> Path:
        return segment_path(self.directory, CHAIN, 1)

    async def get(self, path: str) -> tuple[int, Any]:
        response = await self.client.get(path, headers=AUTH)
        return response.status, orjson.loads(await response.read())

    async def start_verify(self) -> tuple[int, Any, web.StreamResponse | Any]:
        response = await self.client.post("/v1/verify", headers=AUTH)
        return response.status, orjson.loads(await response.read()), response

    async def verified(self, within: float = 20.0) -> dict[str, Any]:
        """The verification's state once it is done."""
        deadline = time.monotonic() + within
        while True:
            _, state = await self.get("/v1/verify")
            if state["state"] == "done":
                return dict(state)
            assert time.monotonic() < deadline, state
            await asyncio.sleep(0.02)


def journal_in(directory: Path, key: Ed25519PrivateKey, chain: str = CHAIN) -> Journal:
    return Journal(
        directory=directory,
        chain_id=chain,
        fsync=False,
        checkpoints=Checkpointing(signer=CheckpointSigner(key)),
    )


@pytest.fixture
async def admin(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[Admin]:
    directory, key = tmp_path / "audit", Ed25519PrivateKey.generate()
    journal = journal_in(directory, key)
    await journal.start()
    try:
        app = make_admin_app(
            token=TOKEN,
            broadcaster=AuditBroadcaster(),
            journal_dir=directory,
            registry=CollectorRegistry(),
            readiness=NotAsked(),
            journal=journal,
            public_keys={key_id(key.public_key()): key.public_key()},
        )
        yield Admin(await aiohttp_client(app), journal, directory, key)
    finally:
        await journal.close()


def verify_events(directory: Path) -> list[dict[str, Any]]:
    return [
        e
        for e in journal_events(directory, "lifecycle")
        if e["detail"]["event"] == "journal_verified"
    ]


class TestIntegrity:
    async def test_each_chain_its_end_and_newest_checkpoint(self, admin: Admin) -> None:
        """Per chain: last seq and time, the checkpoint sealing it and its age, and how many
        events came after it; a closed replica's chain beside the live one."""
        other = journal_in(admin.directory, admin.key, chain="node-2")
        await other.start()
        await other.append(access("svc-z"))
        await other.close()  # closing seals its end
        await admin.journal.append_many([access("svc-a"), access("svc-b"), access("svc-c")])
        await admin.journal.checkpoint()  # seals seq 3 with a checkpoint event at seq 4
        await admin.journal.append_many([access("svc-d"), access("svc-e")])

        status, body = await admin.get("/v1/integrity")

        assert status == 200
        chains = {c["chain"]: c for c in body["chains"]}
        live, closed = chains[CHAIN], chains["node-2"]
        last = orjson.loads(admin.segment.read_bytes().splitlines()[-1])
        assert (live["last_seq"], live["last_time"]) == (6, last["time"])
        assert live["checkpoint"]["seals_seq"] == 3
        assert 0 <= live["checkpoint"]["age_s"] < 60
        assert live["checkpoint"]["key_id"] == key_id(admin.key.public_key())
        assert live["unsealed"] == 2
        assert (live["local"], live["segments"], live["first_seq"]) == (True, 1, 1)
        assert live["bytes"] == admin.segment.stat().st_size
        assert closed["local"] is False
        assert closed["unsealed"] == 0
        assert closed["checkpoint"]["seals_seq"] == closed["last_seq"] - 1
        assert body["sinks"] == []
        assert body["verification"]["state"] == "idle"

    async def test_a_chain_without_checkpoints_is_all_unsealed(self, admin: Admin) -> None:
        await admin.journal.append_many([access("svc-a"), access("svc-b")])

        _, body = await admin.get("/v1/integrity")

        (chain,) = body["chains"]
        assert (chain["checkpoint"], chain["unsealed"]) == (None, 2)

    async def test_each_sink_and_its_lag(
        self, aiohttp_client: AiohttpClient, tmp_path: Path
    ) -> None:
        """The sinks' part is what /v1/sinks says: a sink that shipped nothing lags by all."""
        directory = tmp_path / "audit"
        journal = Journal(directory=directory, chain_id=CHAIN, fsync=False)
        await journal.start()
        sink = S3SinkConfig(
            name="archive",
            bucket="archive",
            region="us-east-1",
            endpoint_url=f"http://127.0.0.1:{closed_port()}",
            static_credentials=("test", "test"),
        )
        shipper = Shipper(
            sink=S3Sink(sink),
            journal=journal,
            cursors=CursorStore(directory),
            settings=ShippingSettings(),
        )
        try:
            app = make_admin_app(
                token=TOKEN,
                broadcaster=AuditBroadcaster(),
                journal_dir=directory,
                registry=CollectorRegistry(),
                readiness=NotAsked(),
                shippers=(shipper,),
            )
            client = await aiohttp_client(app)
            await journal.append_many([access("svc-a"), access("svc-b")])
            integrity = await (await client.get("/v1/integrity", headers=AUTH)).json()
            sinks = await (await client.get("/v1/sinks", headers=AUTH)).json()
        finally:
            await journal.close()

        (shown,) = integrity["sinks"]
        assert (shown["sink"], shown["lag_events"], shown["shipped_seq"]) == ("archive", 2, 0)
        assert integrity["sinks"] == sinks["sinks"]
        assert integrity["chains"][0]["local"] is False  # no journal given: none is "ours"


class TestVerify:
    async def test_an_intact_journal_passes_and_the_result_is_on_record(self, admin: Admin) -> None:
        await admin.journal.append_many([access(f"svc-{n}") for n in range(5)])
        await admin.journal.checkpoint()
        size = admin.segment.stat().st_size

        status, started, response = await admin.start_verify()
        done = await admin.verified()

        assert status == 202
        assert response.headers["Location"] == "/v1/verify"
        assert started["state"] in ("running", "done")
        run = done["run"]
        assert run["id"] == started["run"]["id"]
        assert (run["ok"], run["problems"], run["problems_total"]) == (True, [], 0)
        assert (run["events"], run["signatures_checked"], run["error"]) == (6, True, None)
        (chain,) = run["chains"]
        assert (chain["id"], chain["last_seq"], chain["checkpoints"], chain["unsealed"]) == (
            CHAIN,
            6,
            1,
            0,
        )
        assert run["progress"] == {
            "bytes_checked": size,
            "bytes_total": size,
            "chains_checked": 1,
            "chains_total": 1,
        }
        (recorded,) = verify_events(admin.directory)
        assert recorded["id"] == run["recorded_event"]
        assert recorded["chain"]["seq"] == 7
        detail = recorded["detail"]
        assert (detail["run"], detail["ok"], detail["events"]) == (run["id"], True, 6)
        assert detail["requested_by"] == "admin-api"
        assert detail["requested_from"] == "127.0.0.1"
        assert detail["chains"] == [{"id": CHAIN, "last_seq": 6, "unsealed": 0, "problem": None}]

    async def test_a_tampered_line_fails_and_the_failure_is_on_record(self, admin: Admin) -> None:
        """One byte changed in line 2: the run fails there, naming file (within the
        journal folder: the server's layout is not the console's business), line and seq."""
        await admin.journal.append_many([access("svc-1"), access("svc-2"), access("svc-3")])
        data = admin.segment.read_bytes()
        assert data.count(b'"svc-2"') == 1
        with admin.segment.open("r+b") as handle:  # in place, the same length
            handle.seek(data.index(b'"svc-2"'))
            handle.write(b'"svc-X"')

        await admin.start_verify()
        run = (await admin.verified())["run"]

        assert run["ok"] is False
        expected = f"{admin.segment.name}:2: seq 2: hash mismatch: the event was modified"
        assert run["problems"][0].startswith(expected)
        assert run["chains"][0]["problem"].startswith(expected)
        assert run["chains"][0]["attempts"] == 1  # the folder stood still: no second look
        (recorded,) = verify_events(admin.directory)
        assert recorded["id"] == run["recorded_event"]
        assert recorded["detail"]["ok"] is False
        assert recorded["detail"]["problems"][0].startswith(expected)

    async def test_one_verification_at_a_time(self, admin: Admin) -> None:
        """A second start while one runs is 409 and changes nothing; once it is done, a new
        one starts and the last result is kept beside it."""
        await admin.journal.append_many([access(f"svc-{n}") for n in range(500)])
        written = admin.journal.state.seq

        # Sent together: a run counts as running from its start, before any file is read.
        answers = await asyncio.gather(admin.start_verify(), admin.start_verify())
        done = await admin.verified()
        third, again, _ = await admin.start_verify()
        await admin.verified()

        assert sorted(status for status, _, _ in answers) == [202, 409]
        assert third == 202
        (refused,) = [body for status, body, _ in answers if status == 409]
        assert refused["error"].startswith("a verification is already running (started ")
        assert list(refused) == ["error"]
        assert done["run"]["ok"] is True
        assert done["run"]["events"] == written
        assert again["previous"]["id"] == done["run"]["id"]
        assert again["run"]["id"] != done["run"]["id"]
        assert len(verify_events(admin.directory)) == 2  # the refused one recorded nothing

    async def test_unknown_parameters_are_refused(self, admin: Admin) -> None:
        response = await admin.client.post("/v1/verify?chain=x", headers=AUTH)

        assert response.status == 400
        assert "unknown query parameter 'chain'" in (await response.json())["error"]
        assert (await admin.get("/v1/verify"))[1]["state"] == "idle"


class TestThroughTheProxy:
    def test_a_verification_started_over_http_checks_signatures(self, proxy: RunningProxy) -> None:
        """`keyledger serve`'s admin listener verifies its own journal with the public half
        of its checkpoint key, and records the run in that journal."""
        proxy.client("app").list_secrets()
        token, admin = proxy.admin_token, proxy.admin_url

        status, _ = call(f"{admin}/v1/verify", token, method="POST")
        deadline = time.monotonic() + 20
        while (state := call(f"{admin}/v1/verify", token)[1])["state"] != "done":
            assert time.monotonic() < deadline, state
            time.sleep(0.05)
        _, integrity = call(f"{admin}/v1/integrity", token)

        assert status == 202
        run = state["run"]
        assert (run["ok"], run["signatures_checked"]) == (True, True), run
        assert integrity["chains"][0]["local"] is True
        assert integrity["verification"]["run"]["id"] == run["id"]
        recorded = [
            e for e in proxy.events("lifecycle") if e["detail"]["event"] == "journal_verified"
        ]
        assert [e["id"] for e in recorded] == [run["recorded_event"]]


async def test_a_replaced_file_fails_and_the_failure_is_still_on_record(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """A line edited as editors and `sed -i` do it (a new file in the old one's place): the
    run fails, and its event, first refused with the file the journal left, is recorded
    once the journal has moved on to a new segment."""
    directory, key = tmp_path / "audit", Ed25519PrivateKey.generate()
    journal = Journal(
        directory=directory,
        chain_id=CHAIN,
        fsync=True,  # each round checks that the file is still the one at its path
        checkpoints=Checkpointing(signer=CheckpointSigner(key)),
    )
    await journal.start()
    try:
        app = make_admin_app(
            token=TOKEN,
            broadcaster=AuditBroadcaster(),
            journal_dir=directory,
            registry=CollectorRegistry(),
            readiness=NotAsked(),
            journal=journal,
            public_keys={key_id(key.public_key()): key.public_key()},
        )
        admin = Admin(await aiohttp_client(app), journal, directory, key)
        await journal.append_many([access("svc-1"), access("svc-2")])
        edited = admin.segment.with_name("edited")
        edited.write_bytes(admin.segment.read_bytes().replace(b'"svc-2"', b'"svc-X"'))
        edited.replace(admin.segment)

        await admin.start_verify()
        run = (await admin.verified())["run"]

        assert run["ok"] is False
        assert any("hash mismatch" in problem for problem in run["problems"])
        assert run["recorded_event"] is not None, run
        (recorded,) = [e for e in verify_events(directory) if e["id"] == run["recorded_event"]]
        assert recorded["detail"]["ok"] is False
    finally:
        await journal.close()
