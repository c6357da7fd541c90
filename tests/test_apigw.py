"""API Gateway WebSocket proxy events, built without a socket.

The reference shapes below follow the WebSocket proxy events that AWS documents and
that real APIs send (also the sample events in aws-lambda-powertools' tests). Every
key of a reference event must be in ours, with a value of the same JSON type. The
values are made up. The gateway's end-to-end tests (tests/test_gateway.py) check the
same builders over a real connection.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from typing import Any

import pytest

from bridge.core import apigw
from bridge.core.apigw import Connection, IamCaller

NOW = 1_731_324_924.561  # epoch seconds: 11 Nov 2024 11:35:24.561 UTC
CONNECTED = 1_731_324_924.553
HEADERS = (
    ("Host", "abc123.execute-api.eu-west-1.amazonaws.com"),
    ("Sec-WebSocket-Key", "c2FtcGxlIGtleSAxMjM0NQ=="),
    ("Sec-WebSocket-Version", "13"),
    ("X-Forwarded-For", "198.51.100.7"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Proto", "https"),
    ("X-Multi", "one"),
    ("X-Multi", "two"),
)
CONN = Connection(
    connection_id="Zx9LmQ2bPqR4sTu=",
    stage="prod",
    domain_name="abc123.execute-api.eu-west-1.amazonaws.com",
    api_id="abc123",
    connected_at=CONNECTED,
    source_ip="198.51.100.7",
    user_agent="python-websockets/17",
    headers=HEADERS,
)

_CONTEXT = {
    "routeKey": "$connect",
    "eventType": "CONNECT",
    "extendedRequestId": "Kq1PhFe3IAMF00a=",
    "requestTime": "11/Nov/2024:11:35:24 +0000",
    "messageDirection": "IN",
    "stage": "prod",
    "connectedAt": 1731324924553,
    "requestTimeEpoch": 1731324924561,
    "identity": {"sourceIp": "198.51.100.7"},
    "requestId": "Kq1PhFe3IAMF00a=",
    "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
    "connectionId": "Zx9LmQ2bPqR4sTu=",
    "apiId": "abc123",
}
AWS_CONNECT: dict[str, Any] = {
    "headers": {"Host": "abc123.execute-api.eu-west-1.amazonaws.com"},
    "multiValueHeaders": {"Host": ["abc123.execute-api.eu-west-1.amazonaws.com"]},
    "queryStringParameters": {"tag": "x"},
    "multiValueQueryStringParameters": {"tag": ["x"]},
    "requestContext": _CONTEXT,
    "isBase64Encoded": False,
}
AWS_MESSAGE: dict[str, Any] = {
    "requestContext": {
        **_CONTEXT,
        "routeKey": "chat",
        "eventType": "MESSAGE",
        "messageId": "Kq1QtfGSIAMCK0b=",
    },
    "body": '{"action": "chat"}',
    "isBase64Encoded": False,
}
AWS_DISCONNECT: dict[str, Any] = {
    "headers": {"Host": "abc123.execute-api.eu-west-1.amazonaws.com", "X-Forwarded-For": ""},
    "multiValueHeaders": {
        "Host": ["abc123.execute-api.eu-west-1.amazonaws.com"],
        "X-Forwarded-For": [""],
    },
    "requestContext": {
        **_CONTEXT,
        "routeKey": "$disconnect",
        "eventType": "DISCONNECT",
        "disconnectStatusCode": 1005,
        "disconnectReason": "Client-side close frame status not set",
    },
    "isBase64Encoded": False,
}
#: What the builders put in every requestContext / identity: AWS's keys, nulls included.
CONTEXT_KEYS = [
    "routeKey",
    "messageId",
    "eventType",
    "extendedRequestId",
    "requestTime",
    "messageDirection",
    "disconnectStatusCode",
    "disconnectReason",
    "stage",
    "connectedAt",
    "requestTimeEpoch",
    "identity",
    "requestId",
    "domainName",
    "connectionId",
    "apiId",
]
IDENTITY_KEYS = [
    "cognitoIdentityPoolId",
    "cognitoIdentityId",
    "principalOrgId",
    "cognitoAuthenticationType",
    "userArn",
    "userAgent",
    "accountId",
    "caller",
    "sourceIp",
    "accessKey",
    "cognitoAuthenticationProvider",
    "user",
]
CLF = re.compile(r"^\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000$")


def assert_shape(ours: Any, reference: Any, path: str = "event") -> None:
    """Every key of ``reference`` is in ``ours``, with a value of the same JSON type."""
    if isinstance(reference, dict):
        assert isinstance(ours, dict), f"{path}: {ours!r} is not an object"
        for key, value in reference.items():
            assert key in ours, f"{path}.{key} is missing"
            assert_shape(ours[key], value, f"{path}.{key}")
    elif isinstance(reference, list):
        assert isinstance(ours, list) and ours, f"{path}: {ours!r} is not a non-empty list"
        for item in ours:
            assert_shape(item, reference[0], f"{path}[]")
    else:
        assert type(ours) is type(reference), f"{path}: {ours!r} is not a {type(reference)}"


def as_delivered(event: dict[str, Any]) -> dict[str, Any]:
    """Lambda hands the handler the event after a JSON round trip."""
    delivered: dict[str, Any] = json.loads(json.dumps(event))
    assert delivered == event
    return delivered


def connect() -> dict[str, Any]:
    query = [("tag", "x"), ("multi", "1"), ("multi", "2")]
    return as_delivered(
        apigw.connect_event(CONN, request_id="Req1Req1Req1Re1=", now=NOW, query=query)
    )


# -- the documented shapes -------------------------------------------------------------


def test_connect_event_has_the_documented_shape() -> None:
    event = connect()
    assert_shape(event, AWS_CONNECT)
    assert "body" not in event
    ctx = event["requestContext"]
    assert list(ctx) == CONTEXT_KEYS
    assert list(ctx["identity"]) == IDENTITY_KEYS
    assert (ctx["routeKey"], ctx["eventType"], ctx["messageDirection"]) == (
        "$connect",
        "CONNECT",
        "IN",
    )
    assert ctx["messageId"] is None
    assert ctx["disconnectStatusCode"] is None and ctx["disconnectReason"] is None
    assert (ctx["stage"], ctx["apiId"], ctx["domainName"]) == ("prod", "abc123", CONN.domain_name)
    assert ctx["connectionId"] == "Zx9LmQ2bPqR4sTu="
    assert ctx["requestId"] == ctx["extendedRequestId"] == "Req1Req1Req1Re1="
    assert (ctx["connectedAt"], ctx["requestTimeEpoch"]) == (1731324924553, 1731324924561)
    assert ctx["requestTime"] == "11/Nov/2024:11:35:24 +0000"
    assert ctx["identity"]["sourceIp"] == "198.51.100.7"
    assert ctx["identity"]["userAgent"] == "python-websockets/17"
    assert ctx["identity"]["userArn"] is None and ctx["identity"]["accessKey"] is None
    assert event["isBase64Encoded"] is False


def test_connect_event_carries_headers_and_query_single_and_multi() -> None:
    event = connect()
    assert event["headers"]["X-Multi"] == "two"  # the last value, as AWS
    assert event["multiValueHeaders"]["X-Multi"] == ["one", "two"]
    assert event["headers"]["Sec-WebSocket-Version"] == "13"
    assert list(event["multiValueHeaders"]) == list(dict.fromkeys(k for k, _ in HEADERS))
    assert event["queryStringParameters"] == {"tag": "x", "multi": "2"}
    assert event["multiValueQueryStringParameters"] == {"tag": ["x"], "multi": ["1", "2"]}


def test_connect_event_without_query_or_headers_has_nulls() -> None:
    bare = Connection("c", "dev", "127.0.0.1:3001", "offline000", CONNECTED, "127.0.0.1")
    event = apigw.connect_event(bare, request_id="r", now=NOW)
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["headers"] is None and event["multiValueHeaders"] is None
    assert event["requestContext"]["identity"]["userAgent"] is None


def test_text_message_event_has_the_documented_shape() -> None:
    body = json.dumps({"action": "chat", "text": "héllo"})
    event = as_delivered(
        apigw.message_event(
            CONN, route_key="chat", body=body, request_id="r1", message_id="m1", now=NOW
        )
    )
    assert_shape(event, AWS_MESSAGE)
    assert set(event) == {"requestContext", "body", "isBase64Encoded"}  # no headers, no query
    ctx = event["requestContext"]
    assert list(ctx) == CONTEXT_KEYS
    assert (ctx["routeKey"], ctx["eventType"], ctx["messageId"]) == ("chat", "MESSAGE", "m1")
    assert ctx["requestId"] == "r1"
    assert (event["body"], event["isBase64Encoded"]) == (body, False)


def test_binary_message_arrives_base64_encoded() -> None:
    data = b"\x00\xffbinary"
    event = as_delivered(
        apigw.message_event(
            CONN, route_key="$default", body=data, request_id="r", message_id="m", now=NOW
        )
    )
    assert event["isBase64Encoded"] is True
    assert event["body"] == "AP9iaW5hcnk="
    assert base64.b64decode(event["body"]) == data


def test_disconnect_event_has_the_documented_shape() -> None:
    event = as_delivered(
        apigw.disconnect_event(
            CONN, request_id="r", now=NOW, status_code=1005, reason="Client-side close"
        )
    )
    assert_shape(event, AWS_DISCONNECT)
    ctx = event["requestContext"]
    assert list(ctx) == CONTEXT_KEYS
    assert (ctx["routeKey"], ctx["eventType"]) == ("$disconnect", "DISCONNECT")
    assert (ctx["disconnectStatusCode"], ctx["disconnectReason"]) == (1005, "Client-side close")
    assert ctx["messageId"] is None
    assert "queryStringParameters" not in event and "body" not in event
    # only Host and X-Forwarded-For of the upgrade request come back, whatever their case
    assert event["headers"] == {"Host": CONN.domain_name, "X-Forwarded-For": "198.51.100.7"}
    assert event["multiValueHeaders"] == {
        "Host": [CONN.domain_name],
        "X-Forwarded-For": ["198.51.100.7"],
    }


def test_disconnect_event_of_an_abnormal_close() -> None:
    lower = Connection(
        "c", "dev", "d", "a", CONNECTED, "127.0.0.1", headers=(("host", "d"), ("x-other", "1"))
    )
    event = apigw.disconnect_event(lower, request_id="r", now=NOW, status_code=None)
    assert event["headers"] == {"host": "d"}
    ctx = event["requestContext"]
    assert (ctx["disconnectStatusCode"], ctx["disconnectReason"]) == (None, "")


# -- identity and time -----------------------------------------------------------------


def test_iam_caller_fills_the_identity_as_aws_iam_auth_does() -> None:
    caller = IamCaller.for_access_key("AKIDEXAMPLE", "000000000000")
    signed = Connection("c", "dev", "d", "a", CONNECTED, "10.0.0.1", "ua", (), caller)
    identity = apigw.identity(signed)
    assert list(identity) == IDENTITY_KEYS
    assert identity["accessKey"] == "AKIDEXAMPLE"
    assert identity["accountId"] == "000000000000"
    assert identity["caller"] == identity["user"] == "AKIDEXAMPLE"
    assert identity["userArn"] == "arn:aws:iam::000000000000:user/AKIDEXAMPLE"
    assert identity["sourceIp"] == "10.0.0.1"
    assert identity["cognitoIdentityId"] is None


def test_iam_caller_can_be_an_assumed_role() -> None:
    role = IamCaller(
        access_key="ASIAEXAMPLE",
        account_id="123456789012",
        principal_id="AROAEXAMPLE:alice",
        user_arn="arn:aws:sts::123456789012:assumed-role/dev/alice",
    )
    conn = Connection("c", "dev", "d", "a", CONNECTED, "10.0.0.1", caller=role)
    event = apigw.message_event(
        conn, route_key="x", body="{}", request_id="r", message_id="m", now=NOW
    )
    identity = event["requestContext"]["identity"]
    assert identity["caller"] == identity["user"] == "AROAEXAMPLE:alice"
    assert identity["userArn"] == role.user_arn


@pytest.mark.parametrize(
    ("epoch", "text"),
    [
        (0.0, "01/Jan/1970:00:00:00 +0000"),
        (NOW, "11/Nov/2024:11:35:24 +0000"),
        (1_709_251_199.999, "29/Feb/2024:23:59:59 +0000"),
    ],
)
def test_request_time_is_api_gateways_clf_form(epoch: float, text: str) -> None:
    assert apigw.request_time(epoch) == text
    assert CLF.match(text)


def test_single_and_multi() -> None:
    assert apigw.single_and_multi([]) == (None, None)
    assert apigw.single_and_multi([("a", "1"), ("b", "2"), ("a", "3")]) == (
        {"a": "3", "b": "2"},
        {"a": ["1", "3"], "b": ["2"]},
    )


def test_the_module_is_pure() -> None:
    """Lambdas and their tests import it: it must not pull in aiohttp or the offline cloud."""
    code = (
        "import sys, bridge.core.apigw; "
        "bad = [m for m in sys.modules if m.split('.')[0] in {'aiohttp', 'boto3', 'botocore'} "
        "or m.startswith('bridge.offline')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
