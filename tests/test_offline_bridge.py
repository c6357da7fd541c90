"""`bridge offline` serves the bridge API: real processes, real sockets, the real Lambdas.

Most tests share one local cloud, started the way a new user would start it: in a
folder with no `dynamodb-logs.toml`, with a `--ws-route` of the folder's own code on the
user's API (with `--iam-auth`), and two extra keys for two more principals. Runs that
need other flags (`--no-bridge`, `--no-iam-auth`, a short maximum connection age, a
restart) start their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import botocore.auth
import pytest
import websockets
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from offline_process import BRIDGE, LOCAL_ENV, OfflineProcess
from websockets.exceptions import InvalidStatus

from bridge.core import wire
from bridge.core.names import (
    BRIDGE_FUNCTIONS,
    BRIDGE_HANDLERS,
    LOCAL_ACCOUNT,
    archive_arn,
    bridge_rule_name,
    bridge_rule_pattern,
    bridge_table_name,
    bus_arn,
    function_arn,
)
from bridge.offline.ports import check_port_free, free_port

AWS = Path(sys.executable).with_name("aws")
REGION = "us-east-1"
ALICE_ARN = "arn:aws:iam::123456789012:user/alice"
ALICE = ("alice", "alice-SECRET")  # a key of its own principal (--iam-key with an ARN)
BOB = ("bob", "bob-SECRET")  # --iam-key without an ARN: user/bob in the local account
LOCAL = ("local", "local")  # always accepted: the pair `bridge offline` prints
TABLE = bridge_table_name("local")

# The user's own $connect handler, in the user's own folder: it writes the identity API
# Gateway reported into a file named after the `probe` query parameter.
IDENTITY_ROUTE = """
import json
from pathlib import Path


def handler(event, context):
    context_ = event["requestContext"]
    if context_["routeKey"] == "$connect":
        probe = (event.get("queryStringParameters") or {})["probe"]
        Path(f"identity-{probe}.json").write_text(json.dumps(context_["identity"]))
    return {"statusCode": 200}
"""


# --------------------------------------------------------------------------- helpers


def signed(url: str, key: tuple[str, str], query: str = "", signed_at: datetime | None = None):
    """``url`` presigned as a bridge client signs it (SigV4 query auth, execute-api)."""
    request = AWSRequest(
        method="GET", url=url.replace("ws://", "https://") + (f"?{query}" if query else "")
    )
    auth = SigV4QueryAuth(Credentials(*key), "execute-api", REGION, expires=300)
    if signed_at is None:
        auth.add_auth(request)
    else:
        with mock.patch.object(botocore.auth, "get_current_datetime", lambda: signed_at):
            auth.add_auth(request)
    return request.url.replace("https://", "ws://")


async def refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(url, open_timeout=30)
    return refused.value.response.status_code


async def request(ws: Any, message: Any, answer: str, timeout: float = 30) -> dict[str, Any]:
    """Send one wire message and wait for the reply with action ``answer``."""
    await ws.send(wire.encode(message))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if reply.get("action") == answer:
            return reply


def dynamodb(offline: OfflineProcess) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=offline.started["dynamodb"],
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def aws(offline: OfflineProcess, *args: str) -> Any:
    """The AWS CLI against the local cloud, as a user would run it (its printed exports)."""
    result = subprocess.run(
        [str(AWS), *args, "--output", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, **offline.started["exports"]},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_bridge(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BRIDGE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **LOCAL_ENV},
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineProcess]:
    cwd = tmp_path_factory.mktemp("new-user")
    (cwd / "app").mkdir()
    (cwd / "app" / "__init__.py").write_text("")
    (cwd / "app" / "ws.py").write_text(IDENTITY_ROUTE)
    offline = OfflineProcess(
        cwd,
        "--iam-auth",
        "--ws-route",
        "$connect=app.ws.handler",
        "--iam-key",
        f"{ALICE[0]}:{ALICE[1]}:{ALICE_ARN}",
        "--iam-key",
        f"{BOB[0]}:{BOB[1]}",
    ).start()
    yield offline
    offline.stop()


# --------------------------------------------------------------------------- the port


def test_the_bridge_api_has_its_own_port_and_management_endpoint(cloud: OfflineProcess) -> None:
    port = cloud.ports["bridge"]
    started = cloud.started
    assert started["bridge"] == f"ws://127.0.0.1:{port}/local"
    assert started["bridge_management"] == f"http://127.0.0.1:{port}/local"
    assert started["bridge_iam_auth"] is True
    assert started["exports"]["BRIDGE_WEBSOCKET_URL"] == started["bridge"]
    # the printed management endpoint stays the user's API's (its routes post there)
    user_management = f"http://127.0.0.1:{cloud.ports['ws']}/local"
    assert started["exports"]["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"] == user_management
    with pytest.raises(urllib.error.HTTPError) as gone:  # @connections answers on this port
        urllib.request.urlopen(f"http://127.0.0.1:{port}/local/@connections/nobody", timeout=30)
    assert gone.value.code == 410
    assert gone.value.headers["x-amzn-ErrorType"] == "GoneException"


@pytest.mark.parametrize(
    "case", ["unsigned", "wrong secret", "unknown key", "tampered", "expired", "other region"]
)
async def test_the_bridge_refuses_connects_not_signed_by_a_known_key(
    cloud: OfflineProcess, case: str
) -> None:
    url = cloud.started["bridge"]
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)  # with a 5-minute lifetime
    attempt = {
        "unsigned": lambda: f"{url}?probe=x",
        "wrong secret": lambda: signed(url, (ALICE[0], "not-the-secret")),
        "unknown key": lambda: signed(url, ("mallory", "mallory")),
        "tampered": lambda: signed(url, LOCAL, "probe=x").replace("probe=x", "probe=y"),
        "expired": lambda: signed(url, LOCAL, signed_at=ten_minutes_ago),
        "other region": lambda: signed(url, LOCAL).replace(REGION, "eu-west-1"),
    }[case]()
    assert await refused_status(attempt) == 403


async def test_signed_connects_reach_the_bridge_lambdas_as_their_own_principals(
    cloud: OfflineProcess,
) -> None:
    """local/local and an --iam-key open sessions of their own: the connect Lambda saw
    each principal's ARN, and hello/ping ran bridge-message, whose replies came back
    through the bridge port's own @connections endpoint."""
    url = cloud.started["bridge"]
    name = f"s{uuid.uuid4().hex[:8]}"
    async with (
        websockets.connect(signed(url, LOCAL), open_timeout=30) as mine,
        websockets.connect(signed(url, ALICE), open_timeout=30) as alices,
    ):
        for ws in (mine, alices):
            hello = wire.Hello(version=wire.PROTOCOL_VERSION, client="test", session=name)
            welcome = await request(ws, hello, "welcome")
            assert welcome["session"] == name
            assert (await request(ws, wire.Ping("n1"), "pong"))["nonce"] == "n1"
    sessions = dynamodb(cloud).query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "sessions"}},
    )["Items"]
    owners = {item["sk"]["S"] for item in sessions if item["sk"]["S"].endswith(f"#{name}")}
    assert owners == {f"arn:aws:iam::{LOCAL_ACCOUNT}:user/local#{name}", f"{ALICE_ARN}#{name}"}


async def test_the_connect_handler_sees_the_principal_of_each_key(cloud: OfflineProcess) -> None:
    """On the user's API (--iam-auth) the same keys work, and `identity` has API
    Gateway's IAM fields; --iam-auth still refuses what it refused."""
    url = cloud.started["websocket"]
    assert await refused_status(f"{url}?probe=none") == 403
    assert await refused_status(signed(url, (BOB[0], "wrong"), "probe=wrong")) == 403
    for probe, key in (("local", LOCAL), ("alice", ALICE), ("bob", BOB)):
        async with websockets.connect(signed(url, key, f"probe={probe}"), open_timeout=30):
            pass  # open: $connect ran (before the handshake) and accepted it
    seen = {
        p: json.loads((cloud.cwd / f"identity-{p}.json").read_text())
        for p in ("local", "alice", "bob")
    }
    assert seen["local"]["userArn"] == f"arn:aws:iam::{LOCAL_ACCOUNT}:user/local"
    assert seen["bob"]["userArn"] == f"arn:aws:iam::{LOCAL_ACCOUNT}:user/bob"
    assert seen["alice"]["userArn"] == ALICE_ARN
    assert seen["alice"]["accountId"] == "123456789012"
    assert seen["alice"]["caller"] == seen["alice"]["user"]
    assert seen["alice"]["caller"].startswith("AIDA")  # an IAM user's id, as AWS shapes it
    for probe, key in (("local", LOCAL), ("alice", ALICE), ("bob", BOB)):
        assert seen[probe]["accessKey"] == key[0]
    assert len({identity["userArn"] for identity in seen.values()}) == 3
    assert len({identity["caller"] for identity in seen.values()}) == 3


async def test_handlers_resolve_from_the_current_directory_without_a_definition_file(
    cloud: OfflineProcess,
) -> None:
    """A new user's folder has no dynamodb-logs.toml: `--ws-route app.ws.handler` is
    found and run from there, and the packaged definition's handlers still run: a
    signup reaches the users projection."""
    from bridge.store import LogStore

    assert not (cloud.cwd / "dynamodb-logs.toml").exists()
    url = signed(cloud.started["websocket"], LOCAL, "probe=cwd")
    async with websockets.connect(url, open_timeout=30):
        pass
    assert json.loads((cloud.cwd / "identity-cwd.json").read_text())["accessKey"] == "local"
    resource = boto3.resource(
        "dynamodb",
        endpoint_url=cloud.started["dynamodb"],
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    user = uuid.uuid4().hex[:8]
    LogStore(resource.Table("local-dynamodb-logs")).append(
        "users", user, "signup", {"id": user, "name": "n", "email": "e@example.com"}
    )
    core = resource.Table("local-core")
    key = {"pk": f"users#{user}", "sk": f"users#{user}"}  # the projection's item
    assert await wait_for(lambda: core.get_item(Key=key).get("Item")), "no projection"


# --------------------------------------------------------------------------- rules, functions


def test_the_forward_rules_are_on_the_bus_and_the_replay_rule_can_be_named(
    cloud: OfflineProcess,
) -> None:
    rules = {
        rule["Name"]: rule
        for rule in aws(cloud, "events", "list-rules", "--event-bus-name", "dynamodb-log")["Rules"]
    }
    forward = function_arn(REGION, LOCAL_ACCOUNT, "local", "bridge-forward")
    for kind in ("live", "replay"):
        rule = rules[bridge_rule_name("local", kind)]
        assert json.loads(rule["EventPattern"]) == bridge_rule_pattern(kind)
        targets = aws(
            cloud, "events", "list-targets-by-rule", "--event-bus-name", "dynamodb-log",
            "--rule", rule["Name"],
        )["Targets"]  # fmt: skip
        assert [target["Arn"] for target in targets] == [forward]
    events = boto3.client(
        "events",
        endpoint_url=cloud.started["events"],
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    replay = f"r{uuid.uuid4().hex[:8]}"
    replay_rule = rules[bridge_rule_name("local", "replay")]["Arn"]
    now = datetime.now(UTC)
    window = {"EventStartTime": now - timedelta(hours=1), "EventEndTime": now}
    events.start_replay(
        ReplayName=replay,
        EventSourceArn=archive_arn(REGION, LOCAL_ACCOUNT),
        Destination={"Arn": bus_arn(REGION, LOCAL_ACCOUNT), "FilterArns": [replay_rule]},
        **window,
    )
    described = events.describe_replay(ReplayName=replay)
    assert described["Destination"]["FilterArns"] == [replay_rule]


def test_the_bridge_functions_get_the_stack_s_environment(cloud: OfflineProcess) -> None:
    functions = {f["FunctionName"]: f for f in aws(cloud, "lambda", "list-functions")["Functions"]}
    bridge_management = cloud.started["bridge_management"]
    for name in BRIDGE_FUNCTIONS:
        function = functions[f"dynamodb-logs-local-{name}"]
        assert function["Handler"] == BRIDGE_HANDLERS[name]
        variables = function["Environment"]["Variables"]
        assert variables["BRIDGE_TABLE"] == TABLE
        assert variables["BRIDGE_BUFFER_MAX_EVENTS"] == "10000"
        assert variables["BRIDGE_SESSION_TTL"] == "86400"
        assert variables["BRIDGE_ALLOWED_IPS"] == ""
        assert variables["EVENT_BUS_NAME"] == "dynamodb-log"
        # the bridge port's @connections, not the user's API's
        assert variables["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"] == bridge_management
    route = functions["dynamodb-logs-local-ws-connect"]["Environment"]["Variables"]
    user_management = f"http://127.0.0.1:{cloud.ports['ws']}/local"
    assert route["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"] == user_management
    assert "BRIDGE_TABLE" not in route


def test_the_bridge_table_has_its_keys_and_ttl(cloud: OfflineProcess) -> None:
    client = dynamodb(cloud)
    table = client.describe_table(TableName=TABLE)["Table"]
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {
        ("pk", "HASH"),
        ("sk", "RANGE"),
    }
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "S"),
    }
    ttl = client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")


# --------------------------------------------------------------------------- other runs


async def test_no_iam_auth_takes_unsigned_connects_loudly_and_max_age_applies(
    tmp_path: Path,
) -> None:
    offline = await asyncio.to_thread(
        OfflineProcess(tmp_path, "--no-iam-auth", "--max-connection-age", "2").start
    )
    try:
        assert offline.started["bridge_iam_auth"] is False
        warning = [line for line in offline.log.read_text().splitlines() if "--no-iam-auth" in line]
        assert len(warning) == 1 and "UNSIGNED" in warning[0]
        async with websockets.connect(offline.started["bridge"], open_timeout=30) as ws:
            assert (await request(ws, wire.Ping("x"), "pong"))["nonce"] == "x"
            # the gateway's maximum connection age holds on the bridge API too
            await asyncio.wait_for(ws.wait_closed(), 30)
        assert (ws.close_code, ws.close_reason) == (1001, "Going away")
    finally:
        await asyncio.to_thread(offline.stop)


def test_no_bridge_serves_no_bridge(tmp_path: Path) -> None:
    with OfflineProcess(tmp_path, "--no-bridge") as offline:
        started = offline.started
        assert started["bridge"] is None
        assert "BRIDGE_WEBSOCKET_URL" not in started["exports"]
        check_port_free("127.0.0.1", offline.ports["bridge"], "--bridge-port")  # not bound
        rules = aws(offline, "events", "list-rules", "--event-bus-name", "dynamodb-log")
        assert not [r for r in rules["Rules"] if "-bridge-" in r["Name"]]
        assert rules["Rules"]  # the subscribers' rules are there
        functions = aws(offline, "lambda", "list-functions")["Functions"]
        assert not [f for f in functions if "-bridge-" in f["FunctionName"]]
        assert TABLE not in dynamodb(offline).list_tables()["TableNames"]
        offline.stop()


def test_the_bridge_table_is_saved_restored_and_cleaned(tmp_path: Path) -> None:
    item = {"pk": {"S": "test"}, "sk": {"S": "kept"}, "ttl": {"N": "4102444800"}}
    with OfflineProcess(tmp_path, "--autosave", "0") as first:
        dynamodb(first).put_item(TableName=TABLE, Item=item)
        assert first.stop()["saved_tables"][TABLE] >= 1
    with OfflineProcess(tmp_path, "--autosave", "0", ports=first.ports) as second:
        client = dynamodb(second)
        got = client.get_item(TableName=TABLE, Key={"pk": item["pk"], "sk": item["sk"]})
        assert got["Item"] == item
        ttl = client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
        assert ttl["TimeToLiveStatus"] == "ENABLED"  # switched on again after the restore
        second.stop()
    cleaned = run_bridge(tmp_path, "clean", "--yes")
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"table {TABLE} (" in cleaned.stdout
    assert not (tmp_path / "db").exists()


def test_clean_deletes_the_bridge_table_at_a_local_endpoint(tmp_path: Path, moto_url: str) -> None:
    stage = f"br{uuid.uuid4().hex[:8]}"
    args = ("--dynamodb-endpoint", moto_url, "--stage", stage)
    with OfflineProcess(tmp_path, *args) as offline:
        assert offline.started["bridge"].endswith(f"/{stage}")
        offline.stop()
    client = boto3.client(
        "dynamodb",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    assert bridge_table_name(stage) in client.list_tables()["TableNames"]
    cleaned = run_bridge(
        tmp_path, "clean", "--dynamodb-endpoint", moto_url, "--stage", stage, "--yes"
    )
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"{stage}-dynamodb-logs, {stage}-core, {stage}-bridge" in cleaned.stdout
    assert bridge_table_name(stage) not in client.list_tables()["TableNames"]


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        (["alices3cr3t1"], "expected KEY:SECRET"),
        (["alice:"], "a non-empty SECRET"),
        ([":s3cr3t1"], "expected KEY:SECRET"),
        (["al/ice:s3cr3t1"], "KEY of letters"),
        (["alice:s3cr3t1:arn:aws:iam::123:user/alice"], "is not an IAM principal ARN"),
        (["local:s3cr3t1"], "the built-in local key"),
        (["alice:s3cr3t1", "alice:s3cr3t2"], "is given twice"),
    ],
)
def test_a_bad_iam_key_is_one_line_exit_2(tmp_path: Path, keys: list[str], says: str) -> None:
    ports = [f"--{name}-port={free_port()}" for name in ("dynamodb", "events", "ws", "bridge")]
    args = [arg for key in keys for arg in ("--iam-key", key)]
    result = run_bridge(tmp_path, "offline", *ports, *args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert says in result.stderr and result.stderr.startswith("error: --iam-key")
    assert "s3cr3t" not in result.stderr  # a secret never ends up in a log
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


async def wait_for(check: Any, timeout: float = 60.0) -> Any:
    """Poll ``check`` (in a thread: it does I/O) until it is truthy or time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := await asyncio.to_thread(check)) and loop.time() < deadline:
        await asyncio.sleep(0.1)
    return value


def test_a_key_s_principal_is_reported_in_aws_s_shapes() -> None:
    from bridge.offline.gateway import SigningKey, parse_signing_key

    role = "arn:aws:sts::123456789012:assumed-role/Dev/alice@example.com"
    first = parse_signing_key(f"ASIAFIRST:s:{role}").caller()
    refreshed = parse_signing_key(f"ASIASECOND:s:{role}").caller()  # an SSO refresh
    assert (first.user_arn, first.account_id) == (role, "123456789012")
    assert first.principal_id.startswith("AROA")
    assert first.principal_id.endswith(":alice@example.com")
    assert first.principal_id == refreshed.principal_id  # one principal, two keys
    assert (first.access_key, refreshed.access_key) == ("ASIAFIRST", "ASIASECOND")
    root = SigningKey("k", "s", "arn:aws:iam::123456789012:root").caller()
    assert root.principal_id == "123456789012"
    plain = parse_signing_key("bob:s").caller()
    assert (plain.user_arn, plain.principal_id) == ("arn:aws:iam::000000000000:user/bob", "bob")
