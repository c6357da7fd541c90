"""The bridge end to end: two local clouds, `bridge connect` as a real process, real sockets.

One `bridge offline --stage dev` plays AWS (its own ports and folder); a second
`bridge offline` (stage local) is the developer's machine. The client runs as a user
runs it, `bridge connect --stage dev --url ws://…/dev`, signed with the key pair in its
environment (the standard credential chain: a non-local stage never falls back to the
local pair by itself), and its dynamodb and bus sinks write into the second cloud.

The "AWS" cloud has a definition of its own (``dynamodb-logs.toml`` in its folder): no
users projection (its handlers are not what these tests look at, and on a 2-core box
every invocation counts), one recorder subscriber on the ``replays`` log, there to show
that a replay meant for the bridge reaches no production handler.

Everything waits on something observable (a line the client printed, a row in a sink,
the session's item in the bridge table, the answer of `bridge sessions list`), polled
with generous deadlines, never on a sleep tuned to this machine. Sessions made on the
shared cloud are dropped after each test, so no test pays for another's buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import websockets
from boto3.dynamodb.conditions import Key
from bridge_process import ConnectProcess, json_lines, one_line, run_bridge
from offline_process import BRIDGE, LOCAL_ENV, OfflineProcess
from websockets.exceptions import ConnectionClosed

from bridge.core import wire
from bridge.core.log import from_dynamo, stream_key
from bridge.core.names import (
    LOCAL_ACCOUNT,
    archive_arn,
    bridge_rule_name,
    bridge_table_name,
    bus_arn,
    core_table_name,
    log_table_name,
    rule_arn,
)
from bridge.fake import fake_users
from bridge.lambdas._bridge_table import session_key

# Past pyproject's 300 s per test: the deadlines below fail first, saying where they got.
pytestmark = pytest.mark.timeout(900)

REGION = "us-east-1"
LOCAL_PRINCIPAL = f"arn:aws:iam::{LOCAL_ACCOUNT}:user/local"
MALLORY_ARN = f"arn:aws:iam::{LOCAL_ACCOUNT}:user/mallory"
# A second principal on the "AWS" cloud (--iam-key K2:S2:ARN), signing from the environment.
MALLORY_ENV = {"AWS_ACCESS_KEY_ID": "K2", "AWS_SECRET_ACCESS_KEY": "S2"}
# Deadlines: far beyond what any run needs, so only a real stall fails a test.
DELIVERY_TIMEOUT = 600.0
SOAK_TIMEOUT = 3000.0

# The "AWS" cloud's only subscriber: every event of the `replays` log it receives
# becomes one item of the core table, keyed by event id and replay name ("live" for a
# live event), so a replayed event reaching it could not hide.
RECORDER = """
import os

import boto3


def handler(event, context):
    boto3.client("dynamodb").put_item(
        TableName=os.environ["DYNAMODB_CORE_TABLE"],
        Item={
            "pk": {"S": "recorded#" + event["detail"]["log"]},
            "sk": {"S": event["id"] + "#" + event.get("replay-name", "live")},
        },
    )
"""
DEFINITION = """
[functions.recorder]
handler = "recorder.handler"
pattern = { source = ["dynamodb-log"], detail = { log = ["replays"] } }
permissions = ["core:write"]
"""


# --------------------------------------------------------------------------- helpers


def aws_client(service: str, url: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def eventually(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    show: Callable[[], Any] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` (and
    what ``show`` says of where it got to)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            got = f" (got {show()})" if show is not None else ""
            raise AssertionError(f"no {what} within {timeout:.0f} s{got}")
        time.sleep(0.2)
    return value


def generated(users: int, seed: int) -> dict[tuple[str, int], dict[str, Any]]:
    """What `bridge generate --users N --seed S` writes: (pk, sk) -> the event."""
    return {
        (stream_key(e.log, e.id), e.version): {"type": e.type, "payload": e.payload}
        for events in fake_users(users, seed)
        for e in events
    }


def key_of(event: dict[str, Any]) -> tuple[str, int]:
    key = event["detail"]["key"]
    return key["pk"], key["sk"]


def sink_events(path: Path) -> list[dict[str, Any]]:
    """Every event in a sqlite sink (or an archive): its ``events`` table, parsed."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        try:
            rows = conn.execute("SELECT event FROM events ORDER BY seq").fetchall()
        except sqlite3.OperationalError as error:  # created, schema not yet written
            if "no such table" in str(error):
                return []
            raise
    finally:
        conn.close()
    return [json.loads(row[0]) for row in rows]


def sink_count(path: Path) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def log_keys(events: list[dict[str, Any]]) -> Counter[tuple[str, int]]:
    """(pk, sk) of the log events among ``events``, with how often each occurs."""
    return Counter(key_of(e) for e in events if e.get("source") == "dynamodb-log")


def write_definition(cwd: Path, bridge_settings: str = "") -> None:
    (cwd / "recorder.py").write_text(RECORDER)
    (cwd / "dynamodb-logs.toml").write_text(DEFINITION + bridge_settings)


@dataclass
class Cloud:
    """One running `bridge offline`, and what the tests ask of it."""

    offline: OfflineProcess
    stage: str

    @property
    def url(self) -> str:
        return str(self.offline.started["bridge"])

    @property
    def cwd(self) -> Path:
        return self.offline.cwd

    def dynamodb(self) -> Any:
        return aws_client("dynamodb", self.offline.dynamodb_url)

    def events(self) -> Any:
        return aws_client("events", self.offline.events_url)

    def table(self, name: str) -> Any:
        resource = boto3.resource(
            "dynamodb",
            endpoint_url=self.offline.dynamodb_url,
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        return resource.Table(name)

    def generate_args(self, users: int, seed: int) -> list[str]:
        return [
            str(BRIDGE), "generate", "--stage", self.stage,
            "--endpoint-url", self.offline.dynamodb_url,
            "--users", str(users), "--seed", str(seed), "--json",
        ]  # fmt: skip

    def generate(self, users: int, seed: int) -> dict[tuple[str, int], dict[str, Any]]:
        """`bridge generate` into this cloud's log table, as a user runs it."""
        result = subprocess.run(
            self.generate_args(users, seed),
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **LOCAL_ENV},
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["events"] == users * 4, result.stdout
        return generated(users, seed)

    def start_generate(self, users: int, seed: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.generate_args(users, seed),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **LOCAL_ENV},
            stdin=subprocess.DEVNULL,
        )

    def session_item(self, name: str, owner: str = LOCAL_PRINCIPAL) -> dict[str, Any] | None:
        """The session's item in the bridge table, as the bridge Lambdas saved it."""
        answer = self.dynamodb().get_item(
            TableName=bridge_table_name(self.stage),
            Key={"pk": {"S": "sessions"}, "sk": {"S": f"{owner}#{name}"}},
            ConsistentRead=True,
        )
        return answer.get("Item")

    def allocated(self, name: str, owner: str = LOCAL_PRINCIPAL) -> int:
        """How many cursors the forwarder has allocated to the session (its counter):
        cheap to poll, where `bridge sessions list` starts a process each time."""
        answer = self.dynamodb().get_item(
            TableName=bridge_table_name(self.stage),
            Key={"pk": {"S": f"cursor#{session_key(owner, name)}"}, "sk": {"S": "counter"}},
            ConsistentRead=True,
        )
        return int(answer.get("Item", {}).get("next", {}).get("N", 0))

    def allocate_unwritten(self, name: str, owner: str = LOCAL_PRINCIPAL) -> int:
        """Allocate the session's next cursor as the forwarder does (an atomic add on
        its counter) and write nothing: a forwarder that died right after. The cursor."""
        answer = self.dynamodb().update_item(
            TableName=bridge_table_name(self.stage),
            Key={"pk": {"S": f"cursor#{session_key(owner, name)}"}, "sk": {"S": "counter"}},
            UpdateExpression="ADD #next :one, #bytes :zero",
            ExpressionAttributeNames={"#next": "next", "#bytes": "bytes"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":zero": {"N": "0"}},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["next"]["N"])

    def acked(self, name: str, owner: str = LOCAL_PRINCIPAL) -> int:
        item = self.session_item(name, owner) or {}
        return int(item.get("acked", {}).get("N", 0))

    def wait_subscribed(self, name: str, owner: str = LOCAL_PRINCIPAL) -> None:
        """Until the session is subscribed with a connection open and the bridge has
        answered that connection's ``subscribe``: from then on the forwarder buffers
        every event it wants (none before, by design).

        The item alone is not enough: it is saved first, and the answer waits until
        every forwarder's cached copy of the sessions has been read again (about a
        second); an event produced in between can meet a stale copy and never be
        buffered for the session. The gateway logs each invocation once it returned."""

        def subscribed() -> str | None:
            item = self.session_item(name, owner)
            if item and item.get("subscribed", {}).get("BOOL"):
                return item.get("connection", {}).get("S")
            return None

        connection = eventually(subscribed, DELIVERY_TIMEOUT, f"subscribed session {name!r}")
        answered = re.compile(
            rf"invoke subscribe connection={re.escape(connection)} request=\S+ -> 200 "
        )
        eventually(
            lambda: answered.search(self.offline.log.read_text()),
            DELIVERY_TIMEOUT,
            f"the answer to session {name!r}'s subscribe",
        )

    def sessions(self, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """`bridge sessions list --json` as the principal of ``env``: name -> row."""
        listed = run_bridge(
            self.cwd, "sessions", "list", "--stage", self.stage, "--url", self.url, "--json",
            env=env,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        return {row["name"]: row for row in json.loads(listed.stdout)["sessions"]}

    def drop(self, name: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run_bridge(
            self.cwd, "sessions", "drop", name, "--stage", self.stage, "--url", self.url,
            env=env,
        )  # fmt: skip


def start_cloud(cwd: Path, *args: str) -> Cloud:
    """`bridge offline` in ``cwd`` on free ports (SIGHUP ignored, as under nohup: the
    clouds outlive whatever terminal started the test run)."""
    stage = args[args.index("--stage") + 1] if "--stage" in args else "local"
    return Cloud(OfflineProcess(cwd, *args, ignore_hangup=True).start(), stage)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """The cloud that plays AWS, with a second principal (mallory)."""
    cwd = tmp_path_factory.mktemp("aws")
    write_definition(cwd)
    cloud = start_cloud(cwd, "--stage", "dev", "--iam-key", f"K2:S2:{MALLORY_ARN}")
    yield cloud
    cloud.offline.stop()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """The developer's machine: `bridge offline` as it comes (the packaged definition,
    whose users projection builds the read model in local-core)."""
    cloud = start_cloud(tmp_path_factory.mktemp("laptop"))
    yield cloud
    cloud.offline.stop()


Connect = Callable[..., ConnectProcess]


@pytest.fixture
def connect(tmp_path: Path) -> Iterator[Connect]:
    """``connect(cloud, session, *args, env=None)``: a `bridge connect` to ``cloud``'s
    bridge (not started). At the end: nothing left running, and the sessions dropped
    so the next test's events are not buffered for them."""
    made: list[tuple[Cloud, ConnectProcess, str, dict[str, str] | None]] = []

    def make(
        cloud: Cloud, session: str, *args: str, env: dict[str, str] | None = None
    ) -> ConnectProcess:
        client = ConnectProcess(
            tmp_path,
            "--stage", cloud.stage, "--url", cloud.url, "--session", session, *args,
            env=env,
            name=f"{session}-{len(made)}",
        )  # fmt: skip
        made.append((cloud, client, session, env))
        return client

    yield make
    for _, client, _, _ in made:
        client.close()
    dropped = set()
    for cloud, _, session, env in made:
        who = (id(cloud), session, json.dumps(env))
        if who not in dropped and cloud.offline.process and cloud.offline.process.poll() is None:
            dropped.add(who)
            cloud.drop(session, env=env)  # gone already is fine


# --------------------------------------------------------------------------- end to end


SINK_SEEDS = {"sqlite": 101, "dynamodb": 102, "bus": 103, "none": 104}


@pytest.mark.parametrize("sink", ["sqlite", "dynamodb", "bus", "none"])
def test_each_sink_receives_exactly_the_1000_generated_events(
    dev: Cloud, local: Cloud, connect: Connect, tmp_path: Path, sink: str
) -> None:
    """`bridge generate --users 250` into the "AWS" cloud while `bridge connect --stage
    dev` runs: exactly its 1,000 events in the sink, and nothing comes around again."""
    out = tmp_path / ("bridge.db" if sink == "sqlite" else f"bridge-{sink}.json")
    args = {
        "sqlite": ["--out", str(out)],
        "dynamodb": ["--sink", "dynamodb", "--sink-endpoint", local.offline.dynamodb_url],
        "bus": ["--sink", "bus", "--sink-endpoint", local.offline.events_url],
        "none": ["--sink", "none"],
    }[sink]
    if sink in ("dynamodb", "bus"):
        args += ["--out", str(out)]  # the cursor's state file
    session = f"e2e-{sink}"
    client = connect(dev, session, *args).start()
    dev.wait_subscribed(session)
    expected = dev.generate(250, SINK_SEEDS[sink])
    assert len(expected) == 1000

    def printed() -> set[tuple[str, int]]:
        return {key_of(line["event"]) for line in client.events}

    client.wait_for(
        lambda c: len(c.events) >= 1000 and len(printed()) >= 1000,
        DELIVERY_TIMEOUT,
        "1000 distinct events printed",
    )
    if sink == "sqlite":
        eventually(
            lambda: sink_count(out) >= 1000, DELIVERY_TIMEOUT, "1000 rows", lambda: sink_count(out)
        )
    elif sink == "dynamodb":
        check_dynamodb_sink(local, expected)
    elif sink == "bus":
        check_bus_sink(local, expected)
    summary = client.stop()

    assert printed() == set(expected)
    # at least once on the wire (a live post and a hole re-fetch may both bring one), once
    # past the dedupe; nothing looped back
    assert summary["received"] - summary["duplicates"] == 1000, summary
    assert (summary["gaps"], summary["problems"], summary["cursor"]) == (0, 0, 1000), summary
    if sink == "none":
        assert summary["written"] == 0
    else:
        assert (summary["written"], summary["skipped"]) == (1000, 0), summary
    if sink == "sqlite":
        rows = sink_events(out)
        assert log_keys(rows) == Counter(set(expected))  # each exactly once
        assert len(rows) == 1000
        for row in rows:
            assert row["detail"]["payload"] == expected[key_of(row)]["payload"]
    if sink in ("dynamodb", "bus"):
        state = json.loads(out.read_text())
        assert list(state["cursors"].values()) == [1000]


def check_dynamodb_sink(local: Cloud, expected: dict[tuple[str, int], dict[str, Any]]) -> None:
    """The 1,000 log items in local-dynamodb-logs, and the local users projection built
    all 250 users from them in local-core (pk = sk = users#{id}, the seed's shape)."""
    logs = local.table(log_table_name("local"))
    pks = {pk for pk, _ in expected}

    def items() -> dict[tuple[str, int], dict[str, Any]]:
        return {(item["pk"], int(item["sk"])): item for item in scan(logs) if item["pk"] in pks}

    found = eventually(lambda: (f := items()) and len(f) >= 1000 and f, 120, "1000 log items")
    assert set(found) == set(expected)
    for key, item in found.items():
        assert (item["log"], item["type"]) == ("users", expected[key]["type"])
        assert item["payload"]["id"] == expected[key]["payload"]["id"]

    core = local.table(core_table_name("local"))
    signups = {e["payload"]["id"]: e["payload"] for e in expected.values() if e["type"] == "signup"}
    assert len(signups) == 250
    located = {
        e["payload"]["id"]: e["payload"] for e in expected.values() if e["type"] == "addLocation"
    }
    wanted = {f"users#{id}" for id in signups}

    def users() -> dict[str, dict[str, Any]] | None:
        got = {
            item["pk"].removeprefix("users#"): item
            for item in scan(core)
            if item["pk"] in wanted and item["sk"] == item["pk"] and int(item["version"]) == 4
        }
        return got if len(got) == len(signups) else None

    built = eventually(users, DELIVERY_TIMEOUT, "250 users at version 4 in local-core")
    for id, item in built.items():
        assert (item["name"], item["email"]) == (signups[id]["name"], signups[id]["email"])
        assert item["type"] == "user" and item["verifiedPhoneNumber"] is True
        where = located[id]
        assert from_dynamo(item["location"]) == {"long": where["long"], "lat": where["lat"]}


def scan(table: Any) -> list[dict[str, Any]]:
    """Every item of a (small) table: one consistent Scan, all pages."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"ConsistentRead": True}
    while True:
        page = table.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def check_bus_sink(local: Cloud, expected: dict[tuple[str, int], dict[str, Any]]) -> None:
    """The local cloud's archive (its ./db) received each of the 1,000 exactly once."""
    pks = {pk for pk, _ in expected}

    def archived() -> Counter[tuple[str, int]]:
        keys = log_keys(sink_events(local.cwd / "db"))
        return Counter({key: n for key, n in keys.items() if key[0] in pks})

    eventually(lambda: sum(archived().values()) >= 1000, DELIVERY_TIMEOUT, "1000 archived")
    assert archived() == Counter(set(expected))


def test_a_sink_into_the_cloud_it_reads_is_refused(dev: Cloud, tmp_path: Path) -> None:
    for sink in ("dynamodb", "bus"):
        result = run_bridge(
            tmp_path, "connect", "--stage", "dev", "--url", dev.url, "--sink", sink,
            "--sink-stage", "dev",
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "would come back around" in one_line(result.stderr)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


# --------------------------------------------------------------------------- no loss


def kill_and_restart(
    client: ConnectProcess, total: int, kills: int, rng: random.Random
) -> list[int]:
    """SIGKILL the client ``kills`` times, each when its current run has printed an
    event at a cursor drawn at random, and start it again at once; returns the cursors."""
    targets = sorted(rng.sample(range(total // 50, total - total // 50), kills))
    for target in targets:
        client.wait_for(
            lambda c, t=target: c.run_top >= t,
            DELIVERY_TIMEOUT,
            f"an event at cursor >= {target}",
        )
        client.kill()
        client.start()
    return targets


def delivered_once(summary: dict[str, Any], events: int) -> bool:
    """What one run's summary says when ``events`` distinct events reached the sink,
    each written once: the wire is at least once (a resume answered after the live
    posts of the same events, a hole re-fetch, bring some twice), so ``received``
    counts every copy and ``duplicates`` the copies dropped (by cursor, or by the sink's
    key); what is left was written, and nothing was lost, skipped or reported as a gap."""
    return (
        summary["received"] - summary["duplicates"] == events
        and summary["written"] == events
        and (summary["skipped"], summary["gaps"], summary["problems"]) == (0, 0, 0)
    )


def check_exactly_once(
    db: Path, expected: dict[tuple[str, int], dict[str, Any]], summary: dict[str, Any]
) -> None:
    rows = sink_events(db)
    keys = log_keys(rows)
    assert set(keys) == set(expected), (
        f"missing {len(set(expected) - set(keys))}, extra {len(set(keys) - set(expected))}"
    )
    assert [key for key, n in keys.items() if n > 1] == []
    assert len(rows) == len(expected)
    assert len({row["id"] for row in rows}) == len(rows)
    assert summary["gaps"] == 0, summary


SHORT_AGE = 3  # seconds: API Gateway's 2-hour connection limit, made short


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A cloud playing AWS whose gateway closes every connection after 3 s."""
    cwd = tmp_path_factory.mktemp("aws-short-connections")
    write_definition(cwd)
    cloud = start_cloud(cwd, "--stage", "dev", "--max-connection-age", str(SHORT_AGE))
    yield cloud
    stop_cloud(cloud)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    "max_age",
    [None, SHORT_AGE],
    ids=["sigkill", "sigkill-and-max-connection-age"],
)
def test_5000_events_through_5_sigkills_arrive_exactly_once(
    dev: Cloud,
    connect: Connect,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    max_age: int | None,
) -> None:
    """5,000 events while the client is killed with SIGKILL 5 times at random moments
    and started again: the sink holds each exactly once, and the client acknowledges
    every cursor the bridge allocated. Again on a cloud whose gateway closes every
    connection after 3 s (API Gateway's 2-hour limit, made short)."""
    cloud = dev if max_age is None else request.getfixturevalue("short_lived")
    db = tmp_path / "bridge.db"
    session = f"kills-{max_age or 0}"
    client = connect(cloud, session, "--out", str(db)).start()
    cloud.wait_subscribed(session)
    writer = cloud.start_generate(1250, 200 + (max_age or 0))
    expected = generated(1250, 200 + (max_age or 0))
    rng = random.Random(7 + (max_age or 0))
    kill_and_restart(client, len(expected), kills=5, rng=rng)
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    eventually(
        lambda: sink_count(db) >= 5000, DELIVERY_TIMEOUT, "5000 rows", lambda: sink_count(db)
    )
    if max_age is not None:
        # The last run must outlive connections too, whatever moment the last kill
        # came at: wait until two of its connections were closed (by the gateway, at
        # their age: nothing else closes them), so it resumed on a new one at least once.
        client.wait_for(
            lambda c: c.stderr.count("bridge connection lost (closed") >= 2,
            DELIVERY_TIMEOUT,
            "two connections of the last run closed",
        )
    # Every cursor allocated (5,000, more if EventBridge retried an event) is
    # acknowledged: a hole a dead forwarder left is skipped after the grace, on
    # short connections too, never left to hold the bridge's buffer.
    eventually(
        lambda: cloud.acked(session) == cloud.allocated(session),
        DELIVERY_TIMEOUT,
        "every cursor acknowledged",
        lambda: (cloud.acked(session), cloud.allocated(session)),
    )
    summary = client.stop()
    check_exactly_once(db, expected, summary)
    assert summary["cursor"] == cloud.allocated(session), summary
    if max_age is not None:
        assert summary["connections"] >= 2, summary
        assert "maximum connection age reached" in cloud.offline.log.read_text()


def test_a_dead_forwarders_hole_is_skipped_though_no_connection_outlives_the_grace(
    short_lived: Cloud, connect: Connect, tmp_path: Path
) -> None:
    """A forwarder that dies after allocating its cursor leaves a cursor never written
    (EventBridge retries its event under a new one). On a gateway closing every
    connection after 3 s, the client still skips it once it has been missing for the
    grace (120 s), counted across its connections, each far shorter; it acknowledges
    past it, the bridge lets the buffer go, and nothing is reported lost."""
    cloud, session = short_lived, "holey"
    db = tmp_path / "bridge.db"
    client = connect(cloud, session, "--out", str(db)).start()
    cloud.wait_subscribed(session)
    first = cloud.generate(2, 901)
    eventually(lambda: sink_count(db) >= 8, DELIVERY_TIMEOUT, "the first 8 rows")
    eventually(
        lambda: cloud.acked(session) == cloud.allocated(session) >= 8,
        DELIVERY_TIMEOUT,
        "the first 8 acknowledged",
    )
    hole = cloud.allocate_unwritten(session)  # what the dead forwarder did
    missed = time.monotonic()  # the client cannot miss it before a later cursor exists
    second = cloud.generate(2, 902)
    eventually(lambda: sink_count(db) >= 16, DELIVERY_TIMEOUT, "all 16 rows")
    top = cloud.allocated(session)
    assert top >= hole + 8
    eventually(
        lambda: cloud.acked(session) == top,
        DELIVERY_TIMEOUT,
        "the acknowledgement past the hole",
        lambda: cloud.acked(session),
    )
    assert time.monotonic() - missed >= 120  # not skipped before the grace was over
    summary = client.stop()
    assert (summary["cursor"], summary["gaps"], summary["holes_skipped"]) == (top, 0, 1), summary
    # the gateway ends each connection at 3 s, so the 120 s took many (how many depends
    # on the reconnect backoff, so only "more than one" is asserted)
    assert summary["connections"] >= 2, summary
    assert log_keys(sink_events(db)) == Counter(set(first) | set(second))
    assert sink_count(db) == 16
    assert eventually(lambda: cloud.sessions()[session]["buffered"] == 0, 60, "an empty buffer")


def stop_cloud(cloud: Cloud) -> None:
    if cloud.offline.process and cloud.offline.process.poll() is None:
        cloud.offline.stop()


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_soak_20000_events_through_10_sigkills(
    dev: Cloud, connect: Connect, tmp_path: Path
) -> None:
    db = tmp_path / "bridge.db"
    client = connect(dev, "soak", "--out", str(db)).start()
    dev.wait_subscribed("soak")
    writer = dev.start_generate(5000, 300)
    expected = generated(5000, 300)
    kill_and_restart(client, len(expected), kills=10, rng=random.Random(300))
    _, err = writer.communicate(timeout=600)
    assert writer.returncode == 0, err
    eventually(lambda: sink_count(db) >= 20_000, SOAK_TIMEOUT, "20000 rows", lambda: sink_count(db))
    check_exactly_once(db, expected, client.stop())


def test_events_produced_while_no_client_is_connected_arrive_on_reconnect(
    dev: Cloud, connect: Connect, tmp_path: Path
) -> None:
    db = tmp_path / "bridge.db"
    client = connect(dev, "away", "--out", str(db)).start()
    dev.wait_subscribed("away")
    first = dev.generate(25, 401)
    eventually(lambda: sink_count(db) >= 100, DELIVERY_TIMEOUT, "the first 100 rows")
    before = client.stop()
    assert delivered_once(before, 100) and before["cursor"] == 100, before
    assert log_keys(sink_events(db)) == Counter(set(first))

    second = dev.generate(25, 402)  # nobody connected: the session's buffer keeps them
    eventually(
        lambda: dev.allocated("away") == 200,
        DELIVERY_TIMEOUT,
        "200 cursors",
        lambda: dev.allocated("away"),
    )
    row = eventually(
        lambda: (row := dev.sessions()["away"])["buffered"] == 100 and row,
        60,
        "100 buffered",
        lambda: (dev.sessions()["away"], dev.allocated("away")),
    )
    assert (row["connected"], row["acked"], row["next_cursor"]) == (False, 100, 201), row

    client.start()  # the same session, the same sink
    eventually(lambda: sink_count(db) >= 200, DELIVERY_TIMEOUT, "all 200 rows")
    after = client.stop()
    assert delivered_once(after, 100) and after["cursor"] == 200, after
    assert log_keys(sink_events(db)) == Counter(set(first) | set(second))
    assert sink_count(db) == 200
    # Ctrl-C acknowledged what it wrote: the buffer let it go
    eventually(lambda: dev.acked("away") == 200, 120, "the final ack")
    assert eventually(lambda: dev.sessions()["away"]["buffered"] == 0, 60, "an empty buffer")


# --------------------------------------------------------------------------- buffer cap


def test_a_full_buffer_is_reported_as_the_exact_gap(
    connect: Connect, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`[bridge] buffer_max_events = 50` (1..1,000,000 are allowed): 120 events while
    the client is away; it gets the newest 50 and a gap naming exactly the other 70
    cursors, warns, and `--fail-on-gap` exits 4."""
    cwd = tmp_path_factory.mktemp("aws-small-buffer")
    write_definition(cwd, "\n[bridge]\nbuffer_max_events = 50\n")
    cloud = start_cloud(cwd, "--stage", "dev")
    try:
        db = tmp_path / "bridge.db"
        client = connect(cloud, "capped", "--out", str(db), "--fail-on-gap").start()
        cloud.wait_subscribed("capped")
        assert client.stop()["gaps"] == 0  # exit 0: no gap yet

        expected = cloud.generate(30, 501)
        assert len(expected) == 120
        eventually(lambda: cloud.allocated("capped") == 120, DELIVERY_TIMEOUT, "120 cursors")
        row = eventually(
            lambda: (row := cloud.sessions()["capped"])["buffered"] == 50 and row, 60, "50 kept"
        )
        assert (row["next_cursor"], row["acked"], row["connected"]) == (121, 0, False), row
        client.start()
        client.wait_for(lambda c: len(c.cursors()) >= 50, DELIVERY_TIMEOUT, "50 events")
        summary = client.stop(expect=4)

        delivered = client.cursors()
        dropped = [c for first, last, _ in summary["gap_ranges"] for c in range(first, last + 1)]
        assert delivered == set(range(71, 121))  # the oldest went
        assert sorted(dropped) == list(range(1, 71))  # each dropped cursor named once
        assert summary["gaps"] == 70
        assert {reason for _, _, reason in summary["gap_ranges"]} == {"buffer cap"}
        assert set(log_keys(sink_events(db))) < set(expected)
        assert sink_count(db) == 50
        warnings = [line for line in client.stderr.splitlines() if "gap: cursors" in line]
        assert warnings and all("dropped by the bridge (buffer cap)" in w for w in warnings)
    finally:
        stop_cloud(cloud)


# --------------------------------------------------------------------------- security


def test_a_connect_from_outside_the_allowlist_is_refused(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cwd = tmp_path_factory.mktemp("aws-allowlist")
    write_definition(cwd, '\n[bridge]\nallowed_ips = ["10.0.0.0/8"]\n')
    cloud = start_cloud(cwd, "--stage", "dev")
    try:
        result = run_bridge(
            tmp_path, "connect", "--stage", "dev", "--url", cloud.url, "--session", "outside",
            "--sink", "none", timeout=120,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        line = one_line(result.stderr)
        assert line.startswith("error: refused (403)") and "allowlist" in line, line
        assert result.stdout == ""
        assert cloud.session_item("outside") is None  # no session was made
    finally:
        stop_cloud(cloud)


def test_another_principal_cannot_attach_to_a_session(
    dev: Cloud, connect: Connect, tmp_path: Path
) -> None:
    """Sessions belong to the principal that made them (the caller ARN): mallory, with
    her own key, naming the same session gets a session of her own, not the other's
    buffer; she cannot drop it either (one line, exit 1), and the owner's session goes
    on untouched."""
    db = tmp_path / "bridge.db"
    owner = connect(dev, "shared", "--out", str(db)).start()
    dev.wait_subscribed("shared")
    first = dev.generate(10, 601)
    eventually(lambda: sink_count(db) >= 40, DELIVERY_TIMEOUT, "the owner's first 40")
    owner.stop()
    buffered = dev.generate(10, 602)  # the owner is away: 40 events in its buffer
    eventually(
        lambda: dev.allocated("shared") == 80,
        DELIVERY_TIMEOUT,
        "80 cursors",
        lambda: dev.allocated("shared"),
    )
    eventually(
        lambda: dev.sessions()["shared"]["buffered"] == 40,
        60,
        "40 buffered",
        lambda: (dev.sessions()["shared"], dev.allocated("shared")),
    )

    assert dev.sessions(env=MALLORY_ENV) == {}  # she does not even see it
    refused = dev.drop("shared", env=MALLORY_ENV)
    assert refused.returncode == 1, refused.stderr
    assert "no such session" in one_line(refused.stderr)
    assert dev.session_item("shared") is not None

    hers = tmp_path / "mallory.db"
    mallory = connect(dev, "shared", "--out", str(hers), env=MALLORY_ENV).start()
    dev.wait_subscribed("shared", owner=MALLORY_ARN)
    later = dev.generate(5, 603)
    mallory.wait_for(lambda c: len(c.events) >= 20, DELIVERY_TIMEOUT, "mallory's 20 events")
    summary = mallory.stop()
    # only what was produced after her own session subscribed; none of the owner's buffer
    assert log_keys(sink_events(hers)) == Counter(set(later))
    assert sink_count(hers) == 20
    assert delivered_once(summary, 20) and summary["cursor"] == 20, summary
    assert dev.session_item("shared", owner=MALLORY_ARN) is not None

    mine = dev.sessions()["shared"]
    assert (mine["acked"], mine["next_cursor"], mine["buffered"]) == (40, 101, 60), mine
    owner.start()  # the owner's session: its buffer intact
    eventually(lambda: sink_count(db) >= 100, DELIVERY_TIMEOUT, "the owner's 100 rows")
    again = owner.stop()
    assert delivered_once(again, 60) and again["cursor"] == 100, again
    assert log_keys(sink_events(db)) == Counter(set(first) | set(buffered) | set(later))
    assert sink_count(db) == 100


def test_a_session_receives_only_what_it_subscribed_to(
    dev: Cloud, connect: Connect, tmp_path: Path
) -> None:
    """Two sessions, `--log users` and `--pattern` on the orders log: each gets exactly
    its own events, and nothing of the other's is even allocated a cursor."""
    from bridge.store import LogStore

    users_db, orders_db = tmp_path / "users.db", tmp_path / "orders.db"
    users = connect(dev, "only-users", "--log", "users", "--out", str(users_db)).start()
    pattern = json.dumps({"source": ["dynamodb-log"], "detail": {"log": ["orders"]}})
    orders = connect(dev, "only-orders", "--pattern", pattern, "--out", str(orders_db)).start()
    dev.wait_subscribed("only-users")
    dev.wait_subscribed("only-orders")

    expected_users = dev.generate(10, 701)
    store = LogStore(dev.table(log_table_name("dev")))
    expected_orders = set()
    for n in range(10):
        order = f"order-{n}"
        for step in ("placed", "paid", "shipped"):
            version = store.append("orders", order, step, {"id": order, "step": step})
            expected_orders.add((stream_key("orders", order), version))

    eventually(lambda: sink_count(users_db) >= 40, DELIVERY_TIMEOUT, "40 users events")
    eventually(lambda: sink_count(orders_db) >= 30, DELIVERY_TIMEOUT, "30 orders events")
    got_users, got_orders = users.stop(), orders.stop()
    assert log_keys(sink_events(users_db)) == Counter(set(expected_users))
    assert log_keys(sink_events(orders_db)) == Counter(expected_orders)
    assert (sink_count(users_db), sink_count(orders_db)) == (40, 30)
    assert delivered_once(got_users, 40) and got_users["cursor"] == 40, got_users
    assert delivered_once(got_orders, 30) and got_orders["cursor"] == 30, got_orders
    listed = dev.sessions()
    assert listed["only-users"]["next_cursor"] == 41
    assert listed["only-orders"]["next_cursor"] == 31


def test_a_replay_reaches_only_the_session_that_asked_for_it(
    dev: Cloud, connect: Connect, tmp_path: Path
) -> None:
    """StartReplay on the "AWS" archive with FilterArns naming only the bridge's replay
    rule: the session connected with `--replay NAME` gets the replayed events; a live
    session of the same subscription and the bus's subscriber (the recorder) get none."""
    from bridge.store import LogStore

    replay_rule = bridge_rule_name("dev", "replay")
    assert replay_rule == "dynamodb-logs-dev-bridge-replay"
    name = f"e2e-{random.Random().getrandbits(32):08x}"
    # The forwarder handles an event's sessions in name order: the live session first,
    # so by the time the replaying one has an event, the live one would have its cursor.
    live_db, replay_db = tmp_path / "live.db", tmp_path / "replay.db"
    live = connect(dev, "r0-live", "--log", "replays", "--out", str(live_db)).start()
    replaying = connect(
        dev, "r1-replay", "--log", "replays", "--replay", name, "--out", str(replay_db)
    ).start()
    dev.wait_subscribed("r0-live")
    dev.wait_subscribed("r1-replay")

    start = datetime.now(UTC) - timedelta(seconds=2)
    store = LogStore(dev.table(log_table_name("dev")))
    for n in range(5):
        for step in range(4):
            store.append("replays", f"{name}-{n}", f"step{step}", {"id": f"{name}-{n}"})
    live.wait_for(lambda c: len(c.events) >= 20, DELIVERY_TIMEOUT, "20 live events")
    live_ids = {line["event"]["id"] for line in live.events}
    core = dev.table(core_table_name("dev"))

    def recorded() -> set[str]:
        items = core.query(
            KeyConditionExpression=Key("pk").eq("recorded#replays"),
            ConsistentRead=True,
        )["Items"]
        return {item["sk"] for item in items if item["sk"].split("#")[0] in live_ids}

    eventually(lambda: len(recorded()) >= 20, DELIVERY_TIMEOUT, "the recorder's 20 live events")

    events = dev.events()
    events.start_replay(
        ReplayName=name,
        EventSourceArn=archive_arn(REGION, LOCAL_ACCOUNT),
        EventStartTime=start,
        EventEndTime=datetime.now(UTC) + timedelta(seconds=2),
        Destination={
            "Arn": bus_arn(REGION, LOCAL_ACCOUNT),
            "FilterArns": [rule_arn(REGION, LOCAL_ACCOUNT, replay_rule)],
        },
    )
    eventually(
        lambda: events.describe_replay(ReplayName=name)["State"] == "COMPLETED",
        DELIVERY_TIMEOUT,
        "the replay completed",
    )
    replaying.wait_for(lambda c: len(c.events) >= 20, DELIVERY_TIMEOUT, "20 replayed events")
    replayed = [line["event"] for line in replaying.events]
    assert {event["id"] for event in replayed} == live_ids  # the same events, again
    assert {event["replay-name"] for event in replayed} == {name}
    got_live, got_replay = live.stop(), replaying.stop()
    assert delivered_once(got_live, 20) and got_live["cursor"] == 20, got_live
    assert delivered_once(got_replay, 20) and got_replay["cursor"] == 20, got_replay
    live_rows, replay_rows = sink_events(live_db), sink_events(replay_db)
    assert sorted(row["id"] for row in live_rows) == sorted(live_ids)  # each once
    assert sorted(row["id"] for row in replay_rows) == sorted(live_ids)
    assert all("replay-name" not in row for row in live_rows)
    assert all(row.get("replay-name") == name for row in replay_rows)
    assert dev.sessions()["r0-live"]["next_cursor"] == 21  # no cursor for a replayed event
    assert recorded() == {f"{id}#live" for id in live_ids}  # the subscriber: live only


# --------------------------------------------------------------------------- oversize


def test_a_200_kb_event_arrives_intact(dev: Cloud, connect: Connect, tmp_path: Path) -> None:
    """PutEvents allows 256 KB, API Gateway 128 KB a message and 32 KB a frame: a 200 KB
    event (multi-byte text, characters JSON escapes) travels in chunks and is
    byte-equal in the sqlite sink."""
    db = tmp_path / "bridge.db"
    source = "e2e.oversize"
    client = connect(dev, "big", "--pattern", json.dumps({"source": [source]}), "--out", str(db))
    client.start()
    dev.wait_subscribed("big")
    rng = random.Random(800)
    blob = "".join(rng.choice('aé€😀"\\\n\t<>') for _ in range(100_000))
    detail = {"blob": blob, "n": 1}
    text = json.dumps(detail, separators=(",", ":"), ensure_ascii=False)
    assert 190_000 < len(text.encode()) < 210_000
    answer = dev.events().put_events(
        Entries=[
            {
                "Source": source,
                "DetailType": "big",
                "Detail": text,
                "EventBusName": "dynamodb-log",
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0, answer
    event_id = answer["Entries"][0]["EventId"]
    eventually(lambda: sink_count(db) >= 1, DELIVERY_TIMEOUT, "the 200 KB event")
    client.stop()
    [row] = sink_events(db)
    assert row["id"] == event_id
    assert json.dumps(row["detail"], separators=(",", ":"), ensure_ascii=False) == text
    [line] = client.events
    assert line["event"]["detail"] == detail


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (
            wire.Error("version", "this bridge speaks protocol version 2", version=2),
            "the bridge stack speaks version 2; this client speaks 1: upgrade this client",
        ),
        (
            wire.Welcome(version=2, session="mismatch", acked=0, next_cursor=1),
            "the bridge stack speaks version 2; this client speaks 1: upgrade this client",
        ),
    ],
    ids=["error", "welcome"],
)
async def test_a_protocol_version_mismatch_is_one_line_and_no_hang(
    tmp_path: Path, answer: Any, says: str
) -> None:
    """A server speaking protocol version 2 answers hello: `bridge connect` ends at once
    with one line and a non-zero exit."""
    hellos: list[dict[str, Any]] = []

    async def server(ws: Any) -> None:
        hellos.append(json.loads(await ws.recv()))
        await ws.send(wire.encode(answer))
        with contextlib.suppress(ConnectionClosed):
            await ws.wait_closed()

    async with websockets.serve(server, "127.0.0.1", 0) as running:
        port = running.sockets[0].getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            str(BRIDGE), "connect", "--stage", "dev", "--url", f"ws://127.0.0.1:{port}/dev",
            "--session", "mismatch", "--sink", "none", "--json",
            cwd=tmp_path,
            env={**os.environ, **LOCAL_ENV},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 1, err
    line = one_line(err.decode())
    assert line == f"error: {says} (pip install -U dynamodb-logs-bridge)", line
    assert json_lines(out.decode()) == []
    assert [(h["action"], h["version"], h["session"]) for h in hellos] == [
        ("hello", wire.PROTOCOL_VERSION, "mismatch")
    ]
