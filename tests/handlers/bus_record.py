"""A bus subscriber for the events API tests: records every event it gets, or fails.

Each invocation appends one JSON line to ``RECORDS_FILE`` (the function's own
variable) naming the function, so a test can see which rules' targets ran, in
which sandbox, with which event. An event carrying ``"fail": true`` raises instead,
which is how the Lambda Invoke API's ``X-Amz-Function-Error`` is exercised.
"""

from __future__ import annotations

import json
import os
from typing import Any


class AskedToFail(Exception):
    """Raised on purpose: the runtime reports it as errorType ``AskedToFail``."""


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and event.get("fail"):
        raise AskedToFail(f"{context.function_name} was asked to fail")
    line = {"function": context.function_name, "request_id": context.aws_request_id, "event": event}
    with open(os.environ["RECORDS_FILE"], "a", encoding="utf-8") as records:
        records.write(json.dumps(line) + "\n")
    event_id = event.get("id") if isinstance(event, dict) else None
    return {"function": context.function_name, "id": event_id}
