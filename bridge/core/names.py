"""Names of the resources of a stage, in AWS and offline alike, and AWS's checks on them.

One place for them: the CDK stack, the local cloud (functions, rules, ARNs) and the
CLI all name things through here, and the constants below are defined here and
nowhere else. Pure (no I/O, imports nothing of the project but its errors), so
:mod:`bridge.deploy` can validate a stage before paying for a jsii start-up and
:mod:`bridge.core.events` can import the bus name without an import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.core.errors import ValidationError

__all__ = [
    "ARCHIVE_NAME",
    "BUS_NAME",
    "DEFAULT_REGION",
    "LOCAL_ACCOUNT",
    "PUBLISHER",
    "PUBLISHER_HANDLER",
    "EventsArn",
    "archive_arn",
    "bus_arn",
    "check_stage",
    "core_table_name",
    "function_arn",
    "function_name",
    "log_group_name",
    "log_table_name",
    "parse_events_arn",
    "publisher_failures_queue_name",
    "region_from",
    "replay_arn",
    "rule_arn",
    "rule_name",
    "stack_name",
]

#: The event bus every log event goes to (the seed's handlers rely on the name).
BUS_NAME = "dynamodb-log"
#: The archive of that bus.
ARCHIVE_NAME = "dynamodb-logs-archive"
# Where nothing else says: the account id local endpoints (and moto) report, and
# the region of boto3's own fallback.
LOCAL_ACCOUNT = "000000000000"
DEFAULT_REGION = "us-east-1"

PUBLISHER = "publisher"
PUBLISHER_HANDLER = "bridge.lambdas.publisher.handler"


def region_from(environ: Mapping[str, str]) -> str:
    """The region when none is given: Lambda's ``AWS_REGION``, the SDKs'
    ``AWS_DEFAULT_REGION``, then us-east-1 — the same everywhere, CLI and functions."""
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


# A stack name is letters, digits and hyphens; the stage is also part of table,
# function and queue names, so it keeps to the characters all of them accept.
_STAGE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?")
_MAX_FUNCTION_NAME = 64  # Lambda's limit


def check_stage(stage: str) -> str:
    """Refuse a stage that would make an invalid stack, table or function name."""
    if not _STAGE.fullmatch(stage):  # not match(…$): "$" also matches before a final \n
        raise ValidationError(
            f"stage {stage!r}: use 1-32 letters, digits and hyphens (not at either end)"
        )
    return stage


def stack_name(stage: str) -> str:
    return f"dynamodb-logs-{stage}"


def log_table_name(stage: str) -> str:
    return f"{stage}-dynamodb-logs"


def core_table_name(stage: str) -> str:
    return f"{stage}-core"


def log_group_name(full_function_name: str) -> str:
    """Where Lambda writes a function's logs."""
    return f"/aws/lambda/{full_function_name}"


def publisher_failures_queue_name(stage: str) -> str:
    """The SQS queue that gets the stream batches the publisher gave up on."""
    return f"dynamodb-logs-{stage}-publisher-failures"


def function_name(stage: str, name: str) -> str:
    """``dynamodb-logs-{stage}-{name}``, refused when longer than Lambda allows."""
    full = f"dynamodb-logs-{stage}-{name}"
    if len(full) > _MAX_FUNCTION_NAME:
        raise ValidationError(
            f"function name {full!r} is {len(full)} characters; Lambda allows "
            f"{_MAX_FUNCTION_NAME}: shorten the stage or the function's name"
        )
    return full


def function_arn(region: str, account: str, stage: str, name: str) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{function_name(stage, name)}"


# --------------------------------------------------------------------------- EventBridge


def rule_name(stage: str, function: str) -> str:
    """A subscriber's rule is named like its function (``dynamodb-logs-{stage}-x``)."""
    return function_name(stage, function)


def bus_arn(region: str, account: str, bus: str = BUS_NAME) -> str:
    return f"arn:aws:events:{region}:{account}:event-bus/{bus}"


def rule_arn(region: str, account: str, name: str, bus: str = BUS_NAME) -> str:
    """Rules on a custom bus carry the bus in their ARN: ``rule/{bus}/{name}``."""
    return f"arn:aws:events:{region}:{account}:rule/{bus}/{name}"


def archive_arn(region: str, account: str, name: str = ARCHIVE_NAME) -> str:
    return f"arn:aws:events:{region}:{account}:archive/{name}"


def replay_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:events:{region}:{account}:replay/{name}"


# The resource kinds of an EventBridge ARN that the bus knows.
_EVENTS_KINDS = ("event-bus", "rule", "archive", "replay")


@dataclass(frozen=True)
class EventsArn:
    """An EventBridge ARN taken apart: ``arn:{partition}:events:{region}:{account}:{kind}/…``.

    ``name`` is the bus's, rule's, archive's or replay's own name; ``bus`` is set for
    rules only (``default`` for a rule of the default bus, whose ARN has no bus part).
    """

    region: str
    account: str
    kind: str
    name: str
    bus: str | None = None
    partition: str = "aws"


def parse_events_arn(arn: str) -> EventsArn:
    """The parts of an EventBridge bus, rule, archive or replay ARN.

    Raises :class:`ValidationError` naming what is wrong, so a caller that turns a
    user's ARN into a message can fall back to the text itself.
    """
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[1] or parts[2] != "events":
        raise ValidationError(f"not an EventBridge ARN: {arn!r}")
    _, partition, _, region, account, resource = parts
    kind, slash, path = resource.partition("/")
    if kind not in _EVENTS_KINDS or not slash or not path:
        raise ValidationError(
            f"{arn!r}: expected {' or '.join(k + '/NAME' for k in _EVENTS_KINDS)} after the account"
        )
    if not region or not account:
        raise ValidationError(f"{arn!r}: the region and the account must not be empty")
    bus: str | None = None
    name = path
    if kind == "rule":  # rule/NAME on the default bus, rule/BUS/NAME on another (BUS may hold /)
        bus, slash, name = path.rpartition("/")
        if slash and not bus:
            raise ValidationError(f"{arn!r}: the rule's bus name is empty")
        bus = bus or "default"
    elif kind != "event-bus" and "/" in path:  # only bus names (partner buses) hold a /
        raise ValidationError(f"{arn!r}: a {kind} name has no '/'")
    if not name:
        raise ValidationError(f"{arn!r}: the {kind} name is empty")
    return EventsArn(
        region=region, account=account, kind=kind, name=name, bus=bus, partition=partition
    )


# --------------------------------------------------------------------------- the bridge
#
# The bridge stack (``dynamodb-logs-bridge-{stage}``) sits beside the logs stack and
# shares its bus; offline serves the same API. Its functions and rules are named like
# the rest (``dynamodb-logs-{stage}-bridge-…``), so one stage's resources sort together
# and the ``bridge-`` prefix is reserved in the subscriptions file.

BRIDGE_PREFIX = "bridge-"
BRIDGE_CONNECT = "bridge-connect"
BRIDGE_DISCONNECT = "bridge-disconnect"
BRIDGE_MESSAGE = "bridge-message"
BRIDGE_FORWARD = "bridge-forward"
BRIDGE_FUNCTIONS = (BRIDGE_CONNECT, BRIDGE_DISCONNECT, BRIDGE_MESSAGE, BRIDGE_FORWARD)
#: function name -> handler (what Lambda and offline's runtime import)
BRIDGE_HANDLERS: Mapping[str, str] = {
    BRIDGE_CONNECT: "bridge.lambdas.bridge_connect.handler",
    BRIDGE_DISCONNECT: "bridge.lambdas.bridge_disconnect.handler",
    BRIDGE_MESSAGE: "bridge.lambdas.bridge_message.handler",
    BRIDGE_FORWARD: "bridge.lambdas.bridge_forward.handler",
}
#: The route selection of the bridge API: every message is a JSON object with "action".
BRIDGE_ROUTE_SELECTION = "$request.body.action"
#: One route each (integrated with bridge-message), besides $connect/$disconnect/$default.
BRIDGE_CLIENT_ACTIONS = ("hello", "subscribe", "resume", "ack", "ping", "sessions", "drop")
#: rule kind -> its pattern: live events only, or replayed events only (StartReplay
#: names the replay rule in FilterArns, so a replay reaches the bridge and no subscriber)
_BRIDGE_RULE_PATTERNS = {
    "live": {"replay-name": [{"exists": False}]},
    "replay": {"replay-name": [{"exists": True}]},
}
BRIDGE_RULE_KINDS = tuple(_BRIDGE_RULE_PATTERNS)


def bridge_stack_name(stage: str) -> str:
    return f"dynamodb-logs-bridge-{stage}"


def bridge_api_name(stage: str) -> str:
    """The WebSocket API; its stage is named after the stage itself."""
    return bridge_stack_name(stage)


def bridge_table_name(stage: str) -> str:
    """Sessions, connections and per-session buffers (items expire by TTL)."""
    return f"{stage}-bridge"


def bridge_rule_name(stage: str, kind: str) -> str:
    """``dynamodb-logs-{stage}-bridge-live`` or ``…-bridge-replay`` on the bus."""
    if kind not in _BRIDGE_RULE_PATTERNS:
        raise ValueError(f"bridge rule kind is one of {BRIDGE_RULE_KINDS}, got {kind!r}")
    return f"dynamodb-logs-{stage}-bridge-{kind}"


def bridge_rule_pattern(kind: str) -> dict[str, list[dict[str, bool]]]:
    """The event pattern of a bridge rule (a fresh copy: callers may keep or change it)."""
    if kind not in _BRIDGE_RULE_PATTERNS:
        raise ValueError(f"bridge rule kind is one of {BRIDGE_RULE_KINDS}, got {kind!r}")
    return {
        key: [dict(item) for item in value] for key, value in _BRIDGE_RULE_PATTERNS[kind].items()
    }


def bridge_forward_dlq_name(stage: str) -> str:
    """The SQS queue for events the forward function could not take."""
    return f"dynamodb-logs-{stage}-bridge-forward-dlq"


def bridge_access_log_group_name(stage: str) -> str:
    """The bridge API's access log: who connected, from where, and how it went."""
    return f"/aws/apigateway/{bridge_api_name(stage)}/access"


def bridge_management_url(api_id: str, region: str, stage: str) -> str:
    """The ``@connections`` endpoint of the bridge API, as the functions get it in
    ``AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI`` (botocore reads that variable itself)."""
    return f"https://{api_id}.execute-api.{region}.amazonaws.com/{stage}"


def bridge_websocket_url(api_id: str, region: str, stage: str) -> str:
    """Where a client connects."""
    return f"wss://{api_id}.execute-api.{region}.amazonaws.com/{stage}"


def bridge_connect_arn(region: str, account: str, api_id: str, stage: str) -> str:
    """What a client's principal needs ``execute-api:Invoke`` on to open a connection."""
    return f"arn:aws:execute-api:{region}:{account}:{api_id}/{stage}/$connect"


__all__ += [
    "BRIDGE_CLIENT_ACTIONS",
    "BRIDGE_CONNECT",
    "BRIDGE_DISCONNECT",
    "BRIDGE_FORWARD",
    "BRIDGE_FUNCTIONS",
    "BRIDGE_HANDLERS",
    "BRIDGE_MESSAGE",
    "BRIDGE_PREFIX",
    "BRIDGE_ROUTE_SELECTION",
    "BRIDGE_RULE_KINDS",
    "bridge_access_log_group_name",
    "bridge_api_name",
    "bridge_connect_arn",
    "bridge_forward_dlq_name",
    "bridge_management_url",
    "bridge_rule_name",
    "bridge_rule_pattern",
    "bridge_stack_name",
    "bridge_table_name",
    "bridge_websocket_url",
]
