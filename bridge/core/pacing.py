"""Replay pacing (``--speed``): when each event is due, as a pure function of its time.

``speed`` 0 sends as fast as possible; 1 keeps the original gaps; 10 makes them ten
times shorter. Gaps are measured from the first event replayed, never between
neighbours, so rounding and the time a send takes do not add up over a long replay:
event ``i`` is due ``(time_i - time_0) / speed`` after the replay began. Order is the
caller's (time order); an event that is late is sent at once, never reordered.

The clock is the caller's: :meth:`Pacer.delay` takes "now" as a monotonic reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bridge.core.errors import ValidationError

MAX_SPEED = 1_000_000.0


def check_speed(option: str, speed: float) -> float:
    if not 0 <= speed <= MAX_SPEED or speed != speed:  # NaN is not in range either
        raise ValidationError(
            f"{option}: {speed} is not a speed (0 = as fast as possible, 1 = real time)"
        )
    return float(speed)


@dataclass
class Pacer:
    """Due times of events replayed at ``speed``, from the first event's time on."""

    speed: float
    _first: datetime | None = field(default=None, init=False)
    _began: float = field(default=0.0, init=False)

    def delay(self, when: datetime, now: float) -> float:
        """Seconds to wait before sending an event of time ``when`` (0: send now).

        The first call anchors the replay: its event is due at once, at ``now``."""
        if self.speed <= 0:
            return 0.0
        if self._first is None:
            self._first, self._began = when, now
            return 0.0
        due = self._began + (when - self._first).total_seconds() / self.speed
        return max(0.0, due - now)
