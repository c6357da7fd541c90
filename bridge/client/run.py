"""``bridge connect``: everything between the command line and :class:`BridgeClient`.

Where the bridge is (the stack's output, or offline's port), who signs (the standard
credential chain, or the local key pair), which sink, and the checks that make a
mistake one clear line before anything connects: no credentials, the bridge stack not
deployed, a sink that would feed the events back into the cloud they come from.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import boto3
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import BotoCoreError, ClientError

from bridge.aws import LOCAL_DYNAMODB, LOCAL_EVENTS
from bridge.client.connection import BridgeClient, ClientOptions, Totals
from bridge.client.presign import presign
from bridge.client.sinks import BusSink, DynamoDBSink, NoneSink, Sink, SqliteSink, StateFile
from bridge.core.errors import BridgeError, ValidationError
from bridge.core.names import bridge_stack_name, log_table_name
from bridge.core.patterns import validate_pattern
from bridge.core.session import Delivered

LOCAL_STAGE = "local"
LOCAL_BRIDGE_PORT = 3002
#: The key pair `bridge offline` always accepts on its bridge API.
LOCAL_CREDENTIALS = ReadOnlyCredentials("local", "local", None)
SINKS = ("sqlite", "dynamodb", "bus", "none")
DEFAULT_SQLITE = Path("bridge.db")


def default_session() -> str:
    """user@host: the same on every run of one person on one machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    return f"{user}@{socket.gethostname()}"


def subscription_pattern(
    pattern: str | None, logs: Sequence[str], types: Sequence[str]
) -> dict[str, Any] | None:
    """``--pattern JSON`` or ``--log``/``--type``; checked as EventBridge would."""
    if pattern is not None and (logs or types):
        raise ValidationError("give --pattern or --log/--type, not both")
    if pattern is not None:
        try:
            value = json.loads(pattern)
        except ValueError as error:
            raise ValidationError(f"--pattern is not JSON: {error}") from None
        if not isinstance(value, dict):
            raise ValidationError("--pattern must be a JSON object (an EventBridge pattern)")
    elif logs or types:
        detail: dict[str, Any] = {}
        if logs:
            detail["log"] = list(logs)
        if types:
            detail["type"] = list(types)
        value = {"detail": detail}
    else:
        return None
    validate_pattern(value)  # raises PatternError with its path and reason
    return value


@dataclass
class ConnectSettings:
    stage: str
    url: str | None = None
    session: str | None = None
    pattern: dict[str, Any] | None = None
    replay: str | None = None
    sink: str = "sqlite"
    out: Path | None = None
    sink_endpoint: str | None = None
    sink_stage: str = LOCAL_STAGE
    hydrate: bool = False
    as_json: bool = False
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None  # the cloud's DynamoDB (for --hydrate)
    iam_auth: bool = True
    fail_on_gap: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_region(settings: ConnectSettings) -> str:
    from bridge.aws import default_region

    return settings.region or default_region()


def bridge_url(settings: ConnectSettings, region: str) -> str:
    """--url; offline's bridge port for stage local; else the bridge stack's output."""
    if settings.url:
        if not settings.url.startswith(("ws://", "wss://")):
            raise ValidationError(f"--url {settings.url!r} is not a ws:// or wss:// URL")
        return settings.url.rstrip("/")
    if settings.stage == LOCAL_STAGE:
        found = os.environ.get("BRIDGE_WEBSOCKET_URL")
        return found or f"ws://127.0.0.1:{LOCAL_BRIDGE_PORT}/{LOCAL_STAGE}"
    stack = bridge_stack_name(settings.stage)
    try:
        cloudformation = _session(settings, region).client("cloudformation")
        answer = cloudformation.describe_stacks(StackName=stack)
    except ClientError as error:
        if "does not exist" in str(error):
            raise BridgeError(
                f"the bridge stack {stack} is not deployed in {region}: "
                f"bridge deploy --stage {settings.stage} --bridge"
            ) from None
        raise BridgeError(f"cannot read the bridge stack {stack}: {error}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in answer["Stacks"][0].get("Outputs", [])}
    url = outputs.get("WebSocketUrl")
    if not url:
        raise BridgeError(f"the stack {stack} has no WebSocketUrl output; redeploy it")
    return str(url).rstrip("/")


def _session(settings: ConnectSettings, region: str) -> boto3.Session:
    if settings.profile:
        return boto3.Session(profile_name=settings.profile, region_name=region)
    return boto3.Session(region_name=region)


def credentials(settings: ConnectSettings, region: str) -> ReadOnlyCredentials:
    """The signing key: the local pair for stage local without --profile, else the
    standard chain (environment, --profile, SSO), refreshed at every connect."""
    if settings.stage == LOCAL_STAGE and not settings.profile:
        return LOCAL_CREDENTIALS
    found = _session(settings, region).get_credentials()
    if found is None:
        raise BridgeError(
            "no AWS credentials found: set AWS_PROFILE or pass --profile "
            "(after `aws sso login` if you use SSO)"
        )
    return found.get_frozen_credentials()


def make_signer(settings: ConnectSettings, region: str) -> Callable[[str], str]:
    """Presign each connect URL afresh (SSO keys expire); fails now, in one line, when
    there are no credentials. With --no-iam-auth, URLs go unsigned."""
    if not settings.iam_auth:
        return lambda plain: plain
    credentials(settings, region)

    def signer(plain: str) -> str:
        return presign(plain, credentials(settings, region), region)

    return signer


def check_no_loop(settings: ConnectSettings) -> None:
    """A sink that writes into the cloud the client reads from would feed every event
    back into the bridge: refuse it."""
    if settings.sink in ("dynamodb", "bus") and settings.sink_stage == settings.stage:
        raise ValidationError(
            f"the {settings.sink} sink writes into stage {settings.sink_stage}, the cloud "
            "this client reads from: every event would come back around; pick another "
            "--sink-stage, or --sink sqlite"
        )


def make_sink(settings: ConnectSettings, session_key: str, region: str) -> Sink:
    if settings.sink == "sqlite":
        return SqliteSink(settings.out or DEFAULT_SQLITE, session_key)
    if settings.sink == "none":
        return NoneSink()
    state = StateFile(
        settings.out or Path(f"bridge-{settings.sink}-{settings.sink_stage}.json"), session_key
    )
    local = boto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name=region
    )
    if settings.sink == "dynamodb":
        tables = local.client("dynamodb", endpoint_url=settings.sink_endpoint or LOCAL_DYNAMODB)
        return DynamoDBSink(tables, settings.sink_stage, state)
    if settings.sink == "bus":
        bus = local.client("events", endpoint_url=settings.sink_endpoint or LOCAL_EVENTS)
        return BusSink(bus, state)
    raise ValidationError(f"--sink {settings.sink!r}: choose one of {', '.join(SINKS)}")


class Hydrator:
    """Completes ``partial: true`` events from the cloud's log table (``--hydrate``)."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.hydrated = 0
        self.missing = 0

    async def __call__(self, delivered: Sequence[Delivered]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._complete, [d.event for d in delivered])

    def _complete(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from bridge.core.log import from_dynamo

        out = []
        for event in events:
            detail = event.get("detail")
            if isinstance(detail, dict) and detail.get("partial"):
                key = detail.get("key") or {}
                item = self.table.get_item(
                    Key={"pk": key.get("pk"), "sk": key.get("sk")}, ConsistentRead=True
                ).get("Item")
                if item is None:
                    self.missing += 1
                else:
                    full = {k: v for k, v in detail.items() if k != "partial"}
                    full["payload"] = from_dynamo(item.get("payload"))
                    event = {**event, "detail": full}
                    self.hydrated += 1
            out.append(event)
        return out


def event_line(delivered: Delivered) -> str:
    """One line per event for a person: time, log, type, key."""
    event = delivered.event
    detail = event.get("detail")
    if isinstance(detail, Mapping) and isinstance(detail.get("key"), Mapping):
        key = detail["key"]
        what = f"{detail.get('log', '-')} {detail.get('type', '-')} {key.get('pk')}/{key.get('sk')}"
        if detail.get("partial"):
            what += " (partial)"
    else:
        what = f"{event.get('source', '-')} {event.get('detail-type', '-')} {event.get('id')}"
    return f"{event.get('time', '-')} {what}"


def summary(totals: Totals) -> dict[str, Any]:
    return {
        "received": totals.received,
        "written": totals.written,
        "duplicates": totals.duplicates + totals.wire_duplicates,
        "skipped": totals.skipped,
        "skipped_reasons": totals.skipped_reasons,
        "gaps": totals.gaps,
        "gap_ranges": [list(r) for r in totals.gap_ranges],
        "holes_skipped": totals.holes_skipped,
        "problems": totals.problems,
        "connections": totals.connections,
        "cursor": totals.cursor,
    }


def summary_line(values: Mapping[str, Any]) -> str:
    line = (
        f"received {values['received']}, written {values['written']}, duplicates ignored "
        f"{values['duplicates']}, gaps {values['gaps']}"
    )
    if values["gap_ranges"]:
        line += " (cursors " + ", ".join(f"{a}..{b}" for a, b, _ in values["gap_ranges"]) + ")"
    if values["skipped"]:
        reasons = ", ".join(f"{n} {why}" for why, n in values["skipped_reasons"].items())
        line += f", skipped {values['skipped']} ({reasons})"
    return line


def run_connect(
    settings: ConnectSettings,
    *,
    out: TextIO = sys.stdout,
    install_signals: bool = True,
    ready: Callable[[BridgeClient], None] | None = None,
) -> dict[str, Any]:
    """Connect until Ctrl-C; returns the summary (the caller prints it)."""
    check_no_loop(settings)
    region = resolve_region(settings)
    url = bridge_url(settings, region)
    session = settings.session or default_session()
    signer = make_signer(settings, region)
    sink = make_sink(settings, f"{url}#{session}", region)
    transform = None
    hydrator: Hydrator | None = None
    if settings.hydrate:
        from bridge.aws import Target

        target = Target(
            stage=settings.stage,
            endpoint_url=settings.endpoint_url,
            region=region,
            profile=settings.profile,
        )
        hydrator = Hydrator(target.dynamodb().Table(log_table_name(settings.stage)))
        transform = hydrator

    def on_events(batch: Sequence[Delivered]) -> None:
        for delivered in batch:
            if settings.as_json:
                line = json.dumps(
                    {"cursor": delivered.cursor, "id": delivered.id, "event": delivered.event},
                    separators=(",", ":"),
                    default=str,
                )
            else:
                line = event_line(delivered)
            out.write(line + "\n")
        out.flush()

    client = BridgeClient(
        ClientOptions(url=url, session=session, pattern=settings.pattern, replay=settings.replay),
        sink,
        signer,
        on_events=on_events,
        transform=transform,
    )
    if ready is not None:
        ready(client)
    totals = asyncio.run(_run(client, install_signals))
    values = summary(totals)
    if hydrator is not None:
        values["hydrated"] = hydrator.hydrated
        values["hydrate_missing"] = hydrator.missing
    return values


async def _run(client: BridgeClient, install_signals: bool) -> Totals:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        presses = 0

        def on_signal() -> None:
            nonlocal presses
            presses += 1
            if presses > 1:
                os._exit(130)  # a second Ctrl-C: now, unflushed (said in --help)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
    try:
        return await client.run(stop)
    except (BotoCoreError, ClientError) as error:
        raise BridgeError(f"AWS said: {error}") from None
