"""Each long-lived task of `bridge offline`, killed in turn: the run breaks with one line.

How the faults are injected: a real :class:`LocalCloud` is started in this process, on
free ports, with its real embedded DynamoDB child, worker processes and servers. Then
one method that a long-lived task runs is replaced (``monkeypatch``) by one that
raises ``RuntimeError("injected")`` — an exception that the task's own error handling
does not expect, as a bug would raise — and the task is made to run it through the
cloud's real interfaces (a PutEvents, a WebSocket message, a write, an invocation, a
replay). Nothing in the product knows about the tests; ``tests/offline_faults.py`` does
the same in the real `bridge offline` command, see ``test_offline_exits_…`` below.

Each test then sees what a user would: the cloud breaks at once (``broken``), ``stop()``
ends without draining or hanging and raises one ``BridgeError`` naming the task and the
exception — the line the command prints — and nothing else is logged as a warning or
an error: no traceback, no "dropped", no warning of a consequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from offline_process import BRIDGE, OfflineProcess
from test_durability import CORE_TABLE, LOG_TABLE, embedded_dynamodb_pid, scan, wait_until

from bridge.archive import ArchiveWriter, ArchiveWriterDied, count
from bridge.core.errors import BridgeError
from bridge.core.names import BUS_NAME
from bridge.offline import bus as bus_module
from bridge.offline import runtime as runtime_module
from bridge.offline import unfinished
from bridge.offline.cloud import LocalCloud, OfflineOptions
from bridge.offline.gateway import Gateway
from bridge.offline.poller import StreamPoller
from bridge.offline.runtime import FunctionRuntime
from bridge.offline.supervisor import Halted
from bridge.subscriptions import load

INJECTED = "RuntimeError: injected"
CONFIG = """
[functions.echo]
handler = "echo_handler.handler"
pattern = { source = ["supervision-test"] }
retry_attempts = 0
"""
HANDLER = """
def handler(event, context):
    text = event.get("print") or (event.get("detail") or {}).get("print")
    if text:
        print(text, flush=True)
    return {"ok": True}
"""


def project(tmp_path: Path) -> Path:
    (tmp_path / "dynamodb-logs.toml").write_text(CONFIG)
    (tmp_path / "echo_handler.py").write_text(HANDLER)
    return tmp_path


@contextlib.asynccontextmanager
async def started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, **options: Any
) -> AsyncIterator[LocalCloud]:
    """A LocalCloud on free ports in this process; stopped at the end however the test
    ends. What it logged while starting (``--no-iam-auth``'s warning) is forgotten."""
    root = project(tmp_path)
    fields: dict[str, Any] = {
        "db": tmp_path / "db",
        "dynamodb_port": 0,
        "events_port": 0,
        "ws_port": 0,
        "bridge_port": 0,
        "bridge": False,
        "autosave": 0.0,
        **options,
    }
    cloud = LocalCloud(OfflineOptions(**fields), load(root / "dynamodb-logs.toml"), root)
    await cloud.start()
    caplog.clear()
    try:
        yield cloud
    finally:
        if cloud._lock is not None:  # not stopped by the test: stop it, whatever it says
            with contextlib.suppress(BridgeError):
                await asyncio.wait_for(cloud.stop(), 60)


def client(cloud: LocalCloud, service: str) -> Any:
    url = cloud.dynamodb_url if service == "dynamodb" else cloud.events_url
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=cloud.options.region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def put_event(cloud: LocalCloud, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    entry = {
        "Source": "supervision-test",
        "DetailType": "t",
        "Detail": json.dumps(detail or {"n": 1}),
        "EventBusName": BUS_NAME,
    }
    return client(cloud, "events").put_events(Entries=[entry])


def injected(*_: Any, **__: Any) -> Any:
    raise RuntimeError("injected")


async def broken_line(
    cloud: LocalCloud, caplog: pytest.LogCaptureFixture, asked: tuple[str, ...] = ()
) -> str:
    """Wait for the break, stop, and return the one line; nothing else was warned of
    (but the answers to requests the test made after the break: ``asked``)."""
    await asyncio.wait_for(cloud.broken.wait(), 30)
    with pytest.raises(BridgeError) as raised:
        await asyncio.wait_for(cloud.stop(), 60)  # no drain, no hang
    line = str(raised.value)
    assert "\n" not in line
    loud = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and r.name.startswith("bridge")
        and not r.getMessage().startswith(asked or "\0")
    ]
    assert loud == []
    assert not (cloud.options.db.parent / "db.lock").exists()  # everything stopped
    return line


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bridge")


async def test_the_archive_writer(tmp_path, monkeypatch, caplog) -> None:
    """The writer dies on the event of a log item: the poller, whose flush waited for
    the writer, is told at once (and says nothing: the break is the news)."""
    async with started(tmp_path, caplog) as cloud:
        monkeypatch.setattr(ArchiveWriter, "_write", injected_async)
        item = {"pk": {"S": "a#1#stream"}, "sk": {"N": "1"}, "type": {"S": "t"}}
        await asyncio.to_thread(
            client(cloud, "dynamodb").put_item, TableName="local-dynamodb-logs", Item=item
        )
        await asyncio.wait_for(cloud.broken.wait(), 30)
        # What waited for the dead writer before (the poller's flush, DescribeArchive)
        # fails at once now.
        with pytest.raises(ArchiveWriterDied):
            await asyncio.wait_for(cloud.archive.flush(), 5)
        refused = await asyncio.to_thread(put_event, cloud)  # the cloud broke: refused
        assert refused["Entries"][0]["ErrorCode"] == "InternalFailure"
        line = await broken_line(cloud, caplog, asked=("PutEvents: 1 of 1 entries failed",))
    assert line == (
        f"the archive writer died: {INJECTED} (1 accepted events it still held are not archived)"
    )


async def injected_async(*_: Any, **__: Any) -> Any:
    raise RuntimeError("injected")


async def test_the_stream_poller(tmp_path, monkeypatch, caplog) -> None:
    async with started(tmp_path, caplog) as cloud:
        monkeypatch.setattr(StreamPoller, "poll_once", injected_async)
        assert await broken_line(cloud, caplog) == f"the stream poller died: {INJECTED}"


async def test_the_autosave(tmp_path, monkeypatch, caplog) -> None:
    async with started(tmp_path, caplog, autosave=0.1) as cloud:
        monkeypatch.setattr(cloud, "_settled", injected_async)
        item = {"pk": {"S": "a#1#stream"}, "sk": {"N": "1"}, "type": {"S": "t"}}
        await asyncio.to_thread(
            client(cloud, "dynamodb").put_item, TableName="local-dynamodb-logs", Item=item
        )
        assert await broken_line(cloud, caplog) == f"the autosave died: {INJECTED}"


@pytest.mark.parametrize(
    ("api", "task", "method", "code"),
    [
        ("gateway", "connection worker", "_dispatch", aiohttp.WSCloseCode.INTERNAL_ERROR),
        ("bridge API", "connection worker", "_dispatch", aiohttp.WSCloseCode.INTERNAL_ERROR),
        ("gateway", "watchdog", "_watch", aiohttp.WSCloseCode.INTERNAL_ERROR),
        # The reader dies handling the close of a frame over 32 KB (1009, sent already).
        ("bridge API", "connection reader", "_note_error", aiohttp.WSCloseCode.MESSAGE_TOO_BIG),
    ],
)
async def test_a_gateway_loop(tmp_path, monkeypatch, caplog, api, task, method, code) -> None:
    bridge = api == "bridge API"
    async with started(tmp_path, caplog, bridge=bridge, bridge_iam_auth=False) as cloud:
        sync = method == "_note_error"  # a plain method: it must raise when called
        monkeypatch.setattr(Gateway, method, injected if sync else injected_async)
        url = cloud.bridge_url if bridge else cloud.ws_url
        async with aiohttp.ClientSession() as session, session.ws_connect(str(url)) as ws:
            if method == "_note_error":  # what the reader calls on a frame over 32 KB
                await ws.send_str("x" * 40_000)
            await ws.send_str('{"action": "hello"}')
            closing = await asyncio.wait_for(ws.receive(), 30)
            assert closing.type is aiohttp.WSMsgType.CLOSE
            assert closing.data == code  # not left open
        assert await broken_line(cloud, caplog) == f"the {api}'s {task} died: {INJECTED}"


async def test_a_sandbox_log_pump(tmp_path, monkeypatch, caplog) -> None:
    read = runtime_module.read_log_line

    async def dies_on_a_line(stream: asyncio.StreamReader, limit: int) -> str | None:
        line = await read(stream, limit)
        if line is not None and "kill the pump" in line:
            raise RuntimeError("injected")
        return line

    async with started(tmp_path, caplog) as cloud:
        monkeypatch.setattr(runtime_module, "read_log_line", dies_on_a_line)
        # The pump is waiting inside the original reader: one line more, and it calls ours.
        assert (await cloud.runtime.invoke("echo", {"print": "a line"})).ok
        # The pump reads the line while the invocation still runs, so the break can reach
        # the invocation before its answer does: then it is refused as Halted, not lost.
        invocation = asyncio.ensure_future(cloud.runtime.invoke("echo", {"print": "kill the pump"}))
        assert await broken_line(cloud, caplog) == f"the log pump of echo died: {INJECTED}"
        with contextlib.suppress(Halted):
            assert (await invocation).ok


async def test_an_async_invocation_the_bus_handed_over(tmp_path, monkeypatch, caplog) -> None:
    """A delivery task dies: the break's line says so, and its event is not lost — it is
    kept in ./db and run again at the next start."""
    attempt = FunctionRuntime._attempt

    async def fails_for_echo(self: FunctionRuntime, function: Any, *args: Any, **kw: Any) -> Any:
        if function.spec.name == "echo":
            raise RuntimeError("injected")
        return await attempt(self, function, *args, **kw)

    async with started(tmp_path, caplog) as cloud:
        monkeypatch.setattr(FunctionRuntime, "_attempt", fails_for_echo)
        await asyncio.to_thread(put_event, cloud, {"n": 7})
        line = await broken_line(cloud, caplog)
    prefix, _, rest = line.partition(" of echo died: ")
    assert prefix.startswith("the async invocation ")
    assert rest == (
        f"{INJECTED}; 1 invocations in flight (echo ×1) are kept in {tmp_path / 'db'} and run "
        "again at the next start"
    )
    [kept] = unfinished.load(tmp_path / "db")
    assert kept.function == "echo" and json.loads(kept.event)["detail"] == {"n": 7}
    assert prefix == f"the async invocation {kept.request_id}"


async def test_a_replay(tmp_path, monkeypatch, caplog) -> None:
    async with started(tmp_path, caplog) as cloud:
        monkeypatch.setattr(bus_module.archive_file, "read_page", injected)
        now = datetime.now(UTC)
        await cloud.bus.start_replay(
            "r1", cloud.bus.archive_arn, now - timedelta(hours=1), now, cloud.bus.arn
        )
        replay = await cloud.bus.wait_replay("r1")
        assert replay.state == "FAILED"
        assert await broken_line(cloud, caplog) == f"the replay r1 died: {INJECTED}"


async def test_the_embedded_dynamodb(tmp_path, caplog) -> None:
    async with started(tmp_path, caplog) as cloud:
        assert cloud.embedded is not None and cloud.embedded._process is not None
        os.kill(cloud.embedded._process.pid, signal.SIGKILL)
        assert await broken_line(cloud, caplog) == (
            "the embedded DynamoDB exited unexpectedly (killed by signal 9); its tables are "
            f"as last saved in {tmp_path / 'db'}, restored at the next start"
        )


# --------------------------------------------------------------------------- the command

FAULTS = Path(__file__).with_name("offline_faults.py")


@pytest.mark.parametrize(
    ("fault", "line"),
    [
        ("archive-writer", f"error: the archive writer died: {INJECTED}"),
        ("stream-poller", f"error: the stream poller died: {INJECTED}"),
    ],
)
def test_offline_exits_with_one_line_when_a_task_dies(tmp_path: Path, fault: str, line: str):
    """The real `bridge offline` (its CLI entry point, in a subprocess of its own), with
    the fault injected by tests/offline_faults.py before the command runs: it ends by
    itself, exit code 1, with one error line and no traceback."""
    project(tmp_path)
    offline = OfflineProcess(tmp_path, program=[sys.executable, str(FAULTS), fault]).start()
    try:
        if fault == "archive-writer":
            entry = {"Source": "supervision-test", "DetailType": "t", "Detail": "{}"}
            events = boto3.client(
                "events", endpoint_url=offline.events_url, region_name="us-east-1"
            )
            events.put_events(Entries=[{**entry, "EventBusName": BUS_NAME}])
        assert offline.process is not None
        offline.process.wait(timeout=60)  # by itself: no Ctrl-C, no hang
    finally:
        offline.__exit__()
    assert offline.process.returncode == 1
    log = offline.log.read_text()
    errors = [text for text in log.splitlines() if text.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(line), log
    assert "Traceback" not in log


# --------------------------------------------------------------------------- DynamoDB dies


def read_model_lag(url: str) -> dict[str, tuple[int, int | None]]:
    """Users whose read model is not at their log's last version: id → (last, model's)."""
    last: dict[str, int] = {}
    for pk, sk in scan(url, LOG_TABLE):
        if pk.startswith("users#"):
            id = pk.split("#")[1]
            last[id] = max(last.get(id, 0), int(sk))
    model = {
        pk.split("#")[1]: int(item["version"])
        for (pk, _), item in scan(url, CORE_TABLE).items()
        if pk.startswith("users#")
    }
    return {id: (v, model.get(id)) for id, v in last.items() if model.get(id) != v}


def test_the_embedded_dynamodb_dying_under_load_stops_invoking_and_keeps_what_was_in_flight(
    tmp_path: Path,
) -> None:
    """kill -9 of the DynamoDB child while `bridge generate` runs and the users projection
    has a backlog: offline ends at once with one error line — no handler tracebacks, no
    "dropped", no failed invocations — and lists what was in flight; after the restart
    the projection completes, the handler getting those events again."""
    seed = 11
    offline = OfflineProcess(tmp_path, "--autosave", "0.3").start()  # the packaged subscribers
    generate = subprocess.Popen(
        [str(BRIDGE), "generate", "--users", "300", "--seed", str(seed), "--json"]
        + ["--endpoint-url", offline.dynamodb_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=offline.env,
    )
    try:
        wait_until(lambda: count(tmp_path / "db") >= 300)
        before = len(offline.log.read_text().splitlines())
        os.kill(embedded_dynamodb_pid(offline.ports["dynamodb"]), signal.SIGKILL)
        assert offline.process is not None
        offline.process.wait(timeout=60)  # by itself, at once
        generate.communicate(timeout=120)
    finally:
        offline.__exit__()
        if generate.poll() is None:
            generate.kill()
    assert offline.process.returncode == 1
    log = offline.log.read_text()
    after_kill = log.splitlines()[before:]
    assert "Traceback" not in log
    assert not [line for line in after_kill if "dropped" in line or " failed " in line]
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, errors
    line = errors[0]
    assert line.startswith(
        "error: the embedded DynamoDB exited unexpectedly (killed by signal 9); its tables "
        "are as last saved in db, restored at the next start; "
    ), line
    in_flight = int(line.split("; ")[-1].split()[0])  # "N invocations in flight (…) are kept …"
    assert in_flight > 0 and "users ×" in line, line
    assert len(unfinished.load(tmp_path / "db")) == in_flight

    again = OfflineProcess(tmp_path, "--autosave", "0.3", ports=offline.ports).start()
    try:
        rerun = again.log.read_text()
        assert f"running again {in_flight} invocations the last run left unfinished" in rerun
        run = subprocess.run(  # what generate could not write before the kill, it writes now
            [str(BRIDGE), "generate", "--users", "300", "--seed", str(seed), "--json"]
            + ["--endpoint-url", again.dynamodb_url],
            capture_output=True,
            text=True,
            env=again.env,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        assert len(scan(again.dynamodb_url, LOG_TABLE)) == 1200
        wait_until(lambda: not read_model_lag(again.dynamodb_url), timeout=240, every=0.5)
        again.stop()
    finally:
        again.__exit__()
    assert unfinished.load(tmp_path / "db") == []  # a clean stop: they all ran
