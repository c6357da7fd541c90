"""`bridge generate` throughput beside a plain sequential put_item loop, same endpoint, same run.

`bridge generate` bulk-loads with BatchWriteItem (25 items a call, one version
"wave" at a time so each stream stays in order) from a few threads. The endpoint is
the embedded one (moto server), started here in its own process so
the server and the writers don't share one interpreter lock — both loops talk to
the same server. Prints events/s for each and the ratio (target ≥ 1.5×).

    .venv/bin/python bench/generate.py [--users 250] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bridge.aws import Target
from bridge.core.log import LogItem
from bridge.fake import fake_users
from bridge.generate import write_users
from bridge.offline.ports import free_port
from bridge.store import create_tables


def sequential_put_items(target: Target, users: int) -> float:
    """The baseline: one boto3 put_item after another, no library around it."""
    table = target.dynamodb().Table(target.log_table)
    items = [
        LogItem(e.log, e.id, e.version, e.type, e.payload).to_item()
        for per_user in fake_users(users, seed=2)
        for e in per_user
    ]
    start = time.perf_counter()
    for item in items:
        table.put_item(Item=item)
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=250)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bridge.offline.dynamodb", "--port", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        server.stdout.readline()  # the URL: the server is up
        url = f"http://127.0.0.1:{port}"
        baseline_target = Target(stage="benchbase", endpoint_url=url)
        target = Target(stage="benchgen", endpoint_url=url)
        for t in (baseline_target, target):
            create_tables(t.dynamodb(), t.log_table, t.core_table)

        baseline = sequential_put_items(baseline_target, args.users)
        result = write_users(
            lambda: target.dynamodb(max_pool=args.concurrency).Table(target.log_table),
            fake_users(args.users, seed=1),
            args.concurrency,
        )
    finally:
        server.terminate()
        server.wait()
    print(f"events: {result.events} ({args.users} users × 4)")
    print(f"sequential put_item loop:          {baseline:8.0f} events/s")
    print(
        f"bridge generate (concurrency {args.concurrency:>2}): "
        f"{result.events_per_second:8.0f} events/s"
    )
    print(f"ratio: {result.events_per_second / baseline:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
