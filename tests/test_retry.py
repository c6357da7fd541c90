"""Attempts and back-off on their own: the arithmetic the publisher and the poller share."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.retry import Retry, RetryPolicy


def test_delays_double_from_the_base_up_to_the_cap() -> None:
    # The publisher's defaults: 0.1 s, doubling, at most 2 s.
    policy = RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=2.0)
    assert [policy.delay(retry) for retry in range(7)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    )


def test_a_huge_retry_number_is_the_cap_not_an_overflow() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=5.0, max_delay=30.0)
    assert policy.delay(10_000) == 30.0
    assert RetryPolicy(3, 0.0, 30.0).delay(10_000) == 0.0


def test_after_each_failure_the_attempt_is_counted_until_the_limit() -> None:
    # The poller's defaults: 1 s, doubling, at most 30 s; here three attempts.
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=30.0)
    assert policy.after_failure(0) == Retry(attempts=1, give_up=False, delay=1.0)
    assert policy.after_failure(1) == Retry(attempts=2, give_up=False, delay=2.0)
    assert policy.after_failure(2) == Retry(attempts=3, give_up=True, delay=0.0)
    # A count already past the limit (the limit was lowered while stopping) gives up.
    assert policy.after_failure(7).give_up


def test_one_attempt_means_no_retry() -> None:
    policy = RetryPolicy(max_attempts=1, base_delay=1.0, max_delay=30.0)
    assert policy.exhausted(1) and not policy.exhausted(0)
    assert policy.after_failure(0) == Retry(attempts=1, give_up=True, delay=0.0)


def test_the_poller_back_off_reaches_its_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=1.0, max_delay=30.0)
    delays = []
    attempts = 0
    while not (step := policy.after_failure(attempts)).give_up:
        delays.append(step.delay)
        attempts = step.attempts
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert step.attempts == 10


@pytest.mark.parametrize(
    ("attempts", "base", "cap", "message"),
    [
        (0, 1.0, 2.0, "max_attempts must be >= 1"),
        (1, -1.0, 2.0, "delays must not be negative"),
        (1, 1.0, -2.0, "delays must not be negative"),
    ],
)
def test_a_policy_that_cannot_work_is_refused(
    attempts: int, base: float, cap: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(attempts, base, cap)


def test_negative_counts_are_the_callers_bug() -> None:
    policy = RetryPolicy(3, 1.0, 2.0)
    with pytest.raises(ValueError, match="retry must be >= 0"):
        policy.delay(-1)
    with pytest.raises(ValueError, match="attempts must be >= 0"):
        policy.after_failure(-1)


POLICIES = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 200),
    base_delay=st.floats(0, 1e6, allow_nan=False),
    max_delay=st.floats(0, 1e6, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(policy=POLICIES)
def test_any_policy_tries_exactly_max_attempts_times_with_growing_capped_waits(
    policy: RetryPolicy,
) -> None:
    waits: list[float] = []
    attempts = 0
    while True:
        step = policy.after_failure(attempts)
        assert step.attempts == attempts + 1
        attempts = step.attempts
        if step.give_up:
            assert step.delay == 0.0
            break
        waits.append(step.delay)
    assert attempts == policy.max_attempts
    assert len(waits) == policy.max_attempts - 1
    assert all(0 <= wait <= policy.max_delay for wait in waits)
    assert waits == sorted(waits)  # never shorter than the wait before
    if waits:
        assert waits[0] == min(policy.base_delay, policy.max_delay)
