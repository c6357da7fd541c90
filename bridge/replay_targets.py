"""Where ``bridge replay --from sqlite`` sends events: the local bus, a local log table,
another archive file, or nowhere (benchmarks).

A target takes rows in the order the replay reads them (archive time order) through
:meth:`add`, buffers what it may send together, and sends on :meth:`flush`, which the
replay also calls before it waits for the next event's due time (``--speed``), so
pacing never holds back an event that is due. :meth:`check` runs before anything is
read or sent: a missing table or an endpoint that is not local is one clear error and
nothing is written.

* :class:`BusTarget` — PutEvents (10 entries / 256 KB a call) with each entry's own
  ``Time`` and the local extension ``replay-name``: `bridge offline`'s bus delivers such
  entries as a replay (the top-level ``replay-name`` handlers see on a replay) and does
  not archive them. botocore knows no such member, so it is added to the serialized
  body of the client's PutEvents calls (:func:`with_replay_name`).
* :class:`DynamoDBTarget` — the log items, in :func:`bridge.core.rewrite.waves` (25 a
  call, one version of a stream per call, versions ascending), ``UnprocessedItems``
  retried. Rows of one ``createdAt`` are never split between two flushes, so the
  versions of a stream archived in the same second (EventBridge's ``time`` has whole
  seconds) are ordered together.
  An unchanged item rewritten makes no stream record: replaying twice publishes once.
* :class:`SqliteTarget` — the rows into another archive file, idempotently (log events
  by ``pk``/``sk``, others by id), one transaction per flush.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bridge import archive
from bridge.archive_pages import Row
from bridge.core.errors import BridgeError
from bridge.core.events import MAX_ENTRIES_PER_PUT, MAX_PUT_BYTES, entry_size
from bridge.core.names import BUS_NAME
from bridge.core.rewrite import REPLAY_NAME_MEMBER, entry_of, log_item_of, waves

RETRIES = 10
FLUSH_ITEMS = 500  # log items buffered before a BatchWriteItem wave is written
FLUSH_ROWS = 1000  # rows per transaction into another archive


@dataclass
class Sent:
    """What a target did: events sent or written, and what it skipped, by reason."""

    sent: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class ReplayTarget(Protocol):
    name: str
    result: Sent

    def where(self) -> str:
        """Where the events go, for the summary and ``--dry-run``."""

    def check(self) -> None:
        """Refuse before anything is sent (missing table, endpoint not local…)."""

    def add(self, row: Row) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))


# --------------------------------------------------------------------------- bus


def with_replay_name(client: Any, name: str) -> Any:
    """Make every PutEvents call of ``client`` carry ``replay-name: name`` in each entry.

    Added to the JSON body botocore serialized (its model has no such member and its
    parameter validation would refuse it), before the request is signed and sent."""

    def add_member(params: dict[str, Any], **_: Any) -> None:
        body = json.loads(params["body"])
        for entry in body.get("Entries", []):
            entry[REPLAY_NAME_MEMBER] = name
        params["body"] = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    client.meta.events.register("before-call.events.PutEvents", add_member)
    return client


class BusTarget:
    """PutEvents into the local bus as a replay named ``replay_name``.

    One call is in flight while the next batch is read and built: a single sender
    thread takes the batches in order (so the bus receives them in time order), and
    :meth:`flush` waits for the call before the one it hands over. Reading the
    archive and encoding entries thus overlap the bus's answer instead of adding to it.
    """

    name = "bus"

    def __init__(self, client: Any, url: str, replay_name: str) -> None:
        self.client = with_replay_name(client, replay_name)
        self.url = url
        self.replay_name = replay_name
        self.result = Sent()
        self._batch: list[dict[str, Any]] = []
        self._bytes = 0
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-bus")
        self._in_flight: Future[None] | None = None

    def where(self) -> str:
        return f"the bus {BUS_NAME} at {self.url} as replay {self.replay_name}"

    def check(self) -> None:
        self.client.describe_event_bus(Name=BUS_NAME)  # reachable, and the bus exists

    def add(self, row: Row) -> None:
        entry = entry_of(row.event, keep_time=True)
        size = entry_size(entry)
        if self._batch and (
            len(self._batch) == MAX_ENTRIES_PER_PUT or self._bytes + size > MAX_PUT_BYTES
        ):
            self.flush()
        self._batch.append(entry)
        self._bytes += size

    def flush(self) -> None:
        """Hand the batch to the sender (after the previous call has been answered:
        a refusal stops the replay at the next flush, one batch later at most)."""
        self._wait()
        if self._batch:
            batch, self._batch, self._bytes = self._batch, [], 0
            self._in_flight = self._sender.submit(self._put, batch)

    def _wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()  # raises what the call raised

    def _put(self, pending: list[dict[str, Any]]) -> None:
        for attempt in range(RETRIES):
            answer = self.client.put_events(Entries=pending)
            results = answer.get("Entries", [])
            if not answer.get("FailedEntryCount"):
                self.result.sent += len(pending)
                return
            throttled = (None, "ThrottlingException")
            refused = [r for r in results if r.get("ErrorCode") not in throttled]
            if refused:
                raise BridgeError(
                    f"the bus refused an event: {refused[0].get('ErrorCode')}: "
                    f"{refused[0].get('ErrorMessage', '')}"
                )
            again = [e for e, r in zip(pending, results, strict=True) if r.get("ErrorCode")]
            self.result.sent += len(pending) - len(again)
            pending = again
            _backoff(attempt)
        raise BridgeError(f"the bus kept throttling: {len(pending)} events not sent")

    def close(self) -> None:
        """Wait for the last call (its error, if any, is raised here)."""
        try:
            self._wait()
        finally:
            self._sender.shutdown(wait=True)


# --------------------------------------------------------------------------- dynamodb


class DynamoDBTarget:
    """Log items into ``table`` on a local endpoint, streams in version order.

    Like :class:`BusTarget`, one flush is written by a sender thread while the next is
    read: flushes are written one after the other, in order, so a stream's versions
    still reach the table in ascending order."""

    name = "dynamodb"

    def __init__(self, client: Any, table: str, url: str) -> None:
        from boto3.dynamodb.types import TypeSerializer

        self.client = client  # a low-level boto3 DynamoDB client
        self.table = table
        self.url = url
        self.result = Sent()
        self._items: list[tuple[str, dict[str, Any]]] = []  # (createdAt, item)
        self._serialize = TypeSerializer().serialize
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-dynamodb")
        self._in_flight: Future[None] | None = None
        self._threshold = FLUSH_ITEMS

    def where(self) -> str:
        return f"the table {self.table} at {self.url}"

    def check(self) -> None:
        try:
            self.client.describe_table(TableName=self.table)
        except self.client.exceptions.ResourceNotFoundException:
            raise BridgeError(
                f"table {self.table} does not exist at {self.url}: start `bridge offline` "
                "there, or `bridge tables create`"
            ) from None

    def add(self, row: Row) -> None:
        detail = row.event.get("detail")
        if isinstance(detail, dict) and detail.get("partial"):
            self.result.skip("partial (payload over 10 KB not in the archive)")
            return
        item = log_item_of(row.event)
        if item is None:
            self.result.skip("not a log event")
            return
        self._items.append((row.created_at, item))
        if len(self._items) >= self._threshold:
            self._write(hold_last_time=True)
            self._threshold = len(self._items) + FLUSH_ITEMS  # what was held, and more

    def flush(self) -> None:
        self._write(hold_last_time=False)

    def _write(self, hold_last_time: bool) -> None:
        items = self._items
        if hold_last_time and items:
            # The next row may share the last time, and the archive orders one time's
            # rows by arrival, not version: keep that time's rows for the next flush
            # (all of them while one time fills the buffer: one second of events at most).
            last = items[-1][0]
            cut = len(items)
            while cut > 0 and items[cut - 1][0] == last:
                cut -= 1
            if cut == 0:
                return
            items, self._items = items[:cut], items[cut:]
        else:
            self._items = []
        self._wait()
        if items:
            self._in_flight = self._sender.submit(self._batch_write, [i for _, i in items])

    def _wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()  # raises what the write raised

    def _batch_write(self, items: list[dict[str, Any]]) -> None:
        for call in waves(items):
            requests = [
                {"PutRequest": {"Item": {k: self._serialize(v) for k, v in item.items()}}}
                for item in call
            ]
            pending: dict[str, Any] = {self.table: requests}
            for attempt in range(RETRIES):
                answer = self.client.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
                _backoff(attempt)
            else:
                left = len(pending.get(self.table, []))
                raise BridgeError(
                    f"{left} items stayed unprocessed after {RETRIES} BatchWriteItem retries"
                )
            self.result.sent += len(call)

    def close(self) -> None:
        """Wait for the last write (its error, if any, is raised here)."""
        try:
            self._wait()
        finally:
            self._sender.shutdown(wait=True)


# --------------------------------------------------------------------------- sqlite


class SqliteTarget:
    """A filtered copy: the rows, as archived, into another archive file."""

    name = "sqlite"

    def __init__(self, out: Path, source: Path) -> None:
        self.out = out
        self.source = source
        self.result = Sent()
        self._conn: sqlite3.Connection | None = None
        self._rows: list[tuple[Any, ...]] = []

    def where(self) -> str:
        return f"the archive file {os.fspath(self.out)}"

    def check(self) -> None:
        if self.out.exists() and self.source.exists() and self.out.samefile(self.source):
            raise BridgeError(f"--out {self.out} is the archive replayed from: choose another file")
        if archive.is_offline_database(self.out):
            raise BridgeError(
                f"--out {self.out} is a `bridge offline` database; copy into a file of its own"
            )
        if self.out.is_dir():
            raise BridgeError(f"--out {self.out} is a folder, not a file")

    def add(self, row: Row) -> None:
        pk, sk = archive.key_for(row.event)
        log, type_ = archive.row_for(row.event)[2:4]
        text = json.dumps(row.event, separators=(",", ":"), ensure_ascii=False)
        self._rows.append((row.event["id"], row.created_at, log, type_, text, pk, sk))
        if len(self._rows) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        if self._conn is None:
            try:
                self._conn = archive.connect(self.out)
            except sqlite3.Error as error:
                raise BridgeError(f"cannot write {self.out}: {error}") from None
        rows, self._rows = self._rows, []
        with self._conn:
            before = self._conn.total_changes
            self._conn.executemany(archive.INSERT, rows)
            new = self._conn.total_changes - before
        self.result.sent += new
        if len(rows) > new:
            self.result.skipped["already in --out"] = (
                self.result.skipped.get("already in --out", 0) + len(rows) - new
            )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# --------------------------------------------------------------------------- none


class NullTarget:
    """Takes every event and sends nothing: the cost of reading and pacing alone."""

    name = "none"

    def __init__(self) -> None:
        self.result = Sent()

    def where(self) -> str:
        return "nowhere"

    def check(self) -> None:
        return None

    def add(self, row: Row) -> None:
        self.result.sent += 1

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None
