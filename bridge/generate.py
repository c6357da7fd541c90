"""Bulk-load fake users into a log table, many users at once.

Users are written in chunks of 25 (BatchWriteItem's limit), each chunk in four
waves — every user's version 1, then every version 2, … — so one call never holds
two events of one stream and each stream's order in the table's stream is kept.
Chunks run concurrently from a thread pool.

The users are fresh (random v4 ids, or the same ids again for the same ``seed``,
which rewrites identical items), so the unconditional batch put cannot clobber an
application's events; appends with optimistic locking go through ``LogStore.append``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

from bridge.core.log import LogItem
from bridge.fake import FakeEvent
from bridge.store import MAX_BATCH_ITEMS, LogStore


@dataclass(frozen=True)
class GenerateResult:
    users: int
    events: int
    seconds: float

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

    def write(chunk: list[list[FakeEvent]]) -> tuple[int, int]:
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
        return len(chunk), sum(len(events) for events in chunk)

    start = time.perf_counter()
    count = written = 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for users_done, events_done in pool.map(write, chunks(users, MAX_BATCH_ITEMS)):
            count += users_done
            written += events_done
    return GenerateResult(count, written, time.perf_counter() - start)
