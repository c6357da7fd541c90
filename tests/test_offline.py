"""`bridge offline` end to end: real processes, real sockets, the AWS CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from offline_process import BRIDGE, LOCAL_ENV, OfflineProcess, embedded_dynamodb_pid

from bridge.archive import count, iter_events
from bridge.core.names import BRIDGE_FUNCTIONS
from bridge.offline.ports import free_port

AWS = Path(sys.executable).with_name("aws")
SEED_ITEM = {
    "pk": {"S": "users#12#stream"},
    "sk": {"N": "1"},
    "type": {"S": "signup"},
    "log": {"S": "users"},
    "payload": {
        "M": {
            "id": {"S": "12"},
            "name": {"S": "test"},
            "email": {"S": "test@example.com"},
        }
    },
}


def aws_put_item(endpoint: str) -> subprocess.CompletedProcess:
    """The seed's offline example, as written (the AWS CLI, --endpoint)."""
    return subprocess.run(
        [
            str(AWS),
            "dynamodb",
            "put-item",
            "--table-name",
            "local-dynamodb-logs",
            "--item",
            json.dumps(SEED_ITEM),
            "--condition-expression",
            "attribute_not_exists(pk)",
            "--endpoint",
            endpoint,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **LOCAL_ENV},
        timeout=60,
    )


def free_ports() -> list[str]:
    """`bridge offline` options putting every server on a free port."""
    return [
        "--dynamodb-port",
        str(free_port()),
        "--events-port",
        str(free_port()),
        "--ws-port",
        str(free_port()),
        "--bridge-port",
        str(free_port()),
    ]


def wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    return check()


def dynamodb(url: str):
    return boto3.resource(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def test_seed_offline_example_reaches_the_handler_and_the_archive(tmp_path):
    with OfflineProcess(tmp_path) as offline:
        endpoint = offline.dynamodb_url.replace("127.0.0.1", "localhost")
        first = aws_put_item(endpoint)
        assert first.returncode == 0, first.stderr
        core = dynamodb(offline.dynamodb_url).Table("local-core")
        user = wait_for(lambda: core.get_item(Key={"pk": "users#12", "sk": "users#12"}).get("Item"))
        assert user["name"] == "test" and user["email"] == "test@example.com"
        assert wait_for(lambda: count(tmp_path / "db") == 1)

        again = aws_put_item(endpoint)
        assert again.returncode != 0
        assert "ConditionalCheckFailedException" in again.stderr

        listed = subprocess.run(
            [
                str(AWS),
                "lambda",
                "list-functions",
                "--endpoint-url",
                f"http://127.0.0.1:{offline.ports['events']}",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **LOCAL_ENV},
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        functions = {f["FunctionName"]: f for f in json.loads(listed.stdout)["Functions"]}
        assert set(functions) == {
            "dynamodb-logs-local-publisher",
            "dynamodb-logs-local-users",
            "dynamodb-logs-local-failures",
            # served by default beside the seed's: the bridge API's functions
            *(f"dynamodb-logs-local-{name}" for name in BRIDGE_FUNCTIONS),
        }
        users = functions["dynamodb-logs-local-users"]
        assert users["Handler"] == "bridge.lambdas.users_projection.handler"
        assert users["Environment"]["Variables"]["DYNAMODB_CORE_TABLE"] == "local-core"
        summary = offline.stop()
    assert summary["published"] == 1
    events = list(iter_events(tmp_path / "db"))
    assert len(events) == 1  # the failed put published nothing
    assert events[0]["source"] == "dynamodb-log"
    assert events[0]["detail"]["key"] == {"pk": "users#12#stream", "sk": 1}
    assert events[0]["detail"]["payload"] == {
        "id": "12",
        "name": "test",
        "email": "test@example.com",
    }


FAILING_CONFIG = """
[functions.flaky]
handler = "always_fails.handler"
pattern = { source = ["dynamodb-log"], detail = { log = ["orders"] } }
retry_attempts = 2
retry_delay_ms = 300
on_failure = "failures"

[functions.failures]
handler = "bridge.lambdas.failures.handler"
"""

FAILING_HANDLER = """
import json, os, time

def handler(event, context):
    with open(os.environ["CALLS_FILE"], "a") as calls:
        calls.write(json.dumps({"t": time.time(), "id": event["id"]}) + "\\n")
    raise ValueError("order " + event["detail"]["payload"]["id"] + " cannot be handled")
"""


def test_retries_then_on_failure_record_in_the_seed_format(tmp_path):
    (tmp_path / "dynamodb-logs.toml").write_text(
        FAILING_CONFIG.replace(
            'on_failure = "failures"',
            'on_failure = "failures"\nenvironment = { CALLS_FILE = "'
            + str(tmp_path / "calls.jsonl")
            + '" }',
        )
    )
    (tmp_path / "always_fails.py").write_text(FAILING_HANDLER)
    with OfflineProcess(tmp_path) as offline:
        store_table = dynamodb(offline.dynamodb_url).Table("local-dynamodb-logs")
        from bridge.store import LogStore

        LogStore(store_table).append("orders", "o1", "placed", {"id": "o1", "total": 9.5})
        core = dynamodb(offline.dynamodb_url).Table("local-core")

        def failures():
            return [i for i in core.scan()["Items"] if i["pk"].startswith("failure#")]

        stored = wait_for(failures, timeout=30)
        calls_file = tmp_path / "calls.jsonl"
        calls = [json.loads(line) for line in calls_file.read_text().splitlines()]

        # `bridge failures list` shows it; `retry` re-drives it through the Lambda API.
        where = ["--endpoint-url", offline.dynamodb_url]
        listed = subprocess.run(
            [str(BRIDGE), "failures", "list", "--json", *where],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        (shown,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert shown["functionName"] == "dynamodb-logs-local-flaky"
        assert shown["status"] == "failed"
        retried = subprocess.run(
            [
                str(BRIDGE),
                "failures",
                "retry",
                shown["requestId"][:8],
                *where,
                "--lambda-endpoint-url",
                f"http://127.0.0.1:{offline.ports['events']}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.strip() == (
            "re-invoked dynamodb-logs-local-flaky with the event of failed request "
            f"{shown['requestId']} (retry 1)"
        )
        assert wait_for(lambda: len(calls_file.read_text().splitlines()) >= 4)
        missing = subprocess.run(
            [str(BRIDGE), "failures", "retry", "nosuchid", *where],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert missing.returncode == 1
        assert len(missing.stderr.strip().splitlines()) == 1
        offline.stop()
    assert len(calls) == 3  # the attempt and 2 retries
    gaps = [b["t"] - a["t"] for a, b in zip(calls, calls[1:], strict=False)]
    assert all(gap >= 0.3 for gap in gaps), gaps
    assert len(stored) == 1
    record = stored[0]["record"]
    record = json.loads(record) if isinstance(record, str) else record
    assert set(record) == {
        "version",
        "timestamp",
        "requestContext",
        "requestPayload",
        "responseContext",
        "responsePayload",
    }
    assert record["version"] == "1.0"
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert int(record["requestContext"]["approximateInvokeCount"]) == 3
    assert record["requestContext"]["functionArn"].endswith(
        ":function:dynamodb-logs-local-flaky:$LATEST"
    )
    assert set(record["requestContext"]) == {
        "requestId",
        "functionArn",
        "condition",
        "approximateInvokeCount",
    }
    payload = record["requestPayload"]
    assert payload["source"] == "dynamodb-log" and payload["detail-type"] == "stream changes"
    assert payload["detail"]["key"] == {"pk": "orders#o1#stream", "sk": 1}
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "order o1 cannot be handled"
    assert isinstance(record["responsePayload"]["trace"], list)


def test_bad_subscriptions_file_is_refused_at_start_with_file_and_reason(tmp_path):
    bad = tmp_path / "dynamodb-logs.toml"
    bad.write_text(
        '[functions.users]\nhandler = "bridge.lambdas.users_projection.handler"\n'
        'pattern = { source = "dynamodb-log" }\n'
    )
    result = subprocess.run(
        [str(BRIDGE), "offline", *free_ports()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{bad}:3:" in result.stderr and "functions.users.pattern" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "db").exists()  # nothing written


def test_port_in_use_is_one_line(tmp_path):
    with OfflineProcess(tmp_path) as running:
        result = subprocess.run(
            [
                str(BRIDGE),
                "offline",
                "--dynamodb-port",
                str(running.ports["dynamodb"]),
                "--events-port",
                str(free_port()),
                "--ws-port",
                str(free_port()),
                "--bridge-port",
                str(free_port()),
                "--db",
                str(tmp_path / "other.db"),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"error: port {running.ports['dynamodb']} on 127.0.0.1 is already in use; "
            "pick another with --dynamodb-port"
        )
        # The failed start left nothing: no database, no lock to warn about next time.
        assert not (tmp_path / "other.db").exists()
        assert not (tmp_path / "other.db.lock").exists()
        running.stop()


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (["--host", "no-such-host.invalid"], 1, "error: --host no-such-host.invalid: "),
        (
            ["--ws-route", "$default=no_such_module.handler"],
            2,
            "error: --ws-route $default=no_such_module.handler: module 'no_such_module' not found",
        ),
        (
            ["--ws-route", "$default=bridge.lambdas.publisher.nosuch"],
            2,
            "error: --ws-route $default=bridge.lambdas.publisher.nosuch: ",
        ),  # module, no function
    ],
)
def test_a_start_refused_is_one_line_and_leaves_nothing(tmp_path, args, code, line):
    result = subprocess.run(
        [str(BRIDGE), "offline", *free_ports(), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == code
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(line), result.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no lock


@pytest.mark.slow
def test_restart_in_the_middle_of_5000_appends_loses_and_duplicates_nothing(tmp_path):
    """Ctrl-C while a writer appends, start again: every item kept, each event published
    exactly once; then `bridge clean` leaves nothing behind."""
    import threading

    from botocore.config import Config
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    from bridge.core.errors import ConcurrencyError
    from bridge.store import LogStore

    total, streams = 5000, 50
    offline = OfflineProcess(tmp_path).start()
    table = boto3.resource(
        "dynamodb",
        endpoint_url=offline.dynamodb_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=10),
    ).Table("local-dynamodb-logs")
    store = LogStore(table)
    progress = {"written": 0, "refused": 0}

    def writer() -> None:
        """Appends 5000 events, riding out the restart as a client would: retry."""
        written = 0
        while written < total:
            id, version = f"o{written % streams}", written // streams
            payload = {"id": id, "n": written}
            try:
                try:
                    store.append("orders", id, "placed", payload, expected_version=version)
                except ConcurrencyError:
                    # the attempt before the connection dropped had landed: same payload?
                    assert next(store.read("orders", id, after=version)).payload == payload
            except (ClientError, BotoConnectionError, HTTPClientError):
                # refused while draining, connection refused, or reset mid-request
                progress["refused"] += 1
                time.sleep(0.05)
                continue
            written += 1
            progress["written"] = written

    def guarded_writer() -> None:
        try:
            writer()
        except BaseException as error:  # surfaced below rather than lost in the thread
            progress["error"] = repr(error)

    thread = threading.Thread(target=guarded_writer, daemon=True)  # never blocks pytest's exit
    thread.start()
    try:
        assert wait_for(
            lambda: progress["written"] >= total // 3 or "error" in progress, timeout=120
        )
        assert "error" not in progress, progress["error"]
        offline.stop()  # Ctrl-C in the middle of the stream of appends
        offline = OfflineProcess(tmp_path, ports=offline.ports).start()
        thread.join(timeout=240)
        assert not thread.is_alive()
        assert "error" not in progress, progress["error"]
        assert progress["refused"] > 0  # writes really were in flight around the restart
        assert 0 < offline.started["restored"]["local-dynamodb-logs"] < total
        final = offline.stop()
    finally:
        offline.__exit__()  # a failed assertion leaves no `bridge offline` running
    assert final["saved_tables"]["local-dynamodb-logs"] == total

    events = list(iter_events(tmp_path / "db"))
    keys = [(e["detail"]["key"]["pk"], e["detail"]["key"]["sk"]) for e in events]
    assert len(set(keys)) == total  # every item published …
    assert len(keys) == total  # … exactly once

    with OfflineProcess(tmp_path) as again:  # the table still holds every item
        check = LogStore(dynamodb(again.dynamodb_url).Table("local-dynamodb-logs"))
        assert sum(len(check.versions("orders", f"o{i}")) for i in range(streams)) == total
        again.stop()

    cleaned = subprocess.run(
        [str(BRIDGE), "clean", "--yes"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert cleaned.returncode == 0, cleaned.stderr
    assert "table local-dynamodb-logs (5000 items)" in cleaned.stdout
    assert f"{total} archived events" in cleaned.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("db")) == []


def test_own_dynamodb_endpoint_and_checkpoints_across_a_restart(tmp_path, moto_url):
    """--dynamodb-endpoint (standing in for DynamoDB Local): the stream outlives
    offline, so the checkpoints in ./db are what keep a restart from republishing."""
    import uuid

    from bridge.store import LogStore

    stage = f"ext{uuid.uuid4().hex[:8]}"
    args = ("--dynamodb-endpoint", moto_url, "--stage", stage)
    store = LogStore(dynamodb(moto_url).Table(f"{stage}-dynamodb-logs"))
    with OfflineProcess(tmp_path, *args) as offline:
        assert offline.started["dynamodb"] == moto_url
        for n in range(3):
            store.append("orders", "x", "placed", {"id": "x", "n": n})
        assert wait_for(lambda: count(tmp_path / "db") == 3)
        first = offline.stop()
    assert first["saved_tables"] == {}  # not ours to snapshot
    for n in range(3, 5):  # written while offline is down: published at the next start
        store.append("orders", "x", "placed", {"id": "x", "n": n})
    with OfflineProcess(tmp_path, *args) as offline:
        store.append("orders", "x", "placed", {"id": "x", "n": 5})
        assert wait_for(lambda: count(tmp_path / "db") == 6)
        second = offline.stop()
    assert second["published"] == 3
    versions = sorted(e["detail"]["key"]["sk"] for e in iter_events(tmp_path / "db"))
    assert versions == [1, 2, 3, 4, 5, 6]


ECHO_ROUTE = """
import json, os
import boto3

def handler(event, context):
    context_ = event["requestContext"]
    if context_["routeKey"] != "$default":
        return {"statusCode": 200}
    body = json.loads(event["body"])
    # Reply through the management API, as a Lambda in AWS would: boto3 finds the
    # local gateway through AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI.
    boto3.client("apigatewaymanagementapi").post_to_connection(
        ConnectionId=context_["connectionId"],
        Data=json.dumps({"echo": body, "stage": context_["stage"],
                         "offline": os.environ.get("IS_OFFLINE")}).encode(),
    )
    return {"statusCode": 200}
"""


async def test_websocket_routes_run_handlers_that_answer_through_the_management_api(tmp_path):
    import asyncio

    import websockets

    (tmp_path / "ws_echo.py").write_text(ECHO_ROUTE)
    (tmp_path / "dynamodb-logs.toml").write_text('[functions.noop]\nhandler = "ws_echo.handler"\n')
    offline = await asyncio.to_thread(
        OfflineProcess(
            tmp_path,
            "--ws-route",
            "$default=ws_echo.handler",
            "--ws-route",
            "$connect=ws_echo.handler",
        ).start
    )
    try:
        async with websockets.connect(offline.started["websocket"]) as ws:
            await ws.send(json.dumps({"hello": "world"}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply == {"echo": {"hello": "world"}, "stage": "local", "offline": "true"}
    finally:
        await asyncio.to_thread(offline.stop)


def test_clean_deletes_the_stage_tables_at_a_local_endpoint_and_refuses_remote(tmp_path, moto_url):
    import uuid

    from bridge.aws import Target
    from bridge.store import create_tables

    stage = f"cl{uuid.uuid4().hex[:8]}"
    target = Target(stage=stage, endpoint_url=moto_url)
    create_tables(target.dynamodb(), target.log_table, target.core_table)
    args = ["clean", "--dynamodb-endpoint", moto_url, "--stage", stage]
    refused = subprocess.run(
        [str(BRIDGE), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: refusing to delete without confirmation: pass --yes"
    cleaned = subprocess.run(
        [str(BRIDGE), *args, "--yes"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"deleted tables {stage}-dynamodb-logs, {stage}-core" in cleaned.stdout
    names = target.dynamodb().meta.client.list_tables()["TableNames"]
    assert target.log_table not in names and target.core_table not in names
    remote = subprocess.run(
        [
            str(BRIDGE),
            "clean",
            "--dynamodb-endpoint",
            "https://dynamodb.eu-west-1.amazonaws.com",
            "--yes",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert remote.returncode == 1
    assert "only deletes local tables" in remote.stderr


def test_one_database_one_offline_and_no_clean_under_it(tmp_path):
    with OfflineProcess(tmp_path) as running:
        second = subprocess.run(
            [
                str(BRIDGE),
                "offline",
                "--dynamodb-port",
                str(free_port()),
                "--events-port",
                str(free_port()),
                "--ws-port",
                str(free_port()),
                "--bridge-port",
                str(free_port()),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert second.stderr.strip() == (
            "error: db is in use by a running `bridge offline`; stop it first"
        )
        clean = subprocess.run(
            [str(BRIDGE), "clean", "--yes"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert clean.returncode == 1
        assert "in use by a running `bridge offline`" in clean.stderr
        assert (tmp_path / "db").exists()
        running.stop()
    assert not (tmp_path / "db.lock").exists()


def test_a_bad_database_file_is_one_line(tmp_path):
    (tmp_path / "db").write_text("not a database")
    result = subprocess.run(
        [str(BRIDGE), "offline", *free_ports()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: db cannot be the local database: file is not a database"


def signed_url(ws_url: str, key: str, secret: str) -> str:
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=ws_url.replace("ws://", "https://"))
    SigV4QueryAuth(Credentials(key, secret), "execute-api", "us-east-1", expires=60).add_auth(
        request
    )
    return request.url.replace("https://", "ws://")


async def test_iam_auth_takes_urls_signed_with_the_printed_local_key(tmp_path):
    import asyncio

    import websockets
    from websockets.exceptions import InvalidStatus

    offline = await asyncio.to_thread(OfflineProcess(tmp_path, "--iam-auth").start)
    try:
        url = offline.started["websocket"]
        with pytest.raises(InvalidStatus) as unsigned:
            await websockets.connect(url)
        assert unsigned.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            await websockets.connect(signed_url(url, "local", "wrong"))
        async with websockets.connect(signed_url(url, "local", "local")) as ws:
            # accepted (no 403 above) and live: a pong comes back, or this times out
            await asyncio.wait_for(await ws.ping(), 10)
    finally:
        await asyncio.to_thread(offline.stop)


def test_a_run_that_did_not_stop_cleanly_is_reported_at_the_next_start(tmp_path):
    import signal as signals

    first = OfflineProcess(tmp_path).start()
    first.process.send_signal(signals.SIGKILL)  # a crash: no clean stop
    first.process.wait()
    assert (tmp_path / "db.lock").exists()
    with OfflineProcess(tmp_path, ports=first.ports) as second:
        second.stop()
    log = (tmp_path / "offline.log").read_text()
    assert "did not stop cleanly" in log
    assert not (tmp_path / "db.lock").exists()


def saved_items(db: Path, table: str) -> int:
    """How many items of `table` the stored snapshot holds (0 before any save)."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        found = conn.execute("SELECT name FROM sqlite_master WHERE name = 'dynamodb_items'")
        if not found.fetchone():
            return 0
        rows = conn.execute("SELECT COUNT(*) FROM dynamodb_items WHERE table_name = ?", (table,))
        return rows.fetchone()[0]
    finally:
        conn.close()


def test_a_crash_after_a_quiet_moment_keeps_what_was_written(tmp_path):
    """kill -9 after the writes went quiet: the quiet-moment save brings every item back,
    and nothing is published twice after the restart."""
    import signal as signals

    from bridge.store import LogStore

    db, table = tmp_path / "db", "local-dynamodb-logs"
    first = OfflineProcess(tmp_path, "--autosave", "0.2").start()
    store = LogStore(dynamodb(first.dynamodb_url).Table(table))
    for n in range(30):
        store.append("orders", f"o{n % 3}", "placed", {"id": f"o{n % 3}", "n": n})
    assert wait_for(lambda: saved_items(db, table) == 30, timeout=60)
    assert count(db) == 30  # the archive was flushed with the save
    first.process.send_signal(signals.SIGKILL)  # a crash: no clean stop
    first.process.wait()

    second = OfflineProcess(tmp_path, ports=first.ports).start()
    assert second.started["restored"][table] == 30
    store = LogStore(dynamodb(second.dynamodb_url).Table(table))
    assert [item.payload["n"] for item in store.read("orders", "o0")] == list(range(0, 30, 3))
    store.append("orders", "o0", "placed", {"id": "o0", "n": 30})
    final = second.stop()
    assert final["saved_tables"][table] == 31
    keys = [(e["detail"]["key"]["pk"], e["detail"]["key"]["sk"]) for e in iter_events(db)]
    assert len(keys) == len(set(keys)) == 31  # each item published once, across the crash


def test_without_autosave_nothing_is_saved_before_a_clean_stop(tmp_path):
    from bridge.store import LogStore

    db, table = tmp_path / "db", "local-dynamodb-logs"
    with OfflineProcess(tmp_path, "--autosave", "0") as offline:
        store = LogStore(dynamodb(offline.dynamodb_url).Table(table))
        store.append("orders", "o1", "placed", {"id": "o1"})
        assert wait_for(lambda: count(db) == 1)
        # Past two quiet intervals of even the default (2 s): any autosave would be done.
        time.sleep(4.5)
        assert saved_items(db, table) == 0
        assert offline.stop()["saved_tables"][table] == 1


def test_under_nohup_a_hangup_does_not_stop_it(tmp_path):
    import signal as signals

    with OfflineProcess(tmp_path, "--autosave", "0", ignore_hangup=True) as offline:
        offline.process.send_signal(signals.SIGHUP)
        with pytest.raises(subprocess.TimeoutExpired):
            offline.process.wait(timeout=2)  # still running, as nohup asked …
        stopped = offline.stop()  # … and Ctrl-C still stops it cleanly
    assert stopped["published"] == 0


def test_offline_takes_the_region_the_other_commands_take(tmp_path):
    """With AWS_REGION set, `bridge append` and `bridge offline` meet in that region."""
    region = {"AWS_REGION": "eu-west-1"}
    with OfflineProcess(tmp_path, "--autosave", "0", env=region) as offline:
        assert offline.started["exports"]["AWS_DEFAULT_REGION"] == "eu-west-1"
        appended = subprocess.run(
            [
                str(BRIDGE),
                "append",
                "orders",
                "o1",
                "placed",
                "--payload",
                '{"id": "o1"}',
                "--endpoint-url",
                offline.dynamodb_url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=offline.env,
        )
        assert appended.returncode == 0, appended.stderr
        assert wait_for(lambda: count(tmp_path / "db") == 1)  # published from eu-west-1
        stopped = offline.stop()
    assert stopped["saved_tables"]["local-dynamodb-logs"] == 1


def test_closing_the_terminal_stops_as_cleanly_as_ctrl_c(tmp_path):
    import signal as signals

    from bridge.store import LogStore

    table = "local-dynamodb-logs"
    with OfflineProcess(tmp_path, "--autosave", "0") as offline:
        LogStore(dynamodb(offline.dynamodb_url).Table(table)).append(
            "orders", "o1", "placed", {"id": "o1"}
        )
        stopped = offline.stop(sig=signals.SIGHUP)  # what a closed terminal window sends
    assert stopped["saved_tables"][table] == 1
    assert stopped["published"] == 1
    assert not (tmp_path / "db.lock").exists()


def test_a_dead_embedded_dynamodb_stops_offline_with_one_clear_error(tmp_path):
    """The child killed under it (the OOM killer, a stray kill): offline says so and ends,
    rather than polling a dead endpoint forever; what it saved last is kept."""
    import signal as signals

    from bridge.store import LogStore

    db, table = tmp_path / "db", "local-dynamodb-logs"
    offline = OfflineProcess(tmp_path, "--autosave", "0.2").start()
    try:
        LogStore(dynamodb(offline.dynamodb_url).Table(table)).append(
            "orders", "o1", "placed", {"id": "o1"}
        )
        assert wait_for(lambda: saved_items(db, table) == 1)
        os.kill(embedded_dynamodb_pid(offline.ports["dynamodb"]), signals.SIGKILL)
        out, _ = offline.process.communicate(timeout=60)  # it ends by itself
    finally:
        offline.__exit__()
    assert offline.process.returncode == 1
    errors = [
        line
        for line in (tmp_path / "offline.log").read_text().splitlines()
        if line.startswith("error: ")
    ]
    assert errors == [
        "error: the embedded DynamoDB exited unexpectedly (killed by signal 9); its tables are "
        "as last saved in db, restored at the next start"
    ]
    assert not (tmp_path / "db.lock").exists()  # a clean end of a broken run
    with OfflineProcess(tmp_path) as again:
        assert again.started["restored"][table] == 1
        again.stop()
