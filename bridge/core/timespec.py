"""Time arguments of ``bridge replay`` and ``bridge archive``: one parser, no clock inside.

Accepted forms (case-insensitive words):

* ISO 8601: ``2024-05-01``, ``2024-05-01T12:00``, ``2024-05-01T12:00:00.250Z``,
  ``2024-05-01T14:00+02:00``. A time without an offset is UTC (archives are UTC; a
  laptop's zone would make the same command select other events elsewhere).
* relative to now: ``-2h``, ``-30m``, ``-1d``, ``-45s``, ``-1w``, combined ``-1h30m``;
* ``now``; ``today`` (00:00 UTC of this day); ``yesterday`` (00:00 UTC of the previous
  UTC calendar day), so ``--start yesterday --end today`` is exactly yesterday.

Results are aware UTC datetimes rounded *up* to whole milliseconds, the archive's
resolution: an archived time ``t`` (whole milliseconds) satisfies ``t >= start`` exactly
when it satisfies ``t >= ceil(start)``, and likewise for the exclusive ``end``, so
rounding never moves an event in or out of a range.

The clock is passed in (``now``), as everywhere in ``bridge.core``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridge.core.errors import ValidationError

_RELATIVE = re.compile(r"^-((?:\d+[wdhms])+)$")
_PART = re.compile(r"(\d+)([wdhms])")
_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_MAX_SECONDS = 10_000 * 365 * 86_400  # beyond any archive; keeps timedelta in range
FORMS = "ISO 8601 (UTC unless an offset is given), -2h, -30m, -1d, now, today or yesterday"


def ceil_ms(when: datetime) -> datetime:
    """``when`` rounded up to a whole millisecond (aware UTC in, aware UTC out)."""
    extra = when.microsecond % 1000
    if not extra:
        return when
    return when + timedelta(microseconds=1000 - extra)


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_time(option: str, text: str, now: datetime) -> datetime:
    """The instant ``text`` names, relative forms counted back from ``now``.

    Raises :class:`ValidationError` naming ``option`` and the accepted forms.
    """
    word = text.strip().lower()
    now = _utc(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if word == "now":
        return ceil_ms(now)
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - timedelta(days=1)
    relative = _RELATIVE.match(word)
    if relative:
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(relative.group(1)))
        if seconds > _MAX_SECONDS:
            raise ValidationError(f"{option}: {text!r} reaches back too far")
        return ceil_ms(now - timedelta(seconds=seconds))
    iso = text.strip()
    if iso.endswith(("Z", "z")):
        iso = iso[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise ValidationError(f"{option}: {text!r} is not a time; use {FORMS}") from None
    try:
        return ceil_ms(_utc(parsed))
    except OverflowError:  # 9999-12-31T23:59:59.9999 cannot round up
        raise ValidationError(f"{option}: {text!r} is out of range") from None


@dataclass(frozen=True)
class TimeRange:
    """``[start, end)``; None on a side means open (the archive's first or last event)."""

    start: datetime | None = None
    end: datetime | None = None

    def contains(self, when: datetime) -> bool:
        when = _utc(when)
        return (self.start is None or when >= self.start) and (self.end is None or when < self.end)


def parse_range(start: str | None, end: str | None, now: datetime) -> TimeRange:
    """``--start`` / ``--end`` as a range; a range that holds no instant is refused."""
    first = parse_time("--start", start, now) if start is not None else None
    last = parse_time("--end", end, now) if end is not None else None
    if first is not None and last is not None and first >= last:
        raise ValidationError(
            f"bad range: --start {start} ({_show(first)}) is not before "
            f"--end {end} ({_show(last)}; --end is exclusive)"
        )
    return TimeRange(first, last)


def _show(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
