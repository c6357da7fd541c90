"""The CDK app: one logs stack for one stage, built from a subscriptions definition.

:func:`build_app` is what :mod:`bridge.deploy` and the tests call. Run as a module
(``python -m cloud_stack.app``) it is also a regular CDK app for the CDK CLI, taking
its settings from context: ``-c stage=dev`` (required), ``-c subscriptions=FILE``,
``-c archive_retention_days=N`` (0 = forever) and ``-c retain_data=false``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import aws_cdk as cdk

from bridge.core import names
from bridge.core.subscriptions import Subscriptions
from bridge.subscriptions import load
from cloud_stack.assets import stage_code
from cloud_stack.logs_stack import LogsStack

__all__ = ["DEFAULT_ARCHIVE_RETENTION_DAYS", "build_app", "main"]

#: Long enough to replay a quarter of history into a new read model; 0 keeps forever.
DEFAULT_ARCHIVE_RETENTION_DAYS = 90


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
    subs = load(config)
    staging = Path(tempfile.mkdtemp(prefix="dynamodb-logs-code-"))
    atexit.register(shutil.rmtree, staging, True)  # synth has copied it into cdk.out by then
    code = stage_code(subs, staging / "code", extra_handlers=(names.PUBLISHER_HANDLER,))
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
