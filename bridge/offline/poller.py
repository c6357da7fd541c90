"""The stream poller: DynamoDB Streams → the publisher, as Lambda's event source does.

Reads the log table's stream through the DynamoDB Streams API (so it works on the
embedded endpoint and on DynamoDB Local alike), follows new shards (parents first),
and invokes the publisher with the Lambda event shape. A failed invocation is
retried with the same records; a partial batch failure (``batchItemFailures``) is
retried from the reported record on, so order per key is kept (the answer is read,
odd ones included, by :mod:`bridge.core.batch`; attempts and back-off come from
:mod:`bridge.core.retry`). After each success the shard's checkpoint moves on, so a
restart neither republishes nor misses one. Checkpoint I/O runs in a thread: the
archive shares the SQLite file, and a blocking wait for its lock on the event loop
would stop the very task that releases it.

It polls again at once while records flow and backs off (up to ``max_idle``) when
idle — unlike a fixed one-second sleep, which would put a second on every event.

``healthy`` (the local cloud's supervisor) is asked before a failure is counted or
warned about: when the cloud broke under it (the embedded DynamoDB died), a failed
read or publication is no news and no fault of the publisher; the batch stays pending,
uncheckpointed, and is published after the restart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bridge.core.batch import Verdict, read_response, sequence_numbers
from bridge.core.retry import RetryPolicy
from bridge.offline.state import Checkpoints

log = logging.getLogger(__name__)

FINAL_ATTEMPTS = 3  # while stopping: tries of a failing batch before it is set aside
MAX_RETRY_DELAY = 30.0  # seconds: the back-off between re-invocations stops growing here
Invoke = Callable[[dict[str, Any]], Awaitable[Any]]  # → an object with .ok/.payload/.error
# What a poll may fail with and the poller outlives: the endpoint down, restarting or
# throttling (botocore's errors, sockets), the local database busy. Anything else is a
# fault of ours: the task dies of it and the local cloud's supervisor says so.
EXPECTED_ERRORS = (BotoCoreError, ClientError, OSError, sqlite3.Error)


def lambda_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record in the shape Lambda hands to a function (JSON-able)."""
    out = _jsonable(record)
    out["eventSourceARN"] = stream_arn
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return int(value.timestamp())  # Lambda sends epoch seconds
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def verdict(result: Any, records: list[dict[str, Any]]) -> Verdict:
    """How an invocation with ``records`` ended: a function error retries the whole
    batch, as Lambda does; an answer is read by the partial batch rules of core."""
    if not result.ok:
        return Verdict(0, str(result.error))
    return read_response(sequence_numbers(records), result.payload)


@dataclass
class ShardState:
    shard_id: str
    parent_id: str | None
    iterator: str | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)  # records awaiting a retry
    retry_at: float = 0.0
    attempts: int = 0
    finished: bool = False


class StreamPoller:
    def __init__(
        self,
        *,
        dynamodb: Any,
        streams: Any,
        table_name: str,
        invoke: Invoke,
        checkpoints: Checkpoints,
        batch_size: int = 25,
        batch_window: float = 0.0,
        min_idle: float = 0.005,
        max_idle: float = 0.1,
        retry_delay: float = 1.0,
        max_attempts: int = 10,  # as the stack's event source mapping
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        self.dynamodb = dynamodb  # boto3 clients; called from worker threads
        self.streams = streams
        self.table_name = table_name
        self.invoke = invoke
        self.checkpoints = checkpoints
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.min_idle = min_idle
        self.max_idle = max_idle
        self.retry_delay = retry_delay
        self.max_attempts = max_attempts
        self.healthy = healthy
        self.stream_arn: str | None = None
        self.shards: dict[str, ShardState] = {}
        self.published = 0
        self.failed = 0  # records given up on (kept in stream_failures)
        self._stop = asyncio.Event()
        self._shards_checked = 0.0
        # When the last pass that found nothing to publish began: everything written
        # before then has been published.
        self.caught_up_at = 0.0
        self._last_warning, self._last_warned = "", 0.0

    async def run(self) -> None:
        """Poll until ``stop()``; back off while idle."""
        idle = self.min_idle
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                handled = await self.poll_once()
            except EXPECTED_ERRORS as error:  # the endpoint may restart: keep going
                if self.healthy():
                    self._warn(f"stream poll failed: {error}")
                handled = 0
                idle = self.max_idle
            else:
                if not handled and not any(s.pending for s in self.shards.values()):
                    self.caught_up_at = began
            if handled:
                idle = self.min_idle
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), idle)
            idle = min(self.max_idle, idle * 2)

    def _warn(self, message: str) -> None:
        """A warning, but the same one at most every 30 s: polls fail 10 times a second."""
        now = time.monotonic()
        if message != self._last_warning or now - self._last_warned > 30:
            log.warning("%s", message)
            self._last_warning, self._last_warned = message, now
        else:
            log.debug("%s", message)

    def stop(self) -> None:
        self._stop.set()

    def retry_policy(self, final: bool = False) -> RetryPolicy:
        """Attempts and back-off for a failing batch (``final``: while stopping, a
        failing batch gets only a few tries before it is set aside)."""
        attempts = FINAL_ATTEMPTS if final else self.max_attempts
        # As before the policy had a class: 0 attempts gives up at the first failure,
        # a negative delay retries at once.
        return RetryPolicy(max(1, attempts), max(0.0, self.retry_delay), MAX_RETRY_DELAY)

    async def catch_up(self, timeout: float = 60.0) -> None:
        """Publish everything the stream holds now (used on shutdown, writes closed)."""
        deadline = time.monotonic() + timeout
        before = self.published
        while time.monotonic() < deadline:
            if not self.healthy():
                return  # the cloud broke: what is left is published after the restart
            handled = await self.poll_once(refresh=True, final=True)
            log.debug("catch-up pass: %d records over %d shards", handled, len(self.shards))
            if not handled and not any(s.pending for s in self.shards.values()):
                log.info(
                    "stream caught up: %d records published while stopping", self.published - before
                )
                return
            if not handled:
                await asyncio.sleep(0.05)
        log.warning("stream not fully published after %.0f s", timeout)

    async def poll_once(self, refresh: bool = False, final: bool = False) -> int:
        """One pass over the shards; returns the number of records handed over."""
        if not await self._refresh_shards(force=refresh):
            return 0
        handled = 0
        for shard in list(self.shards.values()):
            if shard.finished and not shard.pending or not self._parent_done(shard):
                continue
            handled += await self._poll_shard(shard, final=final)
        return handled

    def _parent_done(self, shard: ShardState) -> bool:
        parent = self.shards.get(shard.parent_id or "")
        return parent is None or parent.finished

    async def _refresh_shards(self, force: bool = False) -> bool:
        now = time.monotonic()
        if self.stream_arn and not force and now - self._shards_checked < 1.0:
            return True
        self._shards_checked = now
        table = await asyncio.to_thread(self.dynamodb.describe_table, TableName=self.table_name)
        arn = table["Table"].get("LatestStreamArn")
        if not arn:
            return False
        if arn != self.stream_arn:
            self.stream_arn, self.shards = arn, {}
            await asyncio.to_thread(self.checkpoints.forget_older_streams, arn)
        kwargs: dict[str, Any] = {"StreamArn": arn}
        while True:
            description = (await asyncio.to_thread(self.streams.describe_stream, **kwargs))[
                "StreamDescription"
            ]
            for shard in description.get("Shards", []):
                if shard["ShardId"] not in self.shards:
                    _, finished = await asyncio.to_thread(
                        self.checkpoints.get, arn, shard["ShardId"]
                    )
                    self.shards[shard["ShardId"]] = ShardState(
                        shard["ShardId"], shard.get("ParentShardId"), finished=finished
                    )
            last = description.get("LastEvaluatedShardId")
            if not last:
                return True
            kwargs["ExclusiveStartShardId"] = last

    @property
    def _arn(self) -> str:
        """The stream being read: shards are polled only once ``_refresh_shards`` found it."""
        if self.stream_arn is None:
            raise RuntimeError("the stream poller has not found the table's stream yet")
        return self.stream_arn

    async def _iterator(self, shard: ShardState) -> str:
        sequence, _ = await asyncio.to_thread(self.checkpoints.get, self._arn, shard.shard_id)
        kwargs: dict[str, Any] = {"StreamArn": self._arn, "ShardId": shard.shard_id}
        if sequence:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=sequence)
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        response = await asyncio.to_thread(self.streams.get_shard_iterator, **kwargs)
        return response["ShardIterator"]

    async def _read(self, shard: ShardState, limit: int) -> list[dict[str, Any]]:
        if shard.iterator is None:
            shard.iterator = await self._iterator(shard)
        try:
            response = await asyncio.to_thread(
                self.streams.get_records, ShardIterator=shard.iterator, Limit=limit
            )
        except self.streams.exceptions.ExpiredIteratorException:
            shard.iterator = await self._iterator(shard)
            return []
        shard.iterator = response.get("NextShardIterator")
        if shard.iterator is None:
            shard.finished = True  # a closed shard, read to its end
        return [lambda_record(r, self._arn) for r in response.get("Records", [])]

    async def _poll_shard(self, shard: ShardState, final: bool = False) -> int:
        """Read (into ``pending`` at once, so nothing read is ever dropped), invoke,
        checkpoint what succeeded; returns how many records were taken off the stream.
        ``final``: stopping — retries come at once, and a batch that still fails after
        a few is recorded as a stream failure rather than left behind."""
        if shard.pending and not final and time.monotonic() < shard.retry_at:
            return 0
        if not shard.pending:
            await self._fill(shard)
        records = list(shard.pending)
        if not records:
            if shard.finished:
                await asyncio.to_thread(
                    self.checkpoints.save, self._arn, shard.shard_id, None, True
                )
            return 0
        try:
            outcome = verdict(await self.invoke({"Records": records}), records)
        except Exception as error:  # noqa: BLE001 - the runtime itself failed: retry too
            outcome = Verdict(0, f"{type(error).__name__}: {error}")
        failed = outcome.resume_at
        done = records if failed is None else records[:failed]
        if done:
            await self._checkpoint(shard, done, last=failed is None)
        if failed is None:
            shard.pending, shard.attempts = [], 0
            return len(done)
        shard.pending = records[failed:]
        if not self.healthy():
            return len(done)  # the cloud broke under it: kept, not counted, not warned of
        retry = self.retry_policy(final).after_failure(shard.attempts)
        shard.attempts = retry.attempts
        if retry.give_up:
            given_up = len(shard.pending)
            await self._give_up(shard, outcome.reason)
            return len(done) + given_up
        shard.retry_at = time.monotonic() + retry.delay
        log.warning(
            "publisher failed on %d of %d records (attempt %d, retry in %.1f s): %s",
            len(shard.pending),
            len(records),
            shard.attempts,
            retry.delay,
            outcome.reason,
        )
        return len(done)

    async def _fill(self, shard: ShardState) -> None:
        shard.pending.extend(await self._read(shard, self.batch_size))
        deadline = time.monotonic() + self.batch_window
        while (
            shard.pending
            and len(shard.pending) < self.batch_size
            and shard.iterator
            and time.monotonic() < deadline
        ):
            more = await self._read(shard, self.batch_size - len(shard.pending))
            if not more:
                await asyncio.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
            shard.pending.extend(more)

    async def _checkpoint(self, shard: ShardState, done: list[dict[str, Any]], last: bool) -> None:
        await asyncio.to_thread(
            self.checkpoints.save,
            self._arn,
            shard.shard_id,
            done[-1]["dynamodb"]["SequenceNumber"],
            shard.finished and last,
        )
        self.published += len(done)

    async def _give_up(self, shard: ShardState, reason: str) -> None:
        """As Lambda does after its retry attempts: record the batch, move on."""
        records, shard.pending, shard.attempts = shard.pending, [], 0
        await asyncio.to_thread(
            self.checkpoints.set_aside,
            self._arn,
            shard.shard_id,
            records,
            reason,
            shard.finished,
        )
        self.failed += len(records)
        log.error(
            "publisher gave up on %d records (sequence numbers %s to %s): %s; they are "
            "kept in the stream_failures table of the local database",
            len(records),
            records[0]["dynamodb"]["SequenceNumber"],
            records[-1]["dynamodb"]["SequenceNumber"],
            reason,
        )
