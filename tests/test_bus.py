"""The local bus: per-entry validation, rule dispatch, the archive and replays.

``deliver`` records its calls here; the function runtime behind it is exercised
end to end in test_events_api.py.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge import archive
from bridge.archive import ArchiveWriter
from bridge.core.names import rule_arn
from bridge.core.patterns import PatternError
from bridge.core.subscriptions import parse
from bridge.offline.bus import Bus, EventsError, Rule, rules_from

DEFINITION = """
[functions.users]
handler = "tests.handlers.bus_record.handler"
pattern = { source = ["dynamodb-log"], detail = { log = ["users"] } }
on_failure = "failures"

[functions.orders]
handler = "tests.handlers.bus_record.handler"
pattern = { source = ["dynamodb-log"], detail = { log = ["orders"] } }

[functions.everything]
handler = "tests.handlers.bus_record.handler"
pattern = { source = ["dynamodb-log"] }

[functions.failures]
handler = "tests.handlers.bus_record.handler"
"""

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


class Recorder:
    """A ``deliver`` that records (function, event) and returns at once, like invoke_async."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, function: str, event: dict[str, Any]) -> str:
        self.calls.append((function, event))
        return f"request-{len(self.calls)}"

    def targets(self, event_id: str) -> list[str]:
        return sorted(name for name, event in self.calls if event["id"] == event_id)


def entry(log: str, n: int = 1, *, at: datetime | None = None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "Source": "dynamodb-log",
        "DetailType": "stream changes",
        "Detail": json.dumps(
            {"log": log, "key": {"pk": f"{log}#{n}#stream", "sk": 1}, "type": "t", "payload": {}}
        ),
        "EventBusName": "dynamodb-log",
    }
    if at is not None:
        item["Time"] = at.timestamp()  # epoch seconds, as boto3 sends it
    item.update(extra)
    return item


@pytest.fixture
def rules() -> list[Rule]:
    return rules_from(parse(DEFINITION), "t1", "eu-west-1", "123456789012")


@pytest.fixture
async def writer(tmp_path: Path) -> ArchiveWriter:
    async with ArchiveWriter(tmp_path / "db") as writer:
        yield writer


def test_rules_from_subscriptions(rules: list[Rule]) -> None:
    assert [rule.name for rule in rules] == [
        "dynamodb-logs-t1-users",
        "dynamodb-logs-t1-orders",
        "dynamodb-logs-t1-everything",
    ]  # `failures` has no pattern: it is a destination, not a subscriber
    users = rules[0]
    assert users.arn == (
        "arn:aws:events:eu-west-1:123456789012:rule/dynamodb-log/dynamodb-logs-t1-users"
    )
    assert users.target == "users"
    assert users.target_arn == (
        "arn:aws:lambda:eu-west-1:123456789012:function:dynamodb-logs-t1-users"
    )
    with pytest.raises(PatternError):
        Rule("bad", {"source": "not-a-list"}, "users", "arn")


async def test_dispatch_by_pattern(rules: list[Rule]) -> None:
    deliver = Recorder()
    bus = Bus(rules=rules, deliver=deliver, region="eu-west-1", account="123456789012")
    results = bus.put_events(
        [entry("users"), entry("orders"), entry("carts"), entry("users", Source="other")]
    )
    assert all("EventId" in result and "ErrorCode" not in result for result in results)
    users_id, orders_id, carts_id, other_id = (result["EventId"] for result in results)
    assert deliver.targets(users_id) == ["everything", "users"]
    assert deliver.targets(orders_id) == ["everything", "orders"]
    assert deliver.targets(carts_id) == ["everything"]
    assert deliver.targets(other_id) == []
    assert bus.deliveries == 5 and bus.accepted == 4
    # targets get the EventBridge envelope, each its own copy
    function, event = next(call for call in deliver.calls if call[0] == "users")
    assert event["source"] == "dynamodb-log" and event["detail-type"] == "stream changes"
    assert (event["account"], event["region"]) == ("123456789012", "eu-west-1")
    assert event["detail"]["log"] == "users" and "replay-name" not in event
    twin = next(e for f, e in deliver.calls if f == "everything" and e["id"] == users_id)
    assert twin == event and twin is not event


def test_per_entry_errors_like_aws(rules: list[Rule]) -> None:
    deliver = Recorder()
    bus = Bus(rules=rules, deliver=deliver)
    good = entry("users")
    results = bus.put_events(
        [
            {key: value for key, value in good.items() if key != "Source"},
            {key: value for key, value in good.items() if key != "DetailType"},
            {key: value for key, value in good.items() if key != "Detail"},
            {**good, "Detail": "[1, 2]"},
            {**good, "Detail": "{not json"},
            {**good, "Source": "aws.s3"},
            {**good, "EventBusName": "nope"},
            {key: value for key, value in good.items() if key != "EventBusName"},
            good,
            {**good, "EventBusName": bus.arn},  # an ARN names the bus too
        ]
    )
    codes = [(r.get("ErrorCode"), r.get("ErrorMessage")) for r in results]
    assert codes[0] == (
        "InvalidArgument",
        "Parameter Source is not valid. Reason: Source is a required argument.",
    )
    assert codes[1][0] == "InvalidArgument" and "DetailType is a required" in codes[1][1]
    assert codes[2][0] == "InvalidArgument" and "Detail is a required" in codes[2][1]
    assert codes[3] == codes[4] == ("MalformedDetail", "Detail is malformed.")
    assert codes[5] == ("NotAuthorizedForSourceException", "Not authorized for the source.")
    assert codes[6][0] == "InvalidArgument" and "Event bus nope does not exist" in codes[6][1]
    assert codes[7][0] == "InvalidArgument" and "Event bus default does not exist" in codes[7][1]
    assert "EventId" in results[8] and "EventId" in results[9]
    assert not any("EventId" in result for result in results[:8])
    assert (bus.accepted, bus.rejected) == (2, 8)
    assert {event["id"] for _, event in deliver.calls} == {
        results[8]["EventId"],
        results[9]["EventId"],
    }


def test_a_time_out_of_range_fails_its_entry_only(rules: list[Rule]) -> None:
    """Not the whole call: entries before it were already delivered, and a retried
    call would deliver them twice."""
    deliver = Recorder()
    bus = Bus(rules=rules, deliver=deliver)
    bad_times = [1e20, -1e15, "0001-01-01T00:00:00+01:00", "not a time"]
    results = bus.put_events(
        [entry("orders"), *(entry("orders", Time=t) for t in bad_times), entry("orders")]
    )
    assert [r.get("ErrorCode") for r in results] == [None, *["InvalidArgument"] * 4, None]
    assert all("Time is malformed" in r["ErrorMessage"] for r in results[1:5])
    assert (bus.accepted, bus.rejected) == (2, 4)
    assert len(deliver.calls) == 4  # the two good events, each to orders and everything


def test_request_limits(rules: list[Rule]) -> None:
    bus = Bus(rules=rules, deliver=Recorder())
    with pytest.raises(EventsError) as too_many:
        bus.put_events([entry("users", n) for n in range(11)])
    assert too_many.value.code == "ValidationException"
    assert "less than or equal to 10" in str(too_many.value)
    big = json.dumps({"log": "users", "blob": "x" * (130 * 1024)})
    with pytest.raises(EventsError) as too_big:
        bus.put_events([entry("users", Detail=big), entry("users", Detail=big)])
    assert str(too_big.value) == "Total size of the entries in the request is over the limit."
    with pytest.raises(EventsError):
        bus.put_events([])
    assert bus.accepted == 0  # a refused request accepts nothing
    assert "EventId" in bus.put_events([entry("users", Detail=big)])[0]


async def test_a_failing_deliver_does_not_fail_the_entry(rules: list[Rule]) -> None:
    calls: list[str] = []

    def deliver(function: str, event: dict[str, Any]) -> None:
        calls.append(function)
        if function == "everything":
            raise RuntimeError("runtime is gone")

    bus = Bus(rules=rules, deliver=deliver)
    [result] = bus.put_events([entry("users")])
    assert "EventId" in result
    assert sorted(calls) == ["everything", "users"]  # the other rule still got it


async def test_archives_accepted_events(rules: list[Rule], writer: ArchiveWriter) -> None:
    bus = Bus(rules=rules, deliver=Recorder(), archive=writer)
    results = bus.put_events([entry("users", 1, at=T0), entry("orders", 2), {"Source": "x"}])
    await writer.flush()
    stored = list(archive.iter_events(writer.path))
    assert [event["id"] for event in stored] == [results[0]["EventId"], results[1]["EventId"]]
    assert stored[0]["time"] == "2024-05-01T12:00:00Z"  # the entry's Time is the event time
    description = await bus.describe_archive()
    assert description["EventCount"] == 2 and description["SizeBytes"] > 0
    assert description["EventSourceArn"] == bus.arn
    assert description["State"] == "ENABLED" and description["RetentionDays"] == 0
    with pytest.raises(EventsError) as missing:
        await bus.describe_archive("other")
    assert missing.value.code == "ResourceNotFoundException"


async def test_an_event_after_archive_close_is_still_delivered(
    rules: list[Rule], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = await ArchiveWriter(tmp_path / "closed").start()
    await writer.close()
    deliver = Recorder()
    bus = Bus(rules=rules, deliver=deliver, archive=writer)
    [result] = bus.put_events([entry("orders")])
    assert deliver.targets(result["EventId"]) == ["everything", "orders"]
    assert any("not archived" in record.getMessage() for record in caplog.records)


async def test_replay_goes_to_filter_rules_only_and_is_not_archived(
    rules: list[Rule], writer: ArchiveWriter
) -> None:
    deliver = Recorder()
    bus = Bus(rules=rules, deliver=deliver, archive=writer)
    before = bus.put_events([entry("users", 1, at=T0 - timedelta(minutes=1))])
    inside = bus.put_events(
        [entry("users", 2, at=T0), entry("orders", 3, at=T0 + timedelta(seconds=30))]
    )
    after = bus.put_events([entry("users", 4, at=T0 + timedelta(minutes=1))])
    deliver.calls.clear()

    users_rule = bus.rule("dynamodb-logs-t1-users")
    started = await bus.start_replay(
        "fix-users",
        bus.archive_arn,
        T0,
        T0 + timedelta(minutes=1),  # exclusive: the event at exactly +1 min stays out
        bus.arn,
        [users_rule.arn],
    )
    assert started["State"] == "STARTING"
    replay = await asyncio.wait_for(bus.wait_replay("fix-users"), timeout=5)
    assert replay.state == "COMPLETED", replay.state_reason

    # only the users rule, only the users event inside the window, marked as a replay
    assert [(function, event["id"]) for function, event in deliver.calls] == [
        ("users", inside[0]["EventId"])
    ]
    assert deliver.calls[0][1]["replay-name"] == "fix-users"
    assert replay.replayed == 2  # both window events were replayed; one rule matched one
    description = bus.describe_replay("fix-users")
    assert description["EventLastReplayedTime"] == T0 + timedelta(seconds=30)
    assert description["ReplayEndTime"] >= description["ReplayStartTime"]
    assert description["Destination"] == {"Arn": bus.arn, "FilterArns": [users_rule.arn]}

    # without FilterArns every rule of the bus gets the replay
    deliver.calls.clear()
    hour = timedelta(hours=1)
    await bus.start_replay("all", bus.archive_arn, T0 - hour, T0 + hour, bus.arn)
    await bus.wait_replay("all")
    replayed_ids = {event["id"] for _, event in deliver.calls}
    assert replayed_ids == {r["EventId"] for r in before + inside + after}
    assert {function for function, _ in deliver.calls} == {"users", "orders", "everything"}
    assert all(event["replay-name"] == "all" for _, event in deliver.calls)

    # replays never reach the archive again
    await writer.flush()
    assert archive.count(writer.path) == 4
    assert [r["ReplayName"] for r in bus.list_replays(name_prefix="fix")] == ["fix-users"]
    assert {r["ReplayName"] for r in bus.list_replays(state="COMPLETED")} == {"fix-users", "all"}


async def test_replay_names_are_unique_and_requests_checked(
    rules: list[Rule], writer: ArchiveWriter
) -> None:
    bus = Bus(rules=rules, deliver=Recorder(), archive=writer)
    end = T0 + timedelta(hours=1)
    await bus.start_replay("once", bus.archive_arn, T0, end, bus.arn)
    with pytest.raises(EventsError) as twice:
        await bus.start_replay("once", bus.archive_arn, T0, end, bus.arn)
    assert twice.value.code == "ResourceAlreadyExistsException"
    assert str(twice.value) == "Replay once already exists."
    await bus.wait_replay("once")
    with pytest.raises(EventsError, match="already exists"):  # finished replays keep the name
        await bus.start_replay("once", bus.archive_arn, T0, end, bus.arn)

    bad_requests = [
        ("bad name!", bus.archive_arn, T0, end, bus.arn, None),
        ("r1", bus.archive_arn.replace("dynamodb-logs-archive", "x"), T0, end, bus.arn, None),
        ("r2", bus.archive_arn, T0, end, bus.arn.replace("dynamodb-log", "other"), None),
        ("r3", bus.archive_arn, end, T0, bus.arn, None),
        ("r4", bus.archive_arn, T0, end, bus.arn, [rule_arn("us-east-1", "0", "nope")]),
    ]
    for name, source, start, stop, destination, filters in bad_requests:
        with pytest.raises(EventsError) as refused:
            await bus.start_replay(name, source, start, stop, destination, filters)
        assert refused.value.code == "ValidationException", name
    assert list(bus.replays) == ["once"]
    with pytest.raises(EventsError) as unknown:
        bus.describe_replay("never")
    assert unknown.value.code == "ResourceNotFoundException"
    with pytest.raises(EventsError):
        bus.list_replays(name_prefix="o", state="COMPLETED")  # one filter at most


async def test_replay_fails_with_a_reason_when_the_archive_is_gone(
    rules: list[Rule], writer: ArchiveWriter
) -> None:
    bus = Bus(rules=rules, deliver=Recorder(), archive=writer)
    bus.put_events([entry("users", at=T0)])
    await writer.flush()
    writer.path.unlink()
    await bus.start_replay("lost", bus.archive_arn, T0, T0 + timedelta(hours=1), bus.arn)
    replay = await bus.wait_replay("lost")
    assert replay.state == "FAILED"
    assert "no archive" in (replay.state_reason or "")
    assert bus.describe_replay("lost")["StateReason"] == replay.state_reason


async def test_cancel_replay(rules: list[Rule], writer: ArchiveWriter) -> None:
    bus = Bus(rules=rules, deliver=Recorder(), archive=writer)
    await bus.start_replay("stop-me", bus.archive_arn, T0, T0 + timedelta(hours=1), bus.arn)
    assert bus.cancel_replay("stop-me")["State"] == "CANCELLING"
    replay = await bus.wait_replay("stop-me")
    assert replay.state == "CANCELLED"
    with pytest.raises(EventsError) as again:
        bus.cancel_replay("stop-me")
    assert again.value.code == "IllegalStatusException"


async def test_a_replay_waits_for_slow_handlers_instead_of_piling_up(
    rules: list[Rule], writer: ArchiveWriter
) -> None:
    from bridge.offline.bus import REPLAY_MAX_BACKLOG, REPLAY_PAGE

    pending: list[dict[str, Any]] = []
    seen = {"max": 0}

    def deliver(function: str, event: dict[str, Any]) -> None:
        pending.append(event)
        seen["max"] = max(seen["max"], len(pending))

    bus = Bus(rules=rules, deliver=deliver, archive=writer, backlog=lambda: len(pending))
    total = 5 * REPLAY_PAGE
    for start in range(0, total, 10):
        bus.put_events([entry("orders", n, at=T0) for n in range(start, start + 10)])
    await writer.flush()
    pending.clear()
    seen["max"] = 0  # count the replay's deliveries only

    async def handlers() -> None:  # work off 200 deliveries every 10 ms
        while True:
            del pending[:200]
            await asyncio.sleep(0.01)

    worker = asyncio.create_task(handlers())
    try:
        hour = timedelta(hours=1)
        await bus.start_replay("paced", bus.archive_arn, T0 - hour, T0 + hour, bus.arn)
        replay = await asyncio.wait_for(bus.wait_replay("paced"), timeout=20)
    finally:
        worker.cancel()
    assert replay.state == "COMPLETED" and replay.replayed == total
    # every event went to two rules (orders and everything): at most one page over the cap
    assert seen["max"] <= REPLAY_MAX_BACKLOG + 2 * REPLAY_PAGE


async def test_an_aws_like_replay_shuffles_minute_slices_and_sends_some_after_completed(
    rules: list[Rule], writer: ArchiveWriter
) -> None:
    """--aws-like-replays: what a replay client must survive in AWS, reproduced."""
    deliver = Recorder()
    bus = Bus(rules=rules, deliver=deliver, archive=writer, aws_like_replays=True)
    put = []  # 60 events over 2 minutes, 10 a call as PutEvents allows
    for first in range(0, 60, 10):
        put += bus.put_events(
            [entry("users", n, at=T0 + timedelta(seconds=2 * n)) for n in range(first, first + 10)]
        )
    deliver.calls.clear()
    users_rule = bus.rule("dynamodb-logs-t1-users")
    await bus.start_replay(
        "like-aws", bus.archive_arn, T0, T0 + timedelta(hours=1), bus.arn, [users_rule.arn]
    )
    replay = bus.replay("like-aws")
    while replay.state != "COMPLETED":
        await asyncio.sleep(0.01)
    at_completed = [event["id"] for _, event in deliver.calls]
    await bus.wait_replay("like-aws")
    replayed = [event["id"] for _, event in deliver.calls]
    ids = [r["EventId"] for r in put]
    assert sorted(replayed) == sorted(ids)  # each event once, in the end
    assert len(at_completed) < len(replayed)  # some came after COMPLETED
    assert replayed != ids  # not in time order
    minute = {i: n // 30 for n, i in enumerate(ids)}
    slices = [minute[i] for i in at_completed]
    assert slices == sorted(slices) and set(slices) == {0, 1}  # slice after slice
