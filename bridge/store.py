"""The append-only log over boto3: append with optimistic locking, read in order.

Works against any DynamoDB endpoint (AWS, DynamoDB Local, moto server): the
``Table`` resource it is given decides where.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from bridge.core.errors import BridgeError, ConcurrencyError
from bridge.core.log import LogItem, check_name, check_version, parse_stream_key, stream_key

MAX_BATCH_ITEMS = 25  # BatchWriteItem's limit

# Without an expected version, append re-reads and retries a lost race this often.
MAX_RACE_RETRIES = 50


def _is_conditional_failure(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ConditionalCheckFailedException"


class LogStore:
    """One log table. ``table`` is a boto3 ``dynamodb.Table`` resource."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def append(
        self,
        log: str,
        id: str,
        type: str,
        payload: dict[str, Any],
        expected_version: int | None = None,
    ) -> int:
        """Append one event; returns its version.

        With ``expected_version`` the write succeeds only as version
        ``expected_version + 1`` and raises ``ConcurrencyError`` otherwise. Without
        it the current version is read and a lost race is retried.
        """
        if expected_version is not None:
            check_version("expected version", expected_version)
        first = LogItem(log, id, (expected_version or 0) + 1, type, payload)
        record = first.to_item()  # validated once, before any I/O; retries change sk only
        if expected_version is not None:
            if expected_version and not self._exists(first.pk, expected_version):
                # Writing N+1 without N would leave a gap no reader can fill. Log items
                # are never deleted, so N present now is N present at the put.
                raise ConcurrencyError(first.pk, first.version, self.version(log, id))
            return self._put(record)
        version = self.version(log, id)
        for attempt in range(MAX_RACE_RETRIES):
            try:
                return self._put({**record, "sk": version + 1})
            except ConcurrencyError as conflict:
                version = conflict.existing
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise BridgeError(
            f"gave up appending to {stream_key(log, id)} after {MAX_RACE_RETRIES} lost races"
        )

    def _put(self, record: dict[str, Any]) -> int:
        """One conditional put of a validated item; a taken version is a ConcurrencyError."""
        try:
            self.table.put_item(Item=record, ConditionExpression=Attr("pk").not_exists())
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            log, id = parse_stream_key(record["pk"])
            raise ConcurrencyError(record["pk"], record["sk"], self.version(log, id)) from None
        return record["sk"]

    def put_batch(self, items: list[LogItem]) -> None:
        """Write items with BatchWriteItem (25 per call), retrying ``UnprocessedItems``.

        No condition is possible in a batch, so this is for bulk loading fresh
        streams only (``bridge generate``); appends go through ``append``. Items of
        one stream must not share a call if their order matters: DynamoDB applies a
        batch's puts in no defined order.
        """
        records = [item.to_item() for item in items]  # validates before any I/O
        # A resource's client takes plain Python values (it serializes them itself).
        client = self.table.meta.client
        for start in range(0, len(records), MAX_BATCH_ITEMS):
            pending = {
                self.table.name: [
                    {"PutRequest": {"Item": record}}
                    for record in records[start : start + MAX_BATCH_ITEMS]
                ]
            }
            for attempt in range(MAX_RACE_RETRIES):
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems")
                if not pending:
                    break
                time.sleep(min(1.0, 0.01 * 2**attempt) * random.uniform(0.5, 1.0))
            else:
                raise BridgeError(f"DynamoDB left items unprocessed after {MAX_RACE_RETRIES} tries")

    def existing(self, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which of these ``(pk, version)`` items exist (BatchGetItem, 100 keys a call).
        Raises when DynamoDB keeps leaving keys unprocessed: "absent" would be a guess."""
        client = self.table.meta.client
        found: set[tuple[str, int]] = set()
        for start in range(0, len(keys), 100):
            pending: dict[str, Any] = {
                self.table.name: {
                    "Keys": [
                        {"pk": pk, "sk": version} for pk, version in keys[start : start + 100]
                    ],
                    "ProjectionExpression": "pk, sk",
                    "ConsistentRead": True,
                }
            }
            for attempt in range(MAX_RACE_RETRIES):
                response = client.batch_get_item(RequestItems=pending)
                found.update(
                    (i["pk"], int(i["sk"])) for i in response["Responses"].get(self.table.name, [])
                )
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
                time.sleep(min(1.0, 0.01 * 2**attempt))
            else:
                raise BridgeError(f"DynamoDB left keys unread after {MAX_RACE_RETRIES} tries")
        return found

    def _exists(self, pk: str, version: int) -> bool:
        response = self.table.get_item(
            Key={"pk": pk, "sk": version}, ConsistentRead=True, ProjectionExpression="pk"
        )
        return "Item" in response

    def version(self, log: str, id: str) -> int:
        """The latest version of a stream, 0 if it has none."""
        pk = stream_key(check_name("log", log), check_name("id", id))
        response = self.table.query(
            KeyConditionExpression=Key("pk").eq(pk),
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
            ProjectionExpression="sk",
        )
        items = response.get("Items", [])
        return int(items[0]["sk"]) if items else 0

    def read(self, log: str, id: str, after: int = 0) -> Iterator[LogItem]:
        """Every event of a stream with version > ``after``, in version order.

        Follows ``LastEvaluatedKey``, so a stream larger than one 1 MB page is read whole.
        """
        condition: Any = Key("pk").eq(stream_key(check_name("log", log), check_name("id", id)))
        if check_version("after", after):
            condition = condition & Key("sk").gt(after)
        kwargs: dict[str, Any] = {"KeyConditionExpression": condition, "ConsistentRead": True}
        while True:
            response = self.table.query(**kwargs)
            for item in response.get("Items", []):
                yield LogItem.from_item(item)
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def versions(self, log: str, id: str) -> list[int]:
        """The versions a stream holds, in order (1..N for a healthy stream)."""
        return [item.version for item in self.read(log, id)]

    def read_log(self, log: str, after: int = 0) -> list[LogItem]:
        """Every event of every stream in a log with version > ``after``, by id then
        version. One scan rather than a scan for the ids plus a query per stream (10×
        faster for a few hundred streams); still a scan: fine for local tables."""
        condition: Any = Attr("pk").begins_with(f"{check_name('log', log)}#")
        if check_version("after", after):
            condition = condition & Attr("sk").gt(after)
        kwargs: dict[str, Any] = {"FilterExpression": condition, "ConsistentRead": True}
        items: list[LogItem] = []
        while True:
            response = self.table.scan(**kwargs)
            items.extend(LogItem.from_item(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return sorted(items, key=lambda item: (item.id, item.version))
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def ids(self, log: str) -> list[str]:
        """The ids of every stream in a log, sorted. A scan: fine for local tables."""
        found: set[str] = set()
        kwargs: dict[str, Any] = {
            "FilterExpression": Attr("pk").begins_with(f"{check_name('log', log)}#")
            & Attr("sk").eq(1),
            "ProjectionExpression": "pk",
        }
        while True:
            response = self.table.scan(**kwargs)
            # begins_with("log#") is this log alone: a log name holds no "#"
            found.update(parse_stream_key(item["pk"])[1] for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return sorted(found)
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def create_tables(dynamodb: Any, log_table: str, core_table: str) -> list[str]:
    """Create the log table (with its stream) and the core table if missing.

    Returns the names of the tables it created; existing tables are left alone.
    """
    client = dynamodb.meta.client
    existing = set(client.list_tables().get("TableNames", []))
    created = []
    specs: dict[str, dict[str, Any]] = {
        log_table: {
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "N"},
            ],
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        },
        core_table: {
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
        },
    }
    for name, spec in specs.items():
        if name in existing:
            continue
        try:
            client.create_table(
                TableName=name,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                BillingMode="PAY_PER_REQUEST",
                **spec,
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceInUseException":
                raise
            continue  # created meanwhile by someone else: still idempotent
        client.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        created.append(name)
    return created
