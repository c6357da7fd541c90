"""The EventBridge endpoint and the Lambda Invoke API on a real port.

Driven by the same clients users have: boto3 (``client("events")``, ``client("lambda")``)
and the AWS CLI in a subprocess. The server runs in the test's event loop, so every
blocking boto3 call goes through a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bridge import archive
from bridge.archive import ArchiveWriter
from bridge.core.errors import BridgeError
from bridge.core.events import MAX_DETAIL_DEPTH
from bridge.core.subscriptions import parse
from bridge.offline.bus import Bus, rules_from
from bridge.offline.events_api import JSON_11, EventsServer
from bridge.offline.runtime import FunctionRuntime

ROOT = Path(__file__).resolve().parents[1]
HANDLER = "tests.handlers.bus_record.handler"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
LOGGER = "bridge.offline.events_api"  # the module's own logger (named by __name__)


def definition(records: Path) -> str:
    env = f'environment = {{ RECORDS_FILE = "{records}" }}'
    return f"""
[functions.users]
handler = "{HANDLER}"
pattern = {{ source = ["dynamodb-log"], detail = {{ log = ["users"] }} }}
retry_attempts = 0
{env}

[functions.orders]
handler = "{HANDLER}"
pattern = {{ source = ["dynamodb-log"], detail = {{ log = ["orders"] }} }}
retry_attempts = 0
{env}
"""


class Recorder:
    """``deliver`` for the protocol tests: records, returns at once like invoke_async."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, function: str, event: dict[str, Any]) -> str:
        self.calls.append((function, event))
        return "recorded"


@dataclass
class Local:
    bus: Bus
    server: EventsServer
    writer: ArchiveWriter
    deliver: Recorder

    def client(self, service: str = "events") -> Any:
        return boto3.client(
            service,
            endpoint_url=self.server.url,
            region_name="us-east-1",
            aws_access_key_id="any",
            aws_secret_access_key="any",
            config=Config(retries={"total_max_attempts": 1}),
        )


async def call(method: Callable[..., Any], **params: Any) -> Any:
    """A boto3 call off the event loop (the server answers on the loop)."""
    return await asyncio.to_thread(method, **params)


async def error_of(method: Callable[..., Any], **params: Any) -> ClientError:
    with pytest.raises(ClientError) as raised:
        await call(method, **params)
    return raised.value


def entry(log: str, n: int = 1, **extra: Any) -> dict[str, Any]:
    detail = {"log": log, "key": {"pk": f"{log}#{n}#stream", "sk": 1}, "type": "t", "payload": {}}
    return {
        "Source": "dynamodb-log",
        "DetailType": "stream changes",
        "Detail": json.dumps(detail),
        "EventBusName": "dynamodb-log",
        **extra,
    }


def bad_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING
    ]


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    rules = rules_from(parse(definition(tmp_path / "records")), "t1")
    deliver = Recorder()
    writer = await ArchiveWriter(tmp_path / "db").start()
    bus = Bus(rules=rules, deliver=deliver, archive=writer)
    server = await EventsServer(bus, None, port=0).start()
    try:
        yield Local(bus, server, writer, deliver)
    finally:
        await server.stop()
        await bus.close()
        await writer.close()


async def test_put_events_with_boto3(local: Local) -> None:
    events = local.client()
    response = await call(
        events.put_events, Entries=[entry("users", 1), entry("orders", 2), entry("carts", 3)]
    )
    assert response["FailedEntryCount"] == 0
    ids = [result["EventId"] for result in response["Entries"]]
    assert len(set(ids)) == 3
    delivered = {(function, event["id"]) for function, event in local.deliver.calls}
    assert delivered == {("users", ids[0]), ("orders", ids[1])}  # carts match no rule
    await local.writer.flush()
    assert [event["id"] for event in archive.iter_events(local.writer.path)] == ids


async def test_per_entry_errors(local: Local, caplog: pytest.LogCaptureFixture) -> None:
    events = local.client()
    good = entry("users")
    response = await call(
        events.put_events,
        Entries=[
            {k: v for k, v in good.items() if k != "Source"},
            {k: v for k, v in good.items() if k != "DetailType"},
            {**good, "Detail": '"just a string"'},
            {**good, "EventBusName": "no-such-bus"},
            good,
        ],
    )
    assert response["FailedEntryCount"] == 4
    results = response["Entries"]
    assert [r.get("ErrorCode") for r in results] == [
        "InvalidArgument",
        "InvalidArgument",
        "MalformedDetail",
        "InvalidArgument",
        None,
    ]
    assert results[0]["ErrorMessage"] == (
        "Parameter Source is not valid. Reason: Source is a required argument."
    )
    assert "no-such-bus" in results[3]["ErrorMessage"]
    assert "EventId" in results[4] and not any("EventId" in r for r in results[:4])
    assert [event["id"] for _, event in local.deliver.calls] == [results[4]["EventId"]]
    assert len(bad_lines(caplog)) == 1  # one line for the request, naming the first failure


async def test_whole_request_errors_and_the_server_keeps_answering(
    local: Local, caplog: pytest.LogCaptureFixture
) -> None:
    events = local.client()

    async def still_up() -> None:
        assert (await call(events.describe_event_bus, Name="dynamodb-log"))["Name"] == (
            "dynamodb-log"
        )

    eleven = await error_of(events.put_events, Entries=[entry("users", n) for n in range(11)])
    assert eleven.response["Error"]["Code"] == "ValidationException"
    assert "less than or equal to 10" in eleven.response["Error"]["Message"]
    assert eleven.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    await still_up()

    blob = json.dumps({"log": "users", "blob": "x" * (200 * 1024)})
    too_big = await error_of(
        events.put_events, Entries=[entry("users", Detail=blob), entry("users", Detail=blob)]
    )
    assert too_big.response["Error"] == {
        "Code": "ValidationException",
        "Message": "Total size of the entries in the request is over the limit.",
    }
    await still_up()

    async with aiohttp.ClientSession() as http:
        headers = {
            "X-Amz-Target": "AWSEvents.PutEvents",
            "Content-Type": "application/x-amz-json-1.1",
        }
        async with http.post(local.server.url, data=b'{"Entries": [', headers=headers) as reply:
            assert reply.status == 400
            assert (await reply.json(content_type=None))["__type"] == "SerializationException"
        await still_up()
        headers["X-Amz-Target"] = "AWSEvents.PutPermissionToEverything"
        async with http.post(local.server.url, data=b"{}", headers=headers) as reply:
            assert reply.status == 400
            assert (await reply.json(content_type=None))["__type"] == "UnknownOperationException"
        await still_up()

    missing = await error_of(events.describe_rule, Name="nope", EventBusName="dynamodb-log")
    assert isinstance(missing, events.exceptions.ResourceNotFoundException)  # modeled: typed
    assert missing.response["Error"]["Message"] == (
        "Rule nope does not exist on EventBus dynamodb-log."
    )
    await still_up()
    assert local.bus.accepted == 0
    # exactly one line per refused request: 11 entries, too big, malformed, unknown, no rule
    assert len(bad_lines(caplog)) == 5


async def test_aws_cli_put_events(local: Local, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }
    env.pop("AWS_PROFILE", None)
    entries = [entry("users", 7), entry("orders", 8, Source="")]
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "aws"),
        "events",
        "put-events",
        "--endpoint-url",
        local.server.url,
        "--entries",
        json.dumps(entries),
        "--output",
        "json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    response = json.loads(out)
    assert response["FailedEntryCount"] == 1
    event_id = response["Entries"][0]["EventId"]
    assert response["Entries"][1]["ErrorCode"] == "InvalidArgument"
    assert [(f, e["id"]) for f, e in local.deliver.calls] == [("users", event_id)]
    await local.writer.flush()
    assert archive.count(local.writer.path) == 1


async def test_describe_and_list(local: Local) -> None:
    events = local.client()
    bus = await call(events.describe_event_bus, Name="dynamodb-log")
    assert bus["Arn"] == "arn:aws:events:us-east-1:000000000000:event-bus/dynamodb-log"
    assert isinstance(bus["CreationTime"], datetime)  # epoch seconds on the wire
    assert (await call(events.describe_event_bus, Name=bus["Arn"]))["Name"] == "dynamodb-log"
    buses = await call(events.list_event_buses)
    assert [b["Name"] for b in buses["EventBuses"]] == ["dynamodb-log"]

    rules = (await call(events.list_rules, EventBusName="dynamodb-log"))["Rules"]
    assert [r["Name"] for r in rules] == ["dynamodb-logs-t1-users", "dynamodb-logs-t1-orders"]
    assert json.loads(rules[0]["EventPattern"]) == {
        "source": ["dynamodb-log"],
        "detail": {"log": ["users"]},
    }
    assert rules[0]["State"] == "ENABLED" and rules[0]["EventBusName"] == "dynamodb-log"
    prefixed = await call(
        events.list_rules, EventBusName="dynamodb-log", NamePrefix="dynamodb-logs-t1-o"
    )
    assert [r["Name"] for r in prefixed["Rules"]] == ["dynamodb-logs-t1-orders"]
    paged = await call(events.list_rules, EventBusName="dynamodb-log", Limit=1)
    assert len(paged["Rules"]) == 1 and paged["NextToken"]
    rest = await call(
        events.list_rules, EventBusName="dynamodb-log", Limit=1, NextToken=paged["NextToken"]
    )
    assert [r["Name"] for r in rest["Rules"]] == ["dynamodb-logs-t1-orders"]
    assert "NextToken" not in rest
    no_bus = await error_of(events.list_rules)  # the default bus does not exist locally
    assert no_bus.response["Error"]["Code"] == "ResourceNotFoundException"

    rule = await call(
        events.describe_rule, Name="dynamodb-logs-t1-users", EventBusName="dynamodb-log"
    )
    assert rule["Arn"] == (
        "arn:aws:events:us-east-1:000000000000:rule/dynamodb-log/dynamodb-logs-t1-users"
    )
    targets = await call(
        events.list_targets_by_rule, Rule="dynamodb-logs-t1-users", EventBusName="dynamodb-log"
    )
    function_arn = "arn:aws:lambda:us-east-1:000000000000:function:dynamodb-logs-t1-users"
    assert targets["Targets"] == [{"Id": "users", "Arn": function_arn}]

    await call(events.put_events, Entries=[entry("users", 1), entry("users", 2)])
    described = await call(events.describe_archive, ArchiveName="dynamodb-logs-archive")
    assert described["ArchiveArn"] == (
        "arn:aws:events:us-east-1:000000000000:archive/dynamodb-logs-archive"
    )
    assert described["EventSourceArn"] == bus["Arn"]
    assert (described["State"], described["RetentionDays"]) == ("ENABLED", 0)
    assert described["EventCount"] == 2 and described["SizeBytes"] > 0
    archives = (await call(events.list_archives))["Archives"]
    assert [(a["ArchiveName"], a["EventCount"]) for a in archives] == [("dynamodb-logs-archive", 2)]
    assert (await call(events.list_archives, NamePrefix="other"))["Archives"] == []
    gone = await error_of(events.describe_archive, ArchiveName="other")
    assert isinstance(gone, events.exceptions.ResourceNotFoundException)


async def test_replay_over_the_wire(local: Local) -> None:
    events = local.client()
    put = await call(
        events.put_events,
        Entries=[
            entry("users", 1, Time=T0),
            entry("orders", 2, Time=T0 + timedelta(seconds=1)),
            entry("users", 3, Time=T0 + timedelta(hours=2)),  # outside the window
        ],
    )
    ids = [result["EventId"] for result in put["Entries"]]
    local.deliver.calls.clear()
    users_rule = (await call(events.list_rules, EventBusName="dynamodb-log"))["Rules"][0]
    bus_arn = (await call(events.describe_event_bus, Name="dynamodb-log"))["Arn"]
    archive_arn = (await call(events.describe_archive, ArchiveName="dynamodb-logs-archive"))[
        "ArchiveArn"
    ]

    started = await call(
        events.start_replay,
        ReplayName="users-again",
        EventSourceArn=archive_arn,
        EventStartTime=T0,
        EventEndTime=T0 + timedelta(hours=1),
        Destination={"Arn": bus_arn, "FilterArns": [users_rule["Arn"]]},
    )
    assert started["State"] in ("STARTING", "RUNNING", "COMPLETED")
    deadline = time.monotonic() + 10
    while True:
        replay = await call(events.describe_replay, ReplayName="users-again")
        if replay["State"] in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert replay["State"] == "COMPLETED", replay.get("StateReason")
    assert replay["EventLastReplayedTime"] == T0 + timedelta(seconds=1)
    assert replay["Destination"]["FilterArns"] == [users_rule["Arn"]]

    # only the users rule's target, only the event in the window, marked as replayed
    assert [(f, e["id"], e["replay-name"]) for f, e in local.deliver.calls] == [
        ("users", ids[0], "users-again")
    ]
    await local.writer.flush()
    assert archive.count(local.writer.path) == 3  # the replay was not archived again

    twice = await error_of(
        events.start_replay,
        ReplayName="users-again",
        EventSourceArn=archive_arn,
        EventStartTime=T0,
        EventEndTime=T0 + timedelta(hours=1),
        Destination={"Arn": bus_arn},
    )
    assert isinstance(twice, events.exceptions.ResourceAlreadyExistsException)
    listed = await call(events.list_replays, NamePrefix="users")
    assert [(r["ReplayName"], r["State"]) for r in listed["Replays"]] == [
        ("users-again", "COMPLETED")
    ]


async def test_port_in_use_is_one_clear_error(local: Local) -> None:
    with pytest.raises(BridgeError, match=f"port {local.server.port} .*already in use"):
        await EventsServer(local.bus, None, port=local.server.port).start()
    # the running server is unaffected
    assert (await call(local.client().list_event_buses))["EventBuses"]


# --------------------------------------------------------------------------- end to end


async def test_end_to_end_with_the_function_runtime(tmp_path: Path) -> None:
    """PutEvents → rule → the real runtime runs the handler; Lambda Invoke on the same port."""
    records = tmp_path / "records"
    subscriptions = parse(definition(records))
    runtime = FunctionRuntime(
        subscriptions.functions.values(),
        project_root=ROOT,
        environment={"EVENT_BUS_NAME": "dynamodb-log"},
        stage="t1",
        max_concurrency=1,
    )
    await runtime.start()
    bus = Bus(rules=rules_from(subscriptions, "t1"), deliver=runtime.invoke_async)
    server = await EventsServer(bus, runtime, port=0).start()
    local = Local(bus, server, ArchiveWriter(tmp_path / "unused"), Recorder())
    try:
        events = local.client()
        put = await call(events.put_events, Entries=[entry("users", 1), entry("orders", 2)])
        users_id, orders_id = (result["EventId"] for result in put["Entries"])
        await runtime.drain()
        seen = [json.loads(line) for line in records.read_text().splitlines()]
        assert sorted((s["function"], s["event"]["id"]) for s in seen) == [
            ("dynamodb-logs-t1-orders", orders_id),
            ("dynamodb-logs-t1-users", users_id),
        ]
        assert all(s["event"]["source"] == "dynamodb-log" for s in seen)

        functions = local.client("lambda")
        reply = await call(
            functions.invoke, FunctionName="users", Payload=json.dumps({"id": "direct"})
        )
        assert reply["StatusCode"] == 200 and "FunctionError" not in reply
        assert json.loads(reply["Payload"].read()) == {
            "function": "dynamodb-logs-t1-users",
            "id": "direct",
        }
        arn = runtime.function_arn("orders")
        failed = await call(functions.invoke, FunctionName=arn, Payload=b'{"fail": true}')
        assert (failed["StatusCode"], failed["FunctionError"]) == (200, "Unhandled")
        error = json.loads(failed["Payload"].read())
        assert error["errorType"] == "AskedToFail"
        assert error["errorMessage"] == "dynamodb-logs-t1-orders was asked to fail"

        queued = await call(
            functions.invoke,
            FunctionName="dynamodb-logs-t1-orders",
            InvocationType="Event",
            Payload=json.dumps({"id": "later"}),
        )
        assert queued["StatusCode"] == 202
        await runtime.drain()
        last = json.loads(records.read_text().splitlines()[-1])
        assert (last["function"], last["event"]) == ("dynamodb-logs-t1-orders", {"id": "later"})
        assert last["request_id"] == queued["ResponseMetadata"]["RequestId"]

        missing = await error_of(functions.invoke, FunctionName="nobody", Payload=b"{}")
        assert isinstance(missing, functions.exceptions.ResourceNotFoundException)
        assert missing.response["Error"]["Message"] == (
            "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nobody"
        )
        bad_json = await error_of(functions.invoke, FunctionName="users", Payload=b"{oops")
        assert isinstance(bad_json, functions.exceptions.InvalidRequestContentException)
    finally:
        await server.stop()
        await runtime.stop()


# --------------------------------------------------------------------------- bad input


def detail_nested(depth: int) -> str:
    """A log event's Detail whose containers nest ``depth`` deep, the detail included."""
    return '{"log": "users", "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


async def flushed(local: Local) -> int:
    """What the archive holds once flushed; a dead writer fails here instead of hanging."""
    await asyncio.wait_for(local.writer.flush(), timeout=30)
    return archive.count(local.writer.path)


async def test_text_utf8_cannot_carry_fails_only_its_entry(
    local: Local, caplog: pytest.LogCaptureFixture
) -> None:
    """Accepted, such an event would reach the archive, whose SQLite writer could not
    encode it and died: nothing archived after it, DescribeArchive and shutdown hung."""
    events = local.client()
    good = entry("users")
    response = await call(
        events.put_events,
        Entries=[
            {**good, "Detail": '{"log": "users", "x": "\\ud800"}'},  # the issue's escape
            {**good, "Detail": '{"log": "users", "\\udcff": 1}'},  # in a key
            {**good, "Detail": '{"log": "users", "x": "\ud800"}'},  # the character itself
            {**good, "Source": "app\ud800"},
            {**good, "DetailType": "t\udcff"},
            {**good, "Resources": ["arn:aws:s3:::ok", "arn:\ud800"]},
            good,
        ],
    )
    results = response["Entries"]
    assert [r.get("ErrorCode") for r in results] == [
        *["MalformedDetail"] * 3,
        *["InvalidArgument"] * 3,
        None,
    ]
    assert response["FailedEntryCount"] == 6
    assert results[0]["ErrorMessage"] == "Detail is malformed."
    assert results[3]["ErrorMessage"] == (
        "Parameter Source is not valid. Reason: lone surrogate \\ud800 at position 3 is not "
        "text UTF-8 can carry."
    )
    assert results[5]["ErrorMessage"].startswith("Parameter Resources is not valid.")
    assert [event["id"] for _, event in local.deliver.calls] == [results[6]["EventId"]]
    assert await flushed(local) == 1
    # the archive writer is alive: it answers and keeps archiving
    described = await call(events.describe_archive, ArchiveName="dynamodb-logs-archive")
    assert described["EventCount"] == 1
    await call(events.put_events, Entries=[entry("users", 2)])
    assert await flushed(local) == 2
    assert len(bad_lines(caplog)) == 1  # one line for the request


async def test_the_issues_aws_cli_command_fails_its_entry(local: Local, tmp_path: Path) -> None:
    # the shell text of the issue's `--entries '[...]'`, as the CLI receives it
    entries = (
        '[{"Source":"app","DetailType":"t","Detail":"{\\"x\\":\\"\\\\ud800\\"}",'
        '"EventBusName":"dynamodb-log"}]'
    )
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "aws"),
        "events",
        "put-events",
        "--endpoint-url",
        local.server.url,
        "--entries",
        entries,
        "--output",
        "json",
        env={
            **os.environ,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    response = json.loads(out)
    assert response["FailedEntryCount"] == 1
    assert response["Entries"] == [
        {"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed."}
    ]
    assert local.deliver.calls == []
    assert await flushed(local) == 0


async def test_deeply_nested_detail_fails_only_its_entry(
    local: Local, caplog: pytest.LogCaptureFixture
) -> None:
    events = local.client()
    good = entry("users")
    response = await call(
        events.put_events,
        Entries=[
            {**good, "Detail": detail_nested(5000)},  # was HTTP 500 InternalException
            {**good, "Detail": detail_nested(MAX_DETAIL_DEPTH + 1)},
            {**good, "Detail": detail_nested(MAX_DETAIL_DEPTH)},  # the limit itself passes
            good,
        ],
    )
    results = response["Entries"]
    assert [r.get("ErrorCode") for r in results] == [
        "MalformedDetail",
        "MalformedDetail",
        None,
        None,
    ]
    assert [event["id"] for _, event in local.deliver.calls] == [
        results[2]["EventId"],
        results[3]["EventId"],
    ]
    assert local.deliver.calls[0][1]["detail"] == json.loads(detail_nested(MAX_DETAIL_DEPTH))
    assert await flushed(local) == 2
    assert not [line for line in bad_lines(caplog) if "InternalException" in line]


async def test_bodies_too_deep_or_not_utf8_are_refused_whole(
    local: Local, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"X-Amz-Target": "AWSEvents.PutEvents", "Content-Type": JSON_11}
    async with aiohttp.ClientSession() as http:
        for body, reason in [
            (b'{"Entries": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested more than 100 levels"),
            (b'{"Entries": [], "x": ' + b"[" * 200 + b"]" * 200 + b"}", "nested more than 100"),
            (b'{"Entries": [{"Source": "a' + b"\xed\xa0\x80" + b'"}]}', "utf-8"),
        ]:
            async with http.post(local.server.url, data=body, headers=headers) as reply:
                assert reply.status == 400
                error = await reply.json(content_type=None)
            assert error["__type"] == "SerializationException"
            assert reason in error["message"]
    assert len(bad_lines(caplog)) == 3
    assert local.bus.accepted == 0


class Lines(logging.Handler):
    """The records of a logger as they come, and a wait for the next one (the server
    logs on the test's loop, after the client has already seen the connection end)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.arrived.set()

    async def first(self) -> logging.LogRecord:
        while not self.records:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), timeout=30)
        return self.records[0]


HEAD = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: AWSEvents.PutEvents\r\n"
    b"Content-Type: application/x-amz-json-1.1\r\n"
)


async def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, close our side, read what comes back until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "reply_start", "line"),
    [
        # a body cut short of its Content-Length, and a chunked body cut short
        (HEAD + b"Content-Length: 100\r\n\r\n" + b'{"Entries": [', b"", "body ended before"),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n10\r\nabc", b"", "body ended before"),
        # malformed HTTP: aiohttp's own 400 (or the end, the client having closed)
        (HEAD + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n", b"", "Got more than 8190 bytes"),
        (HEAD + b"X-A: 1\r\n" * 200 + b"\r\n", b"", "Too many headers"),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", b"", "Invalid character in chunk"),
        (HEAD + b"Content-Length: abc\r\n\r\n{}", b"", "Invalid character in Content-Length"),
    ],
)
async def test_malformed_http_is_one_line_and_no_traceback(
    local: Local, request_bytes: bytes, reply_start: bytes, line: str
) -> None:
    lines = Lines()
    watched = [logging.getLogger(name) for name in (LOGGER, "aiohttp")]
    for logger in watched:
        logger.addHandler(lines)
    try:
        reply = await exchange(local.server.port, request_bytes)
        record = await lines.first()
        assert reply.startswith(reply_start)
        assert record.name == LOGGER and record.levelno == logging.WARNING
        assert line in record.getMessage() and "\n" not in record.getMessage()
        assert record.exc_info is None  # no traceback
        # the server goes on answering, and logged nothing else meanwhile
        assert (await call(local.client().list_event_buses))["EventBuses"]
        assert lines.records == [record]
    finally:
        for logger in watched:
            logger.removeHandler(lines)


async def test_an_oversized_header_gets_a_400_while_the_client_listens(local: Local) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", local.server.port)
    writer.write(HEAD + b"X-Big: " + b"a" * 20_000 + b"\r\nContent-Length: 2\r\n\r\n{}")
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), timeout=30)  # then the server closes
    writer.close()
    assert reply.split(b"\r\n", 1)[0] in (b"HTTP/1.0 400 Bad Request", b"HTTP/1.1 400 Bad Request")
