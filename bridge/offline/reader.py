"""Read the embedded DynamoDB's tables straight from a local database, without serving it.

`bridge offline --db FILE` keeps its tables as a snapshot in ``FILE`` plus the journal
segments beside it not folded in yet (:mod:`bridge.offline.state`,
:mod:`bridge.offline.journal`). A table as it stands is the snapshot's items with the
newer segments' operations applied in order — what :class:`~bridge.offline.durable.
DurableTables` does at start, but into a dict, with no moto, no port and no lock: so
two databases can be compared side by side, even one a running offline is using.

A running offline may fold a segment into the snapshot (and delete it) while we read.
The snapshot is read in one SQLite read transaction; if ``folded_through`` moved by the
time the segments are read, the read starts over (a fold is rare and quick).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.core.errors import BridgeError
from bridge.core.names import DEFAULT_REGION
from bridge.offline import journal, state

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class StoredTable:
    """One table of a local database: its key schema and items by canonical key text.

    Items are in DynamoDB's wire JSON (``{"S": "x"}``; binary as base64 text)."""

    name: str
    key_schema: list[dict[str, str]]
    items: dict[str, dict[str, Any]]

    @property
    def key_names(self) -> list[str]:
        """Partition key first, then the sort key (if any)."""
        ordered = sorted(self.key_schema, key=lambda k: k["KeyType"] != "HASH")
        return [k["AttributeName"] for k in ordered]


def _open_read_only(db: Path) -> sqlite3.Connection:
    """The file as it is: read-only (no schema created, nothing migrated or locked)."""
    if not db.is_file():
        raise BridgeError(f"{db}: no local database there (`bridge offline --db {db}` makes one)")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30, isolation_level=None)
        conn.execute("SELECT 1 FROM sqlite_master").fetchall()
    except sqlite3.Error as error:
        raise BridgeError(f"{db} cannot be read as a local database: {error}") from None
    return conn


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    rows = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return bool(rows.fetchall())


def table_names(db: str | Path) -> list[str]:
    """The names of the tables the database holds, snapshot and journal together."""
    return sorted({where[2] for where in _read(Path(db), None)})


def read_table(db: str | Path, name: str, region: str = DEFAULT_REGION) -> StoredTable:
    """One table of the database as it stands. A missing table is one clear error."""
    db = Path(db)
    tables = _read(db, name)
    found = [where for where in tables if where[2] == name]
    if not found:
        known = ", ".join(table_names(db)) or "none"
        raise BridgeError(f"{db}: no table {name!r} (tables there: {known})")
    # The embedded endpoint's own account; the region offline was started with.
    preferred = (state.ENDPOINT_ACCOUNT, region, name)
    where = preferred if preferred in tables else sorted(found)[0]
    definition, items = tables[where]
    return StoredTable(name, definition["KeySchema"], items)


_Tables = dict[tuple[str, str, str], tuple[dict[str, Any], dict[str, dict[str, Any]]]]


def _read(db: Path, only: str | None) -> _Tables:
    for _ in range(MAX_ATTEMPTS):
        conn = _open_read_only(db)
        try:
            conn.execute("BEGIN")  # one read snapshot of the file
            tables, folded = _snapshot(conn, only)
            conn.execute("COMMIT")
            for number, path in journal.segments(db):
                if number <= folded:
                    continue  # folded before a crash took its file
                try:
                    entries = list(journal.read_segment(path))
                except FileNotFoundError:
                    break  # folded and deleted meanwhile: read again
                for entry in entries:
                    _apply(tables, entry, only)
            else:
                if _folded_through(conn) == folded:
                    return tables
        finally:
            conn.close()
    raise BridgeError(f"{db} kept changing while it was read; try again")


def _folded_through(conn: sqlite3.Connection) -> int:
    if not _has_table(conn, "dynamodb_journal"):
        return 0
    return state.folded_through(conn)


def _snapshot(conn: sqlite3.Connection, only: str | None) -> tuple[_Tables, int]:
    tables: _Tables = {}
    if not _has_table(conn, "dynamodb_tables"):
        return tables, _folded_through(conn)  # an archive only (--dynamodb-endpoint)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(dynamodb_items)")}
    if "key" not in columns:
        raise BridgeError(
            "the database is in the layout before the journal: start `bridge offline` "
            "on it once to migrate it"
        )
    for account, region, name, definition, _ in state.snapshot_tables(conn):
        if only is not None and name != only:
            continue
        items = {
            state.key_text(state.item_key(item, definition["KeySchema"])): item
            for item in state.snapshot_items(conn, account, region, name)
        }
        tables[(account, region, name)] = (definition, items)
    return tables, _folded_through(conn)


def _apply(tables: _Tables, entry: dict[str, Any], only: str | None) -> None:
    """One journal entry's operations (whole images: applying is idempotent)."""
    for op in entry.get("ops", ()):
        kind, account, region, name = op[:4]
        if only is not None and name != only:
            continue
        where = (account, region, name)
        if kind == "put":
            if where in tables:
                tables[where][1][state.key_text(op[4])] = state.to_wire(op[5])
        elif kind == "del":
            if where in tables:
                tables[where][1].pop(state.key_text(op[4]), None)
        elif kind == "table":
            fresh, definition, items = op[4], op[5], op[7]
            kept = {} if fresh or where not in tables else tables[where][1]
            for image in map(state.to_wire, items or ()):
                kept[state.key_text(state.item_key(image, definition["KeySchema"]))] = image
            tables[where] = (definition, kept)
        elif kind == "drop":
            tables.pop(where, None)


def iter_items(table: StoredTable) -> Iterator[dict[str, Any]]:
    """The items in key order (the canonical key text sorts by attribute values)."""
    for key in sorted(table.items):
        yield table.items[key]
