"""The forward Lambda's buffer cap, against a real DynamoDB endpoint (moto server).

The session's ``acked`` moves on before the acknowledged events leave the buffer (the
message Lambda saves the ack, then trims and raises the stored floor). A forward in
between must count the buffer's bytes from the stored floor, whose byte count it has,
or it overstates them and drops an event the cap had room for.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import boto3
import pytest

from bridge.core import wire
from bridge.core.session_record import SessionRecord, ack, connect, disconnect, subscribe
from bridge.lambdas import _bridge, bridge_forward
from bridge.lambdas._bridge_table import session_key
from bridge.offline.cloud import create_bridge_table

OWNER = "arn:aws:iam::000000000000:user/local"
NAME = "alice@laptop"
TTL = 3600.0


def event(n: int) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.UUID(int=n)),
        "detail-type": "stream changes",
        "source": "dynamodb-log",
        "account": "000000000000",
        "time": "2026-12-01T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"log": "users", "key": {"pk": f"users#{n}#stream", "sk": 1}, "type": "t"},
    }


@pytest.fixture
def bridge(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    table = f"bridge-{uuid.uuid4().hex[:8]}"
    size = len(wire.json_text(event(1)).encode())
    for name, value in {
        "AWS_ENDPOINT_URL_DYNAMODB": moto_url,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "BRIDGE_TABLE": table,
        "BRIDGE_BUFFER_MAX_BYTES": str(3 * size + size // 2),  # room for three events
        "BRIDGE_SESSIONS_CACHE": "0",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("dynamodb", endpoint_url=moto_url)
    create_bridge_table(client, table)
    return _bridge.table(_bridge.settings())


def session(bridge: Any) -> SessionRecord:
    record = _bridge.load_record(bridge, OWNER, NAME, time.time())[0]
    assert record is not None
    return record


def test_a_forward_between_an_ack_and_its_trim_keeps_what_the_cap_has_room_for(
    bridge: Any,
) -> None:
    now = time.time()
    record, _ = connect(None, OWNER, NAME, "c1", now, TTL)
    record = subscribe(record, None, None, now, TTL)
    changed = disconnect(record, "c1")  # nobody to post to: the buffer is what counts
    assert changed is not None
    _bridge.save(bridge, changed, None, now)
    for n in (1, 2, 3):
        bridge_forward.handler(event(n), None)
    # The client acknowledged 1..2; the message Lambda saved it and has not trimmed yet.
    before = session(bridge)
    _bridge.save(bridge, ack(before, 2, now, TTL, next_cursor=4), before.version, now)

    bridge_forward.handler(event(4), None)  # 3 and 4 unacknowledged: within the cap

    buffered = [cursor for cursor, _, _ in bridge.buffer_index(session_key(OWNER, NAME), 0, now)]
    assert 3 in buffered and 4 in buffered
    assert session(bridge).gaps == ()  # nothing the client lacks was dropped

    for n in (5, 6):  # now the cap is really exceeded: the oldest unacknowledged go
        bridge_forward.handler(event(n), None)
    assert session(bridge).gaps == ((3, 3, "buffer cap"),)
