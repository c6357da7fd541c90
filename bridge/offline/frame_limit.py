"""Find the first WebSocket frame that is over a size limit in a byte stream. No I/O.

API Gateway closes a connection with 1009 when one *frame* is over 32 KB, even if the
message it belongs to is under the 128 KB message limit. aiohttp can only limit whole
messages, so the gateway puts this scanner in front of aiohttp's reader (see
``_FrameSizeGuard`` in :mod:`bridge.offline.gateway`, the only place that deals with
aiohttp).

The scanner reads frame headers only (RFC 6455 §5.2: 2 bytes, then 2 or 8 more for a
16- or 64-bit length, then 4 for a client's mask). It never looks at payloads and never
buffers them. It works like websockets' ``frames.py``: a generator (:func:`_parse`)
reads the stream as plain straight-line code, and :class:`FrameScanner` feeds it
whatever pieces TCP delivered. Only the stream decides the answer, never the way it
was cut into pieces. That holds for the verdict and for the bytes handed on: every
byte before the first frame that is too big, in order, exactly once. (A header that
is not complete yet is held back, at most 13 bytes, until the rest of it arrives.)
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

#: Continuation, text and binary: the frames that carry a message and count against the
#: limit. Control frames (close, ping, pong) are left alone: RFC 6455 caps them at 125
#: bytes and aiohttp already enforces that.
DATA_OPCODES = frozenset({0x0, 0x1, 0x2})

#: The 7-bit length values that mean "the real length follows in N more bytes".
_EXTENDED_LENGTH = {126: 2, 127: 8}
_MASK_BYTES = 4


@dataclass(frozen=True, slots=True)
class FrameTooBig:
    """The verdict on a stream whose data frame is over the limit."""

    opcode: int
    length: int
    """The payload length that the frame's header declares."""
    limit: int
    offset: int
    """Where the frame's header starts in the stream: that many bytes went on before it."""

    @property
    def reason(self) -> str:
        """The close reason sent with 1009. It has the same form as aiohttp's own size error."""
        return f"Frame size of {self.length} bytes exceeds the {self.limit}-byte frame limit"


@dataclass(frozen=True, slots=True)
class _Read:
    """The parser needs the next ``size`` header bytes, sent back in one piece."""

    size: int


@dataclass(frozen=True, slots=True)
class _Pass:
    """The header just read is within the limit: it and ``size`` payload bytes go on."""

    size: int


def _parse(limit: int) -> Generator[_Read | _Pass, bytes, FrameTooBig]:
    """Read frame after frame, and stop at the first data frame longer than ``limit``."""
    offset = 0
    while True:
        first, second = yield _Read(2)
        length = second & 0x7F
        extended = _EXTENDED_LENGTH.get(length, 0)
        masked = _MASK_BYTES if second & 0x80 else 0
        if extended or masked:
            rest = yield _Read(extended + masked)
            if extended:
                length = int.from_bytes(rest[:extended], "big")
        opcode = first & 0x0F
        if opcode in DATA_OPCODES and length > limit:
            return FrameTooBig(opcode=opcode, length=length, limit=limit, offset=offset)
        yield _Pass(length)
        offset += 2 + extended + masked + length


class FrameScanner:
    """Check a WebSocket byte stream frame by frame. Feed it the stream in any pieces.

    :meth:`feed` returns the bytes that may go on to the real WebSocket parser now.
    Once a data frame is over ``limit``, :attr:`too_big` holds the verdict. From then
    on nothing else goes on: not that frame, and nothing after it.
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"frame limit must be >= 0, not {limit}")
        self.limit = limit
        self.too_big: FrameTooBig | None = None
        self._parser = _parse(limit)
        self._read = self._first_read(next(self._parser))
        self._partial = bytearray()  # bytes collected so far for the pending _Read
        self._held = b""  # the header in progress, as far as earlier feeds brought it
        self._payload_left = 0  # payload bytes of an accepted frame not yet seen

    def feed(self, data: bytes) -> bytes:
        """Scan the next piece of the stream. Return the bytes that may go on now.

        That is all of ``data`` (plus any header bytes held back from earlier pieces),
        except a header that is not complete yet, which is held back, and anything
        from the first frame that is too big onwards.
        """
        if self.too_big is not None:
            return b""
        end = len(data)
        pos = 0
        cut = 0  # data[:cut] goes on; a header in progress starts at data[cut]
        lead = b""  # held header bytes from earlier pieces, released once accepted
        while pos < end:
            if self._payload_left:
                skip = min(self._payload_left, end - pos)
                self._payload_left -= skip
                pos += skip
                cut = pos
                continue
            take = min(self._read.size - len(self._partial), end - pos)
            self._partial += data[pos : pos + take]
            pos += take
            if len(self._partial) < self._read.size:
                break  # the rest of this header is in a later piece
            chunk = bytes(self._partial)
            self._partial.clear()
            try:
                asked = self._parser.send(chunk)
            except StopIteration as stop:
                self.too_big = stop.value
                self._held = b""
                return lead + data[:cut]
            if isinstance(asked, _Read):  # more of the same header
                self._read = asked
                continue
            if self._held:  # the header that earlier pieces began is complete and accepted
                lead, self._held = self._held, b""
            self._payload_left = asked.size
            cut = pos
            self._read = self._first_read(self._parser.send(b""))
        self._held += data[cut:]
        return lead + data[:cut]

    @staticmethod
    def _first_read(step: _Read | _Pass) -> _Read:
        """After a frame, the parser asks for the next header: a _Read, never a _Pass."""
        if not isinstance(step, _Read):  # pragma: no cover - _parse cannot do this
            raise AssertionError(f"frame parser yielded {step!r} where a header read belongs")
        return step


__all__ = ["DATA_OPCODES", "FrameScanner", "FrameTooBig"]
