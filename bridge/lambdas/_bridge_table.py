"""The bridge table over boto3: sessions, cursors, per-session buffers, connections.

One table, ``{stage}-bridge`` (pk/sk strings, TTL attribute ``ttl``):

========== ======================== ========================================
item       pk                       sk
========== ======================== ========================================
session    ``sessions``             ``{owner}#{name}`` (the session's value)
counter    ``cursor#{key}``         ``counter`` (``next``, ``bytes``: atomic ADD)
buffer     ``buffer#{key}``         the cursor, zero-padded so keys sort by number
connection ``connection#{conn id}`` ``connection``
========== ======================== ========================================

``key`` is a hash of the session's sort key: the owner's ARN is long and holds
characters a key should not need to carry twice.

Every session lives under one partition, so the forwarder finds all of them with one
Query, which is the whole cost of an event when no session is open. DynamoDB deletes
expired items up to two days late and they still read, so every read here filters on
``ttl``. Numbers come back as ``Decimal``; this layer hands out ``int``/``float``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

SESSIONS_PK = "sessions"
COUNTER_SK = "counter"
CONNECTION_SK = "connection"
CURSOR_DIGITS = 16
_BATCH = 25  # BatchWriteItem's limit
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


@dataclass(frozen=True)
class Allocation:
    cursor: int
    cum: int  # bytes allocated through this cursor
    floor: int  # the buffer holds nothing at or below this cursor
    floor_cum: int  # bytes allocated through the floor


class Conflict(Exception):
    """A conditional write lost: someone saved the item first. Re-read and retry."""


def session_sk(owner: str, name: str) -> str:
    return f"{owner}#{name}"


def session_key(owner: str, name: str) -> str:
    """The short, fixed-size id of a session inside its counter and buffer keys."""
    return hashlib.sha256(session_sk(owner, name).encode()).hexdigest()[:24]


def cursor_sk(cursor: int) -> str:
    return f"{cursor:0{CURSOR_DIGITS}d}"


def _plain(value: Any) -> Any:
    """DynamoDB's Decimal numbers as int or float; containers recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _typed(value: Any) -> Any:
    """Plain values for the serializer: floats become Decimal (boto3 refuses floats)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_typed(v) for v in value]
    return value


def to_attributes(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(_typed(v)) for k, v in item.items() if v is not None}


def from_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in attributes.items()}


def _live(item: Mapping[str, Any], now: float) -> bool:
    ttl = item.get("ttl")
    return ttl is None or ttl > now


def _is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class BridgeTable:
    """The bridge's items in one DynamoDB table, through a low-level boto3 client."""

    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.name = table_name

    # ------------------------------------------------------------------ sessions

    def sessions(self, now: float) -> list[dict[str, Any]]:
        """Every live session (one consistent Query, paginated)."""
        found: list[dict[str, Any]] = []
        for page in self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": SESSIONS_PK}},
            ConsistentRead=True,
        ):
            found.extend(item for item in page if _live(item, now))
        return found

    def owned_sessions(self, owner: str, now: float) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :owner)",
            ExpressionAttributeValues={
                ":pk": {"S": SESSIONS_PK},
                ":owner": {"S": f"{owner}#"},
            },
            ConsistentRead=True,
        ):
            found.extend(item for item in page if _live(item, now))
        return found

    def session(self, owner: str, name: str, now: float) -> dict[str, Any] | None:
        item = self._get(SESSIONS_PK, session_sk(owner, name))
        return item if item is not None and _live(item, now) else None

    def save_session(
        self, item: Mapping[str, Any], expected_version: int | None, now: float
    ) -> None:
        """Write a session's value only over the version it was computed from.

        ``expected_version`` None means "create": an expired session still in the table
        (TTL is late) may be replaced, a live one may not.
        """
        owner, name = item["owner"], item["name"]
        attributes = to_attributes({**item, "pk": SESSIONS_PK, "sk": session_sk(owner, name)})
        if expected_version is None:
            condition = "attribute_not_exists(pk) OR #ttl < :now"
            values = {":now": {"N": str(int(now))}}
            names = {"#ttl": "ttl"}
        else:
            condition = "#version = :version"
            values = {":version": {"N": str(expected_version)}}
            names = {"#version": "version"}
        try:
            self.client.put_item(
                TableName=self.name,
                Item=attributes,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ExpressionAttributeNames=names,
            )
        except ClientError as error:
            if _is_condition_failure(error):
                raise Conflict(f"session {name!r} changed under us") from error
            raise

    def delete_session(self, owner: str, name: str) -> None:
        """The session, its counter and its buffer."""
        self.client.delete_item(
            TableName=self.name,
            Key={"pk": {"S": SESSIONS_PK}, "sk": {"S": session_sk(owner, name)}},
        )
        self.delete_session_data(owner, name)

    def delete_session_data(self, owner: str, name: str) -> None:
        """The counter and the buffer of a session (it starts again at cursor 1)."""
        key = session_key(owner, name)
        self.client.delete_item(
            TableName=self.name, Key={"pk": {"S": f"cursor#{key}"}, "sk": {"S": COUNTER_SK}}
        )
        for page in self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"buffer#{key}"}},
            ProjectionExpression="pk, sk",
        ):
            self._delete_keys([(item["pk"], item["sk"]) for item in page])

    # ------------------------------------------------------------------ cursors

    def allocate(self, key: str, size: int, ttl: int) -> Allocation:
        """The next cursor of a session, the bytes allocated through it, and the floor
        below which the buffer is empty (acknowledged or dropped), atomically."""
        answer = self.client.update_item(
            TableName=self.name,
            Key={"pk": {"S": f"cursor#{key}"}, "sk": {"S": COUNTER_SK}},
            UpdateExpression="ADD #next :one, #bytes :size SET #ttl = :ttl",
            ExpressionAttributeNames={"#next": "next", "#bytes": "bytes", "#ttl": "ttl"},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":size": {"N": str(size)},
                ":ttl": {"N": str(ttl)},
            },
            ReturnValues="ALL_NEW",
        )
        values = from_attributes(answer["Attributes"])
        return Allocation(
            cursor=int(values["next"]),
            cum=int(values["bytes"]),
            floor=int(values.get("floor", 0)),
            floor_cum=int(values.get("floor_cum", 0)),
        )

    def raise_floor(self, key: str, floor: int, floor_cum: int) -> None:
        """Everything up to ``floor`` left the buffer; never lowers it (races are fine)."""
        try:
            self.client.update_item(
                TableName=self.name,
                Key={"pk": {"S": f"cursor#{key}"}, "sk": {"S": COUNTER_SK}},
                UpdateExpression="SET #floor = :floor, floor_cum = :cum",
                ConditionExpression="attribute_exists(pk) AND "
                "(attribute_not_exists(#floor) OR #floor < :floor)",
                ExpressionAttributeNames={"#floor": "floor"},
                ExpressionAttributeValues={
                    ":floor": {"N": str(floor)},
                    ":cum": {"N": str(floor_cum)},
                },
            )
        except ClientError as error:
            if not _is_condition_failure(error):
                raise

    def allocated(self, key: str) -> tuple[int, int]:
        """The highest cursor allocated so far and the bytes through it (0, 0 if none)."""
        item = self._get(f"cursor#{key}", COUNTER_SK)
        if item is None:
            return 0, 0
        return int(item.get("next", 0)), int(item.get("bytes", 0))

    # ------------------------------------------------------------------ buffer

    def buffer_put(self, key: str, cursor: int, fields: Mapping[str, Any]) -> None:
        self.client.put_item(
            TableName=self.name,
            Item=to_attributes({**fields, "pk": f"buffer#{key}", "sk": cursor_sk(cursor)}),
        )

    def buffer_after(
        self, key: str, after: int, now: float, *, through: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Buffered events with cursor > ``after`` (and <= ``through``), in cursor order."""
        condition = "pk = :pk AND sk > :after"
        values = {":pk": {"S": f"buffer#{key}"}, ":after": {"S": cursor_sk(after)}}
        if through is not None:
            condition = "pk = :pk AND sk BETWEEN :first AND :through"
            values = {
                ":pk": {"S": f"buffer#{key}"},
                ":first": {"S": cursor_sk(after + 1)},
                ":through": {"S": cursor_sk(through)},
            }
        for page in self._query(
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ConsistentRead=True,
        ):
            for item in page:
                if _live(item, now):
                    item["cursor"] = int(item["sk"])
                    yield item

    def buffer_index(self, key: str, after: int, now: float) -> Iterator[tuple[int, int, int]]:
        """(cursor, size, cum) of buffered events after ``after``: no event bodies read."""
        for page in self._query(
            KeyConditionExpression="pk = :pk AND sk > :after",
            ExpressionAttributeValues={
                ":pk": {"S": f"buffer#{key}"},
                ":after": {"S": cursor_sk(after)},
            },
            ProjectionExpression="sk, #size, cum, #ttl",
            ExpressionAttributeNames={"#size": "size", "#ttl": "ttl"},
            ConsistentRead=True,
            PaginationConfig={"PageSize": 100},  # read lazily: a cut is usually near
        ):
            for item in page:
                if _live(item, now):
                    yield int(item["sk"]), int(item.get("size", 0)), int(item.get("cum", 0))

    def buffer_delete(self, key: str, cursors: list[int]) -> None:
        self._delete_keys([(f"buffer#{key}", cursor_sk(c)) for c in cursors])

    # ------------------------------------------------------------------ connections

    def connection_put(self, connection: str, fields: Mapping[str, Any]) -> None:
        self.client.put_item(
            TableName=self.name,
            Item=to_attributes({**fields, "pk": f"connection#{connection}", "sk": CONNECTION_SK}),
        )

    def connection(self, connection: str, now: float) -> dict[str, Any] | None:
        item = self._get(f"connection#{connection}", CONNECTION_SK)
        return item if item is not None and _live(item, now) else None

    def connection_delete(self, connection: str) -> None:
        self.client.delete_item(
            TableName=self.name,
            Key={"pk": {"S": f"connection#{connection}"}, "sk": {"S": CONNECTION_SK}},
        )

    # ------------------------------------------------------------------ plumbing

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        answer = self.client.get_item(
            TableName=self.name,
            Key={"pk": {"S": pk}, "sk": {"S": sk}},
            ConsistentRead=True,
        )
        found = answer.get("Item")
        return from_attributes(found) if found else None

    def _query(self, **arguments: Any) -> Iterator[list[dict[str, Any]]]:
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(TableName=self.name, **arguments):
            yield [from_attributes(item) for item in page.get("Items", [])]

    def _delete_keys(self, keys: list[tuple[str, str]]) -> None:
        """BatchWriteItem deletes, 25 a call, retrying what comes back unprocessed."""
        for start in range(0, len(keys), _BATCH):
            requests = [
                {"DeleteRequest": {"Key": {"pk": {"S": pk}, "sk": {"S": sk}}}}
                for pk, sk in keys[start : start + _BATCH]
            ]
            pending: dict[str, Any] = {self.name: requests}
            for attempt in range(8):
                answer = self.client.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))  # throttled: back off
            else:
                raise RuntimeError(f"{len(pending[self.name])} buffer deletes stayed unprocessed")
