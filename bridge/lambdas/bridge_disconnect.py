"""``$disconnect`` of the bridge API: detach the connection from its session.

Best effort, as API Gateway's ``$disconnect`` itself is: a connection can vanish
without it, and then a post answering 410 does the same work. The session and its
buffer stay (until their TTL), so a client that reconnects resumes where it was.
"""

from __future__ import annotations

import time
from typing import Any

from bridge.core.session_record import SessionRecord, disconnect
from bridge.lambdas import _bridge, _env

_env.prepare("dynamodb")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = _bridge.settings()
    bridge = _bridge.table(config)
    connection = _bridge.connection_id(event)
    now = time.time()
    found = bridge.connection(connection, now)
    if found is not None and found.get("session"):
        detach(bridge, str(found["owner"]), str(found["session"]), connection, now)
    bridge.connection_delete(connection)
    _env.log("disconnected", connection=connection)
    return {"statusCode": 200}


def detach(bridge: Any, owner: str, name: str, connection: str, now: float) -> None:
    """Clear the session's connection if it is still this one (a newer may hold it)."""
    for _ in range(_bridge.SAVE_ATTEMPTS):
        item = bridge.session(owner, name, now=0.0)
        if item is None:
            return
        record = SessionRecord.from_item(item)
        changed = disconnect(record, connection)
        if changed is None:
            return
        try:
            _bridge.save(bridge, changed, record.version, now)
            return
        except _bridge.Conflict:
            continue
