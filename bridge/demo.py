"""`bridge demo`: the whole pipeline on this machine, from nothing, with a summary.

Starts the local cloud in this process (free ports, a temporary SQLite file) and a
bridge client into a SQLite file of its own, generates fake users, and follows them
through stream → publisher → bus → users projection and archive, and over the bridge
(forward → WebSocket → client → sink). It checks that every event reached the sink
exactly once, then measures append → sink latency with a few single appends.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from botocore.credentials import ReadOnlyCredentials
from rich.console import Console

from bridge.archive import count as archived_count
from bridge.aws import Target
from bridge.client.connection import BridgeClient, ClientOptions
from bridge.client.presign import presign
from bridge.client.sinks import SqliteSink
from bridge.core.log import from_dynamo
from bridge.core.names import BUS_NAME
from bridge.lambdas.users_projection import read_model_key
from bridge.offline.cloud import LocalCloud, OfflineOptions
from bridge.store import LogStore
from bridge.subscriptions import load, project_root

LATENCY_APPENDS = 20


class _TimedSink(SqliteSink):
    """The client's sqlite sink, noting when each log event's transaction committed."""

    def __init__(self, path: Path, session_key: str) -> None:
        super().__init__(path, session_key)
        self.committed: dict[tuple[str, int], float] = {}

    async def write(self, events: Any, through: int, texts: Any = None) -> Any:
        result = await super().write(events, through, texts)
        now = time.perf_counter()
        for event in events:
            key = event.get("detail", {}).get("key") or {}
            if "pk" in key:
                self.committed.setdefault((key["pk"], int(key["sk"])), now)
        return result


def run_demo(users: int = 100, seed: int = 1, progress: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bridge-demo-") as tmp:
        return asyncio.run(_demo(users, seed, progress, Path(tmp) / "db"))


async def _start_client(cloud: LocalCloud, db: Path) -> tuple[BridgeClient, _TimedSink, Any]:
    url = cloud.bridge_url
    assert url is not None
    sink = _TimedSink(db.with_name("bridge.db"), "demo")
    credentials = ReadOnlyCredentials("local", "local", None)
    region = cloud.options.region
    client = BridgeClient(
        ClientOptions(url=url, session="demo"),
        sink,
        lambda plain: presign(plain, credentials, region),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    await asyncio.wait_for(client.ready.wait(), 60)
    return client, sink, (stop, task)


async def _bridge_latency(store: LogStore, sink: _TimedSink) -> list[float]:
    """Milliseconds from the start of each single append until the sink committed it."""
    latencies = []
    for n in range(LATENCY_APPENDS):
        started = time.perf_counter()
        await asyncio.to_thread(store.append, "demo", "latency", "tick", {"id": "latency", "n": n})
        key = ("demo#latency#stream", n + 1)
        deadline = started + 30
        while key not in sink.committed and time.perf_counter() < deadline:
            await asyncio.sleep(0.002)
        if key in sink.committed:
            latencies.append((sink.committed[key] - started) * 1000)
    return sorted(latencies)


async def _demo(users: int, seed: int, progress: bool, db: Path) -> dict[str, Any]:
    from bridge.cli import run_generate

    out = Console(quiet=not progress, soft_wrap=True)
    subscriptions = load(None)
    options = OfflineOptions(
        dynamodb_port=0, events_port=0, ws_port=0, bridge_port=0, db=db, keep_tables=False
    )  # all of it goes with the temporary folder
    cloud = LocalCloud(options, subscriptions, project_root(subscriptions))
    await cloud.start()
    try:
        out.print(
            f"[bold]1.[/] local cloud up: DynamoDB {cloud.dynamodb_url}, "
            f"EventBridge {cloud.events_url}, WebSocket {cloud.ws_url}"
        )
        client, sink, (stop, task) = await _start_client(cloud, db)
        out.print(f"     bridge client connected to {cloud.bridge_url}, writing {sink.path}")
        target = Target(stage="local", endpoint_url=cloud.dynamodb_url, region=cloud.options.region)
        began = time.perf_counter()
        result = await asyncio.to_thread(run_generate, target, users, seed, 2, progress)
        out.print(
            f"[bold]2.[/] wrote {result.events} events for {result.users} users to "
            f"{target.log_table} ({result.events_per_second:.0f} events/s)"
        )
        core = target.dynamodb().Table(target.core_table)
        start = time.perf_counter()
        projected = await _wait_for_users(core, users, deadline=start + 120)
        seconds = time.perf_counter() - start
        await cloud.runtime.drain()
        await cloud.archive.flush()
        published, on_bus = cloud.poller.published, cloud.bus.accepted
        out.print(
            f"[bold]3.[/] stream → publisher → bus: {published} records "
            f"published, {on_bus} events on bus {BUS_NAME}"
        )
        out.print(
            f"[bold]4.[/] users projection: {projected} users at version 4 in "
            f"{target.core_table} ({seconds:.1f} s after the last write)"
        )
        archived = archived_count(db)
        out.print(f"[bold]5.[/] archive: {archived} events in the SQLite events table")
        store = LogStore(target.dynamodb().Table(target.log_table))
        ids = store.ids("users")
        complete = sum(store.versions("users", id) == [1, 2, 3, 4] for id in ids)
        out.print(f"[bold]6.[/] read back {len(ids)} users, {complete} with versions 1–4 in order")
        sample = core.get_item(Key=read_model_key(ids[0])).get("Item")
        if sample:
            out.print(f"     e.g. {from_dynamo(sample)}")
        bridged = await _wait_for_sink(sink, result.events, deadline=time.perf_counter() + 120)
        bridge_seconds = max(sink.committed.values(), default=began) - began
        rows, distinct = _sink_counts(sink.path)
        exactly_once = bridged == result.events and rows == distinct == result.events
        out.print(
            f"[bold]7.[/] bridge: {rows} events in {sink.path.name} ({distinct} distinct), "
            f"{'each exactly once' if exactly_once else 'NOT exactly once'}, "
            f"{result.events / bridge_seconds if bridge_seconds > 0 else 0:.0f} events/s "
            f"from the first append to the last commit"
        )
        latencies = await _bridge_latency(store, sink)
        p50 = latencies[len(latencies) // 2] if latencies else float("nan")
        worst = latencies[-1] if latencies else float("nan")
        out.print(
            f"[bold]8.[/] append → sink latency over {len(latencies)} single appends: "
            f"p50 {p50:.0f} ms, max {worst:.0f} ms"
        )
        stop.set()
        totals = await task
    finally:
        await cloud.stop()
    return {
        "users": len(ids),
        "complete_users": complete,
        "events": result.events,
        "published": published,
        "bus_events": on_bus,
        "projected_users": projected,
        "archived": archived,
        "events_per_second": round(result.events_per_second, 1),
        "bridged": rows,
        "bridged_distinct": distinct,
        "bridged_exactly_once": exactly_once,
        "bridge_events_per_second": round(result.events / bridge_seconds, 1)
        if bridge_seconds > 0
        else None,
        "append_to_sink_ms": {"p50": round(p50, 1), "max": round(worst, 1)},
        "bridge_duplicates_ignored": totals.duplicates + totals.wire_duplicates,
    }


async def _wait_for_sink(sink: _TimedSink, events: int, deadline: float) -> int:
    while len(sink.committed) < events and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    return len(sink.committed)


def _sink_counts(path: Path) -> tuple[int, int]:
    """Rows in the sink's events table, and distinct log keys among them."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        distinct = conn.execute(
            "SELECT count(DISTINCT json_extract(event, '$.detail.key.pk') || '/' || "
            "json_extract(event, '$.detail.key.sk')) FROM events"
        ).fetchone()[0]
    finally:
        conn.close()
    return int(rows), int(distinct)


async def _wait_for_users(core: Any, users: int, deadline: float) -> int:
    """Poll the core table until every user's read model reached version 4."""
    done = 0
    while time.perf_counter() < deadline:
        items = await asyncio.to_thread(_scan, core)
        done = sum(1 for item in items if item.get("type") == "user" and item.get("version") == 4)
        if done >= users:
            break
        await asyncio.sleep(0.25)
    return done


def _scan(table: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = table.scan(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
