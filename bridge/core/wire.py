"""The bridge's wire protocol, v1: the one codec both ends use, over the messages of
:mod:`bridge.core.messages` (re-exported here: ``wire.Hello``, ``wire.decode``).

Both ends use this module: the bridge Lambdas (and the offline gateway that runs
them) and the client. It is pure — no I/O, no clock, no randomness — in the manner of
websockets' ``frames.py``: text in, values out, and back.

Transport facts it is built on: API Gateway WebSocket routes on
``$request.body.action`` and carries at most 128 KB (131,072 bytes of UTF-8) per
message, so every message, both ways, is one compact JSON object with a string
``action``; :func:`encode` keeps what it produces at or under ``limit`` (by default
1 KB under API Gateway's bound, a margin for anything a layer below adds). An event
too large for one message travels as chunks (:mod:`bridge.core.chunks`).

:func:`decode` raises :class:`WireError` (a ``ValueError``) for any bad input and
nothing else; :func:`encode` raises :class:`LocalProtocolError` for a message that
cannot be sent (the caller's bug).

Decisions beyond the maintainer's spec (``wire-spec.md``):

* ``Hello`` names the session (``session``, ``None`` for a connection that only lists
  or drops sessions, as ``bridge sessions`` does): the server needs the name to find
  the record, and a management connection must not take a running session over.
  ``Welcome.session`` is ``None`` for such a connection.
* ``Error`` has ``request``: the action of the message it refuses, so a client can
  tell a refused ``drop`` from a refused session.
* ``Sessions`` has ``omitted``: how many of the owner's sessions did not fit in one
  message (:func:`sessions_message` cuts the listing rather than fail).
* ``"sessions"`` is both the request (``ListSessions``) and the listing; an object
  with ``items`` is the listing. (The spec named both so; they travel in opposite
  directions, so no peer ever needs to guess.)
* The JSON text is ``compact_json``'s form (no spaces, UTF-8 kept) but strict:
  NaN/Infinity are refused both ways (no other peer's parser accepts them), and
  DynamoDB's ``Decimal`` is not converted — ``decode(encode(m)) == m`` must hold, so
  the I/O layer hands plain JSON values in. Hence :func:`json_text` here rather than
  :func:`bridge.core.events.compact_json`, which allows both.
* Integers are whole, not ``bool``, within ``0 ..= MAX_INT`` (2**53 - 1, exact in every
  JSON implementation); cursors start at 1. Strings must be valid Unicode (an escaped
  lone surrogate is refused: it could not be encoded to UTF-8 again).
* Frozen across versions, so that a mismatch is always reported rather than misread:
  the ``action`` field, ``Hello``'s ``version`` and ``Error``. Fields a later version
  adds must be optional; unknown fields are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from bridge.core.messages import (
    MAX_CHUNKS,
    MAX_INT,
    MAX_NAME_CHARS,
    PROTOCOL_VERSION,
    Ack,
    Chunk,
    ClientMessage,
    Closing,
    Dropped,
    DropSession,
    Error,
    Event,
    Gap,
    Hello,
    JSONObject,
    ListSessions,
    LocalProtocolError,
    Message,
    MessageTooLarge,
    Ping,
    Pong,
    ProtocolError,
    RemoteProtocolError,
    Resume,
    Resumed,
    ServerMessage,
    SessionInfo,
    Sessions,
    Subscribe,
    Subscribed,
    Welcome,
    WireError,
    kind_of,
)

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_CHUNKS",
    "MAX_INT",
    "MAX_MESSAGE_BYTES",
    "MAX_NAME_CHARS",
    "PROTOCOL_VERSION",
    "Ack",
    "Chunk",
    "ClientMessage",
    "Closing",
    "DropSession",
    "Dropped",
    "Error",
    "Event",
    "Gap",
    "Hello",
    "JSONObject",
    "ListSessions",
    "LocalProtocolError",
    "Message",
    "MessageTooLarge",
    "Ping",
    "Pong",
    "ProtocolError",
    "RemoteProtocolError",
    "Resume",
    "Resumed",
    "ServerMessage",
    "SessionInfo",
    "Sessions",
    "Subscribe",
    "Subscribed",
    "Welcome",
    "WireError",
    "decode",
    "encode",
    "json_text",
    "parse_json",
    "sessions_message",
]

MAX_MESSAGE_BYTES: Final = 131_072  # API Gateway WebSocket: one message, UTF-8 bytes
DEFAULT_LIMIT: Final = MAX_MESSAGE_BYTES - 1024

# --------------------------------------------------------------------------- JSON


def json_text(value: Any) -> str:
    """The wire's JSON text: compact, UTF-8 kept, strict (no NaN, no non-JSON types).

    Raises :class:`LocalProtocolError`: a value that cannot be sent is our bug.
    """
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(f"not sendable as JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400 parses as inf
        raise ValueError(f"number {text[:40]} is out of range")
    return number


# One decoder for every message: json.loads with hooks builds a new one per call,
# which costs more than parsing a typical event.
_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)

# An escaped UTF-16 surrogate: either half of a pair (fine) or a lone one (refused);
# only when one is present is the parsed value checked, so the common case costs nothing.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(data: str | bytes) -> Any:
    """Parse JSON text strictly, raising only :class:`WireError`: UTF-8 only, no
    NaN/Infinity or numbers beyond a double, no lone surrogates, bounded nesting."""
    if isinstance(data, str):
        text = data
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise WireError("text holds a lone surrogate (not Unicode)") from None
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise WireError("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, the int digit limit, our hooks
        raise WireError(f"not JSON: {str(exc)[:120]}") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise WireError("JSON holds an escaped lone surrogate (not Unicode)") from None
    return value


# --------------------------------------------------------------------------- codec

_MISSING: Any = object()
Reader: TypeAlias = Callable[[Any], Any]


def _read_int(value: Any) -> int:
    if value is _MISSING:
        raise WireError("missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"must be an integer, got {kind_of(value)}")
    return value


def _read_opt_int(value: Any) -> int | None:
    return None if value is _MISSING or value is None else _read_int(value)


def _read_str(value: Any) -> str:
    if value is _MISSING:
        raise WireError("missing")
    if not isinstance(value, str):
        raise WireError(f"must be a string, got {kind_of(value)}")
    return value


def _read_opt_str(value: Any) -> str | None:
    return None if value is _MISSING or value is None else _read_str(value)


def _read_obj(value: Any) -> JSONObject:
    if value is _MISSING:
        raise WireError("missing")
    if not isinstance(value, dict):
        raise WireError(f"must be an object, got {kind_of(value)}")
    return value


def _read_opt_obj(value: Any) -> JSONObject | None:
    return None if value is _MISSING or value is None else _read_obj(value)


def _read_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise WireError(
            "missing" if value is _MISSING else f"must be a boolean, got {kind_of(value)}"
        )
    return value


def _read_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(
            "missing" if value is _MISSING else f"must be a number, got {kind_of(value)}"
        )
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise WireError("is out of range") from None


def _read_base64(value: Any) -> str:
    text = _read_str(value)
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WireError("is not base64") from None
    return text


def _read_items(value: Any) -> tuple[SessionInfo, ...]:
    if value is _MISSING:
        raise WireError("missing")
    if not isinstance(value, list):
        raise WireError(f"must be an array, got {kind_of(value)}")
    return tuple(_read_fields(SessionInfo, "sessions.items", item) for item in value)


def _read_opt_count(value: Any) -> int:
    return 0 if value is _MISSING else _read_int(value)


# Every message's fields, in order, with the reader that checks each: the one table
# both encode and decode follow. Value rules live in each class's __post_init__.
_FIELDS: Final[dict[type[Any], tuple[tuple[str, Reader], ...]]] = {
    Hello: (("version", _read_int), ("client", _read_str), ("session", _read_opt_str)),
    Subscribe: (("pattern", _read_opt_obj), ("replay", _read_opt_str)),
    Resume: (("after", _read_int),),
    Ack: (("through", _read_int),),
    Ping: (("nonce", _read_str),),
    ListSessions: (),
    DropSession: (("name", _read_str),),
    Welcome: (
        ("version", _read_int),
        ("session", _read_opt_str),
        ("acked", _read_int),
        ("next_cursor", _read_int),
    ),
    Subscribed: (("pattern", _read_opt_obj), ("replay", _read_opt_str)),
    Event: (("cursor", _read_int), ("id", _read_str), ("event", _read_obj)),
    Chunk: (
        ("cursor", _read_int),
        ("id", _read_str),
        ("index", _read_int),
        ("count", _read_int),
        ("data", _read_base64),
    ),
    Gap: (("first", _read_int), ("last", _read_int), ("reason", _read_str)),
    Resumed: (("through", _read_int),),
    Pong: (("nonce", _read_str),),
    SessionInfo: (
        ("name", _read_str),
        ("connected", _read_bool),
        ("pattern", _read_opt_obj),
        ("replay", _read_opt_str),
        ("acked", _read_int),
        ("next_cursor", _read_int),
        ("buffered", _read_int),
        ("expires", _read_float),
    ),
    Sessions: (("items", _read_items), ("omitted", _read_opt_count)),
    Dropped: (("name", _read_str),),
    Closing: (("reason", _read_str),),
    Error: (
        ("code", _read_str),
        ("message", _read_str),
        ("version", _read_opt_int),
        ("request", _read_opt_str),
    ),
}

# "sessions" is both the request and the listing: the direction tells them apart, so
# the server-bound decoder (``ListSessions``) and the client-bound one (``Sessions``)
# are chosen by whether the object carries ``items``.
_BY_ACTION: Final[dict[str, type[Any]]] = {
    cls.action: cls for cls in _FIELDS if cls is not SessionInfo and cls is not Sessions
}


def _read_fields(cls: type[Any], where: str, obj: Any) -> Any:
    if not isinstance(obj, dict):
        raise WireError(f"{where} must be an object, got {kind_of(obj)}")
    values: dict[str, Any] = {}
    for name, reader in _FIELDS[cls]:
        try:
            values[name] = reader(obj.get(name, _MISSING))
        except WireError as exc:
            raise WireError(f"{where}.{name}: {exc.reason}") from None
    return cls(**values)  # __post_init__ raises WireError for values out of bounds


def _plain(message: Message | SessionInfo) -> JSONObject:
    obj: JSONObject = {}
    if not isinstance(message, SessionInfo):
        obj["action"] = message.action
    for name, _ in _FIELDS[type(message)]:
        value = getattr(message, name)
        obj[name] = [_plain(item) for item in value] if name == "items" else value
    return obj


def encode(message: Message, limit: int = DEFAULT_LIMIT) -> str:
    """The message as its JSON text, at most ``limit`` UTF-8 bytes.

    Raises :class:`MessageTooLarge` over the limit and :class:`LocalProtocolError` for
    content JSON cannot carry: both are the caller's bug, never the peer's.
    """
    text = json_text(_plain(message))
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{message.action} message holds a lone surrogate") from None
    if size > limit:
        raise MessageTooLarge(message.action, size, limit)
    return text


def decode(data: str | bytes) -> Message:
    """One message from its text (or UTF-8 bytes); :class:`WireError` for any bad input,
    never another exception. Unknown fields are ignored (forward compatibility)."""
    return decode_keeping_event_text(data)[0]


# The head of an ``event`` message as :func:`encode` writes it: compact, fields in order.
_EVENT_HEAD: Final = re.compile(r'\{"action":"event","cursor":\d+,"id":"(?:[^"\\]|\\.)*","event":')
_EVENT_KEYS: Final = ("action", "cursor", "id", "event")


def decode_keeping_event_text(data: str | bytes) -> tuple[Message, str | None]:
    """:func:`decode`, and for an ``event`` message the event's JSON text cut out of
    the message — a sink that stores text then need not encode it again (a third of
    its cost per event) — or ``None`` when it cannot be cut out exactly.

    Exact when the message has :func:`encode`'s shape: exactly these fields in this
    order (so ``event`` is the last), the compact head above (the fields before it
    hold no object), and ``"event":`` nowhere else in the text (no repeated key).
    Any other valid message — another encoder, extra fields — gives ``None``.
    """
    obj = parse_json(data)
    if not isinstance(obj, dict):
        raise WireError(f"a message must be a JSON object, got {kind_of(obj)}")
    action = obj.get("action", _MISSING)
    if not isinstance(action, str):
        raise WireError("a message needs a string field 'action'")
    cls = _BY_ACTION.get(action)
    if action == "sessions" and "items" in obj:
        cls = Sessions
    if cls is None:
        raise WireError(f"unknown action {action[:60]!r}", code="unknown-action")
    message: Message
    cursor, id, event = obj.get("cursor"), obj.get("id"), obj.get("event")
    if cls is Event and type(cursor) is int and type(id) is str and type(event) is dict:
        message = Event(cursor, id, event)  # the common case, checked as _read_fields would
    else:
        message = _read_fields(cls, action, obj)
    if cls is not Event or not isinstance(data, str) or tuple(obj) != _EVENT_KEYS:
        return message, None
    head = _EVENT_HEAD.match(data)
    if head is None or data.count('"event":') != 1:
        return message, None
    return message, data[head.end() : data.rindex("}")]


def sessions_message(items: list[SessionInfo], limit: int = DEFAULT_LIMIT) -> Sessions:
    """A ``Sessions`` listing cut to what fits in one message (``omitted`` says how
    many did not), in the order given."""
    kept = list(items)
    while True:
        message = Sessions(tuple(kept), omitted=len(items) - len(kept))
        try:
            encode(message, limit)
        except MessageTooLarge as exc:
            # Drop at least one, more when far over, keeping the work logarithmic-ish.
            excess = max(1, len(kept) * (exc.size - limit) // max(exc.size, 1))
            del kept[len(kept) - excess :]
            continue
        return message
