"""The write-ahead journal on its own: line format, damage, group commit, segments, the lock,
and folding its entries into the SQLite snapshot."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from bridge.offline import state
from bridge.offline.journal import (
    Journal,
    JournalLock,
    encode,
    read_segment,
    segment_path,
    segments,
)


def entries_of(path: Path) -> list[dict]:
    return list(read_segment(path))


def test_lines_round_trip_and_carry_any_text(tmp_path: Path) -> None:
    path = tmp_path / "db.dynamodb.000001"
    entries = [{"n": 1, "s": "line\nbreak"}, {"n": 2, "s": "\ud800 lone surrogate"}, {"n": 3}]
    path.write_bytes(b"".join(encode(e) for e in entries))
    assert entries_of(path) == entries
    assert all(line.isascii() for line in path.read_bytes().splitlines())


def test_a_torn_last_line_ends_the_segment_with_a_warning(tmp_path, caplog) -> None:
    path = tmp_path / "db.dynamodb.000001"
    data = encode({"n": 1}) + encode({"n": 2})
    path.write_bytes(data[:-5])  # the process died inside the last write
    assert entries_of(path) == [{"n": 1}]
    assert "line 2 is incomplete or damaged" in caplog.text


def test_a_damaged_line_stops_the_segment_there(tmp_path, caplog) -> None:
    path = tmp_path / "db.dynamodb.000001"
    second = bytearray(encode({"n": 2}))
    second[12] ^= 0x01  # one flipped bit: the checksum no longer matches
    path.write_bytes(encode({"n": 1}) + bytes(second) + encode({"n": 3}))
    assert entries_of(path) == [{"n": 1}]
    assert "the 1 lines after it" in caplog.text


def test_an_entry_is_in_the_file_when_wait_returns(tmp_path: Path) -> None:
    """No user-space buffer: once wait() returned, another reader (a restart after
    kill -9) sees the entry, without close() or flush()."""
    journal = Journal(tmp_path / "db", 1)
    ticket = journal.reserve()
    journal.append(ticket, encode({"n": 1}))
    assert entries_of(segment_path(tmp_path / "db", 1)) == []  # appended, not yet written
    journal.wait(ticket)
    assert entries_of(segment_path(tmp_path / "db", 1)) == [{"n": 1}]


def test_concurrent_writers_share_one_write(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "db", 1)
    tickets = [journal.reserve() for _ in range(3)]
    for n, ticket in enumerate(tickets):
        journal.append(ticket, encode({"n": n}))
    journal.wait(tickets[0])  # the first waiter leads: it writes everything appended
    assert (journal.written, journal.groups) == (3, 1)
    journal.wait(tickets[2])  # already on disk: no second write
    assert journal.groups == 1


def test_many_threads_every_entry_once_in_ticket_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "db", 1, segment_entries=100)
    order = threading.Lock()  # the caller's write lock: tickets are appended in order

    def writer(t: int) -> None:
        for n in range(50):
            with order:
                ticket = journal.reserve()
                journal.append(ticket, encode({"ticket": ticket, "t": t, "n": n}))
            journal.wait(ticket)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    found = [e for _, path in segments(tmp_path / "db") for e in entries_of(path)]
    assert [e["ticket"] for e in found] == list(range(1, 401))
    sizes = [len(entries_of(path)) for _, path in segments(tmp_path / "db")]
    # sealed at 100 entries, or just past it: a group is written whole into one segment
    assert all(100 <= size < 100 + 8 for size in sizes[:-1]) and sizes[-1] < 100
    assert journal.groups <= journal.written


def test_after_close_a_write_is_refused_not_acknowledged(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "db", 1)
    first = journal.reserve()
    journal.append(first, encode({"n": 1}))
    journal.close()  # writes what was appended
    assert entries_of(segment_path(tmp_path / "db", 1)) == [{"n": 1}]
    late = journal.reserve()  # a request that was already in the server
    journal.append(late, encode({"n": 2}))
    with pytest.raises(RuntimeError, match="closed"):
        journal.wait(late)
    assert entries_of(segment_path(tmp_path / "db", 1)) == [{"n": 1}]


def test_empty_entries_advance_without_writing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "db", 1)
    ticket = journal.reserve()
    journal.append(ticket, b"")  # a write that failed or changed nothing
    assert journal.durable == ticket
    journal.wait(ticket)
    assert journal.groups == 0


def test_a_full_segment_is_sealed_and_the_next_one_opened(tmp_path: Path) -> None:
    sealed = []
    journal = Journal(tmp_path / "db", 7, segment_entries=2, on_sealed=lambda: sealed.append(1))
    for n in range(3):
        ticket = journal.reserve()
        journal.append(ticket, encode({"n": n}))
        journal.wait(ticket)
    assert [n for n, _ in segments(tmp_path / "db")] == [7, 8]
    assert len(sealed) == 1
    assert journal.rotate()  # segment 8 holds an entry: sealed on demand
    assert not journal.rotate()  # segment 9 is empty: nothing to seal
    assert [n for n, _ in segments(tmp_path / "db")] == [7, 8, 9]


def test_a_failed_write_is_fatal_and_never_acknowledged(tmp_path: Path) -> None:
    reasons: list[str] = []

    def fatal(reason: str) -> None:
        reasons.append(reason)
        raise RuntimeError(reason)

    journal = Journal(tmp_path / "db", 1, on_fatal=fatal)
    journal._fd = 999_999  # a descriptor that is not open: the write fails
    ticket = journal.reserve()
    journal.append(ticket, encode({"n": 1}))
    with pytest.raises(RuntimeError, match="cannot write the journal"):
        journal.wait(ticket)
    assert journal.durable < ticket and reasons
    with pytest.raises(RuntimeError, match="journal failed"):  # and nothing after it either
        journal.wait(ticket)


def test_one_endpoint_at_a_time_holds_the_journal(tmp_path: Path) -> None:
    first = JournalLock(tmp_path / "db").acquire()
    with pytest.raises(TimeoutError):
        JournalLock(tmp_path / "db").acquire(timeout=0.2)
    released = threading.Timer(0.2, first.release)
    released.start()
    second = JournalLock(tmp_path / "db").acquire(timeout=10)  # waits for the first to go
    released.join()
    assert second.path.exists()
    second.release()
    assert not second.path.exists()


# --------------------------------------------------------------------------- folding

ACCOUNT, REGION, TABLE = "123456789012", "us-east-1", "t-dynamodb-logs"
DEFINITION = {
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "N"},
    ],
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    "BillingMode": "PAY_PER_REQUEST",
}
ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}/stream/label-1"
START = 1100000000017454423009


def stream(next_sequence: int) -> dict:
    return {
        "label": "label-1",
        "arn": ARN,
        "shard": {"created": "2026-01-01T00:00:00", "next": next_sequence},
    }


def put(pk: str, sk: str, **attrs: str) -> list:
    image = {"pk": {"S": pk}, "sk": {"N": sk}, **{k: {"S": v} for k, v in attrs.items()}}
    return ["put", ACCOUNT, REGION, TABLE, {"pk": {"S": pk}, "sk": {"N": sk}}, image]


def record(n: int, pk: str, created: str = "2999-01-01T00:00:00") -> list:
    body = {
        "eventName": "INSERT",
        "dynamodb": {"SequenceNumber": str(START + n), "Keys": {"pk": {"S": pk}}},
    }
    body["dynamodb"]["ApproximateCreationDateTime"] = created
    return [ACCOUNT, REGION, TABLE, body]


def snapshot(db: Path) -> tuple[dict, list[int], dict | None]:
    conn = state.connect(db)
    try:
        items = {
            (i["pk"]["S"], i["sk"]["N"]): i
            for i in state.snapshot_items(conn, ACCOUNT, REGION, TABLE)
        }
        records = [
            int(r["dynamodb"]["SequenceNumber"]) - START
            for r in state.snapshot_records(conn, ACCOUNT, REGION, TABLE)
        ]
        tables = {name: meta for _, _, name, _, meta in state.snapshot_tables(conn)}
        return items, records, tables.get(TABLE)
    finally:
        conn.close()


def fold(db: Path, number: int, entries: list[dict]) -> bool:
    conn = state.connect(db)
    try:
        return state.fold_segment(conn, number, entries)
    finally:
        conn.close()


def test_folding_applies_whole_images_once_and_keeps_unpublished_records(tmp_path: Path) -> None:
    db = tmp_path / "db"
    create = {"ops": [["table", ACCOUNT, REGION, TABLE, True, DEFINITION, stream(START), None]]}
    writes = [
        {"ops": [put("a", "1", v="first")], "stream": [record(0, "a")]},
        {"ops": [put("b", "1")], "stream": [record(1, "b")]},
        {"ops": [put("a", "1.0", v="second")], "stream": [record(2, "a")]},  # 1.0 is key 1
        {"ops": [["del", ACCOUNT, REGION, TABLE, {"pk": {"S": "b"}, "sk": {"N": "1"}}]]},
    ]
    assert fold(db, 1, [create, *writes])
    assert not fold(db, 1, [create])  # folded already (a crash before its file went)
    items, records, meta = snapshot(db)
    assert list(items) == [("a", "1.0")] and items[("a", "1.0")]["v"] == {"S": "second"}
    assert records == [0, 1, 2]  # the poller has not checkpointed any of them yet
    assert meta["shard"]["next"] == START + 3

    checkpoints = state.Checkpoints(db)
    checkpoints.save(ARN, "shard-1", str(START + 1))  # published up to the second record
    checkpoints.close()
    assert fold(db, 2, [{"ops": [put("c", "1")], "stream": [record(3, "c")]}])
    _, records, meta = snapshot(db)
    assert records == [2, 3]
    assert meta["shard"]["next"] == START + 4
    conn = state.connect(db)
    assert state.folded_through(conn) == 2
    assert state.snapshot_counts(conn) == {TABLE: 2}
    conn.close()


def test_folding_drops_records_older_than_a_day_and_a_dropped_table(tmp_path: Path) -> None:
    db = tmp_path / "db"
    create = {"ops": [["table", ACCOUNT, REGION, TABLE, True, DEFINITION, stream(START), None]]}
    old = {"ops": [put("a", "1")], "stream": [record(0, "a", created="2000-01-01T00:00:00")]}
    assert fold(db, 1, [create, old, {"ops": [put("b", "1")], "stream": [record(1, "b")]}])
    assert snapshot(db)[1] == [1]
    assert fold(db, 2, [{"ops": [["drop", ACCOUNT, REGION, TABLE]]}])
    assert snapshot(db) == ({}, [], None)


def test_a_failed_fold_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "db"
    create = {"ops": [["table", ACCOUNT, REGION, TABLE, True, DEFINITION, stream(START), None]]}
    assert fold(db, 1, [create, {"ops": [put("a", "1")]}])
    with pytest.raises(ValueError, match="unknown journal op"):
        fold(db, 2, [{"ops": [put("b", "1")]}, {"ops": [["bogus", ACCOUNT, REGION, TABLE]]}])
    items, _, _ = snapshot(db)
    assert list(items) == [("a", "1")]
    conn = state.connect(db)
    assert state.folded_through(conn) == 1
    conn.close()


def test_key_text_is_one_text_per_dynamodb_key() -> None:
    one = state.key_text({"pk": {"S": "x"}, "sk": {"N": "1"}})
    assert one == state.key_text({"sk": {"N": "1.00"}, "pk": {"S": "x"}})
    assert one == state.key_text({"pk": {"S": "x"}, "sk": {"N": "1E0"}})
    assert one != state.key_text({"pk": {"S": "x"}, "sk": {"N": "10"}})
    assert json.loads(state.key_text({"pk": {"S": "x"}, "sk": {"N": "-0"}}))["sk"] == {"N": "0"}
