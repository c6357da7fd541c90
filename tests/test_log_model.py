"""The log item model on its own: keys, validation, number conversion, size."""

from decimal import Decimal

import pytest

from bridge.core.errors import ValidationError
from bridge.core.log import (
    MAX_ITEM_BYTES,
    MAX_PAYLOAD_DEPTH,
    MAX_VERSION,
    LogItem,
    check_version,
    from_dynamo,
    item_size,
    parse_stream_key,
    parse_version,
    stream_key,
    to_dynamo,
)


def test_keys_follow_the_seed():
    item = LogItem("users", "12", 1, "signup", {"id": "12", "name": "test"}).to_item()
    assert item == {
        "pk": "users#12#stream",
        "sk": 1,
        "type": "signup",
        "log": "users",
        "payload": {"id": "12", "name": "test"},
    }
    assert parse_stream_key(stream_key("users", "12")) == ("users", "12")


@pytest.mark.parametrize(
    ("log", "id", "type", "payload", "message"),
    [
        ("", "1", "t", {"id": "1"}, "log must be a non-empty string"),
        ("us#ers", "1", "t", {"id": "1"}, "log 'us#ers' must not contain '#'"),
        ("users", "", "t", {"id": ""}, "id must be a non-empty string"),
        ("users", "1#2", "t", {"id": "1#2"}, "id '1#2' must not contain '#'"),
        ("users", "1", "", {"id": "1"}, "type must be a non-empty string"),
        ("users", "1", "t", ["id", "1"], "payload must be a JSON object"),
        ("users", "1", "t", {"name": "x"}, "payload must contain 'id'"),
        ("users", "1", "t", {"id": "2"}, "payload id '2' does not match the item id '1'"),
    ],
)
def test_each_validation_error_is_one_clear_line(log, id, type, payload, message):
    with pytest.raises(ValidationError) as error:
        LogItem(log, id, 1, type, payload).to_item()
    assert str(error.value) == message
    assert "\n" not in str(error.value)


def test_oversize_item_is_refused_with_its_size():
    payload = {"id": "1", "blob": "x" * MAX_ITEM_BYTES}
    with pytest.raises(ValidationError, match=r"item is \d+ bytes; DynamoDB's limit is 409600"):
        LogItem("users", "1", 1, "big", payload).to_item()


def test_item_just_under_the_limit_passes():
    base = LogItem("users", "1", 1, "big", {"id": "1", "blob": ""}).to_item()
    room = MAX_ITEM_BYTES - item_size(base)
    item = LogItem("users", "1", 1, "big", {"id": "1", "blob": "x" * room}).to_item()
    assert item_size(item) == MAX_ITEM_BYTES


def test_floats_become_decimal_and_come_back_as_numbers():
    value = {"lat": 51.5074, "n": 3, "list": [0.1, 2.0], "deep": {"x": -1e-7}}
    stored = to_dynamo(value)
    assert stored["lat"] == Decimal("51.5074")
    assert stored["list"] == [Decimal("0.1"), Decimal("2.0")]
    assert from_dynamo(stored) == {"lat": 51.5074, "n": 3, "list": [0.1, 2], "deep": {"x": -1e-7}}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_infinity_are_refused(bad):
    with pytest.raises(ValidationError, match="cannot be stored"):
        to_dynamo({"x": bad})


@pytest.mark.parametrize("number", [1e300, 1e-200, 10**40, -(10**40)])
def test_numbers_dynamodb_cannot_hold_are_refused_in_one_line(number):
    with pytest.raises(ValidationError, match="out of DynamoDB's range"):
        to_dynamo({"id": "1", "n": number})


def test_numbers_at_dynamodb_limits_pass():
    assert to_dynamo(10**37) == 10**37
    assert to_dynamo(1.5e125) == Decimal("1.5E+125")
    assert to_dynamo(0.0) == Decimal("0.0")


def test_names_have_a_length_limit():
    with pytest.raises(ValidationError, match="type is 257 characters; at most 256"):
        LogItem("users", "1", 1, "t" * 257, {"id": "1"}).to_item()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"pk": "u#1#stream", "sk": Decimal("1.5"), "type": "t"}, "sk must be a whole number"),
        ({"pk": "u#1#stream", "sk": 0, "type": "t"}, "sk must be a whole number"),
        ({"pk": "u#1#stream", "sk": 1, "type": 5}, "type must be a non-empty string"),
        ({"pk": "u#1#stream", "sk": 1, "type": "t", "payload": "x"}, "payload must be a map"),
    ],
)
def test_items_written_around_the_store_are_checked_on_read(item, message):
    with pytest.raises(ValidationError, match=message):
        LogItem.from_item(item)


def test_binary_values_read_back_as_base64_text():
    item = LogItem.from_item(
        {
            "pk": "u#1#stream",
            "sk": 1,
            "type": "t",
            "payload": {"id": "1", "avatar": b"\x00\x01\x02"},
        }
    )
    assert item.payload == {"id": "1", "avatar": "AAEC"}


# --------------------------------------------------------------------------- bad input


def deep_payload(depth: int) -> dict:
    """A payload whose maps and lists nest ``depth`` deep, the payload itself included."""
    value: object = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return {"id": "1", "deep": value}


@pytest.mark.parametrize(
    ("log", "id", "type", "payload", "message"),
    [
        ("us\udcffers", "1", "t", {"id": "1"}, "log: byte 0xff at position 2 is not UTF-8"),
        ("users", "\ud800", "t", {"id": "\ud800"}, "id: lone surrogate \\ud800 at position 0"),
        ("users", "1", "t\udcff", {"id": "1"}, "type: byte 0xff at position 1 is not UTF-8"),
        ("users", "1", "t", {"id": "1", "n": "\ud800"}, "payload: lone surrogate \\ud800"),
        ("users", "1", "t", {"id": "1", "\ud800": 1}, "payload: lone surrogate \\ud800"),
        ("users", "1", "t", {"id": "1", "l": [{"x": "\udcff"}]}, "(at l[0].x)"),
    ],
)
def test_text_utf8_cannot_carry_is_refused_before_any_write(log, id, type, payload, message):
    with pytest.raises(ValidationError) as error:
        LogItem(log, id, 1, type, payload).to_item()
    assert message in str(error.value)


def test_payload_nesting_stops_at_dynamodbs_32_levels():
    assert LogItem("users", "1", 1, "t", deep_payload(MAX_PAYLOAD_DEPTH)).to_item()
    with pytest.raises(ValidationError, match="^payload: nested more than 31 levels deep$"):
        LogItem("users", "1", 1, "t", deep_payload(MAX_PAYLOAD_DEPTH + 1)).to_item()
    # far deeper than the stack: refused by the walk, not by a RecursionError
    with pytest.raises(ValidationError, match="nested more than 31"):
        LogItem("users", "1", 1, "t", deep_payload(100_000)).to_item()


def test_versions_hold_38_digits():
    assert LogItem("users", "1", MAX_VERSION, "t", {"id": "1"}).to_item()["sk"] == MAX_VERSION
    with pytest.raises(ValidationError, match="has 39 digits; DynamoDB numbers hold 38 at most"):
        LogItem("users", "1", MAX_VERSION + 1, "t", {"id": "1"}).to_item()
    assert check_version("after", MAX_VERSION) == MAX_VERSION
    for bad, message in [
        (MAX_VERSION + 1, "after has 39 digits"),
        (-1, "after must be >= 0"),
        (True, "after must be a whole number"),
        (1.0, "after must be a whole number"),
    ]:
        with pytest.raises(ValidationError, match=message):
            check_version("after", bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("007", 7), (" 12 ", 12), ("9" * 38, MAX_VERSION), ("0" * 50 + "1", 1)],
)
def test_parse_version_reads_digits(text, expected):
    assert parse_version("--after", text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1" + "0" * 38, "--after has 39 digits; DynamoDB numbers hold 38 at most"),
        ("9" * 100_000, "--after has 100000 digits"),  # no int() of it (Python caps at 4300)
        ("-1", "--after must be a whole number >= 0, got '-1'"),
        ("1e3", "--after must be a whole number >= 0"),
        ("٣", "--after must be a whole number >= 0"),  # int() would take Arabic-Indic digits
        ("", "--after must be a whole number >= 0"),
    ],
)
def test_parse_version_refuses_in_one_line(text, message):
    with pytest.raises(ValidationError, match=message):
        parse_version("--after", text)
