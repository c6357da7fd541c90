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
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Reply",
    "Request",
    "Watch",
    "WorkerProtocolError",
    "decode_ready",
    "decode_reply",
    "decode_request",
    "encode_ready",
    "encode_reply",
    "encode_request",
]

#: Imported project files: real path → (mtime in ns, size in bytes).
Watch = dict[str, tuple[int, int]]


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
