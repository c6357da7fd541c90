"""The embedded DynamoDB keeps every write it acknowledged, as DynamoDB Local with a db path does.

moto keeps tables in memory. This module, loaded in the endpoint's own process
(:mod:`bridge.offline.dynamodb`), makes them outlive it — ``kill -9`` of the endpoint
or of `bridge offline` included — and makes its stream behave as DynamoDB's does.

**Writes are serialized.** Every write request runs under one lock (:data:`WRITE_LOCK`):
moto's stream shard numbers a record ``len(records) + start`` and then appends it,
and its conditional checks read then write, neither under a lock of its own; under a
threaded server two writes could share a sequence number or both pass one
``attribute_not_exists`` check. moto is bound by the interpreter lock anyway, so
serializing costs no throughput.

**A write that changes nothing emits no stream record** (a put of an item identical to
the stored one), as DynamoDB documents; moto would emit a MODIFY record.

**The journal.** While a write runs, hooks in moto's models note which items and tables
it touched. When it is done — still under the write lock, so journal order is the
order writes were applied — their *resulting* state is encoded as one journal entry:
whole item images (``put``) or deletions (``del``), whole table definitions
(``table``, ``drop``), and the stream records the write added, verbatim (sequence
number, event id, images, time). Reading the state after the write, rather than
logging the request, makes the entry right whatever moto did: a transaction it
rolled back journals the images it restored and no stream record. The response is
held until the entry is on disk (:class:`bridge.offline.journal.Journal` group-commits
concurrent writes into one ``write``).

**Nothing not yet durable is ever shown.** A read waits, after moto computed its
answer, until every write begun before then is on disk (usually no wait at all). So
the poller can never publish — nor a handler act on — a record that a crash would
take back: whatever reached the archive is in the table after a restart.

**The snapshot and the fold.** The SQLite file holds a snapshot of every table as of a
journal segment (:mod:`bridge.offline.state`). A sealed segment is folded into it in
one transaction, in a background thread, and then deleted: under an unbroken stream
of writes the journal stays a segment or two long, so a restart replays at most that
much over the snapshot. Folding reads the journal, never moto's memory, so it needs
no lock against writes. `bridge offline` also asks for a fold at quiet moments and at
a clean stop (``POST /__bridge/fold``).

**Streams and checkpoints.** A table's stream keeps its label (so its ARN) and its
sequence numbering across restarts: the snapshot keeps the label, the next sequence
number and the records the poller has not checkpointed yet (its checkpoints are in
the same file); the journal keeps the newer ones. At start the stream is rebuilt
from both, minus what the poller checkpointed, and its trim horizon starts there.
So the poller's checkpoint still means what it meant: records after it are
delivered — a write acknowledged but not published before the crash is published
after it — and records before it are not. A batch published but not yet
checkpointed when the crash came is delivered again (at least once, as Lambda's
stream trigger); the archive keeps one event per log item.

**Durability is a choice.** By default an entry is durable when ``write`` returned: it
survives ``kill -9`` of any process, not a power cut. ``fsync=True`` (``bridge offline
--fsync``) adds a disk flush per group commit.

Not journaled: ``ImportTable`` (moto imports from S3 in a thread of its own), tags,
backups themselves (a table restored from one is journaled whole).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bridge.core.names import DEFAULT_REGION
from bridge.offline import state
from bridge.offline.journal import (
    SEGMENT_ENTRIES,
    Journal,
    JournalLock,
    encode,
    read_segment,
    segments,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
WRITE_LOCK = threading.Lock()  # moto's state is per process, so is the lock over it
_install_lock = threading.Lock()
_installed = False
_recording: _Recorder | None = None  # the write running now (under WRITE_LOCK), if journaled
TableKey = tuple[str, str, str]  # account, region, table name
_TIME = "ApproximateCreationDateTime"


# --------------------------------------------------------------------------- moto hooks


class _Recorder:
    """What one write request touched, noted by the hooks as moto runs it."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str, str, str], tuple[Any, Any, dict[str, Any]]] = {}
        self.tables: dict[TableKey, tuple[bool, bool]] = {}  # → (fresh, with its items)

    def key(self, table: Any, hash_key: Any, range_key: Any) -> None:
        key = {table.hash_key_attr: hash_key.to_json()}
        if table.range_key_attr is not None and range_key is not None:
            key[table.range_key_attr] = range_key.to_json()
        key = state.to_wire(key)
        where = (table.account_id, table.region_name, table.name, state.key_text(key))
        self.keys.setdefault(where, (hash_key, range_key, key))

    def table(self, where: TableKey, fresh: bool, with_items: bool) -> None:
        before = self.tables.get(where, (False, False))
        self.tables[where] = (before[0] or fresh, before[1] or with_items)


def install() -> None:
    """Patch moto's models once per process: the identical-write rule, a stream read
    from a trimmed position, and the hooks the journal's recorder listens to."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from moto.dynamodb.models import DynamoDBBackend
        from moto.dynamodb.models.table import StreamShard, Table

        add, get = StreamShard.add, StreamShard.get

        def add_unless_unchanged(self: Any, old: Any, new: Any) -> None:
            # DynamoDB: "If you perform a PutItem or UpdateItem operation that does not
            # change any data in an item, DynamoDB Streams does not write a stream record."
            if old is not None and new is not None and old == new:
                return
            add(self, old, new)

        def get_from_trim_horizon(self: Any, start: int, quantity: int) -> Any:
            # Records before the horizon were trimmed (published before a restart):
            # read from the horizon on instead of failing moto's assertion.
            return get(self, max(start, self.starting_sequence_number), quantity)

        _patch(StreamShard, "add", add_unless_unchanged)
        _patch(StreamShard, "get", get_from_trim_horizon)

        put, delete = Table.put_item, Table.delete_item

        @functools.wraps(put)
        def put_item(self: Any, *args: Any, **kwargs: Any) -> Any:
            item = put(self, *args, **kwargs)
            if _recording is not None:
                _recording.key(self, item.hash_key, item.range_key)
            return item

        @functools.wraps(delete)
        def delete_item(self: Any, hash_key: Any, range_key: Any) -> Any:
            item = delete(self, hash_key, range_key)
            if _recording is not None and item is not None:
                _recording.key(self, item.hash_key, item.range_key)
            return item

        _patch(Table, "put_item", put_item)
        _patch(Table, "delete_item", delete_item)

        update = DynamoDBBackend.update_item

        @functools.wraps(update)
        def update_item(self: Any, table_name: str, *args: Any, **kwargs: Any) -> Any:
            item = update(self, table_name, *args, **kwargs)  # changes the item in place
            if _recording is not None:
                _recording.key(self.get_table(table_name), item.hash_key, item.range_key)
            return item

        _patch(DynamoDBBackend, "update_item", update_item)
        for method, fresh, with_items in (
            ("create_table", True, False),
            ("delete_table", False, False),
            ("update_table", False, False),
            ("update_time_to_live", False, False),
            ("restore_table_from_backup", True, True),
            ("restore_table_to_point_in_time", True, True),
        ):
            if hasattr(DynamoDBBackend, method):
                _hook_table_method(DynamoDBBackend, method, fresh, with_items)
        _installed = True


def _hook_table_method(cls: Any, method: str, fresh: bool, with_items: bool) -> None:
    original = getattr(cls, method)

    @functools.wraps(original)
    def hooked(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if _recording is not None:
            name = getattr(result, "name", None)
            if not isinstance(name, str):  # update_time_to_live returns nothing
                given = args[0] if args else next(iter(kwargs.values()))
                name = self.get_table(given).name
            _recording.table((self.account_id, self.region_name, name), fresh, with_items)
        return result

    _patch(cls, method, hooked)


def _patch(owner: type, name: str, replacement: Callable[..., Any]) -> None:
    """Replace a method of one of moto's model classes — what these hooks are for. mypy
    rightly refuses assigning to a method; replacing one on purpose is said here, once."""
    setattr(owner, name, replacement)


# --------------------------------------------------------------------------- moto state


_backends: dict[tuple[str, str], Any] = {}


def _backend(account: str, region: str) -> Any:
    """moto's backend of an account and region (looked up once: moto's lookup is slow)."""
    backend = _backends.get((account, region))
    if backend is None:
        from moto.dynamodb.models import dynamodb_backends

        backend = _backends[(account, region)] = dynamodb_backends[account][region]
    return backend


def _all_tables() -> list[Any]:
    from moto.dynamodb.models import dynamodb_backends

    tables: list[Any] = []
    for account in list(dynamodb_backends):
        for region in list(dynamodb_backends[account]):
            tables.extend(dynamodb_backends[account][region].tables.values())
    return tables


def table_definition(table: Any) -> dict[str, Any]:
    """What rebuilds the table: ``create_table`` arguments, plus its TTL setting."""
    definition = state._definition(table.describe(base_key="Table")["Table"])
    if table.ttl != {"TimeToLiveStatus": "DISABLED"}:
        definition["TimeToLive"] = dict(table.ttl)
    return definition


def stream_meta(table: Any) -> dict[str, Any] | None:
    """A table's stream as the snapshot keeps it: label, ARN, shard and next number."""
    label, shard = table.latest_stream_label, table.stream_shard
    if label is None and shard is None:
        return None
    return {
        "label": label,
        "arn": f"{table.table_arn}/stream/{label}" if label else None,
        "shard": None
        if shard is None
        else {
            "created": shard.created_on.isoformat(),
            "next": shard.starting_sequence_number + len(shard.items),
        },
    }


def _record_json(record: dict[str, Any]) -> dict[str, Any]:
    dynamodb = dict(record["dynamodb"])
    if isinstance(dynamodb.get(_TIME), datetime):
        dynamodb[_TIME] = dynamodb[_TIME].isoformat()
    return {**record, "dynamodb": dynamodb}


def _record_object(data: dict[str, Any]) -> Any:
    from moto.dynamodb.models.table import StreamRecord

    dynamodb = dict(data["dynamodb"])
    if isinstance(dynamodb.get(_TIME), str):
        dynamodb[_TIME] = datetime.fromisoformat(dynamodb[_TIME])
    record = object.__new__(StreamRecord)  # untracked, as _make_item's items
    record.record = {**data, "dynamodb": dynamodb}
    return record


def _sequence(record: Any) -> int:
    return int(record.record["dynamodb"]["SequenceNumber"])


def _make_item(table: Any, image: dict[str, Any]) -> Any:
    """A moto Item from a stored image, built directly: moto's constructor checks the
    size once per attribute (quadratic; the image passed when it was written) and
    keeps every instance in a list forever (what its reset API walks)."""
    from moto.dynamodb.models.dynamo_type import Item, LimitedSizeDict

    item = object.__new__(Item)
    attrs = LimitedSizeDict.__new__(LimitedSizeDict)
    dict.update(attrs, {name: _dynamo(value) for name, value in image.items()})
    item.attrs = attrs
    item.hash_key = attrs[table.hash_key_attr]
    item.range_key = attrs[table.range_key_attr] if table.range_key_attr else None
    return item


def _dynamo(value: dict[str, Any]) -> Any:
    """``DynamoType(value)``, without its constructor's generic detours (a restart
    builds hundreds of thousands)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    ((kind, inner),) = value.items()
    typed = DynamoType.__new__(DynamoType)
    typed.type = kind
    if kind == "L":
        inner = [_dynamo(v) for v in inner]
    elif kind == "M":
        inner = {k: _dynamo(v) for k, v in inner.items()}
    typed.value = inner
    return typed


def _store_item(table: Any, item: Any) -> None:
    if table.range_key_attr:
        table.items[item.hash_key][item.range_key] = item
    else:
        table.items[item.hash_key] = item


def _remove_item(table: Any, key: dict[str, Any]) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    key = state.from_wire(key)  # keys are journaled as text; moto holds binary as bytes
    hash_key = DynamoType(key[table.hash_key_attr])
    if table.range_key_attr:
        table.items.get(hash_key, {}).pop(DynamoType(key[table.range_key_attr]), None)
    else:
        table.items.pop(hash_key, None)


def _create_table(account: str, region: str, name: str, definition: dict[str, Any]) -> Any:
    """Create a table in moto from a stored definition (no stream records, no hooks)."""
    backend = _backend(account, region)
    spec = definition.get("StreamSpecification")
    arguments = {
        "name": name,
        "schema": definition["KeySchema"],
        "throughput": definition.get("ProvisionedThroughput"),
        "attr": definition["AttributeDefinitions"],
        "global_indexes": definition.get("GlobalSecondaryIndexes"),
        "indexes": definition.get("LocalSecondaryIndexes"),
        "streams": dict(spec) if spec else None,
        "billing_mode": definition.get("BillingMode", "PAY_PER_REQUEST"),
        "sse_specification": None,
        "tags": [],
        "deletion_protection_enabled": False,
        "warm_throughput": None,
    }
    accepted = inspect.signature(backend.create_table).parameters
    backend.tables.pop(name, None)
    table = backend.create_table(**{k: v for k, v in arguments.items() if k in accepted})
    if "TimeToLive" in definition:
        table.ttl = dict(definition["TimeToLive"])
    return table


def _set_stream(table: Any, meta: dict[str, Any] | None, records: list[Any]) -> None:
    """Give a table the stream the snapshot describes, holding ``records``."""
    from moto.dynamodb.models.table import StreamShard

    if meta is None:
        table.latest_stream_label, table.stream_shard = None, None
        return
    table.latest_stream_label = meta["label"]
    shard_meta = meta.get("shard")
    if shard_meta is None:
        table.stream_shard = None
        return
    shard = table.stream_shard or StreamShard(table.account_id, table)
    shard.table = table
    shard.created_on = datetime.fromisoformat(shard_meta["created"])
    shard.items = list(records)
    shard.starting_sequence_number = _sequence(records[0]) if records else int(shard_meta["next"])
    table.stream_shard = shard


def _trim(table: Any, published: int | None, oldest: datetime) -> None:
    """Drop the records the poller checkpointed and those older than the retention."""
    shard = table.stream_shard
    if shard is None:
        return
    start, items = shard.starting_sequence_number, shard.items
    drop = 0
    if published is not None:
        drop = max(0, min(len(items), published + 1 - start))
    while drop < len(items) and _created(items[drop]) < oldest:
        drop += 1
    if drop:
        shard.items = items[drop:]
        shard.starting_sequence_number = start + drop
    if published is not None and shard.starting_sequence_number <= published:
        # A checkpoint past the stream's end (it cannot be, but if it were, new
        # records numbered below it would never be read): number on from it.
        shard.starting_sequence_number = published + 1


def _created(record: Any) -> datetime:
    when = record.record["dynamodb"].get(_TIME)
    return when if isinstance(when, datetime) else datetime.max


# --------------------------------------------------------------------------- the tables


def _exit(message: str) -> None:
    """The endpoint cannot keep what it acknowledged any more: say so, and end now."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(70)


class DurableTables:
    """The journal and snapshot of one endpoint process. :meth:`load` before serving."""

    def __init__(
        self,
        db: str | os.PathLike[str],
        region: str = DEFAULT_REGION,
        *,
        fsync: bool = False,
        segment_entries: int = SEGMENT_ENTRIES,
        on_fatal: Callable[[str], None] = _exit,
    ) -> None:
        self.db = Path(db)
        self.region = region
        self.fsync = fsync
        self.segment_entries = segment_entries
        self.on_fatal = on_fatal
        self.journal: Journal | None = None
        self._conn: Any = None
        self._lock: JournalLock | None = None
        self._next: dict[TableKey, int] = {}  # per stream: the first record not journaled
        self._sealed = threading.Event()
        self._closing = threading.Event()
        self._fold_lock = threading.Lock()  # one fold at a time; guards the connection
        self._folder: threading.Thread | None = None
        self.replayed = 0  # journal entries applied over the snapshot at load
        self.folded = 0  # segments folded since load

    # ------------------------------------------------------------------ start

    def load(self) -> dict[str, int]:
        """Rebuild the tables from the snapshot and the journal; returns items per table."""
        install()
        self._lock = JournalLock(self.db).acquire()
        try:
            conn = self._conn = state.connect(self.db)
            state.migrate_snapshot(conn, state.ENDPOINT_ACCOUNT, self.region)
            folded = state.folded_through(conn)
            new_streams = self._load_snapshot(conn)
            found = segments(self.db)
            for number, path in found:
                if number <= folded:  # folded before a crash took its file
                    path.unlink(missing_ok=True)
                    continue
                for entry in read_segment(path):
                    self._replay(entry)
                    self.replayed += 1
            # moto stamps records with naive UTC times
            oldest = datetime.fromtimestamp(time.time() - state.STREAM_RETENTION, UTC)
            oldest = oldest.replace(tzinfo=None)
            conn.execute("BEGIN IMMEDIATE")
            for table in _all_tables():
                where = (table.account_id, table.region_name, table.name)
                meta = stream_meta(table)
                _trim(table, state.checkpoint(conn, (meta or {}).get("arn")), oldest)
                if table.stream_shard is not None:
                    shard = table.stream_shard
                    self._next[where] = shard.starting_sequence_number + len(shard.items)
                if where in new_streams and meta is not None:  # keep its label from now on
                    state.set_stream(conn, *where, stream_meta(table) or meta)
            conn.execute("COMMIT")
            last = max([folded, *(n for n, _ in found)])
            self.journal = Journal(
                self.db,
                last + 1,
                fsync=self.fsync,
                segment_entries=self.segment_entries,
                on_sealed=self._sealed.set,
                on_fatal=self.on_fatal,
            )
        except BaseException:
            self._release()
            raise
        self._folder = threading.Thread(target=self._fold_loop, name="journal-fold", daemon=True)
        self._folder.start()
        if any(n > folded for n, _ in found):
            self._sealed.set()  # fold what was replayed, in the background
        counts: dict[str, int] = {}
        for table in _all_tables():
            counts[table.name] = counts.get(table.name, 0) + len(table)
        return counts

    def _load_snapshot(self, conn: Any) -> set[TableKey]:
        """Tables, items and kept stream records into moto; returns the tables whose
        stream the snapshot did not name (made anew now)."""
        new_streams = set()
        for account, region, name, definition, stream in state.snapshot_tables(conn):
            table = _create_table(account, region, name, definition)
            for image in state.snapshot_items(conn, account, region, name):
                _store_item(table, _make_item(table, state.from_wire(image)))
            if stream is None:
                new_streams.add((account, region, name))
                continue
            published = state.checkpoint(conn, stream.get("arn"))
            kept = state.snapshot_records(conn, account, region, name, after=published)
            records = [_record_object(r) for r in kept]
            _set_stream(table, stream, records)
        return new_streams

    def _replay(self, entry: dict[str, Any]) -> None:
        """Apply one journal entry to moto's memory (no stream records are emitted)."""
        for op in entry.get("ops", ()):
            kind, account, region, name = op[:4]
            backend = _backend(account, region)
            if kind == "put":
                table = backend.tables.get(name)
                if table is not None:
                    _store_item(table, _make_item(table, op[5]))
            elif kind == "del":
                table = backend.tables.get(name)
                if table is not None:
                    _remove_item(table, op[4])
            elif kind == "table":
                fresh, definition, meta, items = op[4], op[5], op[6], op[7]
                old = None if fresh else backend.tables.get(name)
                table = _create_table(account, region, name, definition)
                if old is not None:
                    table.items = old.items
                    same = (meta or {}).get("label") == old.latest_stream_label
                    if same and old.stream_shard is not None and meta and meta.get("shard"):
                        table.latest_stream_label = old.latest_stream_label
                        table.stream_shard = old.stream_shard
                        table.stream_shard.table = table
                        meta = None
                if meta is not None:
                    _set_stream(table, meta, [])
                for image in items or ():
                    _store_item(table, _make_item(table, image))
            elif kind == "drop":
                backend.tables.pop(name, None)
        for account, region, name, data in entry.get("stream", ()):
            table = _backend(account, region).tables.get(name)
            shard = table.stream_shard if table is not None else None
            if shard is None:
                continue
            record = _record_object(data)
            sequence, following = (
                _sequence(record),
                shard.starting_sequence_number + len(shard.items),
            )
            if sequence < following:
                continue  # the snapshot has it already
            if sequence > following:
                log.warning("stream of %s: records %d to %d are missing", name, following, sequence)
                shard.items, shard.starting_sequence_number = [], sequence
            shard.items.append(record)

    # ------------------------------------------------------------------ writes

    def write(self, call: Callable[[], T]) -> T:
        """Run one write request: serialized, journaled; returns once it is durable."""
        global _recording
        assert self.journal is not None
        with WRITE_LOCK:
            ticket = self.journal.reserve()
            recorder = _recording = _Recorder()
            try:
                result = call()
            finally:
                _recording = None
                try:
                    data = self._entry(recorder)
                except BaseException as error:
                    self.on_fatal(f"a write could not be journaled: {error!r}")
                    raise
                self.journal.append(ticket, data)
        self.journal.wait(ticket)
        return result

    def after_read(self) -> None:
        """Hold a read's answer until every write begun before it is durable."""
        assert self.journal is not None
        self.journal.wait(self.journal.reserved)

    def _entry(self, recorder: _Recorder) -> bytes:
        """The journal line of a finished write: the state it left, and its new records."""
        ops: list[list[Any]] = []
        touched: dict[TableKey, None] = {}
        for where, (fresh, with_items) in recorder.tables.items():
            table = _backend(*where[:2]).tables.get(where[2])
            if table is None:
                ops.append(["drop", *where])
                self._next.pop(where, None)
                continue
            items = [i.to_json()["Attributes"] for i in table.all_items()] if with_items else None
            ops.append(["table", *where, fresh, table_definition(table), stream_meta(table), items])
            shard = table.stream_shard
            if shard is not None:
                self._next[where] = shard.starting_sequence_number + len(shard.items)
            else:
                self._next.pop(where, None)
        for (account, region, name, _), (hash_key, range_key, key) in recorder.keys.items():
            table = _backend(account, region).tables.get(name)
            if table is None:
                continue
            item = table.get_item(hash_key, range_key if table.range_key_attr else None)
            if item is None:
                ops.append(["del", account, region, name, key])
            else:
                ops.append(["put", account, region, name, key, item.to_json()["Attributes"]])
            touched[(account, region, name)] = None
        records: list[list[Any]] = []
        for where in touched:
            table = _backend(*where[:2]).tables.get(where[2])
            shard = table.stream_shard if table is not None else None
            if shard is None:
                continue
            start = shard.starting_sequence_number
            first = self._next.get(where, start)
            for record in shard.items[max(0, first - start) :]:
                records.append([*where, _record_json(record.to_json())])
            self._next[where] = start + len(shard.items)
        if not ops and not records:
            return b""
        return encode({"ops": ops, "stream": records})

    # ------------------------------------------------------------------ folding

    def fold(self) -> dict[str, int]:
        """Fold the whole journal into the snapshot now; returns items per table."""
        assert self.journal is not None
        self.journal.rotate()
        self._fold_sealed()
        with self._fold_lock:
            return state.snapshot_counts(self._conn)

    def _fold_sealed(self) -> None:
        assert self.journal is not None
        with self._fold_lock:
            for number, path in segments(self.db):
                if number >= self.journal.segment:
                    break  # the open one
                state.fold_segment(self._conn, number, read_segment(path))
                path.unlink(missing_ok=True)
                self.folded += 1

    def _fold_loop(self) -> None:
        while not self._closing.is_set():
            self._sealed.wait()
            self._sealed.clear()
            if self._closing.is_set():
                return
            try:
                self._fold_sealed()
            except Exception as error:  # noqa: BLE001 - the journal still holds it all
                log.error("folding the journal into %s failed (retrying): %s", self.db, error)
                if self._closing.wait(5.0):
                    return
                self._sealed.set()

    # ------------------------------------------------------------------ stop

    def close(self, timeout: float = 5.0) -> None:
        """Write what is appended and stop folding (a fold under way may finish)."""
        self._closing.set()
        self._sealed.set()
        if self.journal is not None:
            self.journal.close()
        if self._folder is not None:
            self._folder.join(timeout)
            if self._folder.is_alive():
                return  # still folding: the lock goes with the process, not before
        self._release()

    def _release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
