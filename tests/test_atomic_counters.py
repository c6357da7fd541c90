"""The bridge allocates cursors with an atomic ``ADD`` (UpdateItem, UPDATED_NEW): on the
embedded DynamoDB, concurrent adds must each get their own value, as on DynamoDB.

moto's threaded server once did the read-modify-write of an update without a lock, so
two forwarders could get one cursor and an event be lost; the journal now runs every
write under one lock. This keeps it so.
"""

from __future__ import annotations

import threading
from pathlib import Path

import boto3

from bridge.offline.dynamodb import DynamoDBProcess

THREADS, ADDS = 6, 200


def client(url: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def test_concurrent_atomic_adds_each_get_a_value_of_their_own(tmp_path: Path) -> None:
    server = DynamoDBProcess(port=0, db=tmp_path / "db").start()
    try:
        client(server.url).create_table(
            TableName="counters",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        returned: list[int] = []
        lock = threading.Lock()

        def add() -> None:
            mine = client(server.url)
            for _ in range(ADDS):
                answer = mine.update_item(
                    TableName="counters",
                    Key={"pk": {"S": "cursor"}},
                    UpdateExpression="ADD n :one",
                    ExpressionAttributeValues={":one": {"N": "1"}},
                    ReturnValues="UPDATED_NEW",
                )
                with lock:
                    returned.append(int(answer["Attributes"]["n"]["N"]))

        threads = [threading.Thread(target=add) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        item = client(server.url).get_item(TableName="counters", Key={"pk": {"S": "cursor"}})
    finally:
        server.stop()
    assert sorted(returned) == list(range(1, THREADS * ADDS + 1))  # each value once
    assert item["Item"]["n"]["N"] == str(THREADS * ADDS)
