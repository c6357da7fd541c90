"""`bridge rebuild --as-of T`: the users read model as it was at three moments.

A real `bridge offline` records a history in four phases, each in a later second than
the one before (archived times are whole seconds): generated users; a second phase of
moves and a newcomer; a third with a new phone number, a newcomer's number and a signup
over 10 KB (published ``partial``); and a fourth after the last moment. For each moment
T (the time of its phase's last event) `bridge rebuild` builds a database from the
archive; its users read model must equal the projection folded here, independently,
from only the events written up to T. `bridge diff` between two rebuilt moments lists
exactly the users whose events fall between them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from offline_process import BRIDGE, LOCAL_ENV, OfflineProcess

from bridge.archive import count, from_iso, iter_events
from bridge.core.dynamo_json import load_item
from bridge.core.log import from_dynamo
from bridge.fake import fake_users
from bridge.offline import reader
from bridge.store import LogStore

USERS, SEED = 6, 11
T = TypeVar("T")
Event = tuple[str, int, str, dict[str, Any]]  # id, version, type, payload


def eventually(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something (a condition, not a tuned sleep)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.1)
    return value


def bridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BRIDGE), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **LOCAL_ENV},
        timeout=300,
    )


def fold(events: list[Event]) -> dict[str, dict[str, Any]]:
    """The seed handler's read model of these events, folded without the project's code."""
    users: dict[str, dict[str, Any]] = {}
    for id, version, type, p in events:
        key = f"users#{id}"
        user = users.setdefault(id, {"pk": key, "sk": key, "type": "user", "id": id})
        if type == "signup":
            user.update(name=p["name"], email=p["email"])
        elif type == "addPhoneNumber":
            if user.get("phoneNumber") != p["phoneNumber"]:
                user.pop("verifiedPhoneNumber", None)
            user["phoneNumber"] = p["phoneNumber"]
        elif type == "verifyPhoneNumber":
            user["verifiedPhoneNumber"] = True
        elif type == "addLocation":
            user["location"] = {"long": p["long"], "lat": p["lat"]}
        user["version"] = version
    return users


def rebuilt_users(folder: Path) -> dict[str, dict[str, Any]]:
    core = reader.read_table(folder / "db", "local-core")
    items = (from_dynamo(load_item(wire)) for wire in core.items.values())
    return {item["id"]: item for item in items if item.get("type") == "user"}


def last_archived(db: Path) -> str:
    """The createdAt of the newest archived event."""
    return max(e["time"] for e in iter_events(db))


def next_second(moment: str) -> None:
    """Wait until the clock is past ``moment``'s second, so later events are later."""
    after = from_iso(moment).timestamp() + 1
    eventually(lambda: time.time() >= after, 5, "next second")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("rebuild")
    source = root / "source"
    source.mkdir()
    db = source / "db"
    generated = list(fake_users(USERS, SEED))
    ids = [events[0].id for events in generated]
    phases: list[list[Event]] = [
        [(e.id, e.version, e.type, e.payload) for events in generated for e in events]
    ]
    moments: list[str] = []
    with OfflineProcess(source, "--no-bridge") as offline:
        store = LogStore(
            boto3.resource(
                "dynamodb",
                endpoint_url=offline.dynamodb_url,
                region_name="us-east-1",
                aws_access_key_id="local",
                aws_secret_access_key="local",
            ).Table("local-dynamodb-logs")
        )

        def archived(total: int) -> str:
            eventually(lambda: count(db) == total, 60, f"{total} archived events")
            moment = last_archived(db)
            next_second(moment)
            return moment

        run = bridge(
            "generate", "--users", str(USERS), "--seed", str(SEED),
            "--endpoint-url", offline.dynamodb_url, cwd=source,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        moments.append(archived(USERS * 4))

        def write(*events: tuple[str, str, dict[str, Any]]) -> None:
            phase = []
            for id, type, payload in events:
                version = store.append("users", id, type, {"id": id, **payload})
                phase.append((id, version, type, {"id": id, **payload}))
            phases.append(phase)

        write(
            (ids[0], "addLocation", {"long": 2.35, "lat": 48.85}),
            (ids[1], "addLocation", {"long": -0.1278, "lat": 51.5074}),
            ("newcomer", "signup", {"name": "New", "email": "new@example.com"}),
        )
        moments.append(archived(USERS * 4 + 3))
        write(
            (ids[2], "addPhoneNumber", {"phoneNumber": "+44 20 7946 0000"}),
            ("newcomer", "addPhoneNumber", {"phoneNumber": "+33 1 23 45 67 89"}),
            ("big", "signup", {"name": "B" * 11_000, "email": "big@example.com"}),
        )
        moments.append(archived(USERS * 4 + 6))
        write((ids[3], "addLocation", {"long": 139.69, "lat": 35.68}))  # after every moment
        archived(USERS * 4 + 7)
        offline.stop()
    partial = [e for e in iter_events(db) if e["detail"].get("partial")]
    assert [e["detail"]["key"]["pk"] for e in partial] == ["users#big#stream"]
    return {"root": root, "db": db, "phases": phases, "moments": moments}


@pytest.fixture(scope="module")
def rebuilt(history: dict[str, Any]) -> list[dict[str, Any]]:
    """`bridge rebuild --as-of T` for each moment, into at1/, at2/, at3/: the summaries."""
    root = history["root"]
    work = root / "work"  # no dynamodb-logs.toml: the built-in users projection
    work.mkdir()
    summaries = []
    for k, moment in enumerate(history["moments"], start=1):
        run = bridge(
            "rebuild", "--as-of", moment, "--db", str(history["db"]),
            "--into", str(root / f"at{k}"), "--json", cwd=work,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        summaries.append(json.loads(run.stdout))
    return summaries


def test_the_read_model_rebuilt_as_of_each_moment_is_the_fold_of_its_events(
    history: dict[str, Any], rebuilt: list[dict[str, Any]]
) -> None:
    root, phases = history["root"], history["phases"]
    for k, summary in enumerate(rebuilt, start=1):
        events = [event for phase in phases[:k] for event in phase]
        assert summary["log_events"] == summary["written"] == summary["published"] == len(events)
        assert summary["failures"] == [] and summary["partial_missing"] == []
        assert summary["partial_filled"] == (1 if k >= 3 else 0)  # from the source's log table
        assert summary["already_there"] == summary["other_events"] == 0
        assert rebuilt_users(root / f"at{k}") == fold(events)
        logged = reader.read_table(root / f"at{k}" / "db", "local-dynamodb-logs").items.values()
        keys = sorted((item["pk"]["S"], int(item["sk"]["N"])) for item in logged)
        assert keys == sorted((f"users#{id}#stream", v) for id, v, _, _ in events)

    # The fourth phase came after the last moment: not in any rebuild.
    late, _, _, _ = phases[3][0]
    assert rebuilt_users(root / "at3")[late]["version"] == 4


def test_the_diff_of_two_moments_lists_exactly_the_users_of_the_events_between(
    history: dict[str, Any], rebuilt: list[dict[str, Any]]
) -> None:
    root, phases = history["root"], history["phases"]
    for a, b in ((1, 2), (2, 3), (1, 3)):
        run = bridge("diff", f"at{a}", f"at{b}", "--json", cwd=root)
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout)
        listed = [entry["key"]["pk"] for kind in ("added", "removed", "changed")
                  for entry in result[kind]]  # fmt: skip
        between = {f"users#{id}" for phase in phases[a:b] for id, _, _, _ in phase}
        assert sorted(listed) == sorted(between)  # each once, no other
        assert result["removed"] == []
        before = {
            f"users#{id}" for phase in phases[:a] for id, _, _, _ in phase
        }  # who existed at the earlier moment: changed, the others added
        assert {e["key"]["pk"] for e in result["changed"]} == between & before
        assert {e["key"]["pk"] for e in result["added"]} == between - before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as-of", "noon", "--into", "x"], "--as-of: 'noon' is not a time"),
        (["--as-of", "2024-05-01T12:00:00Z", "--into", "at1"], "at1/db exists"),
        (["--as-of", "2024-05-01T12:00:00Z", "--db", "nothing", "--into", "x"], "no archive at"),
        (
            ["--as-of", "2024-05-01T12:00:00Z", "--function", "orders", "--into", "x"],
            "--function orders: no such subscriber",
        ),
    ],
)
def test_a_bad_argument_is_one_line_and_writes_nothing(
    history: dict[str, Any], rebuilt: list[dict[str, Any]], args: list[str], message: str
) -> None:
    root = history["root"]
    before = sorted(p.name for p in root.iterdir())
    if "--db" not in args:
        args = [*args, "--db", str(history["db"])]
    run = bridge("rebuild", *args, cwd=root)
    assert run.returncode != 0 and run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line.startswith("error: ") and message in line, line
    assert sorted(p.name for p in root.iterdir()) == before  # no x/ left behind


def test_an_empty_moment_rebuilds_empty_tables(
    history: dict[str, Any], rebuilt: list[dict[str, Any]]
) -> None:
    """Before the first event: a database with the stage's tables and nothing in them."""
    root = history["root"]
    run = bridge(
        "rebuild", "--as-of", "2000-01-01T00:00:00Z", "--db", str(history["db"]),
        "--into", str(root / "empty"), cwd=root / "work",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    first, *rest = run.stdout.splitlines()
    assert re.fullmatch(
        r"rebuilt \S+ as of 2000-01-01T00:00:00\.000Z from \S+: 0 log events applied "
        r"\(0 archived up to then\), 0 published, in [\d.]+ s",
        first,
    ), first
    assert rest == ["no handler failures"]
    assert reader.read_table(root / "empty" / "db", "local-core").items == {}
    assert reader.read_table(root / "empty" / "db", "local-dynamodb-logs").items == {}


PICKY = """
def handler(event, context):
    if event["detail"]["payload"].get("name") == "New":
        raise ValueError("no newcomers here")
    return {"ok": True}
"""
PICKY_DEFINITION = """
[functions.users]
handler = "bridge.lambdas.users_projection.handler"
pattern = { source = ["dynamodb-log"], detail = { log = ["users"] } }

[functions.picky]
handler = "picky.handler"
pattern = { source = ["dynamodb-log"], detail = { log = ["users"], type = ["signup"] } }
retry_attempts = 0
on_failure = "failures"

[functions.failures]
handler = "bridge.lambdas.failures.handler"
"""


def test_only_the_named_function_runs_and_its_failures_are_in_the_summary(
    history: dict[str, Any], rebuilt: list[dict[str, Any]]
) -> None:
    root = history["root"]
    project = root / "picky-project"
    project.mkdir()
    (project / "dynamodb-logs.toml").write_text(PICKY_DEFINITION)
    (project / "picky.py").write_text(PICKY)
    run = bridge(
        "rebuild", "--as-of", history["moments"][1], "--db", str(history["db"]),
        "--function", "picky", "--into", str(root / "picky"), "--json", cwd=project,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["functions"] == ["picky"]
    assert summary["written"] == USERS * 4 + 3
    [failure] = summary["failures"]  # the newcomer's signup, once: no retries
    assert failure["functionName"] == "dynamodb-logs-local-picky"
    assert (failure["errorType"], failure["errorMessage"]) == ("ValueError", "no newcomers here")
    assert rebuilt_users(root / "picky") == {}  # the users projection was not named

    text = bridge(
        "rebuild", "--as-of", history["moments"][1], "--db", str(history["db"]),
        "--function", "picky", "--into", str(root / "picky-text"), cwd=project,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[1:] == [
        "1 handler failures (bridge failures list):",
        f"  dynamodb-logs-local-picky {failure_id(root / 'picky-text')}: "
        "ValueError: no newcomers here",
    ]


def failure_id(folder: Path) -> str:
    """The request id of the one failure record stored in a rebuilt core table."""
    core = reader.read_table(folder / "db", "local-core")
    [record] = [i for i in core.items.values() if i["pk"]["S"].startswith("failure#")]
    return str(record["requestId"]["S"])


def test_an_item_a_handler_appended_first_is_not_written_again(target: Any) -> None:
    """The rebuild's write of a log item is conditional on its pk/sk: a saga handler's
    own append of it during the rebuild stays as the handler wrote it, counted once."""
    from bridge.rebuild import RebuildSummary, write_items

    table = target.dynamodb().Table(target.log_table)
    table.put_item(Item={"pk": "emails#1#stream", "sk": 1, "type": "welcomed", "log": "emails",
                         "payload": {"id": "1", "by": "the handler"}})  # fmt: skip
    summary = RebuildSummary(as_of="", source="", into="", functions=[])
    archived = [
        {"pk": "emails#1#stream", "sk": 1, "type": "welcomed", "log": "emails",
         "payload": {"id": "1", "by": "the archive"}},
        {"pk": "emails#1#stream", "sk": 2, "type": "opened", "log": "emails",
         "payload": {"id": "1", "at": 1.5}},
    ]  # fmt: skip
    write_items(table, archived, summary)
    assert (summary.written, summary.already_there) == (1, 1)
    items = table.scan(ConsistentRead=True)["Items"]
    assert sorted((i["pk"], int(i["sk"]), i["payload"].get("by")) for i in items) == [
        ("emails#1#stream", 1, "the handler"),
        ("emails#1#stream", 2, None),
    ]
