"""Local state kept in the SQLite file (``./db``) beside the archive.

* ``checkpoints``: per stream shard, the last sequence number handed to the
  publisher successfully — a restart neither republishes nor misses a record.
* the **snapshot** of the embedded endpoint's tables, as of the journal segment named
  in ``dynamodb_journal`` (``folded_through``):

  - ``dynamodb_tables``: one row per table and backend (account, region): its
    ``create_table`` definition and its stream (label, ARN, next sequence number);
  - ``dynamodb_items``: every item in DynamoDB's typed JSON, keyed by its primary
    key in a canonical text (:func:`key_text`), so a fold can upsert it;
  - ``dynamodb_stream_records``: the stream records the poller has not checkpointed
    yet (and any of the last 24 hours of other tables' streams), so a write folded
    before it was published is still published after a restart.

  The embedded endpoint keeps it (:mod:`bridge.offline.durable`): it folds journal
  segments into it (:func:`fold_segment`) and loads it at start. Files written
  before the journal existed (``dynamodb_tables(name, definition)``,
  ``dynamodb_items(table_name, item)``) are migrated in place
  (:func:`migrate_snapshot`). :func:`save_tables` / :func:`restore_tables` snapshot
  any endpoint through its API instead.

Small and synchronous on purpose: a few rows per poll; a fold is one transaction.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from bridge.core.errors import BridgeError
from bridge.core.names import DEFAULT_REGION
from bridge.filelock import FileLock
from bridge.offline import journal

# The account moto serves any local access key from: the embedded endpoint's tables
# live in its backends, so a snapshot names it beside the region.
ENDPOINT_ACCOUNT = "123456789012"
STREAM_RETENTION = 24 * 3600.0  # seconds, as DynamoDB Streams keeps records
_SEQUENCE_DIGITS = 40  # sequence numbers stored zero-padded: text order is number order

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
CREATE TABLE IF NOT EXISTS dynamodb_tables (
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    stream TEXT,
    PRIMARY KEY (account, region, name)
);
CREATE TABLE IF NOT EXISTS dynamodb_items (
    table_name TEXT NOT NULL,
    item TEXT NOT NULL,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (account, region, table_name, key)
);
CREATE TABLE IF NOT EXISTS dynamodb_stream_records (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    table_name TEXT NOT NULL,
    sequence_number TEXT NOT NULL,
    created REAL NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (account, region, table_name, sequence_number)
);
CREATE TABLE IF NOT EXISTS dynamodb_journal (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# The layout before the journal: one region, no keys. Renamed aside, copied, dropped.
_LEGACY_TABLES = "dynamodb_tables_legacy"
_LEGACY_ITEMS = "dynamodb_items_legacy"


class DatabaseLock(FileLock):
    """``{db}.lock``, held while `bridge offline` runs: a second one on the same file,
    or `bridge clean` under a running one, is refused instead of corrupting the data.

    A :class:`~bridge.filelock.FileLock` with offline's refusal; ``stale`` says that the
    previous run ended without a clean stop (the lock file outlives only such a run).
    """

    def __init__(self, db: str | Path) -> None:
        super().__init__(
            db, busy=f"{Path(db)} is in use by a running `bridge offline`; stop it first"
        )

    def acquire(self) -> DatabaseLock:
        super().acquire()
        return self


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
    """The database, the WAL files and the embedded endpoint's journal beside it that exist."""
    files = [Path(path), Path(f"{path}-wal"), Path(f"{path}-shm"), journal.lock_path(path)]
    return [p for p in files if p.exists()] + [segment for _, segment in journal.segments(path)]


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
    """The layout before the journal: boto3's ``bytes`` for B/BS kept as ``{"$b64": …}``."""
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


def to_wire(item: dict[str, Any]) -> dict[str, Any]:
    """A boto3 client's typed item (``bytes`` for binary) in DynamoDB's wire JSON
    (binary as base64 text), the form moto keeps and the snapshot stores."""
    return {name: _wire_value(value, to_text=True) for name, value in item.items()}


def from_wire(item: dict[str, Any]) -> dict[str, Any]:
    """The wire JSON of an item as a boto3 client takes it (``bytes`` for binary)."""
    return {name: _wire_value(value, to_text=False) for name, value in item.items()}


def _wire_value(value: dict[str, Any], to_text: bool) -> dict[str, Any]:
    ((kind, inner),) = value.items()
    if kind == "B":
        return {kind: _binary(inner, to_text)}
    if kind == "BS":
        return {kind: [_binary(v, to_text) for v in inner]}
    if kind == "M":
        return {kind: {k: _wire_value(v, to_text) for k, v in inner.items()}}
    if kind == "L":
        return {kind: [_wire_value(v, to_text) for v in inner]}
    return value


def _binary(value: Any, to_text: bool) -> Any:
    if to_text:
        return base64.b64encode(value).decode() if isinstance(value, bytes) else value
    return base64.b64decode(value) if isinstance(value, str) else value


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


# --------------------------------------------------------------------------- snapshot layout


def key_text(key: dict[str, dict[str, Any]]) -> str:
    """The canonical text of an item's primary key (``{name: {type: value}}``).

    Numbers are normalized (``1``, ``1.0`` and ``1E0`` are one key in DynamoDB and in
    moto alike), so a rewrite of an item replaces its row instead of adding one.
    """
    canonical = {}
    for name, typed in key.items():
        ((kind, value),) = typed.items()
        if kind == "N":
            value = _number_text(value)
        canonical[name] = {kind: value}
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _number_text(value: str) -> str:
    try:
        number = Decimal(value)
    except InvalidOperation:
        return value
    return "0" if number == 0 else str(number.normalize())


def item_key(item: dict[str, Any], key_schema: list[dict[str, str]]) -> dict[str, Any]:
    """The primary key attributes of a typed-JSON item."""
    return {k["AttributeName"]: item[k["AttributeName"]] for k in key_schema}


def sequence_text(sequence_number: int | str) -> str:
    return str(int(sequence_number)).zfill(_SEQUENCE_DIGITS)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def migrate_snapshot(
    conn: sqlite3.Connection, account: str = ENDPOINT_ACCOUNT, region: str = DEFAULT_REGION
) -> int:
    """Move a snapshot of the layout before the journal into the current one, in one
    transaction; returns how many items moved (0: nothing to do).

    The old layout kept one region's tables with no account and no item keys; they
    are taken to be ``account``/``region``'s, keys are computed from each table's key
    schema. Their stream label was not kept: the table gets a new stream at its next
    load, which is right, because such a snapshot only held published items.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(dynamodb_items)")}
    if "key" in columns:
        return 0
    moved = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(dynamodb_items)")}
        if "key" not in columns:  # checked again inside the transaction: another may have
            conn.execute(f"ALTER TABLE dynamodb_tables RENAME TO {_LEGACY_TABLES}")
            conn.execute(f"ALTER TABLE dynamodb_items RENAME TO {_LEGACY_ITEMS}")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            tables = conn.execute(f"SELECT name, definition FROM {_LEGACY_TABLES}").fetchall()
            for name, text in tables:
                key_schema = json.loads(text)["KeySchema"]
                conn.execute(
                    "INSERT INTO dynamodb_tables (name, definition, account, region, stream) "
                    "VALUES (?, ?, ?, ?, NULL)",
                    (name, text, account, region),
                )
                rows = conn.execute(
                    f"SELECT item FROM {_LEGACY_ITEMS} WHERE table_name = ?", (name,)
                ).fetchall()
                for (item_text,) in rows:
                    item = to_wire(_decode(json.loads(item_text)))
                    conn.execute(
                        "INSERT OR REPLACE INTO dynamodb_items "
                        "(table_name, item, account, region, key) VALUES (?, ?, ?, ?, ?)",
                        (name, _json(item), account, region, key_text(item_key(item, key_schema))),
                    )
                    moved += 1
            conn.execute(f"DROP TABLE {_LEGACY_TABLES}")
            conn.execute(f"DROP TABLE {_LEGACY_ITEMS}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return moved


def folded_through(conn: sqlite3.Connection) -> int:
    """The last journal segment the snapshot holds (0: none yet)."""
    rows = conn.execute("SELECT value FROM dynamodb_journal WHERE name = 'folded_through'")
    found = rows.fetchall()
    return int(found[0][0]) if found else 0


def checkpoint(conn: sqlite3.Connection, stream_arn: str | None) -> int | None:
    """The poller's checkpoint on a stream (the highest over its shards), if any."""
    if not stream_arn:
        return None
    rows = conn.execute(
        "SELECT sequence_number FROM checkpoints WHERE stream_arn = ? "
        "AND sequence_number IS NOT NULL",
        (stream_arn,),
    ).fetchall()
    return max((int(row[0]) for row in rows), default=None)


TableRow = tuple[str, str, str, dict[str, Any], dict[str, Any] | None]  # account, region, name


def snapshot_tables(conn: sqlite3.Connection) -> list[TableRow]:
    """Every table of the snapshot: (account, region, name, definition, stream)."""
    rows = conn.execute("SELECT account, region, name, definition, stream FROM dynamodb_tables")
    return [
        (account, region, name, json.loads(definition), json.loads(stream) if stream else None)
        for account, region, name, definition, stream in rows.fetchall()
    ]


def snapshot_items(
    conn: sqlite3.Connection, account: str, region: str, name: str
) -> Iterator[dict[str, Any]]:
    """The items of one table, in DynamoDB's wire JSON (binary as base64 text)."""
    rows = conn.execute(
        "SELECT item FROM dynamodb_items WHERE account = ? AND region = ? AND table_name = ?",
        (account, region, name),
    )
    for (text,) in rows:
        yield json.loads(text)


def snapshot_records(
    conn: sqlite3.Connection, account: str, region: str, name: str, after: int | None = None
) -> list[dict[str, Any]]:
    """The stream records kept for one table (those after ``after``), in sequence order."""
    rows = conn.execute(
        "SELECT record FROM dynamodb_stream_records WHERE account = ? AND region = ? "
        "AND table_name = ? AND sequence_number > ? ORDER BY sequence_number",
        (account, region, name, "" if after is None else sequence_text(after)),
    ).fetchall()
    return [journal.loads(row[0]) for row in rows]


def set_stream(
    conn: sqlite3.Connection, account: str, region: str, name: str, stream: dict[str, Any]
) -> None:
    """Record a table's stream (a table restored without one got a new stream)."""
    conn.execute(
        "UPDATE dynamodb_tables SET stream = ? WHERE account = ? AND region = ? AND name = ?",
        (_json(stream), account, region, name),
    )


def snapshot_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Items per table name in the snapshot (tables of several regions summed)."""
    counts = {name: 0 for (name,) in conn.execute("SELECT name FROM dynamodb_tables")}
    rows = conn.execute("SELECT table_name, COUNT(*) FROM dynamodb_items GROUP BY table_name")
    for name, n in rows.fetchall():
        if name in counts:
            counts[name] += n
    return counts


def fold_segment(
    conn: sqlite3.Connection,
    number: int,
    entries: Iterable[dict[str, Any]],
    now: float | None = None,
) -> bool:
    """Apply one journal segment's entries to the snapshot, in one transaction, and
    note it folded; False if it was folded already (a crash came before its file went).

    Each entry is ``{"ops": [...], "stream": [...]}`` as :mod:`bridge.offline.durable`
    writes it. Ops are whole images (put, delete, table, drop), so applying one twice
    or over a state that already has it changes nothing. Stream records the poller has
    checkpointed, and any older than a day, are dropped: the stream's
    ``next`` sequence number is what keeps numbering going past them.
    """
    now = time.time() if now is None else now
    conn.execute("BEGIN IMMEDIATE")
    try:
        if folded_through(conn) >= number:
            conn.execute("ROLLBACK")
            return False
        streams: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        for entry in entries:
            for op in entry.get("ops", ()):
                _apply(conn, op, streams)
            for account, region, name, record in entry.get("stream", ()):
                key = (account, region, name)
                if key not in streams:
                    streams[key] = _stream_of(conn, key)
                stream = streams[key]
                if stream is None or stream.get("shard") is None:
                    continue  # no table with a stream to hold it (an inconsistent journal)
                sequence = int(record["dynamodb"]["SequenceNumber"])
                conn.execute(
                    "INSERT OR IGNORE INTO dynamodb_stream_records (account, region, "
                    "table_name, sequence_number, created, record) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        account,
                        region,
                        name,
                        sequence_text(sequence),
                        _epoch(record["dynamodb"].get("ApproximateCreationDateTime")),
                        journal.dumps(record),
                    ),
                )
                stream["shard"]["next"] = max(stream["shard"]["next"], sequence + 1)
        for (account, region, name), stream in streams.items():
            if stream is None:
                continue
            set_stream(conn, account, region, name, stream)
            published = checkpoint(conn, stream.get("arn"))
            if published is not None:
                conn.execute(
                    "DELETE FROM dynamodb_stream_records WHERE account = ? AND region = ? "
                    "AND table_name = ? AND sequence_number <= ?",
                    (account, region, name, sequence_text(published)),
                )
        conn.execute(
            "DELETE FROM dynamodb_stream_records WHERE created < ?", (now - STREAM_RETENTION,)
        )
        conn.execute(
            "INSERT INTO dynamodb_journal (name, value) VALUES ('folded_through', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (number,),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def _epoch(value: Any) -> float:
    """A record's creation time (ISO text as the journal keeps it) in epoch seconds."""
    from datetime import UTC, datetime

    if isinstance(value, str):
        when = datetime.fromisoformat(value)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return time.time()


def _stream_of(conn: sqlite3.Connection, key: tuple[str, str, str]) -> dict[str, Any] | None:
    rows = conn.execute(
        "SELECT stream FROM dynamodb_tables WHERE account = ? AND region = ? AND name = ?", key
    ).fetchall()
    return json.loads(rows[0][0]) if rows and rows[0][0] else None


def _apply(
    conn: sqlite3.Connection,
    op: list[Any],
    streams: dict[tuple[str, str, str], dict[str, Any] | None],
) -> None:
    kind, account, region, name = op[:4]
    where = (account, region, name)
    if kind == "put":
        key, image = op[4], to_wire(op[5])
        conn.execute(
            "INSERT OR REPLACE INTO dynamodb_items (table_name, item, account, region, key) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, _json(image), account, region, key_text(key)),
        )
    elif kind == "del":
        conn.execute(
            "DELETE FROM dynamodb_items WHERE account = ? AND region = ? AND table_name = ? "
            "AND key = ?",
            (*where, key_text(op[4])),
        )
    elif kind == "table":
        fresh, definition, stream, items = op[4], op[5], op[6], op[7]
        before = streams[where] if where in streams else _stream_of(conn, where)
        if fresh:
            _drop(conn, where, keep_table=True)
        elif (before or {}).get("label") != (stream or {}).get("label"):
            conn.execute(
                "DELETE FROM dynamodb_stream_records WHERE account = ? AND region = ? "
                "AND table_name = ?",
                where,
            )
        conn.execute(
            "INSERT OR REPLACE INTO dynamodb_tables (name, definition, account, region, stream) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, _json(definition), account, region, _json(stream) if stream else None),
        )
        streams[where] = stream
        for image in map(to_wire, items or ()):
            key = item_key(image, definition["KeySchema"])
            conn.execute(
                "INSERT OR REPLACE INTO dynamodb_items (table_name, item, account, region, key) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, _json(image), account, region, key_text(key)),
            )
    elif kind == "drop":
        _drop(conn, where)
        streams[where] = None
    else:
        raise ValueError(f"unknown journal op {kind!r}")


def _drop(conn: sqlite3.Connection, where: tuple[str, str, str], keep_table: bool = False) -> None:
    clause = "account = ? AND region = ? AND {} = ?"
    conn.execute(f"DELETE FROM dynamodb_items WHERE {clause.format('table_name')}", where)
    conn.execute(f"DELETE FROM dynamodb_stream_records WHERE {clause.format('table_name')}", where)
    if not keep_table:
        conn.execute(f"DELETE FROM dynamodb_tables WHERE {clause.format('name')}", where)


# --------------------------------------------------------------------------- any endpoint

Snapshot = list[tuple[str, dict[str, Any], list[dict[str, Any]]]]  # name, definition, items


def save_tables(client: Any, path: str | Path) -> dict[str, int]:
    """Snapshot every table of an endpoint through its API into the SQLite file
    (replacing the last one). The embedded endpoint keeps its own, through its journal."""
    return write_snapshot(path, read_tables(client), region=client.meta.region_name)


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


def write_snapshot(
    path: str | Path,
    snapshot: Snapshot,
    account: str = ENDPOINT_ACCOUNT,
    region: str = DEFAULT_REGION,
) -> dict[str, int]:
    """Replace the stored snapshot with this one (``account``/``region``'s tables), in
    one transaction: a crash while writing leaves the previous snapshot whole."""
    conn = connect(path)
    try:
        migrate_snapshot(conn, account, region)
        conn.execute("BEGIN")
        for table in ("dynamodb_tables", "dynamodb_items", "dynamodb_stream_records"):
            conn.execute(f"DELETE FROM {table}")
        for name, definition, items in snapshot:
            conn.execute(
                "INSERT INTO dynamodb_tables (name, definition, account, region) "
                "VALUES (?, ?, ?, ?)",
                (name, json.dumps(definition), account, region),
            )
            wire = [to_wire(item) for item in items]
            conn.executemany(
                "INSERT OR REPLACE INTO dynamodb_items (table_name, item, account, region, key) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        name,
                        _json(item),
                        account,
                        region,
                        key_text(item_key(item, definition["KeySchema"])),
                    )
                    for item in wire
                ],
            )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {name: len(items) for name, _, items in snapshot}


def restore_tables(client: Any, path: str | Path) -> dict[str, int]:
    """Recreate the snapshot's tables with their items on a fresh endpoint, through its API.

    Items go in before the stream is switched on, so restoring publishes nothing:
    those events were published before the snapshot was taken.
    """
    conn = connect(path)
    try:
        migrate_snapshot(conn, region=client.meta.region_name)
        tables = client.get_paginator("list_tables").paginate().build_full_result()
        existing = set(tables["TableNames"])
        restored = {}
        for account, region, name, definition, _ in snapshot_tables(conn):
            if name in existing:
                continue
            stream = definition.pop("StreamSpecification", None)
            definition.pop("TimeToLive", None)
            client.create_table(TableName=name, **definition)
            items = [from_wire(item) for item in snapshot_items(conn, account, region, name)]
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
