"""`bridge offline` under load: append → handler latency, bus intake, the journal.

Starts `bridge offline` as a user would (a subprocess, free ports, a temporary
directory holding a subscriptions file and a handler that notes when each event
reached it), then measures:

1. latency from the start of each append (a conditional put on the log table) to
   the moment the subscribed handler runs, over 2,000 sequential appends —
   p50/p99 against the targets (p50 ≤ 100 ms, p99 ≤ 300 ms);
2. bus intake: PutEvents calls of 10 entries over one keep-alive connection,
   beside a no-op HTTP round trip (``GET /health``) to the same server on the same
   kind of connection, in the same run — the ratio says what intake costs per call
   above the bare HTTP round trip.

Then the embedded DynamoDB on its own (``python -m bridge.offline.dynamodb``):

3. journaled write throughput: the same conditional puts from 4 client threads
   into an endpoint without a journal, one with the journal (the default: flushed
   to the OS, survives kill -9) and one with ``--fsync`` (survives a power cut),
   rounds interleaved so the machine's noise falls on all alike — ratios against
   the endpoint without a journal (target ≥ 0.7);
4. restart after 100,000 journaled writes (batch puts of 25, as `bridge generate`
   writes): the endpoint is killed with SIGKILL, then the time until a new one on
   the same files has rebuilt its tables and answers.

    .venv/bin/python bench/offline.py [--appends 2000] [--calls 500] [--writes 3000]
        [--restart-writes 100000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config

from bridge.core.names import BUS_NAME, DEFAULT_REGION
from bridge.offline.dynamodb import DynamoDBProcess
from bridge.offline.ports import free_port
from bridge.store import LogStore, create_tables

CONFIG = """
[functions.latency]
handler = "latency_handler.handler"
pattern = { source = ["dynamodb-log"], detail = { log = ["bench"] } }
retry_attempts = 0
environment = { SEEN_FILE = "%s" }
"""

HANDLER = """
import json, os, time

def handler(event, context):
    seen = time.time()
    key = event["detail"]["key"]
    with open(os.environ["SEEN_FILE"], "a") as out:
        out.write(json.dumps({"pk": key["pk"], "sk": key["sk"], "t": seen}) + "\\n")
"""


def start_offline(workdir: Path, ports: dict[str, int]) -> subprocess.Popen:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": DEFAULT_REGION,
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("bridge")),
            "offline",
            "--json",
            "--dynamodb-port",
            str(ports["dynamodb"]),
            "--events-port",
            str(ports["events"]),
            "--ws-port",
            str(ports["ws"]),
            "--quiet",
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    if not process.stdout.readline():
        raise SystemExit("bridge offline did not start")
    return process


def measure_latency(store: LogStore, seen_file: Path, appends: int) -> list[float]:
    started: dict[tuple[str, int], float] = {}
    for n in range(appends):
        id = f"b{n % 20}"
        version = n // 20 + 1
        started[(f"bench#{id}#stream", version)] = time.time()
        store.append("bench", id, "tick", {"id": id, "n": n}, expected_version=version - 1)
    deadline = time.time() + 60
    seen: dict[tuple[str, int], float] = {}
    while len(seen) < appends and time.time() < deadline:
        time.sleep(0.2)
        for line in seen_file.read_text().splitlines() if seen_file.exists() else []:
            record = json.loads(line)
            seen.setdefault((record["pk"], record["sk"]), record["t"])
    if len(seen) < appends:
        raise SystemExit(f"only {len(seen)} of {appends} events reached the handler")
    return [(seen[key] - started[key]) * 1000 for key in started]


def round_trips(port: int, calls: int, request: tuple[str, str, bytes, dict]) -> float:
    """Calls per second of one request repeated over one keep-alive connection."""
    method, path, body, headers = request
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(20):  # warm up
        conn.request(method, path, body, headers)
        conn.getresponse().read()
    start = time.perf_counter()
    for _ in range(calls):
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status} {payload[:200]!r}")
    elapsed = time.perf_counter() - start
    conn.close()
    return calls / elapsed


def dynamodb_client(url: str) -> object:
    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(max_pool_connections=8, retries={"max_attempts": 10}),
    )


def log_item(prefix: str, n: int) -> dict:
    id = f"{prefix}-{n}"
    return {
        "pk": {"S": f"bench#{id}#stream"},
        "sk": {"N": "1"},
        "type": {"S": "tick"},
        "log": {"S": "bench"},
        "payload": {"M": {"id": {"S": id}, "n": {"N": str(n)}, "text": {"S": "x" * 200}}},
    }


def write_rate(url: str, prefix: str, writes: int, threads: int = 4) -> float:
    """Conditional puts per second (each a new log item), from ``threads`` clients."""

    def work(t: int) -> None:
        client = dynamodb_client(url)
        for n in range(t, writes, threads):
            client.put_item(
                TableName="bench-dynamodb-logs",
                Item=log_item(prefix, n),
                ConditionExpression="attribute_not_exists(pk)",
            )

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return writes / (time.perf_counter() - start)


def measure_journal(workdir: Path, writes: int, rounds: int = 3) -> dict[str, float]:
    """Best writes/s of each kind of endpoint over interleaved rounds (same items)."""
    kinds = {
        "no journal": {},
        "journal": {"db": workdir / "journal.db"},
        "journal, --fsync": {"db": workdir / "fsync.db", "fsync": True},
    }
    endpoints = {kind: DynamoDBProcess(port=0, **opts).start() for kind, opts in kinds.items()}
    try:
        for endpoint in endpoints.values():
            resource = boto3.resource(
                "dynamodb",
                endpoint_url=endpoint.url,
                region_name="us-east-1",
                aws_access_key_id="local",
                aws_secret_access_key="local",
            )
            create_tables(resource, "bench-dynamodb-logs", "bench-core")
            write_rate(endpoint.url, "warm-up", 200)
        best = dict.fromkeys(kinds, 0.0)
        for round_ in range(rounds):
            for kind, endpoint in endpoints.items():
                best[kind] = max(best[kind], write_rate(endpoint.url, f"r{round_}", writes))
        return best
    finally:
        for endpoint in endpoints.values():
            endpoint.stop()


def measure_restart(workdir: Path, writes: int) -> tuple[float, float, DynamoDBProcess]:
    """(seconds writing, seconds to restart after SIGKILL, the restarted endpoint)."""
    db = workdir / "restart.db"
    endpoint = DynamoDBProcess(port=0, db=db).start()
    resource = boto3.resource(
        "dynamodb",
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    create_tables(resource, "bench-dynamodb-logs", "bench-core")
    batches = [list(range(start, min(start + 25, writes))) for start in range(0, writes, 25)]

    def work(t: int) -> None:
        client = dynamodb_client(endpoint.url)
        for batch in batches[t::4]:
            pending = {
                "bench-dynamodb-logs": [{"PutRequest": {"Item": log_item("s", n)}} for n in batch]
            }
            while pending:
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems")

    workers = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    writing = time.perf_counter() - start
    assert endpoint._process is not None
    endpoint._process.kill()  # kill -9: no final fold, whatever the journal holds stays there
    endpoint._process.wait()
    start = time.perf_counter()
    again = DynamoDBProcess(port=0, db=db).start()
    return writing, time.perf_counter() - start, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--restart-writes", type=int, default=100_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        workdir = Path(tmp)
        seen_file = workdir / "seen.jsonl"
        (workdir / "dynamodb-logs.toml").write_text(CONFIG % seen_file)
        (workdir / "latency_handler.py").write_text(HANDLER)
        ports = {"dynamodb": free_port(), "events": free_port(), "ws": free_port()}
        offline = start_offline(workdir, ports)
        try:
            table = boto3.resource(
                "dynamodb",
                endpoint_url=f"http://127.0.0.1:{ports['dynamodb']}",
                region_name=DEFAULT_REGION,
                aws_access_key_id="local",
                aws_secret_access_key="local",
            ).Table("local-dynamodb-logs")
            latencies = sorted(measure_latency(LogStore(table), seen_file, args.appends))

            entries = [
                {
                    "Source": "bench.intake",
                    "DetailType": "tick",
                    "Detail": json.dumps({"n": n}),
                    "EventBusName": BUS_NAME,
                }
                for n in range(10)
            ]
            put_events = (
                "POST",
                "/",
                json.dumps({"Entries": entries}).encode(),
                {
                    "Content-Type": "application/x-amz-json-1.1",
                    "X-Amz-Target": "AWSEvents.PutEvents",
                },
            )
            health = ("GET", "/health", b"", {})
            noop = round_trips(ports["events"], args.calls, health)
            intake = round_trips(ports["events"], args.calls, put_events)
        finally:
            offline.send_signal(2)
            offline.wait(timeout=120)

    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"append → handler latency over {len(latencies)} appends: "
        f"p50 {p50:.0f} ms (target ≤ 100), p99 {p99:.0f} ms (target ≤ 300), "
        f"max {latencies[-1]:.0f} ms"
    )
    print(f"no-op HTTP round trip (GET /health):   {noop:8.0f} calls/s")
    print(
        f"PutEvents, 10 entries per call:        {intake:8.0f} calls/s = {intake * 10:.0f} events/s"
    )
    print(
        f"ratio: PutEvents call / no-op call = {intake / noop:.2f} "
        f"(1.00 would mean intake costs nothing beyond HTTP)"
    )

    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        rates = measure_journal(Path(tmp), args.writes)
        base = rates["no journal"]
        print(f"embedded DynamoDB, {args.writes} conditional puts from 4 clients, best of 3:")
        for kind, rate in rates.items():
            print(f"  {kind:18} {rate:8.0f} writes/s   ratio {rate / base:.2f} (target ≥ 0.70)")
        writing, restart, again = measure_restart(Path(tmp), args.restart_writes)
        try:
            items = again.restored.get("bench-dynamodb-logs", 0)
            print(
                f"restart after {args.restart_writes} journaled writes ({writing:.0f} s of "
                f"batch puts) and kill -9: {restart:.1f} s to serve again, {items} items "
                f"restored, {again.replayed} journal entries replayed over the snapshot"
            )
            if items != args.restart_writes:
                raise SystemExit(f"restored {items} of {args.restart_writes} items")
        finally:
            again.stop()


if __name__ == "__main__":
    main()
