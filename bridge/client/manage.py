"""``bridge sessions list|drop``: the caller's own sessions, through the bridge API.

A management connection says ``hello`` without a session, asks, prints the answer and
closes; the bridge answers only for the principal that signed the connection, so a
user needs no access to the bridge table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import websockets

from bridge.client.connection import MAX_MESSAGE, Refusal, _loopback
from bridge.core import session as protocol_module
from bridge.core import wire
from bridge.core.errors import BridgeError
from bridge.core.session import ClientProtocol

ANSWER_TIMEOUT = 30.0


def session_rows(items: tuple[wire.SessionInfo, ...], now: float) -> list[dict[str, Any]]:
    return [
        {
            "name": info.name,
            "connected": info.connected,
            "pattern": info.pattern,
            "replay": info.replay,
            "acked": info.acked,
            "next_cursor": info.next_cursor,
            "buffered": info.buffered,
            "expires_in": max(0, round(info.expires - now)),
        }
        for info in items
    ]


async def _ask(url: str, request: Callable[[ClientProtocol], None]) -> protocol_module.ClientEvent:
    clock = time.monotonic
    protocol = ClientProtocol(None, None, None, 0, now=clock())
    async with websockets.connect(
        url,
        open_timeout=20,
        ping_interval=None,
        compression=None,
        max_size=MAX_MESSAGE,
        proxy=None if _loopback(url) else True,
    ) as socket:
        request(protocol)
        deadline = clock() + ANSWER_TIMEOUT
        while True:
            for text in protocol.messages_to_send():
                await socket.send(text)
            remaining = deadline - clock()
            if remaining <= 0:
                raise BridgeError("the bridge did not answer within 30 s")
            message = await asyncio.wait_for(socket.recv(), remaining)
            protocol.receive_message(message, clock())
            for event in protocol.events_received():
                if isinstance(event, protocol_module.Refused):
                    raise Refusal(event.message)
                if isinstance(event, protocol_module.ServerError):
                    raise BridgeError(f"the bridge refused: {event.message}")
                if isinstance(
                    event, protocol_module.SessionsListed | protocol_module.SessionDropped
                ):
                    return event


def list_sessions(url: str) -> tuple[list[dict[str, Any]], int]:
    event = asyncio.run(_ask(url, lambda p: p.list_sessions()))
    assert isinstance(event, protocol_module.SessionsListed)
    return session_rows(event.items, time.time()), event.omitted


def drop_session(url: str, name: str) -> str:
    event = asyncio.run(_ask(url, lambda p: p.drop_session(name)))
    assert isinstance(event, protocol_module.SessionDropped)
    return event.name
