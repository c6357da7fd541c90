"""Events larger than one message: split into ``Chunk`` messages and put back together.

EventBridge allows events of 256 KB; API Gateway carries 128 KB a message. An event
whose ``Event`` message fits the limit goes whole; any other is cut into slices of the
UTF-8 bytes of its JSON text, each sent base64 in a ``Chunk`` whose encoding is at
most ``limit`` bytes. Base64 is plain ASCII that JSON never escapes, so a chunk's size
is known exactly before it is built, whatever characters the event holds.

:class:`Reassembler` takes chunks in any order, any number of times, and gives the
event back once all its parts are in. It is bounded, because a peer that sends the
first chunk of a thousand events and never the rest must not exhaust the client:

* a partial event more than ``window`` cursors below the newest cursor it has seen is
  dropped (its chunks were lost; the client sees a hole there and asks again);
* when the partial events together hold more than ``max_bytes``, the oldest (lowest
  cursor) are dropped until they fit.

Both are counted in :attr:`Reassembler.dropped`. Cursors it completed are remembered
within the same window, so a duplicate chunk arriving after its event was assembled
is ignored rather than starting a partial that could never complete.

Chunks that contradict each other (another ``count`` or ``id`` for the same cursor,
another payload for the same index) raise :class:`WireError` from
:meth:`Reassembler.feed`, and the newest chunk wins: the partial restarts from it, so
a resend (say by a newer deployment of the server) can still complete.

This module was split out of :mod:`bridge.core.wire` to keep each module small; it
shares that module's codec and limits.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from bridge.core.wire import (
    DEFAULT_LIMIT,
    MAX_CHUNKS,
    MAX_INT,
    Chunk,
    Event,
    LocalProtocolError,
    WireError,
    encode,
    json_text,
    parse_json,
)

__all__ = ["Reassembler", "event_messages"]


def _size(message: Event | Chunk) -> int:
    return len(encode(message, limit=MAX_INT).encode("utf-8"))


def event_messages(
    cursor: int, id: str, event: dict[str, Any], limit: int = DEFAULT_LIMIT
) -> list[Event | Chunk]:
    """The messages that carry one event: one ``Event`` if its encoding fits ``limit``,
    else ``Chunk`` messages, each encoded in at most ``limit`` bytes.

    Raises :class:`LocalProtocolError` when even an empty chunk would not fit (an id
    of about ``limit`` bytes) or the event needs more than ``MAX_CHUNKS`` chunks.
    """
    body = json_text(event).encode("utf-8")
    # The event's text nests unchanged in the message's text (same separators), so
    # the whole message's size is the envelope's plus the body's.
    if _size(Event(cursor, id, {})) - len(b"{}") + len(body) <= limit:
        return [Event(cursor, id, event)]
    count = 2
    while True:
        # The last index has the most digits: its overhead bounds every chunk's.
        overhead = _size(Chunk(cursor, id, count - 1, count, ""))
        per_chunk = (limit - overhead) // 4 * 3  # base64: 4 characters per 3 bytes
        if per_chunk <= 0:
            raise LocalProtocolError(f"event {id[:40]!r}: an empty chunk is over {limit} bytes")
        needed = -(-len(body) // per_chunk)
        if needed <= count:
            break
        if needed > MAX_CHUNKS:
            raise LocalProtocolError(
                f"event {id[:40]!r} of {len(body)} bytes needs {needed} chunks, "
                f"over the {MAX_CHUNKS} allowed"
            )
        count = needed
    slices = [body[at : at + per_chunk] for at in range(0, len(body), per_chunk)]
    return [
        Chunk(cursor, id, index, len(slices), base64.b64encode(part).decode("ascii"))
        for index, part in enumerate(slices)
    ]


@dataclass(slots=True)
class _Partial:
    id: str
    count: int
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Chunks in, whole events out: any order, duplicates ignored, memory bounded."""

    def __init__(self, *, window: int = 10_000, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.window = window
        self.max_bytes = max_bytes
        self.dropped = 0  # partial events given up (window or byte cap)
        self._partials: dict[int, _Partial] = {}
        self._done: set[int] = set()  # cursors assembled, within the window
        self._bytes = 0
        self._newest = 0

    @property
    def pending(self) -> int:
        """How many events are partly received."""
        return len(self._partials)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def feed(self, chunk: Chunk) -> Event | None:
        """Take one chunk; the whole event once its last missing part arrives."""
        try:
            data = base64.b64decode(chunk.data, validate=True)
        except ValueError:  # binascii.Error is a ValueError
            raise WireError(f"chunk {chunk.index} of cursor {chunk.cursor}: not base64") from None
        if chunk.cursor in self._done:
            return None
        partial = self._partials.get(chunk.cursor)
        if partial is not None and (partial.id != chunk.id or partial.count != chunk.count):
            self._restart(chunk.cursor, chunk, data)
            raise WireError(
                f"chunk {chunk.index} of cursor {chunk.cursor} says id {chunk.id[:40]!r} of "
                f"{chunk.count} chunks, earlier ones {partial.id[:40]!r} of {partial.count}"
            )
        if partial is None:
            partial = self._partials[chunk.cursor] = _Partial(chunk.id, chunk.count)
        known = partial.parts.get(chunk.index)
        if known is not None:
            if known == data:
                return None  # a duplicate
            self._restart(chunk.cursor, chunk, data)
            raise WireError(
                f"chunk {chunk.index} of cursor {chunk.cursor} differs from its earlier copy"
            )
        partial.parts[chunk.index] = data
        partial.size += len(data)
        self._bytes += len(data)
        self._newest = max(self._newest, chunk.cursor)
        if len(partial.parts) == partial.count:
            self.forget(chunk.cursor)
            self._done.add(chunk.cursor)
            self._bound(keep=chunk.cursor)
            return self._assemble(chunk.cursor, partial)
        self._bound(keep=chunk.cursor)
        return None

    def forget(self, cursor: int) -> None:
        """Drop what is held for ``cursor`` (it was delivered whole another way)."""
        partial = self._partials.pop(cursor, None)
        if partial is not None:
            self._bytes -= partial.size

    def _restart(self, cursor: int, chunk: Chunk, data: bytes) -> None:
        self.forget(cursor)
        self._partials[cursor] = _Partial(chunk.id, chunk.count, {chunk.index: data}, len(data))
        self._bytes += len(data)

    def _assemble(self, cursor: int, partial: _Partial) -> Event:
        body = b"".join(partial.parts[index] for index in range(partial.count))
        try:
            event = parse_json(body)
        except WireError as exc:
            raise WireError(f"chunked event at cursor {cursor}: {exc.reason}") from None
        if not isinstance(event, dict):
            raise WireError(f"chunked event at cursor {cursor} is not a JSON object")
        return Event(cursor, partial.id, event)

    def _bound(self, keep: int) -> None:
        floor = self._newest - self.window
        if len(self._done) > self.window:
            self._done = {c for c in self._done if c >= floor}
        stale = [c for c in self._partials if c < floor]
        for cursor in stale:
            self.forget(cursor)
        self.dropped += len(stale)
        # Oldest first; the event just fed goes last, and only if it alone is too big.
        while self._bytes > self.max_bytes and self._partials:
            others = [c for c in self._partials if c != keep]
            self.forget(min(others) if others else keep)
            self.dropped += 1
