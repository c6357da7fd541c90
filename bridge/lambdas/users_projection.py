"""The seed's example subscriber: fold the ``users`` log into a read model.

The read model is the seed handler's (``src/handler.py``), so a core table built by
either serves both: one item per user in the core table, ``pk = sk = users#{id}``,
``type: "user"``, ``id``, ``name``, ``email``, then ``phoneNumber``,
``verifiedPhoneNumber: true`` and ``location: {long, lat}`` as the events come, and
the ``version`` of the last event applied (a DynamoDB number). Like the seed's, every
write is conditional on the stored version (``attribute_not_exists(pk)`` for the
first). EventBridge delivers at least once and in no particular order, so:

- an event at or below the stored version is a duplicate and is ignored;
- an event ahead of the stored version first applies the versions in between,
  read from the log table (the log, not the bus, is the source of truth);
- a ``partial`` event (its detail was over 10 KB) has its payload read from the log;
- a gap the log cannot fill raises, so Lambda's retries and then the
  ``onFailure`` destination take over instead of the model silently skipping;
- the write is conditional on the stored version, so two concurrent invocations
  cannot both apply; the loser re-reads and tries again.

One deliberate difference: a *new* phone number (``addPhoneNumber`` with a number other
than the stored one) drops ``verifiedPhoneNumber``, where the seed's handler would keep
calling the new number verified. The seed's data adds one number per user, so on it
both handlers build the same items.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from bridge.core.dynamo_json import load_item
from bridge.core.log import LogItem, from_dynamo, parse_stream_key, stream_key, to_dynamo
from bridge.lambdas import _env

LOG = "users"
MODEL_TYPE = "user"  # the item's ``type``, as the seed's handler writes it
# Attributes of the stored item that are not the folded state.
_KEY_ATTRIBUTES = ("pk", "sk", "type", "id", "version")
MAX_WRITE_ATTEMPTS = 8
_serializer = TypeSerializer()


class MissingVersionsError(RuntimeError):
    """The log lacks versions the read model needs before it can apply an event."""


def read_model_key(id: str) -> dict[str, str]:
    """The core-table key of one user's read model: ``pk = sk = users#{id}`` (the seed's)."""
    key = f"{LOG}#{id}"
    return {"pk": key, "sk": key}


def apply(state: dict[str, Any], type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One fold step: the user's state after one event. Unknown types change nothing."""
    new = dict(state)
    if type == "signup":
        new.update({k: payload[k] for k in ("name", "email") if k in payload})
    elif type == "addPhoneNumber" and "phoneNumber" in payload:
        if new.get("phoneNumber") != payload["phoneNumber"]:
            new.pop("verifiedPhoneNumber", None)  # a new number has not been verified yet
        new["phoneNumber"] = payload["phoneNumber"]
    elif type == "verifyPhoneNumber":
        new["verifiedPhoneNumber"] = True  # as the seed's: the event is the verification
    elif type == "addLocation" and "long" in payload and "lat" in payload:
        new["location"] = {"long": payload["long"], "lat": payload["lat"]}
    # An event without the field it sets changes nothing: failing on it would fail
    # every later event of the user too, as each replays the log from here.
    return new


def _read_model(client: Any, table: str, id: str) -> tuple[int, dict[str, Any]]:
    """The stored version (0 when there is no model yet) and the folded state."""
    response = client.get_item(
        TableName=table,
        Key={k: _serializer.serialize(v) for k, v in read_model_key(id).items()},
        ConsistentRead=True,
    )
    if "Item" not in response:
        return 0, {}
    item = from_dynamo(load_item(response["Item"]))
    version = int(item.pop("version"))
    for key in _KEY_ATTRIBUTES:
        item.pop(key, None)
    return version, item


def _read_log(client: Any, table: str, id: str, first: int, last: int) -> list[LogItem]:
    """Versions ``first..last`` of the user's stream, in order, all pages."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
        "ExpressionAttributeValues": {
            ":pk": {"S": stream_key(LOG, id)},
            ":first": {"N": str(first)},
            ":last": {"N": str(last)},
        },
        "ConsistentRead": True,
    }
    found: list[LogItem] = []
    while True:
        response = client.query(**kwargs)
        found.extend(LogItem.from_item(load_item(item)) for item in response.get("Items", []))
        if "LastEvaluatedKey" not in response:
            return found
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def _events_to_apply(
    client: Any, logs_table: str, id: str, current: int, detail: dict[str, Any], version: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """(version, type, payload) for every version after ``current`` up to the event's."""
    own_from_event = not detail.get("partial")
    last_from_log = version - 1 if own_from_event else version
    events: list[tuple[int, str, dict[str, Any]]] = []
    if last_from_log > current:
        items = _read_log(client, logs_table, id, current + 1, last_from_log)
        wanted = list(range(current + 1, last_from_log + 1))
        have = [item.version for item in items]
        if have != wanted:
            missing = sorted(set(wanted) - set(have))
            raise MissingVersionsError(
                f"{stream_key(LOG, id)}: cannot apply version {version} to the read model at "
                f"version {current}: the log lacks version(s) {missing}"
            )
        events.extend((item.version, item.type, item.payload) for item in items)
    if own_from_event:
        events.append((version, detail["type"], detail["payload"]))
    return events


def _write(
    client: Any, table: str, id: str, state: dict[str, Any], version: int, current: int
) -> None:
    """Store the model as ``version``, only if it is still at ``current``."""
    item = {**read_model_key(id), "type": MODEL_TYPE, "id": id, **state, "version": version}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "Item": {k: _serializer.serialize(to_dynamo(v)) for k, v in item.items()},
    }
    if current:
        kwargs["ConditionExpression"] = "#version = :current"
        kwargs["ExpressionAttributeNames"] = {"#version": "version"}
        kwargs["ExpressionAttributeValues"] = {":current": {"N": str(current)}}
    else:
        kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
    client.put_item(**kwargs)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Apply one ``stream changes`` event of the users log to the read model."""
    detail = event["detail"]
    if detail.get("log") != LOG:
        _env.log("ignored an event of another log", log=detail.get("log"))
        return {"status": "ignored"}
    _, id = parse_stream_key(detail["key"]["pk"])
    version = int(detail["key"]["sk"])
    core_table = _env.required_setting("DYNAMODB_CORE_TABLE")
    logs_table = _env.required_setting("DYNAMODB_LOGS_TABLE")
    client = _env.client("dynamodb")

    for attempt in range(MAX_WRITE_ATTEMPTS):
        current, state = _read_model(client, core_table, id)
        if version <= current:
            _env.log("duplicate event ignored", id=id, version=version, stored=current)
            return {"status": "duplicate", "id": id, "version": current}
        events = _events_to_apply(client, logs_table, id, current, detail, version)
        for _, type, payload in events:
            state = apply(state, type, payload)
        try:
            _write(client, core_table, id, state, version, current)
        except client.exceptions.ConditionalCheckFailedException:
            # Another invocation moved the model meanwhile: start over from what it wrote.
            _env.log("read model changed meanwhile, retrying", id=id, attempt=attempt + 1)
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
            continue
        applied = [v for v, _, _ in events]
        _env.log("read model updated", id=id, version=version, applied=applied)
        return {"status": "applied", "id": id, "version": version, "applied": applied}
    _env.log("gave up on a contended read model", level=logging.ERROR, id=id, version=version)
    raise RuntimeError(
        f"{read_model_key(id)['pk']}: read model kept changing; gave up after "
        f"{MAX_WRITE_ATTEMPTS} attempts to apply version {version}"
    )
