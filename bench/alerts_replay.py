"""How fast `keyledger alerts run` replays a journal through alert rules, and whether it
reports what the live path reported.

    python bench/alerts_replay.py [--events 1000000] [--rules keyledger/alerts/examples/demo]

Generates a week of one chain's history (access events from 50 services over 200 secrets,
5% denied, 1% failed sign-ins, a few canary touches), sealed as the journal seals them,
into a temporary folder. Then, in one run:

- live:   every line parsed and fed to the engine in chain order, as the proxy's alert
          service does with its journal's durable lines (in-process, no I/O);
- replay: the whole `keyledger alerts run SOURCE --rules ... --json` command, start-up
          included, its alerts compared with the live path's, one for one.

Prints events/s for both; exits 1 if the two disagree.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from keyledger.alerts.engine import AlertEngine
from keyledger.alerts.rules import example_rules_dir
from keyledger.alerts.service import load_rules
from keyledger.proxy.audit.chain import ChainState, seal
from keyledger.proxy.audit.events import (
    AuditEvent,
    DecisionInfo,
    EventType,
    Outcome,
    PrincipalInfo,
    RequestInfo,
    ResourceInfo,
    Status,
)
from keyledger.proxy.audit.segments import segment_path

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
WEEK_S = 7 * 86400.0


def generate(folder: Path, count: int, *, seed: int = 7) -> Path:
    """``count`` events of one chain ("bench") over a week, in time order."""
    rng = random.Random(seed)
    principals = [f"svc-{i}" for i in range(50)] + ["demo-app"]
    secrets = [f"prod/app-{i}/db" for i in range(100)] + [
        f"staging/app-{i}/key" for i in range(100)
    ]
    state = ChainState("bench")
    path = segment_path(folder, "bench", 1)
    step = WEEK_S / count
    with path.open("wb") as out:
        for n in range(count):
            at = START + timedelta(seconds=n * step)
            request = RequestInfo(
                id=f"r{n}",
                protocol="aws-json",
                operation="GetSecretValue",
                source_ip=f"10.0.{rng.randrange(4)}.{rng.randrange(250)}",
                user_agent="Boto3/1.34",
            )
            roll = rng.random()
            if roll < 0.01:
                event = AuditEvent(
                    type=EventType.AUTH_FAILURE,
                    time=at,
                    request=request,
                    principal=PrincipalInfo(
                        id=None, auth_method="sigv4", attributes={"access_key_id": "AKKLX"}
                    ),
                    outcome=Outcome(status=Status.DENIED, code="unknown_access_key"),
                )
            else:
                denied = roll < 0.05
                secret = "prod/db/admin-password-old" if roll > 0.99999 else rng.choice(secrets)
                event = AuditEvent(
                    type=EventType.ACCESS,
                    time=at,
                    request=request,
                    principal=PrincipalInfo(id=rng.choice(principals), auth_method="sigv4"),
                    action="read",
                    resource=ResourceInfo(backend="aws", secret=secret),
                    decision=DecisionInfo(
                        effect="deny" if denied else "allow",
                        rule=None if denied else "apps-read",
                        policy_hash="sha256:" + "ab" * 32,
                        reason="",
                    ),
                    outcome=Outcome(
                        status=Status.DENIED if denied else Status.SUCCESS,
                        latency_ms=1.2,
                        value_fingerprint=None if denied else "hmac-sha256:" + "cd" * 32,
                    ),
                )
            line, state = seal(event.to_record(), state)
            out.write(line)
    return path


def live(path: Path, rules: Path) -> tuple[list[dict[str, object]], float]:
    """The alerts the proxy's service would raise, line by line; and the seconds it took."""
    engine = AlertEngine(load_rules([rules]))
    alerts: list[dict[str, object]] = []
    started = time.perf_counter()
    with path.open("rb") as lines:
        for line in lines:
            alerts.extend(a.as_json() for a in engine.feed(orjson.loads(line)))
    return alerts, time.perf_counter() - started


def replay(folder: Path, rules: Path) -> tuple[list[dict[str, object]], float]:
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyledger",
            "alerts",
            "run",
            str(folder),
            "--rules",
            str(rules),
            "--json",
        ],
        capture_output=True,
        check=True,
    )
    elapsed = time.perf_counter() - started
    return [orjson.loads(line) for line in done.stdout.splitlines()], elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rules", type=Path, default=example_rules_dir())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keyledger-alerts-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        path = generate(folder, args.events)
        made = time.perf_counter() - started
        size = path.stat().st_size
        print(f"journal: {args.events:,} events, {size / 2**20:.0f} MiB, made in {made:.1f}s")
        live_alerts, live_s = live(path, args.rules)
        replayed, replay_s = replay(folder, args.rules)
    print(f"live path:      {args.events / live_s:>10,.0f} events/s  ({live_s:.1f}s)")
    print(
        f"alerts run:     {args.events / replay_s:>10,.0f} events/s  ({replay_s:.1f}s, start-up in)"
    )
    print(f"alerts: {len(live_alerts):,} live, {len(replayed):,} replayed")
    if live_alerts != replayed:
        print("the replay disagrees with the live path", file=sys.stderr)
        return 1
    print("the replay reports exactly the live path's alerts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
