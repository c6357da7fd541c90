"""CursorWindow: the client's low-water mark, checked against a naive per-cursor model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.acks import CursorWindow

GRACE = 10.0


class Model:
    """The rules of acks.py spelled out one cursor at a time (slow and obvious)."""

    def __init__(self, low_water: int) -> None:
        self.start = self.low_water = self.highest = low_water
        self.status: dict[int, str] = {}  # delivered | lost | skipped
        self.since: dict[int, float] = {}  # when each cursor up to highest became known

    def extend(self, through: int, now: float) -> None:
        for cursor in range(self.highest + 1, through + 1):
            self.since[cursor] = now
        self.highest = max(self.highest, through)

    def classify(self, cursor: int) -> str:
        status = self.status.get(cursor)
        if cursor <= self.low_water:
            return "late" if status == "skipped" else "duplicate"
        if status == "delivered":
            return "duplicate"
        return "late" if status == "lost" else "new"

    def deliver(self, cursor: int, now: float) -> str:
        arrival = self.classify(cursor)
        if arrival == "new" or (arrival == "late" and cursor <= self.low_water):
            self.extend(cursor, now)
            self.status[cursor] = "delivered"
            self.advance()
        return arrival

    def lose(self, first: int, last: int, now: float) -> set[int]:
        news = set()
        for cursor in range(first, last + 1):
            status = self.status.get(cursor)
            if status == "skipped" or (cursor > self.low_water and status is None):
                self.status[cursor] = "lost"
                news.add(cursor)
        if last > self.low_water:
            self.extend(last, now)
        self.advance()
        return news

    def skip(self, now: float) -> int:
        skipped = 0
        while True:
            cursor = self.low_water + 1
            if cursor > self.highest or self.since[cursor] > now - GRACE:
                return skipped
            self.status[cursor] = "skipped"
            skipped += 1
            self.advance()

    def advance(self) -> None:
        while self.low_water + 1 in self.status:
            self.low_water += 1

    def oldest_hole(self) -> float | None:
        return self.since[self.low_water + 1] if self.low_water < self.highest else None


operations = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(1, 40)),
        st.tuples(st.just("lose"), st.integers(1, 40), st.integers(0, 6)),
        st.tuples(st.just("extend"), st.integers(0, 45)),
        st.tuples(st.just("time"), st.sampled_from([0.5, 3.0, 7.0, 12.0])),
        st.tuples(st.just("skip")),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 5), operations)
def test_window_agrees_with_the_per_cursor_model(start: int, ops: list[tuple]) -> None:
    window, model, now = CursorWindow(start), Model(start), 0.0
    for op in ops:
        previous = window.low_water
        if op[0] == "deliver":
            assert window.classify(op[1]) == model.classify(op[1])
            assert window.deliver(op[1], now) == model.deliver(op[1], now)
        elif op[0] == "lose":
            first, last = op[1], op[1] + op[2]
            ranges = window.lose(first, last, now)
            lost = {c for lo, hi in ranges for c in range(lo, hi + 1)}
            assert sum(hi - lo + 1 for lo, hi in ranges) == len(lost)  # no overlaps
            assert lost == model.lose(first, last, now)
        elif op[0] == "extend":
            window.extend(op[1], now)
            model.extend(op[1], now)
        elif op[0] == "time":
            now += op[1]
        else:
            assert window.skip_holes(now, GRACE) == model.skip(now)
        assert window.low_water == model.low_water >= previous
        assert window.highest == model.highest
        assert window.oldest_hole() == model.oldest_hole()


def test_seven_before_six_holds_the_mark_until_six_arrives() -> None:
    window = CursorWindow(5)
    assert window.deliver(7, now=1.0) == "new"
    assert window.low_water == 5 and window.oldest_hole() == 1.0
    assert window.skip_holes(now=100.0, grace=120.0) == 0
    assert window.deliver(6, now=2.0) == "new"
    assert window.low_water == 7 and window.oldest_hole() is None
    assert window.deliver(6, now=3.0) == window.deliver(7, now=3.0) == "duplicate"


def test_a_hole_is_skipped_after_the_grace_and_still_delivered_if_it_comes() -> None:
    window = CursorWindow(5)
    window.deliver(7, now=0.0)
    assert window.skip_holes(now=119.9, grace=120.0) == 0
    assert window.skip_holes(now=120.0, grace=120.0) == 1
    assert window.low_water == 7
    assert window.classify(6) == "late"
    assert window.deliver(6, now=121.0) == "late"
    assert window.classify(6) == "duplicate"  # once


def test_a_gap_is_reported_only_for_what_was_not_delivered_and_only_once() -> None:
    window = CursorWindow(0)
    for cursor in (1, 3, 4):
        window.deliver(cursor, now=0.0)
    assert window.lose(1, 6, now=0.0) == [(2, 2), (5, 6)]
    assert window.low_water == 6
    assert window.lose(1, 6, now=0.0) == []
    assert window.lose(5, 8, now=0.0) == [(7, 8)]


def test_a_gap_over_a_skipped_hole_reports_it_lost_after_all() -> None:
    window = CursorWindow(0)
    window.deliver(2, now=0.0)
    window.skip_holes(now=200.0, grace=120.0)  # cursor 1 skipped, not lost
    assert window.low_water == 2
    assert window.lose(1, 1, now=200.0) == [(1, 1)]
    assert window.classify(1) == "duplicate"


def test_a_huge_range_costs_one_step_not_one_entry_per_cursor() -> None:
    window = CursorWindow(0)
    window.extend(10**12, now=0.0)
    assert window.skip_holes(now=10.0, grace=5.0) == 10**12
    assert window.low_water == 10**12
    assert window.lose(10, 10**9, now=10.0) == [(10, 10**9)]  # skipped, then reported


# --------------------------------------------------------------------------- reconnects


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5), operations, st.sampled_from([0.0, 12.0, 30.0]))
def test_a_carried_window_keeps_only_the_ages_of_cursors_still_missing(
    start: int, ops: list[tuple], later: float
) -> None:
    """The next connection's window: whatever happened on this one, the cursors it
    starts with as holes are exactly the lowest run missing here (never one delivered
    or reported lost, which come again), each with the age it had."""
    window, model, now = CursorWindow(start), Model(start), 0.0
    for op in ops:  # the same moves as above, without the checks made there
        if op[0] == "deliver":
            window.deliver(op[1], now)
            model.deliver(op[1], now)
        elif op[0] == "lose":
            window.lose(op[1], op[1] + op[2], now)
            model.lose(op[1], op[1] + op[2], now)
        elif op[0] == "extend":
            window.extend(op[1], now)
            model.extend(op[1], now)
        elif op[0] == "time":
            now += op[1]
        else:
            window.skip_holes(now, GRACE)
            model.skip(now)
    carried = window.carried(window.low_water)
    assert (carried.low_water, carried.oldest_hole()) == (window.low_water, window.oldest_hole())
    run = range(window.low_water + 1, carried.highest + 1)
    assert all(model.status.get(c) is None for c in run)  # missing here, every one
    assert carried.highest == window.highest or carried.highest + 1 in model.status
    for cursor in run:
        assert carried._since(cursor) == model.since[cursor]
    # what the old window skipped is still delivered if it turns up on the new connection
    skipped = [c for c, status in model.status.items() if status == "skipped"]
    assert all(carried.classify(c) == "late" for c in skipped)
    # and the new window skips of the run what is old enough, a prefix (ages ascend)
    cutoff = now + later - GRACE
    old_enough = [c for c in run if model.since[c] <= cutoff]
    assert old_enough == list(run[: len(old_enough)])
    assert carried.skip_holes(now + later, GRACE) == len(old_enough)
    assert carried.low_water == window.low_water + len(old_enough)


def test_a_hole_outliving_connections_shorter_than_the_grace_is_still_skipped() -> None:
    """Connections of 3 s (a gateway's maximum age), cursor 6 never written: each new
    window carries the hole's age, so it is skipped at 120 s, not never."""
    window = CursorWindow(5)
    window.deliver(7, now=0.0)
    now = 0.0
    while window.low_water == 5:
        assert now < 120.0
        now += 3.0
        window = window.carried(5)  # the next connection resumes after 5
        window.deliver(7, now)  # the resume brings 7 again
        window.skip_holes(now, grace=120.0)
    assert (now, window.low_water) == (120.0, 7)
    assert window.classify(6) == "late"


def test_nothing_is_carried_when_the_sink_stored_less_than_the_window_had() -> None:
    """Cursors delivered but not yet written come again: they must not look old."""
    window = CursorWindow(5)
    window.deliver(6, now=0.0)
    window.deliver(8, now=0.0)  # 7 a hole since 0
    carried = window.carried(5)  # the sink stored 5 only: 6 comes again
    assert (carried.low_water, carried.highest, carried.oldest_hole()) == (5, 5, None)
    carried.deliver(8, now=200.0)  # on the new connection, 6 and 7 are holes from now
    assert carried.skip_holes(now=200.0, grace=120.0) == 0


def test_cursors_delivered_above_the_hole_start_fresh_in_the_next_window() -> None:
    window = CursorWindow(5)
    window.deliver(7, now=0.0)
    window.deliver(9, now=0.0)  # 6 and 8 missing since 0
    carried = window.carried(5)
    assert (carried.highest, carried.oldest_hole()) == (6, 0.0)  # 6 only, with its age
    assert carried.skip_holes(now=120.0, grace=120.0) == 1
    assert carried.low_water == 6  # not past 7, which the resume has not brought again
    carried.deliver(9, now=121.0)
    assert carried.skip_holes(now=200.0, grace=120.0) == 0  # 7 and 8: missing since 121
