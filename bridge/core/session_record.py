"""A bridge session on the server side, as a value: :class:`SessionRecord` and the pure
transitions between its states.

The bridge Lambdas are stateless; a session lives in one table item. As in h11's
``_state.py``, the state is a plain value and every change is a pure function of it:
the record round-trips through :meth:`~SessionRecord.to_item` /
:meth:`~SessionRecord.from_item`, each transition returns a *new* record with
``version + 1``, and the I/O layer saves it with a conditional put on the old version.
So correctness never rests on API Gateway running one connection's messages in order:
of two Lambdas racing on one session, one put fails, and that one reloads and runs
again (transitions are pure, so a rerun is safe). A transition that may not happen
raises a :class:`Refusal` (a ``LocalProtocolError``) whose ``code`` is the ``Error``
code to answer with; :mod:`bridge.core.server_session` turns it into that answer.

What the record does not hold, on purpose: the cursor counter and the event buffer.
Forwarders allocate cursors concurrently (an atomic add) and append to the buffer;
a whole-record put must never overwrite them, so they live beside the record — other
attributes written only by update expressions, or other items — and are handed in
where needed (``next_cursor``). Keys (pk/sk) are the I/O layer's too.

Decisions where the spec was silent:

* ``next_cursor`` is the cursor the next event gets; cursors start at 1, so an ack
  may reach ``next_cursor - 1`` at most (the spec's "may not exceed next_cursor").
* A missing or expired record gives a fresh session (the I/O layer resets its counter
  to 1 and deletes its old buffer: ``Plan.fresh``). A client resuming from a cursor of
  the old incarnation sees ``next_cursor - 1`` below its cursor and reports the reset;
  nothing is silently mixed. An expired session of another owner may be taken by a
  new one: the name is free again.
* ``subscribed`` is part of the record: a session created by ``hello`` receives
  nothing until its first ``subscribe`` (``pattern None`` means every event, which
  must not be the default of a half-open session).
* A live session (``replay None``) gets only events without ``replay-name``; a replay
  session only those of its replay.
* Gaps merge when adjacent; past :data:`MAX_GAPS` the two oldest merge into one range,
  which may then also name cursors that were not lost: over-reporting, never silence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, ClassVar, Final, TypeAlias

from bridge.core import wire
from bridge.core.patterns import PatternError, matches, validate_pattern

__all__ = [
    "DEFAULT_TTL",
    "MAX_GAPS",
    "BadRequest",
    "Forbidden",
    "GapRange",
    "NoSession",
    "Refusal",
    "SessionRecord",
    "ack",
    "add_gap",
    "check_subscription",
    "connect",
    "disconnect",
    "drop",
    "expired",
    "subscribe",
    "wants",
]

DEFAULT_TTL: Final = 24 * 3600.0  # seconds a session outlives its last activity
MAX_GAPS: Final = 256
_REPLAY_NAME = re.compile(r"^[.\-_A-Za-z0-9]{1,64}$")  # EventBridge's rule for replay names

GapRange: TypeAlias = tuple[int, int, str]


class Refusal(wire.LocalProtocolError):
    """A transition that may not happen; ``code`` is the ``Error`` code to answer with."""

    code: ClassVar[str] = "bad-message"


class Forbidden(Refusal):
    code = "forbidden"


class NoSession(Refusal):
    code = "no-session"


class BadRequest(Refusal):
    code = "bad-message"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    owner: str  # the caller ARN API Gateway reported at $connect (not the access key)
    name: str
    connection: str | None
    pattern: wire.JSONObject | None
    replay: str | None
    acked: int
    gaps: tuple[GapRange, ...]  # reported losses the client has not acknowledged past
    version: int
    created: float
    expires: float
    subscribed: bool = False

    def to_item(self) -> dict[str, Any]:
        """Plain JSON-able fields; the pattern as JSON text (no DynamoDB map quirks:
        floats, empty maps). ``ttl`` is ``expires`` in whole seconds, for DynamoDB TTL."""
        return {
            "owner": self.owner,
            "name": self.name,
            "connection": self.connection,
            "pattern": None if self.pattern is None else wire.json_text(self.pattern),
            "replay": self.replay,
            "subscribed": self.subscribed,
            "acked": self.acked,
            "gaps": [[first, last, reason] for first, last, reason in self.gaps],
            "version": self.version,
            "created": self.created,
            "expires": self.expires,
            "ttl": math.ceil(self.expires),
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> SessionRecord:
        """The record of an item as stored (numbers may come back as ``Decimal``); other
        attributes (keys, counter) are ignored. Raises LocalProtocolError if broken."""
        try:
            pattern = item.get("pattern")
            return cls(
                owner=_text(item["owner"]),
                name=_text(item["name"]),
                connection=None if item.get("connection") is None else _text(item["connection"]),
                pattern=None if pattern is None else _object(wire.parse_json(_text(pattern))),
                replay=None if item.get("replay") is None else _text(item["replay"]),
                subscribed=bool(item.get("subscribed", False)),
                acked=_whole(item["acked"]),
                gaps=tuple(
                    (_whole(first), _whole(last), _text(reason))
                    for first, last, reason in item.get("gaps") or ()
                ),
                version=_whole(item["version"]),
                created=float(item["created"]),
                expires=float(item["expires"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise wire.LocalProtocolError(f"session item is broken: {exc!r:.200}") from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if value != int(value):
        raise ValueError(f"expected a whole number, got {value}")
    return int(value)


def _object(value: Any) -> wire.JSONObject:
    if not isinstance(value, dict):
        raise TypeError("pattern is not a JSON object")
    return value


# --------------------------------------------------------------------------- transitions


def expired(record: SessionRecord, now: float) -> bool:
    """DynamoDB deletes TTL items up to two days late, and they still read: filter."""
    return now >= record.expires


def check_subscription(pattern: wire.JSONObject | None, replay: str | None) -> None:
    """Refuse a pattern EventBridge would refuse, or an impossible replay name."""
    if pattern is not None:
        try:
            validate_pattern(pattern)
        except PatternError as exc:
            raise BadRequest(str(exc)) from None
    if replay is not None and not _REPLAY_NAME.match(replay):
        raise BadRequest(f"replay name {replay[:80]!r}: use 1-64 letters, digits, '.', '-', '_'")


def connect(
    record: SessionRecord | None,
    owner: str,
    name: str,
    connection: str,
    now: float,
    ttl: float,
) -> tuple[SessionRecord, str | None]:
    """Attach ``connection`` to session ``name``: the new record, and the connection it
    took over from (to be sent ``Closing`` and deleted), if any.

    A missing or expired record gives a fresh session; another owner's live session is
    :class:`Forbidden`. A newer connection always wins: a client restarted after a
    crash gets its session back without waiting for the old socket to time out.
    """
    if record is not None and record.name != name:
        raise wire.LocalProtocolError(f"record of {record.name!r} given for session {name!r}")
    if record is None or expired(record, now):
        fresh = SessionRecord(
            owner=owner,
            name=name,
            connection=connection,
            pattern=None,
            replay=None,
            acked=0,
            gaps=(),
            version=1 if record is None else record.version + 1,
            created=now,
            expires=now + ttl,
        )
        return fresh, None
    if record.owner != owner:
        raise Forbidden(f"session {name!r} belongs to another principal")
    superseded = record.connection if record.connection not in (None, connection) else None
    return _next(record, now, ttl, connection=connection), superseded


def subscribe(
    record: SessionRecord,
    pattern: wire.JSONObject | None,
    replay: str | None,
    now: float,
    ttl: float,
) -> SessionRecord:
    check_subscription(pattern, replay)
    return _next(record, now, ttl, pattern=pattern, replay=replay, subscribed=True)


def ack(
    record: SessionRecord, through: int, now: float, ttl: float, *, next_cursor: int
) -> SessionRecord:
    """Acknowledge up to ``through``; never backwards (acks may arrive reordered), and
    never past the highest allocated cursor. Gaps wholly acknowledged are forgotten."""
    if through >= next_cursor:
        raise BadRequest(
            f"ack through {through}: the highest cursor allocated is {next_cursor - 1}"
        )
    acked = max(record.acked, through)
    gaps = tuple(gap for gap in record.gaps if gap[1] > acked)
    return _next(record, now, ttl, acked=acked, gaps=gaps)


def disconnect(record: SessionRecord, connection: str) -> SessionRecord | None:
    """Detach ``connection``; ``None`` (nothing to save) if a newer one holds the session."""
    if record.connection != connection:
        return None
    return replace(record, connection=None, version=record.version + 1)


def add_gap(record: SessionRecord, first: int, last: int, reason: str) -> SessionRecord:
    """The forwarder dropped ``first..last`` from the buffer (cap): remember to say so."""
    wire.Gap(first, last, reason)  # the same bounds as on the wire
    gaps = list(record.gaps)
    if gaps and gaps[-1][1] + 1 == first and gaps[-1][2] == reason:
        gaps[-1] = (gaps[-1][0], last, reason)
    else:
        gaps.append((first, last, reason))
        gaps.sort()
    while len(gaps) > MAX_GAPS:
        (a, _, why), (_, b, _) = gaps[0], gaps[1]
        gaps[:2] = [(a, b, why)]
    return replace(record, gaps=tuple(gaps), version=record.version + 1)


def drop(record: SessionRecord | None, owner: str, now: float) -> str | None:
    """May ``owner`` drop this session? Returns its open connection (to be closed)."""
    if record is None or expired(record, now):
        raise NoSession("no such session")
    if record.owner != owner:
        raise Forbidden(f"session {record.name!r} belongs to another principal")
    return record.connection


def wants(record: SessionRecord, event: Mapping[str, Any], now: float) -> bool:
    """Whether the forwarder appends ``event`` to this session's buffer."""
    if not record.subscribed or expired(record, now):
        return False
    if event.get("replay-name") != record.replay:
        return False
    return record.pattern is None or matches(record.pattern, dict(event))


def _next(record: SessionRecord, now: float, ttl: float, **changes: Any) -> SessionRecord:
    return replace(record, version=record.version + 1, expires=now + ttl, **changes)
