"""The arithmetic of a session's buffer cap: what to drop, and the gap to report.

A session's buffer holds the events of cursors ``floor + 1 .. newest``; everything at
or below ``floor`` was acknowledged by the client or dropped. Cursors are allocated by
an atomic counter that also sums the bytes allocated (``cum`` is the running total
through a cursor), so both caps are checked without reading the buffer:

* count: ``newest - floor`` (a hole — a cursor allocated but never written — counts,
  which errs on the side of keeping less, never more);
* bytes: ``newest_cum - floor_cum``.

Past a cap the oldest events go, exactly as many as needed, and the client is told
which cursors it lost (a gap), never silence. The count cut is pure arithmetic; the
byte cut needs the running totals of the buffered cursors (an index read of sizes,
not bodies), which happens only once the byte cap is actually reached.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BufferLimits:
    max_events: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_bytes < 1:
            raise ValueError("buffer limits must be positive")


@dataclass(frozen=True, slots=True)
class Trim:
    """Drop cursors ``first .. last`` (inclusive); the new floor is ``last``."""

    first: int
    last: int
    last_cum: int  # bytes allocated through ``last``: the new floor's running total


def count_cut(floor: int, newest: int, limits: BufferLimits) -> int | None:
    """The highest cursor to drop so that at most ``max_events`` remain, or None."""
    excess = newest - floor - limits.max_events
    return floor + excess if excess > 0 else None


def over_bytes(floor_cum: int, newest_cum: int, limits: BufferLimits) -> bool:
    return newest_cum - floor_cum > limits.max_bytes


def plan_trim(
    floor: int,
    floor_cum: int,
    newest: int,
    newest_cum: int,
    limits: BufferLimits,
    index: Iterable[tuple[int, int]],
) -> Trim | None:
    """What to drop, if anything, after cursor ``newest`` was allocated.

    ``index`` yields ``(cursor, cum)`` of the buffered cursors above ``floor`` in
    ascending order, lazily: it is consumed only when a cap is exceeded, and only as
    far as the cut (the I/O layer reads it in small pages). The newest event itself is
    never dropped: one event larger than the byte cap is kept alone rather than lost on
    arrival.
    """
    count_last = count_cut(floor, newest, limits)
    if count_last is None and not over_bytes(floor_cum, newest_cum, limits):
        return None
    last, last_cum = floor, floor_cum
    for cursor, cum in index:
        if cursor >= newest:
            break
        within_count = count_last is None or cursor > count_last
        if within_count and newest_cum - last_cum <= limits.max_bytes:
            break
        last, last_cum = cursor, cum
    if count_last is not None and count_last > last:
        last = count_last  # cursors never written (holes) up to the count cut
    if last <= floor:
        return None
    return Trim(first=floor + 1, last=last, last_cum=last_cum)
