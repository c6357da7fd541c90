"""A users handler written the way the seed's Python handler is, for the seed-data tests.

Not the project's projection: a user's own handler as someone coming from the seed
would have it. Per event it reads the stored ``version`` of ``users#{id}`` (``pk = sk``),
queries the log for every version after it and applies them one by one, each write
conditional on the version before (``attribute_not_exists(pk)`` for the signup). It
reads ``long``/``lat`` straight from the ``addLocation`` payload and ``phoneNumber``
from ``addPhoneNumber``'s, so any other payload shape fails it (a ``KeyError``), and
a write out of order fails its condition: an error shows as a failure record.

boto3 finds the endpoint in ``AWS_ENDPOINT_URL*`` (set by the local cloud), as in AWS.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

import boto3

#: Every (id, version, type) applied by this process, in order (tests read it in-process).
APPLIED: list[tuple[str, int, str]] = []


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    detail = event["detail"]
    id = detail["payload"]["id"]
    dynamodb = boto3.resource("dynamodb")
    core = dynamodb.Table(os.environ["DYNAMODB_CORE_TABLE"])
    logs = dynamodb.Table(os.environ["DYNAMODB_LOGS_TABLE"])
    key = {"pk": f"users#{id}", "sk": f"users#{id}"}

    stored = core.get_item(
        Key=key,
        ConsistentRead=True,
        ProjectionExpression="#version",
        ExpressionAttributeNames={"#version": "version"},
    ).get("Item", {})
    current = stored.get("version", Decimal(0))
    newer = logs.query(
        KeyConditionExpression="pk = :pk AND sk > :sk",
        ExpressionAttributeValues={":pk": detail["key"]["pk"], ":sk": current},
        ConsistentRead=True,
    )["Items"]
    for item in newer:
        _apply(core, key, id, item)
        APPLIED.append((id, int(item["sk"]), item["type"]))
    return {"applied": [int(item["sk"]) for item in newer]}


def _apply(core: Any, key: dict[str, str], id: str, item: dict[str, Any]) -> None:
    version, payload = item["sk"], item["payload"]
    if item["type"] == "signup":
        core.put_item(
            Item={
                **key,
                "type": "user",
                "id": id,
                "name": payload["name"],
                "email": payload["email"],
                "version": version,
            },
            ConditionExpression="attribute_not_exists(pk)",
        )
        return
    if item["type"] == "addPhoneNumber":
        values = {"phoneNumber": payload["phoneNumber"]}
    elif item["type"] == "verifyPhoneNumber":
        values = {"verifiedPhoneNumber": True}
    elif item["type"] == "addLocation":
        values = {"location": {"long": payload["long"], "lat": payload["lat"]}}
    else:
        return
    names = {f"#{name}": name for name in values}
    core.update_item(
        Key=key,
        UpdateExpression="SET "
        + ", ".join(f"#{name} = :{name}" for name in values)
        + ", #version = :version",
        ConditionExpression="#version = :current",
        ExpressionAttributeNames={**names, "#version": "version"},
        ExpressionAttributeValues={
            **{f":{name}": value for name, value in values.items()},
            ":version": version,
            ":current": version - 1,
        },
    )
