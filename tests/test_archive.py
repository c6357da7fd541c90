"""The SQLite archive: batched async writes, idempotence, no loss on close, WAL readers."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge import archive
from bridge.archive import ArchiveWriter
from bridge.core.errors import BridgeError

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def event(n: int, *, log: str = "users", type: str = "signup", at: datetime | None = None) -> dict:
    when = at or T0 + timedelta(seconds=n)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "stream changes",
        "source": "dynamodb-log",
        "account": "000000000000",
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "log": log,
            "key": {"pk": f"{log}#{n}#stream", "sk": 1},
            "type": type,
            "payload": {"id": str(n)},
        },
    }


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "db"


async def test_writes_in_batches_and_add_never_waits(db: Path) -> None:
    events = [event(n) for n in range(1200)]
    async with ArchiveWriter(db, batch_size=500, interval=0.05) as writer:
        for item in events:
            writer.add(item)  # plain call: nothing awaited per event
        assert writer.pending > 0  # nothing written synchronously
        await writer.flush()
        assert writer.pending == 0
        assert writer.written == 1200
        # 1200 events queued at once fit in 3 transactions of at most 500
        assert writer.batches == 3
    assert archive.count(db) == 1200
    assert [e["id"] for e in archive.iter_events(db)] == [e["id"] for e in events]


async def test_small_trickle_is_written_within_the_interval(db: Path) -> None:
    async with ArchiveWriter(db, interval=0.02) as writer:
        writer.add(event(1))
        for _ in range(500):  # up to 5 s on a loaded machine
            if archive.count(db) == 1:
                break
            await asyncio.sleep(0.01)
        # seen by another connection without any flush: the batch timer wrote it
        assert archive.count(db) == 1
        assert writer.batches == 1


async def test_idempotent_by_id(db: Path) -> None:
    events = [event(n) for n in range(20)]
    async with ArchiveWriter(db) as writer:
        for item in events + events:
            writer.add(item)
        await writer.flush()
        assert writer.written == 20
        for item in events[:5]:
            writer.add(item)
        await writer.flush()
        assert writer.written == 20
    # the sync path (the client's sqlite sink, replay tools) is idempotent too
    assert archive.write_events(db, events) == 0
    assert archive.write_events(db, [event(99)]) == 1
    assert archive.count(db) == 21


async def test_close_flushes_everything(db: Path) -> None:
    # a long interval: close() must not wait for it, nor lose the half-full batch
    writer = await ArchiveWriter(db, batch_size=7, interval=30).start()
    for n in range(333):
        writer.add(event(n))
    await asyncio.wait_for(writer.close(), timeout=5)  # no flush() first
    assert archive.count(db) == 333
    with pytest.raises(RuntimeError):
        writer.add(event(1000))


async def test_readable_by_other_connections_while_writing(db: Path) -> None:
    async with ArchiveWriter(db) as writer:
        writer.add(event(1))
        await writer.flush()
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            # a reader inside a read transaction keeps its snapshot …
            conn.execute("BEGIN")
            assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
            for n in range(2, 51):
                writer.add(event(n))
            # … and does not block the writer (WAL): the flush completes meanwhile
            await asyncio.wait_for(writer.flush(), timeout=5)
            assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
            conn.execute("COMMIT")
            assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 50
        finally:
            conn.close()
        # another process reads the file while the writer still holds it open
        code = (
            "import sys; from bridge import archive; print(archive.count(sys.argv[1], log='users'))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "50"


def test_filters_by_time_log_and_type(db: Path) -> None:
    events = [
        event(0, log="users", type="signup"),
        event(10, log="users", type="rename"),
        event(20, log="orders", type="placed"),
        event(30, log="users", type="signup"),
        event(40, log="orders", type="shipped"),
    ]
    archive.write_events(db, reversed(events))  # stored out of order, read in time order

    def ids(items: Any) -> list[str]:
        return [e["id"] for e in items]

    assert ids(archive.iter_events(db)) == ids(events)
    # [start, end): the end is exclusive, the start inclusive
    window = archive.iter_events(
        db, start=T0 + timedelta(seconds=10), end=T0 + timedelta(seconds=30)
    )
    assert ids(window) == ids(events[1:3])
    assert ids(archive.iter_events(db, log="users")) == ids([events[0], events[1], events[3]])
    assert ids(archive.iter_events(db, type="signup")) == ids([events[0], events[3]])
    assert ids(archive.iter_events(db, log="orders", start="2024-05-01T12:00:30Z")) == ids(
        events[4:]
    )
    # ISO text with offsets and epoch seconds mean the same instants
    assert ids(archive.iter_events(db, end="2024-05-01T14:00:10+02:00")) == ids(events[:1])
    assert ids(archive.iter_events(db, start=(T0 + timedelta(seconds=40)).timestamp())) == ids(
        events[4:]
    )
    assert archive.count(db, log="users", type="signup") == 2
    # small pages walk the whole archive in order, ties on time broken by seq
    # (five log items of one instant: each its own pk, so none is a copy of another)
    same_second = [event(50 + k, at=T0 + timedelta(seconds=50)) for k in range(5)]
    archive.write_events(db, same_second)
    walked = ids(archive.iter_events(db, page_size=2))
    assert walked == ids(events) + ids(same_second)


def test_rows_and_time_form() -> None:
    item = event(3, log="users", type="signup")
    event_id, created, log, type_, text = archive.row_for(item)
    assert (event_id, log, type_) == (item["id"], "users", "signup")
    assert created == "2024-05-01T12:00:03.000Z"
    assert text.startswith("{") and item["id"] in text
    assert archive.to_iso("2024-05-01T14:00:03.5+02:00") == "2024-05-01T12:00:03.500Z"
    assert archive.from_iso(created) == T0 + timedelta(seconds=3)
    other = {"id": "x", "time": "2024-05-01T12:00:00Z", "detail": {"any": 1}}
    assert archive.row_for(other)[2:4] == (None, None)
    with pytest.raises(BridgeError):
        archive.row_for({"time": "2024-05-01T12:00:00Z"})
    with pytest.raises(BridgeError):
        archive.to_iso("yesterday")


def test_missing_or_foreign_file_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert archive.count(missing) == 0
    with pytest.raises(BridgeError, match="no archive"):
        list(archive.iter_events(missing))
    assert not missing.exists()  # reading never creates the file
    foreign = tmp_path / "other.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(BridgeError, match="not an events archive"):
        list(archive.iter_events(foreign))


async def test_unserialisable_event_is_logged_not_fatal(db: Path) -> None:
    async with ArchiveWriter(db) as writer:
        writer.add({"id": "bad", "time": "2024-05-01T12:00:00Z", "detail": {"x": object()}})
        writer.add(event(1))
        await asyncio.wait_for(writer.flush(), timeout=5)
        assert (writer.written, writer.failed) == (1, 1)
    assert archive.count(db) == 1


async def test_a_file_locked_by_another_writer_is_waited_out_not_dropped(db: Path) -> None:
    async with ArchiveWriter(db) as writer:
        writer.add(event(0))
        await writer.flush()
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # a sqlite3 shell holding the write lock
        try:
            for n in range(1, 101):
                writer.add(event(n))
            await asyncio.sleep(archive.BUSY_TIMEOUT_MS / 1000 + 0.5)  # past one busy timeout
            assert writer.written == 1  # held back by the lock …
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        await writer.flush()
        assert (writer.written, writer.failed) == (101, 0)  # … and written once it went
    assert archive.count(db) == 101


def republished(item: dict) -> dict:
    """The same log event published again (after a crash): a new EventBridge id."""
    return {**item, "id": str(uuid.uuid4())}


async def test_log_events_are_one_per_item_whatever_their_event_id(db: Path) -> None:
    events = [event(n) for n in range(10)]
    async with ArchiveWriter(db) as writer:
        for item in events + [republished(e) for e in events]:
            writer.add(item)
        await writer.flush()
        assert writer.written == 10
    assert archive.count(db) == 10
    assert [e["id"] for e in archive.iter_events(db)] == [e["id"] for e in events]  # first kept
    # the sync path keys them the same way; a version written as 1.0 is version 1
    again = republished(events[0])
    again["detail"] = {**again["detail"], "key": {"pk": "users#0#stream", "sk": 1.0}}
    assert archive.write_events(db, [again, republished(events[1])]) == 0
    assert archive.write_events(db, [event(10)]) == 1


def test_other_events_are_one_per_id(db: Path) -> None:
    """Only a log event has an item: other events that look alike are distinct events."""
    other = {"id": "a", "time": "2024-05-01T12:00:00Z", "source": "app", "detail": {"x": 1}}
    not_a_log_event = {**event(1), "source": "app"}  # a key in the detail, but not ours
    assert archive.write_events(db, [other, {**other, "id": "b"}, other]) == 2
    assert archive.write_events(db, [not_a_log_event, republished(not_a_log_event)]) == 2
    assert archive.key_for(other) == (None, None)
    assert archive.key_for(event(7)) == ("users#7#stream", "1")


OLD_SCHEMA = """CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    createdAt TEXT NOT NULL,
    log TEXT,
    type TEXT,
    event TEXT NOT NULL
);
CREATE INDEX events_createdAt ON events (createdAt);
"""


def old_archive(db: Path, events: list[dict]) -> None:
    """An archive as written before log events were keyed by pk/sk."""
    conn = sqlite3.connect(db)
    conn.executescript(OLD_SCHEMA)
    conn.executemany(
        "INSERT INTO events (id, createdAt, log, type, event) VALUES (?, ?, ?, ?, ?)",
        [archive.row_for(item) for item in events],
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize("opened_by", ["writer", "sync"])
async def test_an_archive_of_the_old_layout_is_migrated_in_place(
    db: Path, opened_by: str, caplog: pytest.LogCaptureFixture
) -> None:
    logs = [event(n) for n in range(5)]
    twice = republished(logs[2])  # published again after a crash, archived again
    other = {"id": "o", "time": "2024-05-01T12:00:09Z", "source": "app", "detail": {}}
    old_archive(db, [*logs, twice, other])
    assert archive.count(db) == 7  # readable as it is, before any migration
    new = event(5)

    if opened_by == "writer":
        async with ArchiveWriter(db) as writer:
            writer.add(republished(logs[0]))  # already there: ignored
            writer.add(new)
            await writer.flush()
            assert writer.written == 1
    else:
        conn = archive.connect(db)
        with conn:
            assert archive.insert_events(conn, [republished(logs[0]), new]) == 1
        conn.close()

    kept = [e["id"] for e in archive.iter_events(db)]
    assert kept == [e["id"] for e in [*logs, new, other]]  # the first copy kept, in time order
    conn = sqlite3.connect(db)
    try:
        displaced = conn.execute(f"SELECT id, pk, sk FROM {archive.DISPLACED}").fetchall()
        assert displaced == [(twice["id"], "users#2#stream", "1")]
        keys = conn.execute("SELECT pk, sk FROM events WHERE id = ?", (logs[3]["id"],))
        assert keys.fetchall() == [("users#3#stream", "1")]
    finally:
        conn.close()
    assert "archived more than once" in caplog.text
    assert archive.migrate(archive.connect(db)) == 0  # once only
