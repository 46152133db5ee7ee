"""Live policy reload: picked up by itself or on SIGHUP, rejected whole when broken, audited."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from keyledger.model import Action, SecretRef
from keyledger.policies import PolicyEngine, load_policy_files, principal_of
from keyledger.proxy.audit.journal import Journal
from keyledger.proxy.pipeline import PolicyHolder
from keyledger.proxy.reload import PolicyReloader, load_policy
from tests.conftest import TEST_POLICY, RunningProxy, running_proxy

APP = principal_of("app")
DB = SecretRef("aws", "app/db")


def policy(rule_id: str, resources: str = '["aws:app/*"]') -> str:
    return (
        "roles:\n"
        "  - id: app\n"
        "    rules:\n"
        f"      - id: {rule_id}\n"
        "        actions: [read, describe]\n"
        f"        resources: {resources}\n"
        "bindings:\n"
        "  - role: app\n"
        "    principals: [app]\n"
    )


BROKEN = policy("read-v3").replace("actions: [read, describe]", "actions: [reed]")


def replace(path: Path, text: str) -> None:
    """Write a file the way editors and config management do: whole, then rename."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def hash_of(folder: Path) -> str:
    return PolicyEngine(load_policy_files(sorted(folder.glob("*.yaml")))).hash


def records(journal: Journal) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in journal.path.read_bytes().splitlines()]


@dataclass
class Rig:
    folder: Path
    holder: PolicyHolder
    journal: Journal
    reloader: PolicyReloader

    @property
    def file(self) -> Path:
        return self.folder / "app.yaml"

    def reloads(self) -> list[dict[str, Any]]:
        return [e for e in records(self.journal) if e["type"] == "policy_reload"]


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, *, watch: bool = True, folder: Path | None = None, base: Path | None = None
) -> AsyncIterator[Rig]:
    """A reloader of ``folder`` (tmp_path/policies), from a config in ``base`` (tmp_path)."""
    folder = folder or tmp_path / "policies"
    folder.mkdir()
    (folder / "app.yaml").write_text(policy("read-v1"))
    loaded = load_policy([folder], ["aws"])
    holder = PolicyHolder(loaded.engine)
    journal = Journal(directory=tmp_path / "audit", chain_id="reload", fsync=False)
    await journal.start()
    reloader = PolicyReloader(
        patterns=[folder],
        backends=["aws"],
        holder=holder,
        journal=journal,
        loaded_from=loaded.files,
        interval_s=0.05,
        watch=watch,
        base=base or tmp_path,
    )
    try:
        yield Rig(folder, holder, journal, reloader)
    finally:
        await journal.close()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        # Polling is the point: the reloader exposes counters, not events to wait on.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


class TestReloadIfChanged:
    async def test_a_changed_file_is_put_in_force_and_audited(self, tmp_path: Path) -> None:
        """An edited policy decides the next request, after a policy_reload event naming
        the old and the new hash."""
        async with rig(tmp_path) as r:
            await r.reloader.reload_if_changed()  # first look: nothing changed
            old = r.holder.engine.hash
            replace(r.file, policy("read-v2"))

            assert await r.reloader.reload_if_changed()

            assert r.holder.engine.decide(APP, Action.READ, DB).rule == "read-v2"
            (event,) = r.reloads()
            assert event["outcome"]["status"] == "success"
            assert event["detail"]["old_hash"] == old
            assert event["detail"]["new_hash"] == r.holder.engine.hash == hash_of(r.folder)
            assert event["detail"]["cause"] == "file change"
            assert event["detail"]["files"] == ["app.yaml"]

    async def test_a_broken_set_is_rejected_whole(self, tmp_path: Path) -> None:
        """If one file of a change is broken, none of the change applies: the last good set
        stays in force, and the rejection is audited with the problem's position."""
        async with rig(tmp_path) as r:
            await r.reloader.reload_if_changed()
            good = r.holder.engine
            (r.folder / "extra.yaml").write_text(
                "roles:\n  - id: more\n    rules:\n      - actions: [read]\n"
                "        resources: [aws:more/*]\n"
                "bindings:\n  - role: more\n    principals: [app]\n"
            )
            replace(r.file, BROKEN)

            assert not await r.reloader.reload_if_changed()

            assert r.holder.engine is good
            assert r.holder.engine.decide(APP, Action.READ, DB).rule == "read-v1"
            assert not r.holder.engine.decide(APP, Action.READ, SecretRef("aws", "more/x")).allowed
            (event,) = r.reloads()
            assert event["outcome"] == {
                "status": "error",
                "code": "PolicyError",
                "latency_ms": None,
                "version_id": None,
                "value_fingerprint": None,
            }
            assert event["detail"]["kept_hash"] == good.hash
            assert event["detail"]["problems"] == [
                "policies/app.yaml:5:19: unknown action 'reed' (did you mean 'read'?)"
            ]

    async def test_a_rejection_names_files_outside_the_config_folder_as_configured(
        self, tmp_path: Path
    ) -> None:
        """A policy folder outside the config file's folder keeps the path it was configured
        by, not one climbing out of the config's folder (../../mnt/...)."""
        config = tmp_path / "etc" / "keyledger"
        config.mkdir(parents=True)
        elsewhere = tmp_path / "mnt" / "etc" / "keyledger"
        elsewhere.parent.mkdir(parents=True)
        async with rig(tmp_path, folder=elsewhere, base=config) as r:
            await r.reloader.reload_if_changed()
            replace(r.file, BROKEN)

            assert not await r.reloader.reload_if_changed()

            (event,) = r.reloads()
            assert event["detail"]["problems"] == [
                f"{r.file}:5:19: unknown action 'reed' (did you mean 'read'?)"
            ]

    async def test_a_rejection_is_recorded_once_then_the_fix_applies(self, tmp_path: Path) -> None:
        """A broken set is not re-read and re-audited every second; fixing it applies it."""
        async with rig(tmp_path) as r:
            await r.reloader.reload_if_changed()
            replace(r.file, BROKEN)
            for _ in range(3):
                await r.reloader.reload_if_changed()
            assert len(r.reloads()) == 1

            replace(r.file, policy("read-v4"))
            assert await r.reloader.reload_if_changed()

            assert [e["outcome"]["status"] for e in r.reloads()] == ["error", "success"]
            assert r.holder.engine.decide(APP, Action.READ, DB).rule == "read-v4"

    async def test_an_edit_made_while_starting_is_not_missed(self, tmp_path: Path) -> None:
        """The files are fingerprinted before the first read, so an edit landing between
        start-up's load and the watcher's first look still counts as a change."""
        async with rig(tmp_path) as r:
            replace(r.file, policy("read-v2"))  # after the load, before the watcher runs
            task = asyncio.create_task(r.reloader.run())
            try:
                await until(lambda: r.reloader.reloads == 1)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

            assert r.holder.engine.decide(APP, Action.READ, DB).rule == "read-v2"

    async def test_touching_a_file_is_not_a_reload(self, tmp_path: Path) -> None:
        """Same bytes, new mtime (a ConfigMap resync, a `touch`): no new set, no event."""
        async with rig(tmp_path) as r:
            await r.reloader.reload_if_changed()
            engine = r.holder.engine
            replace(r.file, r.file.read_text())

            assert not await r.reloader.reload_if_changed()

            assert r.holder.engine is engine
            assert r.reloads() == []

    async def test_a_new_file_in_the_folder_is_picked_up(self, tmp_path: Path) -> None:
        """A policy file added to a watched folder joins the set."""
        async with rig(tmp_path) as r:
            await r.reloader.reload_if_changed()
            (r.folder / "more.yaml").write_text(
                "roles:\n  - id: more\n    rules:\n      - id: read-more\n"
                "        actions: [read]\n        resources: [aws:more/*]\n"
                "bindings:\n  - role: more\n    principals: [app]\n"
            )

            assert await r.reloader.reload_if_changed()

            decision = r.holder.engine.decide(APP, Action.READ, SecretRef("aws", "more/x"))
            assert decision.rule == "read-more"
            assert r.reloads()[0]["detail"]["files"] == ["app.yaml", "more.yaml"]

    async def test_a_reload_that_cannot_be_audited_does_not_happen(self, tmp_path: Path) -> None:
        """With the journal down, the policy in force does not change unrecorded."""
        async with rig(tmp_path) as r:
            await r.reloader.reload_if_changed()
            engine = r.holder.engine
            await r.journal.close()
            replace(r.file, policy("read-v2"))

            assert not await r.reloader.reload_if_changed()

            assert r.holder.engine is engine
            await r.journal.start()
            assert await r.reloader.reload_if_changed()
            assert r.holder.engine.decide(APP, Action.READ, DB).rule == "read-v2"


class TestWatching:
    async def test_the_watcher_applies_an_edit_by_itself(self, tmp_path: Path) -> None:
        """With watch on, an edit is in force within a few intervals, with no signal."""
        async with rig(tmp_path) as r:
            task = asyncio.create_task(r.reloader.run())
            try:
                await asyncio.sleep(0.1)
                replace(r.file, policy("read-v2"))
                await until(lambda: r.reloader.reloads == 1)
                assert r.holder.engine.decide(APP, Action.READ, DB).rule == "read-v2"
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def test_with_watch_off_only_a_request_reloads(self, tmp_path: Path) -> None:
        """With watch off, edits wait for SIGHUP (request()); then they apply, cause signal."""
        async with rig(tmp_path, watch=False) as r:
            task = asyncio.create_task(r.reloader.run())
            try:
                await asyncio.sleep(0.1)
                replace(r.file, policy("read-v2"))
                await asyncio.sleep(0.3)
                assert r.holder.engine.decide(APP, Action.READ, DB).rule == "read-v1"

                r.reloader.request()
                await until(lambda: r.reloader.reloads == 1)

                assert r.holder.engine.decide(APP, Action.READ, DB).rule == "read-v2"
                assert r.reloads()[0]["detail"]["cause"] == "signal"
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def test_an_unrecorded_reload_is_retried_without_another_signal(
        self, tmp_path: Path
    ) -> None:
        """With watch off, a SIGHUP reload that met a journal outage applies by itself once
        the journal is back, still recorded as caused by the signal."""
        async with rig(tmp_path, watch=False) as r:
            task = asyncio.create_task(r.reloader.run())
            try:
                await asyncio.sleep(0.1)
                await r.journal.close()
                replace(r.file, policy("read-v2"))
                r.reloader.request()
                await asyncio.sleep(0.3)
                assert r.holder.engine.decide(APP, Action.READ, DB).rule == "read-v1"

                await r.journal.start()
                await until(lambda: r.reloader.reloads == 1)

                assert r.holder.engine.decide(APP, Action.READ, DB).rule == "read-v2"
                assert [e["detail"]["cause"] for e in r.reloads()] == ["signal"]
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


# -- through the running proxy -----------------------------------------------------------


@pytest.fixture
def fast_reloading(
    tmp_path: Path, moto_url: str, store: Any, store_credentials: None
) -> Iterator[RunningProxy]:
    extra = {"policy_reload": {"interval_s": 0.05}}
    with running_proxy(tmp_path, moto_url, extra=extra) as running:
        yield running


def variant(n: int) -> str:
    """TEST_POLICY with its read rule renamed: every variant allows the same reads."""
    return TEST_POLICY.replace("id: app-read\n", f"id: app-read-v{n}\n")


class TestReloadUnderLoad:
    def test_no_request_fails_and_every_event_names_a_whole_set(
        self, fast_reloading: RunningProxy, store: Any, tmp_path: Path
    ) -> None:
        """Readers hammer the proxy while the policy is rewritten again and again: no
        request fails, and every access event names a policy hash together with the rule
        of that very set, never a mix."""
        name = f"app/reload-{time.monotonic_ns()}"
        store.create_secret(Name=name, SecretString="v")
        policy_file = fast_reloading.config.policies[0] / "app.yaml"  # type: ignore[operator]
        # The hash each variant has once loaded, computed the same way, elsewhere.
        expected: dict[str, str] = {}
        for n in range(4):
            scratch = tmp_path / f"scratch-{n}"
            scratch.mkdir()
            (scratch / "app.yaml").write_text(variant(n) if n else TEST_POLICY)
            expected[hash_of(scratch)] = f"app-read-v{n}" if n else "app-read"
            shutil.rmtree(scratch)

        stop = threading.Event()
        failures: list[str] = []
        served = [0]

        def reader() -> None:
            client = fast_reloading.client()
            while not stop.is_set():
                try:
                    assert client.get_secret_value(SecretId=name)["SecretString"] == "v"
                    served[0] += 1
                except (ClientError, AssertionError) as exc:
                    failures.append(repr(exc))

        threads = [threading.Thread(target=reader) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            for n in (1, 2, 3, 1, 2, 3, 0):
                replace(policy_file, variant(n) if n else TEST_POLICY)
                time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(30)

        assert failures == []
        reloads = fast_reloading.events("policy_reload")
        assert len(reloads) >= 3
        assert all(e["outcome"]["status"] == "success" for e in reloads)
        # Each reload starts from the set the previous one put in force.
        for before, after in itertools.pairwise(reloads):
            assert after["detail"]["old_hash"] == before["detail"]["new_hash"]
        reads = [
            e
            for e in fast_reloading.events("access")
            if e["resource"]["secret"] == name and e["outcome"]["status"] == "success"
        ]
        assert len(reads) == served[0] > 50
        seen = {(e["decision"]["policy_hash"], e["decision"]["rule"]) for e in reads}
        assert seen <= set(expected.items())
        assert len({h for h, _ in seen}) >= 2, "the load did not span a reload"

    def test_a_broken_edit_leaves_the_proxy_serving_the_last_good_set(
        self, fast_reloading: RunningProxy, store: Any
    ) -> None:
        """A policy file broken mid-edit is rejected: callers keep their access, and the
        journal says what was wrong."""
        name = f"app/kept-{time.monotonic_ns()}"
        store.create_secret(Name=name, SecretString="still-here")
        policy_file = fast_reloading.config.policies[0] / "app.yaml"  # type: ignore[operator]
        good_hash = fast_reloading.events("lifecycle")[0]["detail"]["policy_hash"]

        replace(policy_file, TEST_POLICY.replace("actions: [read, describe, list]", "actions: ["))
        deadline = time.monotonic() + 10
        while not fast_reloading.events("policy_reload"):
            assert time.monotonic() < deadline, "the broken edit was never noticed"
            time.sleep(0.05)

        client = fast_reloading.client()
        assert client.get_secret_value(SecretId=name)["SecretString"] == "still-here"
        (rejected,) = fast_reloading.events("policy_reload")
        assert rejected["outcome"]["status"] == "error"
        assert rejected["detail"]["kept_hash"] == good_hash
        # Named as the config names it, relative to its folder.
        assert rejected["detail"]["problems"][0].startswith("policies/app.yaml:")
        last = fast_reloading.events("access")[-1]
        assert last["decision"]["policy_hash"] == good_hash
