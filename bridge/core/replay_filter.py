"""Which archived events a replay takes: time range, logs, types and an EventBridge pattern.

The range, logs and types become the archive query's ``WHERE`` (the caller's SQL);
the pattern is matched here, on the event itself, with the bus's own matcher, so
``--pattern`` selects exactly what a rule with that pattern would receive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.core.patterns import Pattern, validate_pattern
from bridge.core.timespec import TimeRange


@dataclass(frozen=True)
class ReplayFilter:
    """What to replay; empty ``logs``/``types`` mean every log / type."""

    range: TimeRange = TimeRange()
    logs: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    pattern: Pattern | None = None

    @classmethod
    def of(
        cls,
        range: TimeRange = TimeRange(),  # noqa: B008 - frozen dataclass, safe as a default
        logs: tuple[str, ...] = (),
        types: tuple[str, ...] = (),
        pattern: str | Mapping[str, Any] | None = None,
    ) -> ReplayFilter:
        """Validates the pattern (``PatternError`` names the field at fault)."""
        compiled = None
        if pattern is not None:
            text = pattern if isinstance(pattern, str) else dict(pattern)
            compiled = Pattern(validate_pattern(text))
        return cls(range, tuple(dict.fromkeys(logs)), tuple(dict.fromkeys(types)), compiled)

    def matches(self, event: Mapping[str, Any]) -> bool:
        """The part of the filter SQL cannot apply: the pattern (True without one)."""
        return self.pattern is None or self.pattern.matches(event)

    def describe(self) -> dict[str, Any]:
        """The filter as a summary shows it (times as ISO text, None for open ends)."""
        return {
            "start": _iso(self.range.start),
            "end": _iso(self.range.end),
            "logs": list(self.logs),
            "types": list(self.types),
            "pattern": self.pattern.source if self.pattern is not None else None,
        }


def _iso(when: Any) -> str | None:
    if when is None:
        return None
    return str(when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z")
