"""API Gateway WebSocket proxy events (``$connect``, messages, ``$disconnect``) from values.

A Lambda behind a WebSocket API sees only these events. Two places build them: the
local gateway (:mod:`bridge.offline.gateway`) builds them for every connection, and the
bridge Lambdas' tests build the same events without a socket. Both use these
functions, so the offline world and the tests cannot drift apart. Pure: the clock and
the ids come in as arguments, and nothing here knows about aiohttp or sockets.

The shape is the one AWS documents for the Lambda proxy integration of a WebSocket API
("Setting up WebSocket API integrations", and the sample events in aws-lambda-powertools'
tests): a ``requestContext`` with ``routeKey``, ``eventType``, ``connectionId``,
``stage``, ``domainName``, ``apiId``, ``requestId``, ``requestTimeEpoch``,
``connectedAt`` and ``identity``. ``$connect`` also carries the upgrade request's
headers and query string. A message carries ``body``. ``$disconnect`` carries the close
code and reason and a few of the headers again. The keys AWS sends as ``null`` (the
Cognito fields of ``identity``, say) are kept, so that a handler that reads them finds
them, as it does in the cloud.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CONNECT, DISCONNECT, DEFAULT = "$connect", "$disconnect", "$default"
#: ``requestContext.eventType`` of each kind of event.
CONNECT_EVENT, MESSAGE_EVENT, DISCONNECT_EVENT = "CONNECT", "MESSAGE", "DISCONNECT"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: The only upgrade-request headers that API Gateway repeats in ``$disconnect``.
_DISCONNECT_HEADERS = frozenset({"host", "x-forwarded-for"})

Event = dict[str, Any]
"""A proxy event exactly as the handler receives it (JSON-shaped)."""


@dataclass(frozen=True, slots=True)
class IamCaller:
    """The IAM principal that signed the ``$connect`` request of an IAM-authorized route.

    API Gateway reports it in ``requestContext.identity``: ``accessKey``, ``accountId``,
    ``caller`` and ``user`` (both the principal id), and ``userArn``.
    """

    access_key: str
    account_id: str
    principal_id: str
    user_arn: str

    @classmethod
    def for_access_key(cls, access_key: str, account_id: str) -> IamCaller:
        """An IAM user known only by its access key. The local gateway can tell no more.

        Its principal id is the access key itself, and its ARN is
        ``arn:aws:iam::{account}:user/{access key}``.
        """
        return cls(
            access_key=access_key,
            account_id=account_id,
            principal_id=access_key,
            user_arn=f"arn:aws:iam::{account_id}:user/{access_key}",
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """What API Gateway knows of one connection and repeats in each of its events."""

    connection_id: str
    stage: str
    domain_name: str
    """``Host`` of the upgrade request (the API's domain): handlers use it for ``@connections``."""
    api_id: str
    connected_at: float
    """Epoch seconds. Events carry it in milliseconds."""
    source_ip: str
    user_agent: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """The upgrade request's headers in order, repeated names included."""
    caller: IamCaller | None = None
    """Who signed ``$connect``. Only set when the route uses IAM authorization."""


def request_time(epoch: float) -> str:
    """``requestTime`` in API Gateway's CLF form, with English month names in any locale."""
    t = datetime.fromtimestamp(epoch, UTC)
    return f"{t.day:02d}/{_MONTHS[t.month - 1]}/{t.year}:{t:%H:%M:%S} +0000"


def single_and_multi(
    items: Iterable[tuple[str, str]],
) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    """Build the ``x`` / ``multiValueX`` pair of a proxy event.

    Both are ``None`` when there are no items, as in AWS. When a name repeats, the
    single-value map keeps its last value.
    """
    multi: dict[str, list[str]] = {}
    for key, value in items:
        multi.setdefault(key, []).append(value)
    if not multi:
        return None, None
    return {k: v[-1] for k, v in multi.items()}, multi


def identity(conn: Connection) -> dict[str, Any]:
    """``requestContext.identity``. An IAM caller adds its key, as with AWS_IAM auth."""
    caller = conn.caller
    return {
        "cognitoIdentityPoolId": None,
        "cognitoIdentityId": None,
        "principalOrgId": None,
        "cognitoAuthenticationType": None,
        "userArn": caller.user_arn if caller else None,
        "userAgent": conn.user_agent,
        "accountId": caller.account_id if caller else None,
        "caller": caller.principal_id if caller else None,
        "sourceIp": conn.source_ip,
        "accessKey": caller.access_key if caller else None,
        "cognitoAuthenticationProvider": None,
        "user": caller.principal_id if caller else None,
    }


def request_context(
    conn: Connection,
    *,
    route_key: str,
    event_type: str,
    request_id: str,
    now: float,
    message_id: str | None = None,
    disconnect_status_code: int | None = None,
    disconnect_reason: str | None = None,
) -> dict[str, Any]:
    """The ``requestContext`` that API Gateway puts into every WebSocket proxy event.

    ``now`` (epoch seconds) is when the request reached the API. AWS uses the same id for
    ``requestId`` and ``extendedRequestId``.
    """
    return {
        "routeKey": route_key,
        "messageId": message_id,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": request_time(now),
        "messageDirection": "IN",
        "disconnectStatusCode": disconnect_status_code,
        "disconnectReason": disconnect_reason,
        "stage": conn.stage,
        "connectedAt": int(conn.connected_at * 1000),
        "requestTimeEpoch": int(now * 1000),
        "identity": identity(conn),
        "requestId": request_id,
        "domainName": conn.domain_name,
        "connectionId": conn.connection_id,
        "apiId": conn.api_id,
    }


def connect_event(
    conn: Connection,
    *,
    request_id: str,
    now: float,
    query: Iterable[tuple[str, str]] = (),
) -> Event:
    """The ``$connect`` event: the upgrade request's headers and query string, and no body.

    ``query`` is the query string's ``(name, value)`` pairs in order, without any SigV4
    parameters (API Gateway removes those before the handler sees them).
    """
    headers, multi_headers = single_and_multi(conn.headers)
    params, multi_params = single_and_multi(query)
    return {
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": params,
        "multiValueQueryStringParameters": multi_params,
        "requestContext": request_context(
            conn, route_key=CONNECT, event_type=CONNECT_EVENT, request_id=request_id, now=now
        ),
        "isBase64Encoded": False,
    }


def message_event(
    conn: Connection,
    *,
    route_key: str,
    body: str | bytes,
    request_id: str,
    message_id: str,
    now: float,
) -> Event:
    """A MESSAGE event for the selected route.

    A text message passes as it is. A binary message (``bytes``) arrives base64-encoded
    with ``isBase64Encoded`` set, as API Gateway passes it on.
    """
    binary = isinstance(body, bytes)
    text = base64.b64encode(body).decode() if isinstance(body, bytes) else body
    return {
        "requestContext": request_context(
            conn,
            route_key=route_key,
            event_type=MESSAGE_EVENT,
            request_id=request_id,
            now=now,
            message_id=message_id,
        ),
        "body": text,
        "isBase64Encoded": binary,
    }


def disconnect_event(
    conn: Connection,
    *,
    request_id: str,
    now: float,
    status_code: int | None,
    reason: str = "",
) -> Event:
    """The ``$disconnect`` event, with the close code and reason of whichever side closed.

    AWS repeats only ``Host`` and ``X-Forwarded-For`` of the upgrade request's headers.
    """
    kept = ((k, v) for k, v in conn.headers if k.lower() in _DISCONNECT_HEADERS)
    headers, multi = single_and_multi(kept)
    return {
        "headers": headers,
        "multiValueHeaders": multi,
        "requestContext": request_context(
            conn,
            route_key=DISCONNECT,
            event_type=DISCONNECT_EVENT,
            request_id=request_id,
            now=now,
            disconnect_status_code=status_code,
            disconnect_reason=reason,
        ),
        "isBase64Encoded": False,
    }


__all__ = [
    "CONNECT",
    "CONNECT_EVENT",
    "DEFAULT",
    "DISCONNECT",
    "DISCONNECT_EVENT",
    "MESSAGE_EVENT",
    "Connection",
    "Event",
    "IamCaller",
    "connect_event",
    "disconnect_event",
    "identity",
    "message_event",
    "request_context",
    "request_time",
    "single_and_multi",
]
