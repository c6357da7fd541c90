"""The whole protocol under a hostile schedule: a hypothesis RuleBasedStateMachine drives
the client protocol and the reference cloud of ``session_pair.py`` over a link that
reorders and duplicates messages, loses whatever is in flight when a connection drops,
restarts the client (a new ClientProtocol resuming from the cursor its sink stored),
and forwarders that write cursors late or never, or write and die before posting.

What the link does not do is lose a message inside a live connection (WebSocket over
TCP does not) or hold one for longer than a step: every step that moves the clock
first delivers what is in flight, in a drawn order. Likewise a forwarder writes within
``LATE`` seconds or never (its Lambda times out well inside the grace period).

Properties, checked after every step and once everything has settled:

* every event written to the session's buffer is delivered at least once, or its
  cursor is reported lost in a gap; reported losses are cursors the buffer cap dropped;
* the low-water mark never moves backwards, and it never passes a cursor that was
  neither delivered, nor reported lost, nor unwritten (a hole that only a dead or a
  late forwarder can leave — which the client may skip only after the grace period);
* once settled, the low-water mark reaches the highest cursor allocated.
"""

from __future__ import annotations

import random
from typing import Any

import hypothesis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from session_pair import Connection, FakeCloud, bus_event

from bridge.core.session import ClientProtocol, Delivered, GapReported, Pong, Ready, Refused

SESSION = "alice@laptop"
GRACE = 60.0
REFETCH = 5.0
LATE = 20.0  # a late forwarder writes within this, or never


class BridgeLink(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # A small limit makes the larger events travel in chunks; a small cap overflows.
        self.cloud = FakeCloud(cap=6, limit=600)
        self.now = 0.0
        self.durable = 0  # the cursor the sink stored with its events
        self.client: ClientProtocol | None = None
        self.connection: Connection | None = None
        self.to_server: list[str] = []
        self.written: dict[int, str] = {}  # cursor -> event id, in the buffer at some point
        self.pending: dict[int, tuple[float, dict[str, Any]]] = {}  # allocated, not written
        self.dead: set[int] = set()  # allocated, never to be written
        self.delivered: dict[int, set[str]] = {}  # cursor -> ids delivered, any connection
        self.lost: set[int] = set()  # cursors reported lost, any connection
        self.trimmed: set[int] = set()
        self.events = 0
        self.chunks = self.redelivered = 0  # for the statistics only

    # ----------------------------------------------------------------- helpers

    def event(self, size: int) -> dict[str, Any]:
        self.events += 1
        return bus_event(f"e{self.events}", payload={"text": 'é"x' * size})

    def absorb(self) -> None:
        """Take what the client reports and queues; check the low-water mark's move."""
        client = self.client
        assert client is not None
        before = self.low_water
        for event in client.events_received():
            if isinstance(event, Delivered):
                self.redelivered += event.cursor in self.delivered
                self.delivered.setdefault(event.cursor, set()).add(event.id)
                assert self.written.get(event.cursor) == event.id
            elif isinstance(event, GapReported):
                self.lost.update(range(event.first, event.last + 1))
            elif isinstance(event, Refused):
                raise AssertionError(f"refused: {event}")
            else:
                assert isinstance(event, Ready | Pong), event
        self.to_server.extend(client.messages_to_send())
        assert client.low_water >= before, "the low-water mark moved backwards"
        for cursor in range(before + 1, client.low_water + 1):
            handled = cursor in self.delivered or cursor in self.lost
            unwritten = cursor in self.dead or cursor in self.pending
            assert handled or unwritten, f"low water passed cursor {cursor}, written and unseen"
        self.low_water = client.low_water

    def receive(self, text: str) -> None:
        assert self.client is not None
        self.chunks += text.startswith('{"action":"chunk"')
        self.client.receive_message(text, self.now)
        self.absorb()

    def flush(self, order: random.Random) -> None:
        """Deliver everything in flight, both ways, in a drawn order."""
        while self.client is not None and self.connection is not None:
            inbox = self.connection.inbox
            if not self.to_server and not inbox:
                return
            if self.to_server and (not inbox or order.random() < 0.5):
                text = self.to_server.pop(order.randrange(len(self.to_server)))
                self.cloud.handle(self.connection, text)
            else:
                self.receive(inbox.pop(order.randrange(len(inbox))))

    def write(self, cursor: int, event: dict[str, Any], post: bool = True) -> None:
        self.written[cursor] = event["id"]
        before = set(self.cloud.buffers.get(SESSION, {}))
        self.cloud.write(SESSION, cursor, event["id"], event, post=post)
        self.trimmed |= (before | {cursor}) - set(self.cloud.buffers[SESSION])

    def subscribed(self) -> bool:
        record = self.cloud.records.get(SESSION)
        return record is not None and record.subscribed

    # ----------------------------------------------------------------- rules

    @initialize()
    def start(self) -> None:
        self.low_water = 0
        self.connect()
        self.flush(random.Random(0))
        assert self.subscribed()

    @precondition(lambda self: self.client is None)
    @rule()
    def connect(self) -> None:
        self.connection = self.cloud.open()
        self.client = ClientProtocol(
            SESSION,
            None,
            None,
            self.durable,
            now=self.now,
            hole_refetch_after=REFETCH,
            hole_grace=GRACE,
        )
        self.low_water = self.durable
        self.to_server = []
        self.absorb()

    @precondition(lambda self: self.subscribed())
    @rule(size=st.sampled_from([1, 40, 400]), post=st.booleans())
    def forward(self, size: int, post: bool) -> None:
        """``post`` false: the forwarder wrote the buffer, then died before posting."""
        self.write(self.cloud.allocate(SESSION), self.event(size), post)

    @precondition(lambda self: self.subscribed())
    @rule(size=st.sampled_from([1, 400]), dies=st.booleans())
    def allocate_only(self, size: int, dies: bool) -> None:
        """A forwarder allocates a cursor and then dies, or is slow to write it."""
        cursor = self.cloud.allocate(SESSION)
        if dies:
            self.dead.add(cursor)
        else:
            self.pending[cursor] = (self.now, self.event(size))

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def write_late(self, data: st.DataObject) -> None:
        cursor = data.draw(st.sampled_from(sorted(self.pending)))
        _, event = self.pending.pop(cursor)
        self.write(cursor, event)

    @precondition(lambda self: self.connection is not None and self.connection.inbox)
    @rule(data=st.data(), duplicate=st.booleans())
    def deliver_to_client(self, data: st.DataObject, duplicate: bool) -> None:
        assert self.client is not None and self.connection is not None
        inbox = self.connection.inbox
        text = inbox.pop(data.draw(st.integers(0, len(inbox) - 1)))
        if duplicate:  # a resume replay, a retried post
            inbox.insert(data.draw(st.integers(0, len(inbox))), text)
        self.receive(text)

    @precondition(lambda self: self.to_server)
    @rule(data=st.data(), duplicate=st.booleans())
    def deliver_to_server(self, data: st.DataObject, duplicate: bool) -> None:
        assert self.connection is not None
        text = self.to_server.pop(data.draw(st.integers(0, len(self.to_server) - 1)))
        if duplicate:
            self.to_server.append(text)
        self.cloud.handle(self.connection, text)

    @precondition(lambda self: self.client is not None)
    @rule()
    def commit(self) -> None:
        """The sink commits what it has: events and the low-water mark, then acks."""
        assert self.client is not None
        self.durable = self.client.low_water
        self.client.confirm(self.durable)
        self.absorb()

    @precondition(lambda self: self.client is not None)
    @rule(notify=st.booleans(), crash=st.booleans())
    def drop_connection(self, notify: bool, crash: bool) -> None:
        """The socket breaks (in-flight messages are lost), or the client process is
        killed with its socket still open at the server (a newer connection takes over)."""
        assert self.connection is not None
        if not crash:
            self.cloud.close(self.connection, notify=notify)
        self.connection.inbox.clear()
        self.client = self.connection = None
        self.to_server = []

    @rule(dt=st.sampled_from([0.5, 2.0, REFETCH, 11.0, 25.0]), order=st.randoms())
    def advance(self, dt: float, order: random.Random) -> None:
        self.flush(order)
        self.now += dt
        self.cloud.now = self.now
        for cursor, (at, _) in list(self.pending.items()):
            if self.now - at > LATE:  # its forwarder timed out: never written
                del self.pending[cursor]
                self.dead.add(cursor)
        if self.client is not None:
            self.client.tick(self.now)
            self.absorb()

    # ----------------------------------------------------------------- properties

    @invariant()
    def losses_are_real(self) -> None:
        assert self.lost <= self.trimmed

    def teardown(self) -> None:
        if not self.subscribed():
            return
        # Reconnect, so that Resumed names every cursor allocated: a dead forwarder's
        # cursor above every written one is otherwise unknown to the client (and
        # harmless: the next event makes it a hole).
        if self.client is not None:
            self.drop_connection(notify=True, crash=False)
        self.connect()
        order = random.Random(1)
        for _ in range(int((LATE + GRACE) / REFETCH) + 4):
            self.advance(REFETCH, order)
        self.flush(order)
        unseen = set(self.written) - set(self.delivered) - self.lost
        assert not unseen, f"written, never delivered nor reported lost: {sorted(unseen)}"
        assert self.client is not None
        assert self.client.low_water == self.cloud.counters[SESSION] - 1
        assert self.client.counters.holes_skipped <= len(self.dead)
        # What the run went through, for --hypothesis-show-statistics.
        for label, happened in [
            ("a hole was skipped", self.client.counters.holes_skipped > 0),
            ("a gap was reported", bool(self.lost)),
            ("an event travelled in chunks", self.chunks > 0),
            ("a connection was taken over", any(p.supersede for p in self.cloud.plans)),
            ("an event was delivered twice", self.redelivered > 0),
        ]:
            if happened:
                hypothesis.event(label)


BridgeLink.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
test_bridge_link = BridgeLink.TestCase
