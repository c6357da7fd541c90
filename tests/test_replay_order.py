"""The AWS-like order of local replays: slices by minute, shuffled inside, some late."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from bridge.offline.replay_order import AwsLikeOrder

# Minutes 0..4 of one hour, each event once, in time order as the archive gives them.
minutes = st.lists(st.integers(0, 4), max_size=60).map(sorted)


def created(minute: int, n: int) -> str:
    return f"2026-12-01T10:{minute:02d}:{n % 60:02d}.000Z"


@given(minutes, st.integers(0, 2**32), st.sampled_from([0.0, 0.05, 0.5]))
def test_every_event_once_slices_in_order_and_some_late(
    times: list[int], seed: int, share: float
) -> None:
    order: AwsLikeOrder[tuple[int, int]] = AwsLikeOrder(random.Random(seed), share)
    sent: list[tuple[int, int]] = []
    for n, minute in enumerate(times):
        sent.extend(order.feed(created(minute, n), (minute, n)))
    sent.extend(order.finish())
    assert sorted(sent + order.late) == [(m, n) for n, m in enumerate(times)]
    assert [m for m, _ in sent] == sorted(m for m, _ in sent)  # slice after slice
    assert bool(order.late) == bool(times)  # some come after COMPLETED, whenever any came


def test_a_slice_is_shuffled_and_held_until_the_next_minute_begins() -> None:
    order: AwsLikeOrder[int] = AwsLikeOrder(random.Random(7), late_share=0.0)
    assert [order.feed(created(0, n), n) for n in range(50)] == [[]] * 50
    first = order.feed(created(1, 0), 50)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert order.finish() == [] and order.late == [50]
