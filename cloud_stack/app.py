"""The CDK apps: the logs stack, or the bridge stack beside it, for one stage.

:func:`build_app` (the logs stack, from a subscriptions definition) and
:func:`build_bridge_app` (the bridge stack, from its ``[bridge]`` settings) are what
:mod:`bridge.deploy` and the tests call. Each app holds one stack, so deploying or
destroying one never touches the other. Run as a module (``python -m
cloud_stack.app``) it is also a regular CDK app for the CDK CLI, taking its settings
from context: ``-c stage=dev`` (required), ``-c subscriptions=FILE``,
``-c archive_retention_days=N`` (0 = forever), ``-c retain_data=false``, and
``-c bridge=true`` for the bridge stack instead of the logs stack.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import aws_cdk as cdk

from bridge.core import names
from bridge.core.subscriptions import BridgeSettings, Subscriptions
from bridge.subscriptions import load
from cloud_stack.assets import stage_code
from cloud_stack.bridge_stack import BridgeStack
from cloud_stack.logs_stack import LogsStack

__all__ = [
    "BRIDGE_EXTRA_HANDLERS",
    "DEFAULT_ARCHIVE_RETENTION_DAYS",
    "LOGS_EXTRA_HANDLERS",
    "build_app",
    "build_bridge_app",
    "main",
]

#: Long enough to replay a quarter of history into a new read model; 0 keeps forever.
DEFAULT_ARCHIVE_RETENTION_DAYS = 90
#: The infrastructure handlers each stack's asset must hold (see stage_code). The
#: asset's content is the same either way (all of bridge.core and bridge.lambdas), so
#: both stacks share one upload; the bridge's list only adds the existence checks.
LOGS_EXTRA_HANDLERS: tuple[str, ...] = (names.PUBLISHER_HANDLER,)
BRIDGE_EXTRA_HANDLERS: tuple[str, ...] = (
    names.PUBLISHER_HANDLER,
    *names.BRIDGE_HANDLERS.values(),
)


def build_app(
    stage: str,
    subscriptions: Subscriptions,
    code: Path,
    *,
    outdir: str | Path | None = None,
    archive_retention_days: int = DEFAULT_ARCHIVE_RETENTION_DAYS,
    retain_data: bool = True,
) -> tuple[cdk.App, LogsStack]:
    """An app holding the logs stack; ``code`` is a directory made by :func:`stage_code`.

    The stack is environment-agnostic (no account or region): the CDK CLI deploys it
    wherever the credentials point, so synthesizing needs no AWS access at all.
    """
    names.check_stage(stage)
    app = cdk.App(outdir=str(outdir) if outdir is not None else None)
    stack = LogsStack(
        app,
        stage=stage,
        subscriptions=subscriptions,
        code=code,
        archive_retention_days=archive_retention_days,
        retain_data=retain_data,
    )
    return app, stack


def build_bridge_app(
    stage: str,
    settings: BridgeSettings,
    code: Path,
    *,
    outdir: str | Path | None = None,
) -> tuple[cdk.App, BridgeStack]:
    """An app holding the bridge stack; ``code`` is made by :func:`stage_code` with
    :data:`BRIDGE_EXTRA_HANDLERS`. Environment-agnostic, like :func:`build_app`."""
    names.check_stage(stage)
    app = cdk.App(outdir=str(outdir) if outdir is not None else None)
    stack = BridgeStack(app, stage=stage, settings=settings, code=code)
    return app, stack


def _flag(value: object, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in ("false", "0", "no", "off")


def main() -> None:
    """Entry point for the CDK CLI (``cdk --app "python -m cloud_stack.app" -c stage=dev``)."""
    probe = cdk.App()
    stage = probe.node.try_get_context("stage")
    if not stage:
        raise SystemExit("cloud_stack.app: pass the stage as context: -c stage=dev")
    config = probe.node.try_get_context("subscriptions")
    retention = probe.node.try_get_context("archive_retention_days")
    retain = _flag(probe.node.try_get_context("retain_data"), True)
    bridge = _flag(probe.node.try_get_context("bridge"), False)
    subs = load(config)
    staging = Path(tempfile.mkdtemp(prefix="dynamodb-logs-code-"))
    atexit.register(shutil.rmtree, staging, True)  # synth has copied it into cdk.out by then
    extra = BRIDGE_EXTRA_HANDLERS if bridge else LOGS_EXTRA_HANDLERS
    code = stage_code(subs, staging / "code", extra_handlers=extra)
    if bridge:
        build_bridge_app(str(stage), subs.bridge, code)[0].synth()
        return
    app, _ = build_app(
        str(stage),
        subs,
        code,
        archive_retention_days=(
            int(retention) if retention is not None else DEFAULT_ARCHIVE_RETENTION_DAYS
        ),
        retain_data=retain,
    )
    app.synth()


if __name__ == "__main__":
    main()
