"""``bridge replay --from sqlite``: archived events, streamed in time order, into a target.

The order of work is what makes a replay dependable:

1. the archive opens read-only (a missing file is one line); every ``--log`` and
   ``--type`` must occur in it (a typo is an error, not an empty replay);
2. a ``COUNT`` of the range gives the progress line its total; an empty range says so
   and ends there, successfully;
3. the target is checked (table exists, endpoint reachable) before anything is sent;
4. pages of :data:`bridge.archive_pages.PAGE_SIZE` rows, read by key, go through the
   pattern, the pacer and the target; memory holds one page and one target batch.

``--dry-run`` does 1 and 2 and reads the range to count what the pattern keeps,
by log and type, and sends nothing.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge import archive_pages
from bridge.archive import from_iso
from bridge.core.errors import BridgeError, ValidationError
from bridge.core.pacing import Pacer
from bridge.core.replay_filter import ReplayFilter
from bridge.replay_targets import ReplayTarget

Progress = Callable[[int], None]  # called with how many more rows were read


def replay_name(now: datetime | None = None) -> str:
    """A fresh replay name (EventBridge's charset, unique per run)."""
    when = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    return f"sqlite-{when}-{uuid.uuid4().hex[:6]}"


@dataclass
class ReplaySummary:
    source: str
    target: str
    where: str
    selection: dict[str, Any]
    total: int = 0  # rows the range, logs and types select (COUNT)
    read: int = 0  # rows read
    matched: int = 0  # rows the pattern kept (all without one)
    sent: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    by_log_type: dict[str, int] = field(default_factory=dict)  # dry run only
    first: str | None = None
    last: str | None = None
    seconds: float = 0.0
    dry_run: bool = False
    replay_name: str | None = None

    @property
    def empty(self) -> bool:
        return self.total == 0

    def to_json(self) -> dict[str, Any]:
        rate = self.read / self.seconds if self.seconds > 0 else None
        return {
            "from": "sqlite",
            "db": self.source,
            "to": self.target,
            "where": self.where,
            "replay_name": self.replay_name,
            "filter": self.selection,
            "dry_run": self.dry_run,
            "empty": self.empty,
            "total": self.total,
            "read": self.read,
            "matched": self.matched,
            "sent": self.sent,
            "skipped": self.skipped,
            "by_log_type": self.by_log_type,
            "first": self.first,
            "last": self.last,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(rate, 1) if rate is not None else None,
        }


def check_selection(conn: sqlite3.Connection, selection: ReplayFilter) -> None:
    """Every asked-for log and type occurs in the archive, or one line naming it."""
    for column, values in (("log", selection.logs), ("type", selection.types)):
        missing = archive_pages.unknown(conn, column, values)
        if missing:
            known = archive_pages.present(conn, column)
            shown = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
            raise ValidationError(
                f"unknown {column} {missing[0]!r}: the archive holds "
                + (f"the {column}s {shown}" if known else f"no {column}s at all")
            )


def run_replay(
    db: Path,
    selection: ReplayFilter,
    target: ReplayTarget,
    *,
    speed: float = 0.0,
    dry_run: bool = False,
    replay: str | None = None,
    on_total: Callable[[int], None] = lambda total: None,
    progress: Progress = lambda n: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    page_size: int = archive_pages.PAGE_SIZE,
) -> ReplaySummary:
    """Replay the selected rows of ``db`` into ``target``; see the module's docstring."""
    summary = ReplaySummary(
        source=str(db),
        target=target.name,
        where=target.where(),
        selection=selection.describe(),
        dry_run=dry_run,
        replay_name=replay,
    )
    with archive_pages.open_archive(db) as conn:
        check_selection(conn, selection)
        summary.total = archive_pages.count(conn, selection)
        if summary.total == 0:
            return summary  # said so, successfully, whatever the target
        if not dry_run:
            target.check()
        summary.first, summary.last = archive_pages.bounds(conn, selection)
        on_total(summary.total)
        began = clock()
        try:
            if dry_run:
                _count(conn, selection, summary, progress, page_size)
            else:
                pacer = Pacer(speed)
                _send(conn, selection, target, summary, pacer, progress, clock, sleep, page_size)
        except KeyboardInterrupt:
            target.close()  # what is in flight lands (a second Ctrl-C abandons it)
            _settle(summary, target, clock() - began)
            raise ReplayInterrupted(summary) from None
        finally:
            target.close()
        _settle(summary, target, clock() - began)
    return summary


def _settle(summary: ReplaySummary, target: ReplayTarget, seconds: float) -> None:
    summary.seconds = seconds
    summary.sent = target.result.sent
    summary.skipped = {**summary.skipped, **target.result.skipped}


class ReplayInterrupted(BridgeError):
    """Ctrl-C during a replay: what was sent stays sent; the summary says how far it got."""

    exit_code = 130

    def __init__(self, summary: ReplaySummary) -> None:
        self.summary = summary
        super().__init__(
            f"interrupted: {summary.sent} of {summary.total} events sent to {summary.where} "
            f"(read up to {summary.read}); what was sent stays there"
        )


def _send(
    conn: sqlite3.Connection,
    selection: ReplayFilter,
    target: ReplayTarget,
    summary: ReplaySummary,
    pacer: Pacer,
    progress: Progress,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    page_size: int,
) -> None:
    pattern_skips = 0
    for page in archive_pages.pages(conn, selection, page_size):
        reported = 0  # rows of this page the progress line has been told of
        for done, row in enumerate(page):
            if not selection.matches(row.event):
                pattern_skips += 1
                continue
            if pacer.speed > 0:
                wait = pacer.delay(from_iso(row.created_at), clock())
                if wait > 0:
                    target.flush()  # what is due goes now, not after the wait
                    progress(done - reported)  # a paced page can take hours: tell as it goes
                    reported = done
                    wait = pacer.delay(from_iso(row.created_at), clock())
                    if wait > 0:
                        sleep(wait)
            target.add(row)
            summary.matched += 1
        summary.read += len(page)
        progress(len(page) - reported)
    target.flush()
    if pattern_skips:
        summary.skipped["not matching --pattern"] = pattern_skips


def _count(
    conn: sqlite3.Connection,
    selection: ReplayFilter,
    summary: ReplaySummary,
    progress: Progress,
    page_size: int,
) -> None:
    """The dry run: what the pattern keeps, by log and type, nothing sent."""
    kept: Counter[str] = Counter()
    for page in archive_pages.pages(conn, selection, page_size):
        for row in page:
            if selection.matches(row.event):
                detail = row.event.get("detail")
                log = detail.get("log") if isinstance(detail, dict) else None
                type_ = detail.get("type") if isinstance(detail, dict) else None
                kept[f"{log or '(not a log event)'}/{type_ or row.event.get('detail-type')}"] += 1
        summary.read += len(page)
        progress(len(page))
    summary.matched = sum(kept.values())
    summary.by_log_type = dict(sorted(kept.items()))
    if summary.read > summary.matched:
        summary.skipped["not matching --pattern"] = summary.read - summary.matched


def check_out(target: str, out: Path | None) -> None:
    """``--out`` belongs to ``--to sqlite`` and only to it."""
    if target == "sqlite" and out is None:
        raise ValidationError("--to sqlite needs --out FILE (the archive file to copy into)")
    if target != "sqlite" and out is not None:
        raise ValidationError(f"--out is for --to sqlite; --to {target} writes no file")


def summary_lines(summary: ReplaySummary) -> list[str]:
    """The summary for a person."""
    where = summary.where
    if summary.empty:
        return [f"no events in {_range_text(summary)} of {summary.source}: nothing to replay"]
    span = f"{summary.first} … {summary.last}"
    if summary.dry_run:
        lines = [
            f"dry run: would send {summary.matched} of {summary.total} events ({span}) "
            f"from {summary.source} to {where}; nothing was sent"
        ]
        lines += [f"  {key}: {n}" for key, n in summary.by_log_type.items()]
        return lines
    rate = summary.read / summary.seconds if summary.seconds > 0 else 0.0
    lines = [
        f"replayed {summary.sent} events ({span}) from {summary.source} to {where} "
        f"in {summary.seconds:.2f} s ({rate:,.0f} events/s)"
    ]
    lines += [f"  skipped {n}: {reason}" for reason, n in summary.skipped.items()]
    return lines


def _range_text(summary: ReplaySummary) -> str:
    start, end = summary.selection["start"], summary.selection["end"]
    text = f"[{start or 'the first event'}, {end or 'the last event'}"
    text += ")" if end else "]"
    extra = [f"{name} {', '.join(summary.selection[name])}" for name in ("logs", "types")]
    extra = [e for e in extra if not e.endswith(" ")]
    return " ".join([text, *extra]) if extra else text


def refuse_remote(what: str, url: str | None, is_local: bool) -> None:
    """Replays into AWS go through `--from archive` (a later command), never here."""
    if not is_local:
        raise BridgeError(
            f"--to {what} writes to a local endpoint only ({url or 'AWS'} is not on this "
            "machine); an AWS archive is replayed in AWS with StartReplay"
        )
