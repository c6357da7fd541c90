"""The log store against a real moto server over HTTP."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from bridge.core.errors import ConcurrencyError, ValidationError
from bridge.store import LogStore, create_tables


def test_append_and_read_round_trip(store):
    assert store.append("users", "12", "signup", {"id": "12", "name": "test"}) == 1
    assert store.append("users", "12", "addPhoneNumber", {"id": "12", "phone": "+1"}) == 2
    items = list(store.read("users", "12"))
    assert [(i.version, i.type) for i in items] == [(1, "signup"), (2, "addPhoneNumber")]
    assert items[0].payload == {"id": "12", "name": "test"}
    assert items[0].pk == "users#12#stream"
    assert [i.version for i in store.read("users", "12", after=1)] == [2]
    assert store.version("users", "12") == 2
    assert store.version("users", "missing") == 0


def test_stored_item_has_the_seed_shape(store):
    store.append("users", "12", "signup", {"id": "12", "name": "test"})
    raw = store.table.get_item(Key={"pk": "users#12#stream", "sk": 1})["Item"]
    assert raw == {
        "pk": "users#12#stream",
        "sk": Decimal(1),
        "type": "signup",
        "log": "users",
        "payload": {"id": "12", "name": "test"},
    }


def test_read_follows_pages_beyond_one_megabyte(store):
    blob = "x" * 40_000
    count = 30  # 30 × ~40 KB ≈ 1.2 MB: more than one query page
    for version in range(count):
        store.append(
            "orders",
            "big",
            "chunk",
            {"id": "big", "n": version, "blob": blob},
            expected_version=version,
        )
    first_page = store.table.query(
        KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": "orders#big#stream"}
    )
    assert "LastEvaluatedKey" in first_page  # the server really paginated
    items = list(store.read("orders", "big"))
    assert [i.version for i in items] == list(range(1, count + 1))
    assert [i.payload["n"] for i in items] == list(range(count))


def test_floats_round_trip_through_dynamodb(store):
    payload = {"id": "7", "location": {"lat": 51.5074, "lng": -0.1278}, "score": 0.1, "n": 5}
    store.append("users", "7", "addLocation", payload)
    (item,) = store.read("users", "7")
    assert item.payload == payload
    assert isinstance(item.payload["n"], int)


@pytest.mark.parametrize(
    ("log", "id", "type", "payload"),
    [
        ("users", "1", "t", {"id": "2"}),
        ("users", "1", "t", {"name": "no id"}),
        ("users", "1", "", {"id": "1"}),
        ("users", "1", "t", {"id": "1", "blob": "x" * 410_000}),
    ],
)
def test_invalid_items_write_nothing(store, log, id, type, payload):
    with pytest.raises(ValidationError):
        store.append(log, id, type, payload)
    assert store.table.scan()["Items"] == []


def test_expected_version_conflict_names_the_existing_version(store):
    store.append("users", "1", "signup", {"id": "1"})
    store.append("users", "1", "rename", {"id": "1"})
    with pytest.raises(ConcurrencyError) as conflict:
        store.append("users", "1", "rename", {"id": "1", "late": True}, expected_version=0)
    assert conflict.value.attempted == 1
    assert conflict.value.existing == 2
    assert "version 1 already exists (latest version is 2)" in str(conflict.value)
    assert list(store.read("users", "1"))[0].payload == {"id": "1"}  # not overwritten


def test_ids_lists_the_streams_of_one_log(store):
    for id in ("b", "a", "c"):
        store.append("users", id, "signup", {"id": id})
    store.append("users", "a", "rename", {"id": "a"})
    store.append("orders", "z", "placed", {"id": "z"})
    assert store.ids("users") == ["a", "b", "c"]
    assert store.ids("orders") == ["z"]


def test_create_tables_is_idempotent(target):
    assert create_tables(target.dynamodb(), target.log_table, target.core_table) == []
    description = target.dynamodb().meta.client.describe_table(TableName=target.log_table)
    assert description["Table"]["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }


def test_eight_writers_contend_on_one_stream(target):
    """Every version 1..N is written exactly once; each loser sees ConcurrencyError."""
    total = 40
    writers = 8
    wins: dict[int, str] = {}
    losses: list[ConcurrencyError] = []
    lock = threading.Lock()
    start = threading.Barrier(writers, timeout=60)

    def writer(name: str) -> None:
        store = LogStore(target.dynamodb().Table(target.log_table))
        start.wait()
        attempt = 0
        while True:
            current = store.version("accounts", "hot")
            if current >= total:
                return
            attempt += 1
            marker = f"{name}-{attempt}"
            try:
                version = store.append(
                    "accounts",
                    "hot",
                    "deposit",
                    {"id": "hot", "by": marker},
                    expected_version=current,
                )
            except ConcurrencyError as error:
                with lock:
                    losses.append(error)
                continue
            with lock:
                assert version not in wins
                wins[version] = marker

    with ThreadPoolExecutor(writers) as pool:
        for done in [pool.submit(writer, f"w{i}") for i in range(writers)]:
            done.result()  # a writer's error or failed assertion fails the test here

    store = LogStore(target.dynamodb().Table(target.log_table))
    items = list(store.read("accounts", "hot"))
    assert [i.version for i in items] == list(range(1, len(items) + 1))
    assert len(items) >= total
    # No overwrite: the stored payload of every version is the one its winner wrote.
    assert {i.version: i.payload["by"] for i in items} == wins
    assert losses, "8 writers on one stream should have produced conflicts"
    assert all(loss.existing >= loss.attempted for loss in losses)


def test_put_batch_writes_more_than_one_call_and_validates_first(store):
    from bridge.core.log import LogItem

    items = [LogItem("bulk", str(n), 1, "signup", {"id": str(n), "x": 0.5}) for n in range(60)]
    store.put_batch(items)
    assert len(store.ids("bulk")) == 60
    assert next(store.read("bulk", "7")).payload == {"id": "7", "x": 0.5}
    with pytest.raises(ValidationError):
        store.put_batch(
            [LogItem("bulk2", "1", 1, "t", {"id": "1"}), LogItem("bulk2", "2", 1, "t", {"id": "9"})]
        )
    assert store.ids("bulk2") == []  # nothing half-written


def test_an_expected_version_beyond_the_stream_leaves_no_gap(store):
    store.append("users", "gap", "signup", {"id": "gap"})
    with pytest.raises(ConcurrencyError) as conflict:
        store.append("users", "gap", "rename", {"id": "gap"}, expected_version=5)
    assert str(conflict.value) == (
        "conflict on users#gap#stream: expected version 5, but the latest version is 1"
    )
    with pytest.raises(ConcurrencyError):
        store.append("users", "new", "rename", {"id": "new"}, expected_version=3)
    assert store.versions("users", "gap") == [1]
    assert store.versions("users", "new") == []
