"""The local Lambda runtime of ``bridge offline``: invoke handlers as AWS Lambda would.

Every function runs in worker processes of its own (:mod:`bridge.offline.worker`), one
per concurrent execution environment, like Lambda's sandboxes:

* **Isolation.** A process per sandbox gives each function its own ``os.environ``
  (the stage's variables, the function's own, the ones Lambda reserves, and
  ``IS_OFFLINE=true``) and lets a timeout really stop a runaway handler: the process
  group is killed and the next invocation gets a fresh sandbox.
* **Concurrency.** Up to ``max_concurrency`` sandboxes per function, started on
  demand and reused while idle. Invocations beyond that wait for a free sandbox of
  *that* function only; a slow or failing function never delays another one, nor
  the caller of :meth:`FunctionRuntime.invoke_async`.
* **Hot reload.** Each sandbox reports the project files (``.py`` under the
  project root, outside the virtual environment) it has imported, with their
  mtime and size. Before an idle sandbox takes an invocation, the runtime checks
  them; when any changed, the sandbox is replaced. So an edit to a handler *or to
  any project module it imports* takes effect on the next invocation, with nothing
  restarted by hand and no stale module state (``importlib.reload`` would keep
  both). Files outside the project root (installed packages) are not watched.
* **Async invocations** (:meth:`FunctionRuntime.invoke_async`) behave like Lambda's
  ``Event`` invocation type: one attempt plus ``retry_attempts`` retries, spaced by
  ``retry_delay_ms`` (AWS uses its own back-off; the delay is the seed's offline
  ``retryDelayMs``), all with the same request id. When every attempt failed, or the
  event grew older than ``max_event_age`` before an attempt could start, the
  ``on_failure`` function gets the seed's failure record (with the condition
  ``RetriesExhausted`` or ``EventAgeExceeded``). The queue of pending events is not
  bounded by count: as in Lambda, ``max_event_age`` is what bounds it, and every
  event waits in its own task, so the caller is never blocked.

Error payloads match the Lambda Python runtime; errors raised by the platform rather
than the handler: ``Sandbox.Timedout`` (``RequestId: <id> Error: Task timed out
after N.NN seconds``) and ``Runtime.ExitError`` (the sandbox process exited).

**When the local cloud breaks** (the embedded DynamoDB died, or a task of offline did:
see :mod:`bridge.offline.supervisor`), :meth:`FunctionRuntime.halt` stops invoking at
once: running sandboxes are killed, waiting and retrying async invocations are
cancelled, and nothing new starts. None of that is a handler's failure — no retry is
used up, no onFailure record is sent, nothing is logged as a failed invocation —
and every async invocation not finished is kept in :attr:`FunctionRuntime.unfinished`
(the function, its request id and the event), for the local cloud to run again at its
next start. ``healthy`` is asked before an attempt that failed is counted, and before
a sandbox's warnings and errors are logged: a handler that failed because DynamoDB
died a moment earlier did not fail, and its traceback is not shown (``-v`` shows it).
Every task the runtime starts is handed to ``supervise``, so one that dies of an
exception breaks the cloud instead of leaving a sandbox unread or an event dropped.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bridge.core.errors import BridgeError, ValidationError
from bridge.core.failure import (
    EVENT_AGE_EXCEEDED,
    EXECUTED_VERSION,
    RETRIES_EXHAUSTED,
    failure_record,
    runtime_error,
)
from bridge.core.names import (
    DEFAULT_REGION,
    LOCAL_ACCOUNT,
    function_arn,
    function_name,
    log_group_name,
)
from bridge.core.subscriptions import FunctionSpec
from bridge.offline.supervisor import Halted, Supervise, report_death
from bridge.offline.worker_protocol import (
    MAX_LINE_BYTES,
    Reply,
    WorkerProtocolError,
    cut_marker,
    decode_ready,
    decode_reply,
    encode_request,
)

__all__ = ["FunctionNotFoundError", "FunctionRuntime", "InvocationResult", "Unfinished"]

logger = logging.getLogger(__name__)

FUNCTION_VERSION = EXECUTED_VERSION  # "$LATEST": functions are never published locally
EXECUTION_ENV = f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}"
#: Lambda's limit on the init phase (importing the handler module) of on-demand sandboxes.
INIT_TIMEOUT = 10.0
#: How long a sandbox may take to exit after its input was closed, before it is killed.
STOP_GRACE = 2.0
#: Largest protocol line read from a sandbox (Lambda's synchronous payload limit is 6 MB);
#: also the most of one log line held in memory at once.
LINE_LIMIT = MAX_LINE_BYTES
#: The longest line of a function's log passed on whole: 256 KiB, the most one CloudWatch
#: Logs event holds. A longer line (a handler printing a huge value) keeps its first
#: LOG_LINE_LIMIT bytes and ends in the protocol's cut marker, ``… [cut: N bytes, the
#: first M kept]``; its tail is never logged as a line of its own.
LOG_LINE_LIMIT = 256 * 1024
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "offline", "AWS_SECRET_ACCESS_KEY": "offline"}

SANDBOX_TIMEDOUT = "Sandbox.Timedout"
EXIT_ERROR = "Runtime.ExitError"

_LOG_LEVELS = {
    "[DEBUG]": logging.DEBUG,
    "[INFO]": logging.INFO,
    "[WARNING]": logging.WARNING,
    "[ERROR]": logging.ERROR,
    "[CRITICAL]": logging.CRITICAL,
}


class FunctionNotFoundError(BridgeError):
    """An invocation named no function of the runtime (Lambda: ResourceNotFoundException)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"function not found: {name}")


@dataclass(frozen=True)
class InvocationResult:
    """What one synchronous invocation (or one async attempt) produced."""

    request_id: str
    payload: Any
    error: dict[str, Any] | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Unfinished:
    """An async invocation the runtime was halted in the middle of (or before): to be
    run again. ``event`` is the event's JSON text, as the function would have got it."""

    function: str
    request_id: str
    event: str


_Decoded = TypeVar("_Decoded")


class _SandboxExited(Exception):
    """The worker process ended, closed its protocol pipe or broke the protocol before
    replying (``returncode`` None: it gave no reason, the channel is not to be trusted)."""

    def __init__(self, returncode: int | None) -> None:
        self.returncode = returncode
        super().__init__(f"exit status {returncode}")


class _Sandbox:
    """The runtime's side of one worker process: its pipes, its log pump, its watch list."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        function_logger: logging.Logger,
        supervise: Supervise = report_death,
        healthy: Callable[[], bool] = lambda: True,
    ):
        self.process = process
        self.watch: dict[str, tuple[int, int]] = {}
        self._healthy = healthy
        self._pump = asyncio.get_running_loop().create_task(self._forward_log(function_logger))
        supervise(self._pump, f"the log pump of {function_logger.name.rpartition('.')[2]}")

    @classmethod
    async def start(
        cls,
        *,
        handler: str,
        project_root: Path,
        env: dict[str, str],
        function_logger: logging.Logger,
        supervise: Supervise = report_death,
        healthy: Callable[[], bool] = lambda: True,
    ) -> _Sandbox:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge.offline.worker",
            "--handler",
            handler,
            "--project-root",
            str(project_root),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=project_root,
            env=env,
            limit=LINE_LIMIT,
            # Own process group: a timeout kills the handler's children too, and a
            # Ctrl-C in the terminal reaches only `bridge offline`, which shuts down.
            start_new_session=True,
        )
        sandbox = cls(process, function_logger, supervise, healthy)
        try:
            sandbox.watch.update(await asyncio.wait_for(sandbox._read(decode_ready), INIT_TIMEOUT))
        except BaseException:
            await sandbox.kill()
            raise
        return sandbox

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def stale(self) -> bool:
        """Whether a project file this sandbox imported changed on disk since."""
        for path, (mtime_ns, size) in self.watch.items():
            try:
                stat = os.stat(path)
            except OSError:
                return True
            if stat.st_mtime_ns != mtime_ns or stat.st_size != size:
                return True
        return False

    async def call(self, request_id: str, line: str, timeout: float) -> Reply:
        """Send one request line and wait for its reply (``TimeoutError`` after ``timeout``)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line.encode())
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise _SandboxExited(await self._exit_status()) from None
        reply = await asyncio.wait_for(self._read(decode_reply), timeout)
        if reply.request_id != request_id:  # a corrupted channel: never trust it again
            raise _SandboxExited(None)
        self.watch.update(reply.watch)
        return reply

    async def _read(self, decode: Callable[[bytes], _Decoded]) -> _Decoded:
        """The next protocol line, decoded; a line that breaks the protocol ends the sandbox
        (it cannot happen with the worker's clean channel; be safe)."""
        assert self.process.stdout is not None
        try:
            line = await self.process.stdout.readline()
        except ValueError:  # longer than MAX_LINE_BYTES: the worker never writes one
            raise _SandboxExited(None) from None
        if not line:
            raise _SandboxExited(await self._exit_status())
        try:
            return decode(line)
        except WorkerProtocolError:
            raise _SandboxExited(None) from None

    async def _exit_status(self) -> int | None:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.process.wait(), STOP_GRACE)
        return None

    async def _forward_log(self, function_logger: logging.Logger) -> None:
        """Everything the sandbox writes to stderr is the function's log, line by line."""
        stream = self.process.stderr
        assert stream is not None
        while True:
            text = await read_log_line(stream, LOG_LINE_LIMIT)
            if text is None:
                return
            text = text.rstrip("\r")
            if not text.strip():
                continue
            level = _LOG_LEVELS.get(text.split("\t", 1)[0].split(" ", 1)[0], logging.INFO)
            if level >= logging.WARNING and not self._healthy():
                level = logging.DEBUG  # the cloud broke under the handler: not its fault
            # Lambda joins the lines of one error report with \r: one record, many lines.
            function_logger.log(level, "%s", text.replace("\r", "\n"))

    async def close(self) -> None:
        """End the sandbox: close its input (the worker exits), kill it if it lingers."""
        if self.alive and self.process.stdin is not None:
            with contextlib.suppress(Exception):
                self.process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), STOP_GRACE)
        await self.kill()

    def kill_now(self) -> None:
        """Kill the whole process group at once (the handler's children included); an
        invocation waiting for its reply then sees the sandbox exit."""
        if not self.alive:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group's leader is the worker
        except ProcessLookupError:
            return  # gone already
        except PermissionError:
            # Not Process.kill() otherwise: Popen polls before it signals, and that reaps
            # the process under asyncio's child watcher ("Unknown child process" warning).
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def kill(self) -> None:
        """:meth:`kill_now`, then wait until the process and its log are done."""
        self.kill_now()
        await self.process.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._pump, STOP_GRACE)


class _Function:
    """One function's spec, identity and pool of sandboxes."""

    def __init__(self, spec: FunctionSpec, full_name: str, arn: str, max_concurrency: int):
        self.spec = spec
        self.full_name = full_name
        self.arn = arn
        # Not __name__: a logger per function, named after it, so the function's own
        # output reads as such in the log lines and -q/-v (cli_runner) or a test can
        # pick out one function's lines by name. Deliberately outside the module
        # convention, like Lambda's one log group per function.
        self.log = logging.getLogger(f"bridge.offline.functions.{spec.name}")
        self.slots = asyncio.Semaphore(max_concurrency)
        self.idle: list[_Sandbox] = []
        self.sandboxes: set[_Sandbox] = set()


class FunctionRuntime:
    """Runs the functions of a subscriptions definition locally, as Lambda does in AWS.

    ``environment`` holds the variables every function gets (the stage's table and
    bus names, the ``AWS_ENDPOINT_URL_*`` of the local cloud); each function adds its
    own. ``max_concurrency`` is the number of sandboxes per function.
    """

    def __init__(
        self,
        functions: Iterable[FunctionSpec],
        *,
        project_root: Path,
        environment: dict[str, str],
        stage: str = "local",
        region: str = DEFAULT_REGION,
        account: str = LOCAL_ACCOUNT,
        max_concurrency: int = 4,
        supervise: Supervise = report_death,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        if max_concurrency < 1:
            raise ValidationError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.project_root = Path(project_root).resolve()
        self.environment = dict(environment)
        self.stage = stage
        self.region = region
        self.account = account
        self._functions: dict[str, _Function] = {}
        for spec in functions:
            if spec.name in self._functions:
                raise ValidationError(f"function {spec.name!r} is defined twice")
            full_name = function_name(stage, spec.name)
            arn = function_arn(region, account, stage, spec.name)
            self._functions[spec.name] = _Function(spec, full_name, arn, max_concurrency)
        for function in self._functions.values():
            target = function.spec.on_failure
            if target is not None and target not in self._functions:
                raise ValidationError(
                    f"function {function.spec.name!r}: on_failure names no function: {target!r}"
                )
        self._tasks: set[asyncio.Task[None]] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self._supervise = supervise
        self._healthy = healthy
        self._halted = False
        #: Async invocations a halt cut short or kept from starting, in the order met.
        self.unfinished: list[Unfinished] = []

    # ------------------------------------------------------------------ names

    def function_names(self) -> list[str]:
        return list(self._functions)

    def configurations(self) -> list[dict[str, Any]]:
        """Each function as Lambda's ListFunctions describes it (the fields that apply)."""
        return [
            {
                "FunctionName": f.full_name,
                "FunctionArn": f.arn,
                "Runtime": f"python{sys.version_info.major}.{sys.version_info.minor}",
                "Handler": f.spec.handler,
                "Timeout": f.spec.timeout,
                "MemorySize": f.spec.memory,
                "Version": FUNCTION_VERSION,
                "Environment": {"Variables": {**self.environment, **f.spec.environment}},
            }
            for f in self._functions.values()
        ]

    def has_function(self, name: str) -> bool:
        return self._lookup(name) is not None

    def function_arn(self, name: str) -> str:
        return self._function(name).arn

    def _lookup(self, name: str) -> _Function | None:
        """Short name, full name (``dynamodb-logs-{stage}-x``) or ARN (qualified or not)."""
        if name.startswith("arn:"):
            parts = name.split(":")
            if len(parts) not in (7, 8) or parts[2] != "lambda" or parts[5] != "function":
                return None
            if parts[3] != self.region or parts[4] != self.account:
                return None
            if len(parts) == 8 and parts[7] != FUNCTION_VERSION:
                return None
            name = parts[6]
        found = self._functions.get(name)
        if found is not None:
            return found
        prefix = function_name(self.stage, "")
        if name.startswith(prefix):
            return self._functions.get(name.removeprefix(prefix))
        return None

    def _function(self, name: str) -> _Function:
        found = self._lookup(name)
        if found is None:
            raise FunctionNotFoundError(name)
        return found

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Sandboxes start on demand (a first invocation is a cold start, as in AWS)."""
        self._closed = False

    async def warm(self, names: Iterable[str] | None = None) -> None:
        """Start one idle sandbox per function now, so the first event finds it warm.

        ``bridge offline`` does this at start: a cold start (~0.5 s of imports) on
        the first event of a debugging session only hides real latencies.
        """
        functions = [self._function(n) for n in names] if names else self._functions.values()
        cold = [f for f in functions if not f.idle]
        started = await asyncio.gather(
            *(self._start_sandbox(f) for f in cold), return_exceptions=True
        )
        for function, sandbox in zip(cold, started, strict=True):
            if not isinstance(sandbox, BaseException):  # the others' sandboxes stay of use
                function.idle.append(sandbox)
        for failed in started:
            if isinstance(failed, BaseException):
                raise failed

    async def stop(self) -> None:
        """Finish every scheduled async invocation, then end every sandbox."""
        await self.drain()
        self._closed = True
        sandboxes = [s for f in self._functions.values() for s in f.sandboxes]
        for function in self._functions.values():
            function.idle.clear()
            function.sandboxes.clear()
        await asyncio.gather(*(s.close() for s in sandboxes), return_exceptions=True)
        while self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)

    def halt(self) -> None:
        """Stop invoking at once, for the local cloud broke (see the module's docstring):
        kill the running sandboxes, cancel the async invocations; from now on an
        invocation raises :class:`~bridge.offline.supervisor.Halted` and an async one
        is kept in :attr:`unfinished` without running."""
        if self._halted:
            return
        self._halted = True
        for task in list(self._tasks):
            task.cancel()  # each keeps its invocation in `unfinished` (see _deliver)
        for function in self._functions.values():
            for sandbox in function.sandboxes - set(function.idle):
                sandbox.kill_now()  # a synchronous invocation in it raises Halted

    @property
    def halted(self) -> bool:
        return self._halted

    def backlog(self) -> int:
        """Async invocations scheduled and not finished (retries and onFailure included)."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for every async invocation, its retries and its onFailure delivery."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ invoking

    async def invoke(
        self, name: str, event: Any, *, timeout: float | None = None
    ) -> InvocationResult:
        """A ``RequestResponse`` invocation: one attempt, no retries.

        ``timeout`` (seconds) shortens the function's own timeout for this call, e.g.
        to API Gateway's 29 s integration limit; it never lengthens it.
        """
        function = self._function(name)
        text = _encode_event(event)
        request_id = str(uuid.uuid4())
        result = await self._attempt(function, request_id, text, timeout=timeout)
        assert result is not None
        return result

    def invoke_async(self, name: str, event: Any) -> str:
        """An ``Event`` invocation: returns the request id at once, runs in the background.

        Must be called from within the running event loop.
        """
        if self._closed and not self._halted:
            raise BridgeError("the function runtime is stopped")
        function = self._function(name)
        text = _encode_event(event)
        request_id = str(uuid.uuid4())
        if self._halted:  # accepted all the same, to run at the next start
            self.unfinished.append(Unfinished(function.spec.name, request_id, text))
            return request_id
        task = asyncio.get_running_loop().create_task(
            self._deliver(function, request_id, event, text, time.monotonic()),
            name=f"invoke-async {function.spec.name} {request_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._supervise(task, f"the async invocation {request_id} of {function.spec.name}")
        return request_id

    async def _deliver(
        self, function: _Function, request_id: str, event: Any, text: str, received: float
    ) -> None:
        """Lambda's async invocation: attempts, retries, then the onFailure destination."""
        spec = function.spec

        def too_old() -> bool:
            return time.monotonic() - received > spec.max_event_age

        try:
            attempts = 0
            last: InvocationResult | None = None
            condition = RETRIES_EXHAUSTED
            for attempt in range(spec.retry_attempts + 1):
                if attempt:
                    await asyncio.sleep(spec.retry_delay_ms / 1000)
                result = await self._attempt(function, request_id, text, expired=too_old)
                if result is None:
                    condition = EVENT_AGE_EXCEEDED
                    break
                attempts += 1
                last = result
                if result.ok:
                    return
            self._fail(function, request_id, event, attempts, last, condition)
        except Halted:
            self.unfinished.append(Unfinished(spec.name, request_id, text))
        except asyncio.CancelledError:
            if self._halted:
                self.unfinished.append(Unfinished(spec.name, request_id, text))
            raise
        except Exception:
            # The runtime's own fault, not the handler's: the event is kept to run again,
            # and the task's death (supervised) breaks the cloud.
            self.unfinished.append(Unfinished(spec.name, request_id, text))
            raise

    def _fail(
        self,
        function: _Function,
        request_id: str,
        event: Any,
        attempts: int,
        last: InvocationResult | None,
        condition: str,
    ) -> None:
        spec = function.spec
        if last is not None and last.error is not None:
            error = last.error
        else:  # the event expired before any attempt ran
            error = runtime_error(
                EVENT_AGE_EXCEEDED, f"event older than {spec.max_event_age} seconds"
            )
        logger.warning(
            "%s request %s failed (%s after %d attempt(s)): %s: %s%s",
            spec.name,
            request_id,
            condition,
            attempts,
            error.get("errorType"),
            error.get("errorMessage"),
            f"; sent to {spec.on_failure}" if spec.on_failure else "; no on_failure: dropped",
        )
        if spec.on_failure is None:
            return
        record = failure_record(
            request_payload=event,
            function_arn=f"{function.arn}:{FUNCTION_VERSION}",
            request_id=request_id,
            invoke_count=attempts,
            error_type=str(error.get("errorType", "")),
            error_message=str(error.get("errorMessage", "")),
            trace=list(error.get("trace") or []),
            timestamp=datetime.now(UTC),
            condition=condition,
        )
        self.invoke_async(spec.on_failure, record)

    async def _attempt(
        self,
        function: _Function,
        request_id: str,
        text: str,
        *,
        timeout: float | None = None,
        expired: Callable[[], bool] | None = None,
    ) -> InvocationResult | None:
        """Run one attempt in a free sandbox; ``None`` when ``expired()`` said not to run."""
        spec = function.spec
        limit = float(spec.timeout) if timeout is None else min(float(spec.timeout), timeout)
        async with function.slots:
            self._check_halted()
            if expired is not None and expired():
                return None
            started = time.perf_counter()
            sandbox = self._take_idle(function)
            cold = sandbox is None
            try:
                if sandbox is None:
                    sandbox = await self._start_sandbox(function)
            except (_SandboxExited, TimeoutError) as exc:  # no sandbox to retire
                self._check_halted(failed=True)
                limit_hit = f"Init phase timed out after {INIT_TIMEOUT:.2f} seconds"
                return self._sandbox_failed(function, request_id, exc, limit_hit, started, cold)
            if self._halted:  # while the sandbox started: it is left idle, for stop()
                function.idle.append(sandbox)
                self._check_halted()
            deadline_ms = int((time.time() + limit) * 1000)
            line = encode_request(request_id, function.arn, deadline_ms, text)
            try:
                reply = await sandbox.call(request_id, line, limit)
            except BaseException as exc:
                # Timed out, exited, corrupted or cancelled mid-call: whatever its state,
                # this sandbox never takes another invocation.
                self._retire(function, sandbox)
                if not isinstance(exc, _SandboxExited | TimeoutError):
                    raise
                self._check_halted(failed=True)
                limit_hit = f"Task timed out after {limit:.2f} seconds"  # the limit, as AWS
                return self._sandbox_failed(function, request_id, exc, limit_hit, started, cold)
            function.idle.append(sandbox)
            if reply.error is not None:
                self._check_halted(failed=True)
            return self._finish(function, request_id, reply.payload, reply.error, started, cold)

    def _check_halted(self, failed: bool = False) -> None:
        """Raise Halted if the runtime is halted — or, for an attempt that ``failed``, if
        the cloud is not healthy: then it failed for the cloud, not for its handler."""
        if not self._halted and failed and not self._healthy():
            self.halt()  # (the cloud's supervisor has usually done so already)
        if self._halted:
            raise Halted("bridge offline is stopping: the local cloud broke")

    def _sandbox_failed(
        self,
        function: _Function,
        request_id: str,
        failure: _SandboxExited | TimeoutError,
        limit_hit: str,
        started: float,
        cold: bool,
    ) -> InvocationResult:
        """Finish an attempt that the sandbox failed, not the handler, with Lambda's report.

        ``limit_hit`` says which limit a ``TimeoutError`` hit (the init phase's or the
        task's); an exited or corrupted sandbox is ``Runtime.ExitError``.
        """
        if isinstance(failure, TimeoutError):
            error = runtime_error(SANDBOX_TIMEDOUT, f"RequestId: {request_id} Error: {limit_hit}")
        else:
            error = _exit_error(request_id, failure.returncode)
        return self._finish(function, request_id, None, error, started, cold)

    def _finish(
        self,
        function: _Function,
        request_id: str,
        payload: Any,
        error: dict[str, Any] | None,
        started: float,
        cold: bool,
    ) -> InvocationResult:
        duration_ms = (time.perf_counter() - started) * 1000
        outcome = "ok" if error is None else f"error {error.get('errorType')}"
        logger.info(
            "%s %s %.1f ms %s%s",
            function.spec.name,
            request_id,
            duration_ms,
            outcome,
            " (cold start)" if cold else "",
        )
        return InvocationResult(
            request_id=request_id,
            payload=None if error is not None else payload,
            error=error,
            duration_ms=duration_ms,
        )

    # ------------------------------------------------------------------ sandboxes

    def _take_idle(self, function: _Function) -> _Sandbox | None:
        """A reusable idle sandbox; dead or stale ones (edited sources) are retired."""
        while function.idle:
            sandbox = function.idle.pop()
            if sandbox.alive and not sandbox.stale():
                return sandbox
            self._retire(function, sandbox)
        return None

    async def _start_sandbox(self, function: _Function) -> _Sandbox:
        if self._closed:
            raise BridgeError("the function runtime is stopped")
        log_stream = f"{datetime.now(UTC):%Y/%m/%d}/[{FUNCTION_VERSION}]{uuid.uuid4().hex}"
        sandbox = await _Sandbox.start(
            handler=function.spec.handler,
            project_root=self.project_root,
            env=self.sandbox_environment(function.spec.name, log_stream),
            function_logger=function.log,
            supervise=self._supervise,
            healthy=self._healthy,
        )
        function.sandboxes.add(sandbox)
        return sandbox

    def _retire(self, function: _Function, sandbox: _Sandbox) -> None:
        """Kill a sandbox in the background; the invocation that found it bad goes on."""
        function.sandboxes.discard(sandbox)
        with contextlib.suppress(ValueError):
            function.idle.remove(sandbox)
        task = asyncio.get_running_loop().create_task(sandbox.kill())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        self._supervise(task, f"retiring a sandbox of {function.spec.name}")

    def sandbox_environment(self, name: str, log_stream: str = "") -> dict[str, str]:
        """A sandbox's ``os.environ``: this process's, the shared, the function's, Lambda's.

        Lambda's reserved variables come last: a function cannot override them in AWS
        either. Dummy credentials are added when none are set, so a handler's boto3
        client never falls back to a real profile while it runs offline.
        """
        function = self._function(name)
        spec = function.spec
        env = dict(os.environ)
        env.update(self.environment)
        env.update(spec.environment)
        if not env.get("AWS_ACCESS_KEY_ID"):
            env.update(DUMMY_CREDENTIALS)
            env.pop("AWS_SESSION_TOKEN", None)
        env.update(
            {
                "IS_OFFLINE": "true",
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_EXECUTION_ENV": EXECUTION_ENV,
                "AWS_LAMBDA_FUNCTION_NAME": function.full_name,
                "AWS_LAMBDA_FUNCTION_VERSION": FUNCTION_VERSION,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
                "AWS_LAMBDA_LOG_GROUP_NAME": log_group_name(function.full_name),
                "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "LAMBDA_TASK_ROOT": str(self.project_root),
                "_HANDLER": spec.handler,
            }
        )
        return env


async def read_log_line(stream: asyncio.StreamReader, limit: int) -> str | None:
    """The next line of a function's log (without its end), at most ``limit`` bytes of
    it with the cut marker after; None once the stream is over.

    ``readline`` would not do: on a line longer than the stream's limit it drops what it
    had read, and the line's tail would come next as a line of its own. ``readuntil``
    leaves an overlong line in the buffer, so it is taken in pieces: the head kept, the
    rest counted and let go, never more than the stream's limit held at once.
    """
    head = bytearray()
    total = 0
    while True:
        try:
            piece = await stream.readuntil(b"\n")
            ended = True
        except asyncio.IncompleteReadError as eof:  # the stream ended: the last line
            piece, ended = eof.partial, True
            if not piece and not total:
                return None
        except asyncio.LimitOverrunError as overrun:  # no end within the stream's limit
            piece, ended = await stream.read(overrun.consumed), False
        if ended:
            piece = piece.removesuffix(b"\n")
        total += len(piece)
        if len(head) <= limit:
            head += piece[: limit + 1 - len(head)]  # one byte more: shows a cut is due
        if ended:
            break
    if total <= limit:
        return head.decode("utf-8", "replace")
    # A character split by the cut is left out (the decoder holds its first bytes back),
    # not shown as a replacement character.
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    kept = decoder.decode(bytes(head[:limit]))
    held_back = len(decoder.getstate()[0])
    return kept + cut_marker(total, limit - held_back)


def _encode_event(event: Any) -> str:
    """The event as the JSON Lambda would receive; refused here if it has no JSON form."""
    try:
        return json.dumps(event)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"the event is not JSON: {exc}") from None


def _exit_error(request_id: str, returncode: int | None) -> dict[str, Any]:
    """Lambda's report when the runtime process dies during an invocation."""
    if returncode is None:
        reason = "Runtime exited without providing a reason"
    elif returncode < 0:
        try:
            name = signal.Signals(-returncode).name.removeprefix("SIG").lower()
        except ValueError:
            name = str(-returncode)
        reason = f"Runtime exited with error: signal: {name}"
    else:
        reason = f"Runtime exited with error: exit status {returncode}"
    return runtime_error(EXIT_ERROR, f"RequestId: {request_id} Error: {reason}")
