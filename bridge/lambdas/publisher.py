"""The seed's trigger: DynamoDB stream records of the log table → EventBridge events.

Every new log item (``pk`` ending in ``#stream``, INSERT or MODIFY) becomes one
``stream changes`` event on the bus named by ``EVENT_BUS_NAME``. Deletions and
other items in the table are not events of any log, so they are skipped; so is a
``#stream`` item written past the store that no event can be built from (logged).

PutEvents can reject single entries (``FailedEntryCount``, per-entry
``ErrorCode``) while accepting the rest. Those entries alone are re-sent with
exponential backoff; what still fails is handed back to Lambda as a partial
batch failure (the event source mapping needs ``ReportBatchItemFailures``): one
outcome per record, the earliest not done named, by :mod:`bridge.core.batch`.
Errors of the whole call (no such bus, access denied) are raised: boto3 has
already retried the transient ones, and a raise shows up in the Errors metric.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from bridge.core.batch import BatchOutcomes, BatchResponse
from bridge.core.dynamo_json import load_item
from bridge.core.events import MAX_PUT_BYTES, batches, entry_for, entry_size
from bridge.core.log import STREAM_SUFFIX, LogItem
from bridge.core.names import BUS_NAME
from bridge.core.retry import RetryPolicy
from bridge.lambdas import _env

PUBLISHED_EVENTS = ("INSERT", "MODIFY")

# Attempts per PutEvents batch (the first send included) and the backoff between
# them: BASE, 2*BASE, 4*BASE ... capped at MAX. Environment variables override
# them so tests and the local cloud need not wait.
MAX_ATTEMPTS = 4
BASE_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 2.0

Entry = dict[str, Any]


@dataclass
class _Tally:
    """What one invocation sent, for its summary line."""

    published: int = 0
    retries: int = 0


def _retry_policy() -> RetryPolicy:
    """Read at call time, so one container follows the environment it is given."""
    attempts = max(1, int(os.environ.get("PUBLISH_MAX_ATTEMPTS", MAX_ATTEMPTS)))
    base = float(os.environ.get("PUBLISH_RETRY_BASE_DELAY", BASE_DELAY_SECONDS))
    return RetryPolicy(attempts, max(0.0, base), MAX_DELAY_SECONDS)


# ---------------------------------------------------------------- record selection


def _log_item(record: dict[str, Any]) -> dict[str, Any] | None:
    """The new image of the log item a record writes, or None when it is not one to publish."""
    if record.get("eventName") not in PUBLISHED_EVENTS:
        return None
    image = record.get("dynamodb", {}).get("NewImage")
    if not image:
        return None
    item = load_item(image)
    pk = item.get("pk")
    if not isinstance(pk, str) or not pk.endswith(STREAM_SUFFIX):
        return None
    return item


def _entry(item: dict[str, Any], record: dict[str, Any], bus: str) -> Entry | None:
    """The PutEvents entry a log item becomes, or None (logged) when none can be built."""
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
            pk=item.get("pk"),
            sk=str(item.get("sk")),
            error=f"{type(error).__name__}: {error}",
            sequenceNumber=record.get("dynamodb", {}).get("SequenceNumber"),
        )
        return None


def _select(records: list[dict[str, Any]], bus: str) -> list[tuple[int, Entry]]:
    """(record position, entry) for each record that becomes an event, in stream order."""
    selected: list[tuple[int, Entry]] = []
    for position, record in enumerate(records):
        item = _log_item(record)
        entry = None if item is None else _entry(item, record, bus)
        if entry is not None:
            selected.append((position, entry))
    return selected


# ---------------------------------------------------------------- PutEvents


def _put(client: Any, entries: list[Entry]) -> list[tuple[int, str]]:
    """Send one PutEvents call; the positions (in ``entries``) rejected, and why."""
    response = client.put_events(Entries=entries)
    if not response.get("FailedEntryCount"):
        return []
    # Results come back in request order, one per entry; a failed one has ErrorCode.
    return [
        (i, _rejection(result))
        for i, result in enumerate(response["Entries"])
        if result.get("ErrorCode")
    ]


def _rejection(result: dict[str, Any]) -> str:
    """Why PutEvents refused one entry: its error code, and the message when it has one."""
    message = result.get("ErrorMessage")
    return f"{result['ErrorCode']}: {message}" if message else str(result["ErrorCode"])


def _put_with_backoff(
    client: Any, entries: list[Entry], policy: RetryPolicy
) -> tuple[list[tuple[int, str]], int]:
    """Send a batch, re-sending only the rejected entries with backoff.

    Returns the positions that still failed after the last attempt (in stream
    order, with the last rejection's reason) and how many re-sends were made.
    """
    pending = list(range(len(entries)))
    failed: list[tuple[int, str]] = []
    retries = 0
    for attempt in range(policy.max_attempts):
        if attempt:
            time.sleep(policy.delay(attempt - 1))
            retries += 1
        rejected = _put(client, [entries[i] for i in pending])
        failed = [(pending[i], reason) for i, reason in rejected]  # keeps stream order
        pending = [position for position, _ in failed]
        if not pending:
            break
    return failed, retries


def _publish(
    client: Any, selected: list[tuple[int, Entry]], outcomes: BatchOutcomes, policy: RetryPolicy
) -> _Tally:
    """Send the entries in PutEvents batches, recording each record's outcome.

    Stops at the first batch that does not go through in full: everything from its
    first failed record on is re-sent by Lambda anyway, and sending later records
    now would only put more events of the same keys ahead of the one that is missing.
    Those later records get no outcome, which reports them as not done.
    """
    tally = _Tally()
    offset = 0  # batches() keeps the entries' order, so positions follow by counting
    for batch in batches(entry for _, entry in selected):
        positions = [position for position, _ in selected[offset : offset + len(batch)]]
        offset += len(batch)
        try:
            still_failing, retries = _put_with_backoff(client, batch, policy)
        except Exception as error:
            if not tally.published:
                raise  # nothing sent yet: Lambda retries the whole batch
            # Earlier calls were published: report this call's records as failed, so
            # the retry starts at its first one instead of sending those events again.
            reason = f"{type(error).__name__}: {error}"
            _env.log("PutEvents failed", level=logging.ERROR, error=reason)
            for position in positions:
                outcomes.failed(position, reason)
            break
        tally.retries += retries
        tally.published += len(batch) - len(still_failing)
        reasons = {positions[i]: reason for i, reason in still_failing}
        for position in positions:
            if position in reasons:
                outcomes.failed(position, reasons[position])
            else:
                outcomes.succeeded(position)
        if still_failing:
            break
    return tally


# ---------------------------------------------------------------- the handler


def _log_summary(
    records: list[dict[str, Any]],
    selected: list[tuple[int, Entry]],
    tally: _Tally,
    outcomes: BatchOutcomes,
    bus: str,
) -> None:
    earliest = outcomes.earliest()
    fields: dict[str, Any] = {}
    if earliest is not None:
        fields["earliestFailure"] = {
            "sequenceNumber": earliest.item_id,
            "reason": earliest.reason,
        }
    _env.log(
        "published stream records",
        level=logging.WARNING if earliest is not None else logging.INFO,
        records=len(records),
        events=len(selected),
        skipped=len(records) - len(selected),
        published=tally.published,
        retries=tally.retries,
        failed=len(selected) - tally.published,
        bus=bus,
        **fields,
    )


def handler(event: dict[str, Any], context: Any) -> BatchResponse:
    """Publish one batch of stream records; report the first unpublished one to Lambda."""
    records: list[dict[str, Any]] = event.get("Records") or []
    bus = _env.setting("EVENT_BUS_NAME", BUS_NAME)
    selected = _select(records, bus)
    outcomes = BatchOutcomes.for_records(records)
    chosen = {position for position, _ in selected}
    for position in range(len(records)):
        if position not in chosen:
            outcomes.succeeded(position)  # not an event of any log: nothing to publish
    tally = _Tally()
    if selected:
        tally = _publish(_env.client("events"), selected, outcomes, _retry_policy())
    _log_summary(records, selected, tally, outcomes, bus)
    # Reporting the earliest failed record is enough, and the only report that keeps
    # order: Lambda re-delivers the shard from it, so that record and every record
    # after it (failed or not) come again, in stream order; records before it were
    # published. Consumers see the re-sent ones as duplicates and ignore them by version.
    return outcomes.response()
