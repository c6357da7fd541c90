"""The local event bus: PutEvents as EventBridge does it, rules, the archive, replays.

One bus (``dynamodb-log``) with one rule per subscriber of the subscriptions
definition, each targeting one function. What happens to an entry mirrors
EventBridge: it is validated on its own (a bad entry fails alone, with AWS's
``ErrorCode``/``ErrorMessage``), gets an ``EventId``, becomes the envelope targets
receive, is archived, and is handed to every rule whose pattern matches. Handing
over goes through ``deliver(function, event)``, which must not block (the
orchestrator passes the function runtime's ``invoke_async``): a bus never waits
for a handler, exactly as ``PutEvents`` returns before any target ran.

Replays read the SQLite archive back and re-dispatch its events with a top-level
``replay-name``, only to the rules named in ``FilterArns`` (all rules when none),
and never archive them again.

A documented local extension of PutEvents (AWS's has no such member): an entry with
a top-level ``"replay-name": NAME`` is a replayed event, sent by ``bridge replay
--from sqlite --to bus``. It is checked and delivered like any entry (to every
matching rule), carries ``replay-name`` as a replay's events do, and is not archived.

Each replay runs in a task of its own, handed to ``supervise``: one that dies of an
exception nobody expected ends FAILED and breaks the local cloud (see
:mod:`bridge.offline.supervisor`), rather than staying RUNNING forever. Once the
cloud broke, :meth:`Bus.halt` makes every entry fail with ``InternalFailure``: an event
accepted then could be neither handled nor, maybe, archived.

Deliberate difference from AWS: an entry for a bus that does not exist fails with
``InvalidArgument`` here, where AWS accepts it and drops the event silently — a
typo in ``EventBusName`` should be loud on a laptop. Nothing else differs on
purpose; AWS's archive delay (events reach an archive minutes late) is not emulated.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from bridge import archive as archive_file
from bridge.archive import ArchiveWriter
from bridge.core.errors import BridgeError, ValidationError
from bridge.core.events import (
    MAX_ENTRIES_PER_PUT,
    MAX_PUT_BYTES,
    entry_problem,
    entry_size,
    envelope,
    parse_detail,
)
from bridge.core.names import (
    ARCHIVE_NAME,
    BUS_NAME,
    DEFAULT_REGION,
    LOCAL_ACCOUNT,
    archive_arn,
    bus_arn,
    function_arn,
    parse_events_arn,
    replay_arn,
    rule_arn,
    rule_name,
)
from bridge.core.patterns import Pattern, validate_pattern
from bridge.core.rewrite import REPLAY_NAME, REPLAY_NAME_MEMBER
from bridge.offline.replay_order import AwsLikeOrder
from bridge.offline.supervisor import Supervise, death_line, report_death

if TYPE_CHECKING:
    from bridge.core.subscriptions import Subscriptions

logger = logging.getLogger(__name__)

Deliver = Callable[[str, dict[str, Any]], Any]

REPLAY_PAGE = 500  # archived events read per worker-thread call during a replay
REPLAY_MAX_BACKLOG = 2 * REPLAY_PAGE  # pending deliveries a replay lets build up
LATE_AFTER_COMPLETED = 2.0  # seconds: when an AWS-like replay sends its late events


class EventsError(BridgeError):
    """An EventBridge API error: ``code`` is the AWS error code (``__type`` on the wire)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def _not_found(message: str) -> EventsError:
    return EventsError("ResourceNotFoundException", message)


def _invalid(message: str) -> EventsError:
    return EventsError("ValidationException", message)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """One rule of the bus: a validated pattern and the function it invokes."""

    name: str
    pattern: dict[str, Any]
    target: str  # the function's short name, as ``deliver`` expects it
    arn: str
    target_arn: str | None = None  # the Lambda ARN ListTargetsByRule shows
    description: str = ""
    compiled: Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        checked = validate_pattern(self.pattern)  # PatternError names the bad field
        object.__setattr__(self, "pattern", checked)
        object.__setattr__(self, "compiled", Pattern(checked))

    def matches(self, event: dict[str, Any]) -> bool:
        return self.compiled.matches(event)


def rules_from(
    subscriptions: Subscriptions,
    stage: str,
    region: str = DEFAULT_REGION,
    account: str = LOCAL_ACCOUNT,
    bus: str = BUS_NAME,
) -> list[Rule]:
    """One rule per subscriber (function with a pattern), in definition order."""
    rules = []
    for spec in subscriptions.subscribers:
        name = rule_name(stage, spec.name)
        rules.append(
            Rule(
                name=name,
                pattern=dict(spec.pattern or {}),
                target=spec.name,
                arn=rule_arn(region, account, name, bus),
                target_arn=function_arn(region, account, stage, spec.name),
                description=f"{spec.name}: {spec.handler}",
            )
        )
    return rules


# --------------------------------------------------------------------------- replays


class ReplayState(StrEnum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


_FINAL = {ReplayState.COMPLETED, ReplayState.CANCELLED, ReplayState.FAILED}


@dataclass
class Replay:
    """One replay and its progress, as DescribeReplay reports it."""

    name: str
    arn: str
    source_arn: str
    start: datetime
    end: datetime
    destination_arn: str
    filter_arns: list[str]
    description: str = ""
    state: ReplayState = ReplayState.STARTING
    state_reason: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None
    last_replayed: datetime | None = None
    replayed: int = 0  # events re-dispatched (not an AWS field)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.state in _FINAL

    def summary(self) -> dict[str, Any]:
        """The ListReplays entry (datetimes stay datetimes; the API serialises them)."""
        item: dict[str, Any] = {
            "ReplayName": self.name,
            "EventSourceArn": self.source_arn,
            "State": self.state.value,
            "EventStartTime": self.start,
            "EventEndTime": self.end,
            "ReplayStartTime": self.started_at,
        }
        if self.state_reason:
            item["StateReason"] = self.state_reason
        if self.last_replayed is not None:
            item["EventLastReplayedTime"] = self.last_replayed
        if self.ended_at is not None:
            item["ReplayEndTime"] = self.ended_at
        return item

    def describe(self) -> dict[str, Any]:
        """The DescribeReplay response."""
        destination: dict[str, Any] = {"Arn": self.destination_arn}
        if self.filter_arns:
            destination["FilterArns"] = list(self.filter_arns)
        return {
            **self.summary(),
            "ReplayArn": self.arn,
            "Description": self.description,
            "Destination": destination,
        }


# --------------------------------------------------------------------------- the bus


def _entry_error(code: str, message: str) -> dict[str, str]:
    return {"ErrorCode": code, "ErrorMessage": message}


def _required(field_name: str) -> dict[str, str]:
    return _entry_error(
        "InvalidArgument",
        f"Parameter {field_name} is not valid. Reason: {field_name} is a required argument.",
    )


def _detail_of(entry: Any) -> Any:
    """An entry's ``Detail`` parsed, or None when it is missing or malformed (see
    :func:`bridge.core.events.parse_detail`: not JSON, too deep, not UTF-8)."""
    text = entry.get("Detail") if isinstance(entry, dict) else None
    return parse_detail(text) if isinstance(text, str) else None


def _as_time(value: Any) -> datetime | None:
    """An entry's ``Time``: epoch seconds on the wire (boto3, CLI), a datetime in-process;
    one the archive can't store raises BridgeError."""
    return None if value is None else archive_file.from_iso(archive_file.to_iso(value))


def _request_size(entries: Iterable[dict[str, Any]]) -> int:
    """Total entry size as AWS counts it; fields of the wrong type count as their text."""
    total = 0
    for entry in entries:
        if not isinstance(entry, dict):
            continue  # refused entry by entry later
        clean: dict[str, Any] = {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in entry.items()
            if key in ("Source", "DetailType", "Detail") and value is not None
        }
        resources = entry.get("Resources")
        if isinstance(resources, list):
            clean["Resources"] = [str(item) for item in resources]
        if entry.get("Time") is not None:
            clean["Time"] = "t"
        total += entry_size(clean)
    return total


class Bus:
    """One EventBridge bus in memory, dispatching to functions through ``deliver``."""

    def __init__(
        self,
        name: str = BUS_NAME,
        *,
        rules: Iterable[Rule],
        deliver: Deliver,
        archive: ArchiveWriter | None = None,
        region: str = DEFAULT_REGION,
        account: str = LOCAL_ACCOUNT,
        backlog: Callable[[], int] = lambda: 0,
        supervise: Supervise = report_death,
        aws_like_replays: bool = False,
    ) -> None:
        self.name = name
        # Replays in 1-minute slices, shuffled, some events after COMPLETED (replay_order).
        self.aws_like_replays = aws_like_replays
        self.supervise = supervise
        self.halted: str | None = None  # why PutEvents takes nothing any more
        self.backlog = backlog  # deliveries not yet handled; replays wait while it is high
        self.region = region
        self.account = account
        self.rules: dict[str, Rule] = {}
        for rule in rules:
            if rule.name in self.rules:
                raise BridgeError(f"two rules are named {rule.name}")
            self.rules[rule.name] = rule
        self.deliver = deliver
        self.archive = archive
        self.created = datetime.now(UTC)
        self.replays: dict[str, Replay] = {}
        self.accepted = 0  # entries accepted by put_events
        self.rejected = 0  # entries failed by put_events
        self.deliveries = 0  # (event, rule) pairs handed to deliver, replays included
        self.replayed_entries = 0  # entries accepted with the local `replay-name` extension

    # ----------------------------------------------------------------- identity

    @property
    def arn(self) -> str:
        return bus_arn(self.region, self.account, self.name)

    @property
    def archive_arn(self) -> str:
        return archive_arn(self.region, self.account)

    def is_me(self, name_or_arn: str | None) -> bool:
        """Whether an ``EventBusName`` (a name or an ARN; None means ``default``) is this bus."""
        return (name_or_arn or "default") in (self.name, self.arn)

    def check_bus(self, name_or_arn: str | None) -> None:
        if not self.is_me(name_or_arn):
            raise _not_found(f"Event bus {name_or_arn or 'default'} does not exist.")

    def describe(self) -> dict[str, Any]:
        """The DescribeEventBus response (and the ListEventBuses entry)."""
        return {
            "Name": self.name,
            "Arn": self.arn,
            "CreationTime": self.created,
            "LastModifiedTime": self.created,
        }

    # ----------------------------------------------------------------- rules

    def list_rules(self, name_prefix: str | None = None) -> list[Rule]:
        return [rule for name, rule in self.rules.items() if name.startswith(name_prefix or "")]

    def rule(self, name: str) -> Rule:
        found = self.rules.get(name)
        if found is None:
            raise _not_found(f"Rule {name} does not exist on EventBus {self.name}.")
        return found

    def describe_rule(self, rule: Rule) -> dict[str, Any]:
        """The ListRules entry / DescribeRule response of one rule."""
        return {
            "Name": rule.name,
            "Arn": rule.arn,
            "EventPattern": json.dumps(rule.pattern, separators=(",", ":")),
            "State": "ENABLED",
            "Description": rule.description,
            "EventBusName": self.name,
        }

    def targets(self, rule: Rule) -> list[dict[str, Any]]:
        """ListTargetsByRule: the one function a rule invokes."""
        return [{"Id": rule.target, "Arn": rule.target_arn or rule.target}]

    # ----------------------------------------------------------------- PutEvents

    def put_events(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Accept what is valid, fail the rest entry by entry; results in request order.

        Raises :class:`EventsError` (``ValidationException``) for what fails the whole
        request in AWS: no entries, more than 10, more than 256 KB in total.
        """
        if not entries:
            raise _invalid(
                "1 validation error detected: Value '[]' at 'entries' failed to satisfy "
                "constraint: Member must have length greater than or equal to 1"
            )
        if len(entries) > MAX_ENTRIES_PER_PUT:
            raise _invalid(
                "1 validation error detected: Value '[PutEventsRequestEntry]' at 'entries' "
                "failed to satisfy constraint: Member must have length less than or equal "
                f"to {MAX_ENTRIES_PER_PUT}"
            )
        if _request_size(entries) > MAX_PUT_BYTES:
            raise _invalid("Total size of the entries in the request is over the limit.")
        results = [self._put_one(entry) for entry in entries]
        failed = sum(1 for result in results if "ErrorCode" in result)
        self.accepted += len(results) - failed
        self.rejected += failed
        return results

    def halt(self, reason: str) -> None:
        """The local cloud broke: refuse every entry from now on, stop the replays."""
        self.halted = reason
        for replay in self.replays.values():
            if not replay.done and replay.task is not None:
                replay.state_reason = reason
                replay.task.cancel()

    def _put_one(self, entry: dict[str, Any]) -> dict[str, Any]:
        if self.halted is not None:
            return _entry_error("InternalFailure", f"bridge offline is stopping: {self.halted}")
        detail = _detail_of(entry)  # parsed once: checked here, delivered in the envelope
        problem = self._check_entry(entry, detail)
        if problem is not None:
            return problem
        try:
            when = _as_time(entry.get("Time"))
        except BridgeError:
            return _entry_error(
                "InvalidArgument", "Parameter Time is not valid. Reason: Time is malformed."
            )
        replay = entry.get(REPLAY_NAME_MEMBER)
        if replay is not None and not (isinstance(replay, str) and REPLAY_NAME.fullmatch(replay)):
            return _entry_error(
                "InvalidArgument",
                f"Parameter {REPLAY_NAME_MEMBER} is not valid. Reason: 1 to 64 of "
                "A-Za-z0-9 . - _ (a local extension of PutEvents).",
            )
        event = envelope(entry, account=self.account, region=self.region, time=when, detail=detail)
        if replay is not None:
            event[REPLAY_NAME_MEMBER] = replay  # a replayed event: delivered, never archived
            self.replayed_entries += 1
        elif self.archive is not None:
            try:
                self.archive.add(event)
            except RuntimeError as error:  # closed during shutdown: deliver all the same
                logger.error("event %s not archived: %s", event["id"], error)
        self._dispatch(event, self.rules.values())
        return {"EventId": event["id"]}

    def _check_entry(self, entry: Any, detail: Any) -> dict[str, str] | None:
        """AWS's per-entry checks, in AWS's order; None when the entry is fine."""
        if not isinstance(entry, dict):
            return _entry_error("InvalidArgument", "Parameter Entry is not valid.")
        for name in ("Source", "DetailType", "Detail"):
            value = entry.get(name)
            if not value or not isinstance(value, str):
                return _required(name)
        if (problem := entry_problem(entry)) is not None:  # text UTF-8 cannot carry
            return _entry_error(*problem)
        if not isinstance(detail, dict):
            return _entry_error("MalformedDetail", "Detail is malformed.")
        if entry["Source"].startswith("aws."):
            return _entry_error("NotAuthorizedForSourceException", "Not authorized for the source.")
        resources = entry.get("Resources")
        if resources is not None and (
            not isinstance(resources, list) or not all(isinstance(r, str) for r in resources)
        ):
            return _entry_error(
                "InvalidArgument", "Parameter Resources is not valid. Reason: not a list of ARNs."
            )
        bus = entry.get("EventBusName")
        if not self.is_me(bus):
            return _entry_error(
                "InvalidArgument",
                f"Parameter EventBusName is not valid. Reason: Event bus {bus or 'default'} "
                f"does not exist (the local bus is {self.name}).",
            )
        return None

    def _dispatch(self, event: dict[str, Any], rules: Iterable[Rule]) -> int:
        """Hand the event to the target of every matching rule; returns how many."""
        sent = 0
        for rule in rules:
            try:
                matched = rule.matches(event)
            except Exception as error:  # a pattern bug must not lose the other rules
                logger.error(
                    "rule %s: pattern failed on event %s: %s", rule.name, event.get("id"), error
                )
                continue
            if not matched:
                continue
            try:
                self.deliver(rule.target, copy.deepcopy(event))  # each target its own
                sent += 1
            except Exception as error:  # accepted is accepted: PutEvents does not fail
                logger.error(
                    "rule %s: could not deliver event %s to %s: %s",
                    rule.name,
                    event["id"],
                    rule.target,
                    error,
                )
        self.deliveries += sent
        return sent

    # ----------------------------------------------------------------- archive

    def _check_archive(self, name: str) -> ArchiveWriter:
        if self.archive is None or name != ARCHIVE_NAME:
            raise _not_found(f"Archive {name} does not exist.")
        return self.archive

    async def describe_archive(self, name: str = ARCHIVE_NAME) -> dict[str, Any]:
        """The DescribeArchive response; counts are read from the SQLite file."""
        writer = self._check_archive(name)
        await writer.flush()
        count, size = await asyncio.to_thread(
            lambda: (archive_file.count(writer.path), archive_file.size_bytes(writer.path))
        )
        return {
            "ArchiveArn": self.archive_arn,
            "ArchiveName": ARCHIVE_NAME,
            "EventSourceArn": self.arn,
            "Description": f"every event of {self.name}, in the SQLite file {writer.path}",
            "State": "ENABLED",
            "RetentionDays": 0,
            "SizeBytes": size,
            "EventCount": count,
            "CreationTime": self.created,
        }

    async def list_archives(
        self,
        name_prefix: str | None = None,
        source_arn: str | None = None,
        state: str | None = None,
    ) -> list[dict[str, Any]]:
        """ListArchives: the one archive, if it passes the filters."""
        if sum(value is not None for value in (name_prefix, source_arn, state)) > 1:
            raise _invalid(
                "At most one filter is allowed for ListArchives. "
                "Use either : State, EventSourceArn, or NamePrefix."
            )
        if self.archive is None:
            return []
        if name_prefix is not None and not ARCHIVE_NAME.startswith(name_prefix):
            return []
        if source_arn is not None and source_arn != self.arn:
            return []
        if state is not None and state != "ENABLED":
            return []
        full = await self.describe_archive()
        hidden = ("ArchiveArn", "Description")
        return [{key: value for key, value in full.items() if key not in hidden}]

    # ----------------------------------------------------------------- replays

    async def start_replay(
        self,
        name: str,
        archive_arn: str,
        start: datetime,
        end: datetime,
        destination_arn: str,
        filter_arns: list[str] | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """StartReplay: checks like AWS, then replays in the background (STARTING → …)."""
        if not REPLAY_NAME.fullmatch(name or ""):
            raise _invalid(
                f"1 validation error detected: Value '{name}' at 'replayName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: [\\.\\-_A-Za-z0-9]+"
            )
        if archive_arn != self.archive_arn or self.archive is None:
            raise _invalid(
                f"Parameter EventSourceArn is not valid. Reason: Archive {_name_in(archive_arn)} "
                "does not exist."
            )
        if destination_arn != self.arn:
            raise _invalid(
                "Parameter Destination.Arn is not valid. Reason: Cross event bus replay is "
                "not permitted."
            )
        start, end = _utc(start), _utc(end)
        if start >= end:
            raise _invalid(
                "Parameter EventEndTime is not valid. Reason: EventStartTime must be before "
                "EventEndTime."
            )
        known = {rule.arn for rule in self.rules.values()}
        for arn in filter_arns or []:
            if arn not in known:
                raise _invalid(
                    f"Parameter Destination.FilterArns is not valid. Reason: Rule {arn} does "
                    f"not exist on EventBus {self.name}."
                )
        if name in self.replays:
            raise EventsError("ResourceAlreadyExistsException", f"Replay {name} already exists.")
        replay = Replay(
            name=name,
            arn=replay_arn(self.region, self.account, name),
            source_arn=archive_arn,
            start=start,
            end=end,
            destination_arn=destination_arn,
            filter_arns=list(filter_arns or []),
            description=description,
        )
        self.replays[name] = replay
        replay.task = asyncio.create_task(self._replay(replay), name=f"replay-{name}")
        replay.task.add_done_callback(lambda task: _settle(replay, task))
        self.supervise(replay.task, f"the replay {name}")
        return {
            "ReplayArn": replay.arn,
            "State": replay.state.value,
            "ReplayStartTime": replay.started_at,
        }

    def replay(self, name: str) -> Replay:
        found = self.replays.get(name)
        if found is None:
            raise _not_found(f"Replay {name} does not exist.")
        return found

    def describe_replay(self, name: str) -> dict[str, Any]:
        return self.replay(name).describe()

    def list_replays(
        self,
        name_prefix: str | None = None,
        state: str | None = None,
        source_arn: str | None = None,
    ) -> list[dict[str, Any]]:
        if sum(value is not None for value in (name_prefix, source_arn, state)) > 1:
            raise _invalid(
                "At most one filter is allowed for ListReplays. "
                "Use either : State, EventSourceArn, or NamePrefix."
            )
        if state is not None and state not in ReplayState.__members__:
            raise _invalid(
                f"1 validation error detected: Value '{state}' at 'state' failed to satisfy "
                f"constraint: Member must satisfy enum value set: {sorted(ReplayState.__members__)}"
            )
        return [
            replay.summary()
            for replay in self.replays.values()
            if replay.name.startswith(name_prefix or "")
            and (state is None or replay.state.value == state)
            and (source_arn is None or replay.source_arn == source_arn)
        ]

    def cancel_replay(self, name: str) -> dict[str, Any]:
        """CancelReplay: a replay that is still starting or running stops where it is."""
        replay = self.replay(name)
        if replay.state not in (ReplayState.STARTING, ReplayState.RUNNING):
            raise EventsError(
                "IllegalStatusException",
                f"Replay {name} is not in a valid state for this operation.",
            )
        replay.state = ReplayState.CANCELLING
        if replay.task is not None:
            replay.task.cancel()
        return {"ReplayArn": replay.arn, "State": replay.state.value}

    async def wait_replay(self, name: str) -> Replay:
        """Wait until a replay reached COMPLETED, CANCELLED or FAILED."""
        replay = self.replay(name)
        if replay.task is not None:
            await asyncio.gather(replay.task, return_exceptions=True)
        return replay

    async def close(self) -> None:
        """Stop replays still running (they end CANCELLED); the archive is the caller's."""
        for replay in self.replays.values():
            if not replay.done and replay.task is not None:
                replay.task.cancel()
        await asyncio.gather(
            *(r.task for r in self.replays.values() if r.task is not None), return_exceptions=True
        )

    async def _replay(self, replay: Replay) -> None:
        assert self.archive is not None
        if replay.filter_arns:
            rules = [rule for rule in self.rules.values() if rule.arn in replay.filter_arns]
        else:
            rules = list(self.rules.values())
        where = archive_file.Filter.of(replay.start, replay.end)
        path = self.archive.path
        order: AwsLikeOrder[dict[str, Any]] | None = (
            AwsLikeOrder() if self.aws_like_replays else None
        )
        try:
            await asyncio.sleep(0)  # StartReplay answers STARTING before any event moves
            replay.state = ReplayState.RUNNING
            await self.archive.flush()  # what PutEvents accepted so far is replayable
            after: tuple[str, int] | None = None
            while True:
                page = await asyncio.to_thread(
                    archive_file.read_page, path, where, after, REPLAY_PAGE
                )
                for row in page:
                    event = dict(row.event)
                    event["replay-name"] = replay.name
                    if order is None:
                        self._dispatch(event, rules)  # never archived again
                    else:
                        for ready in order.feed(row.created_at, event):
                            self._dispatch(ready, rules)
                if page:  # no await inside the page: only its last time can be seen
                    replay.replayed += len(page)
                    replay.last_replayed = archive_file.from_iso(page[-1].created_at)
                if len(page) < REPLAY_PAGE:
                    break
                after = (page[-1].created_at, page[-1].seq)
                # Pace the replay to the handlers: with a backlog of invocations, wait
                # instead of piling a whole archive into memory as pending tasks.
                while self.backlog() > REPLAY_MAX_BACKLOG:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0)  # let PutEvents and deliveries run between pages
            if order is not None:
                for ready in order.finish():
                    self._dispatch(ready, rules)
            replay.state = ReplayState.COMPLETED
            logger.info("replay %s: %d events replayed", replay.name, replay.replayed)
            if order is not None and order.late:
                await asyncio.sleep(LATE_AFTER_COMPLETED)  # as AWS may: after COMPLETED
                for ready in order.late:
                    self._dispatch(ready, rules)
                logger.info("replay %s: %d events after COMPLETED", replay.name, len(order.late))
        except asyncio.CancelledError:
            if replay.state is ReplayState.COMPLETED:  # stopped while its late events waited
                raise
            replay.state = ReplayState.CANCELLED
            replay.state_reason = replay.state_reason or "Replay cancelled"
            raise
        except (BridgeError, OSError, ValueError, sqlite3.Error) as error:
            replay.state = ReplayState.FAILED
            replay.state_reason = str(error)
            logger.error("replay %s failed: %s", replay.name, error)
        finally:
            replay.ended_at = datetime.now(UTC)


def _settle(replay: Replay, task: asyncio.Task[None]) -> None:
    """A replay cancelled before its task ever ran still ends CANCELLED, not CANCELLING;
    one whose task died of an unexpected exception ends FAILED, saying of what."""
    if task.cancelled() and not replay.done:
        replay.state = ReplayState.CANCELLED
        replay.state_reason = replay.state_reason or "Replay cancelled"
        replay.ended_at = replay.ended_at or datetime.now(UTC)
    elif not task.cancelled() and (error := task.exception()) is not None:
        replay.state = ReplayState.FAILED
        replay.state_reason = death_line("the replay", error)
        replay.ended_at = replay.ended_at or datetime.now(UTC)


def _name_in(arn: str) -> str:
    """The resource name an ARN holds, for a message; the text itself when it is no ARN."""
    try:
        return parse_events_arn(arn).name
    except ValidationError:
        return arn


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
