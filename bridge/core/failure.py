"""The record Lambda hands to an ``onFailure`` destination, built the same way offline.

When an asynchronous invocation has used up its retries, AWS sends the seed's
record (``version "1.0"``, ``requestContext``, ``requestPayload``,
``responseContext``, ``responsePayload``) to the destination. The local runtime
builds the very same record with :func:`failure_record`, so a failure handler
cannot tell the two worlds apart. Pure: no I/O, stdlib only.
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from typing import Any

RECORD_VERSION = "1.0"
RETRIES_EXHAUSTED = "RetriesExhausted"
EVENT_AGE_EXCEEDED = "EventAgeExceeded"
EXECUTED_VERSION = "$LATEST"
UNHANDLED = "Unhandled"
FAILURE_PK_PREFIX = "failure#"  # core-table items of failure records: failure#{function}


def format_timestamp(when: datetime) -> str:
    """AWS's form with milliseconds and ``Z``: ``2019-11-24T23:08:25.651Z``.

    A naive datetime is taken as UTC; an aware one is converted to UTC first.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def function_name(function_arn: str) -> str:
    """The function's name from its ARN (qualified or not) or from a bare name.

    ``arn:aws:lambda:us-east-1:123456789012:function:my-fn:$LATEST`` → ``my-fn``:
    AWS puts the *qualified* ARN in failure records, so the last ``:`` part can be
    a version; the name is the part after ``function``.
    """
    parts = function_arn.split(":")
    if len(parts) >= 7 and parts[0] == "arn" and parts[5] == "function":
        return parts[6]
    return parts[-1]


def error_payload(exc: BaseException) -> dict[str, Any]:
    """``{errorType, errorMessage, trace}`` for an exception, as the Python runtime builds it.

    The Lambda Python runtime reports the exception's class name, ``str(exc)`` and
    one formatted entry per traceback frame (``traceback.format_list``); the seed's
    record calls that list ``trace``.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "trace": traceback.format_list(frames),
    }


def runtime_error(error_type: str, message: str, trace: list[str] | None = None) -> dict[str, Any]:
    """An error the Lambda runtime reports on the handler's behalf (a timeout, a crash, an
    unmarshallable result), shaped like a handler's own error payload."""
    return {"errorType": error_type, "errorMessage": message, "trace": list(trace or [])}


def failure_record(
    *,
    request_payload: dict[str, Any],
    function_arn: str,
    request_id: str,
    invoke_count: int,
    error_type: str,
    error_message: str,
    trace: list[str] | None = None,
    timestamp: datetime | None = None,
    condition: str = RETRIES_EXHAUSTED,
) -> dict[str, Any]:
    """The seed's ``onFailure`` record for one invocation that never succeeded.

    ``invoke_count`` is how many times the function ran (1 + retries);
    ``request_payload`` is the original event, unchanged, so the failure can be
    re-sent later (``bridge failures retry``).
    """
    return {
        "version": RECORD_VERSION,
        "timestamp": format_timestamp(timestamp or datetime.now(UTC)),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": request_payload,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": EXECUTED_VERSION,
            "functionError": UNHANDLED,
        },
        "responsePayload": {
            "errorType": error_type,
            "errorMessage": error_message,
            "trace": list(trace or []),
        },
    }
