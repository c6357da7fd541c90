"""`bridge diff` between two databases built by real `bridge offline` runs.

Run A: 10 generated users, projected, a clean stop. B starts as a copy of A's folder
(a saved moment) and gets known events from a second run: one user moves (version 5),
one signs up, and one read-model item is deleted. B's run is killed with SIGKILL after
the projection is done, under ``--autosave 0``, so B's writes are only in its journal:
the diff must read snapshot and journal alike. It lists exactly those three items.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from offline_process import BRIDGE, LOCAL_ENV, OfflineProcess

from bridge.fake import fake_users
from bridge.offline import journal
from bridge.store import LogStore

USERS, SEED = 10, 4
T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something (a condition, not a tuned sleep)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.2)
    return value


def dynamodb(offline: OfflineProcess) -> Any:
    return boto3.resource(
        "dynamodb",
        endpoint_url=offline.dynamodb_url,
        region_name="us-east-1",
        aws_access_key_id=LOCAL_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def bridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BRIDGE), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **LOCAL_ENV},
        timeout=120,
    )


def user_version(core: Any, id: str) -> int:
    item = core.get_item(Key={"pk": f"users#{id}", "sk": f"users#{id}"}).get("Item")
    return int(item["version"]) if item else 0


@pytest.fixture(scope="module")
def moments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("diff")
    a, b = root / "a", root / "b"
    a.mkdir()
    ids = [events[0].id for events in fake_users(USERS, SEED)]
    with OfflineProcess(a, "--no-bridge") as offline:
        generate = bridge(
            "generate", "--users", str(USERS), "--seed", str(SEED),
            "--endpoint-url", offline.dynamodb_url, cwd=a,
        )  # fmt: skip
        assert generate.returncode == 0, generate.stderr
        core = dynamodb(offline).Table("local-core")
        eventually(lambda: all(user_version(core, id) == 4 for id in ids), 120, "10 users")
        offline.stop()

    shutil.copytree(a, b, ignore=shutil.ignore_patterns("offline.log", "*.lock"))
    moved, gone, new = ids[0], ids[1], "newcomer"
    with OfflineProcess(b, "--no-bridge", "--autosave", "0") as offline:
        resource = dynamodb(offline)
        store = LogStore(resource.Table("local-dynamodb-logs"))
        core = resource.Table("local-core")
        store.append("users", moved, "addLocation", {"id": moved, "long": 2.35, "lat": 48.85})
        store.append("users", new, "signup", {"id": new, "name": "N", "email": "n@example.com"})
        core.delete_item(Key={"pk": f"users#{gone}", "sk": f"users#{gone}"})
        eventually(
            lambda: user_version(core, moved) == 5 and user_version(core, new) == 1,
            60,
            "the projection of the two new events",
        )
        assert offline.process is not None
        offline.process.kill()  # no clean stop: B's new writes are in its journal only
        offline.process.wait()
    assert journal.segments(b / "db"), "B's writes should be in its journal"
    return {"a": a, "b": b, "moved": moved, "gone": gone, "new": new, "root": root}


def test_the_diff_lists_exactly_the_items_the_events_touched(moments: dict[str, Any]) -> None:
    root = moments["root"]
    moved, gone, new = moments["moved"], moments["gone"], moments["new"]
    run = bridge("diff", "a", "b", "--json", cwd=root)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)

    assert result["table"] == "local-core"
    assert result["counts"] == {"added": 1, "removed": 1, "changed": 1, "unchanged": USERS - 2}
    [added] = result["added"]
    assert added["key"] == {"pk": f"users#{new}", "sk": f"users#{new}"}
    assert added["item"] == {
        "pk": f"users#{new}",
        "sk": f"users#{new}",
        "type": "user",
        "id": new,
        "name": "N",
        "email": "n@example.com",
        "version": 1,
    }
    [removed] = result["removed"]
    assert removed["key"] == {"pk": f"users#{gone}", "sk": f"users#{gone}"}
    assert removed["item"]["version"] == 4
    [changed] = result["changed"]
    assert changed["key"] == {"pk": f"users#{moved}", "sk": f"users#{moved}"}
    assert set(changed["changes"]) == {"location", "version"}
    assert changed["changes"]["version"] == {"before": 4, "after": 5}
    assert changed["changes"]["location"]["after"] == {"long": 2.35, "lat": 48.85}
    assert changed["changes"]["location"]["before"] != changed["changes"]["location"]["after"]

    # For a person: one line per item, then the counts.
    text = bridge("diff", "a", "b", cwd=root)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "local-core: a → b"
    assert lines[-1] == f"1 added, 1 removed, 1 changed, {USERS - 2} unchanged"
    items = lines[1:-1]
    assert [line[:2] for line in items] == ["+ ", "- ", "~ "]
    assert items[0].startswith(f"+ users#{new}  ")
    assert items[1].startswith(f"- users#{gone}  ")
    assert items[2].startswith(f"~ users#{moved}  location: ")
    assert "version: 4 → 5" in items[2]


def test_the_log_table_gained_exactly_the_two_events(moments: dict[str, Any]) -> None:
    run = bridge("diff", "a", "b", "--table", "log", "--json", cwd=moments["root"])
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["table"] == "local-dynamodb-logs"
    assert result["counts"] == {"added": 2, "removed": 0, "changed": 0, "unchanged": USERS * 4}
    keys = sorted((a["key"]["pk"], a["key"]["sk"]) for a in result["added"])
    assert keys == sorted([(f"users#{moments['moved']}#stream", 5), ("users#newcomer#stream", 1)])


def test_a_database_against_itself_has_no_differences(moments: dict[str, Any]) -> None:
    run = bridge("diff", "b", "b/db", cwd=moments["root"])  # a folder, or the file itself
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == f"0 added, 0 removed, 0 changed, {USERS} unchanged"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "nowhere"], "nowhere: no such directory"),
        (["a", "empty"], "empty/db: no local database there"),
        (["a", "b", "--table", "orders"], "no table 'orders' (tables there: "),
        (["a", "b", "--stage", "dev"], "no table 'dev-core'"),
    ],
)
def test_a_missing_directory_or_table_is_one_line(
    moments: dict[str, Any], args: list[str], message: str
) -> None:
    (moments["root"] / "empty").mkdir(exist_ok=True)
    run = bridge("diff", *args, cwd=moments["root"])
    assert run.returncode != 0
    assert run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line.startswith("error: ") and message in line, line


def test_a_database_killed_before_its_first_fold_is_read_from_its_journal(
    tmp_path: Path,
) -> None:
    """No snapshot at all: every table and item is only in the journal. The file copied
    without its journal holds no table (refused, one line); with it, the one user."""
    folder = tmp_path / "k"
    folder.mkdir()
    with OfflineProcess(folder, "--no-bridge", "--autosave", "0") as offline:
        resource = dynamodb(offline)
        LogStore(resource.Table("local-dynamodb-logs")).append(
            "users", "k1", "signup", {"id": "k1", "name": "K", "email": "k@example.com"}
        )
        core = resource.Table("local-core")
        eventually(lambda: user_version(core, "k1") == 1, 60, "the projection of k1")
        assert offline.process is not None
        offline.process.kill()
        offline.process.wait()
    with sqlite3.connect(folder / "db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM dynamodb_items").fetchone() == (0,)
    (tmp_path / "none").mkdir()
    shutil.copy(folder / "db", tmp_path / "none" / "db")  # the file without its journal
    run = bridge("diff", "none", "k", "--json", cwd=tmp_path)
    assert run.returncode != 0 and "no table 'local-core' (tables there: none)" in run.stderr

    run = bridge("diff", "k", "k", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["counts"] == {
        "added": 0, "removed": 0, "changed": 0, "unchanged": 1,
    }  # fmt: skip
