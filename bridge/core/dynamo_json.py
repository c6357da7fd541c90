"""DynamoDB's typed JSON (``{"S": "x"}``) to plain values, as stream records carry it.

boto3 has a deserializer, but ``bridge.core`` imports nothing outside the stdlib.
Numbers become ``Decimal``, exactly as boto3's resource layer returns them.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any


def load_value(typed: dict[str, Any]) -> Any:
    """One typed attribute value, e.g. ``{"N": "3"}`` → ``Decimal("3")``."""
    ((tag, raw),) = typed.items()
    if tag == "S":
        return raw
    if tag == "N":
        return Decimal(raw)
    if tag == "BOOL":
        return bool(raw)
    if tag == "NULL":
        return None
    if tag == "M":
        return {k: load_value(v) for k, v in raw.items()}
    if tag == "L":
        return [load_value(v) for v in raw]
    if tag == "SS":
        return set(raw)
    if tag == "NS":
        return {Decimal(v) for v in raw}
    if tag == "B":
        return base64.b64decode(raw) if isinstance(raw, str) else raw
    if tag == "BS":
        return {base64.b64decode(v) if isinstance(v, str) else v for v in raw}
    raise ValueError(f"unknown DynamoDB type tag {tag!r}")


def load_item(image: dict[str, Any]) -> dict[str, Any]:
    """A whole typed item (a stream record's ``NewImage``) → plain dict."""
    return {name: load_value(typed) for name, typed in image.items()}
