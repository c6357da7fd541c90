"""What every function of both stacks is built from: runtime, role, log group, environment.

The logs stack and the bridge stack make their functions through :func:`add_function`
so both keep the same shape: one role per function that may write only that
function's own log group (kept one month), the pinned runtime and architecture, and
the project's variables (:func:`project_environment`) under the function's own.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from cdk_nag import NagSuppressions
from constructs import Construct

from bridge.core import names
from bridge.core.subscriptions import PROJECT_VARIABLES

__all__ = [
    "ARCHITECTURE",
    "LOG_RETENTION",
    "RUNTIME",
    "add_function",
    "project_environment",
]

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64
LOG_RETENTION = logs.RetentionDays.ONE_MONTH

_L1_REASON = (
    "The runtime is pinned to python3.12, the Python the handlers are tested on; moving "
    "to a newer runtime is a deliberate, tested change rather than a side effect of a deploy."
)


def project_environment(stage: str) -> dict[str, str]:
    """The variables every function gets (AWS and offline alike)."""
    values = (names.log_table_name(stage), names.core_table_name(stage), names.BUS_NAME)
    return dict(zip(PROJECT_VARIABLES, values, strict=True))


def add_function(
    scope: Construct,
    *,
    stage: str,
    code: lambda_.Code,
    name: str,
    handler: str,
    timeout: int,
    memory: int,
    environment: Mapping[str, str],
) -> tuple[lambda_.Function, iam.Role]:
    """``dynamodb-logs-{stage}-{name}`` with its own role and log group, allowed to write
    only its logs; the caller adds whatever else the role needs."""
    function_name = names.function_name(stage, name)
    construct_id = f"Fn-{name}"
    log_group = logs.LogGroup(
        scope,
        f"{construct_id}-Logs",
        log_group_name=names.log_group_name(function_name),
        retention=LOG_RETENTION,
        removal_policy=cdk.RemovalPolicy.DESTROY,
    )
    role = iam.Role(
        scope,
        f"{construct_id}-Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"Execution role of {function_name}",
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn],  # the group's own streams only
        )
    )
    function = lambda_.Function(
        scope,
        construct_id,
        function_name=function_name,
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        handler=handler,
        code=code,
        role=role,
        timeout=cdk.Duration.seconds(timeout),
        memory_size=memory,
        environment={**project_environment(stage), **environment},
        log_group=log_group,
    )
    NagSuppressions.add_resource_suppressions(
        function, [{"id": "AwsSolutions-L1", "reason": _L1_REASON}]
    )
    return function, role
