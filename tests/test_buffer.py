"""The buffer cap's arithmetic: exactly as many of the oldest events go as needed."""

from __future__ import annotations

from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.buffer import BufferLimits, Trim, count_cut, plan_trim


def _index(sizes: list[int], holes: set[int], floor: int = 0) -> list[tuple[int, int]]:
    """(cursor, cum) of written cursors floor+1.. ; a hole's bytes were allocated too."""
    cums = list(accumulate(sizes))
    return [(floor + i + 1, cum) for i, cum in enumerate(cums) if (floor + i + 1) not in holes]


def test_under_both_caps_nothing_goes() -> None:
    limits = BufferLimits(max_events=10, max_bytes=1000)
    index = _index([10] * 10, set())
    assert plan_trim(0, 0, 10, 100, limits, iter(index)) is None


def test_count_cap_drops_exactly_the_oldest_excess() -> None:
    limits = BufferLimits(max_events=3, max_bytes=10_000)
    index = _index([10] * 5, set())
    assert plan_trim(0, 0, 5, 50, limits, iter(index)) == Trim(first=1, last=2, last_cum=20)


def test_count_cut_needs_no_index_read_when_under_bytes() -> None:
    assert count_cut(floor=4, newest=10, limits=BufferLimits(5, 1)) == 5
    assert count_cut(floor=4, newest=9, limits=BufferLimits(5, 1)) is None


def test_byte_cap_drops_until_the_rest_fits() -> None:
    limits = BufferLimits(max_events=100, max_bytes=250)
    index = _index([100, 100, 100, 100], set())
    # 400 bytes buffered; dropping cursors 1 and 2 leaves 200
    assert plan_trim(0, 0, 4, 400, limits, iter(index)) == Trim(first=1, last=2, last_cum=200)


def test_one_event_over_the_byte_cap_is_kept_alone() -> None:
    limits = BufferLimits(max_events=100, max_bytes=50)
    index = _index([10, 500], set())
    assert plan_trim(0, 0, 2, 510, limits, iter(index)) == Trim(first=1, last=1, last_cum=10)


def test_holes_below_the_count_cut_are_dropped_with_it() -> None:
    limits = BufferLimits(max_events=2, max_bytes=10_000)
    index = _index([10] * 5, holes={2, 3})
    trim = plan_trim(0, 0, 5, 50, limits, iter(index))
    assert trim is not None and (trim.first, trim.last) == (1, 3)


def test_the_index_is_read_only_as_far_as_the_cut() -> None:
    limits = BufferLimits(max_events=1000, max_bytes=150)
    consumed = []

    def index():
        for cursor, cum in _index([100] * 1000, set()):
            consumed.append(cursor)
            yield cursor, cum

    trim = plan_trim(0, 0, 1000, 100_000, limits, index())
    assert trim is not None and trim.last == 999
    assert len(consumed) == 1000  # it had to go all the way: only the newest fits

    consumed.clear()
    limits = BufferLimits(max_events=1000, max_bytes=99_950)
    trim = plan_trim(0, 0, 1000, 100_000, limits, index())
    assert trim == Trim(first=1, last=1, last_cum=100)
    assert consumed == [1, 2]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BufferLimits(0, 1)


@given(
    sizes=st.lists(st.integers(1, 500), min_size=1, max_size=60),
    holes=st.sets(st.integers(1, 60), max_size=10),
    max_events=st.integers(1, 40),
    max_bytes=st.integers(1, 5_000),
    floor=st.integers(0, 5),
)
def test_the_cut_is_the_smallest_that_fits(
    sizes: list[int], holes: set[int], max_events: int, max_bytes: int, floor: int
) -> None:
    limits = BufferLimits(max_events, max_bytes)
    newest = floor + len(sizes)
    holes = {floor + h for h in holes if floor + h < newest}  # the newest was written
    index = _index(sizes, holes, floor)
    cum_of = dict(index)
    newest_cum = sum(sizes)
    trim = plan_trim(floor, 0, newest, newest_cum, limits, iter(index))

    def fits(last: int) -> bool:
        kept_bytes = newest_cum - max((c for k, c in index if k <= last), default=0)
        # only the newest written event left: it is kept alone, whatever its bytes (a
        # hole's allocated bytes still count, so the sum may exceed the cap with it)
        alone = all(k <= last or k == newest for k, _ in index)
        return newest - last <= max_events and (alone or kept_bytes <= max_bytes)

    last = floor if trim is None else trim.last
    assert last < newest  # the newest event is never dropped
    assert fits(last) or last == newest - 1
    if trim is not None:
        assert trim.first == floor + 1
        # one cursor fewer would not have been enough
        assert not fits(last - 1)
        if last in cum_of:
            assert trim.last_cum == cum_of[last]
