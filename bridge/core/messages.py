"""The messages of the bridge's wire protocol, v1: one frozen dataclass each.

The codec that turns them into text and back is :mod:`bridge.core.wire`, which
re-exports everything here; import from there. Each class checks its values on
construction (cursors start at 1, ``first <= last``, ``index < count`` ...), so a
message that exists is a message that may be sent, and :func:`bridge.core.wire.decode`
gets the same checks for free. A violation raises :class:`WireError`: from ``decode``
that is the peer's fault, from our own constructor call it is a bug the message names.

The errors of the protocol live here too, split by whose fault as h11's are:
:class:`LocalProtocolError` (our caller broke the rules: raised) and
:class:`RemoteProtocolError` (the peer did: the protocol layers report it, never let
it escape ``receive_message``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

# No __all__ here: bridge.core.wire re-exports these names and lists them once.

PROTOCOL_VERSION: Final = 1
MAX_INT: Final = 2**53 - 1
# An event of EventBridge's 256 KB needs 3 chunks at the default limit; this bound only
# keeps a hostile or broken peer from announcing millions of them.
MAX_CHUNKS: Final = 1024
MAX_NAME_CHARS: Final = 128  # session names: "user@host" with room to spare

JSONObject: TypeAlias = dict[str, Any]


class ProtocolError(Exception):
    """Base of the protocol's errors; ``str()`` is one line saying what is wrong."""


class LocalProtocolError(ProtocolError):
    """Our caller broke the rules (like h11's): raised, since only code can fix it."""


class MessageTooLarge(LocalProtocolError):
    """An encoded message over the limit: events must go through ``event_messages``."""

    def __init__(self, action: str, size: int, limit: int) -> None:
        super().__init__(f"{action} message is {size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


class RemoteProtocolError(ProtocolError):
    """The peer broke the rules: the protocol layers report it, never let it escape."""


class WireError(RemoteProtocolError, ValueError):
    """Input that is not a valid v1 message (or a message built against the rules).

    ``code`` is the :class:`Error` code a server answers with: ``unknown-action`` for
    an action this version does not know, ``bad-message`` for anything else.
    """

    def __init__(self, reason: str, code: str = "bad-message") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


# --------------------------------------------------------------------------- checks


def _check_uint(action: str, name: str, value: int, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"{action}.{name} must be an integer, got {kind_of(value)}")
    if not minimum <= value <= MAX_INT:
        raise WireError(f"{action}.{name} must be {minimum}..{MAX_INT}, got {value}")


class _Counted:
    """A message whose integer fields are all checked alike: ``counts`` names each
    with its minimum (0 or 1), so a message that needs nothing more has no
    ``__post_init__`` of its own."""

    __slots__ = ()
    action: ClassVar[str]
    counts: ClassVar[dict[str, int]] = {}

    def __post_init__(self) -> None:
        for name, minimum in self.counts.items():
            _check_uint(self.action, name, getattr(self, name), minimum)


def _check_name(action: str, field: str, name: str) -> None:
    if not isinstance(name, str):
        raise WireError(f"{action}.{field} must be a string, got {kind_of(name)}")
    if not 0 < len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise WireError(
            f"{action}.{field} must be 1-{MAX_NAME_CHARS} printable characters, got {name!r:.80}"
        )


def kind_of(value: object) -> str:
    """How an error message names the JSON type of a value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


# --------------------------------------------------------------------------- messages
# Client -> server.


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message of a connection: the version spoken and the session wanted."""

    action: ClassVar[str] = "hello"
    version: int
    client: str
    session: str | None = None

    def __post_init__(self) -> None:
        _check_uint("hello", "version", self.version)
        if self.session is not None:
            _check_name("hello", "session", self.session)


@dataclass(frozen=True, slots=True)
class Subscribe:
    """What the session receives: an EventBridge pattern (``None``: every event) of live
    events, or, with ``replay``, only events whose top-level ``replay-name`` is it."""

    action: ClassVar[str] = "subscribe"
    pattern: JSONObject | None
    replay: str | None = None


@dataclass(frozen=True, slots=True)
class Resume(_Counted):
    """Send again every buffered event with a cursor above ``after``, then ``Resumed``."""

    action: ClassVar[str] = "resume"
    counts: ClassVar[dict[str, int]] = {"after": 0}
    after: int


@dataclass(frozen=True, slots=True)
class Ping:
    action: ClassVar[str] = "ping"
    nonce: str


@dataclass(frozen=True, slots=True)
class Ack(_Counted):
    """Every cursor up to ``through`` is durably handled: the buffer may let them go."""

    action: ClassVar[str] = "ack"
    counts: ClassVar[dict[str, int]] = {"through": 0}
    through: int


@dataclass(frozen=True, slots=True)
class ListSessions:
    action: ClassVar[str] = "sessions"


@dataclass(frozen=True, slots=True)
class DropSession:
    action: ClassVar[str] = "drop"
    name: str

    def __post_init__(self) -> None:
        _check_name("drop", "name", self.name)


# Server -> client.


@dataclass(frozen=True, slots=True)
class Welcome(_Counted):
    """The answer to ``Hello``: ``acked`` is the session's acknowledged cursor and
    ``next_cursor`` the one the next event will get (``next_cursor - 1`` is the highest
    allocated; cursors start at 1)."""

    action: ClassVar[str] = "welcome"
    counts: ClassVar[dict[str, int]] = {"version": 0, "acked": 0, "next_cursor": 1}
    version: int
    session: str | None
    acked: int
    next_cursor: int


@dataclass(frozen=True, slots=True)
class Subscribed:
    action: ClassVar[str] = "subscribed"
    pattern: JSONObject | None
    replay: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One EventBridge event (as the forwarder received it) under its session cursor."""

    action: ClassVar[str] = "event"
    cursor: int
    id: str
    event: JSONObject

    def __post_init__(self) -> None:
        _check_uint("event", "cursor", self.cursor, 1)
        if not self.id:
            raise WireError("event.id must not be empty")


@dataclass(frozen=True, slots=True)
class Chunk:
    """Part ``index`` (from 0) of ``count`` of an event too large for one message:
    ``data`` is base64 of a slice of the UTF-8 bytes of the event's JSON text."""

    action: ClassVar[str] = "chunk"
    cursor: int
    id: str
    index: int
    count: int
    data: str

    def __post_init__(self) -> None:
        _check_uint("chunk", "cursor", self.cursor, 1)
        _check_uint("chunk", "count", self.count, 1)
        _check_uint("chunk", "index", self.index)
        if self.count > MAX_CHUNKS:
            raise WireError(f"chunk.count must be at most {MAX_CHUNKS}, got {self.count}")
        if self.index >= self.count:
            raise WireError(f"chunk.index {self.index} is out of range for {self.count} chunks")
        if not self.id:
            raise WireError("chunk.id must not be empty")


@dataclass(frozen=True, slots=True)
class Gap:
    """Cursors ``first..last`` (inclusive) were dropped by the server: reported, never
    silent (buffer cap, session expiry)."""

    action: ClassVar[str] = "gap"
    first: int
    last: int
    reason: str

    def __post_init__(self) -> None:
        _check_uint("gap", "first", self.first, 1)
        _check_uint("gap", "last", self.last, 1)
        if self.first > self.last:
            raise WireError(f"gap.first {self.first} is after gap.last {self.last}")


@dataclass(frozen=True, slots=True)
class Resumed(_Counted):
    """The buffer has been sent up to ``through``, the highest cursor allocated when the
    resume was served: a cursor up to it still missing afterwards is a hole."""

    action: ClassVar[str] = "resumed"
    counts: ClassVar[dict[str, int]] = {"through": 0}
    through: int


@dataclass(frozen=True, slots=True)
class Pong:
    action: ClassVar[str] = "pong"
    nonce: str


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One line of ``bridge sessions list`` (not a message: an item of ``Sessions``)."""

    name: str
    connected: bool
    pattern: JSONObject | None
    replay: str | None
    acked: int
    next_cursor: int
    buffered: int
    expires: float

    def __post_init__(self) -> None:
        _check_name("sessions", "name", self.name)
        _check_uint("sessions", "acked", self.acked)
        _check_uint("sessions", "next_cursor", self.next_cursor, 1)
        _check_uint("sessions", "buffered", self.buffered)
        if not math.isfinite(self.expires):
            raise WireError("sessions.expires must be a finite number")


@dataclass(frozen=True, slots=True)
class Sessions(_Counted):
    action: ClassVar[str] = "sessions"
    counts: ClassVar[dict[str, int]] = {"omitted": 0}
    items: tuple[SessionInfo, ...]
    omitted: int = 0


@dataclass(frozen=True, slots=True)
class Dropped:
    action: ClassVar[str] = "dropped"
    name: str


@dataclass(frozen=True, slots=True)
class Closing:
    """Sent before the server closes the socket, e.g. a newer connection took over."""

    action: ClassVar[str] = "closing"
    reason: str


@dataclass(frozen=True, slots=True)
class Error:
    """The server refuses a message. Codes: ``version`` (``version`` is the server's),
    ``bad-message``, ``unknown-action``, ``forbidden``, ``no-session``, ``internal``.
    ``request`` is the action of the message refused, when the server could read it
    (beyond the spec: a refused ``drop`` must not read as a refused session)."""

    action: ClassVar[str] = "error"
    code: str
    message: str
    version: int | None = None
    request: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None:
            _check_uint("error", "version", self.version)


ClientMessage: TypeAlias = Hello | Subscribe | Resume | Ack | Ping | ListSessions | DropSession
ServerMessage: TypeAlias = (
    Welcome
    | Subscribed
    | Event
    | Chunk
    | Gap
    | Resumed
    | Pong
    | Sessions
    | Dropped
    | Closing
    | Error
)
Message: TypeAlias = ClientMessage | ServerMessage
