"""Forward: the target of the bridge's two rules (live events, and replays named in a
replay's ``FilterArns``). EventBridge invokes it asynchronously, one event at a time.

For each session whose subscription wants the event it allocates a cursor (an atomic
add), appends the event to the session's buffer, trims the buffer to its cap (telling
the client exactly which cursors went), and posts the event to the session's open
connection, read again *after* the buffer write so that a client connecting meanwhile
either finds the event in the buffer on ``resume`` or gets it posted.

* With no session open the whole cost is one cached lookup: the sessions are read
  with one Query at most every ``BRIDGE_SESSIONS_CACHE`` seconds (default 1) per
  container. A new or changed subscription is answered only after that long (see
  bridge-message), so no event after ``subscribed`` is missed by a stale cache; a
  stale connection id only costs a 410 and a fresh read.
* 410 from a post: the connection is gone; it is detached, the buffer keeps the event,
  and the invocation succeeds (EventBridge must not retry the event for everyone).
* 429: :class:`~bridge.lambdas._bridge_post.Poster` backs off; the buffer holds it.
* A DynamoDB failure raises: EventBridge retries the event. Sessions that already had
  it get it again under a new cursor, and the client's sink drops the duplicate by id.
"""

from __future__ import annotations

import time
from itertools import takewhile
from typing import Any

from bridge.core import wire
from bridge.core.buffer import Trim, plan_trim
from bridge.core.chunks import event_messages
from bridge.core.session_record import SessionRecord, add_gap, disconnect, wants
from bridge.lambdas import _bridge, _env
from bridge.lambdas._bridge_post import Posted
from bridge.lambdas._bridge_table import BridgeTable, session_key

GAP_REASON = "buffer cap"
_cache: tuple[float, list[SessionRecord]] = (0.0, [])


def _sessions(bridge: BridgeTable, now: float) -> list[SessionRecord]:
    """The live sessions, from this container's cache while it is fresh."""
    global _cache
    fresh_until, records = _cache
    read_at = time.monotonic()
    if read_at < fresh_until:
        return records
    records = []
    # Fresh for a while from *before* the read: a subscription saved while the query
    # ran may be missing from it, and bridge-message answers `subscribed` only once
    # every copy read before the save has expired (however slow this query was).
    for item in bridge.sessions(now):
        try:
            records.append(SessionRecord.from_item(item))
        except wire.LocalProtocolError as error:
            _env.log("skipped a broken session item", error=str(error))
    _cache = (read_at + _bridge.sessions_cache_seconds(), records)
    return records


_env.prepare("dynamodb", "apigatewaymanagementapi")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = _bridge.settings()
    bridge = _bridge.table(config)
    now = time.time()
    matching = [record for record in _sessions(bridge, now) if wants(record, event, now)]
    if not matching:
        return {"sessions": 0}
    text = wire.json_text(event)
    size = len(text.encode())
    event_id = str(event.get("id", ""))
    posted = 0
    for record in matching:
        if _forward(bridge, config, record, event, event_id, text, size, now):
            posted += 1
    _env.log("forwarded", id=event_id, sessions=len(matching), posted=posted)
    return {"sessions": len(matching), "posted": posted}


def _forward(
    bridge: BridgeTable,
    config: _bridge.Settings,
    record: SessionRecord,
    event: dict[str, Any],
    event_id: str,
    text: str,
    size: int,
    now: float,
) -> bool:
    key = session_key(record.owner, record.name)
    ttl = _bridge.ttl_of(now, config)
    allocation = bridge.allocate(key, size, ttl)
    cursor = allocation.cursor
    bridge.buffer_put(
        key,
        cursor,
        {"id": event_id, "event": text, "size": size, "cum": allocation.cum, "ttl": ttl},
    )
    # The stored floor and its byte count are one pair (a session's ``acked`` may be
    # ahead of it until the ack's trim raises it; with the floor's bytes it would
    # overstate the buffer and drop an event the cap had room for).
    floor, floor_cum = allocation.floor, allocation.floor_cum
    index = ((c, cum) for c, _, cum in bridge.buffer_index(key, floor, now))
    trim = plan_trim(floor, floor_cum, cursor, allocation.cum, config.limits, index)
    lost = None  # what the client is told it lost: only cursors it has not acknowledged
    if trim is not None:
        if trim.last > record.acked:
            lost = (max(trim.first, record.acked + 1), trim.last)
        record = _drop_oldest(bridge, record, key, trim, lost, now)
    texts = [wire.encode(m) for m in event_messages(cursor, event_id, event)]
    if lost is not None:
        texts.insert(0, wire.encode(wire.Gap(lost[0], lost[1], GAP_REASON)))
    # The connection the sessions query saw is usually still the one: post to it. When
    # there was none, or the post failed, read the session again: it was read before
    # the buffer write, and a client that attached since may have resumed before it.
    seen = record.connection
    if seen is not None and _post(bridge, record, seen, texts, now) is Posted.OK:
        return True
    current = _current(bridge, record, now)
    if current.connection is None or current.connection == seen:
        return False
    return _post(bridge, current, current.connection, texts, now) is Posted.OK


def _post(
    bridge: BridgeTable, record: SessionRecord, connection: str, texts: list[str], now: float
) -> Posted:
    """Post to one connection; 410 detaches it (the buffer keeps the event)."""
    outcome = _bridge.post_all(connection, texts)
    if outcome is Posted.GONE:
        _detach(bridge, record, connection, now)
    return outcome


def _current(bridge: BridgeTable, record: SessionRecord, now: float) -> SessionRecord:
    """The session as stored now (the one read before the buffer write may be stale)."""
    item = bridge.session(record.owner, record.name, now=0.0)
    return SessionRecord.from_item(item) if item is not None else record


def _drop_oldest(
    bridge: BridgeTable,
    record: SessionRecord,
    key: str,
    trim: Trim,
    lost: tuple[int, int] | None,
    now: float,
) -> SessionRecord:
    """Delete the trimmed cursors from the buffer and record the ``lost`` ones (those not
    acknowledged) as a gap on the session."""
    first, last = trim.first, trim.last
    doomed = list(
        takewhile(lambda c: c <= last, (c for c, _, _ in bridge.buffer_index(key, first - 1, 0.0)))
    )
    if lost is not None:
        saved = _save_gap(bridge, record, lost, now)
        if saved is None:
            return record  # the session is gone: nothing to keep its buffer for
        record = saved
    bridge.buffer_delete(key, doomed)
    bridge.raise_floor(key, last, trim.last_cum)
    _env.log("buffer cap: dropped the oldest events", session=record.name, first=first, last=last)
    return record


def _save_gap(
    bridge: BridgeTable, record: SessionRecord, lost: tuple[int, int], now: float
) -> SessionRecord | None:
    """The session with the gap recorded (saved on its version); None if it is gone."""
    for _ in range(_bridge.SAVE_ATTEMPTS):
        changed = add_gap(record, lost[0], lost[1], GAP_REASON)
        try:
            _bridge.save(bridge, changed, record.version, now)
            return changed
        except _bridge.Conflict:
            reloaded = _bridge.load_record(bridge, record.owner, record.name, now)[0]
            if reloaded is None:
                return None
            record = reloaded
    return record


def _detach(bridge: BridgeTable, record: SessionRecord, connection: str, now: float) -> None:
    """410: forget the connection if it is still the session's (a newer may hold it)."""
    for _ in range(_bridge.SAVE_ATTEMPTS):
        changed = disconnect(record, connection)
        if changed is None:
            return
        try:
            _bridge.save(bridge, changed, record.version, now)
            return
        except _bridge.Conflict:
            reloaded = _bridge.load_record(bridge, record.owner, record.name, now)[0]
            if reloaded is None:
                return
            record = reloaded
