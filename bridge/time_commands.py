"""The `bridge diff` and `bridge rebuild` commands: parse, call, print.

Kept apart from :mod:`bridge.cli` so that file only registers them; the work is in
:mod:`bridge.diff` and :mod:`bridge.rebuild`, imported when a command runs. Errors
are raised as :class:`~bridge.core.errors.BridgeError`: ``bridge.cli.main`` turns them
into one line and a non-zero exit like every other command's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bridge.aws import default_region
from bridge.core.errors import BridgeError, ValidationError


@click.command()
@click.argument("dir_a", type=click.Path(path_type=Path))
@click.argument("dir_b", type=click.Path(path_type=Path))
@click.option(
    "--table",
    default="core",
    show_default=True,
    help="core ({stage}-core), log ({stage}-dynamodb-logs), or a full table name.",
)
@click.option("--stage", default="local", show_default=True, help="Stage the tables are named for.")
@click.option(
    "--region",
    default=default_region,
    show_default="$AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1",
    help="Region the local tables were made in (as `bridge offline --region`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the differences as one JSON object.")
def diff(dir_a: Path, dir_b: Path, table: str, stage: str, region: str, as_json: bool) -> None:
    """What changed in a table between two local databases, item by item.

    DIR_A and DIR_B each hold a local cloud's database (DIR/db, as `bridge offline
    --db DIR/db` or `bridge rebuild --into DIR` leave it), or are the database files.
    Nothing needs to run: the files are read as they are.

    \b
    Examples:
      bridge diff before/ after/
      bridge diff before/ after/ --table log --json
    """
    from bridge.core.names import check_stage
    from bridge.diff import diff_databases

    check_stage(stage)
    result = diff_databases(dir_a, dir_b, table=table, stage=stage, region=region)
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False, default=str))
    else:
        for line in result.lines():
            click.echo(line)


@click.command()
@click.option(
    "--as-of",
    "as_of",
    required=True,
    metavar="T",
    help="ISO 8601 (no offset: UTC), -2h, yesterday, now.",
)
@click.option(
    "--from",
    "source_kind",
    type=click.Choice(["sqlite", "archive"]),
    default="sqlite",
    show_default=True,
    help="Where the events come from: a local archive (--db), or the EventBridge archive "
    "of --archive-stage, replayed through the bridge into DIR/archive.db first.",
)
@click.option(
    "--archive-stage",
    help="--from archive: the cloud whose archive is replayed (e.g. dev).",
)
@click.option(
    "--url",
    help="--from archive: the bridge's WebSocket URL (default: the bridge stack's output).",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("db"),
    show_default=True,
    help="The SQLite archive to read (a `bridge offline` database or a bridge client's file).",
)
@click.option(
    "--function",
    "functions",
    multiple=True,
    metavar="NAME",
    help="Only this subscriber of dynamodb-logs.toml gets the events (repeatable; default all).",
)
@click.option(
    "--into",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A new directory: the rebuilt database is DIR/db.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Subscriptions definition (default: ./dynamodb-logs.toml, else the built-in).",
)
@click.option("--stage", default="local", show_default=True, help="Stage the tables are named for.")
@click.option(
    "--region",
    default=default_region,
    show_default="$AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1",
    help="Region of the rebuilt local tables (as `bridge offline --region`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("-v", "--verbose", is_flag=True, help="Show every invocation of the local cloud.")
def rebuild(
    as_of: str,
    source_kind: str,
    archive_stage: str | None,
    url: str | None,
    db: Path,
    functions: tuple[str, ...],
    into: Path,
    config: Path | None,
    stage: str,
    region: str,
    as_json: bool,
    verbose: bool,
) -> None:
    """Build a local cloud database as it was at a moment: log and read models.

    The archived log events up to T (inclusive) go through the same pipeline a
    live write takes: log table -> stream -> publisher -> your subscribed handlers.
    Then `bridge offline --db DIR/db` serves that moment.

    \b
    Examples:
      bridge rebuild --as-of 2024-05-01T12:00:00Z --into before/
      bridge rebuild --as-of 2024-05-01T12:05:00Z --function users --into after/
      bridge diff before/ after/
      bridge rebuild --as-of -1h --from archive --archive-stage dev --into an-hour-ago/
    """
    import asyncio

    from rich.console import Console
    from rich.progress import Progress

    from bridge.archive import count
    from bridge.core.names import check_stage
    from bridge.offline.cli_runner import configure_logging, handler_root
    from bridge.rebuild import archive_end, check_paths, parse_as_of, select_functions
    from bridge.rebuild import rebuild as run_rebuild
    from bridge.subscriptions import load

    check_stage(stage)
    moment = parse_as_of(as_of)
    subscriptions = select_functions(load(config), functions)
    if source_kind == "archive":
        db = _replayed_archive(archive_stage, url, moment, into)
    elif archive_stage or url:
        raise ValidationError("--archive-stage and --url are for --from archive")
    check_paths(db, into)  # before the bar starts: an error is then its one line alone
    configure_logging(0 if verbose else -1)
    total = count(db, end=archive_end(moment)) if db.is_file() else 0
    console = Console(stderr=True)
    # Not on a terminal (a log file, a test), a bar would only leave a blank line.
    with Progress(
        console=console, disable=as_json or not console.is_terminal, transient=True
    ) as bar:
        task = bar.add_task("applying log events", total=total or None)
        summary = asyncio.run(
            run_rebuild(
                db,
                moment,
                into,
                subscriptions,
                handler_root(subscriptions),
                stage=stage,
                region=region,
                on_progress=lambda n: bar.advance(task, n),
            )
        )
    if as_json:
        click.echo(json.dumps(summary.to_json(), ensure_ascii=False, default=str))
    else:
        for line in summary.lines():
            click.echo(line)


def _replayed_archive(stage: str | None, url: str | None, moment: Any, into: Path) -> Path:
    """The cloud's archive up to the moment, replayed through the bridge into
    DIR/archive.db (kept: it is the source of the rebuild); its path."""
    from datetime import timedelta

    from bridge.client.archive_replay import ReplayRequest, run_archive_replay
    from bridge.client.run import ConnectSettings
    from bridge.core.names import check_stage
    from bridge.diff import DB_FILE

    if not stage:
        raise ValidationError("--from archive needs --archive-stage (the cloud, e.g. dev)")
    check_stage(stage)
    out = into / "archive.db"
    for there in (out, into / DB_FILE):  # refused before anything is replayed
        if there.exists():
            raise BridgeError(f"{there} exists: rebuild into a new directory (or remove it)")
    made = not into.exists()
    into.mkdir(parents=True, exist_ok=True)
    settings = ConnectSettings(stage=stage, url=url, sink="sqlite", out=out)
    # --end is exclusive and EventBridge times are whole seconds: a second past T.
    request = ReplayRequest(settings, None, moment + timedelta(seconds=1))
    try:
        values = run_archive_replay(request)
    except BaseException:
        if made and not out.exists():  # refused before anything was replayed: leave no trace
            into.rmdir()
        raise
    if not values["ok"]:
        raise BridgeError(
            f"the replay of {stage}'s archive ended {values['state']} with {values['written']} "
            f"events written to {out}; nothing was rebuilt"
        )
    click.echo(f"replayed {values['written']} events of {stage}'s archive into {out}", err=True)
    return out


COMMANDS = [diff, rebuild]
