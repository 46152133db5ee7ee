"""A journal folder that really fills up, or really turns read-only, under `keyledger serve`.

TestFailClosed in test_cli_serve has the kernel refuse writes through RLIMIT_FSIZE; here the
disk is real. keyledger runs in a private mount namespace (``unshare -m``) in which its
journal folder is a filesystem of its own, and the test acts on that filesystem from inside
the namespace (``nsenter``), as another program on the host would. The test's own view of
the folder never changes, and nothing stays mounted once a test ends.

Full: a tmpfs filled by ``dd`` until the kernel says "No space left on device".

Read-only: an ordinary ``mount -o remount,ro`` cannot happen while keyledger runs (the kernel
answers EBUSY: keyledger holds its segment and lock open for writing). What does turn a
folder read-only under an open file is the filesystem's own error handling: ext4 with
``errors=remount-ro`` after an I/O error. The tests raise that error through ext4's
``trigger_fs_error`` on an ext4 image mounted through a loop device. The kernel never makes
such a filesystem writable again while it is mounted (``mount -o remount,rw`` exits 0 and
writes still fail with EROFS), so the folder becomes writable again the way an operator
makes it so: the broken filesystem is detached (``umount --lazy``) and a checked copy of it
is mounted in its place, without touching keyledger.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from botocore.exceptions import ClientError

from keyledger.proxy.health import MIN_FREE_BYTES
from tests.conftest import journal_events
from tests.e2e.test_cli_serve import (
    KEYLEDGER,
    ServedProxy,
    admin_get,
    prepare_config,
    verify,
    wait_listening,
)

SECRET = "app/db/password"
THREADS, READS_EACH = 8, 20
# /readyz wants MIN_FREE_BYTES free beside the journal: a smaller folder is never ready.
TMPFS_SIZE = MIN_FREE_BYTES + (8 << 20)
EXT4_SIZE = MIN_FREE_BYTES + (32 << 20)  # ext4 keeps some for itself and for root
UNAVAILABLE = "ServiceUnavailable 503"
SERVED = "served"
RECOVERY_S = 5.0  # "within a few seconds": the journal looks at its file every second


@dataclass
class Namespace:
    """A private mount namespace, kept alive by a `sleep` of ours, in which ``folder`` is a
    filesystem of its own."""

    holder: subprocess.Popen[bytes]
    folder: Path

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (nsenter execs it: the pid stays the same)."""
        nsenter = shutil.which("nsenter") or "nsenter"
        return [nsenter, f"--target={self.holder.pid}", "--mount", "--", *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """``argv`` run inside the namespace, its messages in English (the C locale)."""
        return subprocess.run(
            self.command(*argv),
            env={**os.environ, "LC_ALL": "C"},
            capture_output=True,
            timeout=60,
            check=check,
        )

    def free_bytes(self) -> int:
        done = self.run("stat", "--file-system", "--format=%a %S", str(self.folder))
        blocks, size = map(int, done.stdout.split())
        return blocks * size

    def device(self) -> str:
        """The block device mounted on the folder (``loop3`` for /dev/loop3)."""
        done = self.run("findmnt", "--noheadings", "--output=SOURCE", str(self.folder))
        return Path(done.stdout.decode().strip()).name

    def copy_out(self, to: Path) -> Path:
        """The folder's files as the namespace sees them, copied to ``to``."""
        done = self.run("tar", "-C", str(self.folder), "-cf", "-", ".")
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
            archive.extractall(to, filter="data")
        return to


@contextlib.contextmanager
def mounted(folder: Path, mount: str) -> Iterator[Namespace]:
    """A new mount namespace in which ``mount "$FOLDER"`` has run."""
    folder.mkdir(exist_ok=True)
    script = f'{mount} "$0" && echo mounted && exec sleep 600'
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stderr is not None
    with holder, holder.stdout, holder.stderr:
        try:
            if holder.stdout.readline() != b"mounted\n":
                holder.wait(timeout=10)
                raise RuntimeError(f"{mount} {folder}: {holder.stderr.read().decode().strip()}")
            yield Namespace(holder, folder)
        finally:
            holder.kill()  # the last process in the namespace: its mounts go with it
            holder.wait(timeout=10)


def make_ext4(image: Path, size: int) -> Path:
    subprocess.run(["truncate", f"--size={size}", str(image)], check=True, timeout=60)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True, timeout=60)
    return image


def error_trigger(device: str) -> Path:
    """Writing here makes ext4 act as on an I/O error (with errors=remount-ro: read-only)."""
    return Path("/sys/fs/ext4") / device / "trigger_fs_error"


@pytest.fixture(scope="session")
def can_mount(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip where a private mount namespace with a tmpfs of its own cannot be made."""
    missing = [name for name in ("unshare", "nsenter") if shutil.which(name) is None]
    if missing:
        pytest.skip(f"needs util-linux's {' and '.join(missing)} to mount a folder privately")
    try:
        with mounted(
            tmp_path_factory.mktemp("probe") / "tmpfs", "mount -t tmpfs -o size=1m x"
        ) as ns:
            ns.run("true")
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace (`unshare -m`): {exc}")


@pytest.fixture(scope="session")
def can_mount_ext4(can_mount: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip where an ext4 image cannot be mounted through a loop device and made to fail."""
    missing = [name for name in ("mkfs.ext4", "e2fsck") if shutil.which(name) is None]
    if missing:
        pytest.skip(f"needs e2fsprogs' {' and '.join(missing)} to make and check an ext4 image")
    folder = tmp_path_factory.mktemp("ext4")
    image = make_ext4(folder / "probe.ext4", 8 << 20)
    try:
        with mounted(folder / "mnt", f"mount -o loop {image}") as ns:
            trigger = error_trigger(ns.device())
            if not trigger.exists():
                pytest.skip(f"this kernel's ext4 has no {trigger} to fail a filesystem with")
    except RuntimeError as exc:
        pytest.skip(f"cannot mount an ext4 image through a loop device (`mount -o loop`): {exc}")


def serve_in(ns: Namespace, tmp_path: Path, moto_url: str) -> ServedProxy:
    """`keyledger serve` inside ``ns``, journal in ``ns.folder``, with identity app made."""
    prepared = prepare_config(tmp_path, moto_url)
    assert prepared.path.parent / "audit" == ns.folder  # the journal prepare_config sets
    created = subprocess.run(
        [*KEYLEDGER, "identity", "create", "app", "--config", str(prepared.path)],
        env=prepared.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    fields = {line[:18].strip(): line[18:].strip() for line in created.stdout.splitlines() if line}
    log = tmp_path / "keyledger.log"
    # As spawn_serve does it: stderr copied to the log by a thread, so it never blocks.
    process = subprocess.Popen(
        ns.command(*KEYLEDGER, "serve", "--config", str(prepared.path)),
        env=prepared.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def copy(stream: IO[bytes]) -> None:
        with stream, log.open("ab") as out:
            for line in stream:
                out.write(line)
                out.flush()

    assert process.stderr is not None
    threading.Thread(target=copy, args=(process.stderr,), daemon=True).start()
    wait_listening(process, prepared.port, log)
    # SIGTERM must reach keyledger itself, not a wrapper.
    assert b"keyledger" in Path(f"/proc/{process.pid}/cmdline").read_bytes()
    return ServedProxy(
        url=f"http://127.0.0.1:{prepared.port}",
        journal_dir=ns.folder,
        env=prepared.env,
        config=prepared.path,
        process=process,
        key_id=fields["access key id"],
        secret=fields["secret access key"],
        admin_url=f"http://127.0.0.1:{prepared.admin_port}",
        admin_token=prepared.admin_token,
        log=log,
    )


def attempt(client: Any, value: str) -> str:
    """One read: SERVED, or the error code and HTTP status (whose body holds no value)."""
    try:
        got = client.get_secret_value(SecretId=SECRET)["SecretString"]
    except ClientError as exc:
        refused = exc.response
    else:
        assert got == value
        return SERVED
    assert value not in repr(refused)
    return f"{refused['Error']['Code']} {refused['ResponseMetadata']['HTTPStatusCode']}"


def burst(clients: list[Any], value: str) -> Counter[str]:
    """READS_EACH reads on each client at once, one thread per client."""
    with ThreadPoolExecutor(len(clients)) as pool:
        each = pool.map(lambda c: [attempt(c, value) for _ in range(READS_EACH)], clients)
        return Counter(outcome for outcomes in each for outcome in outcomes)


def resume(client: Any, value: str, counts: Counter[str]) -> float | None:
    """Read until served (seconds taken) or RECOVERY_S pass (None); every read counted."""
    began = time.monotonic()
    while True:
        outcome = attempt(client, value)
        counts[outcome] += 1
        if outcome == SERVED:
            return time.monotonic() - began
        assert outcome == UNAVAILABLE
        if time.monotonic() - began > RECOVERY_S:
            return None
        time.sleep(0.05)


def write_failed(logs: str, error: str) -> bool:
    """Whether keyledger logged a journal write refused with ``error``."""
    return f'"error":"{error}","event":"journal_write_failed"' in logs


def served_reads(directory: Path) -> int:
    """Reads the journal records as answered with the value."""
    return sum(
        1
        for event in journal_events(directory, "access")
        if event["request"]["operation"] == "GetSecretValue"
        and event["outcome"]["status"] == "success"
    )


def assert_verifies_strict(directory: Path, tmp_path: Path) -> None:
    public_key = tmp_path / "keys" / "checkpoint.pub"
    result = verify(directory, "--public-key", str(public_key), "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intact" in result.stdout


def assert_unready_for_the_journal(unready: tuple[int, Any], *words: str) -> None:
    status, body = unready
    assert status == 503, unready
    checks = body["checks"]
    assert checks["journal"]["ok"] is False, checks
    for word in words:
        assert word in checks["journal"]["detail"], checks
    assert all(checks[name]["ok"] for name in ("config", "policy", "backend")), checks


@pytest.mark.usefixtures("can_mount")
class TestFullDisk:
    def test_a_full_tmpfs_refuses_what_it_cannot_record_and_recovers_when_freed(
        self, tmp_path: Path, moto_url: str, store: Any
    ) -> None:
        """The journal's filesystem fills up under concurrent reads: every read that could
        not be recorded gets the protocol's 503 and no value, /readyz says why, and once
        space is freed the proxy serves again by itself, its chain whole."""
        value = f"guarded-{secrets.token_hex(8)}"
        store.create_secret(Name=SECRET, SecretString=value)
        counts: Counter[str] = Counter()
        with mounted(tmp_path / "audit", f"mount -t tmpfs -o size={TMPFS_SIZE} journal") as ns:
            served = serve_in(ns, tmp_path, moto_url)
            try:
                clients = [served.client() for _ in range(THREADS)]
                counts[attempt(clients[0], value)] += 1
                assert counts == {SERVED: 1}
                assert admin_get(served, "/readyz")[0] == 200

                # Short of space: no longer ready, while every read is still recorded.
                low = ns.free_bytes() - (8 << 20)
                ns.run("fallocate", f"--length={low}", str(ns.folder / "filler-1"))
                short = admin_get(served, "/readyz")
                assert_unready_for_the_journal(short, str(ns.folder))
                assert re.fullmatch(
                    rf"\d+ MiB free in {re.escape(str(ns.folder))}, under "
                    rf"{MIN_FREE_BYTES >> 20} MiB",
                    short[1]["checks"]["journal"]["detail"],
                ), short
                counts[attempt(clients[0], value)] += 1
                assert counts == {SERVED: 2}

                # Full: dd writes until the filesystem has no block left. What still fits in
                # the last page of the journal's file may be written and served.
                filler = ns.folder / "filler-2"
                dd = ns.run("dd", "if=/dev/zero", f"of={filler}", "bs=64k", check=False)
                assert b"No space left on device" in dd.stderr, dd.stderr
                assert ns.free_bytes() == 0
                full = burst(clients, value)
                counts += full
                assert set(full) <= {SERVED, UNAVAILABLE}, full
                assert full[UNAVAILABLE] >= THREADS * READS_EACH - 10, full
                unready = admin_get(served, "/readyz")
                assert_unready_for_the_journal(unready, "No space left on device")

                # Freed: reads resume with no restart and no signal.
                ns.run("rm", str(ns.folder / "filler-1"), str(filler))
                assert resume(clients[0], value, counts) is not None, "no recovery once freed"
                ready = admin_get(served, "/readyz")
                assert ready[0] == 200, ready
                after = burst(clients, value)
                counts += after
                assert after == {SERVED: THREADS * READS_EACH}
            finally:
                code, logs = served.stop()
            journal = ns.copy_out(tmp_path / "journal-copy")
        assert code == 0, logs
        assert write_failed(logs, "No space left on device")
        assert_verifies_strict(journal, tmp_path)
        # Not one value went out without its event, nor is there an event for a refused read.
        assert served_reads(journal) == counts[SERVED]
        mended = [e["detail"]["event"] for e in journal_events(journal, "lifecycle")]
        assert "journal_writable" in mended


class NoRecovery(AssertionError):
    """The proxy did not serve again by itself once its journal folder was writable."""


@dataclass
class ReadOnlyRun:
    counts: Counter[str]  # every read's outcome
    busy: subprocess.CompletedProcess[bytes]  # `mount -o remount,ro` while keyledger runs
    read_only: Counter[str]  # the burst once the filesystem turned read-only
    unready: tuple[int, Any]  # /readyz then
    resumed_after: float | None  # seconds from the repair to the first read served
    ready: tuple[int, Any]  # /readyz after that
    after: Counter[str]  # a burst after that
    code: int
    logs: str
    journal: Path  # the repaired folder, copied once keyledger stopped


def read_only_then_repaired(tmp_path: Path, moto_url: str, store: Any) -> ReadOnlyRun:
    """Serve from an ext4 image; fail it read-only under load; mount a checked copy."""
    value = f"guarded-{secrets.token_hex(8)}"
    store.create_secret(Name=SECRET, SecretString=value)
    image = make_ext4(tmp_path / "journal.ext4", EXT4_SIZE)
    counts: Counter[str] = Counter()
    with mounted(tmp_path / "audit", f"mount -o loop,errors=remount-ro {image}") as ns:
        served = serve_in(ns, tmp_path, moto_url)
        try:
            clients = [served.client() for _ in range(THREADS)]
            counts[attempt(clients[0], value)] += 1
            assert counts == {SERVED: 1}
            assert admin_get(served, "/readyz")[0] == 200

            busy = ns.run("mount", "-o", "remount,ro", str(ns.folder), check=False)
            counts[attempt(clients[0], value)] += 1
            assert counts == {SERVED: 2}

            error_trigger(ns.device()).write_text("keyledger test: the journal's disk failed\n")
            touched = ns.run("touch", str(ns.folder / "can-i-write"), check=False)
            assert b"Read-only file system" in touched.stderr, touched.stderr
            read_only = burst(clients, value)
            counts += read_only
            unready = admin_get(served, "/readyz")

            # The repair: detach the failed filesystem, mount a checked copy in its place.
            ns.run("umount", "--lazy", str(ns.folder))
            repaired = tmp_path / "repaired.ext4"
            subprocess.run(
                ["cp", "--sparse=always", str(image), str(repaired)], check=True, timeout=60
            )
            fsck = subprocess.run(
                ["e2fsck", "-f", "-y", str(repaired)], capture_output=True, timeout=60, check=False
            )
            assert fsck.returncode in (0, 1), fsck  # 1: errors found and corrected
            ns.run("mount", "-o", "loop,errors=remount-ro", str(repaired), str(ns.folder))
            resumed_after = resume(clients[0], value, counts)
            ready = admin_get(served, "/readyz")
            after = burst(clients, value)
            counts += after
            assert set(after) <= {SERVED, UNAVAILABLE}, after
        finally:
            code, logs = served.stop()
        journal = ns.copy_out(tmp_path / "journal-copy")
    image.unlink()  # 100 MiB each, for pytest to keep three runs of
    repaired.unlink()
    return ReadOnlyRun(
        counts, busy, read_only, unready, resumed_after, ready, after, code, logs, journal
    )


@pytest.mark.usefixtures("can_mount_ext4")
class TestReadOnly:
    def test_a_folder_turned_read_only_refuses_every_read_and_keeps_its_chain(
        self, tmp_path: Path, moto_url: str, store: Any
    ) -> None:
        """A journal folder the kernel turns read-only (ext4 after an I/O error) under
        concurrent reads: each read gets the protocol's 503 and no value, /readyz names the
        journal, and the chain on the repaired filesystem verifies under --strict with an
        event for every value served."""
        run = read_only_then_repaired(tmp_path, moto_url, store)
        # No operator can do this to a running keyledger: its files are open for writing.
        assert run.busy.returncode != 0
        assert b"busy" in run.busy.stderr, run.busy.stderr
        assert run.read_only == {UNAVAILABLE: THREADS * READS_EACH}
        assert_unready_for_the_journal(run.unready, str(tmp_path / "audit"))
        assert run.code == 0, run.logs
        assert write_failed(run.logs, "Read-only file system")
        assert_verifies_strict(run.journal, tmp_path)
        assert served_reads(run.journal) == run.counts[SERVED]

    def test_a_folder_writable_again_is_used_again_by_itself(
        self, tmp_path: Path, moto_url: str, store: Any
    ) -> None:
        """Once a checked copy of the failed filesystem is mounted in its place, reads are
        served again within seconds, with no restart and no signal."""
        run = read_only_then_repaired(tmp_path, moto_url, store)
        if run.resumed_after is None:
            raise NoRecovery(
                f"no read served {RECOVERY_S:g} s after the repair; /readyz then: {run.ready}"
            )
        assert run.ready[0] == 200, run.ready
        assert run.after == {SERVED: THREADS * READS_EACH}
