"""The ``onFailure`` destination: keep every failure record where a person can find it.

Lambda (or the local runtime) invokes this function with the seed's failure
record once another function has used up its retries. Each record becomes one
item of the core table, ``pk = failure#{functionName}``,
``sk = {timestamp}#{requestId}``, so ``bridge failures list`` can show them and
``bridge failures retry`` can send the original event again.

Destinations deliver at least once. A request id already stored for the
function is not stored again, and the write is conditional on the key, so a
record delivered twice is stored once and an item already marked ``retried`` is
never reset to ``failed``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.core.events import compact_json
from bridge.core.failure import FAILURE_PK_PREFIX, format_timestamp, function_name
from bridge.lambdas import _env

STATUS_FAILED = "failed"


def failure_key(record: dict[str, Any]) -> dict[str, str]:
    """The core-table key of one failure record."""
    context = record["requestContext"]
    return {
        "pk": FAILURE_PK_PREFIX + function_name(context["functionArn"]),
        # The request id alone: a record delivered twice (even re-stamped) lands on the
        # same key, so the conditional put is the whole duplicate check. Listing sorts
        # by the record's timestamp.
        "sk": context["requestId"],
    }


def failure_item(record: dict[str, Any], created_at: str) -> dict[str, dict[str, str]]:
    """The typed DynamoDB item for a record (the record itself kept as exact JSON text)."""
    context = record["requestContext"]
    response = record.get("responsePayload") or {}
    if not isinstance(response, dict):  # a function may return a bare string as its error
        response = {"errorMessage": str(response)}
    attributes = {
        **failure_key(record),
        "record": compact_json(record),
        "functionArn": context["functionArn"],
        "functionName": function_name(context["functionArn"]),
        "requestId": context["requestId"],
        "condition": context.get("condition", ""),
        "timestamp": record["timestamp"],
        "errorType": str(response.get("errorType", "")),
        "errorMessage": str(response.get("errorMessage", "")),
        "createdAt": created_at,
        "status": STATUS_FAILED,
    }
    item = {name: {"S": value} for name, value in attributes.items()}
    item["approximateInvokeCount"] = {"N": str(int(context.get("approximateInvokeCount", 0)))}
    return item


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Store one failure record; a record stored before is left as it is."""
    if "requestContext" not in event or "timestamp" not in event:
        raise ValueError("not a Lambda failure record: requestContext and timestamp are required")
    table = _env.required_setting("DYNAMODB_CORE_TABLE")
    key: dict[str, Any] = dict(failure_key(event))
    item = failure_item(event, format_timestamp(datetime.now(UTC)))
    client = _env.client("dynamodb")
    try:
        client.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)")
    except client.exceptions.ConditionalCheckFailedException:
        _env.log("failure record already stored", **key)
        return {"stored": False, **key}
    _env.log(
        "failure record stored",
        errorType=item["errorType"]["S"],
        requestId=item["requestId"]["S"],
        **key,
    )
    return {"stored": True, **key}
