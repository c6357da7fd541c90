"""The ``bridge`` command. Thin: parse the arguments, call the library, print.

Every error a user can cause ends in one line on stderr and a non-zero exit:
1 for general errors, 2 for bad input, 3 for an optimistic-lock conflict.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ProfileNotFound,
)
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.aws import Target, default_region, is_loopback
from bridge.core.errors import BridgeError, ValidationError
from bridge.core.inputs import (
    check_region,
    check_text,
    check_url,
    decode_utf8,
    parse_json,
)
from bridge.core.log import MAX_ITEM_BYTES, MAX_PAYLOAD_DEPTH, check_name, parse_version
from bridge.core.names import check_stage, stack_name

console = Console(stderr=True)


# --------------------------------------------------------------------------- option types


class Checked(click.ParamType):
    """A parameter checked, as it is parsed, by the same ``bridge.core`` function the
    library calls, so every command refuses a bad value alike: one line, exit 2.

    The check raises ``ValidationError`` (not click's ``BadParameter``) so the line
    keeps the check's own wording, which already names the option."""

    def __init__(self, name: str, check: Callable[[str, str], Any]) -> None:
        self.name = name
        self.check = check

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):  # a default, or a value converted already
            return value
        if isinstance(param, click.Option):
            kind = param.opts[0]
        else:
            kind = param.name if param is not None and param.name else self.name
        return self.check(kind, value)


# Text that becomes part of a key or an event: UTF-8 and, for names, no "#". Bytes
# that are not UTF-8 reach argv as lone surrogates (Python's surrogateescape).
NAME = Checked("name", check_name)
TEXT = Checked("text", check_text)
# Versions are DynamoDB numbers: 38 digits (boto3 raises decimal.Inexact beyond).
VERSION = Checked("version", parse_version)
URL = Checked("url", check_url)
REGION = Checked("region", check_region)
PORT = click.IntRange(0, 65535)


def port_option(
    name: str, default: int, help: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One of offline's ports (0: a free one)."""
    return click.option(name, type=PORT, default=default, show_default=True, help=help)


def aws_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command takes: where to point, and how to print."""

    @click.option("--stage", default="local", show_default=True, help="Deployment stage.")
    @click.option(
        "--endpoint-url",
        type=URL,
        help="DynamoDB endpoint. Stage local defaults to $AWS_ENDPOINT_URL_DYNAMODB "
        "if set, else http://127.0.0.1:8000; other stages use AWS.",
    )
    @click.option(
        "--region",
        type=REGION,
        help="AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1).",
    )
    @click.option(
        "--profile",
        type=TEXT,
        help="AWS profile for credentials (not needed for stage local).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
    @functools.wraps(command)
    def wrapper(stage, endpoint_url, region, profile, as_json, **kwargs):
        check_stage(stage)  # before anything is named after it, or asks AWS
        target = Target(stage=stage, endpoint_url=endpoint_url, region=region, profile=profile)
        return command(target=target, as_json=as_json, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- printing


def cells(*values: Any) -> list[str]:
    """Table cells shown as written: stored text may contain rich markup like ``[b]``."""
    return [escape(str(value)) for value in values]


def output() -> Console:
    """Tables for a person; piped into a file or a pager, they keep their full width."""
    return Console() if sys.stdout.isatty() else Console(width=10_000)


def emit(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dynamodb-logs-bridge")
def cli() -> None:
    """Append-only logs in DynamoDB, published through EventBridge.

    \b
    Quick start (no AWS needed):
      bridge demo                      run the whole pipeline on this machine
      bridge offline                   the local cloud, until Ctrl-C; then, in
                                       another terminal:
      bridge append users 12 signup --payload '{"id": "12", "name": "test"}'
      bridge query users 12
    """


@cli.group()
def tables() -> None:
    """Manage the log and core tables on a local endpoint.

    \b
    Example:
      bridge tables create             (bridge offline creates them by itself)
    """


@tables.command("create")
@aws_options
def tables_create(target: Target, as_json: bool) -> None:
    """Create {stage}-dynamodb-logs (with its stream) and {stage}-core. Idempotent.

    \b
    Example:
      bridge tables create --endpoint-url http://127.0.0.1:8000
    """
    from bridge.store import create_tables

    if not target.local_endpoint:
        # In AWS the tables belong to the stack (`bridge deploy`); made here, they would
        # block that deploy with "already exists".
        raise BridgeError(
            f"`tables create` is for local endpoints; stage {target.stage}'s "
            "tables in AWS come with `bridge deploy --stage "
            f"{target.stage}`"
        )
    created = create_tables(target.dynamodb(), target.log_table, target.core_table)
    tables_ = [target.log_table, target.core_table]
    if as_json:
        emit({"tables": tables_, "created": created})
        return
    for name in tables_:
        click.echo(f"{name}: {'created' if name in created else 'exists'}")


# Read no more of a file or a pipe than any payload DynamoDB could store as JSON text
# (400 KB of item, generously indented): `--payload @/dev/zero` ends, it does not hang.
MAX_PAYLOAD_TEXT = 10 * MAX_ITEM_BYTES


def parse_payload(text: str) -> dict[str, Any]:
    """The JSON itself, ``@file.json``, or ``-`` for standard input (shells cap arguments
    near 128 KB; DynamoDB items go to 400 KB).

    Files and stdin are read as bytes and decoded strictly: Python's own stdin would
    turn a byte that is not UTF-8 into a lone surrogate and let it through."""
    if text == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text-only stdin (an embedding program's): checked as text
            text = sys.stdin.read(MAX_PAYLOAD_TEXT + 1) if sys.stdin else ""
        else:
            data = _capped("--payload -", stream.read(MAX_PAYLOAD_TEXT + 1))
            text = decode_utf8("--payload - (standard input)", data)
    elif text.startswith("@"):
        try:
            with Path(text[1:]).open("rb") as file:
                data = file.read(MAX_PAYLOAD_TEXT + 1)
        except OSError as error:
            raise ValidationError(f"--payload {text}: cannot read the file: {error}") from None
        text = decode_utf8(f"--payload {text}", _capped(f"--payload {text}", data))
    payload = parse_json("--payload", text, MAX_PAYLOAD_DEPTH)
    if not isinstance(payload, dict):
        raise ValidationError("--payload must be a JSON object")
    return payload


def _capped(kind: str, data: bytes) -> bytes:
    if len(data) > MAX_PAYLOAD_TEXT:
        raise ValidationError(
            f"{kind}: more than {MAX_PAYLOAD_TEXT} bytes; a DynamoDB item holds "
            f"{MAX_ITEM_BYTES} (400 KB)"
        )
    return data


@cli.command()
@click.argument("log", type=NAME)
@click.argument("id", type=NAME)
@click.argument("type", type=TEXT)
@click.option(
    "--payload",
    required=True,
    help="The event payload, a JSON object with 'id'; @file.json or - for stdin.",
)
@click.option(
    "--expected-version",
    type=VERSION,
    metavar="N",
    help="Fail unless this is the latest version.",
)
@aws_options
def append(
    target: Target,
    as_json: bool,
    log: str,
    id: str,
    type: str,
    payload: str,
    expected_version: int | None,
) -> None:
    """Append one event to the stream LOG#ID and print its new version.

    \b
    Example:
      bridge append users 12 signup --payload '{"id": "12", "name": "test"}'
      bridge append users 12 addPhoneNumber --payload '{"id": "12", "phoneNumber": "+1"}' \\
          --expected-version 1
    A conflict (the version exists already) exits with code 3.
    """
    from bridge.store import LogStore

    body = parse_payload(payload)
    store = LogStore(target.dynamodb().Table(target.log_table))
    version = store.append(log, id, type, body, expected_version=expected_version)
    if as_json:
        emit({"log": log, "id": id, "version": version})
    else:
        click.echo(version)


@cli.command()
@click.argument("log", type=NAME)
@click.argument("id", type=NAME, required=False)
@click.option("--after", type=VERSION, default=0, metavar="N", help="Only versions after N.")
@aws_options
def query(target: Target, as_json: bool, log: str, id: str | None, after: int) -> None:
    """Print the events of LOG (or of one stream LOG#ID) in version order.

    \b
    Examples:
      bridge query users            every user's events
      bridge query users 12 --after 2 --json
    """
    from bridge.store import LogStore

    store = LogStore(target.dynamodb().Table(target.log_table))
    items = store.read(log, id, after=after) if id else store.read_log(log, after=after)
    if as_json:
        for item in items:
            emit(item.to_json())
        return
    table = Table("log", "id", "version", "type", "payload")
    shown = 0
    for item in items:
        shown += 1
        table.add_row(
            *cells(
                item.log,
                item.id,
                item.version,
                item.type,
                json.dumps(item.payload, ensure_ascii=False),
            )
        )
    if not shown:
        click.echo(
            f"no events in {log}"
            + (f"#{id}" if id else "")
            + (f" after version {after}" if after else ""),
            err=True,
        )
        return
    output().print(table)


@cli.command()
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="How many fake users (4 events each).",
)
@click.option("--seed", type=int, help="Make the fake data reproducible.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=64),
    help="Parallel batch writers (default: 2 for a local endpoint, 16 for AWS).",
)
@aws_options
def generate(
    target: Target, as_json: bool, users: int, seed: int | None, concurrency: int | None
) -> None:
    """Write the seed's fake users (signup, addPhoneNumber, verifyPhoneNumber, addLocation).

    \b
    Example:
      bridge generate --users 1000 --seed 7 --concurrency 16
    """
    if concurrency is None:
        # Measured (bench/generate.py): a local moto/DynamoDB Local endpoint serves
        # one request at a time per core, so more writers only add contention.
        concurrency = 2 if target.local_endpoint else 16
    result = run_generate(target, users, seed, concurrency, progress=not as_json)
    if as_json:
        emit(
            {
                "users": result.users,
                "events": result.events,
                "seconds": round(result.seconds, 3),
                "events_per_second": round(result.events_per_second, 1),
                "skipped_users": result.skipped,
            }
        )
    else:
        click.echo(
            f"wrote {result.events} events for {result.users} users "
            f"in {result.seconds:.2f} s ({result.events_per_second:.0f} events/s)"
        )
        if result.skipped:
            click.echo(
                f"left {result.skipped} users alone: they exist already (same --seed as before?)"
            )


def run_generate(target: Target, users: int, seed: int | None, concurrency: int, progress: bool):
    from rich.progress import Progress

    from bridge.fake import USER_EVENT_TYPES, fake_users
    from bridge.generate import write_users

    def make_table():
        return target.dynamodb(max_pool=concurrency).Table(target.log_table)

    make_table().load()  # fail fast (one clear line) when the table is missing
    total = users * len(USER_EVENT_TYPES)
    with Progress(console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("writing events", total=total)
        return write_users(
            make_table,
            fake_users(users, seed),
            concurrency,
            on_events=lambda n: bar.advance(task, n),
        )


@cli.command()
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="How many fake users (4 events each).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same users.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(users: int, seed: int, as_json: bool) -> None:
    """Run the pipeline on this machine: embedded DynamoDB, fake users, read back.

    \b
    Example:
      bridge demo --users 100
    """
    from bridge.demo import run_demo

    summary = run_demo(users=users, seed=seed, progress=not as_json)
    if as_json:
        emit(summary)


@cli.command()
@click.option("--stage", default="local", show_default=True, help="Stage the tables are named for.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@port_option("--dynamodb-port", 8000, "Embedded DynamoDB and DynamoDB Streams endpoint.")
@port_option("--events-port", 4010, "EventBridge endpoint (and the Lambda Invoke API).")
@port_option("--ws-port", 3001, "WebSocket gateway and its @connections management API.")
@port_option(
    "--bridge-port",
    3002,
    "The bridge API (what `bridge connect` talks to) and its own @connections API.",
)
@click.option(
    "--bridge/--no-bridge",
    default=True,
    show_default=True,
    help="Serve the bridge API: its functions, its table and two rules on the bus.",
)
@click.option(
    "--dynamodb-endpoint",
    type=URL,
    help="Use this DynamoDB (e.g. DynamoDB Local) instead of the embedded one.",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("db"),
    show_default=True,
    help="SQLite file: archive, checkpoints, table snapshot.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Subscriptions definition (default: ./dynamodb-logs.toml, else the built-in).",
)
@click.option(
    "--region",
    type=REGION,
    default=default_region,
    show_default="$AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1",
    help="Region of the local tables, bus and functions (as the other commands use).",
)
@click.option(
    "--batch-window",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to gather stream records before invoking the publisher.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="WebSocket idle timeout in seconds (API Gateway: 600).",
)
@click.option(
    "--max-connection-age",
    type=click.FloatRange(min=0, min_open=True),
    default=7200.0,
    show_default=True,
    help="WebSocket maximum connection age in seconds (API Gateway: 7200).",
)
@click.option(
    "--autosave",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Fold the embedded tables' journal into their snapshot after this many quiet "
    "seconds, so the next start is quick (0: only at a clean stop). Every acknowledged "
    "write is journaled either way.",
)
@click.option(
    "--fsync",
    is_flag=True,
    help="Flush the embedded DynamoDB's journal to the disk at every write, so "
    "acknowledged writes also survive a power cut (they survive kill -9 without it).",
)
@click.option(
    "--iam-auth", is_flag=True, help="Require SigV4-signed URLs on $connect of --ws-port too."
)
@click.option(
    "--iam-key",
    "iam_keys",
    multiple=True,
    metavar="KEY:SECRET[:PRINCIPAL_ARN]",
    help="Also accept $connect URLs signed with this key (repeatable); its principal "
    "defaults to arn:aws:iam::000000000000:user/KEY. The key local/local always works.",
)
@click.option(
    "--no-iam-auth",
    is_flag=True,
    help="Let the bridge API take unsigned connections (warned about at start).",
)
@click.option(
    "--ws-route",
    "ws_routes",
    multiple=True,
    metavar="ROUTE=module.handler",
    help="A WebSocket route and its handler, e.g. '$default=app.ws.handler'.",
)
@click.option(
    "--aws-like-replays",
    is_flag=True,
    help="Replay as EventBridge may: in 1-minute slices, shuffled within a slice, some "
    "events after the replay says COMPLETED (to test replay clients; default: in order).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the endpoints as one JSON line.")
@click.option("-v", "--verbose", is_flag=True, help="Log everything, HTTP requests included.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings only (not every invocation).")
def offline(
    as_json: bool,
    verbose: bool,
    quiet: bool,
    ws_routes: tuple[str, ...],
    no_iam_auth: bool,
    **options: Any,
) -> None:
    """Run the whole pipeline on this machine until Ctrl-C: no Docker, no AWS.

    \b
    DynamoDB → stream poller → publisher → EventBridge bus → your handlers
    (retries, onFailure) and the SQLite archive, plus a WebSocket gateway for
    your own routes and the bridge API (--bridge-port; $connect SigV4-signed).
    Local data outlives a restart; `bridge clean` removes it.

    \b
    Example:
      bridge offline
      # in another terminal, after the export lines it prints:
      aws dynamodb put-item --endpoint-url http://127.0.0.1:8000 \\
        --table-name local-dynamodb-logs --item '{"pk": {"S": "users#42#stream"},
        "sk": {"N": "1"}, "type": {"S": "signup"}, "log": {"S": "users"},
        "payload": {"M": {"id": {"S": "42"}}}}'
    """
    from bridge.offline.cli_runner import run_offline

    routes = {}
    for text in ws_routes:
        route, sep, handler = text.partition("=")
        if not sep or not route or not handler:
            raise ValidationError(f"--ws-route {text!r}: expected ROUTE=module.handler")
        routes[route] = handler
    options["bridge_iam_auth"] = not no_iam_auth
    run_offline(options, routes, as_json=as_json, verbosity=verbose - quiet)


@cli.command()
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("db"),
    show_default=True,
    help="The local SQLite file.",
)
@click.option(
    "--dynamodb-endpoint",
    type=URL,
    help="Also delete the stage's tables at this local "
    "endpoint (the one given to `bridge offline --dynamodb-endpoint`).",
)
@click.option("--stage", default="local", show_default=True, help="Whose tables to delete.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def clean(db: Path, dynamodb_endpoint: str | None, stage: str, yes: bool) -> None:
    """Remove the local cloud's data: tables, archived events, stream checkpoints.

    \b
    The embedded endpoint's tables (the bridge's too) live in the SQLite file, so
    removing it removes them; with --dynamodb-endpoint the stage's tables there
    (log, core and bridge) are deleted too.
    Refused while a `bridge offline` uses the file.

    \b
    Examples:
      bridge clean --yes
      bridge clean --dynamodb-endpoint http://localhost:8000 --yes
    """
    from bridge.offline.cli_runner import clean_local_data

    target = None
    if dynamodb_endpoint:
        if not is_loopback(dynamodb_endpoint):
            raise BridgeError(
                f"{dynamodb_endpoint} is not on this machine: `bridge clean` only "
                "deletes local tables"
            )
        target = Target(stage=stage, endpoint_url=dynamodb_endpoint)
    clean_local_data(db, yes, target)


@cli.group()
def failures() -> None:
    """Show and re-drive the failure records of subscribers whose retries ran out.

    \b
    Examples:
      bridge failures list
      bridge failures retry 3f2a9c1e
    """


@failures.command("list")
@aws_options
def failures_list(target: Target, as_json: bool) -> None:
    """List stored failure records, oldest first.

    \b
    Example:
      bridge failures list
      bridge failures list --stage dev --profile prod-readonly --json
    """
    from bridge.failures import list_failures

    found = list_failures(target.dynamodb().Table(target.core_table))
    if as_json:
        for failure in found:
            emit(failure.to_json())
        return
    if not found:
        click.echo(f"no failures in {target.core_table}")
        return
    table = Table("request id", "function", "when", "attempts", "error", "status")
    for f in found:
        table.add_row(
            *cells(
                f.request_id,
                f.function_name,
                f.timestamp,
                f.invoke_count,
                f"{f.error_type}: {f.error_message}",
                f.status,
            )
        )
    output().print(table)


@failures.command("retry")
@click.argument("request_id", type=TEXT)
@click.option(
    "--lambda-endpoint-url",
    type=URL,
    help="Lambda endpoint (default for a local stage: bridge offline's :4010).",
)
@aws_options
def failures_retry(
    target: Target, as_json: bool, request_id: str, lambda_endpoint_url: str | None
) -> None:
    """Invoke the failed function again (asynchronously) with the original event.

    \b
    Example:
      bridge failures retry 3f2a9c1e       (a unique prefix of the request id is enough)
    """
    from bridge.failures import retry_failure

    if lambda_endpoint_url is None:
        lambda_endpoint_url = target.lambda_endpoint
    result = retry_failure(
        target.dynamodb().Table(target.core_table),
        target.client("lambda", endpoint_url=lambda_endpoint_url),
        request_id,
    )
    if as_json:
        emit(result)
    else:
        again = result["retries"]
        click.echo(
            f"re-invoked {result['functionName']} with the event of failed request "
            f"{result['requestId']} (retry {again}"
            + (": it had been retried before)" if again > 1 else ")")
        )


def stack_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """What synth, deploy and destroy share."""
    for option in reversed(
        [
            click.option("--stage", required=True, help="The stage (e.g. dev, prod)."),
            click.option(
                "--config",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Subscriptions definition (default: ./dynamodb-logs.toml).",
            ),
        ]
    ):
        command = option(command)
    return command


def bridge_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--bridge``: the bridge stack instead of (or beside) the logs stack."""
    return click.option(
        "--bridge", is_flag=True, help=f"The bridge stack dynamodb-logs-bridge-{{stage}} {what}."
    )


# Synth and deploy: how long the archive keeps events.
retention_option = click.option(
    "--archive-retention-days",
    type=click.IntRange(min=0),
    default=90,
    show_default=True,
    help="Archive retention; 0 keeps events forever.",
)


@cli.command()
@stack_options
@click.option(
    "--out",
    "outdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("cdk.out"),
    show_default=True,
    help="Where templates go.",
)
@retention_option
@click.option("--no-retain-data", is_flag=True, help="Delete the tables with the stack.")
@bridge_option("instead of the logs stack")
@click.option("--json", "as_json", is_flag=True, help="Print the template paths as JSON.")
def synth(
    stage: str,
    config: Path | None,
    outdir: Path,
    archive_retention_days: int,
    no_retain_data: bool,
    bridge: bool,
    as_json: bool,
) -> None:
    """Write the CloudFormation templates of dynamodb-logs-{stage} (no AWS needed).

    \b
    Examples:
      bridge synth --stage dev --out cdk.out
      bridge synth --stage dev --bridge     # dynamodb-logs-bridge-dev
    """
    from bridge.core.names import bridge_stack_name
    from bridge.deploy import synth as synthesize

    shown = bridge_stack_name(stage) if bridge else stack_name(stage)
    with (
        console.status(f"synthesizing {shown} (jsii and Node.js: ~10 s) …", spinner="dots")
        if not as_json
        else contextlib.nullcontext()
    ):
        templates = synthesize(
            stage,
            outdir,
            config,
            archive_retention_days,
            retain_data=not no_retain_data,
            bridge=bridge,
        )
    if as_json:
        emit({"templates": [str(t) for t in templates]})
    else:
        for template in templates:
            click.echo(template)


@cli.command()
@stack_options
@click.option("--profile", help="AWS profile to deploy with.")
@click.option("--region", help="AWS region (default: the profile's).")
@retention_option
@click.option("--yes", is_flag=True, help="Approve IAM changes without asking.")
@bridge_option("beside the logs stack")
@click.option("--json", "as_json", is_flag=True, help="Print the stack outputs as JSON.")
def deploy(
    stage: str,
    config: Path | None,
    profile: str | None,
    region: str | None,
    archive_retention_days: int,
    yes: bool,
    bridge: bool,
    as_json: bool,
) -> None:
    """Deploy dynamodb-logs-{stage} to AWS with the CDK CLI (through npx).

    \b
    Checks first, and says what is missing: Node.js, AWS credentials, CDK bootstrap
    (and for --bridge: the logs stack, API Gateway's CloudWatch Logs role).
    Examples:
      bridge deploy --stage dev --profile my-dev-account
      bridge deploy --stage dev --bridge    # needs dynamodb-logs-dev deployed
    """
    from bridge.deploy import deploy as run_deploy

    outputs = run_deploy(
        stage,
        config_path=config,
        retention_days=archive_retention_days,
        profile=profile,
        region=region,
        approve=yes,
        bridge=bridge,
    )
    if as_json:
        emit(outputs)
    else:
        for key, value in outputs.items():
            click.echo(f"{key}: {value}")


@cli.command()
@stack_options
@click.option("--profile", help="AWS profile.")
@click.option("--region", help="AWS region (default: the profile's).")
@click.option(
    "--bridge",
    is_flag=True,
    help="The bridge stack dynamodb-logs-bridge-{stage} only (the logs stack stays).",
)
def destroy(
    stage: str, config: Path | None, profile: str | None, region: str | None, bridge: bool
) -> None:
    """Delete the stack dynamodb-logs-{stage}; the tables and their data stay.

    \b
    The logs stack is refused while the bridge stack is deployed beside it.
    Examples:
      bridge destroy --stage dev --bridge   # the bridge stack only
      bridge destroy --stage dev --profile my-dev-account
    """
    from bridge.core.names import bridge_stack_name
    from bridge.deploy import destroy as run_destroy

    run_destroy(stage, config_path=config, profile=profile, region=region, bridge=bridge)
    click.echo(f"deleted stack {bridge_stack_name(stage) if bridge else stack_name(stage)}")


def error_line(error: BaseException) -> tuple[str, int]:
    """The one line and exit code for an error a user can cause."""
    if isinstance(error, BridgeError):
        return str(error), error.exit_code
    if isinstance(error, NoCredentialsError):
        return "no AWS credentials found: set AWS_PROFILE or pass --profile", 1
    if isinstance(error, ProfileNotFound):
        return str(error), 1
    if isinstance(error, NoRegionError):
        return "no AWS region: pass --region or set AWS_REGION", 1
    if isinstance(error, EndpointConnectionError):
        url = urlparse(error.kwargs.get("endpoint_url") or "")
        return (
            f"cannot reach {url.scheme}://{url.netloc}: is `bridge offline` (or your own "
            "endpoint) running there? Point commands elsewhere with their endpoint "
            "option or the AWS_ENDPOINT_URL_* lines `bridge offline` prints"
        ), 1
    if isinstance(error, ClientError):
        code = error.response["Error"]["Code"]
        message = error.response["Error"].get("Message", "")
        if message.lstrip().startswith("<"):  # an HTML error page, not an AWS error
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", code)
            return (
                f"the endpoint failed with HTTP {status} (a region it does not "
                "serve? check --region)"
            ), 1
        if code == "ResourceNotFoundException":
            return f"{message or 'table not found'} (create it with `bridge tables create`)", 1
        return f"{code}: {message}", 1
    if isinstance(error, BotoCoreError):
        return str(error), 1
    raise error


# --------------------------------------------------------------------------- bridge client


@cli.command()
@click.option("--stage", default="local", show_default=True, help="Stage of the bridge to read.")
@click.option(
    "--url",
    help="The bridge's WebSocket URL (default: the bridge stack's output; "
    "for stage local, $BRIDGE_WEBSOCKET_URL or ws://127.0.0.1:3002/local).",
)
@click.option("--session", help="Session name (default: user@host). Reconnects resume it.")
@click.option("--pattern", help="EventBridge pattern (JSON) the session subscribes with.")
@click.option("--log", "logs", multiple=True, help="Only events of this log (repeatable).")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--replay", help="Receive only the events of this replay (bridge replay).")
@click.option(
    "--sink",
    type=click.Choice(["sqlite", "dynamodb", "bus", "none"]),
    default="sqlite",
    show_default=True,
    help="Where events go.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="sqlite: the file (default ./bridge.db); dynamodb/bus: the cursor's "
    "state file (default ./bridge-SINK-STAGE.json).",
)
@click.option(
    "--sink-endpoint",
    help="dynamodb/bus sinks: the local endpoint "
    "(default http://127.0.0.1:8000 / http://127.0.0.1:4010).",
)
@click.option(
    "--sink-stage",
    default="local",
    show_default=True,
    help="dynamodb sink: write into {sink-stage}-dynamodb-logs.",
)
@click.option(
    "--hydrate",
    is_flag=True,
    help="Complete partial events (detail over 10 KB) from the cloud's log table.",
)
@click.option("--endpoint-url", help="The cloud's DynamoDB endpoint, for --hydrate.")
@click.option(
    "--region", help="AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1)."
)
@click.option("--profile", help="AWS profile whose credentials sign the connection.")
@click.option("--no-iam-auth", is_flag=True, help="Connect unsigned (offline --no-iam-auth).")
@click.option("--fail-on-gap", is_flag=True, help="Exit 4 if the bridge reported lost events.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines per event; JSON summary.")
def connect(
    stage: str,
    url: str | None,
    session: str | None,
    pattern: str | None,
    logs: tuple[str, ...],
    types: tuple[str, ...],
    replay: str | None,
    sink: str,
    out: Path | None,
    sink_endpoint: str | None,
    sink_stage: str,
    hydrate: bool,
    endpoint_url: str | None,
    region: str | None,
    profile: str | None,
    no_iam_auth: bool,
    fail_on_gap: bool,
    as_json: bool,
) -> None:
    """Stream the bridge's events onto this machine until Ctrl-C.

    \b
    Examples:
      bridge connect --stage dev                       # into ./bridge.db (sqlite)
      bridge connect --stage dev --log users --type signup --json
      bridge connect --stage dev --sink dynamodb --hydrate   # into local-dynamodb-logs
      bridge connect --stage local --session tests --sink none

    Nothing is lost across disconnects: the session's buffer in the cloud holds what
    arrives while no socket is open, and the sink stores the cursor with the events.
    Ctrl-C writes what arrived, acknowledges it and prints a summary (a second Ctrl-C
    quits at once; the next run gets the unacknowledged events again).
    """
    from bridge.client.run import ConnectSettings, run_connect, subscription_pattern, summary_line

    check_stage(stage)
    check_stage(sink_stage)
    if sink_endpoint is not None:
        check_url("--sink-endpoint", sink_endpoint)
    if endpoint_url is not None:
        check_url("--endpoint-url", endpoint_url)
    if no_iam_auth:
        console.print("[yellow]warning:[/] connecting unsigned (--no-iam-auth)")
    settings = ConnectSettings(
        stage=stage,
        url=url,
        session=session,
        pattern=subscription_pattern(pattern, logs, types),
        replay=replay,
        sink=sink,
        out=out,
        sink_endpoint=sink_endpoint,
        sink_stage=sink_stage,
        hydrate=hydrate,
        as_json=as_json,
        profile=profile,
        region=region,
        endpoint_url=endpoint_url,
        iam_auth=not no_iam_auth,
        fail_on_gap=fail_on_gap,
    )
    values = run_connect(settings)
    if as_json:
        emit({"summary": values})
    else:
        console.print(summary_line(values))
    if fail_on_gap and values["gaps"]:
        sys.exit(4)


@cli.group()
def sessions() -> None:
    """Your bridge sessions (through the bridge API: no table access needed).

    \b
    Examples:
      bridge sessions list --stage dev
      bridge sessions drop alice@laptop --stage dev
    """


def _management_url(
    stage: str, url: str | None, region: str | None, profile: str | None, no_iam_auth: bool
) -> str:
    from bridge.client.presign import presign
    from bridge.client.run import ConnectSettings, bridge_url, credentials, resolve_region

    check_stage(stage)
    settings = ConnectSettings(stage=stage, url=url, region=region, profile=profile)
    where = resolve_region(settings)
    plain = bridge_url(settings, where)
    return plain if no_iam_auth else presign(plain, credentials(settings, where), where)


def session_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)
    command = click.option("--no-iam-auth", is_flag=True, help="Connect unsigned.")(command)
    command = click.option("--profile", help="AWS profile whose credentials sign.")(command)
    command = click.option("--region", help="AWS region.")(command)
    command = click.option("--url", help="The bridge's WebSocket URL.")(command)
    return click.option("--stage", default="local", show_default=True, help="Stage.")(command)


@sessions.command("list")
@session_options
def sessions_list(
    stage: str,
    url: str | None,
    region: str | None,
    profile: str | None,
    no_iam_auth: bool,
    as_json: bool,
) -> None:
    """List your sessions: connected or not, cursor, buffered events, expiry."""
    from bridge.client.manage import list_sessions

    rows, omitted = list_sessions(_management_url(stage, url, region, profile, no_iam_auth))
    if as_json:
        emit({"sessions": rows, "omitted": omitted})
        return
    table = Table(
        "session", "connected", "acked", "next cursor", "buffered", "expires in", "pattern"
    )
    for row in rows:
        table.add_row(
            *cells(
                row["name"],
                "yes" if row["connected"] else "no",
                row["acked"],
                row["next_cursor"],
                row["buffered"],
                f"{row['expires_in']} s",
                json.dumps(row["pattern"]) if row["pattern"] else "everything",
            )
        )
    output().print(table)
    if omitted:
        console.print(f"{omitted} more sessions did not fit in one answer")


@sessions.command("drop")
@click.argument("name")
@session_options
def sessions_drop(
    name: str,
    stage: str,
    url: str | None,
    region: str | None,
    profile: str | None,
    no_iam_auth: bool,
    as_json: bool,
) -> None:
    """Drop one of your sessions: its buffer goes, its open connection is closed."""
    from bridge.client.manage import drop_session

    dropped = drop_session(_management_url(stage, url, region, profile, no_iam_auth), name)
    if as_json:
        emit({"dropped": dropped})
    else:
        console.print(f"dropped session {dropped}")


# Time travel: `bridge diff` and `bridge rebuild`, defined in bridge/time_commands.py.
from bridge.time_commands import COMMANDS as TIME_COMMANDS  # noqa: E402

for _command in TIME_COMMANDS:
    cli.add_command(_command)

# `bridge archive` and `bridge replay` live in their own module (bridge/replay_cli.py).
from bridge.replay_cli import archive, replay  # noqa: E402

cli.add_command(archive)
cli.add_command(replay)


# click ≥ 8.2 raises this for a group called without arguments (older ones exit 0).
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="bridge", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except NO_ARGS_IS_HELP as error:  # `bridge` alone: the help, as is
        error.show()
        sys.exit(error.exit_code)
    except click.UsageError as error:  # one line, like every other error, and where to look
        where = f" (see `{error.ctx.command_path} --help`)" if error.ctx else ""
        click.echo(f"error: {error.format_message()}{where}", err=True)
        sys.exit(error.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - only known user errors are turned into lines
        line, code = error_line(error)
        click.echo(f"error: {line}", err=True)
        sys.exit(code)
    sys.exit(0)


if __name__ == "__main__":
    main()
