"""The local Lambda runtime, with real worker processes running real handler modules.

Handlers live in ``tests/handlers/runtime_*.py`` (the hot-reload test writes its own
into ``tmp_path``); they record what they see into files the tests read afterwards,
so every assertion is about what happened inside a real sandbox process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.core.errors import ValidationError
from bridge.core.subscriptions import FunctionSpec
from bridge.offline.runtime import FunctionNotFoundError, FunctionRuntime

ROOT = Path(__file__).resolve().parents[1]
ACTIONS = "tests.handlers.runtime_actions.handler"
FAILING = "tests.handlers.runtime_failing.handler"
RECORD = "tests.handlers.runtime_record.handler"


def spec(name: str, handler: str, **fields: Any) -> FunctionSpec:
    return FunctionSpec(name=name, handler=handler, pattern=None, **fields)


@contextlib.asynccontextmanager
async def running(
    *specs: FunctionSpec, root: Path = ROOT, **options: Any
) -> AsyncIterator[FunctionRuntime]:
    options.setdefault("environment", {})
    runtime = FunctionRuntime(specs, project_root=root, **options)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


async def test_invoke_returns_the_value_with_the_function_environment_and_context() -> None:
    shared = {"SHARED": "from the stage", "OVERRIDDEN": "shared value"}
    own = {"OWN": "mine", "OVERRIDDEN": "own value"}
    function = spec("describer", ACTIONS, timeout=3, memory=512, environment=own)
    async with running(function, environment=shared, stage="t1", region="eu-west-1") as runtime:
        result = await runtime.invoke("describer", {"action": "describe", "n": 1})

        assert result.ok, result.error
        assert result.duration_ms > 0
        body = result.payload
        assert body["event"] == {"action": "describe", "n": 1}
        env = body["env"]
        assert env["IS_OFFLINE"] == "true"
        assert env["SHARED"] == "from the stage"
        assert env["OWN"] == "mine"
        assert env["OVERRIDDEN"] == "own value"  # the function's own beats the shared
        assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
        assert env["AWS_LAMBDA_FUNCTION_NAME"] == "dynamodb-logs-t1-describer"
        assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
        assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
        assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/dynamodb-logs-t1-describer"
        assert "[$LATEST]" in env["AWS_LAMBDA_LOG_STREAM_NAME"]
        assert env["AWS_EXECUTION_ENV"].startswith("AWS_Lambda_python3.")
        assert env["LAMBDA_TASK_ROOT"] == str(ROOT)
        assert env["_HANDLER"] == ACTIONS
        assert env["AWS_ACCESS_KEY_ID"]
        assert body["cwd"] == str(ROOT) and body["sys_path_0"] == str(ROOT)

        arn = "arn:aws:lambda:eu-west-1:000000000000:function:dynamodb-logs-t1-describer"
        assert runtime.function_arn("describer") == arn
        context = body["context"]
        assert context == {
            "function_name": "dynamodb-logs-t1-describer",
            "function_version": "$LATEST",
            "invoked_function_arn": arn,
            "memory_limit_in_mb": "512",  # a string, as in AWS
            "aws_request_id": result.request_id,
            "log_group_name": "/aws/lambda/dynamodb-logs-t1-describer",
            "log_stream_name": env["AWS_LAMBDA_LOG_STREAM_NAME"],
        }
        first, second = body["remaining"]
        assert 1000 < first <= 3000  # counts down from the function's 3 s timeout
        assert second <= first - 40  # the handler slept 50 ms between the two readings

        # The environment is the worker's own: this process never saw these variables.
        assert "OWN" not in os.environ and os.environ.get("IS_OFFLINE") != "true"


async def test_names_arns_and_bad_calls() -> None:
    async with running(spec("users", ACTIONS), stage="dev", account="123456789012") as runtime:
        arn = "arn:aws:lambda:us-east-1:123456789012:function:dynamodb-logs-dev-users"
        assert runtime.function_names() == ["users"]
        assert runtime.function_arn("dynamodb-logs-dev-users") == arn
        for name in ("users", "dynamodb-logs-dev-users", arn, f"{arn}:$LATEST"):
            assert runtime.has_function(name), name
        for name in ("other", "dynamodb-logs-prod-users", arn.replace("123456789012", "1")):
            assert not runtime.has_function(name), name
        with pytest.raises(FunctionNotFoundError, match="function not found: other"):
            await runtime.invoke("other", {})
        with pytest.raises(FunctionNotFoundError):
            runtime.invoke_async("other", {})
        with pytest.raises(ValidationError, match="not JSON"):
            await runtime.invoke("users", {"when": object()})
    with pytest.raises(ValidationError, match="on_failure names no function"):
        FunctionRuntime(
            [spec("a", ACTIONS, on_failure="nowhere")], project_root=ROOT, environment={}
        )


async def test_async_retries_then_on_failure_gets_the_seed_record(tmp_path: Path) -> None:
    attempts_file, records_file = tmp_path / "attempts", tmp_path / "records"
    failing = spec(
        "projection",
        FAILING,
        retry_attempts=2,
        retry_delay_ms=200,
        on_failure="failures",
        environment={"ATTEMPTS_FILE": str(attempts_file)},
    )
    failures = spec("failures", RECORD, environment={"RECORDS_FILE": str(records_file)})
    event = {
        "version": "0",
        "id": "5f0e2f29",
        "detail-type": "stream changes",
        "source": "dynamodb-log",
        "detail": {"log": "users", "key": {"pk": "users#12#stream", "sk": 1}},
    }
    async with running(failing, failures, stage="t2") as runtime:
        request_id = runtime.invoke_async("projection", event)  # a plain call: returns at once
        assert not attempts_file.exists()  # … and the function runs in the background
        await runtime.drain()

        attempts = [line.split() for line in read_lines(attempts_file)]
        assert [rid for _, rid in attempts] == [request_id] * 3  # exactly 3 calls, one id
        times = [float(at) for at, _ in attempts]
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        assert all(gap >= 0.2 for gap in gaps), gaps

        records = [json.loads(line) for line in read_lines(records_file)]
        assert len(records) == 1
        record = records[0]["event"]
        assert records[0]["request_id"] != request_id  # the destination's own invocation
        assert set(record) == {
            "version",
            "timestamp",
            "requestContext",
            "requestPayload",
            "responseContext",
            "responsePayload",
        }
        assert record["version"] == "1.0"
        assert record["timestamp"].endswith("Z")
        assert record["requestContext"] == {
            "requestId": request_id,
            "functionArn": runtime.function_arn("projection") + ":$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        }
        assert record["requestPayload"] == event
        assert record["responseContext"] == {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        response = record["responsePayload"]
        assert response["errorType"] == "ProjectionError"
        assert response["errorMessage"] == "cannot project 5f0e2f29"
        assert len(response["trace"]) == 1 and "runtime_failing.py" in response["trace"][0]


async def test_an_event_older_than_max_event_age_goes_to_on_failure(tmp_path: Path) -> None:
    attempts_file, records_file = tmp_path / "attempts", tmp_path / "records"
    failing = spec(
        "aging",
        FAILING,
        retry_attempts=2,
        retry_delay_ms=1200,
        max_event_age=1,
        on_failure="failures",
        environment={"ATTEMPTS_FILE": str(attempts_file)},
    )
    failures = spec("failures", RECORD, environment={"RECORDS_FILE": str(records_file)})
    async with running(failing, failures) as runtime:
        request_id = runtime.invoke_async("aging", {"id": "old"})
        await runtime.drain()
    assert len(read_lines(attempts_file)) == 1  # the first retry would start too late
    (line,) = read_lines(records_file)
    record = json.loads(line)["event"]
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["responsePayload"]["errorType"] == "ProjectionError"


async def test_timeout_kills_the_sandbox_and_the_next_invocation_gets_a_fresh_one() -> None:
    async with running(spec("sleeper", ACTIONS, timeout=1)) as runtime:
        first = await runtime.invoke("sleeper", {"action": "pid"})
        pid = first.payload["pid"]

        started = time.perf_counter()
        result = await runtime.invoke("sleeper", {"action": "sleep", "seconds": 30})
        elapsed = time.perf_counter() - started

        assert not result.ok and result.payload is None
        assert result.error["errorType"] == "Sandbox.Timedout"
        assert result.error["errorMessage"].startswith(f"RequestId: {result.request_id} Error: ")
        assert "Task timed out after 1.00 seconds" in result.error["errorMessage"]
        assert elapsed < 30  # stopped at its timeout, not after the 30 s sleep
        await eventually(lambda: not alive(pid))  # the runaway handler really stopped

        after = await runtime.invoke("sleeper", {"action": "pid"})
        assert after.ok and after.payload["pid"] != pid
        # The caller may shorten the timeout of one invocation, never lengthen it.
        short = await runtime.invoke("sleeper", {"action": "sleep", "seconds": 5}, timeout=0.3)
        assert short.error["errorType"] == "Sandbox.Timedout"
        assert "Task timed out after 0.30 seconds" in short.error["errorMessage"]


async def test_a_slow_function_does_not_delay_another(tmp_path: Path) -> None:
    slow, fast = spec("slow", ACTIONS, timeout=60), spec("fast", ACTIONS)
    started, release, queued = tmp_path / "started", tmp_path / "release", tmp_path / "queued"
    async with running(slow, fast, max_concurrency=1) as runtime:
        hold = {"action": "hold", "started": str(started), "release": str(release)}
        busy = asyncio.create_task(runtime.invoke("slow", hold))
        await eventually(started.exists, timeout=30)  # slow's only slot is taken until released
        runtime.invoke_async("slow", {"action": "touch", "path": str(queued)})

        for _ in range(5):  # were fast held up by slow, this would wait for the release
            result = await asyncio.wait_for(runtime.invoke("fast", {"action": "pid"}), 30)
            assert result.ok
        assert not busy.done() and not queued.exists()  # slow's queue waits its turn

        release.touch()
        assert (await busy).ok
        await runtime.drain()
        assert queued.exists()  # the queued invocation ran once the slot was free


async def test_concurrent_invocations_of_one_function_use_separate_sandboxes(
    tmp_path: Path,
) -> None:
    release = tmp_path / "release"
    async with running(spec("wide", ACTIONS), max_concurrency=3) as runtime:
        starts = [tmp_path / f"started-{n}" for n in range(3)]
        calls = [
            asyncio.create_task(
                runtime.invoke(
                    "wide", {"action": "hold", "started": str(s), "release": str(release)}
                )
            )
            for s in starts
        ]
        # All three are inside the handler at once: in a row, the second could not start.
        await eventually(lambda: all(s.exists() for s in starts), timeout=30)
        release.touch()
        results = await asyncio.gather(*calls)
        assert all(r.ok for r in results)
        assert len({r.payload["pid"] for r in results}) == 3  # three sandboxes
        pids = await asyncio.gather(*(runtime.invoke("wide", {"action": "pid"}) for _ in range(6)))
        assert {r.payload["pid"] for r in pids} <= {r.payload["pid"] for r in results}  # reused


async def test_editing_a_handler_or_its_imports_takes_effect_on_the_next_invocation(
    tmp_path: Path,
) -> None:
    handler_file, helper_file = tmp_path / "reloadable.py", tmp_path / "reload_helper.py"

    def write(path: Path, text: str, bump: int) -> None:
        path.write_text(text, encoding="utf-8")
        stamp = time.time() + bump  # a new mtime even within one clock tick
        os.utime(path, (stamp, stamp))

    write(helper_file, 'GREETING = "hello"\n', 0)
    handler = "import os\nimport reload_helper\n\ndef handler(event, context):\n"
    write(handler_file, handler + '    return ["v1", reload_helper.GREETING, os.getpid()]\n', 0)
    async with running(spec("live", "reloadable.handler"), root=tmp_path) as runtime:
        first = await runtime.invoke("live", {})
        again = await runtime.invoke("live", {})
        assert first.payload[:2] == ["v1", "hello"]
        assert again.payload == first.payload  # unchanged sources: the same warm sandbox

        write(handler_file, handler + '    return ["v2", reload_helper.GREETING, os.getpid()]\n', 2)
        second = await runtime.invoke("live", {})
        assert second.payload[:2] == ["v2", "hello"]

        write(helper_file, 'GREETING = "bonjour"\n', 4)  # only a module the handler imports
        third = await runtime.invoke("live", {})
        assert third.payload[:2] == ["v2", "bonjour"]

        write(handler_file, "def handler(event, context)\n    return 1\n", 6)
        broken = await runtime.invoke("live", {})
        assert broken.error["errorType"] == "Runtime.UserCodeSyntaxError"
        write(handler_file, handler + '    return ["v3", reload_helper.GREETING, 0]\n', 8)
        fixed = await runtime.invoke("live", {})
        assert fixed.payload == ["v3", "bonjour", 0]


async def test_handler_output_goes_to_the_log_not_into_the_protocol(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.offline")
    async with running(spec("talker", ACTIONS)) as runtime:
        result = await runtime.invoke("talker", {"action": "print"})
        assert result.ok and result.payload == {"printed": True}
        follow_up = await runtime.invoke("talker", {"action": "pid"})
        assert follow_up.ok

        def logged() -> list[str]:
            name = "bridge.offline.functions.talker"
            return [r.getMessage() for r in caplog.records if r.name == name]

        expected = [
            '{"id": "forged", "payload": "not from the protocol"}',
            "a plain line from print()",
            "a line on stderr",
            "a line from a child process",
        ]
        await eventually(lambda: all(line in logged() for line in expected))
        assert any(line.startswith("no newline at the end") for line in logged())

        summaries = [r.getMessage() for r in caplog.records if r.name == "bridge.offline.runtime"]
        assert any(
            s.startswith(f"talker {result.request_id} ") and s.endswith("ok (cold start)")
            for s in summaries
        )
        assert any(s.startswith(f"talker {follow_up.request_id} ") for s in summaries)


async def test_errors_look_like_the_lambda_python_runtime(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.offline")
    functions = [
        spec("missing", "tests.handlers.runtime_not_there.handler"),
        spec("broken", "tests.handlers.runtime_broken_import.handler"),
        spec("nameless", "tests.handlers.runtime_no_handler.handler"),
        spec("actions", ACTIONS),
    ]
    async with running(*functions) as runtime:
        missing, broken, nameless, raised, marshal, crashed = await asyncio.gather(
            runtime.invoke("missing", {}),
            runtime.invoke("broken", {}),
            runtime.invoke("nameless", {}),
            runtime.invoke("actions", {"action": "nope"}),
            runtime.invoke("actions", {"action": "marshal"}),
            runtime.invoke("actions", {"action": "exit"}),
        )
        assert missing.error == {
            "errorType": "Runtime.ImportModuleError",
            "errorMessage": "Unable to import module 'tests.handlers.runtime_not_there': "
            "No module named 'tests.handlers.runtime_not_there'",
            "trace": [],
        }
        assert broken.error["errorType"] == "Runtime.ImportModuleError"
        assert broken.error["errorMessage"] == (
            "Unable to import module 'tests.handlers.runtime_broken_import': "
            "No module named 'bridge_offline_no_such_dependency'"
        )
        assert nameless.error["errorType"] == "Runtime.HandlerNotFound"
        assert nameless.error["errorMessage"] == (
            "Handler 'handler' missing on module 'tests.handlers.runtime_no_handler'"
        )
        assert raised.error["errorType"] == "ValueError"
        assert raised.error["errorMessage"] == "unknown action 'nope'"
        # Only the handler's frames, none of the worker's (the bootstrap hides its own too).
        assert len(raised.error["trace"]) == 1
        assert 'runtime_actions.py", line' in raised.error["trace"][0]
        assert marshal.error["errorType"] == "Runtime.MarshalError"
        assert marshal.error["errorMessage"] == (
            "Unable to marshal response: Object of type set is not JSON serializable"
        )
        assert crashed.error["errorType"] == "Runtime.ExitError"
        assert crashed.error["errorMessage"].endswith("Runtime exited with error: exit status 3")
        assert all(r.payload is None for r in (missing, broken, nameless, raised, marshal))

        numbers = await runtime.invoke("actions", {"action": "decimal"})
        assert numbers.payload == {"count": 3, "ratio": 0.5}  # Decimals marshal as numbers
        huge = await runtime.invoke("actions", {"action": "infinity"})
        assert huge.ok and huge.payload == {"huge": float("inf")}  # not a crashed sandbox

        def errors_logged() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == "bridge.offline.functions.actions" and r.levelno == logging.ERROR
            ]

        # One log record per error report, traceback included, as CloudWatch shows it.
        await eventually(
            lambda: any(m.startswith("[ERROR] ValueError: unknown action") for m in errors_logged())
        )
        report = next(m for m in errors_logged() if m.startswith("[ERROR] ValueError"))
        assert "Traceback (most recent call last):" in report and "runtime_actions.py" in report


async def test_stop_drains_in_flight_async_invocations(tmp_path: Path) -> None:
    records_file = tmp_path / "records"
    recorder = spec(
        "recorder",
        RECORD,
        environment={"RECORDS_FILE": str(records_file), "SLOW_SECONDS": "0.4"},
    )
    runtime = FunctionRuntime([recorder], project_root=ROOT, environment={}, max_concurrency=2)
    await runtime.start()
    ids = [runtime.invoke_async("recorder", {"n": n}) for n in range(4)]
    warm = await runtime.invoke("recorder", {"n": "sync"})
    assert warm.ok
    sandboxes = [s for f in runtime._functions.values() for s in f.sandboxes]
    await runtime.stop()

    written = [json.loads(line) for line in read_lines(records_file)]
    assert sorted(r["request_id"] for r in written if r["event"] != {"n": "sync"}) == sorted(ids)
    assert sorted(r["event"]["n"] for r in written if r["event"] != {"n": "sync"}) == [0, 1, 2, 3]
    assert sandboxes and all(s.process.returncode is not None for s in sandboxes)
    with pytest.raises(Exception, match="stopped"):
        runtime.invoke_async("recorder", {"n": "late"})


async def test_a_response_over_lambdas_6_mb_is_a_function_error() -> None:
    async with running(spec("big", ACTIONS)) as runtime:
        fits = await runtime.invoke("big", {"action": "big", "bytes": 1_000_000})
        assert fits.ok and len(fits.payload) == 1_000_000
        over = await runtime.invoke("big", {"action": "big", "bytes": 7_000_000})
    assert over.error["errorType"] == "Function.ResponseSizeTooLarge"
    assert "6291556 bytes" in over.error["errorMessage"]


async def test_a_call_cancelled_midway_retires_its_sandbox(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    async with running(spec("held", ACTIONS, timeout=60)) as runtime:
        hold = {"action": "hold", "started": str(started), "release": str(release)}
        call = asyncio.create_task(runtime.invoke("held", hold))
        await eventually(started.exists, timeout=30)
        (busy,) = runtime._functions["held"].sandboxes
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # Its state is unknown (the handler may still run): killed, never reused.
        await eventually(lambda: busy.process.returncode is not None)
        after = await runtime.invoke("held", {"action": "pid"})
        assert after.ok and after.payload["pid"] != busy.process.pid


async def test_an_init_phase_over_its_limit_is_a_sandbox_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridge.offline.runtime as runtime_module

    # Lambda's limit is 10 s; the test's handler module takes 30 s to import.
    monkeypatch.setattr(runtime_module, "INIT_TIMEOUT", 0.5)
    (tmp_path / "slow_import.py").write_text(
        "import time\ntime.sleep(30)\n\ndef handler(event, context):\n    return 1\n",
        encoding="utf-8",
    )
    async with running(spec("slow", "slow_import.handler"), root=tmp_path) as runtime:
        started = time.perf_counter()
        result = await runtime.invoke("slow", {})
        assert time.perf_counter() - started < 30
        assert result.payload is None and result.error is not None
        assert result.error["errorType"] == "Sandbox.Timedout"
        assert result.error["errorMessage"] == (
            f"RequestId: {result.request_id} Error: Init phase timed out after 0.50 seconds"
        )
        assert not runtime._functions["slow"].sandboxes  # the one that timed out is gone
