"""Sessions: the server's record and transitions, ServerProtocol, and a client/server pair
joined by a fake link (h11's ConnectionPair style) over the reference cloud of
``session_pair.py``: forced interleavings, gaps, holes, takeover, refusals."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from session_pair import OWNER, FakeCloud, Pair, bus_event

from bridge.core import wire
from bridge.core.chunks import event_messages
from bridge.core.session import (
    BadRequest,
    ClientProtocol,
    Closing,
    Delivered,
    Forbidden,
    GapReported,
    NoSession,
    Pong,
    ProtocolProblem,
    Ready,
    Refused,
    ServerError,
    ServerProtocol,
    SessionDropped,
    SessionRecord,
    SessionReset,
    SessionsListed,
    State,
    ack,
    add_gap,
    connect,
    disconnect,
    drop,
    expired,
    subscribe,
    wants,
)

OTHER = "arn:aws:sts::123456789012:assumed-role/dev/mallory"
TTL = 3600.0


def record(**changes: Any) -> SessionRecord:
    fields: dict[str, Any] = {
        "owner": OWNER,
        "name": "alice@laptop",
        "connection": "c1",
        "pattern": None,
        "replay": None,
        "acked": 0,
        "gaps": (),
        "version": 1,
        "created": 0.0,
        "expires": TTL,
        "subscribed": True,
    }
    return SessionRecord(**{**fields, **changes})


# --------------------------------------------------------------------------- the record

records = st.builds(
    SessionRecord,
    owner=st.text(min_size=1),
    name=st.text(min_size=1),
    connection=st.none() | st.text(min_size=1),
    pattern=st.none() | st.dictionaries(st.text(), st.lists(st.text() | st.integers())),
    replay=st.none() | st.text(),
    acked=st.integers(0, 2**53),
    gaps=st.lists(st.tuples(st.integers(1, 99), st.integers(100, 999), st.text())).map(tuple),
    version=st.integers(1, 2**40),
    created=st.floats(0, 2e9),
    expires=st.floats(0, 2e9),
    subscribed=st.booleans(),
)


@settings(max_examples=100, deadline=None)
@given(records)
def test_record_round_trips_through_its_item_and_json(value: SessionRecord) -> None:
    item = value.to_item()
    assert SessionRecord.from_item(json.loads(json.dumps(item))) == value
    assert item["ttl"] >= value.expires  # whole seconds for DynamoDB's TTL


def test_record_reads_dynamodb_numbers_and_refuses_a_broken_item() -> None:
    item = record(gaps=((3, 4, "buffer cap"),), acked=2).to_item()
    dynamo = {
        **item,
        "acked": Decimal(2),
        "version": Decimal(1),
        "created": Decimal("0.5"),
        "expires": Decimal(TTL),
        "gaps": [[Decimal(3), Decimal(4), "buffer cap"]],
        "pk": "session#alice@laptop",  # keys are the I/O layer's, ignored
    }
    read = SessionRecord.from_item(dynamo)
    assert (read.acked, read.gaps, read.created) == (2, ((3, 4, "buffer cap"),), 0.5)
    for broken in ({**item, "acked": Decimal("1.5")}, {**item, "owner": None}, {"name": "x"}):
        with pytest.raises(wire.LocalProtocolError, match="session item is broken"):
            SessionRecord.from_item(broken)


def test_connect_creates_takes_over_and_refuses_another_owner() -> None:
    fresh, old = connect(None, OWNER, "alice@laptop", "c1", now=10.0, ttl=TTL)
    assert old is None
    assert (fresh.version, fresh.acked, fresh.subscribed, fresh.expires) == (1, 0, False, 10 + TTL)
    taken, old = connect(fresh, OWNER, "alice@laptop", "c2", now=20.0, ttl=TTL)
    assert (old, taken.connection, taken.version) == ("c1", "c2", 2)
    again, old = connect(taken, OWNER, "alice@laptop", "c2", now=21.0, ttl=TTL)
    assert old is None and again.version == 3
    with pytest.raises(Forbidden, match="belongs to another principal"):
        connect(taken, OTHER, "alice@laptop", "c3", now=30.0, ttl=TTL)
    # Expired: the name is free again, and the session starts afresh.
    late, old = connect(taken, OTHER, "alice@laptop", "c3", now=20 + TTL, ttl=TTL)
    assert (late.owner, late.acked, late.version, old) == (OTHER, 0, 3, None)
    with pytest.raises(wire.LocalProtocolError, match="given for session"):
        connect(taken, OWNER, "bob@desk", "c4", now=30.0, ttl=TTL)


def test_subscribe_checks_the_pattern_and_replay_name() -> None:
    current = record(subscribed=False)
    done = subscribe(current, {"detail": {"log": ["users"]}}, "r-1", now=5.0, ttl=TTL)
    assert (done.subscribed, done.replay, done.version, done.expires) == (True, "r-1", 2, 5 + TTL)
    with pytest.raises(BadRequest, match="detail.log"):
        subscribe(current, {"detail": {"log": "users"}}, None, now=5.0, ttl=TTL)
    with pytest.raises(BadRequest, match="replay name"):
        subscribe(current, None, "no spaces", now=5.0, ttl=TTL)


def test_ack_never_goes_back_nor_past_what_was_allocated() -> None:
    current = record(acked=5, gaps=((2, 3, "cap"), (7, 8, "cap")))
    moved = ack(current, 7, now=1.0, ttl=TTL, next_cursor=10)
    assert (moved.acked, moved.gaps) == (7, ((7, 8, "cap"),))
    assert ack(moved, 6, now=2.0, ttl=TTL, next_cursor=10).acked == 7
    assert ack(moved, 9, now=2.0, ttl=TTL, next_cursor=10).gaps == ()
    with pytest.raises(BadRequest, match="highest cursor allocated is 9"):
        ack(moved, 10, now=2.0, ttl=TTL, next_cursor=10)


def test_disconnect_only_clears_the_current_connection() -> None:
    assert disconnect(record(connection="c2"), "c1") is None
    cleared = disconnect(record(connection="c1"), "c1")
    assert cleared is not None and (cleared.connection, cleared.version) == (None, 2)


def test_gaps_merge_when_adjacent_and_stay_bounded() -> None:
    current = record()
    for cursor in (3, 4, 5, 9):
        current = add_gap(current, cursor, cursor, "buffer cap")
    assert current.gaps == ((3, 5, "buffer cap"), (9, 9, "buffer cap"))
    for cursor in range(20, 20 + 2 * 300, 2):
        current = add_gap(current, cursor, cursor, "buffer cap")
    assert len(current.gaps) == 256
    assert current.gaps[0][0] == 3 and current.gaps[-1] == (618, 618, "buffer cap")


def test_wants_follows_subscription_replay_and_expiry() -> None:
    live = record(pattern={"detail": {"log": ["users"]}})
    event = bus_event("e1")
    assert wants(live, event, now=1.0)
    assert not wants(live, {**event, "detail": {"log": "orders"}}, now=1.0)
    assert not wants(live, {**event, "replay-name": "r1"}, now=1.0)
    assert not wants(record(subscribed=False), event, now=1.0)
    assert not wants(live, event, now=TTL)
    replaying = record(replay="r1")
    assert wants(replaying, {**event, "replay-name": "r1"}, now=1.0)
    assert not wants(replaying, {**event, "replay-name": "r2"}, now=1.0)
    assert not wants(replaying, event, now=1.0)
    assert expired(live, TTL) and not expired(live, TTL - 0.001)


def test_drop_checks_owner_and_life() -> None:
    assert drop(record(), OWNER, now=1.0) == "c1"
    with pytest.raises(Forbidden):
        drop(record(), OTHER, now=1.0)
    with pytest.raises(NoSession):
        drop(None, OWNER, now=1.0)
    with pytest.raises(NoSession):
        drop(record(), OWNER, now=TTL)


# --------------------------------------------------------------------------- ServerProtocol


def serve(text: str, current: SessionRecord | None = None, **options: Any) -> Any:
    options = {"next_cursor": 1, **options}
    connection = options.pop("connection", "c1")
    owner = options.pop("owner", OWNER)
    return ServerProtocol(current, owner, connection, 1.0, **options).receive_message(text)


def replies(plan: Any) -> list[wire.Message]:
    return [wire.decode(text) for text in plan.send]


def test_server_refuses_peer_faults_with_error_messages() -> None:
    plan = serve("{not json")
    assert replies(plan)[0].code == "bad-message" and plan.problem  # type: ignore[union-attr]
    assert replies(serve('{"action":"teleport"}'))[0].code == "unknown-action"  # type: ignore[union-attr]
    welcome = wire.encode(wire.Welcome(1, "x", 0, 1))
    assert "sent by the server" in replies(serve(welcome))[0].message  # type: ignore[union-attr]
    subscribe_text = wire.encode(wire.Subscribe(None))
    error = replies(serve(subscribe_text))[0]
    assert (error.code, "send hello first" in error.message) == ("no-session", True)  # type: ignore[union-attr]
    error = replies(serve(subscribe_text, record(connection="c2")))[0]
    assert "taken over by a newer connection" in error.message  # type: ignore[union-attr]
    # An ack that overtook nothing but arrived after $disconnect: said as it is.
    late_ack = replies(serve(wire.encode(wire.Ack(1)), record(connection=None)))[0]
    assert late_ack.message.endswith("has no open connection: this one was closed")  # type: ignore[union-attr]
    error = replies(serve(subscribe_text, record(owner=OTHER)))[0]
    assert error.code == "no-session" and "another principal" in error.message  # type: ignore[union-attr]
    bad = replies(serve(wire.encode(wire.Subscribe({"a": "b"})), record()))[0]
    assert bad.code == "bad-message" and bad.message.startswith("subscribe: a:")  # type: ignore[union-attr]
    error = replies(serve(wire.encode(wire.Ack(5)), record(), next_cursor=3))[0]
    assert "highest cursor allocated is 2" in error.message  # type: ignore[union-attr]


def test_server_answers_a_version_mismatch_and_closes() -> None:
    plan = serve(wire.encode(wire.Hello(1, "bridge/0.1.0", "alice@laptop")), server_version=2)
    assert plan.close and plan.save is None
    assert replies(plan) == [
        wire.Error(
            "version",
            "this bridge speaks protocol version 2, the client 1",
            version=2,
            request="hello",
        )
    ]


def test_server_hello_saves_conditionally_and_names_the_connection_it_replaces() -> None:
    hello = wire.encode(wire.Hello(1, "bridge/0.1.0", "alice@laptop"))
    plan = serve(hello, None, next_cursor=40)
    assert (plan.fresh, plan.expected_version, plan.supersede) == (True, None, None)
    assert replies(plan) == [wire.Welcome(1, "alice@laptop", 0, 1)]  # a fresh counter
    plan = serve(hello, record(connection="c0", acked=4), connection="c1", next_cursor=9)
    assert (plan.fresh, plan.expected_version, plan.supersede) == (False, 1, "c0")
    assert wire.decode(plan.notice) == wire.Closing(
        "session 'alice@laptop' was taken over by a newer connection"
    )
    assert replies(plan) == [wire.Welcome(1, "alice@laptop", 4, 9)]
    plan = serve(hello, record(owner=OTHER))
    assert plan.close and replies(plan)[0].code == "forbidden"  # type: ignore[union-attr]
    management = serve(wire.encode(wire.Hello(1, "bridge/0.1.0", None)))
    assert replies(management) == [wire.Welcome(1, None, 0, 1)] and management.save is None


# --------------------------------------------------------------------------- the pair


@pytest.fixture
def cloud() -> FakeCloud:
    return FakeCloud()


def ready(cloud: FakeCloud, **options: Any) -> Pair:
    pair = Pair(cloud, **options)
    events = pair.pump()
    assert events == [Ready()], events
    return pair


def produce(cloud: FakeCloud, count: int, start: int = 1) -> list[str]:
    ids = [f"e{n}" for n in range(start, start + count)]
    for id in ids:
        cloud.forward(bus_event(id))
    return ids


def test_events_flow_and_acks_trim_the_buffer(cloud: FakeCloud) -> None:
    pair = ready(cloud)
    produce(cloud, 3)
    events = pair.pump()
    assert [(e.cursor, e.id) for e in events] == [(1, "e1"), (2, "e2"), (3, "e3")]  # type: ignore[union-attr]
    assert pair.client.low_water == 3
    pair.client.confirm(2)
    pair.client.confirm(3)  # coalesced: one ack goes out
    assert pair.client.messages_to_send() == [wire.encode(wire.Ack(3))]
    cloud.handle(pair.connection, wire.encode(wire.Ack(3)))
    assert cloud.records["alice@laptop"].acked == 3 and cloud.buffers["alice@laptop"] == {}
    with pytest.raises(wire.LocalProtocolError, match="above the low-water mark 3"):
        pair.client.confirm(4)


def test_acks_go_out_at_most_once_per_interval_and_at_once_when_flushed(cloud: FakeCloud) -> None:
    """Every ack costs the bridge a Lambda invocation and DynamoDB writes: the client
    sends the latest one per ``ack_interval``, its timer says when, and a flush (Ctrl-C,
    a reconnect) sends it at once."""
    pair = ready(cloud, ack_interval=1.0)
    client = pair.client
    produce(cloud, 4)
    pair.pump()
    start = cloud.now
    client.confirm(1)
    client.tick(start + 0.1)
    assert client.messages_to_send() == []  # too soon after the welcome
    client.confirm(2)
    timer = client.next_timer()
    assert timer is not None and timer <= start + 1.0
    client.tick(timer)
    assert client.messages_to_send() == [wire.encode(wire.Ack(2))]
    client.confirm(3)
    client.tick(timer + 0.5)
    assert client.messages_to_send() == []  # the last ack went out half a second ago
    client.flush_ack()
    assert client.messages_to_send() == [wire.encode(wire.Ack(3))]
    assert client.messages_to_send() == []  # once
    client.tick(timer + 5.0)
    assert client.messages_to_send() == []  # nothing new to acknowledge


def test_cursor_7_visible_before_6_holds_the_ack_at_5_until_6_arrives(cloud: FakeCloud) -> None:
    pair = ready(cloud)
    produce(cloud, 5)
    pair.pump()
    six, seven = cloud.allocate("alice@laptop"), cloud.allocate("alice@laptop")
    cloud.write("alice@laptop", seven, "e7", bus_event("e7"))  # the later forwarder is first
    assert [e.cursor for e in pair.pump()] == [7]  # type: ignore[union-attr]
    assert pair.client.low_water == 5
    pair.client.confirm(5)
    with pytest.raises(wire.LocalProtocolError):
        pair.client.confirm(7)
    pair.tick(3.0)
    assert pair.client.low_water == 5
    cloud.write("alice@laptop", six, "e6", bus_event("e6"))
    assert [e.cursor for e in pair.pump()] == [6]  # type: ignore[union-attr]
    assert pair.client.low_water == 7
    pair.client.confirm(7)
    assert pair.client.counters.holes_skipped == pair.client.counters.gaps == 0


def test_cursor_6_never_written_is_skipped_after_the_grace_not_reported_lost(
    cloud: FakeCloud,
) -> None:
    pair = ready(cloud)
    produce(cloud, 5)
    pair.pump()
    cloud.allocate("alice@laptop")  # cursor 6: its forwarder died
    produce(cloud, 1, start=7)
    pair.pump()
    assert pair.client.low_water == 5
    pair.tick(4.9)
    assert pair.client.counters.refetches == 0
    pair.tick(5.0)  # re-fetch: the buffer holds 7 again, not 6
    assert pair.client.counters.refetches == 1
    assert pair.client.counters.duplicates == 1
    for now in range(10, 120, 5):
        pair.tick(float(now))
        assert pair.client.low_water == 5
    assert pair.client.next_timer() == 120.0
    pair.tick(120.0)
    assert pair.client.low_water == 7
    assert pair.client.counters.holes_skipped == 1
    assert pair.client.counters.gaps == 0
    assert not [e for e in pair.events if isinstance(e, GapReported)]
    pair.client.confirm(7)
    # Should cursor 6 be written after all, it is still delivered, once.
    cloud.write("alice@laptop", 6, "e6", bus_event("e6"))
    cloud.write("alice@laptop", 6, "e6", bus_event("e6"))
    assert [e.cursor for e in pair.pump() if isinstance(e, Delivered)] == [6]


def test_a_hole_is_skipped_after_the_grace_across_connections_shorter_than_it(
    cloud: FakeCloud,
) -> None:
    """A gateway closing every connection after 3 s: each new connection's protocol
    carries the hole's age from the last one (``previous``), so cursor 6, never
    written, is skipped 120 s after it was first missed, not never."""
    pair = ready(cloud)
    produce(cloud, 5)
    pair.pump()
    pair.client.confirm(5)
    cloud.allocate("alice@laptop")  # cursor 6: its forwarder died
    produce(cloud, 1, start=7)
    pair.pump()
    assert pair.client.low_water == 5
    while pair.client.low_water == 5:
        assert cloud.now < 120.0, "the hole was never skipped"
        cloud.close(pair.connection)
        cloud.now += 3.0
        pair = Pair(cloud, resume_after=5, previous=pair.client)
        assert [e.cursor for e in pair.pump() if isinstance(e, Delivered)] == [7]
        pair.tick(cloud.now)
    assert cloud.now == 120.0
    assert (pair.client.low_water, pair.client.counters.holes_skipped) == (7, 1)
    assert pair.client.counters.gaps == 0
    # a new connection whose sink stored less than the last one had starts afresh
    fresh = Pair(cloud, resume_after=4, previous=pair.client)
    assert fresh.client.low_water == 4


def test_events_produced_while_disconnected_arrive_on_reconnect(cloud: FakeCloud) -> None:
    pair = ready(cloud)
    produce(cloud, 2)
    pair.pump()
    pair.client.confirm(2)
    pair.pump()
    cloud.close(pair.connection)
    produce(cloud, 3, start=3)
    again = Pair(cloud, resume_after=2)
    events = again.pump()
    assert [(e.cursor, e.id) for e in events if isinstance(e, Delivered)] == [
        (3, "e3"),
        (4, "e4"),
        (5, "e5"),
    ]
    assert events[-1] == Ready() and again.client.low_water == 5


def test_buffer_overflow_while_disconnected_is_reported_as_the_exact_gap() -> None:
    cloud = FakeCloud(cap=3)
    pair = ready(cloud)
    produce(cloud, 1)
    pair.pump()
    pair.client.confirm(1)
    pair.pump()
    cloud.close(pair.connection)
    produce(cloud, 6, start=2)  # cursors 2..7; the buffer keeps 5..7
    again = Pair(cloud, resume_after=1)
    events = again.pump()
    assert events[0] == GapReported(2, 4, "buffer cap")
    assert [e.cursor for e in events if isinstance(e, Delivered)] == [5, 6, 7]
    assert again.client.counters.gaps == 3 and again.client.low_water == 7
    again.client.confirm(7)
    again.pump()
    assert cloud.records["alice@laptop"].gaps == ()  # acknowledged past: forgotten


def test_a_newer_connection_takes_the_session_over(cloud: FakeCloud) -> None:
    first = ready(cloud)
    second = ready(cloud)  # e.g. the client restarted after SIGKILL
    assert first.pump() == [Closing("session 'alice@laptop' was taken over by a newer connection")]
    assert first.client.closed
    produce(cloud, 1)
    assert [e.cursor for e in second.pump()] == [1]  # type: ignore[union-attr]
    # The old connection's acks are refused; the new one's count.
    cloud.handle(first.connection, wire.encode(wire.Ack(1)))
    assert cloud.records["alice@laptop"].acked == 0


def test_another_principal_is_refused_the_session(cloud: FakeCloud) -> None:
    ready(cloud)
    intruder = Pair(cloud, owner=OTHER)
    events = intruder.pump()
    assert events == [
        Refused("forbidden", "hello: session 'alice@laptop' belongs to another principal")
    ]
    assert events[0].permanent and intruder.client.closed  # type: ignore[union-attr]


def test_version_mismatch_is_refused_with_one_line_and_closes() -> None:
    cloud = FakeCloud(server_version=2)
    pair = Pair(cloud)
    events = pair.pump()
    assert events == [
        Refused(
            "version",
            "the bridge stack speaks version 2; this client speaks 1: "
            "upgrade this client (pip install -U dynamodb-logs-bridge)",
        )
    ]
    assert pair.client.closed and pair.client.state is State.CLOSED
    pair.client.receive_message(wire.encode(wire.Event(1, "x", {})), 1.0)
    pair.client.tick(1000.0)
    assert pair.client.events_received() == [] and pair.client.messages_to_send() == []
    older = ClientProtocol("s", None, None, 0, now=0.0)
    older.receive_message(wire.encode(wire.Welcome(0, "s", 0, 1)), 0.0)
    (refused,) = older.events_received()
    assert refused.message.endswith(  # type: ignore[union-attr]
        "speaks 1: upgrade the bridge stack (bridge deploy --stage STAGE --bridge)"
    )


def test_malformed_and_unexpected_messages_are_counted_never_raised(cloud: FakeCloud) -> None:
    pair = ready(cloud)
    client = pair.client
    for text in ["", "\x00garbage", '{"action":"event"}', b"\xff", wire.encode(wire.Ping("x"))]:
        client.receive_message(text, 1.0)
    client.receive_message(wire.encode(wire.Welcome(1, "alice@laptop", 0, 1)), 1.0)  # harmless
    client.receive_message(wire.encode(wire.Welcome(1, "bob@desk", 0, 1)), 1.0)
    client.receive_message(wire.encode(wire.Error("internal", "boom")), 1.0)
    events = client.events_received()
    problems = [e for e in events if isinstance(e, ProtocolProblem)]
    assert len(problems) == 6 and problems[4].reason == "unexpected ping while ready"
    assert problems[-1].reason == "a second welcome, for session 'bob@desk'"
    assert problems[3].text_head == repr(b"\xff")
    assert events[-1] == ServerError("internal", "boom")
    assert client.counters.problems == 7 and not client.closed
    fresh = ClientProtocol("s", None, None, 0, now=0.0)
    fresh.receive_message(wire.encode(wire.Resumed(3)), 0.0)
    assert fresh.events_received() == [
        ProtocolProblem("unexpected resumed while hello", '{"action":"resumed","through":3}')
    ]


def test_a_200_kb_event_arrives_whole_through_shuffled_chunks(cloud: FakeCloud) -> None:
    pair = ready(cloud)
    event = bus_event("big", payload={"text": 'Zoë 😀 "x" ' * 20_000})
    cloud.forward(event)
    assert len(pair.connection.inbox) >= 2
    pair.connection.inbox.reverse()
    pair.connection.inbox.insert(1, pair.connection.inbox[0])  # and a duplicate chunk
    assert pair.pump() == [Delivered(1, "big", event)]


def test_a_duplicate_chunked_event_counts_once(cloud: FakeCloud) -> None:
    pair = ready(cloud)
    event = bus_event("big", payload={"text": "x" * 200_000})
    cloud.forward(event)
    pair.pump()
    for message in event_messages(1, "big", event):
        pair.client.receive_message(wire.encode(message), 1.0)
    assert pair.client.events_received() == []
    assert (pair.client.counters.received, pair.client.counters.duplicates) == (2, 1)


def test_a_replay_session_gets_only_its_replay(cloud: FakeCloud) -> None:
    live = ready(cloud)
    replaying = ready(cloud, session="alice-replay", replay="r-1")
    cloud.forward(bus_event("e1"))
    cloud.forward({**bus_event("e2"), "replay-name": "r-1"})
    cloud.forward({**bus_event("e3"), "replay-name": "r-2"})
    assert [e.id for e in live.pump()] == ["e1"]  # type: ignore[union-attr]
    assert [e.id for e in replaying.pump()] == ["e2"]  # type: ignore[union-attr]


def test_sessions_are_listed_and_dropped_through_a_management_connection(
    cloud: FakeCloud,
) -> None:
    running = ready(cloud)
    ready(cloud, session="other", owner=OTHER)
    manager = ready(cloud, session=None)
    manager.client.list_sessions()
    (listed,) = manager.pump()
    assert isinstance(listed, SessionsListed)
    assert [(i.name, i.connected) for i in listed.items] == [("alice@laptop", True)]
    manager.client.drop_session("other")
    refusal = "drop 'other': session 'other' belongs to another principal"
    assert manager.pump() == [ServerError("forbidden", refusal)]
    assert not manager.client.closed
    manager.client.drop_session("alice@laptop")
    assert manager.pump() == [SessionDropped("alice@laptop")]
    assert "alice@laptop" not in cloud.records
    assert running.pump() == [Closing("session 'alice@laptop' was dropped")]


def test_acks_of_an_earlier_connection_are_a_gap_for_this_one(cloud: FakeCloud) -> None:
    pair = ready(cloud)
    produce(cloud, 4)
    pair.pump()
    pair.client.confirm(4)
    pair.pump()
    other_sink = Pair(cloud, resume_after=1)  # same session, a sink that stopped at 1
    events = other_sink.pump()
    assert events[0] == GapReported(2, 4, "acknowledged by an earlier connection of this session")
    assert other_sink.client.low_water == 4


def test_an_event_posted_before_the_welcome_is_not_mistaken_for_a_reset(
    cloud: FakeCloud,
) -> None:
    """Found by the state machine: the forwarder's post can overtake the welcome."""
    first = ready(cloud)
    cloud.close(first.connection)
    again = Pair(cloud)
    for text in again.client.messages_to_send():  # the hello
        cloud.handle(again.connection, text)
    produce(cloud, 1)  # cursor 1: allocated after the welcome was computed
    again.connection.inbox.reverse()  # ... and posted before it arrives
    events = again.pump()
    assert events == [Delivered(1, "e1", bus_event("e1")), Ready()]
    assert again.client.low_water == 1


def test_a_session_created_afresh_is_reported_as_a_reset() -> None:
    cloud = FakeCloud(ttl=100.0)
    pair = ready(cloud)
    produce(cloud, 3)
    pair.pump()
    pair.client.confirm(3)
    pair.pump()
    cloud.close(pair.connection)
    cloud.now = 500.0  # expired meanwhile
    again = Pair(cloud, resume_after=3)
    events = again.pump()
    assert events == [SessionReset(previous=3, acked=0), Ready()]
    produce(cloud, 1, start=4)
    assert [(e.cursor, e.id) for e in again.pump()] == [(1, "e4")]  # type: ignore[union-attr]


def test_silence_is_broken_by_a_ping_and_timers_are_announced(cloud: FakeCloud) -> None:
    pair = ready(cloud, ping_interval=60.0)
    assert pair.client.next_timer() == 60.0
    pair.tick(59.0)
    assert pair.client.messages_to_send() == []
    pair.client.tick(60.0)
    assert pair.client.messages_to_send() == [wire.encode(wire.Ping("1"))]
    cloud.post(pair.connection.id, wire.encode(wire.Pong("1")))
    assert pair.pump() == [Pong("1")]
    assert pair.client.next_timer() == 120.0


def test_the_client_checks_its_own_arguments() -> None:
    with pytest.raises(BadRequest, match="detail"):
        ClientProtocol("s", {"detail": "x"}, None, 0, now=0.0)
    with pytest.raises(wire.LocalProtocolError, match="hello.session"):
        ClientProtocol("bad\nname", None, None, 0, now=0.0)
    with pytest.raises(wire.LocalProtocolError, match="resume_after"):
        ClientProtocol("s", None, None, -1, now=0.0)


def test_a_resume_cut_short_by_the_server_is_continued_at_once() -> None:
    """A forwarder-side resume may stop early (a large buffer near the function's
    timeout): a ``resumed`` below what the welcome announced asks for the rest."""
    client = ClientProtocol("alice@laptop", None, None, 0, now=0.0)
    client.messages_to_send()
    client.receive_message(wire.encode(wire.Welcome(1, "alice@laptop", 0, 6)), 0.1)
    sent = [wire.decode(text) for text in client.messages_to_send()]
    assert wire.Resume(0) in sent
    for cursor in (1, 2):
        event = {"id": f"e{cursor}", "detail": {}}
        client.receive_message(wire.encode(wire.Event(cursor, f"e{cursor}", event)), 0.2)
    client.receive_message(wire.encode(wire.Resumed(2)), 0.3)
    again = [wire.decode(text) for text in client.messages_to_send()]
    assert wire.Resume(2) in again
    for cursor in (3, 4, 5):
        event = {"id": f"e{cursor}", "detail": {}}
        client.receive_message(wire.encode(wire.Event(cursor, f"e{cursor}", event)), 0.4)
    client.receive_message(wire.encode(wire.Resumed(5)), 0.5)
    assert not any(isinstance(wire.decode(text), wire.Resume) for text in client.messages_to_send())
    assert client.low_water == 5
