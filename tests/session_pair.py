"""A small reference bridge server for protocol tests, and a client joined to it.

:class:`FakeCloud` is what the bridge Lambdas will be, minus AWS: it carries out the
:class:`~bridge.core.session.Plan` of every client message against dicts (records,
cursor counters, buffers ``cursor -> (id, event)``) and plays the forwarder in two
steps — :meth:`FakeCloud.allocate` a cursor, :meth:`FakeCloud.write` it to the buffer
and post it — so that tests can make cursors visible out of order or never. A buffer
cap drops the oldest entries and records a gap, as the forwarder must.

Nothing here decides protocol behaviour: every decision is the core's (ServerProtocol,
transitions, resume_messages, event_messages). Posting to a closed connection is
dropped, like a 410 from the management API.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from bridge.core import wire
from bridge.core.chunks import event_messages
from bridge.core.session import (
    DEFAULT_TTL,
    ClientEvent,
    ClientProtocol,
    Delivered,
    Plan,
    ServerProtocol,
    SessionRecord,
    add_gap,
    disconnect,
    drop_plan,
    requested_session,
    resume_messages,
    sessions_reply,
    wants,
)

OWNER = "arn:aws:sts::123456789012:assumed-role/dev/alice"


@dataclass
class Connection:
    id: str
    owner: str
    session: str | None = None
    inbox: list[str] = field(default_factory=list)  # posted, not yet given to the client
    open: bool = True


class FakeCloud:
    def __init__(
        self,
        *,
        now: float = 0.0,
        cap: int | None = None,
        ttl: float = DEFAULT_TTL,
        limit: int = wire.DEFAULT_LIMIT,
        server_version: int = wire.PROTOCOL_VERSION,
    ) -> None:
        self.now = now
        self.cap = cap
        self.ttl = ttl
        self.limit = limit
        self.server_version = server_version
        self.records: dict[str, SessionRecord] = {}
        self.counters: dict[str, int] = {}  # session -> next cursor
        self.buffers: dict[str, dict[int, tuple[str, dict[str, Any]]]] = {}
        self.connections: dict[str, Connection] = {}
        self.plans: list[Plan] = []
        self._ids = itertools.count(1)

    # ----------------------------------------------------------------- gateway

    def open(self, owner: str = OWNER) -> Connection:
        connection = Connection(f"conn-{next(self._ids)}", owner)
        self.connections[connection.id] = connection
        return connection

    def close(self, connection: Connection, *, notify: bool = True) -> None:
        """The socket went away; ``notify``: $disconnect ran (it is best effort)."""
        connection.open = False
        connection.inbox.clear()
        record = self.records.get(connection.session or "")
        if notify and record is not None:
            changed = disconnect(record, connection.id)
            if changed is not None:
                self.records[record.name] = changed

    def post(self, connection_id: str, text: str) -> None:
        assert len(text.encode()) <= self.limit
        connection = self.connections.get(connection_id)
        if connection is not None and connection.open:  # else: 410, dropped
            connection.inbox.append(text)

    # ----------------------------------------------------------------- message route

    def handle(self, connection: Connection, text: str) -> Plan:
        """One message Lambda invocation."""
        name = requested_session(text) or connection.session
        record = self.records.get(name) if name else None
        protocol = ServerProtocol(
            record,
            connection.owner,
            connection.id,
            self.now,
            self.server_version,
            next_cursor=self.counters.get(name or "", 1),
            ttl=self.ttl,
        )
        plan = protocol.receive_message(text)
        self.plans.append(plan)
        self.carry_out(connection, name, plan)
        return plan

    def carry_out(self, connection: Connection, name: str | None, plan: Plan) -> None:
        if plan.save is not None:
            stored = self.records.get(plan.save.name)
            assert (stored.version if stored else None) == plan.expected_version
            self.records[plan.save.name] = plan.save
            if plan.save.connection == connection.id:
                connection.session = plan.save.name
        if plan.fresh and plan.save is not None:
            self.counters[plan.save.name] = 1
            self.buffers[plan.save.name] = {}
        if plan.delete is not None:
            self.records.pop(plan.delete.name, None)
            self.counters.pop(plan.delete.name, None)
            self.buffers.pop(plan.delete.name, None)
        if plan.trim_through is not None and name is not None:
            buffer = self.buffers.get(name, {})
            for cursor in [c for c in buffer if c <= plan.trim_through]:
                del buffer[cursor]
        if plan.supersede is not None:
            assert plan.notice is not None
            self.post(plan.supersede, plan.notice)
            self.connections[plan.supersede].open = False
        for text in plan.send:
            self.post(connection.id, text)
        if plan.resume_after is not None and name is not None:
            assert plan.resume_through is not None
            buffer = self.buffers.get(name, {})
            entries = [(cursor, id, event) for cursor, (id, event) in buffer.items()]
            texts = resume_messages(
                self.records[name], plan.resume_after, plan.resume_through, entries, self.limit
            )
            for text in texts:
                self.post(connection.id, text)
        if plan.list_sessions:
            entries = [
                (record, self.counters.get(n, 1), len(self.buffers.get(n, {})))
                for n, record in self.records.items()
            ]
            self.post(connection.id, sessions_reply(entries, connection.owner, self.now))
        if plan.drop is not None:
            record = self.records.get(plan.drop)
            self.carry_out(
                connection, plan.drop, drop_plan(record, connection.owner, plan.drop, self.now)
            )
        if plan.close:
            connection.open = False

    # ----------------------------------------------------------------- forwarder

    def allocate(self, name: str) -> int:
        cursor = self.counters.setdefault(name, 1)
        self.counters[name] = cursor + 1
        return cursor

    def write(
        self, name: str, cursor: int, id: str, event: dict[str, Any], *, post: bool = True
    ) -> None:
        """Append to the buffer (trimming it to the cap), then post unless ``post`` is
        false: the forwarder died, or was throttled, after writing."""
        buffer = self.buffers.setdefault(name, {})
        buffer[cursor] = (id, event)
        record = self.records.get(name)
        if self.cap is not None:
            while len(buffer) > self.cap:
                oldest = min(buffer)
                del buffer[oldest]
                if record is not None:
                    record = add_gap(record, oldest, oldest, "buffer cap")
                    self.records[name] = record
        if post and record is not None and record.connection is not None and cursor in buffer:
            for message in event_messages(cursor, id, event, self.limit):
                self.post(record.connection, wire.encode(message, self.limit))

    def forward(self, event: dict[str, Any]) -> dict[str, int]:
        """One forward invocation: the cursor the event got in each session wanting it."""
        cursors = {}
        for name, record in self.records.items():
            if wants(record, event, self.now):
                cursors[name] = cursor = self.allocate(name)
                self.write(name, cursor, event["id"], event)
        return cursors


def bus_event(id: str, **detail: Any) -> dict[str, Any]:
    return {
        "version": "0",
        "id": id,
        "detail-type": "stream changes",
        "source": "dynamodb-log",
        "account": "123456789012",
        "time": "2024-01-02T03:04:05Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"log": "users", "type": "signup", **detail},
    }


class Pair:
    """A client protocol and its connection to a :class:`FakeCloud`, pumped in order."""

    def __init__(
        self,
        cloud: FakeCloud,
        session: str | None = "alice@laptop",
        *,
        owner: str = OWNER,
        pattern: dict[str, Any] | None = None,
        replay: str | None = None,
        resume_after: int = 0,
        **options: Any,
    ) -> None:
        self.cloud = cloud
        self.connection = cloud.open(owner)
        # Acks go out at once unless a test asks for coalescing: these tests follow them.
        options.setdefault("ack_interval", 0.0)
        self.client = ClientProtocol(
            session, pattern, replay, resume_after, now=cloud.now, **options
        )
        self.events: list[ClientEvent] = []

    def pump(self) -> list[ClientEvent]:
        """Move messages both ways until neither side has any; the events received."""
        new: list[ClientEvent] = []
        while True:
            outgoing = self.client.messages_to_send()
            incoming, self.connection.inbox = self.connection.inbox, []
            if not outgoing and not incoming:
                break
            for text in outgoing:
                if self.connection.open:
                    self.cloud.handle(self.connection, text)
            for text in incoming:
                self.client.receive_message(text, self.cloud.now)
            new.extend(self.client.events_received())
        self.events.extend(new)
        return new

    def tick(self, now: float) -> list[ClientEvent]:
        self.cloud.now = now
        self.client.tick(now)
        return self.pump()

    def delivered(self) -> list[int]:
        return [e.cursor for e in self.events if isinstance(e, Delivered)]
