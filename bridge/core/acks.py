"""The client's acknowledgement state: which cursors it has, and its low-water mark.

Cursors come from concurrent forward invocations, so they become visible out of order
(7 before 6). The client delivers in arrival order — sinks dedupe by event id — but
acknowledges only a contiguous low-water mark: the highest cursor ``c`` such that
every cursor up to ``c`` was delivered, reported lost in a gap, or skipped as a hole.

A *hole* is a cursor missing while a higher one is known to exist (received, or named
by ``Resumed``/``Gap``). It is usually just late; but a forwarder can die after
allocating a cursor, and EventBridge then retries the event under a new one, so the
old cursor is never written. :meth:`CursorWindow.skip_holes` moves the low-water mark
past holes older than a grace period: they are counted apart and never reported as
lost, and one that turns up after all is still delivered (:meth:`classify` says
``"late"``).

Memory is bounded by what is *above* the low-water mark (delivered cursors and gap
ranges there), plus at most :data:`MAX_SKIPPED` ranges of skipped holes remembered
for late arrivals. Hole ages are a step function of the cursor — cursors between the
previous and the new highest become holes at one moment — so they are kept as a short
list of ``(bound, since)`` steps, not per cursor: a ``Resumed`` naming a million
cursors costs one entry.

Pure and clock-free like the rest of ``bridge.core``: ``now`` is passed in.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from typing import Literal

__all__ = ["MAX_SKIPPED", "CursorWindow"]

MAX_SKIPPED = 1024  # ranges of skipped holes kept so that a late arrival is still delivered

Arrival = Literal["new", "late", "duplicate"]


def _subtract(lo: int, hi: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``lo..hi`` outside the sorted, disjoint ``ranges``."""
    parts: list[tuple[int, int]] = []
    at = lo
    for first, last in ranges:
        if last < at:
            continue
        if first > hi:
            break
        if first > at:
            parts.append((at, first - 1))
        at = max(at, last + 1)
        if at > hi:
            break
    if at <= hi:
        parts.append((at, hi))
    return parts


def _add(ranges: list[tuple[int, int]], lo: int, hi: int) -> None:
    """Insert ``lo..hi`` into the sorted, disjoint ``ranges``, merging neighbours."""
    index = bisect.bisect_left(ranges, (lo, hi))
    ranges.insert(index, (lo, hi))
    merged: list[tuple[int, int]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    ranges[:] = merged


def _remove(ranges: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """Take ``lo..hi`` out of the sorted, disjoint ``ranges``; returns what was in it."""
    taken: list[tuple[int, int]] = []
    kept: list[tuple[int, int]] = []
    for first, last in ranges:
        if last < lo or first > hi:
            kept.append((first, last))
            continue
        taken.append((max(first, lo), min(last, hi)))
        if first < lo:
            kept.append((first, lo - 1))
        if last > hi:
            kept.append((hi + 1, last))
    ranges[:] = kept
    return taken


def _find(ranges: list[tuple[int, int]], cursor: int) -> int | None:
    index = bisect.bisect_right(ranges, (cursor, float("inf"))) - 1
    if index >= 0 and ranges[index][0] <= cursor <= ranges[index][1]:
        return index
    return None


class CursorWindow:
    """Delivered / lost / skipped bookkeeping for one session, from ``low_water`` on."""

    def __init__(self, low_water: int = 0) -> None:
        self.low_water = low_water
        self.highest = low_water  # the highest cursor known to exist
        self._delivered: set[int] = set()  # delivered cursors above low_water
        self._heap: list[int] = []  # the same, for the lowest
        self._lost: list[tuple[int, int]] = []  # gap ranges above low_water, sorted
        self._skipped: list[tuple[int, int]] = []  # skipped holes (<= low_water), sorted
        # (bound, since): cursors above the previous bound and up to this one have been
        # holes (when missing) since `since`. Bounds and times both ascend.
        self._steps: deque[tuple[int, float]] = deque()

    # ----------------------------------------------------------------- queries

    def classify(self, cursor: int) -> Arrival:
        """``new``: deliver and record; ``late``: deliver, it was skipped or given up for
        lost; ``duplicate``: already delivered, do not deliver again."""
        if cursor <= self.low_water:
            return "late" if _find(self._skipped, cursor) is not None else "duplicate"
        if cursor in self._delivered:
            return "duplicate"
        if _find(self._lost, cursor) is not None:
            return "late"
        return "new"

    def oldest_hole(self) -> float | None:
        """Since when the lowest missing cursor has been a hole (``None``: no hole).

        Hole ages ascend with the cursor, so this is the age of the oldest hole."""
        if self.low_water >= self.highest:
            return None
        return self._since(self.low_water + 1)

    def _since(self, cursor: int) -> float:
        for bound, since in self._steps:
            if bound >= cursor:
                return since
        raise AssertionError(f"cursor {cursor} is above the highest known {self.highest}")

    def carried(self, low_water: int) -> CursorWindow:
        """The window of the next connection of the same client, which resumes after
        ``low_water`` (the cursor its sink stored): empty above it, except that the
        lowest hole keeps its age, and skipped holes stay skippable-late.

        Without this each connection would start a hole's clock anew: a client whose
        connections are shorter than the grace (a gateway's maximum age, a flaky
        network) would never skip a cursor whose forwarder died, never acknowledge past
        it, and the bridge would keep its buffer until the cap drops events.

        Only the run of missing cursors just above the mark is carried, and only when
        ``low_water`` is this window's: cursors this window had delivered come again on
        resume (the sink may not have written them), so in the new window they are
        missing from *now*, never old enough to be skipped before they arrive."""
        window = CursorWindow(low_water)
        if low_water != self.low_water:
            return window
        window._skipped = list(self._skipped)
        if self.oldest_hole() is None:
            return window
        ends = [self.highest]
        if self._heap:
            ends.append(self._heap[0] - 1)
        if self._lost:
            ends.append(self._lost[0][0] - 1)
        end = min(ends)  # the lowest run of cursors missing here, low_water + 1 .. end
        for bound, since in self._steps:
            window._steps.append((min(bound, end), since))
            if bound >= end:
                break
        window.highest = end
        return window

    # ----------------------------------------------------------------- updates

    def deliver(self, cursor: int, now: float) -> Arrival:
        """Record an arrival; says what it was (see :meth:`classify`)."""
        if cursor == self.highest + 1 and self.highest == self.low_water:
            # The common case, the next cursor with nothing missing: no bookkeeping.
            self.low_water = self.highest = cursor
            return "new"
        arrival = self.classify(cursor)
        if arrival == "late" and cursor <= self.low_water:
            _remove(self._skipped, cursor, cursor)
        elif arrival == "new":
            self.extend(cursor, now)
            self._delivered.add(cursor)
            heapq.heappush(self._heap, cursor)
            self._advance()
        return arrival

    def extend(self, through: int, now: float) -> None:
        """Cursors up to ``through`` exist (``Resumed``, or a higher cursor arrived):
        any of them still missing is a hole from now, unless it already was one."""
        if through > self.highest:
            self._steps.append((through, now))
            self.highest = through

    def lose(self, first: int, last: int, now: float) -> list[tuple[int, int]]:
        """The server says ``first..last`` were dropped. Returns the ranges that are news:
        not delivered, not already reported. A skipped hole in the range was a real
        event after all, so it is reported too; delivered cursors never are."""
        lost: list[tuple[int, int]] = []
        if first <= self.low_water:
            lost.extend(_remove(self._skipped, first, min(last, self.low_water)))
        lo = max(first, self.low_water + 1)
        if lo <= last:
            self.extend(last, now)
            delivered = sorted(c for c in self._delivered if lo <= c <= last)
            taken = [(c, c) for c in delivered]
            for part in _subtract(lo, last, sorted(self._lost + taken)):
                lost.append(part)
                _add(self._lost, *part)
            self._advance()
        return lost

    def skip_holes(self, now: float, grace: float) -> int:
        """Move past holes that have been missing for ``grace`` seconds; how many."""
        skipped = 0
        cutoff = now - grace
        while self.low_water < self.highest:
            # The highest cursor whose hole is old enough: steps ascend in time too.
            oldest = max((b for b, since in self._steps if since <= cutoff), default=None)
            if oldest is None or oldest <= self.low_water:
                break
            nexts = [oldest, self.highest]
            if self._heap:
                nexts.append(self._heap[0] - 1)
            if self._lost:
                nexts.append(self._lost[0][0] - 1)
            end = min(nexts)
            skipped += end - self.low_water
            _add(self._skipped, self.low_water + 1, end)
            del self._skipped[: max(0, len(self._skipped) - MAX_SKIPPED)]
            self.low_water = end
            self._advance()
        return skipped

    def _advance(self) -> None:
        """Move low_water over what is contiguous: delivered cursors and lost ranges."""
        while True:
            if self._heap and self._heap[0] == self.low_water + 1:
                cursor = heapq.heappop(self._heap)
                self._delivered.discard(cursor)
                self.low_water = cursor
            elif self._lost and self._lost[0][0] <= self.low_water + 1:
                self.low_water = max(self.low_water, self._lost.pop(0)[1])
            else:
                break
        while self._heap and self._heap[0] <= self.low_water:
            self._delivered.discard(heapq.heappop(self._heap))
        while self._steps and self._steps[0][0] <= self.low_water:
            self._steps.popleft()
