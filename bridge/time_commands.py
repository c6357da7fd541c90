"""The `bridge diff` (and `bridge rebuild`) commands: parse, call, print.

Kept apart from :mod:`bridge.cli` so that file only registers them; the work is in
:mod:`bridge.diff` (and :mod:`bridge.rebuild`), imported when a command runs. Errors
are raised as :class:`~bridge.core.errors.BridgeError`: ``bridge.cli.main`` turns them
into one line and a non-zero exit like every other command's.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from bridge.aws import default_region


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


COMMANDS = [diff]
