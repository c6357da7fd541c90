"""The publisher Lambda against a real moto server: stream records in, bus events out.

Log items are written with ``LogStore``, read back as real DynamoDB Streams
records, handed to the handler in Lambda's event shape, published to a moto
event bus and received from an SQS queue a rule targets. PutEvents failures come
from a small server of our own that speaks EventBridge's JSON protocol, because
moto never rejects a single entry.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from lambda_events import (
    RecordingHandler,
    aws_environment,
    http_server,
    read_stream,
    session,
    stream_event,
    unique,
)

from bridge.core.events import MAX_DETAIL_BYTES, compact_json
from bridge.fake import fake_users
from bridge.lambdas import publisher
from bridge.store import LogStore, create_tables

SEED_PATTERN = {"source": ["dynamodb-log"], "detail-type": ["stream changes"]}
ENVELOPE_KEYS = {
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
}


@pytest.fixture
def log(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fresh log table with its stream, and the function's environment pointing at moto."""
    aws_environment(monkeypatch, endpoint)
    logs, core = unique("pub") + "-dynamodb-logs", unique("pub") + "-core"
    dynamodb = session().resource("dynamodb", endpoint_url=endpoint)
    create_tables(dynamodb, logs, core)
    return {"name": logs, "table": dynamodb.Table(logs), "store": LogStore(dynamodb.Table(logs))}


def expected_detail(pk: str, sk: int, type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"log": "users", "key": {"pk": pk, "sk": sk}, "type": type, "payload": payload}


def subscribe_queue(endpoint: str, bus: str) -> str:
    """A moto bus with the seed's rule delivering to a new SQS queue; the queue URL."""
    events = session().client("events", endpoint_url=endpoint)
    sqs = session().client("sqs", endpoint_url=endpoint)
    events.create_event_bus(Name=bus)
    queue = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="users", EventBusName=bus, EventPattern=json.dumps(SEED_PATTERN))
    # moto 5.2 drops ``account`` from what it hands an SQS target (AWS keeps it), so
    # the target spells out AWS's whole event, every field taken from moto's event.
    paths = {name: f"$.{name}" for name in ENVELOPE_KEYS if name != "version"}
    template = (
        '{"version": "0", "id": "<id>", "detail-type": "<detail-type>", "source": "<source>", '
        '"account": "<account>", "time": <time>, "region": "<region>", '
        '"resources": <resources>, "detail": <detail>}'
    )
    target = {
        "Id": "q",
        "Arn": queue_arn,
        "InputTransformer": {"InputPathsMap": paths, "InputTemplate": template},
    }
    events.put_targets(Rule="users", EventBusName=bus, Targets=[target])
    return queue


def drain(endpoint: str, queue: str) -> list[dict[str, Any]]:
    sqs = session().client("sqs", endpoint_url=endpoint)
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(json.loads(m["Body"]) for m in messages)


def test_new_log_items_arrive_on_the_bus_in_the_seed_shape_and_in_order(
    endpoint: str, log: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = unique("bus")
    monkeypatch.setenv("EVENT_BUS_NAME", bus)
    queue = subscribe_queue(endpoint, bus)
    store, table = log["store"], log["table"]
    expected: list[dict[str, Any]] = []

    users = list(fake_users(3, seed=11))
    for version in range(4):  # interleave the users, so keys interleave in the stream
        for events in users:
            e = events[version]
            store.append(e.log, e.id, e.type, e.payload, expected_version=e.version - 1)
            expected.append(expected_detail(f"users#{e.id}#stream", e.version, e.type, e.payload))
        if version == 0:
            # Not a log item: in the stream, never on the bus (INSERT, then REMOVE).
            table.put_item(Item={"pk": "settings", "sk": 1, "type": "x", "log": "users"})
    # A detail over 10 KB goes out partial, with only the id.
    big = {"id": "big", "name": "n", "bio": "x" * 11_000}
    assert len(compact_json(expected_detail("users#big#stream", 1, "signup", big))) > 10_240
    store.append("users", "big", "signup", big)
    expected.append(
        {**expected_detail("users#big#stream", 1, "signup", {"id": "big"}), "partial": True}
    )
    # A rewritten log item (MODIFY) is published with its new image.
    first = users[1][0]
    rewritten = {**first.payload, "name": "renamed"}
    table.put_item(
        Item={
            "pk": f"users#{first.id}#stream",
            "sk": 1,
            "type": "signup",
            "log": "users",
            "payload": rewritten,
        }
    )
    expected.append(expected_detail(f"users#{first.id}#stream", 1, "signup", rewritten))
    # Deletions (REMOVE) are not events of the log.
    table.delete_item(Key={"pk": "settings", "sk": 1})
    table.delete_item(Key={"pk": "users#big#stream", "sk": 1})

    arn, records = read_stream(endpoint, log["name"])
    names = [r["eventName"] for r in records]
    assert names.count("REMOVE") == 2 and names.count("MODIFY") == 1
    assert len(records) == len(expected) + 3  # settings INSERT + two REMOVEs are skipped

    result = publisher.handler(stream_event(records, arn), None)

    assert result == {"batchItemFailures": []}
    bodies = drain(endpoint, queue)
    assert [b["detail"] for b in bodies] == expected  # same events, same (stream) order
    for body in bodies:
        assert set(body) == ENVELOPE_KEYS
        assert body["source"] == "dynamodb-log"
        assert body["detail-type"] == "stream changes"
        assert body["version"] == "0"
        assert str(uuid.UUID(body["id"])) == body["id"]
        assert re.fullmatch(r"\d{12}", body["account"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["time"])
        assert body["region"] == "us-east-1"
        assert body["resources"] == []
        detail = body["detail"]
        assert len(compact_json(detail).encode()) <= MAX_DETAIL_BYTES
        assert isinstance(detail["key"]["sk"], int)
        assert detail["payload"]["id"] == detail["key"]["pk"].split("#")[1]
    assert len({b["id"] for b in bodies}) == len(bodies)
    for events in users:  # per key, versions arrive 1, 2, 3, 4
        pk = f"users#{events[0].id}#stream"
        versions = [b["detail"]["key"]["sk"] for b in bodies if b["detail"]["key"]["pk"] == pk]
        assert versions[:4] == [1, 2, 3, 4]


class FlakyEventBridge(RecordingHandler):
    """EventBridge's PutEvents (JSON 1.1) that rejects chosen entries a chosen number of times.

    ``server.failures`` maps a log key ``(pk, sk)`` to how many more times its
    entry is refused; ``server.accepted`` lists the keys accepted, in order.
    """

    def respond(self, path: str, headers: dict[str, str], body: bytes):  # type: ignore[override]
        assert headers["x-amz-target"] == "AWSEvents.PutEvents"
        results = []
        with self.server.lock:  # type: ignore[attr-defined]
            for entry in json.loads(body)["Entries"]:
                detail = json.loads(entry["Detail"])
                key = (detail["key"]["pk"], detail["key"]["sk"])
                left = self.server.failures.get(key, 0)  # type: ignore[attr-defined]
                if left:
                    self.server.failures[key] = left - 1  # type: ignore[attr-defined]
                    results.append({"ErrorCode": "InternalFailure", "ErrorMessage": "try again"})
                else:
                    self.server.accepted.append(key)  # type: ignore[attr-defined]
                    results.append({"EventId": str(uuid.uuid4())})
            self.server.times.append(time.monotonic())  # type: ignore[attr-defined]
        failed = sum("ErrorCode" in r for r in results)
        reply = json.dumps({"FailedEntryCount": failed, "Entries": results}).encode()
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, reply


def entry_keys(request: tuple[str, dict[str, str], bytes]) -> list[tuple[str, int]]:
    details = [json.loads(e["Detail"]) for e in json.loads(request[2])["Entries"]]
    return [(d["key"]["pk"], d["key"]["sk"]) for d in details]


def record_key(record: dict[str, Any]) -> tuple[str, int]:
    keys = record["dynamodb"]["Keys"]
    return keys["pk"]["S"], int(keys["sk"]["N"])


@pytest.fixture
def twelve_records(endpoint: str, log: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """3 users × 4 versions, with a non-log item written first (so positions shift)."""
    log["table"].put_item(Item={"pk": "settings", "sk": 1, "type": "x", "log": "users"})
    for events in fake_users(3, seed=5):
        for e in events:
            log["store"].append(e.log, e.id, e.type, e.payload)
    arn, records = read_stream(endpoint, log["name"])
    assert len(records) == 13
    return arn, records


def test_rejected_entries_alone_are_retried_with_backoff(
    twelve_records: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, records = twelve_records
    keys = [record_key(r) for r in records[1:]]  # records[0] is the non-log item
    flaky = keys[3]
    with http_server(FlakyEventBridge, failures={flaky: 2}, accepted=[], times=[]) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", fake.url)
        monkeypatch.setenv("PUBLISH_MAX_ATTEMPTS", "4")
        monkeypatch.setenv("PUBLISH_RETRY_BASE_DELAY", "0.05")
        result = publisher.handler(stream_event(records, arn), None)

    assert result == {"batchItemFailures": []}
    sent = [entry_keys(r) for r in fake.requests]
    # 10 entries, then only the refused one twice, then the last 2 entries.
    assert sent == [keys[:10], [flaky], [flaky], keys[10:]]
    assert sorted(fake.accepted) == sorted(keys)  # each entry accepted exactly once
    gaps = [b - a for a, b in zip(fake.times, fake.times[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # exponential backoff between re-sends


def test_entries_that_keep_failing_report_the_earliest_record_to_lambda(
    twelve_records: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, records = twelve_records
    keys = [record_key(r) for r in records[1:]]
    failures = {keys[7]: math.inf, keys[4]: math.inf, keys[11]: math.inf}
    with http_server(FlakyEventBridge, failures=failures, accepted=[], times=[]) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", fake.url)
        monkeypatch.setenv("PUBLISH_MAX_ATTEMPTS", "3")
        monkeypatch.setenv("PUBLISH_RETRY_BASE_DELAY", "0.01")
        result = publisher.handler(stream_event(records, arn), None)
        sent = [entry_keys(r) for r in fake.requests]
        # The earliest failure is entry 4, which is stream record 5 (record 0 is skipped).
        earliest = records[5]["dynamodb"]["SequenceNumber"]
        assert result == {"batchItemFailures": [{"itemIdentifier": earliest}]}
        # Three attempts for the first batch, re-sending only the refused entries in
        # stream order; the second batch is left to Lambda's retry of the shard.
        assert sent == [keys[:10], [keys[4], keys[7]], [keys[4], keys[7]]]

        # Lambda re-delivers from the reported record on: once EventBridge accepts,
        # every log item has been published at least once.
        fake.failures.clear()
        again = [r for r in records if int(r["dynamodb"]["SequenceNumber"]) >= int(earliest)]
        assert publisher.handler(stream_event(again, arn), None) == {"batchItemFailures": []}
    assert set(fake.accepted) == set(keys)


def test_removals_and_other_items_publish_nothing(
    endpoint: str, log: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = log["table"]
    log["store"].append("users", "7", "signup", {"id": "7", "name": "a"})
    table.put_item(Item={"pk": "users#7#snapshot", "sk": 1, "type": "t", "log": "users"})
    table.delete_item(Key={"pk": "users#7#stream", "sk": 1})
    arn, records = read_stream(endpoint, log["name"])
    assert [r["eventName"] for r in records] == ["INSERT", "INSERT", "REMOVE"]
    with http_server(FlakyEventBridge, failures={}, accepted=[], times=[]) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", fake.url)
        assert publisher.handler(stream_event(records[1:], arn), None) == {"batchItemFailures": []}
        assert fake.requests == []  # nothing to publish, no call made
        assert publisher.handler(stream_event(records, arn), None) == {"batchItemFailures": []}
    assert fake.accepted == [("users#7#stream", 1)]


class DeniedAfterFirstCall(RecordingHandler):
    """EventBridge that accepts the first PutEvents call and then denies access."""

    def respond(self, path: str, headers: dict[str, str], body: bytes):  # type: ignore[override]
        if len(self.server.requests) > 1:  # type: ignore[attr-defined]
            return (
                400,
                {"Content-Type": "application/x-amz-json-1.1"},
                json.dumps({"__type": "AccessDeniedException", "message": "not allowed"}).encode(),
            )
        entries = json.loads(body)["Entries"]
        reply = {
            "FailedEntryCount": 0,
            "Entries": [{"EventId": str(uuid.uuid4())} for _ in entries],
        }
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(reply).encode()


def test_a_later_call_failing_reports_its_first_record_not_the_published_ones(
    twelve_records: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, records = twelve_records
    with http_server(DeniedAfterFirstCall) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", fake.url)
        result = publisher.handler(stream_event(records, arn), None)
    # the first call published log records 1..10 (stream records 1..10); the second
    # call, for stream records 11 and 12, failed: the retry starts at record 11.
    assert result == {
        "batchItemFailures": [{"itemIdentifier": records[11]["dynamodb"]["SequenceNumber"]}]
    }


def test_items_no_event_can_be_built_from_are_skipped_not_blocking(
    endpoint: str, log: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = log["table"]
    # Written around the store: a binary attribute (JSON has no bytes: sent as base64),
    # a type far too long for any event, and a version that is not a whole number.
    table.put_item(
        Item={
            "pk": "users#b#stream",
            "sk": 1,
            "type": "signup",
            "log": "users",
            "payload": {"id": "b", "avatar": b"\x00\x01\x02"},
        }
    )
    table.put_item(
        Item={
            "pk": "users#t#stream",
            "sk": 1,
            "type": "x" * 300_000,
            "log": "users",
            "payload": {"id": "t"},
        }
    )
    table.put_item(
        Item={
            "pk": "users#f#stream",
            "sk": Decimal("1.5"),
            "type": "t",
            "log": "users",
            "payload": {"id": "f"},
        }
    )
    log["store"].append("users", "ok", "signup", {"id": "ok"})
    arn, records = read_stream(endpoint, log["name"])
    with http_server(FlakyEventBridge, failures={}, accepted=[], times=[]) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", fake.url)
        assert publisher.handler(stream_event(records, arn), None) == {"batchItemFailures": []}
    assert fake.accepted == [("users#b#stream", 1), ("users#ok#stream", 1)]
    (binary,) = [
        json.loads(e["Detail"])
        for r in fake.requests
        for e in json.loads(r[2])["Entries"]
        if json.loads(e["Detail"])["key"]["pk"] == "users#b#stream"
    ]
    assert binary["payload"]["avatar"] == "AAEC"
