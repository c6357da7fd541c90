"""The bridge client's throughput, each figure a ratio against a baseline of the same run.

1. ingest: a WebSocket server on a free port sends N bridge ``event`` messages (the
   wire's own encoding, a realistic log event each); the client — protocol, dedupe,
   acknowledgements and the sqlite sink committing events and cursor together —
   against a bare ``websockets`` receive loop over the very same frames (target
   >= 0.5);
2. dynamodb sink: the same log items through the sink (waves of 25, one version of a
   stream per call) against raw BatchWriteItem calls of 25 on the same endpoint (an
   embedded moto server) (target >= 0.8).

    .venv/bin/python bench/bridge.py [--events 20000] [--items 2000]
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
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import websockets
from boto3.dynamodb.types import TypeSerializer

from bridge.client.connection import BridgeClient, ClientOptions
from bridge.client.sinks import DynamoDBSink, SqliteSink, StateFile, log_item_of
from bridge.core import wire
from bridge.offline.dynamodb import EmbeddedDynamoDB
from bridge.store import create_tables


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
    alternating rounds on fresh tables of one server (after a warm-up of both)."""
    with EmbeddedDynamoDB(port=0) as server:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=2_000)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
