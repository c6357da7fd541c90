"""The event a log item becomes on the bus, and PutEvents batching.

The seed's event: ``source "dynamodb-log"``, ``detail-type "stream changes"``,
``detail {log, key {pk, sk}, type, payload}``. A detail over 10,240 bytes is sent
``partial: true`` with ``payload {id}`` only: the handler reads the rest from the log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from bridge.core.errors import ValidationError
from bridge.core.inputs import parse_json, text_problem
from bridge.core.log import LogItem, from_dynamo
from bridge.core.names import BUS_NAME, DEFAULT_REGION, LOCAL_ACCOUNT

SOURCE = "dynamodb-log"
DETAIL_TYPE = "stream changes"
MAX_DETAIL_BYTES = 10_240
MAX_ENTRIES_PER_PUT = 10
MAX_PUT_BYTES = 256 * 1024
# EventBridge documents no nesting limit for Detail; the local bus sets one. 100 is
# three times what a log event reaches (a payload DynamoDB stores nests 31 deep, the
# detail adds 1) and well inside what the Python that handles every event recurses
# through (json, copy.deepcopy, the pattern matcher: ~1,000 frames, 2 per level).
MAX_DETAIL_DEPTH = 100


def compact_json(value: Any) -> str:
    """The JSON text sent on the wire (no spaces: sizes are counted on this form)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_number)


def _number(value: Any) -> Any:
    """Values DynamoDB hands back (Decimal, binary) in their JSON form."""
    converted = from_dynamo(value)
    if converted is value:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    return converted


def detail_text(item: LogItem) -> str:
    """The event detail of one log item as its JSON text, applying the 10 KB partial
    rule: encoded once, and again only when the payload has to be cut to its id."""
    detail: dict[str, Any] = {
        "log": item.log,
        "key": {"pk": item.pk, "sk": item.version},
        "type": item.type,
        "payload": item.payload,
    }
    text = compact_json(detail)
    if len(text.encode()) > MAX_DETAIL_BYTES:
        text = compact_json({**detail, "payload": {"id": item.id}, "partial": True})
    return text


def entry_for(item: LogItem, bus_name: str = BUS_NAME) -> dict[str, Any]:
    """A PutEvents request entry for one log item."""
    return {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPE,
        "Detail": detail_text(item),
        "EventBusName": bus_name,
    }


def entry_size(entry: dict[str, Any]) -> int:
    """PutEvents entry size as AWS counts it (Time 14 bytes + the UTF-8 fields).

    A lone surrogate counts the 3 bytes it would take: such an entry is refused on
    its own (:func:`entry_problem`), not by the request-wide size check failing."""
    size = 14 if entry.get("Time") is not None else 0
    for field in ("Source", "DetailType", "Detail"):
        value = entry.get(field)
        if value:
            size += len(value.encode("utf-8", "surrogatepass"))
    for resource in entry.get("Resources") or []:
        size += len(resource.encode("utf-8", "surrogatepass"))
    return size


def parse_detail(text: str) -> Any:
    """A PutEvents entry's ``Detail`` parsed, or None when it is malformed: not JSON,
    nested deeper than :data:`MAX_DETAIL_DEPTH`, or holding text UTF-8 cannot carry
    (a ``\\ud800`` escape), which no archive, wire or handler could take (AWS's
    ``MalformedDetail`` all three)."""
    try:
        return parse_json("Detail", text, MAX_DETAIL_DEPTH)
    except ValidationError:
        return None


def entry_problem(entry: dict[str, Any]) -> tuple[str, str] | None:
    """``(ErrorCode, ErrorMessage)`` for an entry whose text fields hold text UTF-8
    cannot carry (AWS: ``InvalidArgument``, "a specified parameter is not valid"), else
    None. Fields of the wrong type are left to the type checks."""
    fields = [(name, entry.get(name)) for name in ("Source", "DetailType", "EventBusName")]
    resources = entry.get("Resources")
    if isinstance(resources, list):
        fields += [("Resources", resource) for resource in resources]
    for name, value in fields:
        problem = text_problem(value) if isinstance(value, str) else None
        if problem is not None:
            return "InvalidArgument", f"Parameter {name} is not valid. Reason: {problem}."
    return None


def batches(
    entries: Iterable[dict[str, Any]],
    max_entries: int = MAX_ENTRIES_PER_PUT,
    max_bytes: int = MAX_PUT_BYTES,
) -> Iterator[list[dict[str, Any]]]:
    """Split entries into PutEvents calls of at most 10 entries and 256 KB, in order."""
    batch: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        n = entry_size(entry)
        if batch and (len(batch) == max_entries or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += n
    if batch:
        yield batch


def envelope(
    entry: dict[str, Any],
    *,
    account: str = LOCAL_ACCOUNT,
    region: str = DEFAULT_REGION,
    event_id: str | None = None,
    time: datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The event EventBridge delivers to targets for one accepted PutEvents entry
    (``detail``: the entry's ``Detail`` already parsed, if the caller has it)."""
    when = time or datetime.now(UTC)
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": entry["DetailType"],
        "source": entry["Source"],
        "account": account,
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": list(entry.get("Resources") or []),
        "detail": json.loads(entry["Detail"]) if detail is None else detail,
    }
