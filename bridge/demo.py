"""`bridge demo`: the whole pipeline on this machine, from nothing, with a summary.

Starts the local cloud in this process (free ports, a temporary SQLite file),
generates fake users, and follows them through stream → publisher → bus → users
projection and archive, then reads everything back.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bridge.archive import count as archived_count
from bridge.aws import Target
from bridge.core.log import from_dynamo
from bridge.core.names import BUS_NAME
from bridge.offline.cloud import LocalCloud, OfflineOptions
from bridge.store import LogStore
from bridge.subscriptions import load, project_root


def run_demo(users: int = 100, seed: int = 1, progress: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bridge-demo-") as tmp:
        return asyncio.run(_demo(users, seed, progress, Path(tmp) / "db"))


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
        target = Target(stage="local", endpoint_url=cloud.dynamodb_url, region=cloud.options.region)
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
        out.print(
            f"[bold]3.[/] stream → publisher → bus: {cloud.poller.published} records "
            f"published, {cloud.bus.accepted} events on bus {BUS_NAME}"
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
        sample = core.get_item(Key={"pk": f"users#{ids[0]}", "sk": "profile"}).get("Item")
        if sample:
            out.print(f"     e.g. {from_dynamo(sample)}")
    finally:
        await cloud.stop()
    return {
        "users": len(ids),
        "complete_users": complete,
        "events": result.events,
        "published": cloud.poller.published,
        "bus_events": cloud.bus.accepted,
        "projected_users": projected,
        "archived": archived,
        "events_per_second": round(result.events_per_second, 1),
    }


async def _wait_for_users(core: Any, users: int, deadline: float) -> int:
    """Poll the core table until every user's read model reached version 4."""
    done = 0
    while time.perf_counter() < deadline:
        items = await asyncio.to_thread(_scan, core)
        done = sum(1 for item in items if item.get("sk") == "profile" and item.get("version") == 4)
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
