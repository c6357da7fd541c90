"""``bridge failures``: look at the failure records the ``failures`` function stored, retry one.

A failure item (see ``bridge.lambdas.failures``) keeps the whole record, so a
retry sends the function exactly the event that failed, asynchronously — the way
EventBridge invoked it the first time, with Lambda's retries and ``onFailure``
applying again. Works against AWS and the local cloud alike: the caller decides
where the table and the Lambda client point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from bridge.core.errors import BridgeError, ValidationError
from bridge.core.events import compact_json
from bridge.core.failure import FAILURE_PK_PREFIX, format_timestamp, function_name

STATUS_RETRIED = "retried"


@dataclass(frozen=True)
class FailureInfo:
    """One stored failure, as ``bridge failures list`` shows it."""

    request_id: str
    function_name: str
    function_arn: str
    timestamp: str
    condition: str
    invoke_count: int
    error_type: str
    error_message: str
    status: str
    created_at: str
    retried_at: str | None
    retries: int
    record: dict[str, Any]
    pk: str
    sk: str

    @property
    def request_payload(self) -> Any:
        """The event the function failed on, unchanged."""
        return self.record.get("requestPayload")

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> FailureInfo:
        """Read an item of the core table (a boto3 ``Table`` resource item)."""
        record = json.loads(item["record"])
        return cls(
            request_id=item["requestId"],
            function_name=item.get("functionName") or function_name(item["functionArn"]),
            function_arn=item["functionArn"],
            timestamp=item.get("timestamp") or record.get("timestamp", ""),
            condition=item.get("condition", ""),
            invoke_count=int(item.get("approximateInvokeCount", 0)),
            error_type=item.get("errorType", ""),
            error_message=item.get("errorMessage", ""),
            status=item.get("status", ""),
            created_at=item.get("createdAt", ""),
            retried_at=item.get("retriedAt"),
            retries=int(item.get("retries", 0)),
            record=record,
            pk=item["pk"],
            sk=item["sk"],
        )

    def to_json(self) -> dict[str, Any]:
        """The fields ``--json`` prints (the full record included)."""
        return {
            "requestId": self.request_id,
            "functionName": self.function_name,
            "functionArn": self.function_arn,
            "timestamp": self.timestamp,
            "condition": self.condition,
            "approximateInvokeCount": self.invoke_count,
            "errorType": self.error_type,
            "errorMessage": self.error_message,
            "status": self.status,
            "createdAt": self.created_at,
            "retriedAt": self.retried_at,
            "retries": self.retries,
            "record": self.record,
        }


def list_failures(core_table: Any, page_size: int | None = None) -> list[FailureInfo]:
    """Every stored failure, oldest first. A scan: failures are few, and rare to list.

    The scan follows ``LastEvaluatedKey`` to the end; ``page_size`` caps the items
    read per request (to spare a provisioned table's read capacity).
    """
    kwargs: dict[str, Any] = {
        "FilterExpression": Attr("pk").begins_with(FAILURE_PK_PREFIX),
        "ConsistentRead": True,
    }
    if page_size:
        kwargs["Limit"] = page_size
    found: list[FailureInfo] = []
    while True:
        response = core_table.scan(**kwargs)
        found.extend(FailureInfo.from_item(item) for item in response.get("Items", []))
        if "LastEvaluatedKey" not in response:
            break
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
    # The timestamps share one fixed-width UTC form, so text order is time order.
    return sorted(found, key=lambda f: (f.timestamp, f.function_name, f.request_id))


def get_failure(core_table: Any, request_id: str) -> FailureInfo:
    """The failure with this request id, or with the one id that starts with it.

    A unique prefix is accepted so ``bridge failures retry 3f2a`` works like a
    short git hash; an unknown or ambiguous id is an error the user can fix.
    """
    if not request_id.strip():
        raise ValidationError("give the request id (or its start) of a failure to retry")
    wanted = request_id.strip()
    failures = list_failures(core_table)
    exact = [f for f in failures if f.request_id == wanted]
    if exact:
        return exact[-1]
    matches = [f for f in failures if f.request_id.startswith(wanted)]
    if not matches:
        raise BridgeError(f"no failure with request id {wanted!r} (see `bridge failures list`)")
    if len({f.request_id for f in matches}) > 1:
        raise BridgeError(
            f"request id {wanted!r} is ambiguous: {len(matches)} failures' ids start with it"
        )
    return matches[-1]


def retry_failure(core_table: Any, lambda_client: Any, request_id: str) -> dict[str, Any]:
    """Invoke the failed function again, asynchronously, with the original event.

    The item is marked ``retried`` only after Lambda accepted the invocation, so a
    refused retry leaves it ``failed`` and can simply be run again.
    """
    failure = get_failure(core_table, request_id)
    payload = failure.request_payload
    if payload is None:
        raise BridgeError(f"failure {failure.request_id} holds no request payload to send again")
    try:
        response = lambda_client.invoke(
            FunctionName=failure.function_name,
            InvocationType="Event",
            Payload=compact_json(payload).encode(),
        )
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        raise BridgeError(
            f"could not invoke {failure.function_name} for failure {failure.request_id}: "
            f"{code}: {message}"
        ) from None
    status_code = int(response.get("StatusCode", 0))
    if status_code != 202:  # Lambda answers an accepted asynchronous invocation with 202
        raise BridgeError(
            f"{failure.function_name} did not accept the retry of {failure.request_id} "
            f"(status {status_code})"
        )
    retried_at = format_timestamp(datetime.now(UTC))
    core_table.update_item(
        Key={"pk": failure.pk, "sk": failure.sk},
        UpdateExpression=(
            "SET #status = :retried, retriedAt = :at,"
            " retries = if_not_exists(retries, :zero) + :one"
        ),
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={
            ":retried": STATUS_RETRIED,
            ":at": retried_at,
            ":zero": 0,
            ":one": 1,
        },
    )
    return {
        "requestId": failure.request_id,
        "functionName": failure.function_name,
        "statusCode": status_code,
        "status": STATUS_RETRIED,
        "retriedAt": retried_at,
        "retries": failure.retries + 1,
    }
