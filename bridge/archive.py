"""The local archive: one SQLite file (``./db``) holding every event the bus accepted.

Several parties share this file, often at the same time and from different
processes: the local bus writes it (:class:`ArchiveWriter`), replays and the CLI read
it, and the bridge client's sqlite sink (a later issue) is to write cloud events
into it. Hence:

* WAL mode, so readers never block the writer and see committed batches at once;
* ``busy_timeout``, so two writers wait for each other instead of failing;
* ``INSERT OR IGNORE`` on the event's identity, so writing an event twice (a
  redelivery, a resumed client) stores it once. A log event's identity is its item's
  ``pk``/``sk``: published again after a crash (the stream trigger is at least once)
  it carries a new EventBridge id, yet it is the same event. Other events are
  identified by their id. Files from before ``pk``/``sk`` were kept are migrated
  when opened for writing (:func:`migrate`);
* ``createdAt`` is the event's own ``time`` in one canonical ISO 8601 UTC form
  (``2024-05-01T12:00:00.000Z``) so time windows are plain string comparisons
  whoever wrote the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from bridge.core.errors import BridgeError
from bridge.core.events import DETAIL_TYPE, SOURCE

DEFAULT_PATH = "db"
BUSY_TIMEOUT_MS = 5_000
BATCH_SIZE = 500
BATCH_INTERVAL = 0.05  # seconds a batch may wait for more events before it is written

logger = logging.getLogger(__name__)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        createdAt TEXT NOT NULL,
        log TEXT,
        type TEXT,
        event TEXT NOT NULL,
        pk TEXT,
        sk TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS events_createdAt ON events (createdAt)",
    # NULLs are distinct in a UNIQUE index: only log events are held to it.
    "CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events (pk, sk)",
)
# Where a migration puts the later copies of a log event archived more than once
# before events were keyed by pk/sk: out of the way of replays, not deleted.
DISPLACED = "events_displaced"
LOCKED_RETRIES = 30  # each also waits busy_timeout: minutes before a batch is given up
PRAGMAS = ("PRAGMA journal_mode=WAL", f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
INSERT = (
    "INSERT OR IGNORE INTO events (id, createdAt, log, type, event, pk, sk) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)

PathLike = str | os.PathLike[str]
Row = tuple[str, str, str | None, str | None, str]
Key = tuple[str | None, str | None]


# --------------------------------------------------------------------------- time


# EventBridge's ``time`` (whole seconds, UTC): 2024-05-01T12:00:00Z.
_EVENTBRIDGE_TIME = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ"
)


def to_iso(value: datetime | str | float | int) -> str:
    """The canonical ``createdAt`` text of a time: UTC, milliseconds, ``Z``.

    Accepts datetimes (naive ones are taken as UTC), ISO 8601 text (``Z`` or an
    offset) and epoch seconds, because events, the CLI and boto3 each carry time
    differently; one form keeps string comparison equal to time comparison.
    """
    given = value
    if isinstance(value, str) and _EVENTBRIDGE_TIME.fullmatch(value) and value[8:10] <= "28":
        # EventBridge's own form, on a day every month has: the common case, unparsed
        return value[:19] + ".000Z"
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise BridgeError(f"not an ISO 8601 time: {value!r}") from None
    try:
        if isinstance(value, datetime):
            when = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            when = datetime.fromtimestamp(value, UTC)
        else:
            raise BridgeError(f"not a time: {given!r}")
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (OverflowError, ValueError, OSError):  # outside the years datetime can hold
        raise BridgeError(f"not a time: {given!r}") from None
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def from_iso(text: str) -> datetime:
    """Parse a canonical ``createdAt`` back into an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- rows


def row_for(event: Mapping[str, Any], text: str | None = None) -> Row:
    """The ``events`` row of one EventBridge event (the envelope with ``id`` and ``time``).

    ``log`` and ``type`` come from the detail of log events so replays can filter
    on them with the index-free columns; other events leave them NULL. ``text`` is
    the event's JSON when the caller has it already (as received), else it is encoded.
    """
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise BridgeError("an archived event needs a non-empty string id")
    when = event.get("time")
    created = to_iso(when) if when else to_iso(datetime.now(UTC))
    detail = event.get("detail")
    log = type_ = None
    if isinstance(detail, dict):
        log = detail.get("log") if isinstance(detail.get("log"), str) else None
        type_ = detail.get("type") if isinstance(detail.get("type"), str) else None
    if text is None:
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return (event_id, created, log, type_, text)


def key_for(event: Mapping[str, Any]) -> Key:
    """A log event's identity, ``(pk, sk)`` of its item; ``(None, None)`` for others.

    ``sk`` is kept as JSON text, numbers in one form (``1`` and ``1.0`` are one
    version), so equal keys compare equal as text whoever wrote the row.
    """
    detail = event.get("detail")
    if event.get("source") != SOURCE or event.get("detail-type") != DETAIL_TYPE:
        return None, None
    key = detail.get("key") if isinstance(detail, dict) else None
    if not isinstance(key, dict) or not isinstance(key.get("pk"), str) or "sk" not in key:
        return None, None
    sk = key["sk"]
    if isinstance(sk, bool) or not isinstance(sk, str | int | float):
        return None, None
    if isinstance(sk, float) and sk.is_integer():
        sk = int(sk)
    return key["pk"], str(sk) if isinstance(sk, int) else json.dumps(sk)  # str: same, faster


def insert_values(event: Mapping[str, Any], text: str | None = None) -> tuple[Any, ...]:
    """The values of :data:`INSERT` for one event: its row, then its log key."""
    return (*row_for(event, text), *key_for(event))


def is_offline_database(path: PathLike) -> bool:
    """Does the file hold `bridge offline`'s own tables (its ./db), not only an archive?"""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return False
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dynamodb_tables'"
        ).fetchone()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return found is not None


# --------------------------------------------------------------------------- sync API


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Set WAL + busy timeout, create the ``events`` table if missing and migrate one
    of an older layout (idempotent)."""
    for pragma in PRAGMAS:
        conn.execute(pragma)
    with conn:
        conn.execute(SCHEMA[0])
    migrate(conn)
    with conn:
        for statement in SCHEMA[1:]:
            conn.execute(statement)


async def ensure_schema_async(conn: aiosqlite.Connection) -> None:
    """:func:`ensure_schema` for aiosqlite connections (the bus, the client's sink)."""
    for pragma in PRAGMAS:
        await conn.execute(pragma)
    await conn.execute(SCHEMA[0])
    await conn.commit()
    if "pk" not in {row[1] for row in await conn.execute_fetchall("PRAGMA table_info(events)")}:
        (_, _, path), *_ = await conn.execute_fetchall("PRAGMA database_list")
        await asyncio.to_thread(_migrate_file, path)
    for statement in SCHEMA[1:]:
        await conn.execute(statement)
    await conn.commit()


def migrate(conn: sqlite3.Connection) -> int:
    """Give an ``events`` table of the layout before ``pk``/``sk`` its key columns, in
    place and in one transaction: the columns are filled from each event, and the
    later copies of a log event archived more than once move to :data:`DISPLACED`.
    Returns how many moved (0: none, or nothing to migrate)."""
    if "pk" in _columns(conn):
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        displaced = _migrate(conn) if "pk" not in _columns(conn) else 0
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if displaced:
        logger.warning(
            "archive: %d log events had been archived more than once (before events were "
            "keyed by pk/sk); the later copies are moved to the table %s",
            displaced,
            DISPLACED,
        )
    return displaced


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA table_info(events)")}


def _migrate_file(path: str) -> None:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        migrate(conn)
    finally:
        conn.close()


def _migrate(conn: sqlite3.Connection) -> int:
    conn.execute("ALTER TABLE events ADD COLUMN pk TEXT")
    conn.execute("ALTER TABLE events ADD COLUMN sk TEXT")
    keys = []
    for seq, text in conn.execute("SELECT seq, event FROM events").fetchall():
        try:
            event = json.loads(text)
        except ValueError:
            continue
        pk, sk = key_for(event) if isinstance(event, dict) else (None, None)
        if pk is not None:
            keys.append((pk, sk, seq))
    conn.executemany("UPDATE events SET pk = ?, sk = ? WHERE seq = ?", keys)
    first = "SELECT MIN(seq) FROM events WHERE pk IS NOT NULL GROUP BY pk, sk"
    later = f"pk IS NOT NULL AND seq NOT IN ({first})"
    (displaced,) = conn.execute(f"SELECT COUNT(*) FROM events WHERE {later}").fetchone()
    if displaced:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {DISPLACED} AS SELECT * FROM events WHERE 0")
        conn.execute(f"INSERT INTO {DISPLACED} SELECT * FROM events WHERE {later}")
        conn.execute(f"DELETE FROM events WHERE {later}")
    return int(displaced)


def connect(path: PathLike = DEFAULT_PATH) -> sqlite3.Connection:
    """Open (creating if needed) the archive for writing, schema ensured."""
    conn = sqlite3.connect(os.fspath(path), timeout=BUSY_TIMEOUT_MS / 1000)
    ensure_schema(conn)
    return conn


def insert_events(conn: sqlite3.Connection, events: Iterable[dict[str, Any]]) -> int:
    """Insert events idempotently; returns how many were new. The caller commits.

    Not committing lets a sink store its cursor in the same transaction.
    """
    before = conn.total_changes
    conn.executemany(INSERT, [insert_values(event) for event in events])
    return conn.total_changes - before


def write_events(path: PathLike, events: Iterable[dict[str, Any]]) -> int:
    """Insert events in one transaction and commit; returns how many were new."""
    conn = connect(path)
    try:
        with conn:
            return insert_events(conn, events)
    finally:
        conn.close()


@contextlib.contextmanager
def _reader(path: PathLike) -> Iterator[sqlite3.Connection]:
    """A connection for reading that never creates a missing archive by accident."""
    if not Path(path).is_file():
        raise BridgeError(f"no archive at {os.fspath(path)}: nothing was archived there yet")
    conn = sqlite3.connect(os.fspath(path), timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            conn.execute("SELECT 1 FROM events LIMIT 0")
        except sqlite3.DatabaseError as error:
            raise BridgeError(f"{os.fspath(path)} is not an events archive: {error}") from None
        yield conn
    finally:
        conn.close()


@dataclass(frozen=True)
class Filter:
    """Which archived events to read: ``createdAt`` in ``[start, end)``, log, type."""

    start: str | None = None
    end: str | None = None
    log: str | None = None
    type: str | None = None

    @classmethod
    def of(
        cls,
        start: datetime | str | float | None = None,
        end: datetime | str | float | None = None,
        log: str | None = None,
        type: str | None = None,
    ) -> Filter:
        return cls(
            to_iso(start) if start is not None else None,
            to_iso(end) if end is not None else None,
            log,
            type,
        )

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("createdAt >= ?", self.start),
            ("createdAt < ?", self.end),
            ("log = ?", self.log),
            ("type = ?", self.type),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return (" AND ".join(clauses) or "1"), params


@dataclass(frozen=True)
class Archived:
    """One archived row: its place (``seq``), its time, and the event itself."""

    seq: int
    created_at: str
    event: dict[str, Any]


def read_page(
    path: PathLike,
    where: Filter = Filter(),  # noqa: B008 - frozen dataclass, safe as a default
    after: tuple[str, int] | None = None,
    limit: int = 1000,
) -> list[Archived]:
    """Up to ``limit`` events in time order after ``(createdAt, seq)`` ``after``.

    A page opens and closes its own connection, so async code can read a large
    archive page by page in worker threads without holding a connection across
    awaits (sqlite3 connections belong to one thread).
    """
    sql, params = where.where()
    if after is not None:
        sql += " AND (createdAt, seq) > (?, ?)"
        params += list(after)
    with _reader(path) as conn:
        rows = conn.execute(
            f"SELECT seq, createdAt, event FROM events WHERE {sql} ORDER BY createdAt, seq LIMIT ?",
            [*params, limit],
        ).fetchall()
    return [Archived(seq, created, json.loads(text)) for seq, created, text in rows]


def iter_events(
    path: PathLike = DEFAULT_PATH,
    start: datetime | str | float | None = None,
    end: datetime | str | float | None = None,
    log: str | None = None,
    type: str | None = None,
    page_size: int = 1000,
) -> Iterator[dict[str, Any]]:
    """Archived events in time order with ``start <= createdAt < end``, by log and type.

    Reads page by page, so the archive may be large and may be written meanwhile.
    """
    where = Filter.of(start, end, log, type)
    after: tuple[str, int] | None = None
    while True:
        page = read_page(path, where, after, page_size)
        for row in page:
            yield row.event
        if len(page) < page_size:
            return
        after = (page[-1].created_at, page[-1].seq)


def count(
    path: PathLike = DEFAULT_PATH,
    start: datetime | str | float | None = None,
    end: datetime | str | float | None = None,
    log: str | None = None,
    type: str | None = None,
) -> int:
    """How many archived events match (0 when there is no archive file yet)."""
    if not Path(path).is_file():
        return 0
    sql, params = Filter.of(start, end, log, type).where()
    with _reader(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM events WHERE {sql}", params).fetchone()[0])


def size_bytes(path: PathLike = DEFAULT_PATH) -> int:
    """Bytes the archive takes on disk, write-ahead log included."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(os.fspath(path) + suffix).st_size
    return total


# --------------------------------------------------------------------------- async writer


class ArchiveWriterDied(BridgeError):
    """The archive's writer task died: what it was to write is not in the file."""


class ArchiveWriter:
    """Archives events for the bus without ever making ``PutEvents`` wait on disk.

    :meth:`add` only enqueues; a background task (:attr:`task`) writes batches (up to
    ``batch_size`` events or ``interval`` seconds, one transaction each) through
    aiosqlite. :meth:`flush` waits for everything added so far; :meth:`close`
    flushes first, so nothing added before shutdown is lost.

    Write errors SQLite reports are logged and counted (:attr:`failed`). Anything else
    kills the task; then nothing waits for it: a pending :meth:`flush` and every later
    one raises :class:`ArchiveWriterDied`, :meth:`add` refuses, and :meth:`close` only
    closes the file. Whoever started the writer learns of its death from :attr:`task`
    (offline's supervisor watches it).
    """

    def __init__(
        self,
        path: PathLike = DEFAULT_PATH,
        *,
        batch_size: int = BATCH_SIZE,
        interval: float = BATCH_INTERVAL,
    ) -> None:
        self.path = Path(path)
        self.batch_size = batch_size
        self.interval = interval
        self.written = 0  # events stored (duplicates by id or pk/sk not counted)
        self.batches = 0  # transactions committed
        self.failed = 0  # events lost to write errors (logged)
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._conn: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._more = asyncio.Event()  # set when events arrive or a flush is asked for
        self._flushers = 0
        self._death: ArchiveWriterDied | None = None  # what the task died of
        self._writing = 0  # events of the batch being written now

    async def start(self) -> ArchiveWriter:
        """Open the file (creating it and its schema) and start the writer task."""
        if self._task is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = await aiosqlite.connect(os.fspath(self.path))
            await ensure_schema_async(self._conn)
        except sqlite3.Error as error:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
            raise BridgeError(f"cannot open the archive {self.path}: {error}") from None
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="archive-writer")
        return self

    @property
    def task(self) -> asyncio.Task[None]:
        """The writing task (its exception, if it died of one); :meth:`start` first."""
        if self._task is None:
            raise RuntimeError("ArchiveWriter.task before start()")
        return self._task

    def add(self, event: dict[str, Any]) -> None:
        """Queue one event for the archive; never blocks. Call :meth:`start` first."""
        if self._death is not None:
            raise RuntimeError(str(self._death))
        if self._queue is None or self._closed:
            raise RuntimeError("ArchiveWriter.add() before start() or after close()")
        self._queue.put_nowait(event)
        self._more.set()

    @property
    def pending(self) -> int:
        """Events added but not yet committed."""
        return self._queue.qsize() if self._queue is not None else 0

    async def flush(self) -> None:
        """Wait until every event added so far is committed to the file; raises
        :class:`ArchiveWriterDied` if the writer died first (it never waits for it)."""
        if self._queue is None:
            return
        self._flushers += 1
        self._more.set()  # a batch still waiting for company is written at once
        try:
            await self._queue.join()  # a dying writer lets go of what it held: see _run
        finally:
            self._flushers -= 1
        if self._death is not None:
            # Raise once the task has ended: whoever watches it (offline's supervisor,
            # called back first) then knows of the death before a flusher reports it.
            await asyncio.gather(self.task, return_exceptions=True)
            raise self._death

    async def close(self) -> None:
        """Flush everything, then stop the task and close the file (after the writer's
        death: only close the file; the death is the task's to report)."""
        if self._task is None or self._closed:
            return
        self._closed = True
        if self._death is None:
            await self.flush()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> ArchiveWriter:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        """Write batches until cancelled; an exception SQLite's error handling in
        :meth:`_write` did not expect ends the task, never a flush's wait."""
        assert self._queue is not None
        try:
            await self._write_batches(self._queue)
        except Exception as error:
            lost = self._writing + self._abandon(self._queue)  # the batch was not committed
            self.failed += lost
            self._death = ArchiveWriterDied(
                f"{type(error).__name__}: {error} ({lost} accepted events it still held "
                "are not archived)"
            )
            logger.debug("archive: the writer died", exc_info=error)
            raise self._death from error

    @staticmethod
    def _abandon(queue: asyncio.Queue[dict[str, Any]]) -> int:
        """Let go of every queued event, unwritten, so no flush waits for them; how many."""
        held = 0
        while not queue.empty():
            queue.get_nowait()
            queue.task_done()
            held += 1
        return held

    async def _write_batches(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.interval
            while len(batch) < self.batch_size:
                if not queue.empty():  # one consumer: non-empty stays non-empty
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0 or self._flushers:
                    break  # a flush is waiting: write what we have now
                self._more.clear()
                try:
                    await asyncio.wait_for(self._more.wait(), remaining)
                except TimeoutError:
                    break
            self._writing = len(batch)
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    queue.task_done()
            self._writing = 0

    async def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        """One transaction; a file locked by another writer (a sink, a user's sqlite3
        shell) is waited out with backoff instead of dropping the batch."""
        assert self._conn is not None
        for attempt in range(LOCKED_RETRIES):
            try:
                await self._conn.executemany(INSERT, rows)
                await self._conn.commit()
                return
            except sqlite3.OperationalError as error:
                with contextlib.suppress(sqlite3.Error):
                    await self._conn.rollback()
                locked = "locked" in str(error) or "busy" in str(error)
                if not locked or attempt == LOCKED_RETRIES - 1:
                    raise
                logger.warning("archive: %s is locked by another writer; retrying", self.path)
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt))

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        assert self._conn is not None
        rows: list[tuple[Any, ...]] = []
        try:
            for event in batch:
                try:
                    rows.append(insert_values(event))
                except (BridgeError, TypeError, ValueError) as error:
                    self.failed += 1
                    logger.error("archive: event not archived: %s", error)
            before = self._conn.total_changes
            await self._insert(rows)
            self.written += self._conn.total_changes - before
            self.batches += 1
        except sqlite3.Error as error:
            self.failed += len(rows)
            logger.error("archive: %d events not archived in %s: %s", len(rows), self.path, error)
            with contextlib.suppress(sqlite3.Error):
                await self._conn.rollback()
