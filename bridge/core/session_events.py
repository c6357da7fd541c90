"""What the client protocol reports (:class:`ClientEvent`) and counts (:class:`Counters`).

Split from :mod:`bridge.core.session`, which re-exports all of it. The events are the
client's counterpart of websockets' ``events_received()`` items: plain frozen values
the asyncio layer acts on (write ``Delivered`` to the sink, log ``ProtocolProblem``,
exit on a permanent ``Refused`` ...).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TypeAlias

from bridge.core import wire

# No __all__ here: bridge.core.session re-exports these names and lists them once.


@dataclass(frozen=True, slots=True)
class Delivered:
    cursor: int
    id: str
    event: wire.JSONObject
    #: The event's JSON text as it arrived, when the message let it be cut out exactly
    #: (:func:`bridge.core.wire.event_text`): a sink that stores text need not encode it.
    text: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class GapReported:
    """Cursors ``first..last`` are lost (only those not delivered, reported once)."""

    first: int
    last: int
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolProblem:
    reason: str
    text_head: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused this connection; the protocol is closed. ``message`` is the
    one line to show (for ``version``, what to upgrade)."""

    code: str
    message: str

    @property
    def permanent(self) -> bool:
        """Reconnecting cannot help."""
        return self.code in ("version", "forbidden", "welcome")


@dataclass(frozen=True, slots=True)
class ServerError:
    """The server refused one of our messages, the connection goes on."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Closing:
    """The server is closing this connection (e.g. a newer one took the session)."""

    reason: str


@dataclass(frozen=True, slots=True)
class SessionsListed:
    items: tuple[wire.SessionInfo, ...]
    omitted: int = 0


@dataclass(frozen=True, slots=True)
class SessionDropped:
    name: str


@dataclass(frozen=True, slots=True)
class SessionReset:
    """The session was created afresh: cursors restarted at the server's ``acked``.
    Events of the old session not yet received when it ended were not kept."""

    previous: int
    acked: int


@dataclass(frozen=True, slots=True)
class Ready:
    """Subscribed, and the buffer replayed once: from here on events are live."""


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: str


ClientEvent: TypeAlias = (
    Delivered
    | GapReported
    | ProtocolProblem
    | Refused
    | ServerError
    | Closing
    | SessionsListed
    | SessionDropped
    | SessionReset
    | Ready
    | Pong
)


@dataclass(slots=True)
class Counters:
    received: int = 0  # events received, duplicates included
    delivered: int = 0
    duplicates: int = 0
    gaps: int = 0  # cursors reported lost
    problems: int = 0  # malformed or unexpected messages, server errors
    holes_skipped: int = 0
    refetches: int = 0


class State(enum.Enum):
    HELLO = "hello"  # hello sent, waiting for welcome
    OPENING = "opening"  # welcomed; subscribe and resume sent, waiting for both
    READY = "ready"
    CLOSED = "closed"
