"""One Lambda sandbox of the local cloud: a process that runs one function's handler.

``bridge offline`` starts this module as ``python -m bridge.offline.worker`` once per
concurrent execution environment of a function (see :mod:`bridge.offline.runtime`).
A process rather than a thread because each function needs its own ``os.environ``
(process-global) and because a runaway handler can only be stopped by ending its
process — exactly what Lambda does with a sandbox that timed out.

It speaks the line protocol of :mod:`bridge.offline.worker_protocol` (where its
format is specified) over the pipes the runtime gave it: a ready line once the
handler is imported, then one reply line per request line. The protocol owns
copies of the original stdin/stdout descriptors; fd 0 then reads ``/dev/null`` and
fd 1 writes to stderr, so neither ``print()`` nor ``input()`` nor a child process
of the handler can corrupt it. Everything written to stderr is the function's log:
the runtime forwards it line by line to Python logging.

``watch`` lists every imported ``.py`` file under the project root with its mtime and
size, so the runtime can replace the sandbox when any of them changes on disk (hot
reload). The worker runs with ``sys.dont_write_bytecode`` so a rewrite that keeps
size and mtime second never meets a stale ``.pyc`` written by an earlier sandbox.

Error payloads follow the Lambda Python runtime (``awslambdaric``): handler
exceptions give the exception's class name, faults of the runtime itself give
``Runtime.ImportModuleError``, ``Runtime.HandlerNotFound``,
``Runtime.UserCodeSyntaxError``, ``Runtime.MalformedHandlerName`` and
``Runtime.MarshalError``, with the same messages. Imports only the stdlib,
``bridge.core`` and the protocol module (stdlib only) so it starts fast.
"""

from __future__ import annotations

import argparse
import decimal
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from bridge.core.failure import error_payload, runtime_error
from bridge.offline.worker_protocol import (
    Request,
    Watch,
    bounded_error,
    decode_request,
    encode_ready,
    encode_reply,
)

MARSHAL_ERROR = "Runtime.MarshalError"
MAX_RESPONSE_BYTES = 6_291_556  # Lambda's synchronous response limit
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"

#: Lambda joins the lines of one error report with ``\r`` so it stays one log event;
#: the runtime splits them again.
LOG_LINE_JOIN = "\r"

_request_id = ""


class LambdaContext:
    """The context object the Python runtime passes as the handler's second argument.

    Mirrors ``awslambdaric``'s: the descriptive fields come from the sandbox's
    environment (so ``memory_limit_in_mb`` is a string, as in AWS) and the remaining
    time counts down to the deadline the runtime set for this invocation.
    """

    def __init__(self, request_id: str, invoked_function_arn: str, deadline_ms: int) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.client_context = None
        self.identity = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self) -> str:
        return (
            f"LambdaContext(aws_request_id={self.aws_request_id}, "
            f"function_name={self.function_name}, "
            f"invoked_function_arn={self.invoked_function_arn})"
        )


class Watcher:
    """Reports the project's source files this process has imported, each once.

    Only files under the project root count, and nothing of the interpreter or
    the virtual environment (which may live inside the project, like ``.venv``).
    """

    def __init__(self, project_root: str) -> None:
        self.root = os.path.realpath(project_root) + os.sep
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
        self.excluded = tuple(os.path.realpath(p) + os.sep for p in prefixes)
        self.seen: set[str] = set()

    def new_files(self) -> Watch:
        found: Watch = {}
        for name, module in list(sys.modules.items()):
            if name in self.seen:
                continue
            self.seen.add(name)
            path = getattr(module, "__file__", None)
            if not path or not path.endswith(".py"):
                continue
            real = os.path.realpath(path)
            if not real.startswith(self.root) or real.startswith(self.excluded):
                continue
            if f"{os.sep}site-packages{os.sep}" in real:
                continue
            try:
                stat = os.stat(real)
            except OSError:
                continue
            found[real] = (stat.st_mtime_ns, stat.st_size)
        return found


@dataclass(frozen=True)
class Outcome:
    """What one invocation gave: the result's JSON text (encoded once, here) or an error."""

    payload_json: str | None = None
    error: dict[str, Any] | None = None


class Sandbox:
    """The handler of one function, loaded once (the init phase) and invoked many times."""

    def __init__(self, handler: str) -> None:
        self.handler_name = handler
        self.handler: Callable[[Any, LambdaContext], Any] | None = None
        self.init_error: dict[str, Any] | None = None

    def load(self) -> None:
        """Import the handler like Lambda's bootstrap does, keeping the fault if it fails.

        After a failed init, Lambda tries again on the next invocation; so does
        :meth:`invoke`, which is how fixing a syntax error takes effect.
        """
        self._load()
        if self.init_error is not None:  # a module may raise a message of any size
            self.init_error = bounded_error(self.init_error)

    def _load(self) -> None:
        self.handler, self.init_error = None, None
        module_name, _, function_name = self.handler_name.rpartition(".")
        if not module_name:
            self.init_error = runtime_error(
                MALFORMED_HANDLER_NAME,
                f"Bad handler '{self.handler_name}': not enough values to unpack "
                "(expected 2, got 1)",
            )
            return
        importlib.invalidate_caches()
        try:
            module = importlib.import_module(module_name.replace("/", "."))
        except ImportError as exc:
            self.init_error = runtime_error(
                IMPORT_MODULE_ERROR, f"Unable to import module '{module_name}': {exc}"
            )
            return
        except SyntaxError as exc:
            trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
            self.init_error = runtime_error(
                USER_CODE_SYNTAX_ERROR, f"Syntax error in module '{module_name}': {exc}", trace
            )
            return
        except Exception as exc:  # an error raised by the module's own top-level code
            self.init_error = _without_own_frames(error_payload(exc))
            return
        handler = getattr(module, function_name, None)
        if handler is None:
            self.init_error = runtime_error(
                HANDLER_NOT_FOUND, f"Handler '{function_name}' missing on module '{module_name}'"
            )
            return
        self.handler = handler

    def invoke(self, request: Request) -> Outcome:
        """Run one invocation: the handler's result as JSON text, or the error to report."""
        global _request_id
        if self.handler is None:
            self.load()
        if self.handler is None:
            assert self.init_error is not None
            return Outcome(error=self.init_error)
        context = LambdaContext(request.request_id, request.arn, request.deadline_ms)
        _request_id = request.request_id
        try:
            result = self.handler(request.event, context)
        except Exception as exc:
            return _failed(_without_own_frames(error_payload(exc)))
        finally:
            _request_id = ""
        try:
            body = json.dumps(result, default=_encode_default)
        except (TypeError, ValueError) as exc:
            return _failed(runtime_error(MARSHAL_ERROR, f"Unable to marshal response: {exc}"))
        if len(body.encode()) > MAX_RESPONSE_BYTES:
            return _failed(
                runtime_error(
                    "Function.ResponseSizeTooLarge",
                    f"Response payload size exceeded maximum allowed payload size "
                    f"({MAX_RESPONSE_BYTES} bytes).",
                )
            )
        return Outcome(payload_json=body)


def _failed(error: dict[str, Any]) -> Outcome:
    """An invocation's error: reported, and written to the function's log as Lambda does;
    cut to the protocol's size for an error first (an exception's message may be huge)."""
    error = bounded_error(error)
    _log_error(error)
    return Outcome(error=error)


def _encode_default(value: Any) -> Any:
    """Decimals (what boto3 reads from DynamoDB) are numbers, as Lambda's marshaller has it."""
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():  # NaN, ±Infinity: int() would raise
            return float(value)
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _without_own_frames(error: dict[str, Any]) -> dict[str, Any]:
    """Drop this module's frames from the front of the trace, as the bootstrap drops its own."""
    marker = f'File "{__file__}"'
    trace = list(error.get("trace") or [])
    while trace and marker in trace[0]:
        trace.pop(0)
    return {**error, "trace": trace}


def _log_error(error: dict[str, Any]) -> None:
    """The ``[ERROR] Type: message`` report Lambda writes to the function's log."""
    lines = [f"[ERROR] {error['errorType']}: {error['errorMessage']}"]
    if error.get("trace"):
        lines.append("Traceback (most recent call last):")
        for entry in error["trace"]:
            lines.extend(entry.rstrip("\n").splitlines())
    sys.stderr.write(LOG_LINE_JOIN.join(lines) + "\n")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _request_id
        return True


def _setup_logging() -> None:
    """The root handler Lambda installs: level left at WARNING, request id in each line."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    logging.getLogger().addHandler(handler)


def claim_protocol_channel() -> tuple[IO[str], IO[str]]:
    """Keep private copies of stdin/stdout for the protocol; hand the handler harmless ones."""
    protocol_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
    protocol_out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # print() and child processes now write to the function's log
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return protocol_in, protocol_out


def serve(handler: str, project_root: str, protocol_in: IO[str], protocol_out: IO[str]) -> int:
    """Init, announce readiness, then answer invocations until the runtime closes stdin."""
    watcher = Watcher(project_root)
    sandbox = Sandbox(handler)
    sandbox.load()
    if sandbox.init_error is not None:
        _log_error(sandbox.init_error)
    # The runtime reads only the watch report here: an init error is reported when
    # an invocation meets it, as Lambda does.
    protocol_out.write(encode_ready(watcher.new_files()))
    for line in protocol_in:
        if not line.strip():
            continue
        # A line that breaks the protocol raises WorkerProtocolError: the worker exits
        # and the runtime reports the invocation as Runtime.ExitError.
        request = decode_request(line)
        outcome = sandbox.invoke(request)
        protocol_out.write(
            encode_reply(
                request.request_id,
                watcher.new_files(),
                payload_json=outcome.payload_json,
                error=outcome.error,
            )
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.offline.worker")
    parser.add_argument("--handler", required=True, help="module.function")
    parser.add_argument("--project-root", required=True)
    args = parser.parse_args(argv)
    sys.dont_write_bytecode = True
    protocol_in, protocol_out = claim_protocol_channel()
    root = os.path.realpath(args.project_root)
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    _setup_logging()
    return serve(args.handler, root, protocol_in, protocol_out)


if __name__ == "__main__":
    sys.exit(main())
