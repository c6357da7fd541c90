"""What the four bridge functions share: settings, the table, posting, and carrying
out the plans :mod:`bridge.core.server_session` computes.

The functions are stateless; a session is one item of the bridge table (its
:class:`~bridge.core.session_record.SessionRecord`), saved with a conditional put on
its version. A put that loses to a concurrent one reloads and handles the message
again, which is safe because the plan is a pure function of what was read.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.core import wire
from bridge.core.buffer import BufferLimits
from bridge.core.session_record import SessionRecord
from bridge.lambdas import _env
from bridge.lambdas._bridge_post import Posted, Poster
from bridge.lambdas._bridge_table import BridgeTable, Conflict, session_key

#: Saves that lose a race are retried this often before the message is answered
#: with an internal error (the client's timers then ask again).
SAVE_ATTEMPTS = 6
#: A connection item outlives API Gateway's two-hour connection limit a little.
CONNECTION_TTL = 2 * 3600 + 600


@dataclass(frozen=True)
class Settings:
    table: str
    limits: BufferLimits
    session_ttl: float
    hole_grace: float
    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_environment(cls) -> Settings:
        networks = tuple(
            ipaddress.ip_network(text.strip(), strict=False)
            for text in _env.setting("BRIDGE_ALLOWED_IPS", "").split(",")
            if text.strip()
        )
        return cls(
            table=_env.required_setting("BRIDGE_TABLE"),
            limits=BufferLimits(
                max_events=int(_env.setting("BRIDGE_BUFFER_MAX_EVENTS", "10000")),
                max_bytes=int(_env.setting("BRIDGE_BUFFER_MAX_BYTES", str(50 * 1024 * 1024))),
            ),
            session_ttl=float(_env.setting("BRIDGE_SESSION_TTL", "86400")),
            hole_grace=float(_env.setting("BRIDGE_HOLE_GRACE", "120")),
            allowed=networks,
        )

    def allows(self, source_ip: str | None) -> bool:
        """The optional allowlist, a second gate after IAM (the seed's ``allowed_ip``)."""
        if not self.allowed:
            return True
        try:
            address = ipaddress.ip_address(source_ip or "")
        except ValueError:
            return False
        return any(address in network for network in self.allowed)


def sessions_cache_seconds() -> float:
    """How long a forwarder trusts its copy of the sessions (``BRIDGE_SESSIONS_CACHE``)."""
    return max(0.0, float(_env.setting("BRIDGE_SESSIONS_CACHE", "1.0")))


def settings() -> Settings:
    return Settings.from_environment()


def table(config: Settings) -> BridgeTable:
    return BridgeTable(_env.client("dynamodb"), config.table)


_poster = Poster()


def poster() -> Poster:
    return _poster


def context_of(event: Mapping[str, Any]) -> Mapping[str, Any]:
    context = event.get("requestContext")
    return context if isinstance(context, Mapping) else {}


def connection_id(event: Mapping[str, Any]) -> str:
    value = context_of(event).get("connectionId")
    if not isinstance(value, str) or not value:
        raise ValueError("the event has no requestContext.connectionId")
    return value


def principal(event: Mapping[str, Any]) -> str | None:
    """The caller ARN API Gateway reports for an IAM-authorized ``$connect``: it names
    the principal (a role session for SSO), not the access key, which changes at every
    credentials refresh."""
    identity = context_of(event).get("identity")
    if isinstance(identity, Mapping):
        arn = identity.get("userArn")
        if isinstance(arn, str) and arn:
            return arn
    return None


def source_ip(event: Mapping[str, Any]) -> str | None:
    identity = context_of(event).get("identity")
    if isinstance(identity, Mapping) and isinstance(identity.get("sourceIp"), str):
        return str(identity["sourceIp"])
    return None


def body_of(event: Mapping[str, Any]) -> str | bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded") and isinstance(body, str):
        try:
            return base64.b64decode(body)
        except ValueError:
            return b"\xff"  # not base64: let the codec refuse it as any bad message
    return body if isinstance(body, str | bytes) else ""


def load_record(
    bridge: BridgeTable, owner: str, name: str, now: float
) -> tuple[SessionRecord | None, int]:
    """The session's record (None if absent or broken-and-expired) and its next cursor.

    The counter is read before any buffer read that follows, so a cursor at or below
    ``next_cursor - 1`` that is not in the buffer is a true hole.
    """
    item = bridge.session(owner, name, now=0.0)  # expired ones too: the transition decides
    record = SessionRecord.from_item(item) if item is not None else None
    allocated, _ = bridge.allocated(session_key(owner, name))
    return record, allocated + 1


def ttl_of(now: float, config: Settings) -> int:
    return math.ceil(now + config.session_ttl)


def save(bridge: BridgeTable, record: SessionRecord, expected: int | None, now: float) -> None:
    """A conditional put of the record on its version (absent when ``expected`` None)."""
    bridge.save_session(record.to_item(), expected, now)


def post_all(connection: str, texts: Iterable[str]) -> Posted:
    return poster().post_all(connection, texts)


def deadline_of(context: Any, margin: float = 3.0) -> float:
    """When this invocation should stop starting long work (the client asks again)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        return time.monotonic() + max(0.5, remaining() / 1000 - margin)
    return time.monotonic() + 25.0


def buffered_events(
    bridge: BridgeTable, owner: str, name: str, after: int, now: float
) -> Iterable[tuple[int, str, wire.JSONObject]]:
    """The buffer above ``after`` as (cursor, id, event), in cursor order, read lazily."""
    for item in bridge.buffer_after(session_key(owner, name), after, now):
        try:
            event = wire.parse_json(str(item["event"]))
        except (KeyError, wire.WireError):
            continue  # never written by us: skip rather than break the resume
        if isinstance(event, dict):
            yield int(item["cursor"]), str(item.get("id", "")), event


__all__ = [
    "CONNECTION_TTL",
    "Conflict",
    "SAVE_ATTEMPTS",
    "Settings",
    "body_of",
    "buffered_events",
    "connection_id",
    "deadline_of",
    "load_record",
    "post_all",
    "poster",
    "principal",
    "save",
    "session_key",
    "sessions_cache_seconds",
    "settings",
    "source_ip",
    "table",
    "ttl_of",
]
