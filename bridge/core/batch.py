"""Ordered partial batch responses for DynamoDB stream batches: both sides of one rule.

A function a DynamoDB stream invokes (its event source mapping set to
``ReportBatchItemFailures``) answers ``{"batchItemFailures": [{"itemIdentifier":
<SequenceNumber>}]}``. Lambda checkpoints just before the lowest sequence number
named and delivers the shard again from that record on, failed or not, in stream
order. So the earliest record that is not done is the one report that matters, and
the only one that keeps order per key: records before it are done, and it and every
record after it come again (consumers drop the repeats by version).

* :class:`BatchOutcomes` is the function's side (the publisher): one outcome per
  record, recorded by position in any order; :meth:`BatchOutcomes.response` names
  the earliest record not known to have succeeded — failed, or given no outcome at
  all, so a record the function never got to is retried rather than lost.
* :func:`read_response` is the event source's side (the local cloud's stream
  poller): from which record to deliver the batch again, reading odd answers as
  Lambda documents it does. The whole batch succeeded on ``None``, ``{}`` and a
  missing, null or empty ``batchItemFailures``. The whole batch failed on a null or
  empty ``itemIdentifier``, a failure without that key, an identifier that is not a
  record of the batch, and on anything malformed (not an object, not a list).

No I/O and no clock here, like the rest of ``bridge.core``; the shape follows
Powertools' batch processors: outcomes recorded by a small class, the response built
from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

__all__ = [
    "BatchItemFailure",
    "BatchOutcomes",
    "BatchResponse",
    "Failure",
    "Verdict",
    "read_response",
    "sequence_numbers",
]

NOT_ATTEMPTED = "not attempted"  # the reason of a record that was given no outcome
_MAX_SHOWN = 200  # characters of a malformed response quoted in a reason


class BatchItemFailure(TypedDict):
    itemIdentifier: str


class BatchResponse(TypedDict):
    batchItemFailures: list[BatchItemFailure]


def sequence_numbers(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The item identifier of each stream record, in batch order.

    A record without a sequence number (never seen from AWS) is named ``""``: Lambda
    reads an empty identifier as "the whole batch failed", the one safe report for a
    record nobody can name.
    """
    numbers: list[str] = []
    for record in records:
        dynamodb = record.get("dynamodb")
        number = dynamodb.get("SequenceNumber") if isinstance(dynamodb, Mapping) else None
        numbers.append(number if isinstance(number, str) else "")
    return numbers


@dataclass(frozen=True, slots=True)
class Failure:
    """A record that is not done: where it is in the batch and why."""

    position: int
    item_id: str
    reason: str


class BatchOutcomes:
    """Per-record outcomes of one stream batch, and the partial batch response they make.

    Outcomes are recorded by position (the record's index in the batch), once each;
    recording one twice, or outside the batch, is the caller's bug and raises
    ``ValueError``.
    """

    def __init__(self, item_ids: Sequence[str]) -> None:
        self._ids = tuple(item_ids)
        self._reasons: dict[int, str | None] = {}  # position -> None (succeeded) or why not

    @classmethod
    def for_records(cls, records: Sequence[Mapping[str, Any]]) -> BatchOutcomes:
        """Outcomes for a batch of DynamoDB stream records (identified by sequence number)."""
        return cls(sequence_numbers(records))

    def __len__(self) -> int:
        return len(self._ids)

    def succeeded(self, position: int) -> None:
        """The record at ``position`` is done (published, or nothing to publish)."""
        self._record(position, None)

    def failed(self, position: int, reason: str) -> None:
        """The record at ``position`` failed; it and every later record will come again."""
        self._record(position, reason)

    def _record(self, position: int, reason: str | None) -> None:
        if not 0 <= position < len(self._ids):
            raise ValueError(f"position {position} is outside a batch of {len(self._ids)}")
        if position in self._reasons:
            raise ValueError(f"record {position} already has an outcome")
        self._reasons[position] = reason

    @property
    def succeeded_count(self) -> int:
        return sum(reason is None for reason in self._reasons.values())

    @property
    def failed_count(self) -> int:
        return sum(reason is not None for reason in self._reasons.values())

    @property
    def pending_count(self) -> int:
        """Records given no outcome yet."""
        return len(self._ids) - len(self._reasons)

    def failures(self) -> list[Failure]:
        """The recorded failures, in stream order."""
        return [
            Failure(position, self._ids[position], reason)
            for position, reason in sorted(self._reasons.items())
            if reason is not None
        ]

    def earliest(self) -> Failure | None:
        """The first record not known to have succeeded, or None when all did."""
        for position, item_id in enumerate(self._ids):
            if position not in self._reasons:
                return Failure(position, item_id, NOT_ATTEMPTED)
            reason = self._reasons[position]
            if reason is not None:
                return Failure(position, item_id, reason)
        return None

    def response(self) -> BatchResponse:
        """What the function returns to Lambda: the earliest record not done, or none.

        Naming later failures as well would change nothing (Lambda resumes at the
        lowest sequence number named), so the answer names one record at most.
        """
        earliest = self.earliest()
        if earliest is None:
            return {"batchItemFailures": []}
        return {"batchItemFailures": [{"itemIdentifier": earliest.item_id}]}


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a batch ended, as the event source reads the function's answer."""

    resume_at: int | None  # position of the first record to deliver again; None: all done
    reason: str = ""  # why the batch is not done, for logs and the failure record

    @property
    def done(self) -> bool:
        return self.resume_at is None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _whole_batch(why: str) -> Verdict:
    return Verdict(0, f"the whole batch failed: {why}")


def read_response(item_ids: Sequence[str], response: object) -> Verdict:
    """From which record a batch is delivered again, given the function's answer.

    ``item_ids`` are the batch's identifiers in order (:func:`sequence_numbers`).
    A function *error* is not an answer: the caller retries the whole batch itself.
    """
    if response is None:
        return Verdict(None)  # a null response: nothing failed
    if not isinstance(response, Mapping):
        return _whole_batch(f"the response is not a JSON object: {_shown(response)}")
    failures = response.get("batchItemFailures")
    if failures is None or (isinstance(failures, list) and not failures):
        return Verdict(None)  # {} and a null or empty list all mean success
    if not isinstance(failures, list):
        return _whole_batch(f"batchItemFailures is not a list: {_shown(failures)}")
    position_of: dict[str, int] = {}
    for position, item_id in enumerate(item_ids):
        position_of.setdefault(item_id, position)
    positions: list[int] = []
    for failure in failures:
        if not isinstance(failure, Mapping) or "itemIdentifier" not in failure:
            return _whole_batch(f"a batch item failure has no itemIdentifier: {_shown(failure)}")
        item_id = failure["itemIdentifier"]
        if item_id is None or item_id == "":
            return _whole_batch(f"a batch item failure names no record: {_shown(failure)}")
        if not isinstance(item_id, str) or item_id not in position_of:
            return _whole_batch(f"itemIdentifier {_shown(item_id)} is not a record of the batch")
        positions.append(position_of[item_id])
    earliest = min(positions)
    return Verdict(
        earliest,
        f"batchItemFailures {_shown(failures)}: from record {earliest + 1} of {len(item_ids)}",
    )
