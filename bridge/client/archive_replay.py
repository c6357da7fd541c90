"""``bridge replay --from archive``: an EventBridge archive replayed onto this machine.

The seed's "AWS to local", made dependable:

1. a bridge session named after a fresh replay, subscribed to that replay only, so
   the bridge's forwarder hands its events to this session and to no other;
2. ``StartReplay`` from the stage's archive to its bus, with ``FilterArns`` naming only
   the bridge's replay rule: production subscribers see nothing;
3. ``DescribeReplay`` followed until the replay ends, with a progress line;
4. done means: the replay is COMPLETED, a quiet period has passed with no event (AWS
   sends some events *after* COMPLETED, and in 1-minute slices, shuffled), and the
   session's buffer on the bridge is empty; then the session is dropped.

A replay outlives its client: ``bridge replay attach NAME`` takes the session up again
(the sink's stored cursor says where it was) and finishes the job; ``bridge replay
cancel NAME`` stops it. Ctrl-C cancels the replay (``CancelReplay``) and keeps what
arrived. A failed or cancelled replay, or a gap (events the bridge had to drop), exits
non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from bridge import aws
from bridge.client.connection import BridgeClient, ClientOptions, Totals
from bridge.client.manage import _ask, session_rows
from bridge.client.run import (
    ConnectSettings,
    bridge_url,
    check_no_loop,
    make_signer,
    make_sink,
    resolve_region,
    summary,
)
from bridge.core import session as protocol_module
from bridge.core.errors import BridgeError, ValidationError
from bridge.core.names import ARCHIVE_NAME, BUS_NAME, bridge_rule_name, parse_events_arn

logger = logging.getLogger(__name__)

DEFAULT_QUIET = 10.0  # seconds without an event after COMPLETED before it is done
POLL_INTERVAL = 1.0  # seconds between DescribeReplay calls
MAX_REPLAY_NAME = 64  # EventBridge's limit
_ENDED = ("COMPLETED", "CANCELLED", "FAILED")
SINCE_EVER = datetime(2019, 7, 1, tzinfo=UTC)  # before EventBridge had archives


@dataclass
class ReplayRequest:
    """What to replay, and where to (``connect`` holds the bridge and sink settings)."""

    connect: ConnectSettings
    start: datetime | None = None  # None: the archive's beginning (attach: the replay's)
    end: datetime | None = None
    archive: str = ARCHIVE_NAME
    name: str | None = None  # a fresh one unless attaching
    attach: bool = False
    quiet: float = DEFAULT_QUIET
    poll: float = POLL_INTERVAL
    events_url: str | None = None  # EventBridge endpoint (else as events_client says)


def fresh_name(stage: str, now: datetime | None = None) -> str:
    """``bridge-{stage}-{UTC time}-{random}``: unique, valid as a replay and a session."""
    when = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"bridge-{stage}-{when}-{secrets.token_hex(3)}"[-MAX_REPLAY_NAME:]


def events_client(settings: ConnectSettings, region: str, endpoint_url: str | None = None) -> Any:
    """EventBridge of the stage: ``endpoint_url``, else what :func:`bridge.aws.events_endpoint`
    says (AWS_ENDPOINT_URL_EVENTBRIDGE; offline's :4010 for stage local; else AWS)."""
    url = aws.events_endpoint(settings.stage, endpoint_url)
    return aws.events_client(settings.stage, url, region, settings.profile)


@dataclass
class Targets:
    archive_arn: str
    bus_arn: str
    rule_arn: str
    created: datetime | None = None  # the archive's CreationTime: where "everything" starts


def find_targets(events: Any, stage: str, archive: str) -> Targets:
    """The archive, its bus and the bridge's replay rule — each missing one in a line."""
    described = _found(
        lambda: events.describe_archive(ArchiveName=archive),
        f"no archive {archive!r} in stage {stage}: is the logs stack deployed "
        f"(bridge deploy --stage {stage}), or `bridge offline` running?",
    )
    rule = bridge_rule_name(stage, "replay")
    rule_arn = _found(
        lambda: events.describe_rule(Name=rule, EventBusName=BUS_NAME),
        f"no bridge replay rule {rule} in stage {stage}: deploy the bridge "
        f"(bridge deploy --stage {stage} --bridge)",
    )["Arn"]
    created = described.get("CreationTime")
    return Targets(
        described["ArchiveArn"],
        described["EventSourceArn"],
        rule_arn,
        created if isinstance(created, datetime) else None,
    )


def _found(call: Callable[[], dict[str, Any]], missing: str) -> dict[str, Any]:
    """``call()``'s answer; ResourceNotFound becomes the ``missing`` line."""
    try:
        return call()
    except ClientError as error:
        if _code(error) == "ResourceNotFoundException":
            raise BridgeError(missing) from None
        raise


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class Progress:
    """One line on stderr, rewritten in place on a terminal, every poll."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()

    def show(self, state: str, request: ReplayRequest, last: Any, received: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        line = f"replay {state.lower()}: {received} events ({received / elapsed:,.0f}/s)"
        if isinstance(last, datetime) and request.start and request.end:
            span = (request.end - request.start).total_seconds()
            done = (last - request.start).total_seconds() / span if span > 0 else 1.0
            done = min(max(done, 0.0), 1.0)
            line += f", {done:.0%} of the range"
            if 0 < done < 1:
                line += f", about {elapsed * (1 - done) / done:.0f} s left"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_archive_replay(
    request: ReplayRequest,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    install_signals: bool = True,
    on_events: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Replay (or attach to a replay) until done; the summary (``ok`` says if it was)."""
    settings = request.connect
    check_no_loop(settings)
    if not request.attach:
        if request.end is None:
            raise ValidationError("--end is needed to replay an archive")
        if request.start is not None and request.start >= request.end:
            raise ValidationError("--start must be before --end (--end is exclusive)")
    region = resolve_region(settings)
    events = events_client(settings, region, request.events_url)
    url = bridge_url(settings, region)
    signer = make_signer(settings, region)
    try:
        targets = find_targets(events, settings.stage, request.archive)
        if request.attach:
            assert request.name is not None
            described = _describe(events, request.name)
            request.start = described.get("EventStartTime")
            request.end = described.get("EventEndTime")
        elif request.start is None:  # from the archive's beginning
            request.start = targets.created or SINCE_EVER
    except (BotoCoreError, ClientError) as error:
        raise BridgeError(f"AWS said: {error}") from None
    name = request.name or fresh_name(settings.stage)
    sink = make_sink(settings, f"{url}#{name}", region)
    client = BridgeClient(
        ClientOptions(url=url, session=name, pattern=settings.pattern, replay=name),
        sink,
        signer,
        on_events=on_events,
    )
    runner = _Runner(request, name, events, targets, client, url, signer, Progress(err))
    return asyncio.run(runner.run(install_signals))


class _Runner:
    def __init__(
        self,
        request: ReplayRequest,
        name: str,
        events: Any,
        targets: Targets,
        client: BridgeClient,
        url: str,
        sign: Callable[[str], str],
        progress: Progress,
    ) -> None:
        self.request = request
        self.name = name
        self.events = events
        self.targets = targets
        self.client = client
        self.url = url  # the bridge API, for the management requests
        self.sign = sign  # each connect URL is signed afresh: signatures expire
        self.progress = progress
        self.interrupted = asyncio.Event()

    async def run(self, install_signals: bool) -> dict[str, Any]:
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.interrupted.set)
        stop = asyncio.Event()
        task = asyncio.create_task(self.client.run(stop))
        try:
            if not await self._until_ready(task):
                state = "INTERRUPTED"  # before StartReplay: nothing to cancel
            else:
                if not self.request.attach:
                    await asyncio.to_thread(self._start)
                state = await self._follow(task)
        finally:
            stop.set()  # the client flushes and acknowledges what it has
            with contextlib.suppress(Exception):  # its own error, if any, is raised above
                await task
            self.progress.end()
        if state == "COMPLETED":  # the session has served its purpose
            with contextlib.suppress(BridgeError, OSError):
                await _ask(self.sign(self.url), lambda p: p.drop_session(self.name))
        values = summary(self.client.totals)
        values.update(replay=self.name, state=state)
        values["ok"] = state == "COMPLETED" and not values.get("gaps")
        return values

    async def _until_ready(self, task: asyncio.Task[Totals]) -> bool:
        """Wait until the session is subscribed; False if interrupted first."""
        ready = asyncio.create_task(self.client.ready.wait())
        interrupted = asyncio.create_task(self.interrupted.wait())
        await asyncio.wait({ready, task, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        interrupted.cancel()
        if task.done():
            task.result()  # raises the client's refusal, in one line
            raise BridgeError("the bridge client stopped before the session was ready")
        return not self.interrupted.is_set()

    def _start(self) -> None:
        self.events.start_replay(
            ReplayName=self.name,
            Description="bridge replay --from archive",
            EventSourceArn=self.targets.archive_arn,
            EventStartTime=self.request.start,
            EventEndTime=self.request.end,
            Destination={"Arn": self.targets.bus_arn, "FilterArns": [self.targets.rule_arn]},
        )

    async def _follow(self, task: asyncio.Task[Totals]) -> str:
        """Poll until done; the replay's final state."""
        request = self.request
        ended_at: float | None = None
        while True:
            described = await asyncio.to_thread(_describe, self.events, self.name)
            state = str(described.get("State"))
            received = self.client.totals.received
            self.progress.show(state, request, described.get("EventLastReplayedTime"), received)
            if state in ("CANCELLED", "FAILED"):
                reason = described.get("StateReason") or "no reason given"
                logger.error("replay %s ended %s: %s", self.name, state, reason)
                return state
            if state == "COMPLETED":
                now = time.monotonic()
                ended_at = ended_at or now
                last = max(ended_at, self.client.last_event_at or 0.0)
                if now - last >= request.quiet and await self._drained():
                    return state
            if await self._wait(task, request.poll):
                await asyncio.to_thread(self._cancel)
                return "CANCELLED"

    async def _wait(self, task: asyncio.Task[Totals], seconds: float) -> bool:
        """Sleep; True if interrupted (Ctrl-C). The client dying raises."""
        interrupted = asyncio.create_task(self.interrupted.wait())
        await asyncio.wait({interrupted, task}, timeout=seconds)
        interrupted.cancel()
        if task.done():
            task.result()
            raise BridgeError("the bridge client stopped before the replay was done")
        return self.interrupted.is_set()

    async def _drained(self) -> bool:
        """Has the bridge nothing left in this session's buffer?"""
        try:
            event = await _ask(self.sign(self.url), lambda p: p.list_sessions())
        except (BridgeError, OSError) as error:
            logger.warning("could not list the bridge sessions (%s); waiting", error)
            return False
        assert isinstance(event, protocol_module.SessionsListed)
        for row in session_rows(event.items, time.time()):
            if row["name"] == self.name:
                return bool(row["buffered"] == 0 and row["acked"] >= row["next_cursor"] - 1)
        return True  # no session left: nothing buffered

    def _cancel(self) -> None:
        try:
            self.events.cancel_replay(ReplayName=self.name)
        except ClientError as error:
            logger.warning("CancelReplay %s: %s", self.name, error)


def _describe(events: Any, name: str) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = events.describe_replay(ReplayName=name)
    except ClientError as error:
        if _code(error) == "ResourceNotFoundException":
            raise BridgeError(f"no replay named {name!r}: see `bridge replay list`") from None
        raise
    return answer


# --------------------------------------------------------------------------- to rules


@dataclass
class RulesPlan:
    """What ``--to rules`` would replay: shown without ``--yes``, run with it."""

    stage: str
    account: str
    region: str
    archive_arn: str
    bus_arn: str
    rules: dict[str, str]  # name -> ARN
    start: datetime
    end: datetime

    def lines(self) -> list[str]:
        return [
            f"stage {self.stage}, account {self.account}, region {self.region}",
            f"archive {self.archive_arn}",
            f"range {self.start.isoformat()} .. {self.end.isoformat()} (end exclusive)",
            *(f"rule {name} ({arn})" for name, arn in self.rules.items()),
        ]


def plan_rules_replay(
    settings: ConnectSettings,
    start: datetime,
    end: datetime,
    rules: list[str],
    archive: str,
    events_url: str | None = None,
) -> tuple[Any, RulesPlan]:
    """The events client and the plan; every named rule must exist on the stage's bus."""
    if not rules:
        raise ValidationError("--to rules needs at least one --rule NAME")
    if start >= end:
        raise ValidationError("--start must be before --end (--end is exclusive)")
    region = resolve_region(settings)
    events = events_client(settings, region, events_url)
    try:
        described = _found(
            lambda: events.describe_archive(ArchiveName=archive),
            f"no archive {archive!r} in stage {settings.stage}",
        )
        arns = {}
        for rule in dict.fromkeys(rules):
            answer = _found(
                partial(events.describe_rule, Name=rule, EventBusName=BUS_NAME),
                f"no rule {rule!r} on the bus {BUS_NAME}",
            )
            arns[rule] = answer["Arn"]
    except ClientError as error:
        raise BridgeError(f"AWS said: {error}") from None
    source = parse_events_arn(described["ArchiveArn"])
    plan = RulesPlan(
        settings.stage,
        source.account,
        source.region,
        described["ArchiveArn"],
        described["EventSourceArn"],
        arns,
        start,
        end,
    )
    return events, plan


def run_rules_replay(
    events: Any, plan: RulesPlan, *, err: TextIO = sys.stderr, poll: float = POLL_INTERVAL
) -> dict[str, Any]:
    """StartReplay to exactly the planned rules, followed until it ends."""
    name = fresh_name(plan.stage)
    progress = Progress(err)
    request = ReplayRequest(ConnectSettings(stage=plan.stage), plan.start, plan.end)
    try:
        events.start_replay(
            ReplayName=name,
            Description="bridge replay --to rules",
            EventSourceArn=plan.archive_arn,
            EventStartTime=plan.start,
            EventEndTime=plan.end,
            Destination={"Arn": plan.bus_arn, "FilterArns": list(plan.rules.values())},
        )
        while True:
            described = _describe(events, name)
            state = str(described.get("State"))
            progress.show(state, request, described.get("EventLastReplayedTime"), 0)
            if state in _ENDED:
                break
            time.sleep(poll)
    except (BotoCoreError, ClientError) as error:
        raise BridgeError(f"AWS said: {error}") from None
    except KeyboardInterrupt:
        with contextlib.suppress(BotoCoreError, ClientError):
            events.cancel_replay(ReplayName=name)
        state, described = "CANCELLED", {}
    finally:
        progress.end()
    return {
        "replay": name,
        "state": state,
        "rules": list(plan.rules),
        "reason": described.get("StateReason"),
        "ok": state == "COMPLETED",
    }


# --------------------------------------------------------------------------- list, cancel


def list_replays(settings: ConnectSettings) -> list[dict[str, Any]]:
    """Every replay of the stage's region (AWS runs at most 10 at once), newest first."""
    events = events_client(settings, resolve_region(settings))
    rows: list[dict[str, Any]] = []
    token: str | None = None
    try:
        while True:
            answer = events.list_replays(**({"NextToken": token} if token else {}))
            rows.extend(
                {
                    "name": item.get("ReplayName"),
                    "state": item.get("State"),
                    "start": _iso(item.get("EventStartTime")),
                    "end": _iso(item.get("EventEndTime")),
                    "last_replayed": _iso(item.get("EventLastReplayedTime")),
                    "started_at": _iso(item.get("ReplayStartTime")),
                }
                for item in answer.get("Replays", [])
            )
            token = answer.get("NextToken")
            if not token:
                break
    except (BotoCoreError, ClientError) as error:
        raise BridgeError(f"AWS said: {error}") from None
    return sorted(rows, key=lambda row: row["started_at"] or "", reverse=True)


def cancel_replay(settings: ConnectSettings, name: str) -> str:
    """CancelReplay; the state it reports (CANCELLING)."""
    events = events_client(settings, resolve_region(settings))
    try:
        return str(events.cancel_replay(ReplayName=name).get("State", "CANCELLING"))
    except ClientError as error:
        if _code(error) == "ResourceNotFoundException":
            raise BridgeError(f"no replay named {name!r}: see `bridge replay list`") from None
        if _code(error) == "IllegalStatusException":
            raise BridgeError(f"replay {name!r} has already ended; nothing to cancel") from None
        raise BridgeError(f"AWS said: {error}") from None


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value
