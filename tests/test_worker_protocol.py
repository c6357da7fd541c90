"""The runtime↔worker line protocol: round trips, framing, bad lines, a real worker.

The codec is tested without processes (hypothesis: every message survives encoding
and decoding, every line is one line, any text fed to a decoder gives a message or
a ``WorkerProtocolError``); the last tests run ``python -m bridge.offline.worker``
over real pipes, speaking to it only through the codec.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.offline.worker_protocol import (
    Reply,
    Request,
    WorkerProtocolError,
    decode_ready,
    decode_reply,
    decode_request,
    encode_ready,
    encode_reply,
    encode_request,
)

ROOT = Path(__file__).resolve().parents[1]
ACTIONS = "tests.handlers.runtime_actions.handler"

# JSON values as Python's json module round-trips them (NaN is never equal to itself).
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
watches = st.dictionaries(
    st.text(min_size=1, max_size=40), st.tuples(st.integers(), st.integers()), max_size=5
)
errors = st.fixed_dictionaries(
    {"errorType": st.text(max_size=20), "errorMessage": st.text(max_size=40)},
    optional={"trace": st.lists(st.text(max_size=40), max_size=3)},
)
ids = st.text(max_size=40)


def is_one_line(line: str) -> bool:
    return line.endswith("\n") and line.count("\n") == 1 and "\r" not in line


@given(ids, ids, st.integers(), json_values)
def test_a_request_round_trips(request_id: str, arn: str, deadline_ms: int, event: Any) -> None:
    line = encode_request(request_id, arn, deadline_ms, json.dumps(event))
    assert is_one_line(line)
    expected = Request(request_id=request_id, arn=arn, deadline_ms=deadline_ms, event=event)
    assert decode_request(line) == expected
    assert decode_request(line.encode()) == expected  # the runtime reads bytes


@given(ids, watches, json_values)
def test_a_reply_with_a_payload_round_trips(request_id: str, watch: Any, payload: Any) -> None:
    line = encode_reply(request_id, watch, payload_json=json.dumps(payload))
    assert is_one_line(line)
    reply = decode_reply(line.encode())
    assert reply == Reply(request_id=request_id, watch=watch, payload=payload)
    assert reply.error is None


@given(ids, watches, errors)
def test_a_reply_with_an_error_round_trips(
    request_id: str, watch: Any, error: dict[str, Any]
) -> None:
    line = encode_reply(request_id, watch, error=error)
    assert is_one_line(line)
    assert decode_reply(line) == Reply(request_id=request_id, watch=watch, error=error)


@given(watches)
def test_the_ready_line_round_trips(watch: Any) -> None:
    line = encode_ready(watch)
    assert is_one_line(line)
    assert decode_ready(line.encode()) == watch


def test_a_null_payload_is_a_payload_not_a_missing_one() -> None:
    reply = decode_reply(encode_reply("r1", {}, payload_json="null"))
    assert reply == Reply(request_id="r1", payload=None) and reply.error is None


def test_event_and_payload_text_pass_through_as_given() -> None:
    # Text no json.dumps of the decoded value would write (spacing, key order, escapes):
    # finding it verbatim in the line shows it was spliced, not decoded and re-encoded.
    event = '{"z":  [1,2.50],   "a": "\\u00e9"}'
    request = encode_request("r1", "arn:aws:lambda:x", 5, event)
    assert f'"event":{event}}}\n' in request
    assert decode_request(request).event == {"z": [1, 2.5], "a": "é"}
    payload = '[ true ,"\\u0041" ]'
    reply = encode_reply("r1", {"/p.py": (1, 2)}, payload_json=payload)
    assert f'"payload":{payload}}}\n' in reply
    assert decode_reply(reply).payload == [True, "A"]


def test_infinity_from_a_handler_is_read_back() -> None:
    # json.dumps writes float("inf") as Infinity; the runtime must not call that a
    # broken channel (the handler returned a value, the test of the runtime shows it).
    reply = decode_reply(encode_reply("r1", {}, payload_json=json.dumps({"huge": float("inf")})))
    assert reply.payload == {"huge": float("inf")}


@pytest.mark.parametrize(
    "text",
    ["", "   ", '{"a": 1}\n{"b": 2}', '"two\r', "1\n"],
)
def test_spliced_text_that_would_break_the_framing_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="one JSON value on one line"):
        encode_request("r1", "arn", 1, text)
    with pytest.raises(ValueError, match="one JSON value on one line"):
        encode_reply("r1", {}, payload_json=text)


def test_a_reply_has_exactly_one_of_payload_and_error() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        encode_reply("r1", {})
    with pytest.raises(ValueError, match="exactly one"):
        encode_reply("r1", {}, payload_json="1", error={"errorType": "E"})


READY = '{"watch": {}}'
REQUEST = '{"id": "r1", "arn": "a", "deadline_ms": 5, "event": {}}'
REPLY = '{"id": "r1", "watch": {}, "payload": 1}'


@pytest.mark.parametrize(
    ("decode", "line", "reason"),
    [
        (decode_reply, b"", "not a JSON line"),
        (decode_reply, b"\xff\xfe{", "not a JSON line"),
        (decode_reply, "[1, 2]", "not a JSON object"),
        (decode_reply, "[" * 100_000, "not a JSON line"),
        (decode_ready, "{}", "'watch' is NoneType"),
        (decode_ready, '{"watch": []}', "'watch' is list"),
        (decode_ready, '{"watch": {"/a.py": [1]}}', "not \\[mtime_ns, size\\]"),
        (decode_ready, '{"watch": {"/a.py": [1, true]}}', "not \\[mtime_ns, size\\]"),
        (decode_ready, '{"watch": {"/a.py": [1, 2.5]}}', "not \\[mtime_ns, size\\]"),
        (decode_request, REQUEST.replace('"r1"', "7"), "'id' is int"),
        (decode_request, REQUEST.replace('"a"', "null"), "'arn' is NoneType"),
        (decode_request, REQUEST.replace("5", "true"), "'deadline_ms' is bool"),
        (decode_request, REQUEST.replace("5", "5.0"), "'deadline_ms' is float"),
        (decode_request, REQUEST.replace(', "event": {}', ""), "has no event"),
        (decode_reply, REPLY.replace(', "watch": {}', ""), "'watch' is NoneType"),
        (decode_reply, REPLY.replace('"payload"', '"other"'), "exactly one"),
        (decode_reply, REPLY.replace("1}", '1, "error": {}}'), "exactly one"),
        (decode_reply, REPLY.replace('"payload": 1', '"error": "boom"'), "not an object"),
        (decode_reply, REPLY.replace('"id": "r1", ', ""), "'id' is NoneType"),
    ],
)
def test_bad_lines_raise_one_error_type(decode: Any, line: str | bytes, reason: str) -> None:
    with pytest.raises(WorkerProtocolError, match=reason):
        decode(line)


def test_the_fixtures_of_the_bad_lines_are_good_lines() -> None:
    # So each bad line above is bad for the one reason its case names.
    assert decode_ready(READY) == {}
    assert decode_request(REQUEST) == Request("r1", "a", 5, {})
    assert decode_reply(REPLY) == Reply("r1", payload=1)


@given(st.one_of(st.text(), st.binary()))
def test_any_line_decodes_to_a_message_or_a_protocol_error(line: str | bytes) -> None:
    for decode in (decode_ready, decode_request, decode_reply):
        try:
            decoded = decode(line)
        except WorkerProtocolError:
            continue
        assert isinstance(decoded, dict | Request | Reply)


# --------------------------------------------------------------------------- a real worker


def run_worker(*lines: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Feed request lines to a worker of the runtime tests' handler; stdin then closes."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.offline.worker",
            "--handler",
            ACTIONS,
            "--project-root",
            str(ROOT),
        ],
        input="".join(lines),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),  # PYTHONPATH included: the worker imports this tree
        timeout=timeout,
        check=False,
    )


def test_a_real_worker_speaks_the_protocol() -> None:
    arn = "arn:aws:lambda:us-east-1:000000000000:function:dynamodb-logs-t-worker"
    deadline_ms = int(time.time() * 1000) + 30_000
    event_text = '{"action":  "describe", "n": [1, 2]}'
    finished = run_worker(
        encode_request("first", arn, deadline_ms, event_text),
        encode_request("second", arn, deadline_ms, json.dumps({"action": "nope"})),
    )
    assert finished.returncode == 0, finished.stderr
    ready, first, second = finished.stdout.splitlines(keepends=True)

    handler_file = str(ROOT / "tests" / "handlers" / "runtime_actions.py")
    assert handler_file in decode_ready(ready)  # the watch report names the handler's file

    described = decode_reply(first)
    assert described.request_id == "first" and described.error is None
    assert described.payload["event"] == {"action": "describe", "n": [1, 2]}
    assert described.payload["context"]["aws_request_id"] == "first"
    assert described.payload["context"]["invoked_function_arn"] == arn
    assert 0 < described.payload["remaining"][0] <= 30_000
    assert handler_file not in described.watch  # reported once, in the ready line

    failed = decode_reply(second)
    assert failed.request_id == "second" and failed.payload is None
    assert failed.error is not None and failed.error["errorType"] == "ValueError"
    assert "[ERROR] ValueError: unknown action 'nope'" in finished.stderr  # the function's log


def test_a_worker_given_a_bad_line_exits_instead_of_guessing() -> None:
    finished = run_worker("this is not a request\n")
    assert finished.returncode != 0
    assert finished.stdout.count("\n") == 1  # the ready line, and no reply
    assert "WorkerProtocolError" in finished.stderr
