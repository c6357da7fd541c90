"""Write fake users into a log table, many users at once.

Each user's four events are appended in order (versions 1–4, with the expected
version, so a rerun over existing data fails loudly instead of overwriting);
different users are written concurrently from a thread pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bridge.fake import FakeEvent
from bridge.store import LogStore


@dataclass(frozen=True)
class GenerateResult:
    users: int
    events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def write_users(
    make_table: Callable[[], Any],
    users: Iterable[list[FakeEvent]],
    concurrency: int = 8,
    on_event: Callable[[], None] = lambda: None,
) -> GenerateResult:
    """Append every user's events; ``make_table`` builds one boto3 Table per thread
    (boto3 resources must not be shared between threads)."""
    local = threading.local()

    def store() -> LogStore:
        if not hasattr(local, "store"):
            local.store = LogStore(make_table())
        return local.store

    def write(events: list[FakeEvent]) -> int:
        for event in events:
            store().append(
                event.log, event.id, event.type, event.payload, expected_version=event.version - 1
            )
            on_event()
        return len(events)

    start = time.perf_counter()
    count = 0
    written = 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for n in pool.map(write, users):
            count += 1
            written += n
    return GenerateResult(count, written, time.perf_counter() - start)
