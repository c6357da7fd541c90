"""Every client message of the bridge API (``hello``, ``subscribe``, ``resume``,
``ack``, ``ping``, ``sessions``, ``drop`` and anything unknown on ``$default``).

The decision is :class:`bridge.core.server_session.ServerProtocol`'s: it turns one
message into a plan; this module reads what the plan needs and carries it out, in the
plan's order. The principal is the one recorded at ``$connect`` (API Gateway reports
the IAM identity there only), so a message can never act for another principal.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bridge.core import wire
from bridge.core.server_session import (
    Plan,
    ServerProtocol,
    drop_plan,
    requested_session,
    resume_messages,
    sessions_reply,
)
from bridge.core.session_record import SessionRecord
from bridge.lambdas import _bridge, _env
from bridge.lambdas._bridge_post import Posted
from bridge.lambdas._bridge_table import BridgeTable, session_key

#: Beyond the forwarders' cache time (counted from before their read), for timer slop.
SUBSCRIBE_MARGIN = 0.25


_env.prepare("dynamodb", "apigatewaymanagementapi")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = _bridge.settings()
    bridge = _bridge.table(config)
    connection = _bridge.connection_id(event)
    body = _bridge.body_of(event)
    now = time.time()
    known = bridge.connection(connection, now)
    if known is None:
        error = wire.Error("no-session", "this connection is unknown to the bridge: reconnect")
        _bridge.post_all(connection, [wire.encode(error)])
        return {"statusCode": 200}
    owner = str(known["owner"])
    named = requested_session(body)
    name = named if named is not None else known.get("session")
    for _ in range(_bridge.SAVE_ATTEMPTS):
        record, next_cursor = (
            _bridge.load_record(bridge, owner, str(name), now) if name else (None, 1)
        )
        protocol = ServerProtocol(
            record, owner, connection, now, next_cursor=next_cursor, ttl=config.session_ttl
        )
        plan = protocol.receive_message(body)
        try:
            _carry_out(plan, bridge, config, owner, connection, record, now, context)
        except _bridge.Conflict:
            now = time.time()
            continue  # someone saved the session first: read again, decide again
        if plan.problem:
            _env.log("refused a message", connection=connection, problem=plan.problem)
        return {"statusCode": 200}
    error = wire.Error("internal", "the session kept changing under this message; send it again")
    _bridge.post_all(connection, [wire.encode(error)])
    return {"statusCode": 200}


def _carry_out(
    plan: Plan,
    bridge: BridgeTable,
    config: _bridge.Settings,
    owner: str,
    connection: str,
    before: SessionRecord | None,
    now: float,
    context: Any,
) -> None:
    if plan.save is not None:
        _bridge.save(bridge, plan.save, plan.expected_version, now)
        if plan.fresh:
            _reset_buffer(bridge, plan.save)
        if plan.save.connection == connection:
            bridge.connection_put(
                connection,
                {
                    "owner": owner,
                    "session": plan.save.name,
                    "connected_at": now,
                    "ttl": math.ceil(now + _bridge.CONNECTION_TTL),
                },
            )
    if plan.trim_through is not None and plan.save is not None:
        _trim_acked(bridge, plan.save, before.acked if before else 0, plan.trim_through, now)
    if plan.supersede is not None:
        if plan.notice:
            _bridge.post_all(plan.supersede, [plan.notice])
        _bridge.poster().close(plan.supersede)
    if plan.save is not None and _subscription_changed(before, plan.save):
        # Forwarders keep the sessions for a moment: answer once every copy has been
        # read again, so no event after ``subscribed`` can miss this subscription.
        time.sleep(_bridge.sessions_cache_seconds() + SUBSCRIBE_MARGIN)
    outcome = _bridge.post_all(connection, plan.send)
    if outcome is Posted.GONE:
        return
    if plan.resume_after is not None and plan.save is None and before is not None:
        _resume(bridge, before, connection, plan.resume_after, plan.resume_through, now, context)
    if plan.list_sessions:
        _list_sessions(bridge, owner, connection, now)
    if plan.drop is not None:
        _drop(bridge, owner, connection, plan.drop, now)
    if plan.close:
        _bridge.poster().close(connection)


def _subscription_changed(before: SessionRecord | None, after: SessionRecord) -> bool:
    if not after.subscribed:
        return False
    if before is None or not before.subscribed:
        return True
    return (before.pattern, before.replay) != (after.pattern, after.replay)


def _reset_buffer(bridge: BridgeTable, record: SessionRecord) -> None:
    """A session created afresh starts at cursor 1 with an empty buffer."""
    bridge.delete_session_data(record.owner, record.name)


def _trim_acked(
    bridge: BridgeTable, record: SessionRecord, previous: int, through: int, now: float
) -> None:
    """Acknowledged events leave the buffer (TTL would take days); the byte count of
    what is left is kept beside the counter for the cap."""
    if through <= previous:
        return
    key = session_key(record.owner, record.name)
    index: list[tuple[int, int]] = []
    for cursor, _, cum in bridge.buffer_index(key, previous, 0.0):
        if cursor > through:
            break  # the index is in cursor order: the rest stays
        index.append((cursor, cum))
    bridge.buffer_delete(key, [cursor for cursor, _ in index])
    if index:
        bridge.raise_floor(key, through, index[-1][1])


def _resume(
    bridge: BridgeTable,
    record: SessionRecord,
    connection: str,
    after: int,
    through: int | None,
    now: float,
    context: Any,
) -> None:
    """Post the buffer above ``after``; stop early near the function's timeout with a
    ``resumed`` up to what was sent (the client asks again for the rest)."""
    deadline = _bridge.deadline_of(context)
    top = through if through is not None else 0
    sent: list[tuple[int, str, wire.JSONObject]] = []
    last = after
    for entry in _bridge.buffered_events(bridge, record.owner, record.name, after, now):
        sent.append(entry)
        last = entry[0]
        if len(sent) >= 200:
            texts = resume_messages(record, after, last, sent)[:-1]  # gaps + events
            if _bridge.post_all(connection, texts) is not Posted.OK:
                return
            after, sent = last, []
            record = _without_gaps(record)
            if time.monotonic() > deadline:
                _bridge.post_all(connection, [wire.encode(wire.Resumed(last))])
                return
    texts = resume_messages(record, after, max(top, last), sent)
    _bridge.post_all(connection, texts)


def _without_gaps(record: SessionRecord) -> SessionRecord:
    """After the first page the gaps are sent: do not repeat them on every page."""
    from dataclasses import replace

    return replace(record, gaps=())


def _list_sessions(bridge: BridgeTable, owner: str, connection: str, now: float) -> None:
    entries = []
    for item in bridge.owned_sessions(owner, now):
        record = SessionRecord.from_item(item)
        key = session_key(record.owner, record.name)
        allocated, _ = bridge.allocated(key)
        buffered = sum(1 for _ in bridge.buffer_index(key, record.acked, now))
        entries.append((record, allocated + 1, buffered))
    _bridge.post_all(connection, [sessions_reply(entries, owner, now)])


def _drop(bridge: BridgeTable, owner: str, connection: str, name: str, now: float) -> None:
    item = bridge.session(owner, name, now)
    record = SessionRecord.from_item(item) if item is not None else None
    plan = drop_plan(record, owner, name, now)
    if plan.delete is not None:
        bridge.delete_session(owner, name)
    if plan.supersede is not None and plan.supersede != connection:
        if plan.notice:
            _bridge.post_all(plan.supersede, [plan.notice])
        _bridge.poster().close(plan.supersede)
    _bridge.post_all(connection, plan.send)


__all__ = ["handler"]
