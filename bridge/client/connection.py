"""The bridge client's connection loop: the asyncio layer around the sans-I/O session.

It only moves text between the socket and :class:`bridge.core.session.ClientProtocol`
and between the protocol and the sink; every decision about cursors, duplicates, gaps
and holes is the protocol's. What it does itself:

* connects with a freshly presigned URL each time (a signature is short-lived),
  reconnecting with full-jitter exponential backoff after any drop, and resuming from
  the cursor the sink stored, so nothing is lost across disconnects;
* reconnects on its own before API Gateway's two-hour connection limit (the buffer
  holds what arrives meanwhile, so the switch has no gap);
* reads the socket in a task of its own into a bounded queue, so a slow sink write
  never stalls the socket's keepalive, and writes what arrived in batches (one sink
  transaction per batch, the cursor in it), acknowledging only after the commit;
* stops on a permanent refusal (protocol version, another principal's session, a
  newer connection of the same session) with the protocol's one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from bridge.client.sinks import Sink, Written
from bridge.core import session as protocol_module
from bridge.core.errors import BridgeError
from bridge.core.session import ClientProtocol, Delivered, GapReported

logger = logging.getLogger(__name__)

#: API Gateway closes a connection after two hours; leave before it does.
MAX_CONNECTION_AGE = 2 * 3600 - 300
#: Events written per sink transaction at most, and how long one may wait to fill.
FLUSH_MAX = 1000
FLUSH_INTERVAL = 0.05
#: Messages read ahead of the sink; past it the socket is left unread (back-pressure).
QUEUE_SIZE = 20_000
#: An event over 128 KB arrives in chunks; the gateway's frames are smaller still.
MAX_MESSAGE = 256 * 1024


class Refusal(BridgeError):
    """The bridge refused us for good (reconnecting cannot help): one line."""


class Superseded(BridgeError):
    """A newer connection of this session took it over; this client stops."""


@dataclass
class Backoff:
    """Full-jitter exponential backoff: ``random(0, min(cap, first * 2**n))``."""

    first: float = 0.5
    cap: float = 30.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next(self) -> float:
        delay = self.rng.uniform(0, min(self.cap, self.first * 2**self.attempts))
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class Totals:
    """What a run did, for the summary line and ``--json``."""

    received: int = 0
    written: int = 0
    duplicates: int = 0
    skipped: int = 0
    gaps: int = 0
    gap_ranges: list[tuple[int, int, str]] = field(default_factory=list)
    problems: int = 0
    holes_skipped: int = 0
    wire_duplicates: int = 0  # delivered twice over the wire, dropped by cursor
    connections: int = 0
    cursor: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    def add_written(self, result: Written) -> None:
        self.written += result.written
        self.duplicates += result.duplicates
        self.skipped += result.skipped
        for reason, n in result.skipped_reasons.items():
            self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + n


Sign = Callable[[str], str]  # the plain URL -> the URL to open (presigned, or as is)
OnEvents = Callable[[Sequence[Delivered]], None]
Transform = Callable[[Sequence[Delivered]], Awaitable[list[dict[str, Any]]]]


@dataclass
class ClientOptions:
    url: str
    session: str
    pattern: dict[str, Any] | None = None
    replay: str | None = None
    max_age: float = MAX_CONNECTION_AGE
    flush_max: int = FLUSH_MAX
    flush_interval: float = FLUSH_INTERVAL
    open_timeout: float = 20.0


class BridgeClient:
    """Run with ``await client.run(stop)``; ``stop`` set → flush, ack, return."""

    def __init__(
        self,
        options: ClientOptions,
        sink: Sink,
        sign: Sign,
        *,
        on_events: OnEvents | None = None,
        transform: Transform | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.sink = sink
        self.sign = sign
        self.on_events = on_events
        self.transform = transform
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.totals = Totals()
        self.ready = asyncio.Event()  # set once a connection is subscribed and resumed
        self.last_event_at: float | None = None
        self._base = Totals()  # what earlier connections counted
        self._previous: ClientProtocol | None = None  # the last connection's protocol

    async def run(self, stop: asyncio.Event) -> Totals:
        self.totals.cursor = await self.sink.open()
        try:
            while not stop.is_set():
                try:
                    await self._connection(stop)
                except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as error:
                    self._check_refused(error)
                    self.ready.clear()
                    delay = self.backoff.next()
                    logger.warning(
                        "bridge connection lost (%s); again in %.1f s", _why(error), delay
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
        finally:
            await self.sink.close()
        return self.totals

    def _check_refused(self, error: BaseException) -> None:
        """A refused or unreachable first connection is the user's to fix: say so."""
        if self.totals.connections == 0 and isinstance(error, OSError | TimeoutError):
            raise BridgeError(
                f"cannot reach the bridge at {self.options.url} ({_why(error)}): is it "
                "deployed, or `bridge offline` running?"
            ) from None
        if isinstance(error, InvalidStatus) and self.totals.connections == 0:
            status = error.response.status_code
            if status in (401, 403):
                raise Refusal(
                    f"refused ({status}): the principal needs execute-api:Invoke on "
                    f"…/{_stage_of(self.options.url)}/$connect of the bridge API, and the "
                    "source IP must pass its allowlist (if one is set)"
                ) from None
            raise Refusal(f"the bridge refused the connection: HTTP {status}") from None

    async def _connection(self, stop: asyncio.Event) -> None:
        url = self.sign(self.options.url)
        async with websockets.connect(
            url,
            open_timeout=self.options.open_timeout,
            ping_interval=None,  # the protocol pings (API Gateway's idle timeout is 10 min)
            compression=None,  # API Gateway does not negotiate permessage-deflate
            max_size=MAX_MESSAGE,
            proxy=None if _loopback(url) else True,
        ) as socket:
            self.totals.connections += 1
            await self._serve(socket, stop)

    async def _serve(self, socket: ClientConnection, stop: asyncio.Event) -> None:
        now = self.clock
        started = now()
        self._base = Totals(
            received=self.totals.received,
            holes_skipped=self.totals.holes_skipped,
            wire_duplicates=self.totals.wire_duplicates,
            problems=self.totals.problems,
        )
        protocol = ClientProtocol(
            session=self.options.session,
            pattern=self.options.pattern,
            replay=self.options.replay,
            resume_after=self.totals.cursor,
            now=started,
            previous=self._previous,  # a hole keeps its age across reconnects
        )
        self._previous = protocol
        inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue(QUEUE_SIZE)
        reader = asyncio.create_task(_read(socket, inbox))
        pending: list[Delivered] = []
        flush_at: float | None = None
        try:
            await _send(socket, protocol)
            while True:
                deadline = min(
                    protocol.next_timer() or float("inf"),
                    flush_at if flush_at is not None else float("inf"),
                    started + self.options.max_age,
                )
                message = await _next(inbox, stop, max(0.0, deadline - now()))
                if message is None and reader.done():
                    reader.result()  # raises ConnectionClosed: reconnect
                    raise ConnectionClosed(None, None)
                if message is not None:
                    protocol.receive_message(message, now())
                    while not inbox.empty() and len(pending) < self.options.flush_max:
                        more = inbox.get_nowait()
                        if more is None:
                            break
                        protocol.receive_message(more, now())
                        self._take(protocol, pending)
                protocol.tick(now())
                self._take(protocol, pending)
                if pending and flush_at is None:
                    flush_at = now() + self.options.flush_interval
                due = flush_at is not None and now() >= flush_at
                if pending and (due or len(pending) >= self.options.flush_max or stop.is_set()):
                    await self._flush(protocol, pending)
                    pending, flush_at = [], None
                elif not pending and protocol.low_water > self.totals.cursor:
                    await self._flush(protocol, [])  # holes skipped or a gap: move the cursor
                aged = now() - started >= self.options.max_age
                if stop.is_set() or aged:
                    protocol.flush_ack()  # the bridge trims its buffer without waiting
                await _send(socket, protocol)
                if stop.is_set():
                    return
                if aged:
                    logger.info("reconnecting before API Gateway's connection age limit")
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    def _take(self, protocol: ClientProtocol, pending: list[Delivered]) -> None:
        """Act on what the protocol reported; queue deliveries for the sink."""
        for event in protocol.events_received():
            if isinstance(event, Delivered):
                pending.append(event)
                self.last_event_at = self.clock()
            elif isinstance(event, GapReported):
                self.totals.gaps += event.last - event.first + 1
                self.totals.gap_ranges.append((event.first, event.last, event.reason))
                logger.warning(
                    "gap: cursors %d..%d were dropped by the bridge (%s)",
                    event.first,
                    event.last,
                    event.reason,
                )
            elif isinstance(event, protocol_module.Ready):
                self.backoff.reset()
                self.ready.set()
            elif isinstance(event, protocol_module.ProtocolProblem):
                logger.warning("ignored a bad message: %s (%r)", event.reason, event.text_head)
            elif isinstance(event, protocol_module.ServerError):
                logger.warning("the bridge answered %s: %s", event.code, event.message)
            elif isinstance(event, protocol_module.Refused):
                if event.permanent:
                    raise Refusal(event.message)
                logger.warning(
                    "the bridge refused (%s): %s; reconnecting", event.code, event.message
                )
                raise ConnectionClosed(None, None)
            elif isinstance(event, protocol_module.Closing):
                if "newer connection" in event.reason or "superseded" in event.reason:
                    raise Superseded(
                        f"session {self.options.session!r} was taken over by a newer "
                        f"connection ({event.reason}); this client stops"
                    )
                logger.info("the bridge closes this connection: %s", event.reason)
            elif isinstance(event, protocol_module.SessionReset):
                logger.warning(
                    "session %r was created afresh on the bridge (it had expired or was "
                    "dropped); counting starts again",
                    self.options.session,
                )
                self.totals.cursor = event.acked
        counters, base = protocol.counters, self._base
        self.totals.received = base.received + counters.received
        self.totals.holes_skipped = base.holes_skipped + counters.holes_skipped
        self.totals.wire_duplicates = base.wire_duplicates + counters.duplicates
        self.totals.problems = base.problems + counters.problems

    async def _flush(self, protocol: ClientProtocol, pending: list[Delivered]) -> None:
        """Write a batch durably with the cursor it completes, then acknowledge."""
        through = protocol.low_water
        if self.on_events is not None and pending:
            self.on_events(pending)
        events: Sequence[dict[str, Any]]
        texts: list[str | None] | None = None  # a transform may change the events
        if self.transform is not None:
            events = await self.transform(pending)
        else:
            events = [delivered.event for delivered in pending]
            texts = [delivered.text for delivered in pending]
        result = await self.sink.write(events, through, texts)
        self.totals.add_written(result)
        self.totals.cursor = max(self.totals.cursor, through)
        protocol.confirm(through)


async def _read(socket: ClientConnection, inbox: asyncio.Queue[str | bytes | None]) -> None:
    try:
        async for message in socket:
            await inbox.put(message)
    finally:
        with contextlib.suppress(asyncio.QueueFull):
            inbox.put_nowait(None)


async def _next(
    inbox: asyncio.Queue[str | bytes | None], stop: asyncio.Event, timeout: float
) -> str | bytes | None:
    """The next message, or None at the timeout, at stop, or when the reader ended."""
    if not inbox.empty():
        return inbox.get_nowait()
    if stop.is_set():
        return None
    getter = asyncio.ensure_future(inbox.get())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {getter, stopper}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
    finally:
        stopper.cancel()
        if not getter.done():
            getter.cancel()
    if getter in done:
        return getter.result()
    return None


async def _send(socket: ClientConnection, protocol: ClientProtocol) -> None:
    for text in protocol.messages_to_send():
        await socket.send(text)


def _why(error: BaseException) -> str:
    if isinstance(error, InvalidStatus):
        return f"HTTP {error.response.status_code}"
    if isinstance(error, ConnectionClosed):
        if error.rcvd is not None:
            return f"closed {error.rcvd.code} {error.rcvd.reason}".strip()
        return "closed"
    return str(error) or type(error).__name__


def _stage_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path.strip("/").split("/")[0] or "STAGE"


def _loopback(url: str) -> bool:
    from bridge.aws import is_loopback

    return is_loopback(url.replace("ws://", "http://").replace("wss://", "https://"))
