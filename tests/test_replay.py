"""`bridge archive` and `bridge replay --from sqlite` on archive files, and the local bus's
``replay-name`` extension of PutEvents (in process). The bus and DynamoDB targets
end to end, through `bridge offline`, are in test_replay_e2e.py."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import archive, archive_pages
from bridge.archive import ArchiveWriter
from bridge.core.errors import BridgeError
from bridge.core.replay_filter import ReplayFilter
from bridge.core.subscriptions import parse
from bridge.core.timespec import TimeRange
from bridge.offline.bus import Bus, rules_from
from bridge.replay import run_replay
from bridge.replay_targets import NullTarget

BRIDGE = Path(sys.executable).with_name("bridge")
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BRIDGE), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=os.environ
    )


def log_event(n: int, *, log: str = "users", at: datetime | None = None, sk: int | None = None):
    when = at or T0 + timedelta(minutes=7 * n)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "stream changes",
        "source": "dynamodb-log",
        "account": "000000000000",
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "log": log,
            "key": {"pk": f"{log}#{n % 20}#stream", "sk": sk if sk is not None else n // 20 + 1},
            "type": ["signup", "addPhoneNumber"][n % 2],
            "payload": {"id": str(n % 20)},
        },
    }


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """300 events over 35 hours: every third of log `orders`, the rest `users`."""
    path = tmp_path / "db"
    events = [log_event(n, log="orders" if n % 3 == 0 else "users") for n in range(300)]
    assert archive.write_events(path, events) == 300
    return path


def rows(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, createdAt, event FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


# --------------------------------------------------------------------------- bridge archive


def test_archive_report_counts_per_log_and_type_and_draws_a_histogram(db: Path) -> None:
    shown = run("archive", "--db", str(db), "--by", "day")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"{db}: 300 events")
    assert "2026-11-30T08:00:00.000Z … 2026-12-01T18:53:00.000Z" in lines[0]
    assert any(line.split()[:3] == ["users", "signup", "100"] for line in lines)
    assert any(line.split()[:3] == ["orders", "addPhoneNumber", "50"] for line in lines)
    days = [line for line in lines if line.startswith("  2026-")]
    assert [line.split()[:2] for line in days] == [["2026-11-30", "138"], ["2026-12-01", "162"]]
    assert days[1].count("█") == 40 and days[0].count("█") == round(138 / 162 * 40)

    report = json.loads(run("archive", "--db", str(db), "--json").stdout)
    assert report["events"] == 300 and report["histogram"]["by"] == "hour"  # auto: 35 h
    buckets = report["histogram"]["buckets"]
    assert sum(b["events"] for b in buckets) == 300
    assert buckets[0]["start"] == "2026-11-30T08:00Z" and len(buckets) == 35  # gaps filled
    assert {(r["log"], r["type"]): r["events"] for r in report["logs"]} == {
        ("orders", "addPhoneNumber"): 50,
        ("orders", "signup"): 50,
        ("users", "addPhoneNumber"): 100,
        ("users", "signup"): 100,
    }


def test_archive_of_a_missing_file_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    missing = run("archive", "--db", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert (
        missing.stderr.strip()
        == f"error: no archive at {tmp_path / 'nope'}: nothing was archived there yet"
    )
    assert not (tmp_path / "nope").exists()
    both = run("archive", "--db", "x", "--stage", "dev")
    assert both.returncode == 2 and both.stderr.count("\n") == 1


# --------------------------------------------------------------------------- --to sqlite


def test_a_filtered_copy_holds_exactly_the_range_logs_and_types_and_is_idempotent(
    db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "copy.db"
    args = ["replay", "--from", "sqlite", "--db", str(db), "--to", "sqlite", "--out", str(out)]
    window = ["--start", "2026-11-30T12:00", "--end", "2026-12-01T00:00:00Z", "--log", "users"]
    first = run(*args, *window, "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)["summary"]
    expected = [
        (i, c, e)
        for i, c, e in rows(db)
        if "2026-11-30T12:00" <= c < "2026-12-01T00:00"
        and json.loads(e)["detail"]["log"] == "users"
    ]
    assert summary["sent"] == summary["total"] == len(expected) == 69
    assert rows(out) == expected  # same rows, same order, as archived
    again = json.loads(run(*args, *window, "--json").stdout)["summary"]
    assert (again["sent"], again["skipped"]) == (0, {"already in --out": 69})
    assert len(rows(out)) == 69

    typed = tmp_path / "typed.db"
    pattern = '{"detail": {"type": ["signup"]}}'
    done = run(*args[:-1], str(typed), "--log", "users", "--log", "orders", "--pattern", pattern)
    assert done.returncode == 0, done.stderr
    kept = [json.loads(e)["detail"]["type"] for _, _, e in rows(typed)]
    assert kept == ["signup"] * 150
    assert "skipped 150: not matching --pattern" in done.stdout


@pytest.mark.parametrize(
    ("extra", "code", "line"),
    [
        (
            ["--log", "nope"],
            2,
            "error: unknown log 'nope': the archive holds the logs orders, users",
        ),
        (["--type", "rename"], 2, "error: unknown type 'rename': the archive holds the types "),
        (["--start", "-1h", "--end", "-2h"], 2, "error: bad range: --start -1h ("),
        (["--start", "soon"], 2, "error: --start: 'soon' is not a time; use ISO 8601"),
        (["--pattern", '{"detail": 1}'], 2, "error: "),
        (["--speed", "-1"], 2, "error: --speed: -1.0 is not a speed"),
    ],
)
def test_a_bad_replay_is_one_line_and_writes_nothing(
    db: Path, tmp_path: Path, extra: list[str], code: int, line: str
) -> None:
    out = tmp_path / "out.db"
    result = run(
        "replay", "--from", "sqlite", "--db", str(db), "--to", "sqlite", "--out", str(out), *extra
    )
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()


def test_missing_archive_same_file_and_no_out_are_one_line(db: Path, tmp_path: Path) -> None:
    missing = run("replay", "--from", "sqlite", "--db", str(tmp_path / "none"), "--to", "bus")
    assert missing.returncode == 1 and "no archive at" in missing.stderr
    same = run("replay", "--from", "sqlite", "--db", str(db), "--to", "sqlite", "--out", str(db))
    assert same.returncode == 1 and "is the archive replayed from" in same.stderr
    no_out = run("replay", "--from", "sqlite", "--db", str(db), "--to", "sqlite")
    assert no_out.returncode == 2 and "--to sqlite needs --out" in no_out.stderr
    assert len(rows(db)) == 300


def test_an_empty_range_says_so_and_exits_0_whatever_the_target(db: Path) -> None:
    # no bus listens on port 9: an empty range never reaches the target
    result = run(
        "replay", "--from", "sqlite", "--db", str(db), "--to", "bus",
        "--events-endpoint", "http://127.0.0.1:9", "--start", "2020-01-01", "--end", "2020-01-02",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no events in [2020-01-01T00:00:00.000Z, 2020-01-02")


def test_dry_run_counts_by_log_and_type_and_sends_nothing(db: Path) -> None:
    result = run(
        "replay", "--from", "sqlite", "--db", str(db), "--to", "bus",
        "--events-endpoint", "http://127.0.0.1:9", "--type", "signup", "--dry-run", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert summary["dry_run"] and summary["sent"] == 0
    assert summary["by_log_type"] == {"orders/signup": 50, "users/signup": 100}
    assert summary["where"].startswith("the bus dynamodb-log at http://127.0.0.1:9 as replay ")


def test_a_remote_endpoint_is_refused_for_bus_and_dynamodb(db: Path) -> None:
    bus = run(
        "replay",
        "--from",
        "sqlite",
        "--db",
        str(db),
        "--to",
        "bus",
        "--events-endpoint",
        "https://events.example.com",
    )
    assert bus.returncode == 1 and "writes to a local endpoint only" in bus.stderr
    table = run("replay", "--from", "sqlite", "--db", str(db), "--to", "dynamodb", "--stage", "dev")
    assert table.returncode == 1 and "writes to a local endpoint only" in table.stderr


# --------------------------------------------------------------------------- streaming


def test_pages_by_key_return_every_row_once_in_order_through_ties(tmp_path: Path) -> None:
    """Many rows share one createdAt: keyset paging on (createdAt, seq) splits them
    across pages without losing or repeating one (OFFSET would be quadratic)."""
    path = tmp_path / "ties.db"
    same = [log_event(n, at=T0 + timedelta(seconds=n // 25)) for n in range(250)]
    archive.write_events(path, same)
    with archive_pages.open_archive(path) as conn:
        for size in (1, 7, 25, 1000):
            got = [
                row.seq for page in archive_pages.pages(conn, ReplayFilter(), size) for row in page
            ]
            assert got == list(range(1, 251))
            pages = list(archive_pages.pages(conn, ReplayFilter(), size))
            assert all(len(page) <= size for page in pages)


def test_the_reader_uses_no_offset_and_holds_one_page(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "db"
    archive.write_events(path, [log_event(n) for n in range(120)])
    statements: list[str] = []
    real = archive_pages.open_archive

    def traced(where: Any):
        manager = real(where)
        conn = manager.__enter__()
        conn.set_trace_callback(statements.append)

        class Wrap:
            def __enter__(self):
                return conn

            def __exit__(self, *exc):
                return manager.__exit__(*exc)

        return Wrap()

    monkeypatch.setattr(archive_pages, "open_archive", traced)
    target = NullTarget()
    summary = run_replay(path, ReplayFilter(TimeRange()), target, page_size=50)
    assert (summary.sent, summary.read) == (120, 120)
    selects = [s for s in statements if s.startswith("SELECT seq, createdAt, event")]
    assert len(selects) == 3  # 50 + 50 + 20
    assert not any("OFFSET" in s.upper() for s in statements)


def test_speed_scales_the_recorded_gaps(tmp_path: Path) -> None:
    """--speed 2 and --speed 4 over a 6-second recording: about 3 s and 1.5 s. Checked
    as a ratio with room for a busy machine; never faster than the schedule."""
    path = tmp_path / "db"
    archive.write_events(path, [log_event(n, at=T0 + timedelta(seconds=n)) for n in range(7)])
    took = {}
    for speed in ("2", "4"):
        out = tmp_path / f"speed{speed}.db"
        result = run(
            "replay",
            "--from",
            "sqlite",
            "--db",
            str(path),
            "--to",
            "sqlite",
            "--out",
            str(out),
            "--speed",
            speed,
            "--json",
        )
        assert result.returncode == 0, result.stderr
        took[speed] = json.loads(result.stdout)["summary"]["seconds"]
        assert [c for _, c, _ in rows(out)] == [c for _, c, _ in rows(path)]  # order kept
    assert took["2"] >= 3.0 * 0.98 and took["4"] >= 1.5 * 0.98
    assert 1.5 <= took["2"] / took["4"] <= 2.5, took
    assert took["2"] / 3.0 <= 1.5, took


# --------------------------------------------------------------------------- the bus


DEFINITION = """
[functions.users]
handler = "tests.handlers.bus_record.handler"
pattern = { source = ["dynamodb-log"], detail = { log = ["users"] } }
"""


async def test_an_entry_with_replay_name_is_delivered_as_a_replay_and_not_archived(
    tmp_path: Path,
) -> None:
    calls: list[tuple[str, dict]] = []
    async with ArchiveWriter(tmp_path / "db") as writer:
        bus = Bus(
            rules=rules_from(parse(DEFINITION), "t1"),
            deliver=lambda f, e: calls.append((f, e)),
            archive=writer,
        )
        plain = {
            "Source": "dynamodb-log",
            "DetailType": "stream changes",
            "Detail": json.dumps({"log": "users", "key": {"pk": "users#1#stream", "sk": 1}}),
            "EventBusName": "dynamodb-log",
            "Time": T0.timestamp(),
        }
        results = bus.put_events([plain, {**plain, "replay-name": "r-1"}])
        assert all("EventId" in r for r in results)
        bad = bus.put_events([{**plain, "replay-name": "not a name"}])
        assert bad[0]["ErrorCode"] == "InvalidArgument" and "replay-name" in bad[0]["ErrorMessage"]
        await writer.flush()
        assert writer.written == 1  # the replayed entry was not archived
    assert [e.get("replay-name") for _, e in calls] == [None, "r-1"]
    assert calls[1][1]["time"] == "2026-11-30T08:00:00Z"  # the entry's own time
    assert archive.count(tmp_path / "db") == 1


# --------------------------------------------------------------------------- the SQL filter


def archived_event(n: int, second: int, log: str | None, type_: str) -> dict:
    event = log_event(n, at=T0 + timedelta(seconds=second))
    if log is None:  # an event that is no log item: NULL log and type columns
        return {**event, "source": "my-app", "detail": {"kind": type_}}
    event["detail"]["log"], event["detail"]["type"] = log, type_
    event["detail"]["key"]["pk"] = f"{log}#{n}#stream"
    return event


@settings(max_examples=60, deadline=None)
@given(
    rows_=st.lists(
        st.tuples(st.integers(0, 20), st.sampled_from(["a", "b", None]), st.sampled_from("xy")),
        max_size=40,
    ),
    start=st.none() | st.integers(0, 21),
    span=st.none() | st.integers(1, 21),
    logs=st.lists(st.sampled_from(["a", "b"]), unique=True),
    types=st.lists(st.sampled_from(["x", "y"]), unique=True),
    page_size=st.integers(1, 6),
)
def test_pages_select_exactly_the_range_logs_and_types_in_time_order(
    rows_, start, span, logs, types, page_size
) -> None:
    events = [archived_event(n, *row) for n, row in enumerate(rows_)]
    first = T0 + timedelta(seconds=start) if start is not None else None
    end = (first or T0) + timedelta(seconds=span) if span is not None else None
    selection = ReplayFilter(TimeRange(first, end), tuple(logs), tuple(types))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "db"
        archive.write_events(path, events)
        with archive_pages.open_archive(path) as conn:
            got = [
                r.event["id"] for p in archive_pages.pages(conn, selection, page_size) for r in p
            ]
            counted = archive_pages.count(conn, selection)
    expected = [
        event["id"]
        for _, event in sorted(
            enumerate(events),
            key=lambda pair: (pair[1]["time"], pair[0]),  # time, then seq
        )
        if (first is None or event["time"] >= first.strftime("%Y-%m-%dT%H:%M:%SZ"))
        and (end is None or event["time"] < end.strftime("%Y-%m-%dT%H:%M:%SZ"))
        and (not logs or event["detail"].get("log") in logs)
        and (not types or event["detail"].get("type") in types)
    ]
    assert got == expected and counted == len(expected)


class Recording:
    """A real boto3 client (of the moto server) that notes each BatchWriteItem it sends."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.exceptions = client.exceptions
        self.calls: list[list[tuple[str, int]]] = []

    def describe_table(self, **kwargs: Any) -> Any:
        return self.client.describe_table(**kwargs)

    def batch_write_item(self, RequestItems: dict) -> Any:  # noqa: N803 - boto3's name
        (requests,) = RequestItems.values()
        item = lambda r: r["PutRequest"]["Item"]  # noqa: E731
        self.calls.append([(item(r)["pk"]["S"], int(item(r)["sk"]["N"])) for r in requests])
        return self.client.batch_write_item(RequestItems=RequestItems)


def test_versions_archived_in_one_second_are_never_split_across_flushes(
    tmp_path: Path, target, monkeypatch
) -> None:
    """Two versions of a stream per second, archived newer first: wherever a flush
    falls, each stream reaches the table in version order, every version once."""
    from bridge import replay_targets

    events = []
    for version in range(1, 9):
        for n in range(3):
            event = log_event(n, at=T0 + timedelta(seconds=(version + 1) // 2), sk=version)
            event["detail"]["key"]["pk"] = f"users#s{n}#stream"
            events.append(event)
    events.sort(key=lambda e: (e["time"], -e["detail"]["key"]["sk"]))
    path = tmp_path / "db"
    archive.write_events(path, events)
    client = Recording(target.session().client("dynamodb", endpoint_url=target.endpoint_url))
    for flush_items in (1, 2, 4, 5, 7):
        monkeypatch.setattr(replay_targets, "FLUSH_ITEMS", flush_items)
        client.calls.clear()
        sent = run_replay(
            path, ReplayFilter(), replay_targets.DynamoDBTarget(client, target.log_table, "moto")
        )
        assert sent.sent == 24
        written = [key for call in client.calls for key in call]
        for n in range(3):
            versions = [sk for pk, sk in written if pk == f"users#s{n}#stream"]
            assert versions == list(range(1, 9)), (flush_items, written)


async def test_to_the_bus_over_its_socket_in_archive_order_with_the_replay_name(
    db: Path, tmp_path: Path
) -> None:
    """The events API of the local cloud on a real port, the replay in a thread: the
    bus receives the 300 events in the archive's time order, each once, as a replay."""
    import boto3

    from bridge.offline.events_api import EventsServer
    from bridge.replay_targets import BusTarget

    calls: list[dict] = []
    async with ArchiveWriter(tmp_path / "bus.db") as writer:
        everything = (
            '[functions.all]\nhandler = "x.handler"\npattern = { source = ["dynamodb-log"] }\n'
        )
        bus = Bus(
            rules=rules_from(parse(everything), "t1"),
            deliver=lambda f, e: calls.append(e),
            archive=writer,
        )
        server = await EventsServer(bus, None, port=0).start()
        try:
            client = boto3.client(
                "events",
                endpoint_url=server.url,
                region_name="us-east-1",
                aws_access_key_id="any",
                aws_secret_access_key="any",
            )
            target = BusTarget(client, server.url, "in-order")
            summary = await asyncio.to_thread(run_replay, db, ReplayFilter(), target)
            await writer.flush()
        finally:
            await server.stop()
        assert writer.written == 0  # nothing archived
    assert summary.sent == 300
    archived_keys = [
        (e["time"], e["detail"]["key"]["pk"], e["detail"]["key"]["sk"])
        for e in archive.iter_events(db)
    ]
    assert [(e["time"], e["detail"]["key"]["pk"], e["detail"]["key"]["sk"]) for e in calls] == (
        archived_keys
    )
    assert {e["replay-name"] for e in calls} == {"in-order"}


def written(out: Path) -> int:
    """Rows committed to ``out`` so far (0 while the file is being created)."""
    try:
        return archive.count(out)
    except (BridgeError, sqlite3.Error):  # the file exists, its table not yet
        return 0


def test_ctrl_c_keeps_what_was_sent_and_says_how_far_it_got(tmp_path: Path) -> None:
    """At real time over a minute of events, the first is written at once (a paced
    replay flushes before it waits); Ctrl-C then ends it with exit 130 and one line."""
    import signal
    import time

    path = tmp_path / "db"
    archive.write_events(path, [log_event(n, at=T0 + timedelta(seconds=60 * n)) for n in range(3)])
    out = tmp_path / "out.db"
    process = subprocess.Popen(
        [str(BRIDGE), "replay", "--from", "sqlite", "--db", str(path), "--to", "sqlite"]
        + ["--out", str(out), "--speed", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and written(out) < 1:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert err.startswith("error: interrupted: 1 of 3 events sent to the archive file "), err
    assert err.count("\n") == 1
    assert archive.count(out) == 1


def test_pacing_on_a_virtual_clock_sleeps_the_scaled_gaps_and_reports_as_it_goes(
    tmp_path: Path,
) -> None:
    """The replay's clock and sleep are injected: at --speed 4 over gaps of 0, 8, 8 and
    16 s it sleeps 2, 2 and 4 s (late events are not waited for), flushing before each
    wait, and the progress line hears of each event before the wait that follows it."""
    path = tmp_path / "db"
    offsets = [0, 0, 8, 16, 32]
    archive.write_events(
        path, [log_event(n, at=T0 + timedelta(seconds=s)) for n, s in enumerate(offsets)]
    )
    now = [100.0]
    slept: list[float] = []
    told: list[int] = []
    flushed_before_sleep: list[int] = []

    class Counting(NullTarget):
        def __init__(self) -> None:
            super().__init__()
            self.flushed = 0

        def flush(self) -> None:
            self.flushed = self.result.sent

    target = Counting()

    def sleep(seconds: float) -> None:
        flushed_before_sleep.append(target.flushed)
        slept.append(seconds)
        now[0] += seconds

    summary = run_replay(
        path,
        ReplayFilter(),
        target,
        speed=4,
        clock=lambda: now[0],
        sleep=sleep,
        progress=told.append,
    )
    assert summary.sent == 5 and sum(told) == 5
    assert slept == pytest.approx([2.0, 2.0, 4.0])
    assert flushed_before_sleep == [2, 3, 4]  # what was due went out before each wait
    assert told[:3] == [2, 1, 1]
