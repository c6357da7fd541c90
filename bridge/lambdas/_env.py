"""What every handler needs from its container: boto3 clients, settings, log lines.

Endpoints are not configured here: boto3 (botocore ≥ 1.31) reads
``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` (``..._DYNAMODB``,
``..._EVENTBRIDGE``) itself, so the local cloud points a handler at its own
servers with environment variables alone and the code stays the code AWS runs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

import boto3

from bridge.core.names import region_from

logger = logging.getLogger(__name__)


# The Lambda runtime leaves the root logger at WARNING; our count lines are INFO.
# AWS_LAMBDA_LOG_LEVEL (Lambda's own log-level control) wins when it is set.
def _level(name: str) -> int:
    """Lambda's levels include TRACE; users write "debug": neither may break import."""
    name = name.strip().upper()
    if name == "TRACE":
        return logging.DEBUG
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


logger.setLevel(_level(os.environ.get("AWS_LAMBDA_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or ""))

_clients: dict[tuple[str, ...], Any] = {}
_lock = threading.Lock()


def region() -> str:
    """Lambda sets ``AWS_REGION``; botocore itself only reads ``AWS_DEFAULT_REGION``."""
    return region_from(os.environ)


def client(service: str) -> Any:
    """One boto3 client per service for the life of the container, made on first use.

    Creating a client costs tens of milliseconds, so it is kept between
    invocations. The cache key includes the endpoint variables and the region:
    in Lambda they never change, while a test or the local runtime that changes
    them gets a client pointing at the new place instead of a stale one.
    """
    env_name = "AWS_ENDPOINT_URL_" + service.upper().replace("-", "_")
    if service == "events":
        env_name = "AWS_ENDPOINT_URL_EVENTBRIDGE"  # the variable follows the service id
    key = (
        service,
        region(),
        os.environ.get("AWS_ENDPOINT_URL", ""),
        os.environ.get(env_name, ""),
    )
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:  # boto3's default session is not safe to build clients from concurrently
        found = _clients.get(key)
        if found is None:
            session: Any = boto3.session.Session()  # any service by name: untyped on purpose
            found = session.client(service, region_name=region())
            _clients[key] = found
    return found


def prepare(*services: str) -> None:
    """Make the clients now, in Lambda's init phase, so the first event does not wait
    for botocore to load service models (and offline's warm-up covers it too)."""
    for service in services:
        client(service)


def setting(name: str, default: str) -> str:
    """An environment variable, read at call time so one container serves one config."""
    return os.environ.get(name) or default


def required_setting(name: str) -> str:
    """A variable the function cannot work without: fail loudly and say which one."""
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"environment variable {name} is not set")
    return value


def log(message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """One JSON object per line, so CloudWatch Logs Insights can query the fields."""
    logger.log(level, json.dumps({"message": message, **fields}, default=str, sort_keys=True))
