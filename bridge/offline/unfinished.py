"""Async invocations a broken run of `bridge offline` left unfinished, kept in ``./db``.

When the local cloud breaks (the embedded DynamoDB died, a task of offline did), the
runtime stops invoking at once (:meth:`bridge.offline.runtime.FunctionRuntime.halt`).
What it was running or about to run — events the bus had handed to subscribers, their
retries, onFailure records — is neither a handler's failure nor to be dropped: the
stream checkpoint does not bring it back (its events are archived and checkpointed
past), so it is written here, in the table ``unfinished_invocations`` of the local
database, and run again, in order, at the next start. The table then keeps them
until a run stops cleanly (they have all finished: the stop drained them) or breaks
again (it then holds what that run left unfinished, reruns included). So a handler
may see an event twice, as after any redelivery in AWS, and never misses one.

``kill -9`` of `bridge offline` itself leaves no such list (there is no moment to
write it): invocations running then are lost to their handlers, though not to the
archive.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from bridge.offline.runtime import Unfinished

TABLE = "unfinished_invocations"
SCHEMA = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    function TEXT NOT NULL,
    request_id TEXT NOT NULL,
    event TEXT NOT NULL,
    kept_at TEXT NOT NULL
)"""


def _connect(db: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db), timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")  # as everyone else who shares the file
    conn.execute(SCHEMA)
    return conn


def replace(db: str | Path, invocations: Iterable[Unfinished]) -> int:
    """Make the table hold exactly ``invocations`` (one transaction); how many."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rows = [(i.function, i.request_id, i.event, now) for i in invocations]
    with contextlib.closing(_connect(db)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"DELETE FROM {TABLE}")
        conn.executemany(
            f"INSERT INTO {TABLE} (function, request_id, event, kept_at) VALUES (?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
    return len(rows)


def load(db: str | Path) -> list[Unfinished]:
    """What the table holds, in the order it was kept (nothing if the file has no table)."""
    if not Path(db).exists():
        return []
    with contextlib.closing(_connect(db)) as conn:
        rows = conn.execute(f"SELECT function, request_id, event FROM {TABLE} ORDER BY seq")
        return [Unfinished(function, request_id, event) for function, request_id, event in rows]


def summary(invocations: Iterable[Unfinished]) -> str:
    """``users ×37, failures ×2``: how many of each function, for a log line."""
    counts: dict[str, int] = {}
    for invocation in invocations:
        counts[invocation.function] = counts.get(invocation.function, 0) + 1
    return ", ".join(f"{name} ×{n}" for name, n in counts.items())
