"""`bridge replay --from sqlite` into `bridge offline` (real processes, real sockets):
to the bus, handlers run again with the replay's name and the archive does not grow;
to DynamoDB twice, the same table and one publication per item."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from offline_process import LOCAL_ENV, OfflineProcess

from bridge import archive
from bridge.store import LogStore

BRIDGE = Path(sys.executable).with_name("bridge")
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)

RECORD_HANDLER = """
import json, os

def handler(event, context):
    with open(os.environ["RECORDS_FILE"], "a") as records:
        records.write(json.dumps(event) + "\\n")
"""


def project(folder: Path, log: str) -> Path:
    """A project whose one subscriber records every event of ``log`` it receives."""
    folder.mkdir(exist_ok=True)
    records = folder / "records.jsonl"
    (folder / "record_handler.py").write_text(RECORD_HANDLER)
    (folder / "dynamodb-logs.toml").write_text(
        f"""
[functions.record]
handler = "record_handler.handler"
pattern = {{ source = ["dynamodb-log"], detail = {{ log = ["{log}"] }} }}
retry_attempts = 0
environment = {{ RECORDS_FILE = "{records}" }}
"""
    )
    return records


def recorded(records: Path) -> list[dict[str, Any]]:
    if not records.exists():
        return []
    return [json.loads(line) for line in records.read_text().splitlines() if line.strip()]


def wait_for(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    return check()


def client(service: str, url: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def archived(offline: OfflineProcess) -> int:
    """The archive's EventCount (DescribeArchive flushes the archive writer first)."""
    answer = client("events", offline.events_url).describe_archive(
        ArchiveName="dynamodb-logs-archive"
    )
    return int(answer["EventCount"])


def replay(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(BRIDGE), "replay", "--from", "sqlite", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **LOCAL_ENV},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["summary"]


def test_to_the_bus_handlers_run_again_with_the_replay_name_and_the_archive_does_not_grow(
    tmp_path: Path,
) -> None:
    records = project(tmp_path, "users")
    with OfflineProcess(tmp_path) as offline:
        store = LogStore(
            boto3.resource(
                "dynamodb",
                endpoint_url=offline.dynamodb_url,
                region_name="us-east-1",
                aws_access_key_id="local",
                aws_secret_access_key="local",
            ).Table("local-dynamodb-logs")
        )
        for n in range(30):
            store.append("users", f"u{n % 6}", "renamed", {"id": f"u{n % 6}", "n": n})
        first = wait_for(lambda: len(recorded(records)) == 30 and recorded(records))
        assert first and wait_for(lambda: archived(offline) == 30)

        summary = replay(
            "--db", str(tmp_path / "db"), "--to", "bus",
            "--events-endpoint", offline.events_url, "--name", "e2e-replay-1",
        )  # fmt: skip
        assert (summary["sent"], summary["total"], summary["replay_name"]) == (
            30,
            30,
            "e2e-replay-1",
        )
        everything = wait_for(lambda: len(recorded(records)) >= 60 and recorded(records))
        assert everything and len(everything) == 60
        again = [event for event in everything if "replay-name" in event]
        assert {event["replay-name"] for event in again} == {"e2e-replay-1"}
        key = lambda e: (e["detail"]["key"]["pk"], e["detail"]["key"]["sk"])  # noqa: E731
        assert sorted(map(key, again)) == sorted(map(key, first))  # the same events…
        times = {key(e): e["time"] for e in first}
        assert all(e["time"] == times[key(e)] for e in again)  # …at their own times
        assert archived(offline) == 30  # replayed events are not archived again
        described = subprocess.run(
            [str(BRIDGE), "archive", "--stage", "local", "--events-endpoint", offline.events_url],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **LOCAL_ENV},
        )
        assert described.returncode == 0, described.stderr
        lines = described.stdout.splitlines()
        assert lines[0] == "dynamodb-logs-archive: ENABLED"
        assert lines[1].split() == ["events", "30"]
        assert "reconcile over 24 hours" in lines[-1]
        unknown = subprocess.run(
            [str(BRIDGE), "archive", "--stage", "local", "--endpoint-url", offline.events_url]
            + ["--archive", "nope"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **LOCAL_ENV},
        )
        assert unknown.returncode == 1
        assert unknown.stderr.startswith("error: no archive nope at ")
        assert unknown.stderr.count("\n") == 1
        offline.stop()
    assert archive.count(tmp_path / "db") == 30


def orders_archive(path: Path) -> int:
    """3 streams of 6 versions; versions of one stream often share a second and are
    archived out of version order within it; plus one event that is no log item."""
    events = []
    for version in range(1, 7):
        for n in range(3):
            events.append(
                {
                    "version": "0",
                    "id": str(uuid.uuid4()),
                    "detail-type": "stream changes",
                    "source": "dynamodb-log",
                    "account": "000000000000",
                    "time": (T0 + timedelta(seconds=version // 2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "region": "us-east-1",
                    "resources": [],
                    "detail": {
                        "log": "orders",
                        "key": {"pk": f"orders#o{n}#stream", "sk": version},
                        "type": f"step{version}",
                        "payload": {"id": f"o{n}", "total": 1.5 * version, "lines": [version]},
                    },
                }
            )
    # within each second, the later version first: the replay must restore the order
    events.sort(key=lambda e: (e["time"], -e["detail"]["key"]["sk"]))
    events.append({**events[0], "id": str(uuid.uuid4()), "source": "my-app", "detail": {"x": 1}})
    return archive.write_events(path, events)


def scan(url: str) -> list[dict[str, Any]]:
    pages = client("dynamodb", url).get_paginator("scan").paginate(TableName="local-dynamodb-logs")
    items = [item for page in pages for item in page["Items"]]
    return sorted(items, key=lambda item: (item["pk"]["S"], int(item["sk"]["N"])))


def test_to_dynamodb_twice_leaves_the_same_table_and_publishes_once(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    assert orders_archive(source) == 19
    local = tmp_path / "local"
    records = project(local, "orders")
    with OfflineProcess(local) as offline:
        args = ["--db", str(source), "--to", "dynamodb", "--endpoint-url", offline.dynamodb_url]
        first = replay(*args)
        assert (first["sent"], first["skipped"]) == (18, {"not a log event": 1})
        assert wait_for(lambda: len(recorded(records)) == 18)
        table = scan(offline.dynamodb_url)
        versions = defaultdict(list)
        for item in table:
            versions[item["pk"]["S"]].append(int(item["sk"]["N"]))
        assert dict(versions) == {f"orders#o{n}#stream": [1, 2, 3, 4, 5, 6] for n in range(3)}
        assert float(table[1]["payload"]["M"]["total"]["N"]) == 3.0  # payloads as archived
        # published in per-stream version order: each handler saw 1, 2, …, 6
        seen = defaultdict(list)
        for event in recorded(records):
            seen[event["detail"]["key"]["pk"]].append(event["detail"]["key"]["sk"])
        assert all(sorted(s) == [1, 2, 3, 4, 5, 6] for s in seen.values())
        published = defaultdict(list)
        for event in archive.iter_events(local / "db"):
            published[event["detail"]["key"]["pk"]].append(event["detail"]["key"]["sk"])
        assert dict(published) == dict(versions)  # the local archive's order: versions up

        second = replay(*args)
        assert second["sent"] == 18
        assert scan(offline.dynamodb_url) == table
        # a barrier: one new item after the second replay; once its handler ran, any
        # stream record the second replay made would have been published before it
        client("dynamodb", offline.dynamodb_url).put_item(
            TableName="local-dynamodb-logs",
            Item={
                "pk": {"S": "orders#late#stream"},
                "sk": {"N": "1"},
                "log": {"S": "orders"},
                "type": {"S": "late"},
                "payload": {"M": {"id": {"S": "late"}}},
            },
        )
        assert wait_for(lambda: any(e["detail"]["type"] == "late" for e in recorded(records)))
        summary = offline.stop()
    assert len(recorded(records)) == 19
    assert summary["published"] == 19  # 18 the first time, the barrier, nothing else


def test_a_missing_table_is_one_line_and_nothing_is_written(tmp_path: Path, moto_url: str) -> None:
    source = tmp_path / "source.db"
    orders_archive(source)
    result = subprocess.run(
        [
            str(BRIDGE),
            "replay",
            "--from",
            "sqlite",
            "--db",
            str(source),
            "--to",
            "dynamodb",
            "--stage",
            f"none{uuid.uuid4().hex[:6]}",
            "--endpoint-url",
            moto_url,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **LOCAL_ENV},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: table none") and "does not exist at" in result.stderr
    assert result.stderr.count("\n") == 1
