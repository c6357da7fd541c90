"""The wire codec and chunking: round-trips, hostile input, sizes, reassembly."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core import wire
from bridge.core.chunks import Reassembler, event_messages

# --------------------------------------------------------------------------- strategies

uints = st.integers(0, wire.MAX_INT)
cursors = st.integers(1, wire.MAX_INT)
names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Zs", "Cf", "Co", "Cn")),
    min_size=1,
    max_size=wire.MAX_NAME_CHARS,
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=5)
session_infos = st.builds(
    wire.SessionInfo,
    name=names,
    connected=st.booleans(),
    pattern=st.none() | json_objects,
    replay=st.none() | st.text(),
    acked=uints,
    next_cursor=cursors,
    buffered=uints,
    expires=st.floats(allow_nan=False, allow_infinity=False),
)


@st.composite
def chunks(draw: st.DrawFn) -> wire.Chunk:
    count = draw(st.integers(1, wire.MAX_CHUNKS))
    data = base64.b64encode(draw(st.binary(max_size=40))).decode()
    index = draw(st.integers(0, count - 1))
    return wire.Chunk(draw(cursors), draw(st.text(min_size=1)), index, count, data)


@st.composite
def gaps(draw: st.DrawFn) -> wire.Gap:
    first = draw(cursors)
    return wire.Gap(first, draw(st.integers(first, wire.MAX_INT)), draw(st.text()))


messages: st.SearchStrategy[wire.Message] = st.one_of(
    st.builds(wire.Hello, version=uints, client=st.text(), session=st.none() | names),
    st.builds(wire.Subscribe, pattern=st.none() | json_objects, replay=st.none() | st.text()),
    st.builds(wire.Resume, after=uints),
    st.builds(wire.Ack, through=uints),
    st.builds(wire.Ping, nonce=st.text()),
    st.just(wire.ListSessions()),
    st.builds(wire.DropSession, name=names),
    st.builds(
        wire.Welcome,
        version=uints,
        session=st.none() | names,
        acked=uints,
        next_cursor=cursors,
    ),
    st.builds(wire.Subscribed, pattern=st.none() | json_objects, replay=st.none() | st.text()),
    st.builds(wire.Event, cursor=cursors, id=st.text(min_size=1), event=json_objects),
    chunks(),
    gaps(),
    st.builds(wire.Resumed, through=uints),
    st.builds(wire.Pong, nonce=st.text()),
    st.builds(wire.Sessions, items=st.lists(session_infos, max_size=3).map(tuple), omitted=uints),
    st.builds(wire.Dropped, name=st.text()),
    st.builds(wire.Closing, reason=st.text()),
    st.builds(
        wire.Error,
        code=st.text(),
        message=st.text(),
        version=st.none() | uints,
        request=st.none() | st.text(),
    ),
)


# --------------------------------------------------------------------------- codec


def test_every_message_class_has_a_strategy_and_a_codec_entry() -> None:
    """The codec's field table names exactly each class's fields, in order, so encode
    and decode cannot drift from the dataclasses."""
    classes = {*wire.ClientMessage.__args__, *wire.ServerMessage.__args__}  # type: ignore[attr-defined]
    assert len(classes) == 18
    for cls in [*classes, wire.SessionInfo]:
        declared = [f.name for f in dataclasses.fields(cls)]
        assert declared == [name for name, _ in wire._FIELDS[cls]], cls.__name__


@settings(max_examples=400, deadline=None)
@given(messages)
def test_round_trip(message: wire.Message) -> None:
    text = wire.encode(message, limit=10**9)
    assert wire.decode(text) == message
    assert wire.decode(text.encode()) == message
    assert json.loads(text)["action"] == message.action
    # Compact JSON, UTF-8 kept: the form sizes are counted on.
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


@settings(max_examples=300, deadline=None)
@given(st.text() | st.binary())
def test_decode_of_any_text_or_bytes_is_a_message_or_a_wire_error(data: str | bytes) -> None:
    try:
        result = wire.decode(data)
    except wire.WireError as exc:
        assert str(exc) and "\n" not in str(exc)[:200]
    else:
        assert dataclasses.is_dataclass(result)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(["action", "cursor", "id", "event", "index", "count", "data"]),
            json_values
            | st.sampled_from(["hello", "event", "chunk", "gap", "sessions", "ack", "error"]),
        ),
        messages.map(lambda m: json.loads(wire.encode(m, limit=10**9))).flatmap(
            lambda obj: st.sampled_from(sorted(obj)).flatmap(
                lambda key: json_values.map(lambda value: {**obj, key: value})
            )
        ),
    )
)
def test_decode_of_any_json_value_is_a_message_or_a_wire_error(value: Any) -> None:
    """Including real messages with one field replaced by any JSON value."""
    try:
        message = wire.decode(json.dumps(value))
    except wire.WireError as exc:
        assert exc.code in ("bad-message", "unknown-action")
    else:
        assert wire.decode(wire.encode(message, limit=10**9)) == message


HUGE_EXPIRES = (
    '{"action":"sessions","items":[{"name":"a","connected":true,"pattern":null,"replay":null,'
    '"acked":0,"next_cursor":1,"buffered":0,"expires":' + "9" * 400 + "}]}"
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        ("", "not JSON"),
        ("{'action': 'ack'}", "not JSON"),
        ("[1]", "must be a JSON object"),
        ("{}", "string field 'action'"),
        ('{"action": 7}', "string field 'action'"),
        ('{"action":"ack"}', "ack.through: missing"),
        ('{"action":"ack","through":true}', "ack.through: must be an integer, got a boolean"),
        ('{"action":"ack","through":1.0}', "must be an integer, got a number"),
        ('{"action":"ack","through":-1}', "ack.through must be 0"),
        ('{"action":"ack","through":9007199254740992}', "ack.through must be 0"),
        ('{"action":"event","cursor":0,"id":"x","event":{}}', "event.cursor must be 1"),
        ('{"action":"event","cursor":1,"id":"x","event":[]}', "must be an object"),
        ('{"action":"event","cursor":1,"id":"","event":{}}', "event.id must not be empty"),
        ('{"action":"event","cursor":1,"id":"x","event":{"n":NaN}}', "NaN is not JSON"),
        ('{"action":"event","cursor":1,"id":"x","event":{"n":-Infinity}}', "is not JSON"),
        ('{"action":"event","cursor":1,"id":"x","event":{"n":1e400}}', "out of range"),
        ('{"action":"ack","through":' + "9" * 5000 + "}", "not JSON"),
        (HUGE_EXPIRES, "out of range"),
        ('{"action":"gap","first":5,"last":4,"reason":"cap"}', "gap.first 5 is after"),
        ('{"action":"chunk","cursor":1,"id":"x","index":2,"count":2,"data":""}', "out of range"),
        ('{"action":"chunk","cursor":1,"id":"x","index":0,"count":5000,"data":""}', "at most"),
        ('{"action":"chunk","cursor":1,"id":"x","index":0,"count":1,"data":"#"}', "not base64"),
        ('{"action":"hello","version":1,"client":"c","session":""}', "hello.session must be"),
        ('{"action":"hello","version":1,"client":"c","session":"a\\nb"}', "printable"),
        ('{"action":"ping","nonce":"\\ud800"}', "lone surrogate"),
        ('{"action":"ping","nonce":"\ud800"}', "lone surrogate"),
        ('{"action":"ping","nonce":' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"action":"sessions","items":[1]}', "sessions.items must be an object"),
        ('{"action":"welcome","version":1,"session":null,"acked":0,"next_cursor":0}', "next_"),
    ],
)
def test_decode_refuses_with_one_line(text: str | bytes, reason: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.decode(text)
    assert reason in str(caught.value)
    assert caught.value.code == "bad-message"
    assert "\n" not in str(caught.value)


def test_unknown_action_has_its_own_code_and_unknown_fields_are_ignored() -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.decode('{"action":"teleport"}')
    assert caught.value.code == "unknown-action"
    assert wire.decode('{"action":"ack","through":3,"from":"v2"}') == wire.Ack(3)
    # Optional fields may be absent (an older peer) and a surrogate pair is fine.
    assert wire.decode('{"action":"subscribe","pattern":null}') == wire.Subscribe(None, None)
    assert wire.decode('{"action":"ping","nonce":"\\ud83d\\ude00"}') == wire.Ping("😀")


def test_sessions_is_the_request_without_items_and_the_listing_with_them() -> None:
    assert wire.decode('{"action":"sessions"}') == wire.ListSessions()
    assert wire.decode('{"action":"sessions","items":[]}') == wire.Sessions(())


def test_encode_is_compact_utf8_and_refuses_what_cannot_be_sent() -> None:
    text = wire.encode(wire.Event(1, "id", {"name": "Zoë", "n": [1, 2.5]}))
    assert text == '{"action":"event","cursor":1,"id":"id","event":{"name":"Zoë","n":[1,2.5]}}'
    with pytest.raises(wire.LocalProtocolError, match="not sendable as JSON"):
        wire.encode(wire.Event(1, "id", {"n": float("nan")}))
    with pytest.raises(wire.LocalProtocolError, match="not sendable as JSON"):
        wire.encode(wire.Event(1, "id", {"s": {1, 2}}))
    with pytest.raises(wire.LocalProtocolError, match="lone surrogate"):
        wire.encode(wire.Ping("\udc00"))
    with pytest.raises(wire.MessageTooLarge) as caught:
        wire.encode(wire.Event(1, "id", {"blob": "x" * wire.MAX_MESSAGE_BYTES}))
    assert caught.value.limit == wire.DEFAULT_LIMIT


def test_messages_check_their_values_when_built() -> None:
    with pytest.raises(wire.WireError, match="gap.first 3 is after gap.last 2"):
        wire.Gap(3, 2, "cap")
    with pytest.raises(wire.WireError, match="must be an integer, got a boolean"):
        wire.Resume(True)
    with pytest.raises(wire.WireError, match="out of range"):
        wire.Chunk(1, "x", 3, 3, "")


def test_sessions_message_cuts_the_listing_to_fit() -> None:
    infos = [
        wire.SessionInfo(f"s{i:04}", False, {"detail": {"log": ["x" * 50]}}, None, 0, 1, 0, 1.0)
        for i in range(2000)
    ]
    listing = wire.sessions_message(infos, limit=20_000)
    assert len(wire.encode(listing, 20_000).encode()) <= 20_000
    assert listing.omitted == 2000 - len(listing.items) > 0
    assert list(listing.items) == infos[: len(listing.items)]
    assert wire.sessions_message(infos[:3]).omitted == 0


# --------------------------------------------------------------------------- chunks

# Characters JSON escapes (quote, backslash, controls), multi-byte ones and U+2028.
tricky = st.text(
    st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "é", "€", "😀", "\u2028", "a", "/"])
    | st.characters(blacklist_categories=("Cs",)),
    min_size=1,
    max_size=16,
)


@st.composite
def events(draw: st.DrawFn, max_bytes: int) -> dict[str, Any]:
    """An EventBridge-shaped event of up to about ``max_bytes`` bytes, cheap to draw
    however big: a drawn piece of tricky text repeated."""
    piece = draw(tricky)
    repeat = draw(st.integers(0, max_bytes // max(1, len(piece.encode()))))
    return {"id": "e", "detail": {"payload": piece * repeat, "n": draw(st.integers())}}


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.tuples(st.just(wire.DEFAULT_LIMIT), events(300_000)),
        st.tuples(st.sampled_from([400, 1024, 4096]), events(20_000)),
    ),
    cursors,
    st.text(min_size=1, max_size=60),
)
def test_every_message_of_an_event_fits_the_limit(
    case: tuple[int, dict[str, Any]], cursor: int, id: str
) -> None:
    limit, event = case
    produced = event_messages(cursor, id, event, limit)
    texts = [wire.encode(m, limit) for m in produced]  # encode refuses anything over
    assert all(len(text.encode()) <= limit for text in texts)
    whole = len(wire.encode(wire.Event(cursor, id, event), 10**9).encode())
    assert (len(produced) == 1) == (whole <= limit)
    if len(produced) == 1:
        assert produced == [wire.Event(cursor, id, event)]
    else:
        assert all(isinstance(m, wire.Chunk) and m.count == len(produced) for m in produced)
        body = b"".join(base64.b64decode(m.data) for m in produced)  # type: ignore[union-attr]
        assert json.loads(body) == event


@settings(max_examples=60, deadline=None)
@given(st.data(), events(40_000), st.sampled_from([400, 1500, 6000]))
def test_reassembly_in_any_order_with_any_duplicates_gives_the_event_once(
    data: st.DataObject, event: dict[str, Any], limit: int
) -> None:
    produced = [wire.decode(wire.encode(m, limit)) for m in event_messages(9, "ev", event, limit)]
    order = data.draw(st.permutations(range(len(produced))))
    extra = data.draw(st.lists(st.integers(0, len(produced) - 1), max_size=2 * len(produced)))
    arrival = list(order)
    for index in extra:
        arrival.insert(data.draw(st.integers(0, len(arrival))), index)
    reassembler = Reassembler()
    out = []
    for index in arrival:
        message = produced[index]
        if isinstance(message, wire.Chunk):
            result = reassembler.feed(message)
            if result is not None:
                out.append(result)
        else:
            out.append(message)
    assert out[:1] == [wire.Event(9, "ev", event)]
    if isinstance(produced[0], wire.Chunk):
        assert len(out) == 1
        assert reassembler.pending == 0 and reassembler.pending_bytes == 0


def test_a_200_kb_event_of_multibyte_text_travels_in_chunks() -> None:
    event = {"id": "big", "detail": {"payload": 'Zoë € 😀 "quoted" \\ ' * 8000}}
    produced = event_messages(3, "big", event)
    assert len(produced) >= 2
    reassembler = Reassembler()
    results = [reassembler.feed(m) for m in reversed(produced)]  # type: ignore[arg-type]
    assert results[:-1] == [None] * (len(produced) - 1)
    assert results[-1] == wire.Event(3, "big", event)


def test_event_messages_refuses_what_no_chunk_can_carry() -> None:
    with pytest.raises(wire.LocalProtocolError, match="an empty chunk is over"):
        event_messages(1, "x" * 500, {"a": "b" * 1000}, limit=400)
    with pytest.raises(wire.LocalProtocolError, match="chunks, over the 1024 allowed"):
        event_messages(1, "x", {"a": "b" * 300_000}, limit=300)


def chunk(cursor: int, index: int, count: int, data: bytes, id: str = "x") -> wire.Chunk:
    return wire.Chunk(cursor, id, index, count, base64.b64encode(data).decode())


def test_inconsistent_chunks_are_refused_and_the_newest_wins() -> None:
    reassembler = Reassembler()
    assert reassembler.feed(chunk(5, 0, 3, b'{"a"')) is None
    with pytest.raises(wire.WireError, match="of 2 chunks, earlier ones 'x' of 3"):
        reassembler.feed(chunk(5, 0, 2, b'{"a":'))
    assert reassembler.feed(chunk(5, 1, 2, b"1}")) == wire.Event(5, "x", {"a": 1})
    assert reassembler.feed(chunk(6, 0, 2, b"[1,")) is None
    with pytest.raises(wire.WireError, match="differs from its earlier copy"):
        reassembler.feed(chunk(6, 0, 2, b"[2,"))
    with pytest.raises(wire.WireError, match="cursor 6 is not a JSON object"):
        reassembler.feed(chunk(6, 1, 2, b"3]"))
    assert reassembler.feed(chunk(7, 0, 2, b"\xff")) is None
    with pytest.raises(wire.WireError, match="cursor 7: not UTF-8"):
        reassembler.feed(chunk(7, 1, 2, b"{}"))
    assert reassembler.feed(chunk(8, 0, 2, b"{", id="x")) is None
    with pytest.raises(wire.WireError, match="id 'y'"):
        reassembler.feed(chunk(8, 1, 2, b"}", id="y"))


def test_partials_are_bounded_by_a_cursor_window_and_a_byte_cap() -> None:
    reassembler = Reassembler(window=10, max_bytes=100)
    reassembler.feed(chunk(1, 0, 2, b"x" * 10))
    reassembler.feed(chunk(5, 0, 2, b"x" * 10))
    reassembler.feed(chunk(12, 0, 2, b"x" * 10))  # cursor 1 is now 11 below the newest
    assert (reassembler.pending, reassembler.dropped) == (2, 1)
    reassembler.feed(chunk(13, 0, 2, b"x" * 85))  # over 100 bytes: the oldest (5) goes
    assert (reassembler.pending, reassembler.dropped, reassembler.pending_bytes) == (2, 2, 95)
    reassembler.feed(chunk(14, 0, 2, b"x" * 200))  # alone over the cap: all go, it too
    assert (reassembler.pending, reassembler.pending_bytes) == (0, 0)
    assert reassembler.feed(chunk(13, 1, 2, b"y")) is None  # restarts, never completes


# ----------------------------------------------------------------- event text, cut out

# Keys and strings that look like the wire's own syntax, to trip a naive cut.
_confusing = st.sampled_from(['"event":', "event", '\\"event\\":', "}", '","event":{', "\\"])
_texts = st.one_of(st.text(max_size=8), _confusing)
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300)
@given(
    cursors,
    st.one_of(st.text(min_size=1, max_size=8), _confusing),
    st.dictionaries(_texts, _values, max_size=4),
)
def test_the_event_text_cut_from_a_message_is_the_event_or_nothing(
    cursor: int, id: str, event: dict[str, Any]
) -> None:
    text = wire.encode(wire.Event(cursor, id, event))
    message, cut = wire.decode_keeping_event_text(text)
    assert message == wire.Event(cursor, id, event)
    if cut is not None:
        assert json.loads(cut) == event
    if '"event":' not in json.dumps(event, ensure_ascii=False) and '"event":' not in id:
        assert cut is not None  # our own encoder's messages are cut, not re-encoded


def test_a_message_of_another_shape_is_not_cut() -> None:
    assert wire.decode_keeping_event_text(wire.encode(wire.Ping("x"))) == (wire.Ping("x"), None)
    event = {"detail": {"n": 1}}
    body = json.dumps(event, separators=(",", ":"))
    for text in (
        '{"action":"event","cursor":1,"id":"a","event":' + body + ',"extra":{"b":2}}',
        '{"action":"event","cursor":1,"event":' + body + ',"id":"a"}',
        '{"action": "event", "cursor": 1, "id": "a", "event": ' + body + "}",
        '{"action":"event","cursor":1,"id":"a","event":' + body + ',"event":' + body + "}",
    ):
        message, cut = wire.decode_keeping_event_text(text)
        assert message == wire.Event(1, "a", event) and cut is None  # valid, not cut out
