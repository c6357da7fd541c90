"""The line protocol between the function runtime and its worker processes: one codec.

:mod:`bridge.offline.runtime` (the runtime's side of a sandbox) and
:mod:`bridge.offline.worker` (the sandbox process) speak it over the worker's own
copies of stdin and stdout. Both build and read their lines here and nowhere else,
so the format below is the one the code writes.

Format: one JSON object per line, UTF-8, ended by ``\\n``; no line holds another
raw line break (JSON escapes those inside strings, and the encoders refuse spliced
text that has one). ``WATCH`` is ``{path: [mtime_ns, size]}``: the project source
files the worker imported since its previous line (see the runtime's hot reload).

* worker → runtime, once, when the init phase is over (an init error is not part
  of it: Lambda reports that when an invocation meets it)::

    {"watch": WATCH}

* runtime → worker, one line per invocation::

    {"id": request_id, "arn": invoked_function_arn, "deadline_ms": epoch_ms, "event": EVENT}

* worker → runtime, one line per invocation, with exactly one of ``payload``
  (the handler returned) and ``error`` (``{errorType, errorMessage, trace}``)::

    {"id": request_id, "watch": WATCH, "payload": PAYLOAD}
    {"id": request_id, "watch": WATCH, "error": {...}}

``EVENT`` and ``PAYLOAD`` are spliced in as the JSON text the caller already has,
never decoded and encoded again on the way: the runtime encodes an event once (and
sends the same text to every retry), the worker encodes a handler's result once
(it needs that text anyway, to check Lambda's 6 MB response limit). Only the
receiving end decodes them.

A line that breaks the format raises :class:`WorkerProtocolError`, and nothing
else: the runtime then treats the sandbox as broken, never trusting the channel
again. Pure: no I/O, the stdlib only, so the worker starts fast.

**Sizes.** No protocol line is longer than :data:`MAX_LINE_BYTES` (16 MiB): the runtime
reads no more per line, and a longer one breaks the channel like any malformed line.
The worker keeps within it: a result over Lambda's 6 MB response limit is an error
(``Function.ResponseSizeTooLarge``), and an error report is cut to
:data:`MAX_ERROR_BYTES` (:func:`bounded_error`). The function's *log* (the worker's
stderr, which any code may write to) is no part of the protocol; the runtime cuts its
lines at ``LOG_LINE_LIMIT`` (:mod:`bridge.offline.runtime`). Whatever is cut ends in
the one marker :func:`cut_marker` words, saying how long the whole was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_ERROR_BYTES",
    "MAX_LINE_BYTES",
    "Reply",
    "Request",
    "Watch",
    "WorkerProtocolError",
    "bounded_error",
    "cut_marker",
    "cut_text",
    "decode_ready",
    "decode_reply",
    "decode_request",
    "encode_ready",
    "encode_reply",
    "encode_request",
]

#: Imported project files: real path → (mtime in ns, size in bytes).
Watch = dict[str, tuple[int, int]]

#: The longest protocol line, its ``\n`` included (the runtime's read limit).
MAX_LINE_BYTES = 16 * 1024 * 1024
#: The most an error report takes on the channel (and in the function's log): 256 KiB,
#: the size of one CloudWatch Logs event. Its message and trace are cut to fit.
MAX_ERROR_BYTES = 256 * 1024
#: Of which the error message may take this much, and each trace entry this much.
MAX_ERROR_MESSAGE_BYTES = 64 * 1024
MAX_TRACE_ENTRY_BYTES = 4 * 1024


class WorkerProtocolError(Exception):
    """A line that is not what the protocol says: the peer's fault, never the reader's."""


@dataclass(frozen=True)
class Request:
    """One invocation, as the worker reads it (``event`` decoded)."""

    request_id: str
    arn: str
    deadline_ms: int
    event: Any


@dataclass(frozen=True)
class Reply:
    """The outcome of one invocation, as the runtime reads it (``payload`` decoded)."""

    request_id: str
    watch: Watch = field(default_factory=dict)
    payload: Any = None
    error: dict[str, Any] | None = None


# --------------------------------------------------------------------------- encoding


def encode_ready(watch: Mapping[str, tuple[int, int]]) -> str:
    """The worker's first line: its init phase is over; the files it imported so far."""
    return f'{{"watch":{_watch_text(watch)}}}\n'


def encode_request(request_id: str, arn: str, deadline_ms: int, event_json: str) -> str:
    """An invocation line; ``event_json`` is the event's JSON text, spliced in as it is."""
    head = f'{{"id":{_text(request_id)},"arn":{_text(arn)},"deadline_ms":{int(deadline_ms)}'
    return f'{head},"event":{_one_line(event_json, "event_json")}}}\n'


def encode_reply(
    request_id: str,
    watch: Mapping[str, tuple[int, int]],
    *,
    payload_json: str | None = None,
    error: Mapping[str, Any] | None = None,
) -> str:
    """A reply line: ``payload_json`` (the result's JSON text, spliced in) or ``error``."""
    if (payload_json is None) == (error is None):
        raise ValueError("a reply has exactly one of payload_json and error")
    head = f'{{"id":{_text(request_id)},"watch":{_watch_text(watch)}'
    if payload_json is not None:
        return f'{head},"payload":{_one_line(payload_json, "payload_json")}}}\n'
    return f'{head},"error":{json.dumps(error, separators=(",", ":"))}}}\n'


def _text(value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return json.dumps(value)


def _watch_text(watch: Mapping[str, tuple[int, int]]) -> str:
    return json.dumps(
        {path: [int(mtime_ns), int(size)] for path, (mtime_ns, size) in watch.items()},
        separators=(",", ":"),
    )


def _one_line(text: str, what: str) -> str:
    """Spliced JSON text, checked only for what would break the framing (cheap scans)."""
    if not text or text.isspace() or "\n" in text or "\r" in text:
        raise ValueError(f"{what} must be one JSON value on one line")
    return text


# --------------------------------------------------------------------------- sizes


def cut_marker(total: int, kept: int) -> str:
    """What ends a text that was cut: how long it was and how much of it is kept (bytes
    of UTF-8), so nobody takes a cut line for the whole."""
    return f" … [cut: {total:,} bytes, the first {kept:,} kept]"


def cut_text(text: str, limit: int) -> str:
    """``text`` if its UTF-8 fits in ``limit`` bytes, else its head (whole characters
    only) with :func:`cut_marker` after it."""
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate counts, as JSON keeps it
    if len(data) <= limit:
        return text
    for end in range(limit, limit - 4, -1):  # a character the cut splits is left out whole
        try:
            head = data[:end].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            continue
        return head + cut_marker(len(data), end)
    raise AssertionError("unreachable: a UTF-8 character is at most 4 bytes")


def bounded_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """An error report (``errorType``, ``errorMessage``, ``trace``) that fits in
    :data:`MAX_ERROR_BYTES` of JSON: the message and each trace entry cut to their own
    limits, then the oldest frames left out (the newest, where it failed, are kept)."""
    out = dict(error)
    if isinstance(out.get("errorType"), str):
        out["errorType"] = cut_text(out["errorType"], MAX_TRACE_ENTRY_BYTES)
    if isinstance(out.get("errorMessage"), str):
        out["errorMessage"] = cut_text(out["errorMessage"], MAX_ERROR_MESSAGE_BYTES)
    trace = out.get("trace")
    if isinstance(trace, list):
        entries = [cut_text(e, MAX_TRACE_ENTRY_BYTES) if isinstance(e, str) else e for e in trace]
        budget = MAX_ERROR_BYTES - len(_error_text({**out, "trace": []})) - 256
        kept: list[Any] = []
        for entry in reversed(entries):
            budget -= len(json.dumps(entry)) + 1
            if budget < 0:
                kept.append(f"… [{len(entries) - len(kept)} older frames cut]")
                break
            kept.append(entry)
        out["trace"] = kept[::-1]
    if len(_error_text(out)) > MAX_ERROR_BYTES:  # other fields than those three: drop them
        out = {key: out[key] for key in ("errorType", "errorMessage", "trace") if key in out}
    return out


def _error_text(error: Mapping[str, Any]) -> str:
    return json.dumps(error, separators=(",", ":"))


# --------------------------------------------------------------------------- decoding


def decode_ready(line: str | bytes) -> Watch:
    """The watch report of a worker's first line."""
    message = _object(line)
    return _watch(message)


def decode_request(line: str | bytes) -> Request:
    message = _object(line)
    if "event" not in message:
        raise WorkerProtocolError("a request has no event")
    return Request(
        request_id=_string(message, "id"),
        arn=_string(message, "arn"),
        deadline_ms=_integer(message, "deadline_ms"),
        event=message["event"],
    )


def decode_reply(line: str | bytes) -> Reply:
    message = _object(line)
    request_id = _string(message, "id")
    watch = _watch(message)
    if ("payload" in message) == ("error" in message):
        raise WorkerProtocolError("a reply has exactly one of payload and error")
    if "payload" in message:
        return Reply(request_id=request_id, watch=watch, payload=message["payload"])
    error = message["error"]
    if not isinstance(error, dict):
        raise WorkerProtocolError(f"a reply's error is {type(error).__name__}, not an object")
    return Reply(request_id=request_id, watch=watch, error=error)


def _object(line: str | bytes) -> dict[str, Any]:
    try:
        # Python's json accepts NaN and ±Infinity: a handler may return float("inf"),
        # which json.dumps writes as Infinity, so the reader must take it too.
        message = json.loads(line)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise WorkerProtocolError(f"not a JSON line: {error}") from None
    if not isinstance(message, dict):
        raise WorkerProtocolError(f"a line is {type(message).__name__}, not a JSON object")
    return message


def _string(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise WorkerProtocolError(f"{key!r} is {type(value).__name__}, not a string")
    return value


def _integer(message: dict[str, Any], key: str) -> int:
    value = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WorkerProtocolError(f"{key!r} is {type(value).__name__}, not an integer")
    return value


def _watch(message: dict[str, Any]) -> Watch:
    files = message.get("watch")
    if not isinstance(files, dict):
        raise WorkerProtocolError(f"'watch' is {type(files).__name__}, not an object")
    watch: Watch = {}
    for path, stamp in files.items():
        if (
            not isinstance(stamp, list)
            or len(stamp) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in stamp)
        ):
            raise WorkerProtocolError(f"'watch' entry {path!r} is not [mtime_ns, size]")
        watch[path] = (stamp[0], stamp[1])
    return watch
