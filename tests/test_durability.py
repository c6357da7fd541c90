"""What the embedded DynamoDB acknowledged survives kill -9; its stream behaves as DynamoDB's.

Real processes throughout: the endpoint alone (``python -m bridge.offline.dynamodb``),
`bridge offline`, `bridge generate` and `bridge append`, killed with SIGKILL at moments
chosen at random (the seed is printed, so a failure can be replayed). Waits are on
events: a process's ready line or exit, a count reaching a value.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from offline_process import BRIDGE, OfflineProcess, embedded_dynamodb_pid

from bridge.archive import count, iter_events
from bridge.core.dynamo_json import load_item
from bridge.fake import fake_users
from bridge.offline import state
from bridge.offline.dynamodb import DynamoDBProcess
from bridge.offline.journal import segments
from bridge.store import LogStore, create_tables

LOG_TABLE, CORE_TABLE = "local-dynamodb-logs", "local-core"
# No subscriber runs (its pattern matches nothing): these tests are about the table,
# the stream and the archive, and handler invocations would only slow them down.
NOOP_CONFIG = """
[functions.noop]
handler = "noop.handler"
pattern = { source = ["nothing-sends-this"] }
"""


def client(url: str, service: str = "dynamodb") -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=30),
    )


def resource(url: str) -> Any:
    return boto3.resource(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def wait_until(check: Callable[[], Any], timeout: float = 60.0, every: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {check}")
        time.sleep(every)
    return value


def scan(url: str, table: str) -> dict[tuple[str, Any], dict[str, Any]]:
    """Every item of a table, as plain values, by (pk, sk)."""
    items = {}
    paginator = client(url).get_paginator("scan")
    for page in paginator.paginate(TableName=table, ConsistentRead=True):
        for raw in page["Items"]:
            item = load_item(raw)
            items[(item["pk"], plain(item["sk"]))] = item
    return items


def plain(value: Any) -> Any:
    """Decimal-free JSON values, so an item's payload compares with an event's."""
    return json.loads(json.dumps(value, default=lambda d: float(d) if d % 1 else int(d)))


def stream_records(url: str, table: str) -> list[dict[str, Any]]:
    """Every record the table's stream holds now, from its trim horizon."""
    dynamodb, streams = client(url), client(url, "dynamodbstreams")
    arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = []
    while True:
        page = streams.get_records(ShardIterator=iterator, Limit=1000)
        records += page["Records"]
        if not page["Records"]:
            return records
        iterator = page["NextShardIterator"]


def endpoint(db: Path, **options: Any) -> DynamoDBProcess:
    return DynamoDBProcess(port=0, db=db, **options).start()


def kill(process: DynamoDBProcess) -> None:
    assert process._process is not None
    process._process.kill()
    process._process.wait()


def item(pk: str, n: int) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": str(n)}, "type": {"S": "t"}, "log": {"S": "x"}}


# --------------------------------------------------------------------------- the endpoint


def test_every_acknowledged_write_survives_kill_9_of_the_endpoint(tmp_path: Path) -> None:
    """Each kind of write, then SIGKILL: the restarted endpoint holds exactly what was
    acknowledged, its stream included — and a transaction that was cancelled left
    nothing, although moto applied part of it before rolling back."""
    first = endpoint(tmp_path / "db")
    create_tables(resource(first.url), LOG_TABLE, CORE_TABLE)
    c = client(first.url)
    for n in range(1, 6):
        c.put_item(TableName=LOG_TABLE, Item=item("a#1#stream", n))
    c.update_item(
        TableName=CORE_TABLE,
        Key={"pk": {"S": "u"}, "sk": {"S": "u"}},
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "7"}},
    )
    c.put_item(TableName=CORE_TABLE, Item={"pk": {"S": "gone"}, "sk": {"S": "x"}})
    c.delete_item(TableName=CORE_TABLE, Key={"pk": {"S": "gone"}, "sk": {"S": "x"}})
    c.batch_write_item(
        RequestItems={LOG_TABLE: [{"PutRequest": {"Item": item("b#1#stream", n)}} for n in (1, 2)]}
    )
    c.put_item(TableName=CORE_TABLE, Item={"pk": {"S": "bin"}, "sk": {"S": "x"}, "b": {"B": b"\0"}})
    c.transact_write_items(TransactItems=[{"Put": {"TableName": LOG_TABLE, "Item": item("t", 1)}}])
    with pytest.raises(c.exceptions.TransactionCanceledException):
        c.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": LOG_TABLE, "Item": item("cancelled", 1)}},
                {
                    "Put": {
                        "TableName": LOG_TABLE,
                        "Item": item("t", 1),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
    c.create_table(
        TableName="other",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    c.update_time_to_live(
        TableName="other", TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
    )
    c.put_item(TableName="other", Item={"id": {"S": "1"}})
    before = {name: scan_raw(first.url, name) for name in (LOG_TABLE, CORE_TABLE, "other")}
    records = stream_records(first.url, LOG_TABLE)
    arn = c.describe_table(TableName=LOG_TABLE)["Table"]["LatestStreamArn"]
    assert len(records) == 8  # 5 + 2 + the transaction's one; nothing of the cancelled one
    kill(first)

    second = endpoint(tmp_path / "db")
    try:
        assert second.restored == {LOG_TABLE: 8, CORE_TABLE: 2, "other": 1}
        assert second.replayed > 0  # from the journal: nothing was folded before the kill
        after = {name: scan_raw(second.url, name) for name in before}
        assert after == before
        c = client(second.url)
        assert c.describe_table(TableName=LOG_TABLE)["Table"]["LatestStreamArn"] == arn
        assert stream_records(second.url, LOG_TABLE) == records  # same numbers, same ids
        ttl = c.describe_time_to_live(TableName="other")["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
        c.delete_table(TableName="other")
        assert second.fold()[LOG_TABLE] == 8  # folded: the snapshot alone holds it now
    finally:
        kill(second)
    third = endpoint(tmp_path / "db")
    try:
        assert third.replayed == 0
        assert third.restored == {LOG_TABLE: 8, CORE_TABLE: 2}
        assert stream_records(third.url, LOG_TABLE) == records
    finally:
        third.stop()


def scan_raw(url: str, table: str) -> list[dict[str, Any]]:
    items = []
    for page in client(url).get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items += page["Items"]
    return sorted(items, key=lambda i: json.dumps(i, sort_keys=True, default=str))


def test_after_a_restart_the_stream_resumes_after_the_pollers_checkpoint(tmp_path: Path) -> None:
    """Records the poller checkpointed are gone after a restart, the rest are there with
    their own numbers, whether they were still in the journal or already folded."""
    db = tmp_path / "db"
    first = endpoint(db)
    create_tables(resource(first.url), LOG_TABLE, CORE_TABLE)
    store = LogStore(resource(first.url).Table(LOG_TABLE))
    for n in range(10):
        store.append("orders", "o", "placed", {"id": "o", "n": n}, expected_version=n)
    records = stream_records(first.url, LOG_TABLE)
    arn = client(first.url).describe_table(TableName=LOG_TABLE)["Table"]["LatestStreamArn"]
    first.fold()
    for n in range(10, 14):  # these stay in the journal
        store.append("orders", "o", "placed", {"id": "o", "n": n}, expected_version=n)
    records = stream_records(first.url, LOG_TABLE)
    checkpoints = state.Checkpoints(db)
    checkpoints.save(arn, "shardId-1", records[5]["dynamodb"]["SequenceNumber"])  # 6 published
    checkpoints.close()
    kill(first)

    second = endpoint(db)
    try:
        assert stream_records(second.url, LOG_TABLE) == records[6:]
        store = LogStore(resource(second.url).Table(LOG_TABLE))
        store.append("orders", "o", "placed", {"id": "o", "n": 14}, expected_version=14)
        newest = stream_records(second.url, LOG_TABLE)[-1]["dynamodb"]["SequenceNumber"]
        assert int(newest) == int(records[-1]["dynamodb"]["SequenceNumber"]) + 1
    finally:
        second.stop()


def test_the_journal_is_folded_while_writes_never_pause(tmp_path: Path) -> None:
    """An unbroken stream of writes from several clients: the endpoint folds sealed
    segments as it goes, so a restart replays at most a few segments, not everything."""
    db, segment = tmp_path / "db", 50
    first = endpoint(db, segment_entries=segment)
    create_tables(resource(first.url), LOG_TABLE, CORE_TABLE)

    def writer(t: int) -> None:
        c = client(first.url)
        for n in range(150):
            c.put_item(TableName=LOG_TABLE, Item=item(f"w{t}#{n}#stream", 1))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(list(tmp_path.glob("db.dynamodb.*[0-9]"))) < 600 / segment  # folded meanwhile
    kill(first)
    second = endpoint(db, segment_entries=segment)
    try:
        assert second.restored[LOG_TABLE] == 600
        assert second.replayed <= 4 * segment
    finally:
        second.stop()


def test_a_journal_line_torn_by_a_crash_costs_only_that_unacknowledged_write(tmp_path) -> None:
    db = tmp_path / "db"
    first = endpoint(db)
    create_tables(resource(first.url), LOG_TABLE, CORE_TABLE)
    c = client(first.url)
    for n in range(1, 4):
        c.put_item(TableName=LOG_TABLE, Item=item("a#1#stream", n))
    kill(first)
    ((_, path),) = segments(db)
    path.write_bytes(path.read_bytes()[:-7])  # as if the last write had been cut short
    second = endpoint(db)
    try:
        assert second.restored[LOG_TABLE] == 2
        c = client(second.url)
        c.put_item(TableName=LOG_TABLE, Item=item("a#1#stream", 3))  # written again, kept
    finally:
        kill(second)
    third = endpoint(db)
    try:
        assert third.restored[LOG_TABLE] == 3
    finally:
        third.stop()


# --------------------------------------------------------------------------- the stream


@pytest.fixture
def many_switches() -> Any:
    """Switch threads as often as possible, so races the write lock prevents would show."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_concurrent_writers_get_unique_sequence_numbers(moto_url, target, many_switches) -> None:
    """moto's shard takes len(records) + start, then appends: without the write lock,
    concurrent puts shared sequence numbers, and the poller published one twice."""

    def writer(t: int) -> None:
        c = target.session().client("dynamodb", endpoint_url=moto_url)
        for n in range(60):
            c.put_item(TableName=target.log_table, Item=item(f"c{t}#{n}#stream", 1))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = [r["dynamodb"]["SequenceNumber"] for r in stream_records(moto_url, target.log_table)]
    assert len(numbers) == 480
    assert len(set(numbers)) == 480


def test_a_write_that_changes_nothing_emits_no_stream_record(moto_url, target) -> None:
    c = target.session().client("dynamodb", endpoint_url=moto_url)
    table = target.log_table
    same = {**item("s#1#stream", 1), "payload": {"M": {"n": {"N": "1.0"}}}}
    c.put_item(TableName=table, Item=same)
    c.put_item(TableName=table, Item=same)  # identical
    c.put_item(TableName=table, Item={**same, "payload": {"M": {"n": {"N": "1"}}}})  # 1.0 == 1
    c.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": same}}]})
    c.update_item(
        TableName=table,
        Key={"pk": same["pk"], "sk": same["sk"]},
        UpdateExpression="SET #t = :t",
        ExpressionAttributeNames={"#t": "type"},
        ExpressionAttributeValues={":t": {"S": "t"}},  # the value it has
    )
    c.put_item(TableName=table, Item={**same, "type": {"S": "changed"}})
    events = [r["eventName"] for r in stream_records(moto_url, table)]
    assert events == ["INSERT", "MODIFY"]


# --------------------------------------------------------------------------- bridge offline


def project(tmp_path: Path) -> Path:
    (tmp_path / "dynamodb-logs.toml").write_text(NOOP_CONFIG)
    (tmp_path / "noop.py").write_text("def handler(event, context):\n    return None\n")
    return tmp_path


def archived_keys(db: Path) -> list[tuple[str, Any]]:
    return [(e["detail"]["key"]["pk"], e["detail"]["key"]["sk"]) for e in iter_events(db)]


def test_concurrent_appends_are_each_published_exactly_once(tmp_path: Path) -> None:
    offline = OfflineProcess(project(tmp_path)).start()
    try:

        def writer(t: int) -> None:
            store = LogStore(resource(offline.dynamodb_url).Table(LOG_TABLE))
            for n in range(50):
                store.append("orders", f"p{t}", "placed", {"id": f"p{t}", "n": n})

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        same = {**item("orders#same#stream", 1), "payload": {"M": {"id": {"S": "same"}}}}
        same["log"] = {"S": "orders"}
        for _ in range(2):  # the same item twice: one publication
            client(offline.dynamodb_url).put_item(TableName=LOG_TABLE, Item=same)
        wait_until(lambda: count(tmp_path / "db") == 301)
    finally:
        stopped = offline.stop()
    assert stopped["published"] == 301  # the poller handed over each record once
    keys = archived_keys(tmp_path / "db")
    assert len(keys) == len(set(keys)) == 301


def test_an_acknowledged_write_not_yet_published_is_published_at_the_next_start(tmp_path):
    """Writes the endpoint acknowledged while no poller ran (killed with it): the next
    `bridge offline` publishes exactly those, after the ones already published."""
    project(tmp_path)
    offline = OfflineProcess(tmp_path).start()
    store = LogStore(resource(offline.dynamodb_url).Table(LOG_TABLE))
    for n in range(5):
        store.append("orders", "u", "placed", {"id": "u", "n": n})
    wait_until(lambda: count(tmp_path / "db") == 5)
    offline.process.kill()  # a crash
    offline.process.wait()
    alone = DynamoDBProcess(port=0, db=tmp_path / "db").start()  # the same tables, no poller
    store = LogStore(resource(alone.url).Table(LOG_TABLE))
    for n in range(5, 10):
        store.append("orders", "u", "placed", {"id": "u", "n": n})
    kill(alone)  # acknowledged, never published
    assert count(tmp_path / "db") == 5
    with OfflineProcess(tmp_path, ports=offline.ports) as again:
        wait_until(lambda: count(tmp_path / "db") == 10)
        stopped = again.stop()
    assert 5 <= stopped["published"] <= 10  # a batch published before the crash may come again
    assert sorted(archived_keys(tmp_path / "db")) == [("orders#u#stream", v) for v in range(1, 11)]


# --------------------------------------------------------------------------- crash tests


class Pipeline:
    """One project directory and its `bridge offline`, killed and restarted, with
    everything the workloads were told succeeded."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = project(tmp_path)
        self.db = tmp_path / "db"
        self.offline = OfflineProcess(self.dir, "--autosave", "0.3").start()
        self.ports = self.offline.ports
        self.acknowledged: dict[tuple[str, Any], Any] = {}  # (pk, sk) → payload

    @property
    def url(self) -> str:
        return self.offline.dynamodb_url

    def kill(self, victim: str) -> None:
        process = self.offline.process
        assert process is not None and process.poll() is None, "offline ended before the kill"
        if victim == "offline":
            process.kill()
            process.wait()
        else:
            os.kill(embedded_dynamodb_pid(self.ports["dynamodb"]), signal.SIGKILL)
            process.wait(timeout=60)  # it notices, and ends by itself
            assert process.returncode == 1
        process.stdout.close()

    def restart(self) -> None:
        self.offline = OfflineProcess(self.dir, "--autosave", "0.3", ports=self.ports).start()

    def check(self) -> dict[tuple[str, Any], dict[str, Any]]:
        """What must hold after any restart; returns the log table's items."""
        items = scan(self.url, LOG_TABLE)
        for key, payload in self.acknowledged.items():
            assert key in items, f"acknowledged {key} is missing"
            assert plain(items[key]["payload"]) == payload, key
        self.check_archive(items)
        return items

    def check_archive(self, items: dict[tuple[str, Any], dict[str, Any]]) -> None:
        events = list(iter_events(self.db))
        keys = [(e["detail"]["key"]["pk"], e["detail"]["key"]["sk"]) for e in events]
        assert len(keys) == len(set(keys)), "a log event was archived twice"
        for event, key in zip(events, keys, strict=True):
            assert key in items, f"{key} was archived but its item is missing"
            assert plain(items[key]["payload"]) == event["detail"]["payload"], key

    def generate(self, seed: int) -> subprocess.Popen:
        return subprocess.Popen(
            [
                str(BRIDGE),
                "generate",
                "--users",
                "300",
                "--seed",
                str(seed),
                "--json",
                "--endpoint-url",
                self.url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.offline.env,
        )

    def complete(self, seed: int) -> None:
        """`bridge generate` again with the same seed: it finishes the set, once each."""
        run = self.generate(seed)
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        expected = generated(seed)
        self.acknowledged.update(expected)
        items = scan(self.url, LOG_TABLE)
        ours = {key for key in items if key[0] in {pk for pk, _ in expected}}
        assert ours == set(expected)  # every user's versions 1-4, and nothing more

    def stop(self) -> dict[str, Any]:
        """A clean stop publishes the rest: then every item has its one event archived."""
        items = self.check()
        stopped = self.offline.stop()
        assert set(archived_keys(self.db)) == set(items)
        self.check_archive(items)
        return stopped

    def close(self) -> None:
        self.offline.__exit__()


def generated(seed: int) -> dict[tuple[str, Any], Any]:
    return {
        (f"users#{e.id}#stream", e.version): plain(e.payload)
        for events in fake_users(300, seed)
        for e in events
    }


@pytest.mark.parametrize(
    "crashes", [1, pytest.param(5, marks=pytest.mark.slow)], ids=["once", "five-times"]
)
@pytest.mark.parametrize("victim", ["offline", "dynamodb"])
def test_kill_9_during_generate(tmp_path: Path, victim: str, crashes: int) -> None:
    seed = random.randrange(2**32)
    print(f"random seed {seed}")  # shown with a failure: rerun with it to replay the moments
    rng = random.Random(seed)
    pipeline = Pipeline(tmp_path)
    try:
        for crash in range(crashes):
            users_seed = 1000 + crash
            archived = count(pipeline.db)
            threshold = archived + rng.randrange(0, 1100)
            run = pipeline.generate(users_seed)
            wait_until(lambda: count(pipeline.db) >= threshold or run.poll() is not None)  # noqa: B023
            pipeline.kill(victim)
            _, err = run.communicate(timeout=120)
            if run.returncode == 0:  # it had finished: all of it was acknowledged
                pipeline.acknowledged.update(generated(users_seed))
            pipeline.restart()
            pipeline.check()
            pipeline.complete(users_seed)
        pipeline.stop()
    finally:
        pipeline.close()


def down(stderr: str) -> bool:
    """An error of a call to an endpoint that was killed, or stopping, meanwhile."""
    return any(reason in stderr for reason in ("cannot reach", "stopping", "Connection", "closed"))


class Appender:
    """Single `bridge append` processes, one after another, on a few streams at once;
    notes each success, and retries what failed (the endpoint was down)."""

    def __init__(self, pipeline: Pipeline, prefix: str, streams: int = 3) -> None:
        self.pipeline = pipeline
        self.prefix = prefix
        self.successes = 0
        self.done = threading.Condition()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(streams)
        ]
        self.errors: list[str] = []

    def __enter__(self) -> Appender:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=120)
        assert not self.errors, self.errors

    def _run(self, n: int) -> None:
        id, version, attempt = f"{self.prefix}-{n}", 1, 0
        while not self.stopping.is_set():
            attempt += 1
            payload = {"id": id, "n": version, "attempt": attempt}
            result = subprocess.run(
                [
                    str(BRIDGE),
                    "append",
                    "orders",
                    id,
                    "placed",
                    "--payload",
                    json.dumps(payload),
                    "--expected-version",
                    str(version - 1),
                    "--endpoint-url",
                    self.pipeline.url,
                ],
                capture_output=True,
                text=True,
                env=self.pipeline.offline.env,
                timeout=120,
            )
            if result.returncode == 0:
                with self.done:
                    self.pipeline.acknowledged[(f"orders#{id}#stream", version)] = payload
                    self.successes += 1
                    self.done.notify_all()
                version += 1
            elif result.returncode == 3:  # an attempt whose answer was lost had landed
                version += 1
            elif not self.stopping.is_set() and not down(result.stderr):
                self.errors.append(result.stderr)

    def wait_for(self, successes: int) -> None:
        with self.done:
            assert self.done.wait_for(lambda: self.successes >= successes, timeout=120)


@pytest.mark.parametrize(
    "crashes", [1, pytest.param(5, marks=pytest.mark.slow)], ids=["once", "five-times"]
)
@pytest.mark.parametrize("victim", ["offline", "dynamodb"])
def test_kill_9_during_single_appends(tmp_path: Path, victim: str, crashes: int) -> None:
    seed = random.randrange(2**32)
    print(f"random seed {seed}")
    rng = random.Random(seed)
    pipeline = Pipeline(tmp_path)
    try:
        for crash in range(crashes):
            with Appender(pipeline, f"c{crash}") as appender:
                appender.wait_for(rng.randint(1, 4))
                pipeline.kill(victim)
            pipeline.restart()
            pipeline.check()
            # The version an acknowledged append took cannot be taken again.
            (pk, version), _ = rng.choice(
                [
                    (k, v)
                    for k, v in pipeline.acknowledged.items()
                    if k[0].startswith(f"orders#c{crash}-")
                ]
            )
            id = pk.split("#")[1]
            again = subprocess.run(
                [
                    str(BRIDGE),
                    "append",
                    "orders",
                    id,
                    "placed",
                    "--payload",
                    json.dumps({"id": id, "n": "mallory"}),
                    "--expected-version",
                    str(version - 1),
                    "--endpoint-url",
                    pipeline.url,
                ],
                capture_output=True,
                text=True,
                env=pipeline.offline.env,
                timeout=120,
            )
            assert again.returncode == 3, again.stderr
        pipeline.complete(7)
        pipeline.stop()
    finally:
        pipeline.close()
