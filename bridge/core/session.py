"""The bridge client's side of a session, sans-I/O, in the manner of websockets'
``protocol.py``: the asyncio layer only moves text and calls

    protocol.receive_message(text, now)       # a message from the socket
    protocol.tick(now)                         # timers: ping, hole re-fetch, hole skip
    protocol.events_received()                 # -> Delivered, GapReported, Ready ...
    protocol.messages_to_send()                # -> texts to send, in order
    protocol.confirm(through)                  # the sink committed up to `through`

It never reads a clock (``now`` is passed in) and never raises for a peer's fault: a
malformed or unexpected message becomes a :class:`ProtocolProblem` event and a counter.
Which message is expected in which state is one table (``_TABLE``); a message missing
from it is the problem. To keep modules small the rest lives beside it and is
re-exported here, so ``bridge.core.session`` is the one import for both sides: the
client's events (:mod:`bridge.core.session_events`), its cursor bookkeeping
(:mod:`bridge.core.acks`), and the server side — the session record and its
transitions (:mod:`bridge.core.session_record`) and ``ServerProtocol``
(:mod:`bridge.core.server_session`).

The flow: ``hello`` on creation; on ``welcome``, ``subscribe`` and ``resume(after =
low_water)`` together (API Gateway may run them in either order, and neither needs the
other); :class:`Ready` once both are answered. Events may come before ``welcome`` (a
forwarder can post as soon as ``hello`` is saved), and are taken in every open state.
Delivery, dedupe, gaps and holes are :class:`bridge.core.acks.CursorWindow`'s.

Decisions where the spec was silent:

* ``session=None`` opens a management connection (``bridge sessions``): no subscribe,
  no resume, :class:`Ready` on ``welcome``; then :meth:`ClientProtocol.list_sessions`
  and :meth:`ClientProtocol.drop_session`.
* ``Error`` codes ``version``, ``forbidden`` and ``no-session`` are :class:`Refused`
  and close the protocol — unless they answer a ``sessions``/``drop`` request or the
  connection holds no session, when they concern that request only. ``permanent``
  for the first two, and for a ``welcome`` of another session: reconnecting cannot
  help; after ``no-session`` the I/O layer reconnects with ``resume_after=low_water``.
  Other codes are a :class:`ServerError` event and counted as problems.
* ``welcome.acked`` above our cursor: another connection of this session (another
  sink) acknowledged those cursors, so the buffer no longer holds them — reported as
  a gap, never waited for. ``welcome.next_cursor - 1`` below our cursor: the session
  was created afresh (it expired or was dropped): :class:`SessionReset`, and counting
  starts again from the server's ``acked``.
* The pattern and replay name are checked on creation (``BadRequest``, one line), so
  a bad ``--pattern`` fails before connecting rather than as a server error.
* :meth:`ClientProtocol.next_timer` says when :meth:`~ClientProtocol.tick` is next due,
  so the I/O layer sleeps exactly that long. Ping nonces are a counter (no randomness).
* A ``resume`` is outstanding until ``resumed`` arrives: while one is, holes are not
  re-fetched again until ``resume_timeout`` (a replay of a large buffer can take longer
  than ``hole_refetch_after``, and re-requesting it would only multiply it).
* A duplicate chunked event counts once (on its chunk 0), and is not reassembled.
* The :class:`Closing` and :class:`Pong` events share their message's names, as the
  spec has it; messages are ``wire.Closing`` / ``wire.Pong``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeAlias

from bridge.core import wire
from bridge.core.acks import CursorWindow
from bridge.core.chunks import Reassembler

# Re-exported, so that one import serves both sides.
from bridge.core.server_session import (
    Attachment,
    Plan,
    ServerProtocol,
    drop_plan,
    requested_session,
    resume_messages,
    session_info,
    sessions_reply,
)
from bridge.core.session_events import (
    ClientEvent,
    Closing,
    Counters,
    Delivered,
    GapReported,
    Pong,
    ProtocolProblem,
    Ready,
    Refused,
    ServerError,
    SessionDropped,
    SessionReset,
    SessionsListed,
    State,
)
from bridge.core.session_record import (
    DEFAULT_TTL,
    MAX_GAPS,
    BadRequest,
    Forbidden,
    GapRange,
    NoSession,
    Refusal,
    SessionRecord,
    ack,
    add_gap,
    check_subscription,
    connect,
    disconnect,
    drop,
    expired,
    subscribe,
    wants,
)

__all__ = [
    "ClientEvent",
    "ClientProtocol",
    "Closing",
    "Counters",
    "Delivered",
    "GapReported",
    "Pong",
    "ProtocolProblem",
    "Ready",
    "Refused",
    "ServerError",
    "SessionDropped",
    "SessionReset",
    "SessionsListed",
    "State",
    # the server side: bridge.core.server_session and bridge.core.session_record
    "DEFAULT_TTL",
    "MAX_GAPS",
    "Attachment",
    "BadRequest",
    "Forbidden",
    "GapRange",
    "NoSession",
    "Plan",
    "Refusal",
    "ServerProtocol",
    "SessionRecord",
    "ack",
    "add_gap",
    "check_subscription",
    "connect",
    "disconnect",
    "drop",
    "drop_plan",
    "expired",
    "requested_session",
    "resume_messages",
    "session_info",
    "sessions_reply",
    "subscribe",
    "wants",
]

TEXT_HEAD: Final = 200  # characters of an offending message kept in its problem report
EARLIER_ACK: Final = "acknowledged by an earlier connection of this session"


# --------------------------------------------------------------------------- protocol


class ClientProtocol:
    """One connection of one session (a new instance per connection).

    ``resume_after`` is the cursor the app stored with its events (0 the first time);
    the app stores :attr:`low_water` next, and confirms with :meth:`confirm`.
    ``previous`` is the protocol of the app's last connection of the session, if any:
    a hole keeps its age across the reconnect (:meth:`CursorWindow.carried`), so one
    is skipped after ``hole_grace`` even when every connection is shorter than that.
    """

    def __init__(
        self,
        session: str | None,
        pattern: wire.JSONObject | None,
        replay: str | None,
        resume_after: int,
        *,
        now: float,
        hole_refetch_after: float = 5.0,
        hole_grace: float = 120.0,
        ping_interval: float = 60.0,
        resume_timeout: float = 30.0,
        ack_interval: float = 1.0,
        client: str = "bridge/x",
        previous: ClientProtocol | None = None,
    ) -> None:
        if isinstance(resume_after, bool) or not 0 <= resume_after <= wire.MAX_INT:
            raise wire.LocalProtocolError(f"resume_after must be a cursor >= 0: {resume_after}")
        try:
            hello = wire.Hello(wire.PROTOCOL_VERSION, client, session)
        except wire.WireError as exc:
            raise wire.LocalProtocolError(exc.reason) from None
        check_subscription(pattern, replay)  # BadRequest: one line for the user
        self._subscribe = wire.encode(wire.Subscribe(pattern, replay))
        self.session = session
        self.hole_refetch_after = hole_refetch_after
        self.hole_grace = hole_grace
        self.ping_interval = ping_interval
        self.resume_timeout = resume_timeout
        self.ack_interval = ack_interval
        self.counters = Counters()
        self._state = State.HELLO
        self._resume_after = resume_after
        self._window: CursorWindow = (
            previous.window.carried(resume_after)
            if previous is not None and session is not None and previous.session == session
            else CursorWindow(resume_after)
        )
        self._chunks = Reassembler()
        self._events: list[ClientEvent] = []
        self._outbox: list[str] = []
        self._held: list[str] = []  # management requests waiting for welcome
        self._text: str | None = None  # the event of the message being handled, as text
        self._pending_ack: int | None = None
        self._ack_now = False  # send the pending ack at once, whatever ack_interval says
        self._confirmed = resume_after
        self._subscribed = self._resumed = False
        self._known_top = 0  # the highest cursor the welcome said was allocated
        self._resume_sent: float | None = None  # when the outstanding resume went out
        self._last_resume = now
        self._pings = 0
        self._now = self._last_send = self._last_ack = now
        self._send(hello)

    # ----------------------------------------------------------------- public API

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    @property
    def window(self) -> CursorWindow:
        """The cursor bookkeeping, for the protocol of the next connection (``previous``)."""
        return self._window

    @property
    def low_water(self) -> int:
        """Every cursor up to this one is delivered, reported lost, or a skipped hole."""
        return self._window.low_water

    def receive_message(self, text: str | bytes, now: float) -> None:
        if self.closed:
            return
        self._now = now
        try:
            message, self._text = wire.decode_keeping_event_text(text)
            handler = _TABLE.get((self._state, type(message)))
            if handler is None:
                raise wire.WireError(f"unexpected {message.action} while {self._state.value}")
            handler(self, message)
        except wire.WireError as exc:  # from decode, the table, or reassembly
            self._problem(exc.reason, text)
        if self._state is State.OPENING and self._subscribed and self._resumed:
            self._state = State.READY
            self._events.append(Ready())

    def tick(self, now: float) -> None:
        """Run the timers; call it at :meth:`next_timer` at the latest."""
        if self.closed:
            return
        self._now = now
        self.counters.holes_skipped += self._window.skip_holes(now, self.hole_grace)
        if self._refetch_due(now):
            self._request_resume()
            self.counters.refetches += 1
        if now - self._last_send >= self.ping_interval:
            self._pings += 1
            self._send(wire.Ping(str(self._pings)))

    def next_timer(self) -> float | None:
        """When :meth:`tick` has something to do next (``None``: closed)."""
        if self.closed:
            return None
        times = [self._last_send + self.ping_interval]
        if self._pending_ack is not None and not self._ack_now:
            times.append(self._last_ack + self.ack_interval)
        since = self._window.oldest_hole()
        if since is not None:
            times.append(since + self.hole_grace)
            if self._state is not State.HELLO and self.session is not None:
                times.append(self._refetch_at(since))
        return min(times)

    def events_received(self) -> list[ClientEvent]:
        events, self._events = self._events, []
        return events

    def messages_to_send(self) -> list[str]:
        out, self._outbox = self._outbox, []
        if self._ack_due():
            assert self._pending_ack is not None
            out.append(wire.encode(wire.Ack(self._pending_ack)))
            self._pending_ack, self._ack_now = None, False
            self._last_ack = self._last_send = self._now
        return out

    def _ack_due(self) -> bool:
        if self._pending_ack is None or self._state not in (State.OPENING, State.READY):
            return False
        return self._ack_now or self._now - self._last_ack >= self.ack_interval

    def confirm(self, through: int) -> None:
        """The app durably wrote every event up to ``through``: acknowledge it.

        Acknowledgements are cumulative, so only the latest goes out, at most once per
        ``ack_interval`` (each costs the bridge a Lambda invocation and a few DynamoDB
        writes; a later one covers what an unsent one would have): :meth:`next_timer`
        says when. :meth:`flush_ack` sends it with the next messages, as before a close.
        """
        if through > self.low_water:
            raise wire.LocalProtocolError(
                f"confirm({through}) is above the low-water mark {self.low_water}: "
                "only a contiguous cursor may be acknowledged"
            )
        if through > self._confirmed:
            self._confirmed = self._pending_ack = through

    def flush_ack(self) -> None:
        """Send the pending acknowledgement with the next messages (stopping, reconnecting)."""
        if self._pending_ack is not None:
            self._ack_now = True

    def list_sessions(self) -> None:
        self._request(wire.ListSessions())

    def drop_session(self, name: str) -> None:
        try:
            message = wire.DropSession(name)
        except wire.WireError as exc:
            raise wire.LocalProtocolError(exc.reason) from None
        self._request(message)

    # ----------------------------------------------------------------- handlers

    def _on_welcome(self, message: wire.Welcome) -> None:
        if message.version != wire.PROTOCOL_VERSION:
            self._refuse("version", _version_line(message.version))
            return
        if message.session != self.session:
            text = f"the bridge welcomed session {message.session!r}, not {self.session!r}"
            self._refuse("welcome", text)
            return
        self._state = State.OPENING
        self._outbox.extend(self._held)
        self._held.clear()
        if self.session is None:
            self._subscribed = self._resumed = True
            return
        # Compared with where this connection started, not with low_water: live events
        # may arrive before the welcome (posts of different Lambdas race). A fresh
        # session posts nothing before its first subscribe, so none came before a reset.
        start = self._resume_after
        self._known_top = message.next_cursor - 1
        if message.next_cursor - 1 < start:
            self._events.append(SessionReset(start, message.acked))
            self._window = CursorWindow(message.acked)
            self._chunks = Reassembler()
            self._confirmed = message.acked
        elif message.acked > start:
            self._lost(start + 1, message.acked, EARLIER_ACK)  # only what we lack
        elif message.acked < self._confirmed:
            self._pending_ack = self._confirmed  # our last ack did not make it
            self._ack_now = True
        self._outbox.append(self._subscribe)
        self._last_send = self._now
        self._request_resume()

    def _on_welcome_again(self, message: wire.Welcome) -> None:
        """A repeated welcome (a retried post, a repeated hello) changes nothing."""
        if (message.version, message.session) != (wire.PROTOCOL_VERSION, self.session):
            raise wire.WireError(f"a second welcome, for session {message.session!r}")

    def _on_subscribed(self, message: wire.Subscribed) -> None:
        self._subscribed = True

    def _on_resumed(self, message: wire.Resumed) -> None:
        self._window.extend(message.through, self._now)
        self._resume_sent = None
        self._resumed = True
        if message.through < self._known_top:
            # The server stopped early (a large buffer, a function near its timeout):
            # the welcome said more cursors exist, so ask for the rest at once.
            self._request_resume()

    def _on_event(self, message: wire.Event) -> None:
        if self.session is None:
            raise wire.WireError("an event on a connection that holds no session")
        self.counters.received += 1
        if self._window.deliver(message.cursor, self._now) == "duplicate":
            self.counters.duplicates += 1
            return
        self._chunks.forget(message.cursor)
        self.counters.delivered += 1
        self._events.append(Delivered(message.cursor, message.id, message.event, self._text))

    def _on_chunk(self, message: wire.Chunk) -> None:
        if self.session is None:
            raise wire.WireError("a chunk on a connection that holds no session")
        if self._window.classify(message.cursor) == "duplicate":
            if message.index == 0:
                self.counters.received += 1
                self.counters.duplicates += 1
            return
        # The cursor exists: lower missing ones are holes from now, like for an event.
        self._window.extend(message.cursor, self._now)
        event = self._chunks.feed(message)
        if event is not None:
            self._text = None  # (the reassembled text is not kept: large events are rare)
            self._on_event(event)

    def _on_gap(self, message: wire.Gap) -> None:
        self._lost(message.first, message.last, message.reason)

    def _on_error(self, message: wire.Error) -> None:
        if message.code == "version":
            line = (
                _version_line(message.version)
                if message.version is not None
                else f"the bridge stack refused protocol version {wire.PROTOCOL_VERSION}: "
                f"{message.message}"
            )
            self._refuse("version", line)
        elif (
            message.code in ("forbidden", "no-session")
            and self.session is not None
            and message.request not in _MANAGEMENT
        ):
            self._refuse(message.code, message.message)
        else:
            self.counters.problems += 1
            self._events.append(ServerError(message.code, message.message))

    def _on_closing(self, message: wire.Closing) -> None:
        self._events.append(Closing(message.reason))
        self._close()

    def _on_pong(self, message: wire.Pong) -> None:
        self._events.append(Pong(message.nonce))

    def _on_sessions(self, message: wire.Sessions) -> None:
        self._events.append(SessionsListed(message.items, message.omitted))

    def _on_dropped(self, message: wire.Dropped) -> None:
        self._events.append(SessionDropped(message.name))

    # ----------------------------------------------------------------- helpers

    def _send(self, message: wire.ClientMessage) -> None:
        self._outbox.append(wire.encode(message))
        self._last_send = self._now

    def _request(self, message: wire.ClientMessage) -> None:
        if self.closed:
            raise wire.LocalProtocolError("the connection is closed")
        if self._state is State.HELLO:
            self._held.append(wire.encode(message))
        else:
            self._send(message)

    def _request_resume(self) -> None:
        self._send(wire.Resume(self._window.low_water))
        self._resume_sent = self._last_resume = self._now

    def _refetch_at(self, since: float) -> float:
        """When the hole that opened at ``since`` is next worth a resume."""
        at = max(since, self._last_resume) + self.hole_refetch_after
        if self._resume_sent is not None:
            at = max(at, self._resume_sent + self.resume_timeout)
        return at

    def _refetch_due(self, now: float) -> bool:
        if self._state is State.HELLO or self.session is None:
            return False
        since = self._window.oldest_hole()
        return since is not None and now >= self._refetch_at(since)

    def _lost(self, first: int, last: int, reason: str) -> None:
        for lo, hi in self._window.lose(first, last, self._now):
            self.counters.gaps += hi - lo + 1
            self._events.append(GapReported(lo, hi, reason))

    def _problem(self, reason: str, text: str | bytes) -> None:
        self.counters.problems += 1
        head = text[:TEXT_HEAD] if isinstance(text, str) else repr(bytes(text[:TEXT_HEAD]))
        self._events.append(ProtocolProblem(reason, head))

    def _refuse(self, code: str, message: str) -> None:
        self._events.append(Refused(code, message))
        self._close()

    def _close(self) -> None:
        self._state = State.CLOSED
        self._outbox.clear()
        self._held.clear()
        self._pending_ack = None


def _version_line(server: int) -> str:
    """The one line a version mismatch ends in, saying which side to upgrade."""
    ours = wire.PROTOCOL_VERSION
    if server > ours:
        advice = "upgrade this client (pip install -U dynamodb-logs-bridge)"
    else:
        advice = "upgrade the bridge stack (bridge deploy --stage STAGE --bridge)"
    return f"the bridge stack speaks version {server}; this client speaks {ours}: {advice}"


_MANAGEMENT: Final = (wire.ListSessions.action, wire.DropSession.action)
_Handler: TypeAlias = Callable[[ClientProtocol, Any], None]
_OPEN: Final[dict[type[Any], _Handler]] = {
    wire.Event: ClientProtocol._on_event,
    wire.Chunk: ClientProtocol._on_chunk,
    wire.Gap: ClientProtocol._on_gap,
    wire.Error: ClientProtocol._on_error,
    wire.Closing: ClientProtocol._on_closing,
    wire.Pong: ClientProtocol._on_pong,
}
_WELCOMED: Final[dict[type[Any], _Handler]] = {
    **_OPEN,
    wire.Welcome: ClientProtocol._on_welcome_again,
    wire.Subscribed: ClientProtocol._on_subscribed,
    wire.Resumed: ClientProtocol._on_resumed,
    wire.Sessions: ClientProtocol._on_sessions,
    wire.Dropped: ClientProtocol._on_dropped,
}
# Every (state, message) the client accepts; a missing entry is a ProtocolProblem.
# CLOSED has no entries, but receive_message returns before looking.
_TABLE: Final[dict[tuple[State, type[Any]], _Handler]] = {
    **{(State.HELLO, kind): handler for kind, handler in _OPEN.items()},
    (State.HELLO, wire.Welcome): ClientProtocol._on_welcome,
    **{(State.OPENING, kind): handler for kind, handler in _WELCOMED.items()},
    **{(State.READY, kind): handler for kind, handler in _WELCOMED.items()},
}
