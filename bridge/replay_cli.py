"""The ``bridge archive`` and ``bridge replay`` commands (registered by ``bridge.cli``).

Thin like the rest of the CLI: parse and check the options, build the target, call
:func:`bridge.replay.run_replay` or :mod:`bridge.archive_report`, print. Errors are
:class:`BridgeError` lines turned into one line and an exit code by ``bridge.cli.main``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bridge.aws import LOCAL_STAGE, Target, events_client, events_endpoint, is_loopback
from bridge.client.archive_replay import ReplayRequest
from bridge.client.run import subscription_pattern
from bridge.core.errors import ValidationError
from bridge.core.inputs import check_text
from bridge.core.names import ARCHIVE_NAME, check_stage, log_table_name
from bridge.core.timespec import parse_range
from bridge.replay_archive_cli import (
    archive_replay_options,
    connect_settings,
    replay_attach,
    replay_cancel,
    replay_list,
    run_archive,
    to_rules,
)

PLAIN_PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is no terminal


def _emit(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, default=str))


# --------------------------------------------------------------------------- bridge archive


@click.command("archive")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A SQLite archive: `bridge offline`'s ./db (the default) or a bridge client's "
    "./bridge.db.",
)
@click.option("--stage", help="Describe the stage's EventBridge archive instead (AWS or offline).")
@click.option(
    "--archive",
    "archive_name",
    default=ARCHIVE_NAME,
    show_default=True,
    help="With --stage: the EventBridge archive's name.",
)
@click.option(
    "--events-endpoint",
    "--endpoint-url",
    "events_url",
    help="EventBridge endpoint for --stage (default $AWS_ENDPOINT_URL_EVENTBRIDGE; stage "
    "local: http://127.0.0.1:4010; other stages: AWS).",
)
@click.option("--region", help="AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION).")
@click.option("--profile", help="AWS profile for credentials.")
@click.option(
    "--by",
    type=click.Choice(["auto", "hour", "day"]),
    default="auto",
    show_default=True,
    help="Histogram buckets (auto: hours for up to three days of events).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def archive(
    db: Path | None,
    stage: str | None,
    archive_name: str,
    events_url: str | None,
    region: str | None,
    profile: str | None,
    by: str,
    as_json: bool,
) -> None:
    """What an archive holds: events per log and type, first and last, a histogram.

    \b
    Examples:
      bridge archive                       # ./db, the local cloud's archive
      bridge archive --db bridge.db --by day
      bridge archive --stage dev --json    # DescribeArchive of the dev stack's archive

    Choose a replay's --start/--end by looking at the histogram (UTC). For an
    EventBridge archive AWS reports counts that reconcile over 24 hours.
    """
    from bridge import archive_report

    if stage is not None:
        if db is not None:
            raise ValidationError("--db and --stage: give one (a SQLite file or a stage's archive)")
        check_stage(stage)
        url = events_endpoint(stage, events_url)
        client = events_client(stage, url, region, profile)
        report = archive_report.eventbridge_report(client, archive_name)
        if as_json:
            _emit(report)
        else:
            click.echo("\n".join(archive_report.render_eventbridge(report)))
        return
    report = archive_report.sqlite_report(db or Path("db"), "auto" if by == "auto" else by)
    if as_json:
        _emit(report)
    else:
        click.echo("\n".join(archive_report.render_sqlite(report)))


# --------------------------------------------------------------------------- bridge replay


@contextmanager
def _progress(enabled: bool) -> Iterator[tuple[Any, Any]]:
    """(on_total, advance): a rich bar with rate and ETA on a terminal; else a plain
    line on stderr every few seconds (a CI log keeps them)."""
    if not enabled:
        yield (lambda total: None), (lambda n: None)
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("replay"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        task: list[Any] = []
        began = time.monotonic()

        def on_total(total: int) -> None:
            task.append(bar.add_task("replay", total=total, rate=""))

        def advance(n: int) -> None:
            if task:
                done = bar.tasks[0].completed + n
                rate = done / max(time.monotonic() - began, 1e-9)
                bar.update(task[0], advance=n, rate=f"{rate:,.0f} events/s")

        with bar:
            yield on_total, advance
        return
    state = {"total": 0, "done": 0, "began": time.monotonic(), "shown": time.monotonic()}

    def plain_total(total: int) -> None:
        state["total"] = total

    def plain_advance(n: int) -> None:
        state["done"] += n
        now = time.monotonic()
        if now - state["shown"] < PLAIN_PROGRESS_EVERY:
            return
        state["shown"] = now
        rate = state["done"] / max(now - state["began"], 1e-9)
        left = (state["total"] - state["done"]) / rate if rate else 0
        click.echo(
            f"replay: {state['done']:,}/{state['total']:,} events, {rate:,.0f} events/s, "
            f"ETA {left:.0f} s",
            err=True,
        )

    yield plain_total, plain_advance


@click.group("replay", invoke_without_command=True)
@click.option(
    "--from",
    "source",
    type=click.Choice(["sqlite", "archive"]),
    help="sqlite: a SQLite archive (--db); archive: the EventBridge archive of --stage, "
    "through the bridge.",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("db"),
    show_default=True,
    help="The archive: `bridge offline`'s ./db, a bridge client's ./bridge.db, any copy.",
)
@click.option("--start", help="First time (inclusive): ISO 8601 (UTC), -2h, yesterday, today.")
@click.option("--end", help="Last time (exclusive), same forms; default: the last event.")
@click.option("--log", "logs", multiple=True, help="Only events of this log (repeatable).")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--pattern", help="Only events matching this EventBridge pattern (JSON).")
@click.option(
    "--to",
    "to",
    type=click.Choice(["bus", "dynamodb", "sqlite", "rules"]),
    help="bus: PutEvents as a replay; dynamodb: the log items into {stage}-dynamodb-logs; "
    "sqlite: a filtered copy into --out; rules (--from archive): the named --rule "
    "subscribers in the cloud.",
)
@click.option("--out", type=click.Path(path_type=Path), help="--to sqlite: the file to copy into.")
@click.option(
    "--speed",
    type=float,
    default=0.0,
    show_default=True,
    help="0: as fast as possible; 1: real time; 10: ten times faster (gaps scaled).",
)
@click.option("--name", "name", help="--to bus: the replay name (default: a fresh one).")
@click.option("--dry-run", is_flag=True, help="Say what would be sent where; send nothing.")
@click.option(
    "--stage",
    default=LOCAL_STAGE,
    show_default=True,
    help="--from sqlite --to dynamodb: whose table; --from archive: the cloud replayed from.",
)
@click.option(
    "--endpoint-url",
    help="--to dynamodb: DynamoDB endpoint (default $AWS_ENDPOINT_URL_DYNAMODB, else "
    "http://127.0.0.1:8000).",
)
@click.option(
    "--events-endpoint",
    "events_url",
    help="--to bus: EventBridge endpoint (default $AWS_ENDPOINT_URL_EVENTBRIDGE, else "
    "http://127.0.0.1:4010).",
)
@click.option("--region", help="AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION).")
@click.option("--profile", help="AWS profile for credentials (not needed locally).")
@click.option(
    "--archive",
    "archive_name",
    default=ARCHIVE_NAME,
    show_default=True,
    help="--from archive: the stage's archive.",
)
@click.option(
    "--rule", "rules", multiple=True, help="--to rules: a subscriber's rule (repeatable)."
)
@click.option(
    "--yes", is_flag=True, help="--to rules: start it (without: only say what it would do)."
)
@archive_replay_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def replay(
    ctx: click.Context,
    archive_name: str,
    rules: tuple[str, ...],
    yes: bool,
    url: str | None,
    sink_stage: str,
    sink_endpoint: str | None,
    quiet_period: float,
    source: str | None,
    db: Path,
    start: str | None,
    end: str | None,
    logs: tuple[str, ...],
    types: tuple[str, ...],
    pattern: str | None,
    to: str,
    out: Path | None,
    speed: float,
    name: str | None,
    dry_run: bool,
    stage: str,
    endpoint_url: str | None,
    events_url: str | None,
    region: str | None,
    profile: str | None,
    as_json: bool,
) -> None:
    """Replay archived events: into the local bus, a local log table or another file;
    or an EventBridge archive through the bridge, or to chosen subscribers in the cloud.

    \b
    Examples:
      bridge replay --from sqlite --to bus --start -2h            # handlers run again
      bridge replay --from sqlite --to bus --log users --type signup --speed 1
      bridge replay --from sqlite --start yesterday --end today --to dynamodb
      bridge replay --from sqlite --db bridge.db --to sqlite --out users.db --log users
      bridge replay --from sqlite --to bus --pattern '{"detail": {"type": ["signup"]}}' --dry-run

    Events go in original time order (log items in per-stream version order). --to bus
    sends each entry with the local extension `replay-name`: `bridge offline`'s bus
    delivers them as a replay and does not archive them again. --to dynamodb twice
    leaves the same table and publishes nothing the second time. --end is exclusive;
    a time without an offset is UTC.

    \b
    From the EventBridge archive of a stage (the seed's "AWS to local"):
      bridge replay --from archive --stage dev --start -2h --end now --to sqlite --out dev.db
      bridge replay --from archive --stage dev --start yesterday --end today --to dynamodb
      bridge replay --from archive --stage dev --start -1d --end now --to rules \\
        --rule dynamodb-logs-dev-users --yes
      bridge replay list --stage dev · bridge replay cancel NAME --stage dev
      bridge replay attach NAME --stage dev --to sqlite --out dev.db

    --from archive opens a bridge session for a fresh replay, starts an EventBridge
    replay whose FilterArns name only the bridge's replay rule (no production handler
    sees it), follows it, and is done when it is COMPLETED, --quiet-period has passed
    without an event (AWS sends some after COMPLETED) and the session's buffer is
    empty. Ctrl-C cancels the replay and keeps what arrived. --to rules replays to
    exactly the named rules; without --yes it only says what it would replay.
    A failed or cancelled replay, or events the bridge had to drop, exit non-zero.
    """
    if ctx.invoked_subcommand is not None:
        return
    if source is None or to is None:
        raise ValidationError(
            "give --from sqlite|archive and --to, or a subcommand: list, cancel, attach "
            "(see bridge replay --help)"
        )
    if source == "archive":
        for option, given in (("--db", db != Path("db")), ("--speed", speed != 0.0)):
            if given:
                raise ValidationError(f"{option} is for --from sqlite; an AWS replay paces itself")
        for option, given in (("--name", name is not None), ("--dry-run", dry_run)):
            if given:
                raise ValidationError(f"{option} is for --from sqlite")
        window = parse_range(start, end, datetime.now(UTC))
        if window.start is None or window.end is None:
            raise ValidationError("--from archive needs --start and --end (e.g. -2h and now)")
        settings = connect_settings(
            stage, to, out, url, sink_stage, sink_endpoint, region, profile, as_json
        )
        settings.pattern = subscription_pattern(pattern, logs, types)
        if to == "rules":
            to_rules(
                settings, window.start, window.end, rules, archive_name, yes, as_json, events_url
            )
            return
        if rules or yes:
            raise ValidationError("--rule and --yes are for --to rules")
        request = ReplayRequest(
            settings, window.start, window.end, archive_name, quiet=quiet_period
        )
        request.events_url = events_url
        run_archive(request, as_json)
        return
    if to == "rules" or rules or yes:
        raise ValidationError("--to rules and --rule are for --from archive")
    from bridge import replay as replaying
    from bridge.core.pacing import check_speed
    from bridge.core.replay_filter import ReplayFilter

    check_stage(stage)
    for option, values in (("--log", logs), ("--type", types)):
        for value in values:
            check_text(option, value)  # a byte that is not UTF-8 cannot be in the archive
    for option, text in (("--start", start), ("--end", end), ("--pattern", pattern)):
        if text is not None:
            check_text(option, text)
    replaying.check_out(to, out)
    speed = check_speed("--speed", speed)
    selection = ReplayFilter.of(parse_range(start, end, datetime.now(UTC)), logs, types, pattern)
    if name is not None and to != "bus":
        raise ValidationError(f"--name names a replay on the bus; --to {to} has none")
    target = _target(to, db, out, name, stage, endpoint_url, events_url, region, profile)
    with _progress(enabled=True) as (on_total, advance):
        summary = replaying.run_replay(
            db,
            selection,
            target,
            speed=speed,
            dry_run=dry_run,
            replay=getattr(target, "replay_name", None),
            on_total=on_total,
            progress=advance,
        )
    if as_json:
        _emit({"summary": summary.to_json()})
    else:
        click.echo("\n".join(replaying.summary_lines(summary)))


def _target(
    to: str,
    db: Path,
    out: Path | None,
    name: str | None,
    stage: str,
    endpoint_url: str | None,
    events_url: str | None,
    region: str | None,
    profile: str | None,
) -> Any:
    from bridge import replay as replaying
    from bridge import replay_targets

    if to == "sqlite":
        assert out is not None
        return replay_targets.SqliteTarget(out, db)
    if to == "dynamodb":
        where = Target(stage=stage, endpoint_url=endpoint_url, region=region, profile=profile)
        url = where.dynamodb_endpoint
        replaying.refuse_remote("dynamodb", url, url is not None and is_loopback(url))
        client = where.client("dynamodb", endpoint_url=url)
        return replay_targets.DynamoDBTarget(client, log_table_name(stage), str(url))
    url = events_endpoint(LOCAL_STAGE, events_url)
    replaying.refuse_remote("bus", url, url is not None and is_loopback(url))
    if name is not None:
        from bridge.core.rewrite import check_replay_name

        check_replay_name("--name", name)
    client = events_client(LOCAL_STAGE, url, region, profile)
    return replay_targets.BusTarget(client, str(url), name or replaying.replay_name())


for _command in (replay_list, replay_cancel, replay_attach):
    replay.add_command(_command)
