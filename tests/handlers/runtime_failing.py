"""A subscriber that always fails, and records when each attempt ran.

The tests give it ``ATTEMPTS_FILE`` (its own environment variable); every call
appends ``<epoch seconds> <request id>`` there before raising, so a test can count
the attempts and measure the delay between them from outside the worker.
"""

from __future__ import annotations

import os
import time
from typing import Any


class ProjectionError(Exception):
    """The error this handler raises: its name must reach the failure record."""


def handler(event: dict[str, Any], context: Any) -> None:
    with open(os.environ["ATTEMPTS_FILE"], "a", encoding="utf-8") as attempts:
        attempts.write(f"{time.time():.6f} {context.aws_request_id}\n")
    raise ProjectionError(f"cannot project {event.get('id', '?')}")
