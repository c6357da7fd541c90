"""`bridge replay --from archive`: an archive replayed through the bridge into a sink.

The cloud that plays AWS is `bridge offline --stage dev --aws-like-replays`: its replays
come in 1-minute slices, shuffled, some events after COMPLETED — what a replay client
meets in AWS. The replay must still deliver every event in range exactly once, reach
only its own session (not a live session of the same subscription, not a subscriber),
and know when it is done.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.conditions import Key
from test_bridge_e2e import (
    DELIVERY_TIMEOUT,
    Cloud,
    Connect,
    connect,  # noqa: F401 - the fixture
    eventually,
    sink_events,
    start_cloud,
    write_definition,
)

from bridge.client.archive_replay import ReplayRequest, run_archive_replay
from bridge.client.run import ConnectSettings
from bridge.core.names import core_table_name, log_table_name
from bridge.store import LogStore

LOG = "replays"  # the recorder subscriber of the dev cloud listens to this log
EVENTS = 60


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    cwd = tmp_path_factory.mktemp("aws-like")
    write_definition(cwd)
    cloud = start_cloud(cwd, "--stage", "dev", "--aws-like-replays")
    yield cloud
    cloud.offline.stop()


def recorded(cloud: Cloud) -> set[str]:
    """What the dev cloud's subscriber (the recorder) saw: ``{event id}#{replay or live}``."""
    items = cloud.table(core_table_name("dev")).query(
        KeyConditionExpression=Key("pk").eq(f"recorded#{LOG}"), ConsistentRead=True
    )["Items"]
    return {str(item["sk"]) for item in items}


def replay(cloud: Cloud, out: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> dict[str, Any]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", cloud.offline.events_url)
    for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")):
        monkeypatch.setenv(name, value)
    settings = ConnectSettings(
        stage="dev", url=cloud.url, sink="sqlite", out=out, pattern={"detail": {"log": [LOG]}}
    )
    request = ReplayRequest(connect=settings, quiet=3.0, poll=0.5, **kw)
    return run_archive_replay(request, install_signals=False)


def test_an_archive_replay_delivers_each_event_once_to_its_own_session_only(
    aws: Cloud,
    connect: Connect,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live_db = tmp_path / "live.db"
    live = connect(aws, "live", "--log", LOG, "--out", str(live_db)).start()
    aws.wait_subscribed("live")
    start = datetime.now(UTC) - timedelta(seconds=1)
    store = LogStore(aws.table(log_table_name("dev")))
    for n in range(EVENTS // 4):
        for step in range(4):
            store.append(LOG, f"u{n}", f"step{step}", {"id": f"u{n}"}, expected_version=step)
    live.wait_for(lambda c: len(c.events) >= EVENTS, DELIVERY_TIMEOUT, f"{EVENTS} live events")
    live_ids = {line["event"]["id"] for line in live.events}
    assert len(live_ids) == EVENTS
    eventually(lambda: len(recorded(aws)) >= EVENTS, DELIVERY_TIMEOUT, "the recorder's events")

    out = tmp_path / "replayed.db"
    summary = replay(aws, out, monkeypatch, start=start, end=datetime.now(UTC))

    assert summary["state"] == "COMPLETED" and summary["ok"], summary
    rows = sink_events(out)
    assert sorted(row["id"] for row in rows) == sorted(live_ids)  # each event once
    assert {row["replay-name"] for row in rows} == {summary["replay"]}
    assert summary["written"] == EVENTS
    assert summary["received"] - summary["duplicates"] == EVENTS
    # The live session of the same subscription and the subscriber got no replayed event.
    got_live = live.stop()
    assert got_live["received"] - got_live["duplicates"] == EVENTS
    assert all("replay-name" not in row for row in sink_events(live_db))
    assert recorded(aws) == {f"{id}#live" for id in live_ids}
    assert summary["replay"] not in aws.sessions()  # done: its session was dropped


def test_an_unknown_archive_or_an_empty_range_is_one_clear_line(
    aws: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.core.errors import BridgeError, ValidationError

    now = datetime.now(UTC)
    with pytest.raises(BridgeError, match="no archive 'nope' in stage dev"):
        replay(
            aws, tmp_path / "x.db", monkeypatch, start=now, end=now + timedelta(1), archive="nope"
        )
    with pytest.raises(ValidationError, match="--start must be before --end"):
        replay(aws, tmp_path / "x.db", monkeypatch, start=now, end=now)
    assert not (tmp_path / "x.db").exists()  # nothing half-written


def test_a_replay_to_rules_reaches_only_the_named_subscriber(
    aws: Cloud,
    connect: Connect,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rebuilding one subscriber's read model: FilterArns names its rule only, so the
    bridge (a session subscribed to the log) sees nothing of the replay."""
    from bridge.client.archive_replay import plan_rules_replay, run_rules_replay
    from bridge.core.errors import BridgeError
    from bridge.core.names import rule_name

    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", aws.offline.events_url)
    live_db = tmp_path / "live.db"
    live = connect(aws, "rules-live", "--log", LOG, "--out", str(live_db)).start()
    aws.wait_subscribed("rules-live")
    start = datetime.now(UTC) - timedelta(seconds=1)
    store = LogStore(aws.table(log_table_name("dev")))
    for n in range(8):
        store.append(LOG, f"r{n}", "step0", {"id": f"r{n}"}, expected_version=0)
    live.wait_for(lambda c: len(c.events) >= 8, DELIVERY_TIMEOUT, "8 live events")
    ids = {line["event"]["id"] for line in live.events}
    before = recorded(aws)
    assert {f"{id}#live" for id in ids} <= before

    settings = ConnectSettings(stage="dev")
    recorder = rule_name("dev", "recorder")
    with pytest.raises(BridgeError, match="no rule 'nope' on the bus"):
        plan_rules_replay(
            settings, start, datetime.now(UTC), [recorder, "nope"], "dynamodb-logs-archive"
        )
    events, plan = plan_rules_replay(
        settings, start, datetime.now(UTC), [recorder], "dynamodb-logs-archive"
    )
    assert plan.account == "000000000000" and list(plan.rules) == [recorder]
    assert any(line.startswith(f"rule {recorder} (arn:aws:events:") for line in plan.lines())
    result = run_rules_replay(events, plan, poll=0.2)
    assert result["state"] == "COMPLETED" and result["ok"], result
    name = result["replay"]
    eventually(
        lambda: {f"{id}#{name}" for id in ids} <= recorded(aws),
        DELIVERY_TIMEOUT,
        "the subscriber's replayed events",
    )
    got = live.stop()
    assert got["received"] - got["duplicates"] == 8  # the bridge: live events only
    assert all("replay-name" not in row for row in sink_events(live_db))


def test_a_killed_archive_replay_reattached_finishes_with_every_event_once(
    aws: Cloud, tmp_path: Path
) -> None:
    """`bridge replay --from archive` killed with SIGKILL after its first rows, then
    `bridge replay attach NAME` (found with `bridge replay list`): every event once."""
    import os
    import signal
    import subprocess

    from bridge_process import run_bridge
    from offline_process import BRIDGE, LOCAL_ENV

    env = {"AWS_ENDPOINT_URL_EVENTBRIDGE": aws.offline.events_url}
    start = datetime.now(UTC) - timedelta(seconds=1)
    store = LogStore(aws.table(log_table_name("dev")))
    before = len(recorded(aws))
    for n in range(100):
        store.append(LOG, f"k{n}", "step0", {"id": f"k{n}"}, expected_version=0)
    ids = {f"replays#k{n}#stream" for n in range(100)}
    eventually(
        lambda: len(recorded(aws)) >= before + 100, DELIVERY_TIMEOUT, "the 100 events published"
    )
    end = datetime.now(UTC)
    out = tmp_path / "replayed.db"
    common = ["--stage", "dev", "--url", aws.url, "--to", "sqlite", "--out", str(out)]
    args = [
        *("replay", "--from", "archive", "--start", start.isoformat(), "--end", end.isoformat()),
        *("--log", LOG, "--quiet-period", "30", *common),
    ]
    first = subprocess.Popen(
        [str(BRIDGE), *args],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **LOCAL_ENV, **env},
        start_new_session=True,
    )
    try:
        eventually(lambda: len(sink_events(out)) >= 10, DELIVERY_TIMEOUT, "the first rows")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # long before its 30 s quiet period ends
        first.communicate()
    listed = run_bridge(tmp_path, "replay", "list", "--stage", "dev", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    name = json.loads(listed.stdout)["replays"][0]["name"]  # newest first
    assert name.startswith("bridge-dev-")

    attached = run_bridge(
        tmp_path, "replay", "attach", name, *common, "--quiet-period", "3", "--json",
        env=env, timeout=DELIVERY_TIMEOUT,
    )  # fmt: skip
    assert attached.returncode == 0, attached.stderr
    summary = json.loads(attached.stdout)["summary"]
    assert summary["state"] == "COMPLETED" and summary["replay"] == name
    rows = [row for row in sink_events(out) if row["detail"]["key"]["pk"] in ids]
    assert sorted(row["detail"]["key"]["pk"] for row in rows) == sorted(ids)  # each once
    assert {row["replay-name"] for row in rows} == {name}


def test_a_replay_to_rules_without_yes_only_says_what_it_would_do(
    aws: Cloud, tmp_path: Path
) -> None:
    from bridge_process import run_bridge

    env = {"AWS_ENDPOINT_URL_EVENTBRIDGE": aws.offline.events_url}

    def replays() -> int:
        listed = run_bridge(tmp_path, "replay", "list", "--stage", "dev", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        return len(json.loads(listed.stdout)["replays"])

    known = replays()
    planned = run_bridge(
        tmp_path, "replay", "--from", "archive", "--stage", "dev", "--start", "-1h",
        "--end", "now", "--to", "rules", "--rule", "dynamodb-logs-dev-recorder", env=env,
    )  # fmt: skip
    assert planned.returncode == 1
    assert "would replay (add --yes to start it):" in planned.stderr
    assert "rule dynamodb-logs-dev-recorder (arn:aws:events:" in planned.stderr
    assert replays() == known  # nothing was started


def test_a_rebuild_from_the_cloud_archive_holds_its_log_as_of_the_moment(
    aws: Cloud, tmp_path: Path
) -> None:
    """`bridge rebuild --from archive`: the cloud's archive replayed through the bridge
    into DIR/archive.db, then rebuilt: the rebuilt log holds every log item the cloud
    had, and the cloud's subscriber saw nothing of the replay."""
    from bridge_process import run_bridge

    from bridge.offline.reader import read_table

    store = LogStore(aws.table(log_table_name("dev")))
    seen = len(recorded(aws))
    store.append(LOG, "rebuilt", "step0", {"id": "rebuilt"}, expected_version=0)
    cloud_items = aws.table(log_table_name("dev")).scan(ConsistentRead=True)["Items"]
    expected = {(str(item["pk"]), int(item["sk"])) for item in cloud_items}

    def grown() -> set[str] | None:
        found = recorded(aws)
        return found if len(found) > seen else None

    # Published live: the subscriber has it, and so has the archive.
    before = eventually(grown, DELIVERY_TIMEOUT, "the last event at the subscriber")
    moment = datetime.now(UTC)
    into = tmp_path / "rebuilt"
    env = {"AWS_ENDPOINT_URL_EVENTBRIDGE": aws.offline.events_url}
    done = run_bridge(
        tmp_path, "rebuild", "--as-of", moment.isoformat(), "--from", "archive",
        "--archive-stage", "dev", "--url", aws.url, "--into", str(into), "--json",
        env=env, timeout=DELIVERY_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rebuilt = read_table(into / "db", log_table_name("local"))
    keys = {(item["pk"]["S"], int(item["sk"]["N"])) for item in rebuilt.items.values()}
    assert keys == expected
    assert (into / "archive.db").is_file()
    assert recorded(aws) == before  # the replay reached no subscriber of the cloud
