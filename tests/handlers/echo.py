"""A WebSocket Lambda handler for the gateway tests: records, echoes and calls back.

It is a real handler with the AWS signature ``handler(event, context)``, so the tests
exercise the gateway exactly the way the bridge Lambdas will be exercised.

Routes (the message's ``action``):

* ``$connect`` — accepts, unless the query string asks for a refusal:
  ``?deny=<status>`` returns that status, ``?boom=1`` raises.
* ``echo`` — returns the body unchanged (a two-way route).
* ``slow`` — sleeps ``seconds`` then returns the body, to show ordering and isolation.
* ``fail`` — raises, to show "Internal server error".
* ``callback`` — posts to its own connection through the management API, reads the
  connection back with GetConnection, and returns what it read.
* ``$default`` — returns ``{"route": "$default", "body": <the raw body>}``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3

#: Every event received, in arrival order (handlers run in threads, hence the lock).
EVENTS: list[dict[str, Any]] = []
_lock = threading.Lock()


def events(route: str | None = None, connection_id: str | None = None) -> list[dict[str, Any]]:
    """The recorded events, optionally only one route's and/or one connection's."""
    with _lock:
        found = list(EVENTS)
    return [
        e
        for e in found
        if (route is None or e["requestContext"]["routeKey"] == route)
        and (connection_id is None or e["requestContext"]["connectionId"] == connection_id)
    ]


def management_client(event: dict[str, Any]) -> Any:
    """The @connections client for the API that sent ``event`` (http when it is local)."""
    ctx = event["requestContext"]
    domain = ctx["domainName"]
    scheme = "http" if domain.startswith(("127.0.0.1", "localhost")) else "https"
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"{scheme}://{domain}/{ctx['stage']}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def handler(event: dict[str, Any], context: Any) -> dict[str, Any] | None:
    with _lock:
        EVENTS.append(event)
    route = event["requestContext"]["routeKey"]
    if route == "$connect":
        return _connect(event)
    if route == "$disconnect":
        return None
    if route == "$default":
        return {"statusCode": 200, "body": json.dumps({"route": "$default", "body": event["body"]})}
    message = json.loads(event["body"])
    if route == "echo":
        return {"statusCode": 200, "body": event["body"]}
    if route == "slow":
        time.sleep(float(message.get("seconds", 0.5)))
        return {"statusCode": 200, "body": event["body"]}
    if route == "fail":
        raise RuntimeError("the handler failed on purpose")
    if route == "callback":
        return _callback(event, message)
    raise ValueError(f"no such route {route!r}")


def _connect(event: dict[str, Any]) -> dict[str, Any]:
    query = event.get("queryStringParameters") or {}
    if "boom" in query:
        raise RuntimeError("$connect failed on purpose")
    if "deny" in query:
        return {"statusCode": int(query["deny"]), "body": "denied"}
    return {"statusCode": 200}


def _callback(event: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    client = management_client(event)
    connection_id = event["requestContext"]["connectionId"]
    client.post_to_connection(ConnectionId=connection_id, Data=message["data"].encode())
    info = client.get_connection(ConnectionId=connection_id)
    reply = {"sourceIp": info["Identity"]["SourceIp"], "connectedAt": str(info["ConnectedAt"])}
    return {"statusCode": 200, "body": json.dumps(reply)}
