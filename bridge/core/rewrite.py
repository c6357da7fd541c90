"""An archived event written again: as the log item it stands for, or as a PutEvents entry.

Shared by whatever writes archived or bridged events into a local target (the bridge
client's sinks, ``bridge replay``): pure, so both get the same item and the same order.

* :func:`log_item_of` — the ``{stage}-dynamodb-logs`` item of a ``stream changes``
  event (``pk``, ``sk`` as a Decimal version, ``log``, ``type``, ``payload``);
* :func:`waves` — BatchWriteItem calls of at most 25 items, each stream at most once a
  call and its versions ascending across calls, so a stream trigger downstream sees
  every stream in version order;
* :func:`entry_of` — a PutEvents entry carrying an event as it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from bridge.core.errors import ValidationError
from bridge.core.events import compact_json
from bridge.core.log import to_dynamo
from bridge.core.names import BUS_NAME

MAX_BATCH_WRITE = 25
# The local extension of PutEvents: an entry carrying this member is a replayed event.
REPLAY_NAME_MEMBER = "replay-name"
REPLAY_NAME = re.compile(r"[.\-_A-Za-z0-9]{1,64}")  # EventBridge's replay names


def check_replay_name(kind: str, name: object) -> str:
    """A replay name as EventBridge allows it (1-64 of ``A-Za-z0-9._-``)."""
    if not isinstance(name, str) or not REPLAY_NAME.fullmatch(name):
        raise ValidationError(
            f"{kind}: {name!r} is not a replay name (1 to 64 letters, digits, '.', '-', '_')"
        )
    return name


def log_item_of(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The log item a ``stream changes`` event stands for, or None for other events."""
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        return None
    key = detail.get("key")
    if not isinstance(key, Mapping) or not isinstance(key.get("pk"), str):
        return None
    sk = key.get("sk")
    if isinstance(sk, bool) or not isinstance(sk, int | float | Decimal | str):
        return None
    if not isinstance(detail.get("log"), str) or not isinstance(detail.get("type"), str):
        return None
    payload = detail.get("payload")
    if not isinstance(payload, Mapping):
        return None
    return {
        "pk": key["pk"],
        "sk": Decimal(str(sk)),
        "log": detail["log"],
        "type": detail["type"],
        "payload": to_dynamo(dict(payload)),
    }


def waves(items: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """BatchWriteItem calls of at most 25 items, each stream at most once per call,
    its versions in ascending order across calls (a duplicate key is written once)."""
    unique: dict[tuple[str, Decimal], dict[str, Any]] = {}
    for item in items:
        unique[(item["pk"], item["sk"])] = item
    ordered = sorted(unique.values(), key=lambda item: (item["sk"], item["pk"]))
    calls: list[list[dict[str, Any]]] = []
    pending = ordered
    while pending:
        call: list[dict[str, Any]] = []
        seen: set[str] = set()
        later: list[dict[str, Any]] = []
        for item in pending:
            if len(call) < MAX_BATCH_WRITE and item["pk"] not in seen:
                call.append(item)
                seen.add(item["pk"])
            else:
                later.append(item)
        calls.append(call)
        pending = later
    return calls


def entry_of(event: Mapping[str, Any], *, keep_time: bool = False) -> dict[str, Any]:
    """A PutEvents entry carrying a received or archived event as it was (with
    ``keep_time``, its own ``time`` too, as a replay shows it to handlers)."""
    entry: dict[str, Any] = {
        "Source": str(event.get("source", "")),
        "DetailType": str(event.get("detail-type", "")),
        "Detail": compact_json(event.get("detail", {})),
        "EventBusName": BUS_NAME,
    }
    resources = event.get("resources")
    if isinstance(resources, list) and resources:
        entry["Resources"] = [str(r) for r in resources]
    if keep_time and isinstance(event.get("time"), str):
        entry["Time"] = event["time"]
    return entry
