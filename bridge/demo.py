"""`bridge demo`: the pipeline on this machine, from nothing, with a summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from bridge.aws import Target
from bridge.offline.dynamodb import EmbeddedDynamoDB
from bridge.store import LogStore, create_tables


def run_demo(users: int = 100, seed: int = 1, progress: bool = True) -> dict[str, Any]:
    from bridge.cli import run_generate

    out = Console(quiet=not progress)
    with EmbeddedDynamoDB(port=0) as dynamodb:
        out.print(f"[bold]1.[/] embedded DynamoDB endpoint on {dynamodb.url}")
        target = Target(stage="local", endpoint_url=dynamodb.url)
        create_tables(target.dynamodb(), target.log_table, target.core_table)
        out.print(f"[bold]2.[/] tables {target.log_table} and {target.core_table} ready")
        result = run_generate(target, users, seed, concurrency=2, progress=progress)
        out.print(f"[bold]3.[/] wrote {result.events} events for {result.users} users "
                  f"({result.events_per_second:.0f} events/s)")
        store = LogStore(target.dynamodb().Table(target.log_table))
        ids = store.ids("users")
        types: dict[str, int] = {}
        complete = 0
        for id in ids:
            items = list(store.read("users", id))
            complete += [i.version for i in items] == [1, 2, 3, 4]
            for item in items:
                types[item.type] = types.get(item.type, 0) + 1
        out.print(f"[bold]4.[/] read back {len(ids)} users, {complete} with versions 1–4 in order")
        for type, count in types.items():
            out.print(f"     {type:<18} {count}")
        sample = next(iter(store.read("users", ids[0]))) if ids else None
        if sample:
            out.print(f"     e.g. {sample.pk} v{sample.version} {sample.type} {sample.payload}")
    return {
        "users": len(ids),
        "complete_users": complete,
        "events": sum(types.values()),
        "by_type": types,
        "events_per_second": round(result.events_per_second, 1),
    }
