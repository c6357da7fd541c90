"""The seed's trigger: DynamoDB stream records of the log table → EventBridge events.

Every new log item (``pk`` ending in ``#stream``, INSERT or MODIFY) becomes one
``stream changes`` event on the bus named by ``EVENT_BUS_NAME``. Deletions and
other items in the table are not events of any log, so they are skipped; so is a
``#stream`` item written past the store that no event can be built from (logged).

PutEvents can reject single entries (``FailedEntryCount``, per-entry
``ErrorCode``) while accepting the rest. Those entries alone are re-sent with
exponential backoff; what still fails is handed back to Lambda as a partial
batch failure (the event source mapping needs ``ReportBatchItemFailures``).
Errors of the whole call (no such bus, access denied) are raised: boto3 has
already retried the transient ones, and a raise shows up in the Errors metric.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from bridge.core.dynamo_json import load_item
from bridge.core.events import BUS_NAME, MAX_PUT_BYTES, batches, entry_for, entry_size
from bridge.core.log import STREAM_SUFFIX, LogItem
from bridge.lambdas import _env

PUBLISHED_EVENTS = ("INSERT", "MODIFY")

# Attempts per PutEvents batch (the first send included) and the backoff between
# them: BASE, 2*BASE, 4*BASE ... capped at MAX. Environment variables override
# them so tests and the local cloud need not wait.
MAX_ATTEMPTS = 4
BASE_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 2.0


def _attempts() -> int:
    return max(1, int(os.environ.get("PUBLISH_MAX_ATTEMPTS", MAX_ATTEMPTS)))


def _delay(retry: int) -> float:
    base = float(os.environ.get("PUBLISH_RETRY_BASE_DELAY", BASE_DELAY_SECONDS))
    return min(MAX_DELAY_SECONDS, base * 2**retry)


def _entry(record: dict[str, Any], bus: str) -> dict[str, Any] | None:
    """The PutEvents entry a stream record becomes, or None when it is not one to publish."""
    if record.get("eventName") not in PUBLISHED_EVENTS:
        return None
    image = record.get("dynamodb", {}).get("NewImage")
    if not image:
        return None
    item = load_item(image)
    pk = item.get("pk")
    if not isinstance(pk, str) or not pk.endswith(STREAM_SUFFIX):
        return None
    try:
        entry = entry_for(LogItem.from_item(item), bus)
        if entry_size(entry) > MAX_PUT_BYTES:
            raise ValueError(f"the event is {entry_size(entry)} bytes even when partial")
        return entry
    except (ValueError, KeyError, TypeError) as error:
        # Written past the store (no type, a bad key, a huge type): no event can ever
        # be built from it, and failing the batch would block the shard behind it.
        _env.log(
            "skipped an invalid log item",
            level=logging.ERROR,
            pk=pk,
            sk=str(item.get("sk")),
            error=f"{type(error).__name__}: {error}",
            sequenceNumber=record.get("dynamodb", {}).get("SequenceNumber"),
        )
        return None


def _put(client: Any, entries: list[dict[str, Any]]) -> list[int]:
    """Send one PutEvents batch; the positions (in ``entries``) that were rejected."""
    response = client.put_events(Entries=entries)
    if not response.get("FailedEntryCount"):
        return []
    # Results come back in request order, one per entry; a failed one has ErrorCode.
    return [i for i, result in enumerate(response["Entries"]) if result.get("ErrorCode")]


def _publish_batch(client: Any, entries: list[dict[str, Any]]) -> tuple[list[int], int]:
    """Send a batch, re-sending only the rejected entries with backoff.

    Returns the positions that still failed after the last attempt and how many
    re-sends were made.
    """
    pending = list(range(len(entries)))
    retries = 0
    for attempt in range(_attempts()):
        if attempt:
            time.sleep(_delay(attempt - 1))
            retries += 1
        failed = _put(client, [entries[i] for i in pending])
        pending = [pending[i] for i in failed]  # keeps the original (stream) order
        if not pending:
            break
    return pending, retries


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Publish one batch of stream records; report the first unpublished one to Lambda."""
    records: list[dict[str, Any]] = event.get("Records") or []
    bus = _env.setting("EVENT_BUS_NAME", BUS_NAME)
    # (record position, entry) for each record that becomes an event, in stream order.
    selected: list[tuple[int, dict[str, Any]]] = []
    for position, record in enumerate(records):
        entry = _entry(record, bus)
        if entry is not None:
            selected.append((position, entry))

    client = _env.client("events") if selected else None
    position_of = {id(entry): position for position, entry in selected}
    published = retries = 0
    failed_positions: list[int] = []
    for batch in batches(entry for _, entry in selected):
        try:
            still_failing, batch_retries = _publish_batch(client, batch)
        except Exception as error:
            if not published:
                raise  # nothing sent yet: Lambda retries the whole batch
            # Earlier calls were published: report this call's first record, so the
            # retry starts there instead of sending those events again.
            _env.log(
                "PutEvents failed", level=logging.ERROR, error=f"{type(error).__name__}: {error}"
            )
            failed_positions = [position_of[id(batch[0])]]
            break
        retries += batch_retries
        published += len(batch) - len(still_failing)
        if still_failing:
            failed_positions = [position_of[id(batch[i])] for i in still_failing]
            # Stop here: everything from the failed record on is re-sent by Lambda
            # anyway, and sending later records now would only put more events of
            # the same keys ahead of the one that is missing.
            break

    not_sent = len(selected) - published
    _env.log(
        "published stream records",
        level=logging.WARNING if failed_positions else logging.INFO,
        records=len(records),
        events=len(selected),
        skipped=len(records) - len(selected),
        published=published,
        retries=retries,
        failed=not_sent,
        bus=bus,
    )
    if not failed_positions:
        return {"batchItemFailures": []}
    # Reporting the earliest failed record is enough, and the only report that keeps
    # order: Lambda checkpoints just before the lowest reported sequence number and
    # re-delivers the shard from there, so that record and every record after it
    # (failed or not) come again, in stream order; records before it were published.
    # Consumers see the re-sent ones as duplicates and ignore them by version.
    earliest = records[min(failed_positions)]
    return {"batchItemFailures": [{"itemIdentifier": earliest["dynamodb"]["SequenceNumber"]}]}
