"""Reading an ``events`` archive for a replay or a report: read-only, keyset-paged.

:func:`bridge.archive.read_page` pages by ``(createdAt, seq)`` too, but takes one log
and one type and opens a connection per page (made for async callers). A replay
filters on several logs and types and runs in one thread, so it holds one read-only
connection and walks the same key: each page is ``(createdAt, seq) > last`` in index
order (``events_createdAt`` holds ``seq`` as its rowid), never ``OFFSET``, so page
*n* costs what page 1 costs and memory holds one page whatever the archive's size.

The connection is opened ``mode=ro``: a replay or a report never creates, migrates or
locks the archive, and may run while ``bridge offline`` or a bridge client writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.archive import BUSY_TIMEOUT_MS, PathLike, to_iso
from bridge.core.errors import BridgeError
from bridge.core.replay_filter import ReplayFilter
from bridge.core.timespec import TimeRange

PAGE_SIZE = 1000


@dataclass(frozen=True)
class Row:
    """One archived event: its key in the archive, its time and the event."""

    seq: int
    created_at: str
    event: dict[str, Any]


@contextlib.contextmanager
def open_archive(path: PathLike) -> Iterator[sqlite3.Connection]:
    """A read-only connection to an archive; a missing file or one that holds no
    ``events`` table is one clear :class:`BridgeError`."""
    where = os.fspath(path)
    if not Path(where).is_file():
        raise BridgeError(f"no archive at {where}: nothing was archived there yet")
    uri = f"{Path(where).resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as error:
        raise BridgeError(f"cannot open the archive {where}: {error}") from None
    try:
        try:
            conn.execute("SELECT seq, createdAt, log, type, event FROM events LIMIT 0")
        except sqlite3.DatabaseError as error:
            raise BridgeError(f"{where} is not an events archive: {error}") from None
        yield conn
    finally:
        conn.close()


def where_of(selection: ReplayFilter) -> tuple[str, list[Any]]:
    """The SQL condition (and its parameters) of the range, logs and types."""
    clauses: list[str] = []
    params: list[Any] = []
    if selection.range.start is not None:
        clauses.append("createdAt >= ?")
        params.append(to_iso(selection.range.start))
    if selection.range.end is not None:
        clauses.append("createdAt < ?")
        params.append(to_iso(selection.range.end))
    for column, values in (("log", selection.logs), ("type", selection.types)):
        if values:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
    return " AND ".join(clauses) or "1", params


def count(conn: sqlite3.Connection, selection: ReplayFilter) -> int:
    """How many rows the range, logs and types select (the pattern is not SQL's)."""
    sql, params = where_of(selection)
    return int(conn.execute(f"SELECT COUNT(*) FROM events WHERE {sql}", params).fetchone()[0])


def unknown(conn: sqlite3.Connection, column: str, values: tuple[str, ...]) -> list[str]:
    """Which of ``values`` no row of the archive has in ``column`` (log or type)."""
    assert column in ("log", "type")
    query = f"SELECT 1 FROM events WHERE {column} = ? LIMIT 1"
    return [value for value in values if conn.execute(query, (value,)).fetchone() is None]


def present(conn: sqlite3.Connection, column: str) -> list[str]:
    """The distinct values of ``column`` (for the message that names an unknown one)."""
    assert column in ("log", "type")
    query = f"SELECT DISTINCT {column} FROM events WHERE {column} IS NOT NULL ORDER BY 1"
    return [value for (value,) in conn.execute(query)]


def pages(
    conn: sqlite3.Connection, selection: ReplayFilter, page_size: int = PAGE_SIZE
) -> Iterator[list[Row]]:
    """The selected rows in ``(createdAt, seq)`` order, one page at a time."""
    sql, params = where_of(selection)
    first = f"SELECT seq, createdAt, event FROM events WHERE {sql} ORDER BY createdAt, seq LIMIT ?"
    after = (
        f"SELECT seq, createdAt, event FROM events WHERE {sql} AND (createdAt, seq) > (?, ?) "
        "ORDER BY createdAt, seq LIMIT ?"
    )
    rows = conn.execute(first, [*params, page_size]).fetchall()
    while rows:
        yield [Row(seq, created, json.loads(text)) for seq, created, text in rows]
        if len(rows) < page_size:
            return
        last_seq, last_created, _ = rows[-1]
        rows = conn.execute(after, [*params, last_created, last_seq, page_size]).fetchall()


def bounds(conn: sqlite3.Connection, selection: ReplayFilter) -> tuple[str | None, str | None]:
    """First and last ``createdAt`` the range, logs and types select."""
    sql, params = where_of(selection)
    first, last = conn.execute(
        f"SELECT MIN(createdAt), MAX(createdAt) FROM events WHERE {sql}", params
    ).fetchone()
    return first, last


def everything() -> ReplayFilter:
    return ReplayFilter(TimeRange())
