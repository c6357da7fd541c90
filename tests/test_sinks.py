"""The bridge client's sinks: idempotent writes, the cursor stored with the events."""

from __future__ import annotations

import sqlite3
import uuid
from decimal import Decimal
from pathlib import Path

import boto3
import pytest

from bridge.aws import Target
from bridge.client.sinks import (
    DynamoDBSink,
    NoneSink,
    SqliteSink,
    StateFile,
    entry_of,
    log_item_of,
    waves,
)
from bridge.core.errors import BridgeError


def log_event(log: str, id: str, version: int, type: str = "signup", **payload: object) -> dict:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),  # a redelivery through another forwarder gets a new id
        "source": "dynamodb-log",
        "detail-type": "stream changes",
        "account": "123456789012",
        "time": "2026-12-01T10:00:00Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": {
            "log": log,
            "key": {"pk": f"{log}#{id}#stream", "sk": version},
            "type": type,
            "payload": {"id": id, **payload},
        },
    }


def other_event(n: int) -> dict:
    return {
        "version": "0",
        "id": f"other-{n}",
        "source": "app",
        "detail-type": "t",
        "time": "2026-12-01T10:00:00Z",
        "detail": {"n": n},
    }


# --------------------------------------------------------------------------- sqlite


async def test_sqlite_sink_stores_events_once_and_the_cursor_with_them(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    sink = SqliteSink(path, "ws://x/dev|me")
    assert await sink.open() == 0
    first = [log_event("users", "1", 1), other_event(1)]
    result = await sink.write(first, through=2)
    assert (result.written, result.duplicates) == (2, 0)
    # a redelivery: the log event under a new EventBridge id, the other by its id
    again = [log_event("users", "1", 1), other_event(1), log_event("users", "1", 2)]
    result = await sink.write(again, through=3)
    assert (result.written, result.duplicates) == (1, 2)
    await sink.close()

    conn = sqlite3.connect(path)
    assert conn.execute("select count(*) from events").fetchone() == (3,)
    conn.close()
    reopened = SqliteSink(path, "ws://x/dev|me")
    assert await reopened.open() == 3
    await reopened.close()


async def test_sqlite_cursor_never_moves_backwards(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "b.db", "k")
    await sink.open()
    await sink.write([other_event(1)], through=5)
    await sink.write([], through=3)
    await sink.close()
    again = SqliteSink(tmp_path / "b.db", "k")
    assert await again.open() == 5
    await again.close()


async def test_two_clients_never_write_one_file(tmp_path: Path) -> None:
    first = SqliteSink(tmp_path / "b.db", "a")
    await first.open()
    second = SqliteSink(tmp_path / "b.db", "b")
    with pytest.raises(BridgeError, match="in use by another `bridge connect`"):
        await second.open()
    await first.close()
    assert await second.open() == 0  # free once the first let go
    await second.close()


async def test_sqlite_sink_refuses_offlines_database(tmp_path: Path) -> None:
    db = tmp_path / "db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE dynamodb_tables (name TEXT PRIMARY KEY, definition TEXT)")
    conn.close()
    with pytest.raises(BridgeError, match="is a `bridge offline` database"):
        await SqliteSink(db, "k").open()
    assert not Path(f"{db}.lock").exists()


# --------------------------------------------------------------------------- state file


def test_state_file_round_trip_and_bad_content(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state.json", "s1")
    assert state.read() == 0
    state.write(7)
    StateFile(tmp_path / "state.json", "s2").write(3)
    assert state.read() == 7
    assert StateFile(tmp_path / "state.json", "s2").read() == 3
    state.write(2)  # never backwards
    assert state.read() == 7
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BridgeError, match="not a bridge state file"):
        StateFile(tmp_path / "bad.json", "s").read()


# --------------------------------------------------------------------------- dynamodb


def test_log_item_of_takes_only_log_events() -> None:
    item = log_item_of(log_event("users", "9", 3, name="a", lat=1.5))
    assert item is not None
    assert (item["pk"], item["sk"], item["log"], item["type"]) == (
        "users#9#stream",
        Decimal(3),
        "users",
        "signup",
    )
    assert item["payload"] == {"id": "9", "name": "a", "lat": Decimal("1.5")}
    assert log_item_of(other_event(1)) is None


def test_waves_keep_one_version_of_a_stream_per_call_in_order() -> None:
    items = []
    for id in range(30):
        for version in (3, 1, 2):
            item = log_item_of(log_event("users", str(id), version))
            assert item is not None
            items.append(item)
    items.append(dict(items[0]))  # a duplicate key is written once
    calls = waves(items)
    assert sum(len(call) for call in calls) == 90
    seen: dict[str, Decimal] = {}
    for call in calls:
        assert len(call) <= 25
        pks = [item["pk"] for item in call]
        assert len(pks) == len(set(pks))
        for item in call:
            assert item["sk"] > seen.get(item["pk"], Decimal(0))
            seen[item["pk"]] = item["sk"]


async def test_dynamodb_sink_writes_log_items_and_skips_the_rest(
    target: Target, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb", endpoint_url=target.endpoint_url, region_name="us-east-1")
    sink = DynamoDBSink(client, target.stage, StateFile(tmp_path / "s.json", "k"))
    assert await sink.open() == 0
    partial = log_event("users", "2", 1)
    partial["detail"]["partial"] = True
    events = [log_event("users", "1", v, n=v) for v in (2, 1)] + [other_event(1), partial]
    result = await sink.write(events, through=4)
    assert result.written == 2 and result.skipped == 2
    assert result.skipped_reasons == {"not a log event": 1, "partial (use --hydrate)": 1}
    await sink.write(events[:2], through=6)  # a redelivery changes nothing
    answer = client.query(
        TableName=target.log_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "users#1#stream"}},
    )
    assert [int(item["sk"]["N"]) for item in answer["Items"]] == [1, 2]
    assert StateFile(tmp_path / "s.json", "k").read() == 6


async def test_dynamodb_sink_says_when_the_table_is_missing(endpoint: str, tmp_path: Path) -> None:
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    sink = DynamoDBSink(client, "nosuchstage", StateFile(tmp_path / "s.json", "k"))
    with pytest.raises(BridgeError, match="nosuchstage-dynamodb-logs does not exist"):
        await sink.open()


# --------------------------------------------------------------------------- bus, none


def test_entry_of_carries_the_event_as_it_was() -> None:
    event = log_event("users", "1", 1)
    entry = entry_of(event)
    assert entry["Source"] == "dynamodb-log" and entry["DetailType"] == "stream changes"
    assert entry["EventBusName"] == "dynamodb-log"
    assert '"key":{"pk":"users#1#stream","sk":1}' in entry["Detail"]


async def test_none_sink_keeps_the_cursor_in_memory() -> None:
    sink = NoneSink()
    assert await sink.open() == 0
    await sink.write([other_event(1)], through=4)
    assert await sink.open() == 4
