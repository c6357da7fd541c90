"""`bridge rebuild --as-of T --into DIR`: a local cloud database holding the log and the
read models exactly as they were at T.

The archived log events up to T (``time <= T``) go through the pipeline a live write
takes: each becomes its log item again, written into a fresh local cloud's log table
(in ``DIR/db``), whose stream → publisher → bus → subscribed handlers (those of
``dynamodb-logs.toml``, all or the named ones) build the read models. Then the cloud
stops cleanly — its stop drains the pipeline: everything in the stream is published
and every invocation, retries included, has ended — and ``bridge offline --db DIR/db``
serves that moment.

- Log items are written idempotently by ``pk``/``sk`` (``attribute_not_exists``):
  an item a handler already appended during the rebuild is not written twice.
- A ``partial`` event (its payload was over 10 KB, the event holds ``{id}`` only) takes
  its payload from the source database's own log table when it has the item (an
  offline's ``db`` holds both the archive and the tables); one found nowhere is
  counted and named in the summary, not silently skipped.
- Events of the archive that are not log events (what handlers put on the bus) are
  counted, not sent: the handlers that emitted them emit them again.
- Within one archived second, a stream's events go in version order.

The rebuilt database's own archive holds the events as published during the rebuild
(with the rebuild's times), as any offline's archive holds what its bus saw.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.archive import iter_events, to_iso
from bridge.core.errors import BridgeError, ValidationError
from bridge.core.events import DETAIL_TYPE, SOURCE
from bridge.core.failure import FAILURE_PK_PREFIX
from bridge.core.log import to_dynamo
from bridge.core.names import DEFAULT_REGION, core_table_name, log_table_name
from bridge.core.subscriptions import Subscriptions
from bridge.core.timespec import parse_time
from bridge.diff import DB_FILE

log = logging.getLogger(__name__)

WRITE_CHUNK = 100  # log items written per worker-thread call
LOCAL_KEY = "local"  # any key works against the local cloud's DynamoDB


def parse_as_of(text: str, now: datetime | None = None) -> datetime:
    """``--as-of``: the shared time forms (ISO 8601, a time without an offset being
    UTC; ``-2h``; ``yesterday``; ``now``)."""
    return parse_time("--as-of", text, now or datetime.now(UTC))


def archive_end(as_of: datetime) -> str:
    """The exclusive ``createdAt`` bound that keeps exactly the events at or before
    ``as_of`` (the archive keeps milliseconds)."""
    at = datetime.fromisoformat(to_iso(as_of).replace("Z", "+00:00"))  # cut to the ms
    return to_iso(at + timedelta(milliseconds=1))


@dataclass
class RebuildSummary:
    as_of: str
    source: str
    into: str
    functions: list[str]
    log_events: int = 0  # log events of the archive up to as_of
    written: int = 0  # log items written by the rebuild
    already_there: int = 0  # written by a handler during the rebuild first
    partial_filled: int = 0  # partial events whose payload came from the source's log
    partial_missing: list[str] = field(default_factory=list)  # "pk/sk" found nowhere
    other_events: int = 0  # archived events that are not log events: not sent
    published: int = 0  # stream records the rebuilt cloud published
    failures: list[dict[str, Any]] = field(default_factory=list)  # failure records stored
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of,
            "source": self.source,
            "into": self.into,
            "functions": self.functions,
            "log_events": self.log_events,
            "written": self.written,
            "already_there": self.already_there,
            "partial_filled": self.partial_filled,
            "partial_missing": self.partial_missing,
            "other_events": self.other_events,
            "published": self.published,
            "failures": self.failures,
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        out = [
            f"rebuilt {self.into} as of {self.as_of} from {self.source}: "
            f"{self.written} log events applied ({self.log_events} archived up to then), "
            f"{self.published} published, in {self.seconds:.1f} s"
        ]
        if self.already_there:
            out.append(f"{self.already_there} log items were there already (a handler wrote them)")
        if self.partial_filled:
            out.append(f"{self.partial_filled} partial events took their payload from the log")
        if self.partial_missing:
            out.append(
                f"{len(self.partial_missing)} partial events have no full payload in "
                f"the source, not applied: {', '.join(self.partial_missing)}"
            )
        if self.other_events:
            out.append(f"{self.other_events} archived events are not log events: not sent")
        if self.failures:
            out.append(f"{len(self.failures)} handler failures (bridge failures list):")
            out.extend(
                f"  {f['functionName']} {f['requestId']}: {f['errorType']}: {f['errorMessage']}"
                for f in self.failures
            )
        else:
            out.append("no handler failures")
        return out


def select_functions(subscriptions: Subscriptions, names: Iterable[str]) -> Subscriptions:
    """Only the named subscribers get events (every function without a pattern, such
    as an onFailure destination, stays: it runs only when named). None named: all."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return subscriptions
    subscribers = {spec.name for spec in subscriptions.subscribers}
    unknown = [name for name in wanted if name not in subscribers]
    if unknown:
        raise ValidationError(
            f"--function {unknown[0]}: no such subscriber in {subscriptions.source} "
            f"(subscribers: {', '.join(sorted(subscribers)) or 'none'})"
        )
    kept = {
        name: spec
        for name, spec in subscriptions.functions.items()
        if spec.pattern is None or name in wanted
    }
    return replace(subscriptions, functions=kept)


def _log_item(detail: dict[str, Any]) -> dict[str, Any] | None:
    """The log item a log event was published for (None: not a log event)."""
    key = detail.get("key")
    if not isinstance(key, dict) or "pk" not in key or "sk" not in key:
        return None
    return {
        "pk": key["pk"],
        "sk": int(key["sk"]),
        "type": detail.get("type"),
        "log": detail.get("log"),
        "payload": detail.get("payload"),
    }


def _in_version_order(items: Iterator[tuple[str, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Items in archive order, except that within one archived ``createdAt`` they go by
    version (an archive's order within a second is its insertion order)."""
    group: list[dict[str, Any]] = []
    current: str | None = None
    for created, item in items:
        if created != current and group:
            yield from sorted(group, key=lambda i: i["sk"])
            group = []
        current = created
        group.append(item)
    yield from sorted(group, key=lambda i: i["sk"])


class _SourceLog:
    """The source database's own log table, read once, when a partial event needs it."""

    def __init__(self, db: Path, table: str, region: str) -> None:
        self.db, self.table, self.region = db, table, region
        self._items: dict[str, dict[str, Any]] | None = None

    def payload(self, pk: str, sk: int) -> dict[str, Any] | None:
        from bridge.core.dynamo_json import load_item
        from bridge.core.log import from_dynamo
        from bridge.offline import reader, state

        if self._items is None:
            try:
                self._items = reader.read_table(self.db, self.table, self.region).items
            except BridgeError:
                self._items = {}  # an archive alone (a bridge client's file): none there
        found = self._items.get(state.key_text({"pk": {"S": pk}, "sk": {"N": str(sk)}}))
        if found is None or "payload" not in found:
            return None
        return from_dynamo(load_item(found)["payload"])


def check_paths(source: Path, into: Path) -> Path:
    """Refuse a missing source and an ``into`` that holds a database already (a rebuild
    never writes over one); returns the database to build."""
    if not source.is_file():
        raise BridgeError(f"no archive at {source}: nothing was archived there yet")
    if into.exists() and not into.is_dir():
        raise BridgeError(f"--into {into}: not a directory")
    target = into / DB_FILE
    if target.exists():
        raise BridgeError(f"{target} exists: rebuild into a new directory (or remove it first)")
    return target


async def rebuild(
    source: Path,
    as_of: datetime,
    into: Path,
    subscriptions: Subscriptions,
    project_root: Path,
    stage: str = "local",
    region: str = DEFAULT_REGION,
    on_progress: Callable[[int], None] = lambda n: None,
) -> RebuildSummary:
    """Build ``into/db`` as of ``as_of`` from the archive in ``source``."""
    from bridge.offline.cloud import LocalCloud, OfflineOptions

    started = time.perf_counter()
    target = check_paths(source, into)
    summary = RebuildSummary(
        as_of=to_iso(as_of),
        source=str(source),
        into=str(into),
        functions=[spec.name for spec in subscriptions.subscribers],
    )
    into.mkdir(parents=True, exist_ok=True)
    options = OfflineOptions(
        stage=stage,
        dynamodb_port=0,
        events_port=0,
        ws_port=0,
        bridge=False,
        db=target,
        region=region,
        autosave=0,  # folded once, at the clean stop
    )
    cloud = LocalCloud(options, subscriptions, project_root)
    await cloud.start()
    try:
        table = _table(cloud.dynamodb_url, log_table_name(stage), region)
        source_log = _SourceLog(source, log_table_name(stage), region)
        chunk: list[dict[str, Any]] = []
        for item in _in_version_order(_log_items(source, as_of, summary, source_log)):
            chunk.append(item)
            if len(chunk) >= WRITE_CHUNK:
                await asyncio.to_thread(write_items, table, chunk, summary)
                on_progress(len(chunk))
                chunk = []
        if chunk:
            await asyncio.to_thread(write_items, table, chunk, summary)
            on_progress(len(chunk))
    finally:
        await cloud.stop()  # drains: published, handled, retried; then saved
    summary.published = cloud.poller.published
    summary.failures = _failures(target, core_table_name(stage), region)
    summary.seconds = time.perf_counter() - started
    return summary


def _log_items(
    source: Path, as_of: datetime, summary: RebuildSummary, source_log: _SourceLog
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(createdAt, log item) of every archived log event up to ``as_of``, in order."""
    for event in iter_events(source, end=archive_end(as_of)):
        detail = event.get("detail")
        item = None
        if isinstance(detail, dict) and (event.get("source"), event.get("detail-type")) == (
            SOURCE,
            DETAIL_TYPE,
        ):
            item = _log_item(detail)
        if item is None or not isinstance(detail, dict):
            summary.other_events += 1
            continue
        summary.log_events += 1
        if detail.get("partial"):
            payload = source_log.payload(item["pk"], item["sk"])
            if payload is None:
                summary.partial_missing.append(f"{item['pk']}/{item['sk']}")
                continue
            item["payload"] = payload
            summary.partial_filled += 1
        yield to_iso(event.get("time", "")), item


def _table(endpoint: str, name: str, region: str) -> Any:
    import boto3

    return boto3.resource(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=LOCAL_KEY,
        aws_secret_access_key=LOCAL_KEY,
    ).Table(name)


def write_items(table: Any, items: list[dict[str, Any]], summary: RebuildSummary) -> None:
    """Each item unless its pk/sk is there (a handler appended it during the rebuild)."""
    for item in items:
        try:
            table.put_item(
                Item={k: to_dynamo(v) for k, v in item.items() if v is not None},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except table.meta.client.exceptions.ConditionalCheckFailedException:
            summary.already_there += 1
            continue
        summary.written += 1


def _failures(db: Path, core_table: str, region: str) -> list[dict[str, Any]]:
    """The failure records the rebuild's onFailure destination stored in the core table."""
    from bridge.core.dynamo_json import load_item
    from bridge.offline import reader

    try:
        core = reader.read_table(db, core_table, region)
    except BridgeError:
        return []
    found = []
    for wire in reader.iter_items(core):
        item = load_item(wire)
        if str(item.get("pk", "")).startswith(FAILURE_PK_PREFIX):
            found.append(
                {
                    name: str(item.get(name, ""))
                    for name in ("functionName", "requestId", "errorType", "errorMessage")
                }
            )
    return found
