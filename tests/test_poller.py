"""The stream poller against a real moto server: Lambda batches, retries, checkpoints."""

from __future__ import annotations

import asyncio

import pytest

from bridge.core.batch import Verdict
from bridge.offline.poller import StreamPoller, verdict
from bridge.offline.runtime import InvocationResult
from bridge.offline.state import Checkpoints


class Recorder:
    """The function the poller invokes: records each batch, fails when told to."""

    def __init__(self) -> None:
        self.batches: list[list[dict]] = []
        self.fail_at: set[str] = set()  # sk values whose record is reported failed once
        self.crash_once = False

    async def __call__(self, event: dict) -> InvocationResult:
        self.batches.append(event["Records"])
        if self.crash_once:
            self.crash_once = False
            error = {"errorType": "Exception", "errorMessage": "boom", "trace": []}
            return InvocationResult("r", None, error, 1.0)
        for record in event["Records"]:
            sk = record["dynamodb"]["Keys"]["sk"]["N"]
            if sk in self.fail_at:
                self.fail_at.discard(sk)
                failure = {"itemIdentifier": record["dynamodb"]["SequenceNumber"]}
                return InvocationResult("r", {"batchItemFailures": [failure]}, None, 1.0)
        return InvocationResult("r", {"batchItemFailures": []}, None, 1.0)

    def delivered(self) -> list[int]:
        """sk of every record in every batch, in delivery order."""
        return [int(r["dynamodb"]["Keys"]["sk"]["N"]) for b in self.batches for r in b]


def make_poller(target, invoke, db, **kwargs) -> StreamPoller:
    session = target.session()
    return StreamPoller(
        dynamodb=session.client("dynamodb", endpoint_url=target.dynamodb_endpoint),
        streams=session.client("dynamodbstreams", endpoint_url=target.dynamodb_endpoint),
        table_name=target.log_table,
        invoke=invoke,
        checkpoints=Checkpoints(db),
        **kwargs,
    )


async def test_batches_have_the_lambda_shape_and_at_most_25_records(target, store, tmp_path):
    for version in range(60):
        store.append("users", "1", "t", {"id": "1"}, expected_version=version)
    recorder = Recorder()
    poller = make_poller(target, recorder, tmp_path / "db")
    await poller.catch_up()
    assert recorder.delivered() == list(range(1, 61))
    assert max(len(b) for b in recorder.batches) == 25
    record = recorder.batches[0][0]
    assert record["eventName"] == "INSERT"
    assert record["eventSource"] == "aws:dynamodb"
    assert record["eventSourceARN"].startswith("arn:aws:dynamodb:")
    assert record["dynamodb"]["NewImage"]["pk"] == {"S": "users#1#stream"}
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
    assert {"SequenceNumber", "Keys", "StreamViewType"} <= set(record["dynamodb"])


async def test_partial_failure_retries_from_the_failed_record(target, store, tmp_path):
    for version in range(10):
        store.append("users", "2", "t", {"id": "2"}, expected_version=version)
    recorder = Recorder()
    recorder.fail_at = {"4"}
    poller = make_poller(target, recorder, tmp_path / "db", retry_delay=0.05)
    await poller.catch_up()
    # first batch 1..10 fails at 4 → 1..3 done; the retry starts at 4
    assert recorder.batches[0][0]["dynamodb"]["Keys"]["sk"]["N"] == "1"
    assert [int(r["dynamodb"]["Keys"]["sk"]["N"]) for r in recorder.batches[1]][0] == 4
    assert recorder.delivered()[-7:] == list(range(4, 11))
    assert poller.published == 10


async def test_a_failed_invocation_retries_the_same_batch(target, store, tmp_path):
    for version in range(3):
        store.append("users", "3", "t", {"id": "3"}, expected_version=version)
    recorder = Recorder()
    recorder.crash_once = True
    poller = make_poller(target, recorder, tmp_path / "db", retry_delay=0.05)
    await poller.catch_up()
    assert recorder.delivered() == [1, 2, 3, 1, 2, 3]


async def test_checkpoints_survive_a_new_poller(target, store, tmp_path):
    for version in range(5):
        store.append("users", "4", "t", {"id": "4"}, expected_version=version)
    first = Recorder()
    await make_poller(target, first, tmp_path / "db").catch_up()
    assert first.delivered() == [1, 2, 3, 4, 5]
    for version in range(5, 8):
        store.append("users", "4", "t", {"id": "4"}, expected_version=version)
    second = Recorder()
    await make_poller(target, second, tmp_path / "db").catch_up()
    assert second.delivered() == [6, 7, 8]  # nothing republished, nothing missed


async def test_run_picks_up_new_records_quickly_and_stops(target, store, tmp_path):
    recorder = Recorder()
    poller = make_poller(target, recorder, tmp_path / "db")
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.3)  # idle: the poller has backed off
    await asyncio.to_thread(store.append, "users", "5", "t", {"id": "5"})
    for _ in range(250):  # up to 5 s on a loaded machine
        if recorder.delivered():
            break
        await asyncio.sleep(0.02)
    poller.stop()
    await asyncio.wait_for(task, 5)
    assert recorder.delivered() == [1]


@pytest.fixture(autouse=True)
def _fast_region(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


class FlakyStreams:
    """The real Streams client, with GetRecords failing on chosen calls (AWS's fault)."""

    def __init__(self, client, fail_calls: set[int]) -> None:
        self.client = client
        self.fail_calls = fail_calls
        self.calls = 0
        self.exceptions = client.exceptions

    def get_records(self, **kwargs):
        self.calls += 1
        if self.calls in self.fail_calls:
            raise ConnectionError("stream endpoint went away")
        return self.client.get_records(**kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


async def test_records_read_before_a_failing_read_are_not_lost(target, store, tmp_path):
    store.append("users", "6", "t", {"id": "6"})
    recorder = Recorder()
    poller = make_poller(target, recorder, tmp_path / "db", batch_window=0.3)
    poller.streams = FlakyStreams(poller.streams, fail_calls={2})
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0.1)
    await asyncio.to_thread(store.append, "users", "6", "t", {"id": "6"})
    for _ in range(200):
        if len(recorder.delivered()) >= 2:
            break
        await asyncio.sleep(0.02)
    poller.stop()
    await task
    assert recorder.delivered() == [1, 2]


class AlwaysFails(Recorder):
    async def __call__(self, event: dict) -> InvocationResult:
        self.batches.append(event["Records"])
        if any(r["dynamodb"]["Keys"]["sk"]["N"] == "2" for r in event["Records"]):
            raise RuntimeError("publisher sandbox crashed")
        return InvocationResult("r", {"batchItemFailures": []}, None, 1.0)


async def test_a_batch_that_keeps_failing_is_set_aside_and_the_shard_moves_on(
    target, store, tmp_path
):
    import json
    import sqlite3

    store.append("users", "7", "t", {"id": "7"})
    store.append("users", "7", "t", {"id": "7"})
    failing = AlwaysFails()
    poller = make_poller(target, failing, tmp_path / "db", retry_delay=0.01, max_attempts=3)
    for _ in range(20):
        await poller.poll_once()
        await asyncio.sleep(0.02)
    assert len(failing.batches) == 3  # the attempt and retries, then it is set aside
    assert poller.failed == 2
    rows = (
        sqlite3.connect(tmp_path / "db")
        .execute("SELECT records, reason FROM stream_failures")
        .fetchall()
    )
    assert len(rows) == 1
    assert [r["dynamodb"]["Keys"]["sk"]["N"] for r in json.loads(rows[0][0])] == ["1", "2"]
    assert "publisher sandbox crashed" in rows[0][1]
    store.append("users", "7", "t", {"id": "7"})  # the shard is not blocked
    await poller.catch_up()
    assert failing.delivered()[-1] == 3


def test_a_function_error_retries_the_whole_batch_and_an_answer_is_read_by_core():
    records = [{"dynamodb": {"SequenceNumber": n}} for n in ("10", "20", "30")]
    error = {"errorType": "Exception", "errorMessage": "boom", "trace": []}
    assert verdict(InvocationResult("r", None, error, 1.0), records) == Verdict(0, str(error))
    answer = {"batchItemFailures": [{"itemIdentifier": "20"}]}
    assert verdict(InvocationResult("r", answer, None, 1.0), records).resume_at == 1
    assert verdict(InvocationResult("r", None, None, 1.0), records).done
    # An answer that is no batch response (the old reading took it for success).
    assert verdict(InvocationResult("r", "ok", None, 1.0), records).resume_at == 0
