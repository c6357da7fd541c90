"""DynamoDB's typed JSON on its own: every tag, and round trips against boto3's serializer.

boto3's ``TypeSerializer`` writes the typed form the way DynamoDB does; core reads
it back without boto3. Stream records reach Lambda as JSON, so binary values travel
as base64 text: both forms must read back to the same plain value.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.dynamo_json import load_item, load_value


@pytest.mark.parametrize(
    ("typed", "plain"),
    [
        ({"S": "x"}, "x"),
        ({"S": ""}, ""),
        ({"N": "3"}, Decimal("3")),
        ({"N": "-1.50"}, Decimal("-1.5")),
        ({"N": "1E+126"}, Decimal("1E+126")),
        ({"BOOL": True}, True),
        ({"BOOL": False}, False),
        ({"NULL": True}, None),
        ({"B": "AAEC"}, b"\x00\x01\x02"),  # JSON: base64 text
        ({"B": b"\x00\x01\x02"}, b"\x00\x01\x02"),  # boto3: bytes as they are
        ({"SS": ["a", "b"]}, {"a", "b"}),
        ({"NS": ["1", "2.5"]}, {Decimal("1"), Decimal("2.5")}),
        ({"BS": ["AA==", b"\x01"]}, {b"\x00", b"\x01"}),
        ({"L": [{"S": "a"}, {"N": "1"}, {"NULL": True}]}, ["a", Decimal("1"), None]),
        ({"M": {"a": {"M": {"b": {"L": []}}}}}, {"a": {"b": []}}),
    ],
)
def test_each_tag_reads_as_boto3_resource_values(typed: dict[str, Any], plain: Any) -> None:
    assert load_value(typed) == plain
    assert type(load_value(typed)) is type(plain)


def test_numbers_are_decimal_never_float() -> None:
    value = load_value({"N": "0.1"})
    assert isinstance(value, Decimal) and value == Decimal("0.1")


def test_an_unknown_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown DynamoDB type tag 'X'"):
        load_value({"X": "1"})


def test_a_value_has_exactly_one_tag() -> None:
    with pytest.raises(ValueError):
        load_value({"S": "a", "N": "1"})
    with pytest.raises(ValueError):
        load_value({})


def test_a_stream_image_reads_as_a_plain_item() -> None:
    image = {
        "pk": {"S": "users#1#stream"},
        "sk": {"N": "2"},
        "payload": {"M": {"id": {"S": "1"}, "lat": {"N": "52.5"}}},
    }
    assert load_item(image) == {
        "pk": "users#1#stream",
        "sk": Decimal("2"),
        "payload": {"id": "1", "lat": Decimal("52.5")},
    }
    assert load_item({}) == {}


# ------------------------------------------------------------------ round trips

NUMBERS = st.integers(-(10**30), 10**30).map(Decimal) | st.decimals(
    min_value=-(10**9), max_value=10**9, places=6, allow_nan=False, allow_infinity=False
)
SCALARS = st.text(max_size=8) | NUMBERS | st.booleans() | st.none() | st.binary(max_size=8)
SETS = (
    st.frozensets(st.text(max_size=4), min_size=1, max_size=4).map(set)
    | st.frozensets(st.integers(-1000, 1000).map(Decimal), min_size=1, max_size=4).map(set)
    | st.frozensets(st.binary(max_size=4), min_size=1, max_size=4).map(set)
)
VALUES = st.recursive(
    SCALARS | SETS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(min_size=1, max_size=6), children, max_size=4)
    ),
    max_leaves=15,
)


def plain(value: Any) -> Any:
    """boto3's deserializer wraps binary in ``Binary``; core hands back bytes."""
    if isinstance(value, Binary):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, set):
        return {plain(v) for v in value}
    return value


def as_lambda_json(typed: Any) -> Any:
    """The typed value as a Lambda event carries it: JSON, binary as base64 text."""

    def encode(value: Any) -> Any:
        if isinstance(value, (bytes, Binary)):
            return base64.b64encode(bytes(value)).decode()
        raise TypeError(type(value).__name__)

    return json.loads(json.dumps(typed, default=encode))


@settings(max_examples=300, deadline=None)
@given(value=VALUES)
def test_any_value_boto3_writes_reads_back_as_itself(value: Any) -> None:
    typed = TypeSerializer().serialize(value)
    assert load_value(typed) == value
    assert load_value(typed) == plain(TypeDeserializer().deserialize(typed))


@settings(max_examples=300, deadline=None)
@given(value=VALUES)
def test_any_value_survives_the_json_of_a_lambda_event(value: Any) -> None:
    typed = TypeSerializer().serialize(value)
    assert load_value(as_lambda_json(typed)) == value


@settings(max_examples=100, deadline=None)
@given(item=st.dictionaries(st.text(min_size=1, max_size=6), VALUES, max_size=5))
def test_any_item_image_reads_back_as_the_item(item: dict[str, Any]) -> None:
    image = {name: TypeSerializer().serialize(v) for name, v in item.items()}
    assert load_item(as_lambda_json(image)) == item
