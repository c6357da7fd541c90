"""The append-only log item: keys, validation and number conversion.

A log item is one event of one entity: ``pk = "{log}#{id}#stream"`` and ``sk`` =
its version (1, 2, 3 ...). Nothing here talks to DynamoDB; the store does.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bridge.core.errors import ValidationError
from bridge.core.inputs import check_document, check_text

STREAM_SUFFIX = "#stream"
MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's item size limit
MAX_NAME_LENGTH = 256  # log, id and type: keys and event fields, not documents
# A version is the sort key, a DynamoDB number: 38 digits at most. boto3 counts every
# digit of an int (10**38 has 39 and fails with decimal.Inexact), so this is the top.
MAX_VERSION = 10**38 - 1
# DynamoDB nests 32 levels, the top-level attribute (``payload``) being level 1 and a
# value inside the deepest map or list a level of its own: 31 maps/lists in all.
MAX_PAYLOAD_DEPTH = 31
_DIGITS = re.compile(r"[0-9]+")


def stream_key(log: str, id: str) -> str:
    """The partition key of one entity's stream: ``users#12#stream``."""
    return f"{log}#{id}{STREAM_SUFFIX}"


def parse_stream_key(pk: str) -> tuple[str, str]:
    """Split ``users#12#stream`` into ``("users", "12")``."""
    if not pk.endswith(STREAM_SUFFIX) or pk.count("#") != 2:
        raise ValidationError(f"not a log stream key: {pk!r}")
    log, id, _ = pk.split("#")
    return log, id


def check_name(kind: str, value: object) -> str:
    """Log names and ids become parts of ``pk``, so they can hold no ``#`` (and, like
    all stored text, nothing UTF-8 cannot carry)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{kind} must be a non-empty string")
    check_text(kind, value)
    if "#" in value:
        raise ValidationError(f"{kind} {value!r} must not contain '#'")
    return value


def check_version(kind: str, value: object) -> int:
    """A version given by a caller (``expected_version``, ``after``): a whole number
    from 0 to :data:`MAX_VERSION`, refused here rather than by boto3's ``Inexact``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{kind} must be a whole number, got {value!r}")
    if value < 0:
        raise ValidationError(f"{kind} must be >= 0, got {value}")
    if value > MAX_VERSION:
        raise ValidationError(
            f"{kind} has {len(str(value))} digits; DynamoDB numbers hold 38 at most"
        )
    return value


def parse_version(kind: str, text: str) -> int:
    """A version as typed (decimal digits), checked by :func:`check_version`. Digits are
    counted before ``int()`` so a huge number is refused, not converted."""
    digits = text.strip()
    if not _DIGITS.fullmatch(digits):
        raise ValidationError(f"{kind} must be a whole number >= 0, got {text!r}")
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(MAX_VERSION)):
        raise ValidationError(
            f"{kind} has {len(significant)} digits; DynamoDB numbers hold 38 at most"
        )
    return check_version(kind, int(significant))


def to_dynamo(value: Any) -> Any:
    """Floats become ``Decimal`` (boto3 refuses floats); numbers DynamoDB can't hold
    (NaN, infinity, beyond 38 digits or its exponent range) are refused here, in one
    line, instead of deep inside boto3."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValidationError(f"number {value} cannot be stored in DynamoDB")
        return _check_number(Decimal(repr(value)))  # repr: the shortest exact form
    if isinstance(value, int):
        _check_number(Decimal(value))
        return value
    if isinstance(value, dict):
        return {k: to_dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_dynamo(v) for v in value]
    return value


def _check_number(number: Decimal) -> Decimal:
    """DynamoDB numbers: up to 38 significant digits, magnitude 1e-130 to 1e126."""
    if number == 0:
        return number
    digits = len(number.as_tuple().digits)  # as boto3 counts: 10**40 has 41 digits
    exponent = number.adjusted()
    if digits > 38 or not -130 <= exponent <= 125:
        raise ValidationError(
            f"number {number} is out of DynamoDB's range (38 digits, 1e-130 to 1e126)"
        )
    return number


def from_dynamo(value: Any) -> Any:
    """``Decimal`` comes back as ``int`` when whole, else ``float``; sets become lists;
    binary values become base64 text (JSON has no bytes)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(getattr(value, "value", None), bytes):  # boto3's Binary wrapper
        return base64.b64encode(value.value).decode()
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [from_dynamo(v) for v in value]
    return value


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's own accounting of an item's size, in bytes (names plus values)."""
    return sum(len(name.encode()) + _value_size(v) for name, v in item.items())


def _value_size(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, (int, float, Decimal)):
        digits = len(str(abs(Decimal(str(value)))).replace(".", "").lstrip("0")) or 1
        return (digits + 1) // 2 + 1
    if isinstance(value, dict):
        return 3 + sum(len(k.encode()) + _value_size(v) + 1 for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return 3 + sum(_value_size(v) + 1 for v in value)
    raise ValidationError(f"cannot store a value of type {type(value).__name__}")


@dataclass(frozen=True)
class LogItem:
    """One event of one entity's stream, as the application sees it."""

    log: str
    id: str
    version: int
    type: str
    payload: dict[str, Any]

    @property
    def pk(self) -> str:
        return stream_key(self.log, self.id)

    def to_item(self) -> dict[str, Any]:
        """The DynamoDB item (floats as ``Decimal``), validated."""
        check_name("log", self.log)
        check_name("id", self.id)
        if not isinstance(self.type, str) or not self.type:
            raise ValidationError("type must be a non-empty string")
        check_text("type", self.type)
        for kind, name in (("log", self.log), ("id", self.id), ("type", self.type)):
            if len(name) > MAX_NAME_LENGTH:
                # Names travel in every event; the 10 KB partial rule cuts the payload only.
                raise ValidationError(
                    f"{kind} is {len(name)} characters; at most {MAX_NAME_LENGTH} are allowed"
                )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValidationError(f"version must be an integer >= 1, got {self.version!r}")
        if self.version > MAX_VERSION:
            raise ValidationError(
                f"version {self.version} has {len(str(self.version))} digits; "
                "DynamoDB numbers hold 38 at most"
            )
        if not isinstance(self.payload, dict):
            raise ValidationError("payload must be a JSON object")
        # Before anything walks it recursively (to_dynamo, item_size, boto3).
        check_document("payload", self.payload, MAX_PAYLOAD_DEPTH)
        if "id" not in self.payload:
            raise ValidationError("payload must contain 'id'")
        if not isinstance(self.payload["id"], str):
            raise ValidationError(
                f"payload id must be the string {self.id!r}, got {self.payload['id']!r}"
            )
        if self.payload["id"] != self.id:
            raise ValidationError(
                f"payload id {self.payload['id']!r} does not match the item id {self.id!r}"
            )
        item = {
            "pk": self.pk,
            "sk": self.version,
            "type": self.type,
            "log": self.log,
            "payload": to_dynamo(self.payload),
        }
        size = item_size(item)
        if size > MAX_ITEM_BYTES:
            raise ValidationError(
                f"item is {size} bytes; DynamoDB's limit is {MAX_ITEM_BYTES} bytes (400 KB)"
            )
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> LogItem:
        """Read a stored item back (``Decimal`` → numbers). Items written around the
        store (the AWS CLI, a console) are checked: a bad one raises ValidationError."""
        log, id = parse_stream_key(item["pk"])
        sk, type, payload = item.get("sk"), item.get("type"), item.get("payload", {})
        if isinstance(sk, bool) or not isinstance(sk, (int, Decimal)) or sk != int(sk) or sk < 1:
            raise ValidationError(f"{item['pk']}: sk must be a whole number >= 1, got {sk!r}")
        if not isinstance(type, str) or not type:
            raise ValidationError(f"{item['pk']}: type must be a non-empty string")
        if not isinstance(payload, dict):
            raise ValidationError(f"{item['pk']}: payload must be a map")
        return cls(
            log=item.get("log", log),
            id=id,
            version=int(sk),
            type=type,
            payload=from_dynamo(payload),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "log": self.log,
            "id": self.id,
            "version": self.version,
            "type": self.type,
            "payload": self.payload,
        }
