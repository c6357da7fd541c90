"""Lines too long for their channel are cut with a marker, never split into two lines.

Through the runtime with real worker processes (``tests/handlers/runtime_long.py``): a
function's log line over the runtime's 16 MiB read limit, or over the 256 KiB a log
line keeps, comes out as one line — its head, then the marker saying how long it was —
and its tail never shows up as a line of its own (what a plain ``readline`` did). An
exception with a huge message is an ordinary error, cut the same way, and the sandbox
stays of use. The cutting helpers are also tested alone, over any split of the input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.subscriptions import FunctionSpec
from bridge.offline.runtime import LINE_LIMIT, LOG_LINE_LIMIT, FunctionRuntime, read_log_line
from bridge.offline.worker_protocol import (
    MAX_ERROR_BYTES,
    MAX_ERROR_MESSAGE_BYTES,
    bounded_error,
    cut_marker,
    cut_text,
)

ROOT = Path(__file__).resolve().parents[1]
LONG = "tests.handlers.runtime_long.handler"
TAIL = "THE-TAIL-OF-THE-LINE"
FUNCTION_LOG = "bridge.offline.functions.long"


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[FunctionRuntime]:
    spec = FunctionSpec(name="long", handler=LONG, pattern=None, timeout=60)
    runtime = FunctionRuntime([spec], project_root=ROOT, environment={})
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()  # the sandbox's log is read to its end before this returns


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == FUNCTION_LOG]


@pytest.mark.parametrize(
    "size",
    [LINE_LIMIT + 1_000_003, LINE_LIMIT, LOG_LINE_LIMIT + 1, 300_000],
    ids=["over-the-read-limit", "at-the-read-limit", "one-byte-over", "between"],
)
async def test_a_long_log_line_keeps_its_head_and_says_it_was_cut(
    caplog: pytest.LogCaptureFixture, size: int
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.offline")
    async with running() as runtime:
        result = await runtime.invoke("long", {"size": size})
        assert result.ok, result.error
        assert result.payload == {"printed": size}
    lines = logged(caplog)
    assert lines[-1] == "the line after"  # the log goes on, line by line
    assert len(lines) == 2, [line[:80] for line in lines]  # one line, not a head and a tail
    cut = lines[0]
    assert cut.startswith("HEAD-é-xxx")
    assert cut.endswith(cut_marker(size, LOG_LINE_LIMIT))
    assert TAIL not in cut
    assert len(cut.encode()) == LOG_LINE_LIMIT + len(cut_marker(size, LOG_LINE_LIMIT).encode())


async def test_a_line_that_fits_is_logged_whole(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bridge.offline")
    async with running() as runtime:
        assert (await runtime.invoke("long", {"size": LOG_LINE_LIMIT})).ok
    first, after = logged(caplog)
    assert len(first.encode()) == LOG_LINE_LIMIT and first.endswith(TAIL)
    assert "[cut:" not in first and after == "the line after"


async def test_a_cut_never_splits_a_character(caplog: pytest.LogCaptureFixture) -> None:
    """``é`` is two bytes; the head puts its first byte at the very last kept byte."""
    caplog.set_level(logging.INFO, logger="bridge.offline")
    head = "a" * (LOG_LINE_LIMIT - 1) + "é"
    async with running() as runtime:
        assert (await runtime.invoke("long", {"size": LOG_LINE_LIMIT + 100, "head": head})).ok
    cut = logged(caplog)[0]
    assert cut == "a" * (LOG_LINE_LIMIT - 1) + cut_marker(LOG_LINE_LIMIT + 100, LOG_LINE_LIMIT - 1)
    assert "\ufffd" not in cut


async def test_an_exception_with_a_huge_message_is_an_error_cut_to_size(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """20 MB of message would be a protocol line over the runtime's limit: the worker cuts
    the report, the invocation fails as the handler's own error, the sandbox is reused."""
    caplog.set_level(logging.INFO, logger="bridge.offline")
    size = LINE_LIMIT + 4_000_000
    async with running() as runtime:
        failed = await runtime.invoke("long", {"action": "raise", "size": size})
        assert failed.error is not None
        assert failed.error["errorType"] == "ValueError"
        message = failed.error["errorMessage"]
        assert message.startswith("HEAD-é-xxx") and TAIL not in message
        assert message.endswith(cut_marker(size, MAX_ERROR_MESSAGE_BYTES))
        assert len(json.dumps(failed.error).encode()) <= MAX_ERROR_BYTES
        assert failed.error["trace"]  # where it failed is still there
        again = await runtime.invoke("long", {"size": 10})
        assert again.ok
        sandboxes = [s for f in runtime._functions.values() for s in f.sandboxes]
        assert len(sandboxes) == 1  # the same sandbox: the channel was never broken
    reports = [line for line in logged(caplog) if line.startswith("[ERROR] ValueError")]
    assert len(reports) == 1 and TAIL not in reports[0]


# --------------------------------------------------------------------------- the helpers


async def lines_of(pieces: list[bytes], limit: int, stream_limit: int) -> list[str]:
    """What read_log_line makes of a stream fed in these pieces."""
    stream = asyncio.StreamReader(limit=stream_limit)

    async def feed() -> None:
        for piece in pieces:
            stream.feed_data(piece)
            await asyncio.sleep(0)
        stream.feed_eof()

    feeder = asyncio.create_task(feed())
    lines = []
    while (line := await read_log_line(stream, limit)) is not None:
        lines.append(line)
    await feeder
    return lines


def expected_lines(data: bytes, limit: int) -> list[str]:
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    out = []
    for part in parts:
        if len(part) <= limit:
            out.append(part.decode("utf-8", "replace"))
        else:
            out.append(part[:limit].decode("ascii") + cut_marker(len(part), limit))
    return out


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.integers(0, 120), min_size=0, max_size=8),
    cuts=st.lists(st.integers(1, 60), max_size=20),
    final_newline=st.booleans(),
)
def test_read_log_line_over_any_split(lines: list[int], cuts: list[int], final_newline: bool):
    """ASCII lines of any length against a log limit of 16 and a stream limit of 32,
    fed in pieces of any size: each comes out once, whole or cut with its marker."""
    data = b"\n".join(b"%d" % (n % 10) * n for n in lines)
    if lines and final_newline:
        data += b"\n"
    pieces, rest = [], data
    for cut in cuts:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    got = asyncio.run(lines_of([p for p in pieces if p], limit=16, stream_limit=32))
    assert got == expected_lines(data, 16)


@given(st.text(max_size=40), st.integers(4, 30))
def test_cut_text_keeps_whole_characters_within_the_limit(text: str, limit: int) -> None:
    cut = cut_text(text, limit)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        assert cut == text
    else:
        head, marker, _ = cut.partition(" … [cut: ")
        assert marker and text.startswith(head)
        kept = len(head.encode("utf-8", "surrogatepass"))
        assert limit - 3 <= kept <= limit
        assert cut.endswith(cut_marker(size, kept))


def test_bounded_error_fits_with_the_newest_frames() -> None:
    trace = [f'  File "x.py", line {n}, in f{n}\n    ' + "y" * 10_000 + "\n" for n in range(200)]
    error = {"errorType": "E", "errorMessage": "m" * 1_000_000, "trace": trace, "extra": 1}
    bounded = bounded_error(error)
    assert len(json.dumps(bounded, separators=(",", ":")).encode()) <= MAX_ERROR_BYTES
    assert bounded["trace"][-1].startswith('  File "x.py", line 199, in f199')
    assert bounded["trace"][0].startswith("… [") and "older frames cut" in bounded["trace"][0]
    assert bounded["errorMessage"].endswith(cut_marker(1_000_000, MAX_ERROR_MESSAGE_BYTES))
    small = {"errorType": "E", "errorMessage": "m", "trace": ["t"]}
    assert bounded_error(small) == small
