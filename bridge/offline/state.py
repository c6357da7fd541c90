"""Local state kept in the SQLite file (``./db``) beside the archive.

* ``checkpoints``: per stream shard, the last sequence number handed to the
  publisher successfully — a restart neither republishes nor misses a record.
* ``dynamodb_tables`` / ``dynamodb_items``: a snapshot of the embedded endpoint's
  tables, written on shutdown (and in quiet moments while running, so a crash
  loses little) and loaded on start, so local data outlives a restart (moto keeps
  everything in memory). Items are stored in DynamoDB's typed JSON.

Small and synchronous on purpose: a few rows, touched once per poll or at start/stop.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from bridge.core.errors import BridgeError

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    stream_arn TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    sequence_number TEXT,
    finished INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream_arn, shard_id)
);
CREATE TABLE IF NOT EXISTS stream_failures (
    stream_arn TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    first_sequence_number TEXT NOT NULL,
    last_sequence_number TEXT NOT NULL,
    records TEXT NOT NULL,
    reason TEXT NOT NULL,
    failed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS dynamodb_tables (name TEXT PRIMARY KEY, definition TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dynamodb_items (table_name TEXT NOT NULL, item TEXT NOT NULL);
"""


class DatabaseLock:
    """``{db}.lock``, held while `bridge offline` runs: a second one on the same file,
    or `bridge clean` under a running one, is refused instead of corrupting the data."""

    def __init__(self, db: str | Path) -> None:
        self.path = Path(f"{db}.lock")
        self._file: Any = None
        self.stale = False  # a previous run ended without a clean stop

    def acquire(self) -> DatabaseLock:
        import fcntl

        # The file outlives only a run that never stopped cleanly (release removes it).
        self.stale = self.path.exists()
        try:
            handle = self.path.open("a+")
        except OSError as error:  # a missing or read-only folder
            raise BridgeError(f"cannot use {self.path}: {error.strerror or error}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise BridgeError(
                f"{self.path.with_suffix('')} is in use by a running `bridge "
                "offline`; stop it first"
            ) from None
        self._file = handle
        return self

    def release(self) -> None:
        """Remove the lock file while still holding it, then let go."""
        if self._file is not None:
            self.path.unlink(missing_ok=True)
            self._file.close()
            self._file = None


def check_database(path: str | Path) -> None:
    """Fail with one line when the file can't be the local database (bad folder, not
    SQLite, read-only), before anything else starts."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connect(path).close()
    except (OSError, sqlite3.Error) as error:
        raise BridgeError(f"{path} cannot be the local database: {error}") from None


def database_files(path: str | Path) -> list[Path]:
    """The database and the WAL files beside it that exist."""
    return [p for p in (Path(path), Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def remove_database(path: str | Path) -> None:
    for file in database_files(path):
        file.unlink(missing_ok=True)


def connect(path: str | Path) -> sqlite3.Connection:
    # Used from one worker thread at a time (the poller's asyncio.to_thread calls).
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


class Checkpoints:
    """Where each shard's reading stopped."""

    def __init__(self, path: str | Path) -> None:
        self.conn = connect(path)

    def get(self, stream_arn: str, shard_id: str) -> tuple[str | None, bool]:
        # fetchall, not fetchone: an unfinished statement would keep a read snapshot
        # open, and the next checkpoint write would then fail at once with "database
        # is locked" (SQLITE_BUSY_SNAPSHOT) whenever the archive wrote meanwhile.
        rows = self.conn.execute(
            "SELECT sequence_number, finished FROM checkpoints WHERE stream_arn=? AND shard_id=?",
            (stream_arn, shard_id),
        ).fetchall()
        return (rows[0][0], bool(rows[0][1])) if rows else (None, False)

    def save(
        self, stream_arn: str, shard_id: str, sequence_number: str | None, finished: bool = False
    ) -> None:
        self.conn.execute(
            "INSERT INTO checkpoints (stream_arn, shard_id, sequence_number, finished) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (stream_arn, shard_id) DO UPDATE SET "
            "sequence_number = COALESCE(excluded.sequence_number, sequence_number), "
            "finished = excluded.finished",
            (stream_arn, shard_id, sequence_number, int(finished)),
        )

    def set_aside(
        self,
        stream_arn: str,
        shard_id: str,
        records: list[dict[str, Any]],
        reason: str,
        finished: bool,
    ) -> None:
        """Keep a batch the publisher gave up on and move the shard's checkpoint past
        it, in one transaction: a crash between the two would record it twice (the
        stack sends a description to an SQS queue; locally the records are kept)."""
        first = records[0]["dynamodb"]["SequenceNumber"]
        last = records[-1]["dynamodb"]["SequenceNumber"]
        with self.conn:  # BEGIN … COMMIT
            self.conn.execute("BEGIN")
            self.conn.execute(
                "INSERT INTO stream_failures (stream_arn, shard_id, first_sequence_number, "
                "last_sequence_number, records, reason) VALUES (?, ?, ?, ?, ?, ?)",
                (stream_arn, shard_id, first, last, json.dumps(records), reason),
            )
            self.save(stream_arn, shard_id, last, finished)

    def forget_older_streams(self, stream_arn: str) -> int:
        """Drop the checkpoints of the table's earlier streams (the embedded endpoint
        gets a new stream at every start); returns how many rows went."""
        table_prefix = stream_arn.split("/stream/")[0] + "/stream/"
        cursor = self.conn.execute(
            "DELETE FROM checkpoints WHERE substr(stream_arn, 1, ?) = ? AND stream_arn != ?",
            (len(table_prefix), table_prefix, stream_arn),
        )
        return cursor.rowcount

    def close(self) -> None:
        self.conn.close()


def _encode(value: Any) -> Any:
    """Typed JSON from boto3 holds ``bytes`` for B/BS; JSON needs text."""
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$b64"}:
            return base64.b64decode(value["$b64"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


TABLE_FIELDS = ("AttributeDefinitions", "KeySchema", "StreamSpecification")


def _definition(description: dict[str, Any]) -> dict[str, Any]:
    """The ``create_table`` arguments that rebuild a described table."""
    definition = {k: description[k] for k in TABLE_FIELDS if k in description}
    definition["BillingMode"] = "PAY_PER_REQUEST"
    for index_kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        indexes = description.get(index_kind)
        if indexes:
            definition[index_kind] = [
                {k: i[k] for k in ("IndexName", "KeySchema", "Projection")} for i in indexes
            ]
    return definition


Snapshot = list[tuple[str, dict[str, Any], list[dict[str, Any]]]]  # name, definition, items


def save_tables(client: Any, path: str | Path) -> dict[str, int]:
    """Snapshot every table of the endpoint into the SQLite file (replacing the last one)."""
    return write_snapshot(path, read_tables(client))


class ReadHalted(Exception):
    """:func:`read_tables` was asked to stop before it was done."""


def read_tables(client: Any, halt: threading.Event | None = None) -> Snapshot:
    """Every table of the endpoint: its definition and all its items.

    ``halt`` set from another thread stops the scan at the next page (ReadHalted).
    """
    snapshot: Snapshot = []
    for name in client.get_paginator("list_tables").paginate().build_full_result()["TableNames"]:
        description = client.describe_table(TableName=name)["Table"]
        items = []
        for page in client.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
            if halt is not None and halt.is_set():
                raise ReadHalted
            items.extend(page.get("Items", []))
        snapshot.append((name, _definition(description), items))
    return snapshot


def write_snapshot(path: str | Path, snapshot: Snapshot) -> dict[str, int]:
    """Replace the stored snapshot with this one, in one transaction: a crash while
    writing leaves the previous snapshot whole."""
    conn = connect(path)
    try:
        conn.execute("BEGIN")
        conn.execute("DELETE FROM dynamodb_tables")
        conn.execute("DELETE FROM dynamodb_items")
        for name, definition, items in snapshot:
            conn.execute(
                "INSERT INTO dynamodb_tables VALUES (?, ?)", (name, json.dumps(definition))
            )
            conn.executemany(
                "INSERT INTO dynamodb_items VALUES (?, ?)",
                [(name, json.dumps(_encode(item))) for item in items],
            )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {name: len(items) for name, _, items in snapshot}


def restore_tables(client: Any, path: str | Path) -> dict[str, int]:
    """Recreate the snapshot's tables with their items on a fresh endpoint.

    Items go in before the stream is switched on, so restoring publishes nothing:
    those events were published before the snapshot was taken.
    """
    conn = connect(path)
    try:
        tables = conn.execute("SELECT name, definition FROM dynamodb_tables").fetchall()
        existing = set(client.list_tables()["TableNames"])
        restored = {}
        for name, text in tables:
            if name in existing:
                continue
            definition = json.loads(text)
            stream = definition.pop("StreamSpecification", None)
            client.create_table(TableName=name, **definition)
            rows = conn.execute("SELECT item FROM dynamodb_items WHERE table_name = ?", (name,))
            items = [_decode(json.loads(row[0])) for row in rows]
            for start in range(0, len(items), 25):
                pending = {name: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
                while pending:
                    pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems")
            if stream and stream.get("StreamEnabled"):
                client.update_table(TableName=name, StreamSpecification=stream)
            restored[name] = len(items)
        return restored
    finally:
        conn.close()
