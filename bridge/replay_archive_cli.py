"""``bridge replay --from archive`` and ``bridge replay list|cancel|attach``: the CLI
of replays of an EventBridge archive (the engine is :mod:`bridge.client.archive_replay`).

``bridge.replay_cli`` owns the ``replay`` group and registers these subcommands.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from bridge.aws import LOCAL_STAGE
from bridge.client.archive_replay import DEFAULT_QUIET, ReplayRequest
from bridge.client.run import ConnectSettings
from bridge.core.errors import ValidationError
from bridge.core.inputs import check_text, check_url
from bridge.core.names import check_stage


def _emit(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, default=str))


def archive_replay_options(command: Any) -> Any:
    """The options of a replay through the bridge (``--from archive``, ``attach``)."""
    for option in reversed(
        [
            click.option(
                "--url",
                help="--from archive: the bridge's WebSocket URL (default: the bridge "
                "stack's output; offline's bridge port for stage local).",
            ),
            click.option(
                "--sink-stage",
                default=LOCAL_STAGE,
                show_default=True,
                help="--from archive --to dynamodb|bus: the local stage written into.",
            ),
            click.option(
                "--sink-endpoint",
                help="--from archive --to dynamodb|bus: the local endpoint (default "
                "offline's :8000 / :4010).",
            ),
            click.option(
                "--quiet-period",
                type=click.FloatRange(min=0),
                default=DEFAULT_QUIET,
                show_default=True,
                metavar="SECONDS",
                help="--from archive: seconds without an event after COMPLETED before it "
                "is done (AWS delivers some events late).",
            ),
        ]
    ):
        command = option(command)
    return command


# --------------------------------------------------------------------------- --from archive


def connect_settings(
    stage: str,
    to: str,
    out: Path | None,
    url: str | None,
    sink_stage: str,
    sink_endpoint: str | None,
    region: str | None,
    profile: str | None,
    as_json: bool,
) -> ConnectSettings:
    """The bridge and sink settings of a replay through the bridge (as `bridge connect`)."""
    check_stage(stage)
    check_stage(sink_stage)
    if to == "sqlite" and out is None:
        raise ValidationError("--to sqlite needs --out FILE (the file the replay goes into)")
    if url is not None:
        check_text("--url", url)
    return ConnectSettings(
        stage=stage,
        url=url,
        sink=to if to != "rules" else "none",
        out=out,
        sink_endpoint=check_url("--sink-endpoint", sink_endpoint) if sink_endpoint else None,
        sink_stage=sink_stage,
        as_json=as_json,
        profile=profile,
        region=region,
    )


def run_archive(request: ReplayRequest, as_json: bool) -> None:
    from bridge.client.archive_replay import run_archive_replay

    values = run_archive_replay(request)
    _finish(values, as_json)


def _finish(values: dict[str, Any], as_json: bool) -> None:
    """Print the summary; exit non-zero unless the replay completed with nothing lost."""
    from bridge.client.run import summary_line

    if as_json:
        _emit({"summary": values})
    else:
        click.echo(f"replay {values['replay']} {values['state'].lower()}: {summary_line(values)}")
    if values["state"] in ("CANCELLED", "INTERRUPTED"):
        sys.exit(130)
    if not values["ok"]:
        sys.exit(1)


def to_rules(
    settings: ConnectSettings,
    start: datetime,
    end: datetime,
    rules: tuple[str, ...],
    archive_name: str,
    yes: bool,
    as_json: bool,
    events_url: str | None,
) -> None:
    from bridge.client.archive_replay import plan_rules_replay, run_rules_replay

    if settings.out is not None:
        raise ValidationError("--out is for --to sqlite; --to rules writes nothing here")
    events, plan = plan_rules_replay(settings, start, end, list(rules), archive_name, events_url)
    if not yes:
        lines = ["would replay (add --yes to start it):", *plan.lines()]
        click.echo("\n".join(lines), err=True)
        sys.exit(1)
    result = run_rules_replay(events, plan)
    if as_json:
        _emit({"summary": result})
    else:
        reason = f" ({result['reason']})" if result.get("reason") else ""
        click.echo(
            f"replay {result['replay']} to {', '.join(result['rules'])}: "
            f"{result['state'].lower()}{reason}"
        )
    if not result["ok"]:
        sys.exit(130 if result["state"] == "CANCELLED" else 1)


def _cloud_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--stage", default=LOCAL_STAGE, show_default=True, help="The cloud's stage."
            ),
            click.option(
                "--region", help="AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION)."
            ),
            click.option("--profile", help="AWS profile for credentials."),
        ]
    ):
        command = option(command)
    return command


@click.command("list")
@_cloud_options
@click.option("--json", "as_json", is_flag=True, help="Print the replays as JSON.")
def replay_list(stage: str, region: str | None, profile: str | None, as_json: bool) -> None:
    """The stage's replays, newest first (AWS runs at most 10 at once per region).

    \b
    Example:
      bridge replay list --stage dev
    """
    from bridge.client.archive_replay import list_replays

    check_stage(stage)
    rows = list_replays(ConnectSettings(stage=stage, region=region, profile=profile))
    if as_json:
        _emit({"replays": rows})
        return
    if not rows:
        click.echo("no replays")
    for row in rows:
        click.echo(f"{row['name']}  {row['state']}  {row['start']} .. {row['end']}")


@click.command("cancel")
@click.argument("name")
@_cloud_options
def replay_cancel(name: str, stage: str, region: str | None, profile: str | None) -> None:
    """Cancel a running replay (CancelReplay).

    \b
    Example:
      bridge replay cancel bridge-dev-20261201T101500Z-1a2b3c --stage dev
    """
    from bridge.client.archive_replay import cancel_replay

    check_stage(stage)
    state = cancel_replay(ConnectSettings(stage=stage, region=region, profile=profile), name)
    click.echo(f"replay {name}: {state.lower()}")


@click.command("attach")
@click.argument("name")
@_cloud_options
@click.option(
    "--to",
    "to",
    type=click.Choice(["bus", "dynamodb", "sqlite"]),
    required=True,
    help="The sink the replay was going into (the same --out: it holds the cursor).",
)
@click.option("--out", type=click.Path(path_type=Path), help="--to sqlite: the file.")
@archive_replay_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay_attach(
    name: str,
    stage: str,
    region: str | None,
    profile: str | None,
    to: str,
    out: Path | None,
    url: str | None,
    sink_stage: str,
    sink_endpoint: str | None,
    quiet_period: float,
    as_json: bool,
) -> None:
    """Take up a `--from archive` replay whose client stopped (killed, a lost laptop
    lid) and finish it: its session kept the events; the sink's cursor says where
    it was.

    \b
    Example:
      bridge replay attach bridge-dev-20261201T101500Z-1a2b3c --stage dev --to sqlite --out dev.db
    """
    from bridge.core.rewrite import check_replay_name

    check_replay_name("NAME", name)
    settings = connect_settings(
        stage, to, out, url, sink_stage, sink_endpoint, region, profile, as_json
    )
    run_archive(ReplayRequest(settings, name=name, attach=True, quiet=quiet_period), as_json)
