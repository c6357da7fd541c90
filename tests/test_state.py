"""Local state: table snapshots survive a fresh endpoint; checkpoints per shard."""

from __future__ import annotations

import botocore.exceptions
import pytest

from bridge.aws import Target
from bridge.offline.dynamodb import EmbeddedDynamoDB
from bridge.offline.state import Checkpoints, restore_tables, save_tables
from bridge.store import LogStore, create_tables


def test_snapshot_restores_tables_items_and_stream_without_republishing(tmp_path, moto_url):
    db = tmp_path / "db"
    target = Target(stage="snap", endpoint_url=moto_url)
    dynamodb = target.dynamodb()
    create_tables(dynamodb, target.log_table, target.core_table)
    store = LogStore(dynamodb.Table(target.log_table))
    for version in range(30):
        store.append(
            "users",
            "s",
            "t",
            {"id": "s", "n": version, "f": 0.25, "b": True},
            expected_version=version,
        )
    core = dynamodb.Table(target.core_table)
    core.put_item(Item={"pk": "users#s", "sk": "profile", "x": b"\x00"})
    # A plain client speaks DynamoDB's typed JSON (a resource's client would not).
    client = target.session().client("dynamodb", endpoint_url=moto_url)
    saved = save_tables(client, db)
    assert saved[target.log_table] == 30
    for name in (target.log_table, target.core_table):
        client.delete_table(TableName=name)

    restored = restore_tables(client, db)
    assert restored == {target.log_table: 30, target.core_table: 1}
    assert [i.payload["n"] for i in store.read("users", "s")] == list(range(30))
    assert next(store.read("users", "s")).payload["f"] == 0.25
    item = core.get_item(Key={"pk": "users#s", "sk": "profile"})["Item"]
    assert item["x"].value == b"\x00"
    description = client.describe_table(TableName=target.log_table)["Table"]
    assert description["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    # The restored items are not in the new stream: they were published already.
    streams = target.session().client("dynamodbstreams", endpoint_url=moto_url)
    shard = streams.describe_stream(StreamArn=description["LatestStreamArn"])["StreamDescription"][
        "Shards"
    ][0]
    iterator = streams.get_shard_iterator(
        StreamArn=description["LatestStreamArn"],
        ShardId=shard["ShardId"],
        ShardIteratorType="TRIM_HORIZON",
    )["ShardIterator"]
    assert streams.get_records(ShardIterator=iterator)["Records"] == []
    assert restore_tables(client, db) == {}  # existing tables are left alone


def test_checkpoints(tmp_path):
    checkpoints = Checkpoints(tmp_path / "db")
    assert checkpoints.get("arn", "shard-1") == (None, False)
    checkpoints.save("arn", "shard-1", "100")
    checkpoints.save("arn", "shard-1", None, finished=True)  # keeps the last sequence number
    assert Checkpoints(tmp_path / "db").get("arn", "shard-1") == ("100", True)


def test_checkpoints_of_a_tables_older_streams_are_forgotten(tmp_path):
    checkpoints = Checkpoints(tmp_path / "db")
    old = "arn:aws:dynamodb:us-east-1:0:table/local-dynamodb-logs/stream/2026-01-01T00:00:00"
    new = "arn:aws:dynamodb:us-east-1:0:table/local-dynamodb-logs/stream/2026-02-01T00:00:00"
    other = "arn:aws:dynamodb:us-east-1:0:table/dev-dynamodb-logs/stream/2026-01-01T00:00:00"
    for arn in (old, new, other):
        checkpoints.save(arn, "shard-1", "7")
    assert checkpoints.forget_older_streams(new) == 1
    assert checkpoints.get(old, "shard-1") == (None, False)
    assert checkpoints.get(new, "shard-1") == ("7", False)
    assert checkpoints.get(other, "shard-1") == ("7", False)


def test_embedded_endpoint_refuses_writes_when_closed_but_serves_streams(tmp_path):
    with EmbeddedDynamoDB(port=0) as server:
        target = Target(stage="gate", endpoint_url=server.url)
        create_tables(target.dynamodb(), target.log_table, target.core_table)
        store = LogStore(target.dynamodb().Table(target.log_table))
        store.append("users", "g", "t", {"id": "g"})
        server.close_writes()
        with pytest.raises(botocore.exceptions.ClientError, match="ServiceUnavailable"):
            store.append("users", "g", "t", {"id": "g"})
        streams = target.session().client("dynamodbstreams", endpoint_url=server.url)
        assert streams.list_streams()["Streams"]


def test_a_table_read_stops_when_halted(moto_url, target):
    """The autosave's scan, asked to stop (a clean stop began), gives up at the next page."""
    import threading

    from bridge.offline.state import ReadHalted, read_tables

    create_tables(target.dynamodb(), target.log_table, target.core_table)
    client = target.session().client("dynamodb", endpoint_url=moto_url)
    halt = threading.Event()
    names = {name for name, _, _ in read_tables(client, halt)}
    assert {target.log_table, target.core_table} <= names  # not halted: reads every table
    halt.set()
    with pytest.raises(ReadHalted):
        read_tables(client, halt)


def test_a_lock_in_a_missing_folder_is_one_line(tmp_path):
    from bridge.core.errors import BridgeError
    from bridge.offline.state import DatabaseLock

    with pytest.raises(BridgeError, match=r"^cannot use .*db\.lock: No such file"):
        DatabaseLock(tmp_path / "missing" / "db").acquire()


LEGACY_SNAPSHOT = """
CREATE TABLE dynamodb_tables (name TEXT PRIMARY KEY, definition TEXT NOT NULL);
CREATE TABLE dynamodb_items (table_name TEXT NOT NULL, item TEXT NOT NULL);
"""


def test_a_snapshot_of_the_layout_before_the_journal_is_migrated_at_start(tmp_path):
    """A ./db written before the journal existed: the embedded endpoint moves its tables
    into the current layout in place and serves them, binary values and all."""
    import json
    import sqlite3

    from bridge.offline.dynamodb import DynamoDBProcess
    from bridge.offline.state import _encode, connect, snapshot_counts

    db = tmp_path / "db"
    definition = {
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        "BillingMode": "PAY_PER_REQUEST",
    }
    items = [
        {"pk": {"S": "orders#1#stream"}, "sk": {"N": str(n)}, "b": {"B": bytes([n])}}
        for n in range(1, 4)
    ]
    conn = sqlite3.connect(db)
    conn.executescript(LEGACY_SNAPSHOT)
    conn.execute("INSERT INTO dynamodb_tables VALUES (?, ?)", ("old", json.dumps(definition)))
    conn.executemany(
        "INSERT INTO dynamodb_items VALUES (?, ?)",
        [("old", json.dumps(_encode(item))) for item in items],
    )
    conn.commit()
    conn.close()

    endpoint = DynamoDBProcess(port=0, db=db).start()
    try:
        assert endpoint.restored == {"old": 3}
        target = Target(stage="legacy", endpoint_url=endpoint.url)
        client = target.session().client("dynamodb", endpoint_url=endpoint.url)
        found = client.scan(TableName="old", ConsistentRead=True)["Items"]
        assert sorted(found, key=lambda i: i["sk"]["N"]) == items
        description = client.describe_table(TableName="old")["Table"]
        assert description["LatestStreamArn"]  # a new stream: the old items were published
        streams = target.session().client("dynamodbstreams", endpoint_url=endpoint.url)
        shard = streams.describe_stream(StreamArn=description["LatestStreamArn"])[
            "StreamDescription"
        ]["Shards"][0]
        iterator = streams.get_shard_iterator(
            StreamArn=description["LatestStreamArn"],
            ShardId=shard["ShardId"],
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        assert streams.get_records(ShardIterator=iterator)["Records"] == []
    finally:
        endpoint.stop()
    conn = connect(db)
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "dynamodb_items_legacy" not in names
        assert snapshot_counts(conn) == {"old": 3}
    finally:
        conn.close()
