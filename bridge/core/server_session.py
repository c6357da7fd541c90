"""The server side of the bridge protocol: one client message turned into a plan.

:class:`ServerProtocol` handles one message of one connection (one Lambda invocation)
and returns a :class:`Plan` — what to save, send, read, delete — that the I/O layer
carries out; errors of the peer become ``Error`` messages in the plan, never
exceptions. Which message is allowed in which state is one table (``_ROUTES``); a
missing entry is the refusal. The session's state and its transitions are
:mod:`bridge.core.session_record`; the replies that need reads the I/O layer does
(the buffer for ``resume``, the owner's sessions for ``sessions``, the record of a
session to ``drop``) are built by :func:`resume_messages`, :func:`sessions_reply` and
:func:`drop_plan` once it has them.

The session name travels in ``hello`` (a decision beyond the spec, which left it
open): :func:`requested_session` reads it, so the record can be loaded before the
message is handled. For every other message the I/O layer passes the record of the
session the connection last said hello to.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from bridge.core import wire
from bridge.core.chunks import event_messages
from bridge.core.session_record import (
    DEFAULT_TTL,
    NoSession,
    Refusal,
    SessionRecord,
    ack,
    connect,
    drop,
    expired,
    subscribe,
)

__all__ = [
    "Attachment",
    "Plan",
    "ServerProtocol",
    "drop_plan",
    "requested_session",
    "resume_messages",
    "session_info",
    "sessions_reply",
]


# --------------------------------------------------------------------------- replies


def session_info(record: SessionRecord, *, next_cursor: int, buffered: int) -> wire.SessionInfo:
    return wire.SessionInfo(
        name=record.name,
        connected=record.connection is not None,
        pattern=record.pattern,
        replay=record.replay,
        acked=record.acked,
        next_cursor=next_cursor,
        buffered=buffered,
        expires=record.expires,
    )


def sessions_reply(
    entries: Iterable[tuple[SessionRecord, int, int]],
    owner: str,
    now: float,
    limit: int = wire.DEFAULT_LIMIT,
) -> str:
    """The ``Sessions`` answer from ``(record, next_cursor, buffered)`` entries: the
    owner's live sessions only (whatever the query returned), by name."""
    infos = [
        session_info(record, next_cursor=next_cursor, buffered=buffered)
        for record, next_cursor, buffered in entries
        if record.owner == owner and not expired(record, now)
    ]
    infos.sort(key=lambda info: info.name)
    return wire.encode(wire.sessions_message(infos, limit), limit)


def resume_messages(
    record: SessionRecord,
    after: int,
    through: int,
    buffer: Iterable[tuple[int, str, wire.JSONObject]],
    limit: int = wire.DEFAULT_LIMIT,
) -> list[str]:
    """What a ``Resume(after)`` posts, in order: the gaps not yet acknowledged past,
    every buffered ``(cursor, id, event)`` above ``after`` (chunked when large), then
    ``Resumed(through)``. Read the counter (``through = next_cursor - 1``) *before* the
    buffer, so that a cursor up to ``through`` not in it is a true hole."""
    out = [
        wire.encode(wire.Gap(first, last, reason), limit)
        for first, last, reason in record.gaps
        if last > after
    ]
    for cursor, id, event in sorted((e for e in buffer if e[0] > after), key=lambda e: e[0]):
        out.extend(wire.encode(m, limit) for m in event_messages(cursor, id, event, limit))
    out.append(wire.encode(wire.Resumed(through), limit))
    return out


def requested_session(text: str | bytes) -> str | None:
    """The session a ``hello`` names, so the I/O layer can load its record before
    handling the message; ``None`` for any other message (use the connection's)."""
    try:
        message = wire.decode(text)
    except wire.WireError:
        return None
    return message.session if isinstance(message, wire.Hello) else None


@dataclass(frozen=True, slots=True)
class Plan:
    """What the I/O layer does for one message, in this order: ``save`` (a conditional
    put: the stored version must be ``expected_version``, or the item absent when that
    is ``None``; if it fails, reload and handle the message again); if ``fresh``, reset
    the counter to 1 and delete the old buffer; ``delete`` (conditional on its version);
    ``trim_through`` (buffer entries up to it may go); post ``notice`` to ``supersede``
    and delete that connection; post ``send``; serve ``resume_after`` with
    :func:`resume_messages` (``through = resume_through``); answer ``list_sessions``
    with :func:`sessions_reply` and ``drop`` with :func:`drop_plan`; ``close``."""

    send: tuple[str, ...] = ()
    save: SessionRecord | None = None
    expected_version: int | None = None
    fresh: bool = False
    delete: SessionRecord | None = None
    trim_through: int | None = None
    supersede: str | None = None
    notice: str | None = None
    resume_after: int | None = None
    resume_through: int | None = None
    list_sessions: bool = False
    drop: str | None = None
    close: bool = False
    problem: str | None = None  # a peer fault, one line, for the log


def drop_plan(record: SessionRecord | None, owner: str, name: str, now: float) -> Plan:
    try:
        connection = drop(record, owner, now)
    except Refusal as refusal:
        return _refused(refusal, "drop", f"drop {name!r}")
    notice = wire.encode(wire.Closing(f"session {name!r} was dropped"))
    return Plan(
        send=(wire.encode(wire.Dropped(name)),),
        delete=record,
        supersede=connection,
        notice=notice if connection else None,
    )


def _refused(refusal: Refusal, request: str, what: str = "", *, close: bool = False) -> Plan:
    error = wire.Error(refusal.code, f"{what or request}: {refusal}", request=request)
    return Plan(send=(wire.encode(error),), close=close, problem=error.message)


# --------------------------------------------------------------------------- protocol


class Attachment(enum.Enum):
    NONE = "none"  # the connection holds no session (yet, or any more)
    HELD = "held"  # the record's current connection is this one


class ServerProtocol:
    """One client message of one connection, turned into a :class:`Plan`.

    ``record`` is the session's record as read (``None`` if absent): for a ``hello``,
    the session it names (see :func:`requested_session`); otherwise the session the
    connection said hello to. ``next_cursor`` is read with it (before any buffer).
    """

    def __init__(
        self,
        record: SessionRecord | None,
        owner: str,
        connection: str,
        now: float,
        server_version: int = wire.PROTOCOL_VERSION,
        *,
        next_cursor: int,
        ttl: float = DEFAULT_TTL,
    ) -> None:
        self.record = record
        self.owner = owner
        self.connection = connection
        self.now = now
        self.server_version = server_version
        self.next_cursor = next_cursor
        self.ttl = ttl

    @property
    def attachment(self) -> Attachment:
        record = self.record
        if (
            record is not None
            and not expired(record, self.now)
            and record.owner == self.owner
            and record.connection == self.connection
        ):
            return Attachment.HELD
        return Attachment.NONE

    def receive_message(self, text: str | bytes) -> Plan:
        try:
            message = wire.decode(text)
        except wire.WireError as exc:
            error = wire.Error(exc.code, exc.reason)
            return Plan(send=(wire.encode(error),), problem=exc.reason)
        route = _ROUTES.get((self.attachment, type(message)))
        if route is not None:
            return route(self, message)
        if isinstance(message, wire.Subscribe | wire.Resume | wire.Ack):
            return _refused(NoSession(self._why_not_held()), message.action)
        text = f"{message.action} is sent by the server, not to it"
        error = wire.Error("unknown-action", text, request=message.action)
        return Plan(send=(wire.encode(error),), problem=error.message)

    def _why_not_held(self) -> str:
        record = self.record
        if record is None:
            return "this connection holds no session: send hello first"
        if expired(record, self.now):
            return f"session {record.name!r} has expired"
        if record.owner != self.owner:
            return f"session {record.name!r} belongs to another principal"
        if record.connection is None:  # $disconnect ran first: messages may overtake it
            return f"session {record.name!r} has no open connection: this one was closed"
        return f"session {record.name!r} was taken over by a newer connection"

    def _hello(self, message: wire.Hello) -> Plan:
        version = self.server_version
        if message.version != version:
            text = f"this bridge speaks protocol version {version}, the client {message.version}"
            error = wire.Error("version", text, version=version, request="hello")
            return Plan(send=(wire.encode(error),), close=True, problem=text)
        if message.session is None:  # a connection that only lists or drops sessions
            return Plan(send=(wire.encode(wire.Welcome(version, None, 0, 1)),))
        try:
            record, superseded = connect(
                self.record, self.owner, message.session, self.connection, self.now, self.ttl
            )
        except Refusal as refusal:
            return _refused(refusal, "hello", close=True)
        fresh = self.record is None or expired(self.record, self.now)
        welcome = wire.Welcome(
            version, message.session, record.acked, 1 if fresh else self.next_cursor
        )
        notice = wire.Closing(f"session {message.session!r} was taken over by a newer connection")
        return Plan(
            send=(wire.encode(welcome),),
            save=record,
            expected_version=None if self.record is None else self.record.version,
            fresh=fresh,
            supersede=superseded,
            notice=wire.encode(notice) if superseded else None,
        )

    def _subscribe(self, message: wire.Subscribe) -> Plan:
        assert self.record is not None  # HELD
        try:
            record = subscribe(self.record, message.pattern, message.replay, self.now, self.ttl)
        except Refusal as refusal:
            return _refused(refusal, "subscribe")
        reply = wire.Subscribed(message.pattern, message.replay)
        return Plan(send=(wire.encode(reply),), save=record, expected_version=self.record.version)

    def _resume(self, message: wire.Resume) -> Plan:
        return Plan(resume_after=message.after, resume_through=self.next_cursor - 1)

    def _ack(self, message: wire.Ack) -> Plan:
        assert self.record is not None  # HELD
        try:
            record = ack(
                self.record, message.through, self.now, self.ttl, next_cursor=self.next_cursor
            )
        except Refusal as refusal:
            return _refused(refusal, "ack")
        return Plan(save=record, expected_version=self.record.version, trim_through=record.acked)

    def _ping(self, message: wire.Ping) -> Plan:
        return Plan(send=(wire.encode(wire.Pong(message.nonce)),))

    def _sessions(self, message: wire.ListSessions) -> Plan:
        return Plan(list_sessions=True)

    def _drop(self, message: wire.DropSession) -> Plan:
        return Plan(drop=message.name)


_Route: TypeAlias = Callable[[ServerProtocol, Any], Plan]
_ANYWHERE: Final[dict[type[Any], _Route]] = {
    wire.Hello: ServerProtocol._hello,
    wire.Ping: ServerProtocol._ping,
    wire.ListSessions: ServerProtocol._sessions,
    wire.DropSession: ServerProtocol._drop,
}
# Every (state, message) the server accepts; anything else is refused (see above).
_ROUTES: Final[dict[tuple[Attachment, type[Any]], _Route]] = {
    **{(Attachment.NONE, kind): route for kind, route in _ANYWHERE.items()},
    **{(Attachment.HELD, kind): route for kind, route in _ANYWHERE.items()},
    (Attachment.HELD, wire.Subscribe): ServerProtocol._subscribe,
    (Attachment.HELD, wire.Resume): ServerProtocol._resume,
    (Attachment.HELD, wire.Ack): ServerProtocol._ack,
}
