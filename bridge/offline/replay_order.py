"""The order in which an AWS-like local replay hands out its events (``--aws-like-replays``).

By default the local bus replays an archive in time order, all of it before the replay
says COMPLETED. EventBridge does not promise that much, and a replay client that leans
on it works offline and then loses events in AWS. What a client can notice of AWS's
behaviour, this reproduces:

* events come in **1-minute slices** of their original time, slice after slice;
* **shuffled within a slice**;
* **some arrive after** DescribeReplay says COMPLETED (kept back here, sent after it).

Pure logic: the bus feeds it archive rows in time order and dispatches what it returns.
"""

from __future__ import annotations

import random
from typing import Generic, TypeVar

__all__ = ["AwsLikeOrder"]

T = TypeVar("T")

#: The share of events kept back until after COMPLETED (at least one per replay).
LATE_SHARE = 0.05


class AwsLikeOrder(Generic[T]):
    """Feed ``(created_at, event)`` in time order; dispatch what :meth:`feed` and
    :meth:`finish` return, then :attr:`late` once the replay reports COMPLETED.

    ``created_at`` is the archive's canonical text (``2026-12-01T10:00:00.000Z``), so
    its first 16 characters name the minute.
    """

    def __init__(self, rng: random.Random | None = None, late_share: float = LATE_SHARE):
        self.rng = rng or random.Random()
        self.late_share = late_share
        self.late: list[T] = []
        self._minute: str | None = None
        self._slice: list[T] = []
        self._given = 0

    def feed(self, created_at: str, event: T) -> list[T]:
        """The events of the slice this one closes (shuffled), else nothing yet."""
        minute = created_at[:16]
        ready = self._close() if minute != self._minute else []
        self._minute = minute
        self._slice.append(event)
        return ready

    def finish(self) -> list[T]:
        """The last slice; after it, :attr:`late` holds at least one event (if any came)."""
        ready = self._close()
        if not self.late and ready:
            self.late.append(ready.pop())
        return ready

    def _close(self) -> list[T]:
        events, self._slice = self._slice, []
        self.rng.shuffle(events)
        ready: list[T] = []
        for event in events:
            (self.late if self.rng.random() < self.late_share else ready).append(event)
        return ready
