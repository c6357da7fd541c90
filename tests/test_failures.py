"""The failure record, the ``failures`` recorder Lambda and ``bridge.failures``.

The record is checked field by field against the seed's ``onFailure`` payload;
the recorder stores records in a real moto core table; ``retry_failure`` invokes
the Lambda Invoke REST API of a small server of our own, standing in for AWS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from lambda_events import aws_environment, session, unique

from bridge.core.errors import BridgeError
from bridge.core.events import entry_for, envelope
from bridge.core.failure import error_payload, failure_record, format_timestamp, function_name
from bridge.core.log import LogItem
from bridge.core.subscriptions import FunctionSpec
from bridge.failures import get_failure, list_failures, retry_failure
from bridge.lambdas import failures as recorder
from bridge.lambdas import users_projection
from bridge.offline.bus import Bus
from bridge.offline.events_api import EventsServer
from bridge.offline.runtime import FunctionRuntime
from bridge.store import LogStore, create_tables

ROOT = Path(__file__).resolve().parents[1]

# The seed's failure payload, as the seed shows it (placeholders in angle brackets).
SEED_RECORD: dict[str, Any] = {
    "version": "1.0",
    "timestamp": "<timestamp>",
    "requestContext": {
        "requestId": "<uuid>",
        "functionArn": "arn:...",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 3,
    },
    "requestPayload": {
        "version": "0",
        "id": "<uuid>",
        "detail-type": "stream changes",
        "source": "dynamodb-log",
        "account": "<account>",
        "time": "<timestamp>",
        "region": "<region>",
        "resources": [],
        "detail": {
            "log": "<log>",
            "key": {"pk": "<pk>", "sk": 0},
            "type": "<signup>",
            "payload": {"id": "<id>"},
        },
    },
    "responseContext": {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    },
    "responsePayload": {"errorType": "Error", "errorMessage": "<error message>", "trace": []},
}
AWS_TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:dynamodb-logs-test-users:$LATEST"


# The seed's values that are fixed by AWS (the rest are examples or placeholders).
FIXED = {
    "$.version": "1.0",
    "$.requestContext.condition": "RetriesExhausted",
    "$.requestPayload.version": "0",
    "$.requestPayload.detail-type": "stream changes",
    "$.requestPayload.source": "dynamodb-log",
    "$.responseContext.statusCode": 200,
    "$.responseContext.executedVersion": "$LATEST",
    "$.responseContext.functionError": "Unhandled",
}


def assert_same_shape(actual: Any, seed: Any, path: str = "$") -> list[str]:
    """Same keys at every level and the same JSON types; returns the paths compared."""
    assert type(actual) is type(seed), f"{path}: {type(actual).__name__} != {type(seed).__name__}"
    paths = [path]
    if isinstance(seed, dict):
        assert set(actual) == set(seed), f"{path}: keys {sorted(actual)} != {sorted(seed)}"
        for key, value in seed.items():
            paths += assert_same_shape(actual[key], value, f"{path}.{key}")
    elif isinstance(seed, list):
        for i, value in enumerate(actual):
            assert isinstance(value, str), f"{path}[{i}] is not a string"
    if path in FIXED:
        assert actual == FIXED[path] == seed, f"{path}: {actual!r} != {seed!r}"
    return paths


def users_event(id: str = "12", version: int = 1) -> dict[str, Any]:
    return envelope(entry_for(LogItem("users", id, version, "signup", {"id": id})))


def raised(exc: BaseException) -> BaseException:
    """The exception as caught after a raise, traceback included."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def record_of_error(
    event: dict[str, Any], error: BaseException, when: datetime | None = None
) -> dict[str, Any]:
    """The failure record of a third failed attempt at `event` that raised `error`."""
    payload = error_payload(error)
    return failure_record(
        request_payload=event,
        function_arn=ARN,
        request_id=str(uuid.uuid4()),
        invoke_count=3,
        error_type=payload["errorType"],
        error_message=payload["errorMessage"],
        trace=payload["trace"],
        timestamp=when,
    )


def test_the_record_matches_the_seed_field_for_field() -> None:
    event = users_event()
    record = record_of_error(
        event,
        raised(ValueError("bad phone number")),
        when=datetime(2019, 11, 24, 23, 8, 25, 651_000, tzinfo=UTC),
    )

    compared = assert_same_shape(record, SEED_RECORD)
    assert set(FIXED) <= set(compared) and len(compared) == 33  # every key at every level
    assert json.loads(json.dumps(record)) == record  # plain JSON all the way down
    assert record["timestamp"] == "2019-11-24T23:08:25.651Z"
    assert record["requestPayload"] == event
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "bad phone number"
    assert record["responsePayload"]["trace"]  # one entry per frame


def test_timestamps_are_utc_with_milliseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2024, 1, 2, 3, 4, 5, 999_999, tzinfo=plus_two)) == (
        "2024-01-02T01:04:05.999Z"
    )
    assert format_timestamp(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05.000Z"
    record = failure_record(
        request_payload={},
        function_arn=ARN,
        request_id="r",
        invoke_count=1,
        error_type="E",
        error_message="m",
    )
    assert re.fullmatch(AWS_TIMESTAMP, record["timestamp"])
    assert record["responsePayload"]["trace"] == []
    assert record["requestContext"]["condition"] == "RetriesExhausted"


def test_error_payload_reads_like_the_python_runtime() -> None:
    class PhoneNotVerified(Exception):
        """A user-defined error, as a handler would raise."""

    def verify(number: str) -> None:
        raise PhoneNotVerified(f"{number} did not answer")

    def handler() -> None:
        verify("+1 555")

    try:
        handler()
    except PhoneNotVerified as exc:
        payload = error_payload(exc)
    assert set(payload) == {"errorType", "errorMessage", "trace"}
    assert payload["errorType"] == "PhoneNotVerified"  # the class name, not its module path
    assert payload["errorMessage"] == "+1 555 did not answer"
    # One entry per frame, outermost first, each naming its file, line and code.
    frames = [re.search(r", in (\w+)\n", line).group(1) for line in payload["trace"]]  # type: ignore[union-attr]
    assert frames == ["test_error_payload_reads_like_the_python_runtime", "handler", "verify"]
    assert all(line.startswith('  File "') for line in payload["trace"])
    assert "raise PhoneNotVerified" in payload["trace"][-1]


def test_function_names_come_from_qualified_and_plain_arns() -> None:
    assert function_name(ARN) == "dynamodb-logs-test-users"
    assert function_name("arn:aws:lambda:eu-west-1:1:function:my-fn") == "my-fn"
    assert function_name("arn:aws:lambda:eu-west-1:1:function:my-fn:live") == "my-fn"
    assert function_name("my-fn") == "my-fn"


@pytest.fixture
def core(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh core table (a boto3 Table), named in the function's environment."""
    aws_environment(monkeypatch, endpoint)
    stage = unique("fail")
    dynamodb = session().resource("dynamodb", endpoint_url=endpoint)
    create_tables(dynamodb, f"{stage}-dynamodb-logs", f"{stage}-core")
    monkeypatch.setenv("DYNAMODB_LOGS_TABLE", f"{stage}-dynamodb-logs")
    monkeypatch.setenv("DYNAMODB_CORE_TABLE", f"{stage}-core")
    return dynamodb.Table(f"{stage}-core")


def record_for(
    request_id: str,
    when: datetime,
    arn: str = ARN,
    event: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return failure_record(
        request_payload=event or users_event(),
        function_arn=arn,
        request_id=request_id,
        invoke_count=3,
        error_type="Error",
        error_message=f"failed {request_id}",
        trace=["  at handler"],
        timestamp=when,
    )


def test_the_recorder_stores_a_record_once(core: Any) -> None:
    when = datetime(2024, 5, 1, 12, 0, 0, 123_000, tzinfo=UTC)
    record = json.loads(json.dumps(record_for("req-1", when)))  # as Lambda delivers it

    stored = recorder.handler(record, None)

    key = {"pk": "failure#dynamodb-logs-test-users", "sk": "req-1"}
    assert stored == {"stored": True, **key}
    item = core.get_item(Key=key, ConsistentRead=True)["Item"]
    assert json.loads(item["record"]) == record
    assert item["functionArn"] == ARN
    assert item["requestId"] == "req-1"
    assert item["errorType"] == "Error" and item["errorMessage"] == "failed req-1"
    assert item["status"] == "failed"
    assert re.fullmatch(AWS_TIMESTAMP, item["createdAt"])
    # Delivered again, or re-stamped with another time: the same request is kept once.
    assert recorder.handler(record, None) == {"stored": False, **key}
    later = record_for("req-1", when + timedelta(seconds=5))
    assert recorder.handler(later, None) == {"stored": False, **key}
    assert len(core.scan(ConsistentRead=True)["Items"]) == 1
    with pytest.raises(ValueError, match="not a Lambda failure record"):
        recorder.handler({"detail": {}}, None)


def test_list_failures_returns_every_page_oldest_first(core: Any) -> None:
    base = datetime(2024, 6, 1, tzinfo=UTC)
    other = "arn:aws:lambda:us-east-1:123456789012:function:dynamodb-logs-test-mail"
    written = [
        ("r3", base + timedelta(minutes=3), ARN),
        ("r1", base + timedelta(minutes=1), other),
        ("r5", base + timedelta(minutes=5), other),
        ("r2", base + timedelta(minutes=2), ARN),
        ("r4", base + timedelta(minutes=4), ARN),
    ]
    for request_id, when, arn in written:
        recorder.handler(record_for(request_id, when, arn), None)
    core.put_item(Item={"pk": "users#1", "sk": "profile", "version": 1})  # not a failure

    for page_size in (None, 2):
        listed = list_failures(core, page_size=page_size)
        assert [f.request_id for f in listed] == ["r1", "r2", "r3", "r4", "r5"]
    by_id = {f.request_id: f for f in listed}
    assert by_id["r1"].function_name == "dynamodb-logs-test-mail"
    assert by_id["r2"].function_name == "dynamodb-logs-test-users"
    assert by_id["r2"].invoke_count == 3 and by_id["r2"].status == "failed"
    assert by_id["r2"].request_payload["detail"] == users_event()["detail"]
    assert by_id["r2"].to_json()["record"]["requestContext"]["requestId"] == "r2"


@contextlib.asynccontextmanager
async def local_lambda(records: Path) -> AsyncIterator[tuple[Any, FunctionRuntime]]:
    """The Lambda Invoke API of `bridge offline` (its own server and runtime), serving
    ``dynamodb-logs-test-users``: a handler that writes each event it gets to ``records``."""
    users = FunctionSpec(
        name="users",
        handler="tests.handlers.runtime_record.handler",
        pattern=None,
        environment={"RECORDS_FILE": str(records)},
    )
    runtime = FunctionRuntime([users], project_root=ROOT, environment={}, stage="test")
    await runtime.start()
    server = await EventsServer(
        Bus(rules=[], deliver=runtime.invoke_async), runtime, port=0
    ).start()
    try:
        yield session().client("lambda", endpoint_url=server.url), runtime
    finally:
        await server.stop()
        await runtime.stop()


def received(records: Path) -> list[dict[str, Any]]:
    """The events the local function got, in order."""
    lines = records.read_text().splitlines() if records.exists() else []
    return [json.loads(line)["event"] for line in lines]


async def test_a_real_failure_is_recorded_listed_and_retried(
    core: Any, endpoint: str, tmp_path: Path
) -> None:
    # A real handler error: an event whose earlier versions the log does not hold.
    event = users_event(id="u9", version=3)
    with pytest.raises(users_projection.MissingVersionsError) as caught:
        users_projection.handler(event, None)
    record = record_of_error(event, caught.value)
    assert recorder.handler(json.loads(json.dumps(record)), None)["stored"] is True

    [failure] = list_failures(core)
    assert failure.error_type == "MissingVersionsError"
    assert "lacks version(s) [1, 2]" in failure.error_message
    assert failure.request_payload == event

    records = tmp_path / "records"
    async with local_lambda(records) as (lambda_client, runtime):
        result = await asyncio.to_thread(  # a unique prefix of the request id is enough
            retry_failure, core, lambda_client, failure.request_id[:8]
        )
        await runtime.drain()

    [body] = received(records)
    assert body == event  # the original event, unchanged, run asynchronously (202)
    assert result["requestId"] == failure.request_id and result["statusCode"] == 202
    assert result["status"] == "retried" and result["retries"] == 1
    [after] = list_failures(core)
    assert after.status == "retried" and after.retried_at == result["retriedAt"]
    assert re.fullmatch(AWS_TIMESTAMP, after.retried_at or "")
    # Once the log holds the missing versions, the retried event goes through.
    logs = (
        session()
        .resource("dynamodb", endpoint_url=endpoint)
        .Table(os.environ["DYNAMODB_LOGS_TABLE"])
    )
    store = LogStore(logs)
    store.append("users", "u9", "signup", {"id": "u9", "name": "Ann", "email": "a@example.com"})
    store.append("users", "u9", "addPhoneNumber", {"id": "u9", "phoneNumber": "+1 555"})
    retried = users_projection.handler(body, None)
    assert retried == {"status": "applied", "id": "u9", "version": 3, "applied": [1, 2, 3]}


async def test_retry_errors_are_one_clear_line_and_change_nothing(
    core: Any, tmp_path: Path
) -> None:
    base = datetime(2024, 7, 1, tzinfo=UTC)
    gone = "arn:aws:lambda:us-east-1:123456789012:function:dynamodb-logs-test-gone"
    recorder.handler(record_for("abc-1", base, gone), None)
    recorder.handler(record_for("abc-2", base + timedelta(seconds=1)), None)

    records = tmp_path / "records"
    async with local_lambda(records) as (lambda_client, runtime):

        def retry(request_id: str) -> dict[str, Any]:
            return retry_failure(core, lambda_client, request_id)

        with pytest.raises(BridgeError) as unknown:
            await asyncio.to_thread(retry, "no-such-request")
        with pytest.raises(BridgeError, match="ambiguous"):
            await asyncio.to_thread(retry, "abc")
        with pytest.raises(BridgeError, match="ResourceNotFoundException") as refused:
            await asyncio.to_thread(retry, "abc-1")  # its function does not exist
        assert (await asyncio.to_thread(retry, "abc-2"))["retries"] == 1
        assert (await asyncio.to_thread(retry, "abc-2"))["retries"] == 2
        await runtime.drain()

    # Only abc-2's two retries ran anything; the refused and unknown ones none.
    assert [event["detail"] for event in received(records)] == [users_event()["detail"]] * 2
    for error in (unknown.value, refused.value):
        assert "\n" not in str(error)
    assert "no-such-request" in str(unknown.value)
    assert get_failure(core, "abc-1").status == "failed"  # not marked after a refusal
    assert get_failure(core, "abc-2").status == "retried"
    assert get_failure(core, "abc-2").retries == 2


async def test_the_local_runtime_sends_exhausted_retries_to_the_recorder(core: Any) -> None:
    """The whole path offline: the users handler fails, is retried, then recorded."""
    from pathlib import Path

    from bridge.core.subscriptions import FunctionSpec
    from bridge.offline.runtime import FunctionRuntime

    users = FunctionSpec(
        name="users",
        handler="bridge.lambdas.users_projection.handler",
        pattern=None,
        retry_attempts=1,
        retry_delay_ms=20,
        on_failure="failures",
    )
    failures = FunctionSpec(
        name="failures", handler="bridge.lambdas.failures.handler", pattern=None
    )
    runtime = FunctionRuntime(
        [users, failures],
        project_root=Path(__file__).resolve().parent.parent,
        environment={},  # the tables and endpoint come from this test's environment
        stage="test",
        max_concurrency=1,
    )
    event = users_event(id="offline", version=2)
    await runtime.start()
    try:
        runtime.invoke_async("users", event)
        await runtime.drain()
    finally:
        await runtime.stop()

    [failure] = list_failures(core)
    assert failure.function_name == "dynamodb-logs-test-users"
    assert failure.condition == "RetriesExhausted" and failure.invoke_count == 2
    assert failure.error_type == "MissingVersionsError"
    assert failure.request_payload == event
    assert len(assert_same_shape(failure.record, SEED_RECORD)) == 33
    assert re.fullmatch(AWS_TIMESTAMP, failure.record["timestamp"])
