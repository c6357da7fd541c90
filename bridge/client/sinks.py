"""Where a bridge client puts the events it receives: sqlite, dynamodb, bus, none.

Every sink makes a redelivery harmless and stores the session's cursor only once the
events it covers are durably written, so a client killed at any moment resumes from
a cursor whose events are all in the sink (exactly-once in the sink, at-least-once on
the wire):

* **sqlite** — the local archive's ``events`` schema (log events unique by ``pk``/
  ``sk``, others by id) plus a ``bridge_cursors`` table, events and cursor in one
  transaction. The file is locked against a second client.
* **dynamodb** — log items rewritten into ``{stage}-dynamodb-logs`` on a local endpoint
  with BatchWriteItem (25 a call, ``UnprocessedItems`` retried, at most one version of
  a stream per call so each stream is written in version order). Rewriting an item
  unchanged writes no stream record, so a redelivery is not published again. Other
  events are skipped and counted. The cursor lives in a small state file, replaced
  atomically after the batch is written.
* **bus** — PutEvents to the local bus (at least once: a crash between the put and the
  cursor's save re-sends the last batch).
* **none** — nothing is written; the cursor is kept in memory only.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from bridge import archive
from bridge.core.errors import BridgeError
from bridge.core.events import batches
from bridge.core.names import log_table_name
from bridge.core.rewrite import entry_of, log_item_of, waves
from bridge.filelock import FileLock

UNPROCESSED_RETRIES = 10
_THROTTLED = "ThrottlingException"

Texts = Sequence[str | None] | None


@dataclass
class Written:
    """What one ``write`` did: new rows, duplicates ignored, events not for this sink."""

    written: int = 0
    duplicates: int = 0
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + 1


class Sink(Protocol):
    name: str

    async def open(self) -> int:
        """Prepare, and return the stored cursor of the session (0 if none)."""

    async def write(
        self, events: Sequence[Mapping[str, Any]], through: int, texts: Texts = None
    ) -> Written:
        """Write the events durably, then store ``through`` as the session's cursor.

        ``texts``, when given, holds each event's JSON text as it arrived (``None`` where
        unknown), for a sink that stores text: it need not encode the event again."""

    async def close(self) -> None: ...


# --------------------------------------------------------------------------- none


class NoneSink:
    """Prints only (the caller prints); the cursor lives as long as the process."""

    name = "none"

    def __init__(self) -> None:
        self.cursor = 0

    async def open(self) -> int:
        return self.cursor

    async def write(
        self, events: Sequence[Mapping[str, Any]], through: int, texts: Texts = None
    ) -> Written:
        self.cursor = max(self.cursor, through)
        return Written(skipped=0)

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------- sqlite

CURSORS_SCHEMA = """CREATE TABLE IF NOT EXISTS bridge_cursors (
    session TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL,
    updatedAt TEXT NOT NULL
)"""


class SqliteSink:
    """Events and the cursor in one SQLite transaction, in the archive's schema."""

    name = "sqlite"

    def __init__(self, path: Path, session_key: str) -> None:
        self.path = path
        self.session_key = session_key
        self._conn: aiosqlite.Connection | None = None
        self._lock: FileLock | None = None

    async def open(self) -> int:
        if archive.is_offline_database(self.path):
            raise BridgeError(
                f"{self.path} is a `bridge offline` database; write the bridge into a "
                "file of its own (--out bridge.db)"
            )
        busy = f"{self.path} is in use by another `bridge connect`; use another --out"
        self._lock = FileLock(self.path, busy).acquire()
        try:
            self._conn = await aiosqlite.connect(os.fspath(self.path))
            await archive.ensure_schema_async(self._conn)
            await self._conn.execute(CURSORS_SCHEMA)
            await self._conn.commit()
            async with self._conn.execute(
                "SELECT cursor FROM bridge_cursors WHERE session = ?", (self.session_key,)
            ) as rows:
                row = await rows.fetchone()
        except BaseException:
            await self.close()
            raise
        return int(row[0]) if row else 0

    async def write(
        self, events: Sequence[Mapping[str, Any]], through: int, texts: Texts = None
    ) -> Written:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the sqlite sink is not open")
        texts = texts if texts is not None else [None] * len(events)
        rows = [archive.insert_values(e, t) for e, t in zip(events, texts, strict=True)]
        before = conn.total_changes
        await conn.executemany(archive.INSERT, rows)
        new = conn.total_changes - before
        await conn.execute(
            "INSERT INTO bridge_cursors (session, cursor, updatedAt) VALUES (?, ?, ?) "
            "ON CONFLICT(session) DO UPDATE SET cursor = MAX(cursor, excluded.cursor), "
            "updatedAt = excluded.updatedAt",
            (self.session_key, through, archive.to_iso(time.time())),
        )
        await conn.commit()
        return Written(written=new, duplicates=len(rows) - new)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


# --------------------------------------------------------------------------- state file


class StateFile:
    """The cursor of sinks that cannot hold it themselves: a JSON file, replaced atomically."""

    def __init__(self, path: Path, session_key: str) -> None:
        self.path = path
        self.session_key = session_key

    def read(self) -> int:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as error:
            raise BridgeError(f"{self.path}: not a bridge state file ({error})") from None
        cursors = data.get("cursors") if isinstance(data, dict) else None
        value = cursors.get(self.session_key, 0) if isinstance(cursors, dict) else 0
        return value if isinstance(value, int) and value >= 0 else 0

    def write(self, cursor: int) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict) or not isinstance(data.get("cursors"), dict):
            data = {"cursors": {}}
        data["cursors"][self.session_key] = max(cursor, data["cursors"].get(self.session_key, 0))
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(temporary, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


# --------------------------------------------------------------------------- dynamodb


Hydrate = Callable[[Mapping[str, Any]], Mapping[str, Any] | None]


class DynamoDBSink:
    """Log items into a local stage's log table; the cursor in a state file."""

    name = "dynamodb"

    def __init__(self, client: Any, stage: str, state: StateFile) -> None:
        self.client = client  # a low-level boto3 DynamoDB client of the local endpoint
        self.table = log_table_name(stage)
        self.state = state

    async def open(self) -> int:
        await asyncio.to_thread(self._check_table)
        return self.state.read()

    def _check_table(self) -> None:
        try:
            self.client.describe_table(TableName=self.table)
        except self.client.exceptions.ResourceNotFoundException:
            raise BridgeError(
                f"table {self.table} does not exist on the sink's endpoint: start "
                "`bridge offline` there, or `bridge tables create`"
            ) from None

    async def write(
        self, events: Sequence[Mapping[str, Any]], through: int, texts: Texts = None
    ) -> Written:
        result = Written()
        items = []
        for event in events:
            detail = event.get("detail")
            if isinstance(detail, Mapping) and detail.get("partial"):
                result.skip("partial (use --hydrate)")
                continue
            item = log_item_of(event)
            if item is None:
                result.skip("not a log event")
                continue
            items.append(item)
        if items:
            await asyncio.to_thread(self._batch_write, items)
            result.written = len(items)
        await asyncio.to_thread(self.state.write, through)
        return result

    def _batch_write(self, items: list[dict[str, Any]]) -> None:
        from boto3.dynamodb.types import TypeSerializer

        serializer = TypeSerializer()
        for call in waves(items):
            requests = [
                {"PutRequest": {"Item": {k: serializer.serialize(v) for k, v in item.items()}}}
                for item in call
            ]
            pending: dict[str, Any] = {self.table: requests}
            for attempt in range(UNPROCESSED_RETRIES):
                answer = self.client.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
            else:
                raise BridgeError(
                    f"{len(pending[self.table])} items stayed unprocessed after "
                    f"{UNPROCESSED_RETRIES} BatchWriteItem retries; nothing was acknowledged"
                )

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------- bus


class BusSink:
    """PutEvents into the local bus, as the events are (at least once)."""

    name = "bus"

    def __init__(self, client: Any, state: StateFile) -> None:
        self.client = client  # a boto3 EventBridge client of the local endpoint
        self.state = state

    async def open(self) -> int:
        return self.state.read()

    async def write(
        self, events: Sequence[Mapping[str, Any]], through: int, texts: Texts = None
    ) -> Written:
        result = Written()
        entries = [entry_of(event) for event in events]
        if entries:
            await asyncio.to_thread(self._put, entries)
            result.written = len(entries)
        await asyncio.to_thread(self.state.write, through)
        return result

    def _put(self, entries: list[dict[str, Any]]) -> None:
        for batch in batches(entries):
            pending = batch
            for attempt in range(UNPROCESSED_RETRIES):
                answer = self.client.put_events(Entries=pending)
                if not answer.get("FailedEntryCount"):
                    break
                results = answer.get("Entries", [])
                refused = [
                    r
                    for r in results
                    if r.get("ErrorCode") and r["ErrorCode"] != "ThrottlingException"
                ]
                if refused:
                    raise BridgeError(
                        f"the local bus refused an event: {refused[0].get('ErrorCode')}: "
                        f"{refused[0].get('ErrorMessage', '')}"
                    )
                pending = [e for e, r in zip(pending, results, strict=True) if r.get("ErrorCode")]
                time.sleep(min(2.0, 0.05 * 2**attempt))
            else:
                raise BridgeError("the local bus kept throttling; nothing was acknowledged")

    async def close(self) -> None:
        return None
