"""The logs stack: table + stream + publisher + bus + archive + subscribers.

What it holds, and the choices that are not obvious:

* Both tables are encrypted with the **AWS managed key** (``aws/dynamodb``): data is
  encrypted at rest with KMS and key use is in CloudTrail, while no Lambda role needs
  ``kms:*`` grants (DynamoDB uses the key on the caller's behalf) and there is no key
  policy to get wrong and no monthly key charge. A customer managed key is worth it
  only for cross-account access or key-level revocation, which this design has none of.
* The publisher reads the stream from ``TRIM_HORIZON`` (items written before the
  mapping existed are still published), in batches of 25 over at most one second,
  four batches per shard in parallel (order is kept per partition key, which is all a
  log needs), bisecting a failing batch and reporting single failed records so one
  bad item cannot block a shard. After ten retries, or once a record is a day old
  (the stream's own retention), its position goes to an encrypted SQS queue.
* Every function has its own role holding the actions of the permissions its
  definition declares (``log:read``, ``core:write`` … — see
  :data:`PERMISSION_ACTIONS`), each on exactly its one table or bus; the publisher's
  role holds exactly what it calls. The single ``*`` resource is
  ``dynamodb:ListStreams``, which AWS does not scope to a resource.
* Every function has an explicit log group (kept one month) so logs do not live
  forever and its role can be limited to that group.
* Tables are retained when the stack is deleted unless ``retain_data`` is false:
  the log is the source of truth and a ``bridge destroy`` must not erase it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from cdk_nag import NagSuppressions
from constructs import Construct

from bridge.core import names
from bridge.core.events import SOURCE
from bridge.core.subscriptions import FunctionSpec, Subscriptions
from cloud_stack.functions import add_function, project_environment

__all__ = ["PERMISSION_ACTIONS", "LogsStack", "project_environment"]

TTL_ATTRIBUTE = "ttl"

# The publisher's event source mapping (see the module docstring for why).
STREAM_BATCH_SIZE = 25
STREAM_BATCHING_WINDOW_SECONDS = 1
STREAM_PARALLELIZATION = 4
STREAM_RETRY_ATTEMPTS = 10
STREAM_MAX_RECORD_AGE_SECONDS = 86_400
PUBLISHER_TIMEOUT_SECONDS = 60
PUBLISHER_MEMORY_MB = 256

_READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query")
_WRITE = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
)
#: permission of the definition -> (resource it applies to, IAM actions on that resource)
PERMISSION_ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "log:read": ("log", _READ),
    "log:write": ("log", ("dynamodb:PutItem",)),  # appends are conditional puts
    "core:read": ("core", _READ),
    "core:write": ("core", _WRITE),
    "bus:put": ("bus", ("events:PutEvents",)),
}


class LogsStack(cdk.Stack):
    """``dynamodb-logs-{stage}``: everything the log needs in one account and region."""

    def __init__(
        self,
        scope: Construct,
        *,
        stage: str,
        subscriptions: Subscriptions,
        code: Path,
        archive_retention_days: int,
        retain_data: bool = True,
        **kwargs: Any,
    ) -> None:
        names.check_stage(stage)
        if archive_retention_days < 0:
            raise ValueError("archive_retention_days must be 0 (keep forever) or more")
        stack = names.stack_name(stage)
        super().__init__(
            scope,
            stack,
            stack_name=stack,
            description=f"dynamodb-logs {stage}: append-only logs published to EventBridge",
            **kwargs,
        )
        self.stage = stage
        self.code = lambda_.Code.from_asset(str(code))
        removal = cdk.RemovalPolicy.RETAIN if retain_data else cdk.RemovalPolicy.DESTROY

        self.log_table = self._table(
            "LogTable",
            names.log_table_name(stage),
            dynamodb.AttributeType.NUMBER,
            removal,
            stream=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,  # what the publisher reads
        )
        self.core_table = self._table(
            "CoreTable", names.core_table_name(stage), dynamodb.AttributeType.STRING, removal
        )
        self.bus = events.EventBus(self, "Bus", event_bus_name=names.BUS_NAME)
        self.archive = events.Archive(
            self,
            "Archive",
            archive_name=names.ARCHIVE_NAME,
            source_event_bus=self.bus,
            description="Every log event, for replay (bridge replay --from aws)",
            event_pattern=events.EventPattern(source=[SOURCE]),
            # no retention = kept forever (CloudFormation's RetentionDays 0)
            retention=(
                cdk.Duration.days(archive_retention_days) if archive_retention_days else None
            ),
        )
        self.publisher = self._publisher()
        self.functions: dict[str, lambda_.Function] = {}
        self.roles: dict[str, iam.Role] = {}
        for spec in subscriptions.functions.values():
            self.functions[spec.name] = self._subscriber_function(spec)
        for spec in subscriptions.functions.values():
            self._async_invoke(spec)
            if spec.pattern is not None:
                self._rule(spec)
        self._outputs()

    # ------------------------------------------------------------------ storage

    def _table(
        self,
        construct_id: str,
        table_name: str,
        sort_key: dynamodb.AttributeType,
        removal: cdk.RemovalPolicy,
        stream: dynamodb.StreamViewType | None = None,
    ) -> dynamodb.Table:
        return dynamodb.Table(
            self,
            construct_id,
            table_name=table_name,
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=sort_key),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            stream=stream,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            time_to_live_attribute=TTL_ATTRIBUTE,
            removal_policy=removal,
        )

    # ------------------------------------------------------------------ functions

    def _publisher(self) -> lambda_.Function:
        function, role = add_function(
            self,
            stage=self.stage,
            code=self.code,
            name=names.PUBLISHER,
            handler=names.PUBLISHER_HANDLER,
            timeout=PUBLISHER_TIMEOUT_SECONDS,
            memory=PUBLISHER_MEMORY_MB,
            environment={},
        )
        self.publisher_failures = sqs.Queue(
            self,
            "PublisherFailures",
            queue_name=names.publisher_failures_queue_name(self.stage),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cdk.Duration.days(14),
            # only the stream mapping sends here; no other queue may use it as its DLQ
            redrive_allow_policy=sqs.RedriveAllowPolicy(
                redrive_permission=sqs.RedrivePermission.DENY_ALL
            ),
        )
        NagSuppressions.add_resource_suppressions(
            self.publisher_failures,
            [
                {
                    "id": "AwsSolutions-SQS3",
                    "reason": "This queue is itself the dead-letter destination of the stream "
                    "mapping (it holds stream positions of records that could not be "
                    "published); a DLQ behind a DLQ would only move the same messages.",
                }
            ],
        )
        # Adds to the role: stream read on this table's stream (and ListStreams, below)
        # and sqs:SendMessage on the failure queue.
        function.add_event_source(
            sources.DynamoEventSource(
                self.log_table,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=STREAM_BATCH_SIZE,
                max_batching_window=cdk.Duration.seconds(STREAM_BATCHING_WINDOW_SECONDS),
                parallelization_factor=STREAM_PARALLELIZATION,
                bisect_batch_on_error=True,
                report_batch_item_failures=True,
                retry_attempts=STREAM_RETRY_ATTEMPTS,
                max_record_age=cdk.Duration.seconds(STREAM_MAX_RECORD_AGE_SECONDS),
                on_failure=sources.SqsDlq(self.publisher_failures),
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["events:PutEvents"], resources=[self.bus.event_bus_arn])
        )
        NagSuppressions.add_resource_suppressions(
            role,
            [
                {
                    "id": "AwsSolutions-IAM5",
                    "reason": "dynamodb:ListStreams supports no resource-level permissions, so "
                    "AWS requires Resource '*' for it; Lambda's stream mapping calls it. All "
                    "other stream actions are limited to this table's stream ARN.",
                    "appliesTo": ["Resource::*"],
                }
            ],
            apply_to_children=True,
        )
        return function

    def _subscriber_function(self, spec: FunctionSpec) -> lambda_.Function:
        function, role = add_function(
            self,
            stage=self.stage,
            code=self.code,
            name=spec.name,
            handler=spec.handler,
            timeout=spec.timeout,
            memory=spec.memory,
            environment=spec.environment,
        )
        resources = {
            "log": self.log_table.table_arn,
            "core": self.core_table.table_arn,
            "bus": self.bus.event_bus_arn,
        }
        for permission in spec.permissions:
            target, actions = PERMISSION_ACTIONS[permission]
            role.add_to_policy(
                iam.PolicyStatement(actions=list(actions), resources=[resources[target]])
            )
        self.roles[spec.name] = role
        return function

    def _async_invoke(self, spec: FunctionSpec) -> None:
        """Retries, event age and the onFailure destination of an async invoke."""
        function = self.functions[spec.name]
        destination = None
        if spec.on_failure is not None:
            target = self.functions[spec.on_failure]
            # Lambda checks this permission when the destination is configured, so the
            # config below must wait for the role's policy (the dependency at the end).
            self.roles[spec.name].add_to_policy(
                iam.PolicyStatement(
                    actions=["lambda:InvokeFunction"], resources=[target.function_arn]
                )
            )
            destination = lambda_.CfnEventInvokeConfig.DestinationConfigProperty(
                on_failure=lambda_.CfnEventInvokeConfig.OnFailureProperty(
                    destination=target.function_arn
                )
            )
        config = lambda_.CfnEventInvokeConfig(
            self,
            f"Fn-{spec.name}-AsyncInvoke",
            function_name=function.function_name,
            qualifier="$LATEST",
            maximum_retry_attempts=spec.retry_attempts,
            maximum_event_age_in_seconds=spec.max_event_age,
            destination_config=destination,
        )
        config.node.add_dependency(self.roles[spec.name])

    def _rule(self, spec: FunctionSpec) -> None:
        """A rule on the bus with the definition's pattern, verbatim, targeting the function."""
        function = self.functions[spec.name]
        rule = events.CfnRule(
            self,
            f"Fn-{spec.name}-Rule",
            name=names.function_name(self.stage, spec.name),
            description=f"Events for {spec.name} ({spec.handler})",
            event_bus_name=self.bus.event_bus_name,
            event_pattern=spec.pattern,
            state="ENABLED",
            targets=[events.CfnRule.TargetProperty(id=spec.name, arn=function.function_arn)],
        )
        function.add_permission(
            f"Fn-{spec.name}-BusInvoke",
            principal=iam.ServicePrincipal("events.amazonaws.com"),
            source_arn=rule.attr_arn,
        )

    # ------------------------------------------------------------------ outputs

    def _outputs(self) -> None:
        cdk.CfnOutput(self, "LogTableName", value=self.log_table.table_name)
        cdk.CfnOutput(self, "LogTableStreamArn", value=self.log_table.table_stream_arn or "")
        cdk.CfnOutput(self, "CoreTableName", value=self.core_table.table_name)
        cdk.CfnOutput(self, "EventBusName", value=self.bus.event_bus_name)
        cdk.CfnOutput(self, "EventBusArn", value=self.bus.event_bus_arn)
        cdk.CfnOutput(self, "ArchiveArn", value=self.archive.archive_arn)
        cdk.CfnOutput(self, "PublisherFailureQueueUrl", value=self.publisher_failures.queue_url)
