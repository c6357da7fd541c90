"""Names of the resources of a stage, in AWS and offline alike, and AWS's checks on them.

One place for them: the CDK stack, the local cloud (functions, rules, ARNs) and the
CLI all name things through here. Pure, so :mod:`bridge.deploy` can validate a stage
before paying for a jsii start-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bridge.core.errors import ValidationError
from bridge.core.events import ARCHIVE_NAME, BUS_NAME, DEFAULT_REGION, LOCAL_ACCOUNT

__all__ = [
    "ARCHIVE_NAME",
    "BUS_NAME",
    "DEFAULT_REGION",
    "LOCAL_ACCOUNT",
    "PUBLISHER",
    "check_stage",
    "core_table_name",
    "function_arn",
    "function_name",
    "log_group_name",
    "log_table_name",
    "publisher_failures_queue_name",
    "region_from",
    "stack_name",
]

PUBLISHER = "publisher"


def region_from(environ: Mapping[str, str]) -> str:
    """The region when none is given: Lambda's ``AWS_REGION``, the SDKs'
    ``AWS_DEFAULT_REGION``, then us-east-1 — the same everywhere, CLI and functions."""
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


PUBLISHER_HANDLER = "bridge.lambdas.publisher.handler"
# A stack name is letters, digits and hyphens; the stage is also part of table,
# function and queue names, so it keeps to the characters all of them accept.
_STAGE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")
_MAX_FUNCTION_NAME = 64  # Lambda's limit


def check_stage(stage: str) -> str:
    """Refuse a stage that would make an invalid stack, table or function name."""
    if not _STAGE.match(stage):
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
