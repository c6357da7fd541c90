"""The frame-size scanner on its own: bytes in, a verdict and pass-through bytes out.

The frames here come from two encoders that do not share code with the scanner:
websockets' own ``Frame.serialize`` (real client frames, minimal length encodings)
and :func:`frame` below, which can also write a length in a wider field than it
needs. RFC 6455 asks senders not to do that, but a reader has to survive it. The
expected verdict is computed from the list of frames, never from the scanner.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from bridge.offline.frame_limit import DATA_OPCODES, FrameScanner, FrameTooBig

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HEADER = 14  # 2 + 8 (64-bit length) + 4 (mask)


def frame(
    opcode: int,
    payload: bytes,
    *,
    mask: bytes | None = None,
    width: int = 7,
    fin: bool = True,
    declared: int | None = None,
) -> bytes:
    """One frame with its length in a 7-, 16- or 64-bit field. ``declared`` overrides the length."""
    length = len(payload) if declared is None else declared
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask else 0
    if width == 7:
        assert length < 126
        header = bytes([first, mask_bit | length])
    elif width == 16:
        header = bytes([first, mask_bit | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([first, mask_bit | 127]) + length.to_bytes(8, "big")
    if mask:
        header += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + payload


def scan_in_pieces(stream: bytes, cuts: list[int], limit: int) -> tuple[FrameTooBig | None, bytes]:
    """Feed ``stream`` cut at ``cuts``. Return the verdict and all bytes that went on."""
    scanner = FrameScanner(limit)
    passed = bytearray()
    fed = 0
    bounds = [0, *sorted(min(cut, len(stream)) for cut in cuts), len(stream)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        passed += scanner.feed(stream[start:end])
        fed = end
        if scanner.too_big is None:
            # only an incomplete header is ever held back, and it is a suffix of what was fed
            assert fed - len(passed) < MAX_HEADER
            assert stream[: len(passed)] == passed
    return scanner.too_big, bytes(passed)


# -- single cases ------------------------------------------------------------------------


def test_a_frame_at_the_limit_passes_and_one_byte_more_does_not() -> None:
    at_limit = Frame(Opcode.TEXT, b"y" * 1000).serialize(mask=True)
    over = Frame(Opcode.TEXT, b"y" * 1001).serialize(mask=True)
    scanner = FrameScanner(1000)
    assert scanner.feed(at_limit) == at_limit
    assert scanner.too_big is None
    assert scanner.feed(over + at_limit) == b""
    verdict = FrameTooBig(opcode=TEXT, length=1001, limit=1000, offset=len(at_limit))
    assert scanner.too_big == verdict
    assert verdict.reason == "Frame size of 1001 bytes exceeds the 1000-byte frame limit"
    assert scanner.feed(at_limit) == b""  # nothing goes on after the verdict


@pytest.mark.parametrize(
    ("size", "header"),
    [(125, 2 + 4), (126, 4 + 4), (65_535, 4 + 4), (65_536, 10 + 4), (70_000, 10 + 4)],
)
def test_real_client_frames_with_7_16_and_64_bit_lengths(size: int, header: int) -> None:
    data = Frame(Opcode.BINARY, b"\x81\x7f" * (size // 2) + b"z" * (size % 2)).serialize(mask=True)
    assert len(data) == header + size
    assert FrameScanner(size).feed(data) == data
    too_small = FrameScanner(size - 1)
    assert too_small.feed(data) == b""
    assert too_small.too_big == FrameTooBig(opcode=BINARY, length=size, limit=size - 1, offset=0)


def test_control_frames_are_not_counted_against_the_limit() -> None:
    stream = b"".join(
        Frame(opcode, b"p" * 125).serialize(mask=True)
        for opcode in (Opcode.PING, Opcode.PONG, Opcode.CLOSE)
    )
    scanner = FrameScanner(10)
    assert scanner.feed(stream) == stream
    assert scanner.too_big is None


def test_a_continuation_frame_counts_like_the_first() -> None:
    first = Frame(Opcode.TEXT, b"a" * 10, fin=False).serialize(mask=True)
    second = Frame(Opcode.CONT, b"b" * 11).serialize(mask=True)
    scanner = FrameScanner(10)
    assert scanner.feed(first + second) == first
    assert scanner.too_big == FrameTooBig(opcode=CONTINUATION, length=11, limit=10, offset=12 + 4)


def test_a_huge_declared_length_is_judged_from_the_header_alone() -> None:
    small = frame(TEXT, b"ok", mask=b"\x01\x02\x03\x04")
    giant = frame(BINARY, b"", width=64, declared=2**62, mask=b"abcd")
    scanner = FrameScanner(32 * 1024)
    assert scanner.feed(small + giant[:5]) == small  # the giant's header is held, incomplete
    assert scanner.feed(giant[5:]) == b""
    assert scanner.too_big is not None and scanner.too_big.length == 2**62


def test_a_header_split_byte_by_byte_is_held_back_then_released_whole() -> None:
    data = frame(TEXT, b"hello", width=64, mask=b"wxyz")
    scanner = FrameScanner(100)
    out = [scanner.feed(data[i : i + 1]) for i in range(len(data))]
    assert out[:13] == [b""] * 13  # 2 + 8 + 4 header bytes: nothing goes on before the last
    assert out[13] == data[:14]
    assert b"".join(out) == data


def test_empty_pieces_change_nothing() -> None:
    scanner = FrameScanner(5)
    assert scanner.feed(b"") == b""
    data = frame(TEXT, b"12345")
    assert scanner.feed(data) == data
    assert scanner.feed(b"") == b""
    assert scanner.too_big is None


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="frame limit"):
        FrameScanner(-1)


# -- any segmentation --------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One frame of a generated stream, and its bytes."""

    opcode: int
    length: int
    data: bytes


@st.composite
def frames(draw: st.DrawFn, limit: int) -> Spec:
    opcode = draw(st.sampled_from([CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG]))
    control = opcode not in DATA_OPCODES
    length = draw(st.integers(0, 125 if control else limit + 3))
    width = draw(st.sampled_from([7, 16, 64] if length < 126 else [16, 64]))
    masked = draw(st.booleans())
    mask = draw(st.binary(min_size=4, max_size=4)) if masked else None
    payload = draw(st.binary(min_size=length, max_size=length))
    return Spec(opcode, length, frame(opcode, payload, mask=mask, width=width))


@st.composite
def streams(draw: st.DrawFn) -> tuple[int, list[Spec], bytes, list[int]]:
    """A limit, the frames, the byte stream (maybe with trailing junk), and where TCP cut it."""
    limit = draw(st.integers(0, 300))
    specs = draw(st.lists(frames(limit), max_size=8))
    if draw(st.booleans()):  # a data frame declaring an enormous 64-bit length
        giant = frame(BINARY, b"", width=64, declared=draw(st.integers(limit + 1, 2**63 - 1)))
        specs.append(Spec(BINARY, int.from_bytes(giant[2:10], "big"), giant))
    stream = b"".join(s.data for s in specs) + draw(st.binary(max_size=20))
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=12))
    return limit, specs, stream, cuts


def expected(limit: int, specs: list[Spec], stream: bytes) -> tuple[FrameTooBig | None, bytes]:
    """The verdict straight from the frame list: the first data frame over the limit."""
    offset = 0
    for spec in specs:
        if spec.opcode in DATA_OPCODES and spec.length > limit:
            return FrameTooBig(spec.opcode, spec.length, limit, offset), stream[:offset]
        offset += len(spec.data)
    return None, stream  # junk after the last frame: passed on for aiohttp to refuse


@given(streams())
def test_any_segmentation_gives_the_same_verdict_and_bytes_as_the_whole(
    case: tuple[int, list[Spec], bytes, list[int]],
) -> None:
    limit, specs, stream, cuts = case
    framed = b"".join(s.data for s in specs)
    verdict, passed = expected(limit, specs, framed)
    event("a frame too big" if verdict else "every frame within the limit")
    event(f"{len(cuts)} cuts" if len(cuts) < 3 else "3 or more cuts")
    whole = FrameScanner(limit)
    whole_passed = whole.feed(stream)
    if verdict is not None:
        assert (whole.too_big, whole_passed) == (verdict, passed)
    else:  # every frame goes on; junk after them is read as frames too (aiohttp refuses it)
        assert whole_passed.startswith(framed)
        assert whole.too_big is None or whole.too_big.offset >= len(framed)
    assert scan_in_pieces(stream, cuts, limit) == (whole.too_big, whole_passed)
    byte_by_byte = list(range(len(stream) + 1))
    assert scan_in_pieces(stream, byte_by_byte, limit) == (whole.too_big, whole_passed)


@given(streams())
def test_streams_of_whole_frames_pass_entirely_unless_one_is_too_big(
    case: tuple[int, list[Spec], bytes, list[int]],
) -> None:
    limit, specs, _, cuts = case
    stream = b"".join(s.data for s in specs)  # no junk: every byte belongs to a frame
    verdict, passed = expected(limit, specs, stream)
    assert scan_in_pieces(stream, cuts, limit) == (verdict, passed)
