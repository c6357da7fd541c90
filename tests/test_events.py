"""The event a log item becomes, on its own: the 10 KB rule, entries, sizes, batching."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.events import (
    DETAIL_TYPE,
    MAX_DETAIL_BYTES,
    MAX_ENTRIES_PER_PUT,
    MAX_PUT_BYTES,
    SOURCE,
    batches,
    compact_json,
    detail_text,
    entry_for,
    entry_size,
    envelope,
)
from bridge.core.log import LogItem
from bridge.core.names import BUS_NAME, DEFAULT_REGION, LOCAL_ACCOUNT


def item_with_bio(bio: str) -> LogItem:
    return LogItem("users", "1", 3, "signup", {"id": "1", "bio": bio})


def full_detail(item: LogItem) -> dict[str, Any]:
    return {
        "log": item.log,
        "key": {"pk": item.pk, "sk": item.version},
        "type": item.type,
        "payload": item.payload,
    }


# ------------------------------------------------------------------ compact_json


def test_compact_json_has_no_spaces_and_keeps_text_as_is() -> None:
    assert compact_json({"a": [1, 2], "b": "é €"}) == '{"a":[1,2],"b":"é €"}'


def test_compact_json_writes_dynamodb_numbers_and_binary_as_json() -> None:
    value = {"whole": Decimal("3"), "part": Decimal("1.25"), "big": Decimal("1E+3")}
    assert json.loads(compact_json(value)) == {"whole": 3, "part": 1.25, "big": 1000}
    assert compact_json({"n": Decimal("3")}) == '{"n":3}'  # an int, not 3.0 or "3"
    assert compact_json({"b": b"\x00\x01\x02"}) == '{"b":"AAEC"}'  # base64, as the publisher
    assert json.loads(compact_json({"tags": {Decimal("2")}})) == {"tags": [2]}


def test_compact_json_refuses_what_has_no_json_form() -> None:
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        compact_json({"x": object()})


# ------------------------------------------------------------------ detail_text


def test_a_small_detail_carries_the_whole_payload() -> None:
    item = LogItem("users", "12", 2, "addPhoneNumber", {"id": "12", "phoneNumber": "+1"})
    assert json.loads(detail_text(item)) == {
        "log": "users",
        "key": {"pk": "users#12#stream", "sk": 2},
        "type": "addPhoneNumber",
        "payload": {"id": "12", "phoneNumber": "+1"},
    }


def _bio_for(detail_bytes: int) -> str:
    """A bio of ASCII text that makes the whole detail exactly ``detail_bytes`` long."""
    overhead = len(compact_json(full_detail(item_with_bio(""))).encode())
    return "x" * (detail_bytes - overhead)


def test_a_detail_of_exactly_10240_bytes_is_sent_whole() -> None:
    item = item_with_bio(_bio_for(MAX_DETAIL_BYTES))
    text = detail_text(item)
    assert len(text.encode()) == MAX_DETAIL_BYTES == 10_240
    assert json.loads(text) == full_detail(item)
    assert "partial" not in json.loads(text)


def test_one_byte_more_is_sent_partial_with_the_id_only() -> None:
    item = item_with_bio(_bio_for(MAX_DETAIL_BYTES + 1))
    assert len(compact_json(full_detail(item)).encode()) == MAX_DETAIL_BYTES + 1
    assert json.loads(detail_text(item)) == {
        "log": "users",
        "key": {"pk": "users#1#stream", "sk": 3},
        "type": "signup",
        "payload": {"id": "1"},
        "partial": True,
    }


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    # 6,000 two-byte characters: far under 10,240 characters, over 10,240 bytes.
    item = item_with_bio("é" * 6_000)
    assert len(compact_json(full_detail(item))) < MAX_DETAIL_BYTES
    assert json.loads(detail_text(item))["partial"] is True


# ------------------------------------------------------------------ entry_for


def test_an_entry_is_the_seed_event_on_the_named_bus() -> None:
    item = LogItem("users", "1", 1, "signup", {"id": "1", "name": "n"})
    entry = entry_for(item)
    assert entry == {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPE,
        "Detail": detail_text(item),
        "EventBusName": BUS_NAME,
    }
    assert (SOURCE, DETAIL_TYPE, BUS_NAME) == ("dynamodb-log", "stream changes", "dynamodb-log")
    assert entry_for(item, "other-bus")["EventBusName"] == "other-bus"


# ------------------------------------------------------------------ entry_size


def test_entry_size_counts_the_fields_aws_counts_in_utf8_bytes() -> None:
    entry = {"Source": "src", "DetailType": "dé", "Detail": '{"a":"€"}', "EventBusName": "x" * 99}
    # Source 3 + DetailType 3 (é is 2 bytes) + Detail 11 (€ is 3); the bus is not counted.
    assert entry_size(entry) == 3 + 3 + 11


def test_entry_size_adds_14_bytes_for_a_time_and_each_resource() -> None:
    base = {"Source": "s", "DetailType": "d", "Detail": "{}"}
    assert entry_size(base) == 4
    assert entry_size({**base, "Time": datetime(2024, 1, 1, tzinfo=UTC)}) == 4 + 14
    assert entry_size({**base, "Time": None}) == 4
    assert entry_size({**base, "Resources": ["arn:a", "arn:bé"]}) == 4 + 5 + 7


def test_entry_size_of_missing_or_empty_fields_is_zero() -> None:
    assert entry_size({}) == 0
    assert entry_size({"Source": "", "Detail": None, "Resources": None}) == 0


# ------------------------------------------------------------------ batches


def sized(n: int, tag: int = 0) -> dict[str, Any]:
    """An entry of exactly ``n`` bytes as entry_size counts them (n >= 2)."""
    return {"Source": str(tag % 10), "DetailType": "", "Detail": "x" * (n - 1)}


def test_batches_hold_at_most_10_entries() -> None:
    entries = [sized(10, i) for i in range(25)]
    assert [len(b) for b in batches(entries)] == [10, 10, 5]
    assert MAX_ENTRIES_PER_PUT == 10


def test_batches_hold_at_most_256_kb_and_exactly_256_kb_fits() -> None:
    assert MAX_PUT_BYTES == 262_144
    half = MAX_PUT_BYTES // 2
    assert [len(b) for b in batches([sized(half), sized(half), sized(1 + 1)])] == [2, 1]
    assert [len(b) for b in batches([sized(half), sized(half + 1)])] == [1, 1]


def test_an_entry_over_the_limit_travels_alone_for_putevents_to_judge() -> None:
    big = sized(MAX_PUT_BYTES + 10)
    assert list(batches([sized(5), big, sized(5)])) == [[sized(5)], [big], [sized(5)]]


def test_no_entries_make_no_batch() -> None:
    assert list(batches([])) == []


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 120), max_size=60),
    max_entries=st.integers(1, 12),
    max_bytes=st.integers(2, 400),
)
def test_any_entries_split_in_order_into_full_batches_within_both_limits(
    sizes: list[int], max_entries: int, max_bytes: int
) -> None:
    entries = [sized(n, i) for i, n in enumerate(sizes)]
    result = list(batches(entries, max_entries=max_entries, max_bytes=max_bytes))
    assert [e for batch in result for e in batch] == entries  # nothing lost, same order
    assert all(batch for batch in result)
    for batch, following in zip(result, result[1:], strict=False):
        total = sum(map(entry_size, batch))
        # A batch closes only when the next entry would break a limit.
        assert len(batch) == max_entries or total + entry_size(following[0]) > max_bytes
    for batch in result:
        assert len(batch) <= max_entries
        assert len(batch) == 1 or sum(map(entry_size, batch)) <= max_bytes


# ------------------------------------------------------------------ envelope


def test_the_envelope_is_what_eventbridge_hands_a_target() -> None:
    entry = entry_for(LogItem("users", "1", 1, "signup", {"id": "1"}))
    when = datetime(2024, 5, 6, 7, 8, 9, 123_000, tzinfo=UTC)
    event = envelope(entry, event_id="e-1", time=when)
    assert event == {
        "version": "0",
        "id": "e-1",
        "detail-type": DETAIL_TYPE,
        "source": SOURCE,
        "account": LOCAL_ACCOUNT,
        "time": "2024-05-06T07:08:09Z",
        "region": DEFAULT_REGION,
        "resources": [],
        "detail": json.loads(entry["Detail"]),
    }
    parsed = {"already": "parsed"}
    other = envelope({**entry, "Resources": ["arn:x"]}, account="1" * 12, detail=parsed)
    assert other["detail"] is parsed
    assert other["resources"] == ["arn:x"] and other["account"] == "1" * 12
    assert len(other["id"]) == 36  # a fresh UUID when none is given
