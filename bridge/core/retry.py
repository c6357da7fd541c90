"""How often failing work is tried, and how long to wait between tries.

The publisher re-sends rejected PutEvents entries and the local cloud's stream
poller re-invokes the publisher with a failed batch; both back off exponentially
(``base, 2*base, 4*base ...`` up to a cap) and both stop after a number of
attempts. The arithmetic lives here, once, without a clock: callers sleep or
schedule with the delays it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

# 2.0 ** 1023 is the largest power of two a float holds: beyond it the exponent only
# overflows, and the cap has long been reached for any base worth waiting on.
_MAX_EXPONENT = 1023


@dataclass(frozen=True, slots=True)
class Retry:
    """What follows one failed attempt."""

    attempts: int  # failed attempts so far, the one just made included
    give_up: bool  # the limit is reached: set the work aside instead of trying again
    delay: float  # seconds before the next attempt (0.0 when giving up)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most ``max_attempts`` tries (the first included), ``base_delay`` seconds
    before the first re-try, doubling each time up to ``max_delay``."""

    max_attempts: int
    base_delay: float
    max_delay: float

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def delay(self, retry: int) -> float:
        """Seconds to wait before re-try number ``retry`` (0 is the first re-try)."""
        if retry < 0:
            raise ValueError(f"retry must be >= 0, got {retry}")
        # A float product overflows to inf (no exception), which min() then caps.
        return min(self.max_delay, self.base_delay * 2.0 ** min(retry, _MAX_EXPONENT))

    def exhausted(self, attempts: int) -> bool:
        """Whether ``attempts`` tries are all this policy allows."""
        return attempts >= self.max_attempts

    def after_failure(self, attempts: int) -> Retry:
        """The next step once an attempt failed, given the ``attempts`` that had
        failed before it: count it, then give up or wait before the next one."""
        if attempts < 0:
            raise ValueError(f"attempts must be >= 0, got {attempts}")
        failed = attempts + 1
        if self.exhausted(failed):
            return Retry(attempts=failed, give_up=True, delay=0.0)
        return Retry(attempts=failed, give_up=False, delay=self.delay(failed - 1))
