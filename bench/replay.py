"""`bridge replay --from sqlite`, each figure a ratio against a baseline of the same run.

1. sqlite -> bus: the replay (keyset pages, entries with their own time and the
   ``replay-name`` extension, PutEvents of 10) into `bridge offline`'s bus, against raw
   PutEvents calls of the very same entries, prebuilt in memory, to the same bus
   (target >= 0.8);
2. sqlite -> dynamodb: the replay into ``{stage}-dynamodb-logs`` (waves of 25, one
   version of a stream per call) against raw BatchWriteItem calls of 25 of the same
   items on the same endpoint, the embedded moto server in a process of its own, as
   `bridge offline` runs it (target >= 0.8);
3. memory: peak RSS of a process replaying an archive of ``--big`` events (1,000,000 by
   default, written straight into SQLite: the pipeline would take hours) to a null
   target (target < 200 MB), its events/s beside a bare SQLite read of the same rows
   (``SELECT`` in key order, nothing parsed) in a process of its own.

Rounds alternate replay and baseline on fresh tables so the machine's noise falls on
both; the figure is the ratio of the medians.

    .venv/bin/python bench/replay.py [--events 10000] [--items 2000] [--big 1000000]
"""

# ruff: noqa: E402 - sys.path is fixed before the package is imported (see below)
from __future__ import annotations

import os
import sys

# Run as `python bench/replay.py`, this folder would come first on sys.path and
# bench/bridge.py would shadow the `bridge` package: take the folder off first.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import json
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from boto3.dynamodb.types import TypeSerializer

from bridge import archive
from bridge.core.events import batches
from bridge.core.replay_filter import ReplayFilter
from bridge.core.rewrite import entry_of, log_item_of
from bridge.offline.dynamodb import DynamoDBProcess
from bridge.offline.ports import free_port
from bridge.replay import run_replay
from bridge.replay_targets import BusTarget, DynamoDBTarget, with_replay_name
from bridge.store import create_tables

T0 = datetime(2026, 11, 1, tzinfo=UTC)
LOCAL = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
# No subscriber matches the bench's events: the figures are the bus's intake, not handlers.
CONFIG = """
[functions.idle]
handler = "idle.handler"
pattern = { source = ["nobody"] }
"""


def log_event(n: int) -> dict:
    id = f"u{n % 5000}"
    return {
        "version": "0",
        "id": str(uuid.UUID(int=n)),
        "source": "dynamodb-log",
        "detail-type": "stream changes",
        "account": "000000000000",
        "time": (T0 + timedelta(seconds=n // 10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "log": "users",
            "key": {"pk": f"users#{id}#stream", "sk": n // 5000 + 1},
            "type": "signup",
            "payload": {"id": id, "name": f"user {n}", "email": f"u{n}@example.com"},
        },
    }


def write_archive(path: Path, count: int, chunk: int = 20_000) -> None:
    """``count`` log events straight into an archive file, in chunks (never all at once)."""
    conn = archive.connect(path)
    try:
        for start in range(0, count, chunk):
            with conn:
                archive.insert_events(
                    conn, (log_event(n) for n in range(start + 1, min(count, start + chunk) + 1))
                )
    finally:
        conn.close()


# --------------------------------------------------------------------------- 1. bus


class Offline:
    """`bridge offline --no-bridge` in a temporary folder on free ports."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-replay-")
        folder = Path(self.tmp.name)
        (folder / "dynamodb-logs.toml").write_text(CONFIG)
        (folder / "idle.py").write_text("def handler(event, context):\n    return None\n")
        self.ports = {name: free_port() for name in ("dynamodb", "events", "ws", "bridge")}
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("bridge")),
                "offline",
                "--json",
                "--quiet",
                "--no-bridge",
                *("--dynamodb-port", str(self.ports["dynamodb"])),
                *("--events-port", str(self.ports["events"])),
                *("--ws-port", str(self.ports["ws"])),
                *("--bridge-port", str(self.ports["bridge"])),
            ],
            cwd=folder,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"},
        )
        if not self.process.stdout or not self.process.stdout.readline():
            raise SystemExit("bridge offline did not start")
        self.url = f"http://127.0.0.1:{self.ports['events']}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=120)
        self.tmp.cleanup()


def bus_vs_raw(db: Path, count: int, rounds: int = 3) -> tuple[float, float]:
    offline = Offline()
    try:
        events = [log_event(n) for n in range(1, count + 1)]

        def raw(name: str) -> float:
            client = with_replay_name(
                boto3.client("events", endpoint_url=offline.url, **LOCAL), name
            )
            entries = [entry_of(event, keep_time=True) for event in events]
            began = time.perf_counter()
            for batch in batches(entries):
                answer = client.put_events(Entries=batch)
                assert not answer["FailedEntryCount"], answer
            return time.perf_counter() - began

        def replayed(name: str) -> float:
            client = boto3.client("events", endpoint_url=offline.url, **LOCAL)
            target = BusTarget(client, offline.url, name)
            began = time.perf_counter()
            summary = run_replay(db, ReplayFilter(), target)
            assert summary.sent == count, summary
            return time.perf_counter() - began

        raw("warm-raw"), replayed("warm-replay")
        raws, replays = [], []
        for n in range(rounds):
            raws.append(raw(f"raw-{n}"))
            replays.append(replayed(f"replay-{n}"))
        return statistics.median(raws), statistics.median(replays)
    finally:
        offline.stop()


# --------------------------------------------------------------------------- 2. dynamodb


def dynamodb_vs_raw(db: Path, count: int, rounds: int = 3) -> tuple[float, float]:
    # moto in a process of its own, as `bridge offline` runs it: served from a thread
    # of this process it would share the interpreter lock with the client measured.
    server = DynamoDBProcess(port=0).start()
    try:
        client = boto3.client("dynamodb", endpoint_url=server.url, **LOCAL)
        resource = boto3.resource("dynamodb", endpoint_url=server.url, **LOCAL)
        events = [log_event(n) for n in range(1, count + 1)]
        serializer = TypeSerializer()

        def raw(stage: str) -> float:
            create_tables(resource, f"{stage}-dynamodb-logs", f"{stage}-core")
            began = time.perf_counter()
            items = [log_item_of(event) for event in events]
            for start in range(0, len(items), 25):
                requests = [
                    {"PutRequest": {"Item": {k: serializer.serialize(v) for k, v in i.items()}}}
                    for i in items[start : start + 25]
                    if i is not None
                ]
                pending = {f"{stage}-dynamodb-logs": requests}
                while pending:
                    pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems")
            return time.perf_counter() - began

        def replayed(stage: str) -> float:
            create_tables(resource, f"{stage}-dynamodb-logs", f"{stage}-core")
            target = DynamoDBTarget(client, f"{stage}-dynamodb-logs", server.url)
            began = time.perf_counter()
            summary = run_replay(db, ReplayFilter(), target)
            assert summary.sent == count, summary
            return time.perf_counter() - began

        raw("warmraw"), replayed("warmreplay")
        raws, replays = [], []
        for n in range(rounds):
            raws.append(raw(f"raw{n}"))
            replays.append(replayed(f"replay{n}"))
        return statistics.median(raws), statistics.median(replays)
    finally:
        server.stop()


# --------------------------------------------------------------------------- 3. memory

# Peak RSS from /proc: VmHWM starts afresh at exec, where getrusage's ru_maxrss keeps
# the high-water mark of the process that forked (here: the bench with its servers).
PEAK = """
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
"""
NULL_REPLAY = (
    PEAK
    + """
import json, sys, time
from pathlib import Path
from bridge.core.replay_filter import ReplayFilter
from bridge.replay import run_replay
from bridge.replay_targets import NullTarget
began = time.perf_counter()
summary = run_replay(Path(sys.argv[1]), ReplayFilter(), NullTarget())
seconds = time.perf_counter() - began
print(json.dumps({"events": summary.sent, "seconds": seconds, "rss": peak()}))
"""
)
BARE_READ = (
    PEAK
    + """
import json, sqlite3, sys, time
began = time.perf_counter()
conn = sqlite3.connect(sys.argv[1])
n = 0
for _ in conn.execute("SELECT seq, createdAt, event FROM events ORDER BY createdAt, seq"):
    n += 1
seconds = time.perf_counter() - began
print(json.dumps({"events": n, "seconds": seconds, "rss": peak()}))
"""
)


def child(code: str, db: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="sqlite -> bus")
    parser.add_argument("--items", type=int, default=2_000, help="sqlite -> dynamodb")
    parser.add_argument("--big", type=int, default=1_000_000, help="the memory figure")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        folder = Path(tmp)
        small = folder / "bus.db"
        write_archive(small, args.events)
        raw, replayed = bus_vs_raw(small, args.events)
        print(
            f"sqlite -> bus: {args.events} events, raw PutEvents {args.events / raw:,.0f}/s, "
            f"replay {args.events / replayed:,.0f}/s: ratio {raw / replayed:.2f} (target >= 0.8)"
        )
        items = folder / "items.db"
        write_archive(items, args.items)
        raw, replayed = dynamodb_vs_raw(items, args.items)
        print(
            f"sqlite -> dynamodb: {args.items} items, raw BatchWriteItem "
            f"{args.items / raw:,.0f}/s, replay {args.items / replayed:,.0f}/s: "
            f"ratio {raw / replayed:.2f} (target >= 0.8)"
        )
        big = folder / "big.db"
        began = time.perf_counter()
        write_archive(big, args.big)
        written = time.perf_counter() - began
        size = archive.size_bytes(big)
        with sqlite3.connect(big) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        bare = child(BARE_READ, big)
        null = child(NULL_REPLAY, big)
        assert null["events"] == bare["events"] == args.big, (null, bare)
        print(
            f"memory: {args.big:,} events ({size / 1e6:,.0f} MB, written in {written:.0f} s) "
            f"replayed to a null target: peak RSS {null['rss'] / 1e6:,.0f} MB (target < 200 MB), "
            f"{args.big / null['seconds']:,.0f} events/s; bare SQLite read "
            f"{args.big / bare['seconds']:,.0f} rows/s, peak RSS {bare['rss'] / 1e6:,.0f} MB: "
            f"ratio {bare['seconds'] / null['seconds']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
