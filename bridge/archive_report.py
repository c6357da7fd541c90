"""``bridge archive``: what an archive holds, so a replay's range can be chosen by looking.

* a SQLite archive (``bridge offline``'s ``./db``, a bridge client's ``./bridge.db``):
  events per log and type, the first and last time, and a histogram per hour or per
  day, computed by SQLite over the read-only file (grouping, not loading);
* an EventBridge archive (AWS, or `bridge offline`'s endpoint): what DescribeArchive
  tells. AWS updates ``EventCount`` and ``SizeBytes`` lazily — they reconcile over
  24 hours, and new events reach an archive minutes late — which the report says.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bridge import archive_pages
from bridge.archive import from_iso, size_bytes
from bridge.core.errors import BridgeError
from bridge.core.names import ARCHIVE_NAME

BUCKET_CHARS = {"hour": 13, "day": 10}  # createdAt prefix: 2024-05-01T12 / 2024-05-01
MAX_FILLED = 400  # empty buckets shown between first and last up to this many rows
BAR_WIDTH = 40
RECONCILE_NOTE = (
    "AWS updates EventCount and SizeBytes lazily: they reconcile over 24 hours, and new "
    "events reach an archive minutes late"
)


def choose_bucket(first: str | None, last: str | None, by: str) -> str:
    """``hour`` or ``day``; ``auto`` takes hours for up to three days of events."""
    if by != "auto":
        return by
    if first is None or last is None:
        return "hour"
    return "hour" if from_iso(last) - from_iso(first) <= timedelta(days=3) else "day"


def sqlite_report(db: Path, by: str = "auto") -> dict[str, Any]:
    """The report of a SQLite archive as one JSON-able dict."""
    with archive_pages.open_archive(db) as conn:
        total, first, last = conn.execute(
            "SELECT COUNT(*), MIN(createdAt), MAX(createdAt) FROM events"
        ).fetchone()
        logs = [
            {"log": log, "type": type_, "events": n, "first": lo, "last": hi}
            for log, type_, n, lo, hi in conn.execute(
                "SELECT log, type, COUNT(*), MIN(createdAt), MAX(createdAt) FROM events "
                "GROUP BY log, type ORDER BY log IS NULL, log, type"
            )
        ]
        bucket = choose_bucket(first, last, by)
        width = BUCKET_CHARS[bucket]
        counts = dict(
            conn.execute(
                f"SELECT substr(createdAt, 1, {width}), COUNT(*) FROM events GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
    return {
        "db": str(db),
        "events": int(total),
        "size_bytes": size_bytes(db),
        "first": first,
        "last": last,
        "logs": logs,
        "histogram": {"by": bucket, "buckets": _buckets(counts, bucket)},
    }


def _buckets(counts: dict[str, int], bucket: str) -> list[dict[str, Any]]:
    """Every bucket from the first to the last, empty ones included (up to
    :data:`MAX_FILLED`; beyond, only those that hold events)."""
    if not counts:
        return []
    keys = sorted(counts)
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    form = "%Y-%m-%dT%H" if bucket == "hour" else "%Y-%m-%d"
    start, end = datetime.strptime(keys[0], form), datetime.strptime(keys[-1], form)
    if (end - start) / step + 1 > MAX_FILLED:
        filled = keys
    else:
        filled = []
        at = start
        while at <= end:
            filled.append(at.strftime(form))
            at += step
    suffix = ":00Z" if bucket == "hour" else ""
    return [{"start": key + suffix, "events": counts.get(key, 0)} for key in filled]


def render_sqlite(report: dict[str, Any]) -> list[str]:
    """The report for a terminal: a table of logs and types, then the histogram."""
    if not report["events"]:
        return [f"{report['db']}: an archive with no events yet"]
    lines = [
        f"{report['db']}: {report['events']:,} events, {report['size_bytes']:,} bytes, "
        f"{report['first']} … {report['last']}",
        "",
    ]
    rows = [
        (
            row["log"] or "(not a log event)",
            row["type"] or "-",
            f"{row['events']:,}",
            row["first"],
            row["last"],
        )
        for row in report["logs"]
    ]
    header = ("log", "type", "events", "first", "last")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (str(cell).ljust(w) for cell, w in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    histogram = report["histogram"]
    buckets = histogram["buckets"]
    lines += ["", f"events per {histogram['by']} (UTC):"]
    peak = max((b["events"] for b in buckets), default=0) or 1
    label = max((len(b["start"]) for b in buckets), default=0)
    count_width = max((len(f"{b['events']:,}") for b in buckets), default=1)
    for b in buckets:
        n = b["events"]
        bar = "█" * round(n / peak * BAR_WIDTH) if n else ""
        if n and not bar:
            bar = "▏"  # a bucket with events never looks empty
        lines.append(f"  {b['start'].ljust(label)}  {f'{n:,}'.rjust(count_width)}  {bar}")
    return lines


def eventbridge_report(client: Any, name: str = ARCHIVE_NAME) -> dict[str, Any]:
    """DescribeArchive of ``name``, times as ISO text, and the reconciliation note."""
    try:
        answer = client.describe_archive(ArchiveName=name)
    except client.exceptions.ResourceNotFoundException:
        raise BridgeError(
            f"no archive {name} at {client.meta.endpoint_url}: is the stage deployed "
            "(`bridge deploy`), or `bridge offline` running there?"
        ) from None
    keys = (
        "ArchiveName",
        "ArchiveArn",
        "EventSourceArn",
        "State",
        "StateReason",
        "EventCount",
        "SizeBytes",
        "RetentionDays",
        "CreationTime",
        "Description",
    )
    report = {key: answer[key] for key in keys if key in answer}
    if isinstance(report.get("CreationTime"), datetime):
        report["CreationTime"] = report["CreationTime"].isoformat()
    report["note"] = RECONCILE_NOTE
    return report


def render_eventbridge(report: dict[str, Any]) -> list[str]:
    retention = report.get("RetentionDays")
    kept = "indefinitely" if not retention else f"{retention} days"
    lines = [
        f"{report.get('ArchiveName')}: {report.get('State')}"
        + (f" ({report['StateReason']})" if report.get("StateReason") else ""),
        f"  events   {report.get('EventCount', 0):,}",
        f"  size     {report.get('SizeBytes', 0):,} bytes",
        f"  kept     {kept}",
        f"  source   {report.get('EventSourceArn', '')}",
        f"  created  {report.get('CreationTime', '')}",
        f"note: {RECONCILE_NOTE}.",
    ]
    return lines
