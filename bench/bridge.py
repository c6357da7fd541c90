"""The bridge client's throughput, each figure a ratio against a baseline of the same run.

1. ingest: a WebSocket server on a free port sends N bridge ``event`` messages (the
   wire's own encoding, a realistic log event each); the client — protocol, dedupe,
   acknowledgements and the sqlite sink committing events and cursor together —
   against a bare ``websockets`` receive loop over the very same frames (target
   >= 0.5);
2. dynamodb sink: the same log items through the sink (waves of 25, one version of a
   stream per call) against raw BatchWriteItem calls of 25 on the same endpoint (an
   embedded moto server, in a process of its own) (target >= 0.8);
3. append -> sink latency through `bridge offline` (a subprocess) and the bridge:
   sequential appends to the log, each timed until the client's sqlite sink has
   committed it — p50 and p99 (targets <= 150 ms and <= 400 ms);
4. append -> handler latency with the bridge on and no session open, beside the same
   figure with `--no-bridge`, in the same run (what the bridge costs the pipeline).

    .venv/bin/python bench/bridge.py [--events 20000] [--items 2000] [--appends 500]
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/bridge.py`, this file's folder comes first on sys.path and its
# name would shadow the `bridge` package: take the folder off before importing it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import websockets
from boto3.dynamodb.types import TypeSerializer
from botocore.credentials import ReadOnlyCredentials

from bridge.client.connection import BridgeClient, ClientOptions
from bridge.client.presign import presign
from bridge.client.sinks import DynamoDBSink, SqliteSink, StateFile
from bridge.core import wire
from bridge.core.rewrite import log_item_of
from bridge.offline.dynamodb import DynamoDBProcess
from bridge.offline.ports import free_port
from bridge.store import LogStore, create_tables


def log_event(n: int) -> dict:
    id = f"u{n % 5000}"
    return {
        "version": "0",
        "id": str(uuid.UUID(int=n)),
        "source": "dynamodb-log",
        "detail-type": "stream changes",
        "account": "123456789012",
        "time": "2026-12-01T10:00:00Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": {
            "log": "users",
            "key": {"pk": f"users#{id}#stream", "sk": n // 5000 + 1},
            "type": "signup",
            "payload": {"id": id, "name": f"user {n}", "email": f"u{n}@example.com"},
        },
    }


def frames(count: int) -> list[str]:
    return [
        wire.encode(wire.Event(n, str(uuid.UUID(int=n)), log_event(n))) for n in range(1, count + 1)
    ]


async def serve(texts: list[str], protocol: bool) -> tuple[websockets.Server, str]:
    """A server that sends ``texts``: after the client's resume (speaking the bridge
    protocol), or at once (for the bare loop)."""

    async def handler(socket) -> None:
        if not protocol:
            for text in texts:
                await socket.send(text)
            await socket.close()
            return
        async for message in socket:
            request = wire.decode(message)
            if isinstance(request, wire.Hello):
                await socket.send(wire.encode(wire.Welcome(1, request.session, 0, len(texts) + 1)))
            elif isinstance(request, wire.Subscribe):
                await socket.send(wire.encode(wire.Subscribed(request.pattern, request.replay)))
            elif isinstance(request, wire.Resume):
                for text in texts:
                    await socket.send(text)
                await socket.send(wire.encode(wire.Resumed(len(texts))))

    server = await websockets.serve(handler, "127.0.0.1", 0, compression=None, max_size=None)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/bench"


async def bare_loop(texts: list[str]) -> float:
    server, url = await serve(texts, protocol=False)
    started = time.perf_counter()
    received = 0
    async with websockets.connect(url, compression=None, max_size=None) as socket:
        async for _ in socket:
            received += 1
    elapsed = time.perf_counter() - started
    server.close()
    assert received == len(texts)
    return elapsed


async def client_ingest(texts: list[str], db: Path) -> float:
    server, url = await serve(texts, protocol=True)
    sink = SqliteSink(db, "bench")
    stop = asyncio.Event()
    client = BridgeClient(ClientOptions(url=url, session="bench"), sink, lambda u: u)
    started = time.perf_counter()
    task = asyncio.create_task(client.run(stop))
    while client.totals.cursor < len(texts):
        await asyncio.sleep(0.005)
        if task.done():
            task.result()
    elapsed = time.perf_counter() - started
    stop.set()
    totals = await task
    server.close()
    assert totals.written == len(texts), totals
    return elapsed


def sink_vs_raw(items_count: int, rounds: int = 3) -> tuple[float, float]:
    """Median seconds of raw BatchWriteItem and of the sink over the same items, in
    alternating rounds on fresh tables of one server (after a warm-up of both).

    moto runs in a process of its own, as `bridge offline` runs it: from a thread of
    this process it would share the interpreter lock with the sink being measured."""
    server = DynamoDBProcess(port=0).start()
    try:
        options = {
            "endpoint_url": server.url,
            "region_name": "us-east-1",
            "aws_access_key_id": "x",
            "aws_secret_access_key": "x",
        }
        client = boto3.client("dynamodb", **options)
        resource = boto3.resource("dynamodb", **options)
        events = [log_event(n) for n in range(1, items_count + 1)]
        serializer = TypeSerializer()

        def raw(stage: str) -> float:
            create_tables(resource, f"{stage}-dynamodb-logs", f"{stage}-core")
            began = time.perf_counter()
            items = [log_item_of(event) for event in events]
            for start in range(0, len(items), 25):
                requests = [
                    {"PutRequest": {"Item": {k: serializer.serialize(v) for k, v in i.items()}}}
                    for i in items[start : start + 25]
                ]
                pending = {f"{stage}-dynamodb-logs": requests}
                while pending:
                    answer = client.batch_write_item(RequestItems=pending)
                    pending = answer.get("UnprocessedItems")
            return time.perf_counter() - began

        def through_sink(stage: str, tmp: Path) -> float:
            create_tables(resource, f"{stage}-dynamodb-logs", f"{stage}-core")
            sink = DynamoDBSink(client, stage, StateFile(tmp / f"{stage}.json", "bench"))

            async def write() -> float:
                await sink.open()
                began = time.perf_counter()
                for start in range(0, len(events), 1000):
                    await sink.write(events[start : start + 1000], start + 1000)
                return time.perf_counter() - began

            return asyncio.run(write())

        with tempfile.TemporaryDirectory() as tmp:
            raw("warmraw"), through_sink("warmsink", Path(tmp))
            raws, sinks = [], []
            for n in range(rounds):
                raws.append(raw(f"raw{n}"))
                sinks.append(through_sink(f"sink{n}", Path(tmp)))
        return statistics.median(raws), statistics.median(sinks)
    finally:
        server.stop()


HANDLER = """
import json, os, time

def handler(event, context):
    seen = time.time()
    key = event["detail"]["key"]
    with open(os.environ["SEEN_FILE"], "a") as out:
        out.write(json.dumps({"pk": key["pk"], "sk": key["sk"], "t": seen}) + "\\n")
"""
CONFIG = """
[functions.latency]
handler = "latency_handler.handler"
pattern = { source = ["dynamodb-log"], detail = { log = ["bench"] } }
retry_attempts = 0
environment = { SEEN_FILE = "%s" }
"""


class Offline:
    """`bridge offline` in a temporary folder on free ports, with a handler that notes
    when each event reached it."""

    def __init__(self, *flags: str) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-bridge-")
        self.dir = Path(self.tmp.name)
        self.seen = self.dir / "seen.jsonl"
        (self.dir / "dynamodb-logs.toml").write_text(CONFIG % self.seen)
        (self.dir / "latency_handler.py").write_text(HANDLER)
        self.ports = {name: free_port() for name in ("dynamodb", "events", "ws", "bridge")}
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("bridge")),
                "offline",
                "--json",
                "--quiet",
                *("--dynamodb-port", str(self.ports["dynamodb"])),
                *("--events-port", str(self.ports["events"])),
                *("--ws-port", str(self.ports["ws"])),
                *("--bridge-port", str(self.ports["bridge"])),
                *flags,
            ],
            cwd=self.dir,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        if not self.process.stdout or not self.process.stdout.readline():
            raise SystemExit("bridge offline did not start")
        self.store = LogStore(
            boto3.resource(
                "dynamodb",
                endpoint_url=f"http://127.0.0.1:{self.ports['dynamodb']}",
                region_name="us-east-1",
                aws_access_key_id="local",
                aws_secret_access_key="local",
            ).Table("local-dynamodb-logs")
        )

    @property
    def bridge_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports['bridge']}/local"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=120)
        self.tmp.cleanup()


def handler_latency(offline: Offline, appends: int) -> list[float]:
    """Milliseconds from the start of each append to the subscribed handler's run."""
    started: dict[tuple[str, int], float] = {}
    for n in range(appends):
        id, version = f"b{n % 20}", n // 20 + 1
        started[(f"bench#{id}#stream", version)] = time.time()
        offline.store.append("bench", id, "tick", {"id": id, "n": n}, expected_version=version - 1)
    seen: dict[tuple[str, int], float] = {}
    deadline = time.time() + 120
    while len(seen) < appends and time.time() < deadline:
        time.sleep(0.2)
        lines = offline.seen.read_text().splitlines() if offline.seen.exists() else []
        for line in lines:
            record = json.loads(line)
            seen.setdefault((record["pk"], record["sk"]), record["t"])
    if len(seen) < appends:
        raise SystemExit(f"only {len(seen)} of {appends} events reached the handler")
    return sorted((seen[key] - started[key]) * 1000 for key in started)


WARM_UP = 100


class TimedSink(SqliteSink):
    """The real sqlite sink, noting when each event's transaction committed."""

    committed: dict[tuple[str, int], float]

    async def write(self, events, through, texts=None):  # type: ignore[no-untyped-def]
        result = await super().write(events, through, texts)
        now = time.time()
        for event in events:
            key = event["detail"]["key"]
            self.committed.setdefault((key["pk"], int(key["sk"])), now)
        return result


async def sink_latency(offline: Offline, appends: int, db: Path) -> list[float]:
    """Milliseconds from the start of each append until the client's sink committed it."""
    sink = TimedSink(db, "bench")
    sink.committed = {}
    credentials = ReadOnlyCredentials("local", "local", None)
    client = BridgeClient(
        ClientOptions(
            url=offline.bridge_url,
            session="bench",
            pattern={"detail": {"log": ["warmup", "bench"]}},
        ),
        sink,
        lambda url: presign(url, credentials, "us-east-1"),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    await asyncio.wait_for(client.ready.wait(), 60)
    # A warm-up round first, not counted: offline warms one sandbox per function, and a
    # burst makes it start the others (cold starts, ~0.5 s each) that AWS would have warm.
    for log, count in (("warmup", WARM_UP), ("bench", appends)):
        started = await append_burst(offline, log, count)
        deadline = time.time() + 120
        while not started.keys() <= sink.committed.keys() and time.time() < deadline:
            await asyncio.sleep(0.05)
        missing = started.keys() - sink.committed.keys()
        if missing:
            stop.set()
            await task
            raise SystemExit(f"{len(missing)} of {count} {log} events never reached the sink")
    stop.set()
    await task
    return sorted((sink.committed[key] - started[key]) * 1000 for key in started)


async def append_burst(offline: Offline, log: str, count: int) -> dict[tuple[str, int], float]:
    """Append ``count`` events one after the other; when each append started."""
    started: dict[tuple[str, int], float] = {}
    for n in range(count):
        id, version = f"s{n % 20}", n // 20 + 1
        started[(f"{log}#{id}#stream", version)] = time.time()
        await asyncio.to_thread(
            offline.store.append, log, id, "tick", {"id": id, "n": n}, expected_version=version - 1
        )
    return started


def percentiles(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), values[max(0, int(len(values) * 0.99) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--appends", type=int, default=500)
    args = parser.parse_args()

    texts = frames(args.events)
    bare = asyncio.run(bare_loop(texts))
    with tempfile.TemporaryDirectory() as tmp:
        ingest = asyncio.run(client_ingest(texts, Path(tmp) / "bridge.db"))
    ratio = bare / ingest
    print(
        f"ingest: {args.events} events, bare websockets {args.events / bare:,.0f}/s, "
        f"client into sqlite {args.events / ingest:,.0f}/s: ratio {ratio:.2f} (target >= 0.5)"
    )
    raw, sink = sink_vs_raw(args.items)
    sink_ratio = raw / sink
    print(
        f"dynamodb sink: {args.items} items, raw BatchWriteItem {args.items / raw:,.0f}/s, "
        f"sink {args.items / sink:,.0f}/s: ratio {sink_ratio:.2f} (target >= 0.8)"
    )

    offline = Offline()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            to_sink = asyncio.run(sink_latency(offline, args.appends, Path(tmp) / "b.db"))
        on = handler_latency(offline, args.appends)
    finally:
        offline.stop()
    offline = Offline("--no-bridge")
    try:
        off = handler_latency(offline, args.appends)
    finally:
        offline.stop()
    p50, p99 = percentiles(to_sink)
    print(
        f"append -> sink over {args.appends} sequential appends: p50 {p50:.0f} ms, "
        f"p99 {p99:.0f} ms (targets <= 150 / <= 400 ms)"
    )
    on50, on99 = percentiles(on)
    off50, off99 = percentiles(off)
    print(
        f"append -> handler, bridge on and no session open: p50 {on50:.0f} ms, p99 "
        f"{on99:.0f} ms; bridge off: p50 {off50:.0f} ms, p99 {off99:.0f} ms "
        f"(p50 ratio on/off {on50 / off50:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
