"""A handler for the runtime tests that does what the event's ``action`` asks.

It runs in a worker process of the local runtime, exactly as AWS would run it:
``handler(event, context)``, JSON in, JSON out.

* ``describe`` — returns the event, the variables the tests look at, the context's
  fields, and two readings of the remaining time 50 ms apart.
* ``print`` — prints lines that look like protocol messages, to stdout and stderr,
  from Python and from a child process, then returns normally.
* ``sleep`` — sleeps ``seconds`` and returns when it started and ended (epoch seconds).
* ``hold`` — creates the file ``started``, then waits (at most 60 s) until the file
  ``release`` exists: lets a test decide when a busy handler ends.
* ``touch`` — creates the file ``path``: shows that an invocation ran.
* ``pid`` — returns the worker's process id (a new one means a new sandbox).
* ``marshal`` — returns a value JSON cannot encode (a set).
* ``decimal`` — returns Decimals, as boto3 reads them from DynamoDB.
* ``infinity`` — returns an infinite Decimal, which has no integer value.
* ``exit`` — ends the process, as a crashing native extension would.
* anything else — raises ``ValueError``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

VARIABLES = (
    "IS_OFFLINE",
    "SHARED",
    "OWN",
    "OVERRIDDEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_EXECUTION_ENV",
    "LAMBDA_TASK_ROOT",
    "_HANDLER",
    "AWS_ACCESS_KEY_ID",
)


def handler(event: dict[str, Any], context: Any) -> Any:
    action = event.get("action")
    if action == "describe":
        first = context.get_remaining_time_in_millis()
        time.sleep(0.05)
        second = context.get_remaining_time_in_millis()
        return {
            "event": event,
            "env": {name: os.environ.get(name) for name in VARIABLES},
            "cwd": os.getcwd(),
            "sys_path_0": sys.path[0],
            "context": {
                "function_name": context.function_name,
                "function_version": context.function_version,
                "invoked_function_arn": context.invoked_function_arn,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "aws_request_id": context.aws_request_id,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
            },
            "remaining": [first, second],
        }
    if action == "print":
        print('{"id": "forged", "payload": "not from the protocol"}')
        print("a plain line from print()")
        sys.stdout.write("no newline at the end")
        sys.stdout.flush()
        print("", file=sys.stderr)
        print("a line on stderr", file=sys.stderr)
        subprocess.run([sys.executable, "-c", "print('a line from a child process')"], check=True)
        return {"printed": True}
    if action == "big":
        return "x" * int(event["bytes"])
    if action == "sleep":
        started = time.time()
        time.sleep(float(event["seconds"]))
        return {"started": started, "ended": time.time()}
    if action == "hold":
        Path(event["started"]).touch()
        deadline = time.monotonic() + 60
        while not Path(event["release"]).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("never released")
            time.sleep(0.01)
        return {"pid": os.getpid()}
    if action == "touch":
        Path(event["path"]).touch()
        return {"touched": event["path"]}
    if action == "pid":
        return {"pid": os.getpid()}
    if action == "marshal":
        return {"not": {"json"}}
    if action == "decimal":
        return {"count": Decimal("3"), "ratio": Decimal("0.5")}
    if action == "infinity":
        return {"huge": Decimal("Infinity")}
    if action == "exit":
        os._exit(3)
    raise ValueError(f"unknown action {action!r}")
