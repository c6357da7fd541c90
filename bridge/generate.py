"""Bulk-load fake users into a log table, many users at once.

Users are written in chunks of 25 (BatchWriteItem's limit), each chunk in four
waves — every user's version 1, then every version 2, … — so one call never holds
two events of one stream and each stream's order in the table's stream is kept.
Chunks run concurrently from a thread pool.

A batch put has no condition, so each chunk first asks which of its users exist
already (one BatchGetItem) and leaves those out: a second run with the same ``seed``
writes nothing and publishes nothing again. Appends with optimistic locking go
through ``LogStore.append``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

from bridge.core.log import LogItem, stream_key
from bridge.fake import FakeEvent
from bridge.store import MAX_BATCH_ITEMS, LogStore


@dataclass(frozen=True)
class GenerateResult:
    users: int
    events: int
    seconds: float
    skipped: int = 0  # users that existed already and were left alone

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def chunks(users: Iterable[list[FakeEvent]], size: int) -> Iterator[list[list[FakeEvent]]]:
    iterator = iter(users)
    while chunk := list(islice(iterator, size)):
        yield chunk


def write_users(
    make_table: Callable[[], Any],
    users: Iterable[list[FakeEvent]],
    concurrency: int = 8,
    on_events: Callable[[int], None] = lambda n: None,
) -> GenerateResult:
    """Write every user's events; ``make_table`` builds one boto3 Table per thread
    (boto3 resources must not be shared between threads)."""
    local = threading.local()

    def store() -> LogStore:
        if not hasattr(local, "store"):
            local.store = LogStore(make_table())
        return local.store

    def write(chunk: list[list[FakeEvent]]) -> tuple[int, int, int]:
        keys = [stream_key(events[0].log, events[0].id) for events in chunk]
        found = store().existing(
            [(key, v) for key, events in zip(keys, chunk, strict=True) for v in (1, len(events))]
        )
        todo = []
        for key, events in zip(keys, chunk, strict=True):
            if (key, len(events)) in found:
                continue  # written whole by an earlier run
            if (key, 1) in found:  # a run stopped between waves: go on from its next version
                events = events[store().version(events[0].log, events[0].id) :]
            todo.append(events)
        skipped = len(chunk) - len(todo)
        on_events(sum(map(len, chunk)) - sum(map(len, todo)))  # the bar counts them as done
        chunk = todo
        if not chunk:
            return 0, 0, skipped
        waves = max(len(events) for events in chunk)
        for wave in range(waves):
            batch = [
                LogItem(e.log, e.id, e.version, e.type, e.payload)
                for events in chunk
                if wave < len(events)
                for e in [events[wave]]
            ]
            store().put_batch(batch)
            on_events(len(batch))
        return len(chunk), sum(len(events) for events in chunk), skipped

    start = time.perf_counter()
    count = written = skipped = 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for users_done, events_done, existed in pool.map(write, chunks(users, MAX_BATCH_ITEMS)):
            count += users_done
            written += events_done
            skipped += existed
    return GenerateResult(count, written, time.perf_counter() - start, skipped)
