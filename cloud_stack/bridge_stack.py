"""The bridge stack: a WebSocket API that streams the bus's events to connected clients.

``dynamodb-logs-bridge-{stage}`` deploys beside the logs stack ``dynamodb-logs-{stage}``
and lives on its bus. What it holds, and the choices that are not obvious:

* **No cross-stack references.** The bus is imported by its fixed name
  (``dynamodb-log``) and its ARN is built from the stack's own account and region, so
  the template holds no ``Fn::ImportValue``. An export would pin the logs stack: it
  could not be updated in a way that changes the export, nor deleted, while this
  stack imports it. The price is that CloudFormation does not know the order; the
  CLI keeps it (``bridge deploy --bridge`` needs the logs stack, ``bridge destroy``
  of the logs stack is refused while this one exists: the bus holds this stack's
  rules, and deleting it either fails or takes them along, depending on which page
  of EventBridge's documentation is right; a broken bridge stack either way).
* **The WebSocket API** routes on ``$request.body.action``: ``$connect`` is the only
  route with authorization (IAM, SigV4; API Gateway authorizes once per connection,
  the other routes run on the connection it let in), ``$disconnect`` and ``$default``
  plus one route per client action, all but the connect/disconnect ones on
  bridge-message. The stage ``{stage}`` deploys itself, writes an access log (who
  connected, from where, with what result) and is throttled.
* **The bridge table** is a buffer, not a record: items expire by TTL (``ttl``),
  it is deleted with the stack, and point-in-time recovery is off.
* **Forward** is the target of two rules on the bus, live events and replayed ones,
  each with EventBridge's longest retry policy (185 attempts over 24 h) and a
  dead-letter queue. EventBridge's retries end once Lambda has *accepted* the event;
  a forward that then fails is retried by Lambda's async invoke (twice), and its
  failure record goes to the same queue, so no event leaves the bridge unseen.
* **Least privilege.** Each function has its own role: its own log group, the
  bridge table (exact item actions, that table only), and, for the functions that
  post to or close connections, ``execute-api:ManageConnections`` on this API's
  stage only. bridge-disconnect only clears a record and gets no ManageConnections.
* The function code is the logs stack's asset (:func:`cloud_stack.assets.stage_code`),
  so both stacks upload one archive; the handler names come from
  :mod:`bridge.core.names`, and staging the asset is what checks they exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import aws_cdk as cdk
import jsii
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from cdk_nag import NagSuppressions
from constructs import Construct, IConstruct

from bridge.core import names
from bridge.core.subscriptions import (
    BRIDGE_FORWARD_TIMEOUT,
    BRIDGE_ROUTE_TIMEOUT,
    BridgeSettings,
)
from cloud_stack.functions import LOG_RETENTION, add_function

__all__ = [
    "BRIDGE_TABLE_ACTIONS",
    "MANAGEMENT_ENDPOINT_VARIABLE",
    "BridgeStack",
]

#: What every bridge function may do on the bridge table (and nothing else there).
BRIDGE_TABLE_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
)
#: botocore reads it to find the @connections endpoint, so the Lambda code is the same
#: in AWS and offline (where it points at the local gateway).
MANAGEMENT_ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"
TTL_ATTRIBUTE = "ttl"
MEMORY_MB = 256
# EventBridge's maxima for a target: keep trying for a day rather than drop an event.
RULE_RETRY_ATTEMPTS = 185
RULE_MAX_EVENT_AGE_SECONDS = 86_400
# Lambda's async invoke of forward after EventBridge handed the event over.
FORWARD_RETRY_ATTEMPTS = 2
FORWARD_MAX_EVENT_AGE_SECONDS = 21_600
DLQ_RETENTION = cdk.Duration.days(14)
# Stage-wide (all clients together). A client sends a few messages a second (acks are
# cumulative, a ping every few minutes), so this leaves room for dozens of clients while a
# runaway or hostile signed client cannot run up the Lambda bill.
THROTTLE_RATE_PER_SECOND = 500
THROTTLE_BURST = 1000
#: The access log's fields: who (IAM caller), from where, which route, what result.
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "time": "$context.requestTimeEpoch",
    "eventType": "$context.eventType",
    "routeKey": "$context.routeKey",
    "connectionId": "$context.connectionId",
    "status": "$context.status",
    "sourceIp": "$context.identity.sourceIp",
    "userArn": "$context.identity.userArn",
    "caller": "$context.identity.caller",
    "authorizeStatus": "$context.authorize.status",
    "authorizeError": "$context.authorize.error",
    "error": "$context.error.message",
}


@jsii.implements(apigw.IAccessLogSettings)
class _AccessLog:
    """Where the stage writes its access log, in :data:`ACCESS_LOG_FORMAT`."""

    def __init__(self, group: logs.ILogGroup) -> None:
        self._destination = apigw.LogGroupLogDestination(group)

    @property
    def destination(self) -> apigw.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigateway.AccessLogFormat:
        return apigateway.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT))


class BridgeStack(cdk.Stack):
    """``dynamodb-logs-bridge-{stage}``: the bridge API, its table, functions and rules."""

    def __init__(
        self,
        scope: Construct,
        *,
        stage: str,
        settings: BridgeSettings,
        code: Path,
        **kwargs: Any,
    ) -> None:
        names.check_stage(stage)
        stack = names.bridge_stack_name(stage)
        super().__init__(
            scope,
            stack,
            stack_name=stack,
            description=f"dynamodb-logs {stage}: the bridge, bus events to WebSocket clients",
            **kwargs,
        )
        self.stage = stage
        self.code = lambda_.Code.from_asset(str(code))
        self.bus = events.EventBus.from_event_bus_name(self, "Bus", names.BUS_NAME)
        self.table = self._table()
        environment = settings.environment(self.table.table_name)
        self.functions: dict[str, lambda_.Function] = {}
        self.roles: dict[str, iam.Role] = {}
        for name, handler in names.BRIDGE_HANDLERS.items():
            timeout = (
                BRIDGE_FORWARD_TIMEOUT if name == names.BRIDGE_FORWARD else BRIDGE_ROUTE_TIMEOUT
            )
            function, role = add_function(
                self,
                stage=stage,
                code=self.code,
                name=name,
                handler=handler,
                timeout=timeout,
                memory=MEMORY_MB,
                environment=environment,
            )
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=list(BRIDGE_TABLE_ACTIONS), resources=[self.table.table_arn]
                )
            )
            self.functions[name], self.roles[name] = function, role
        self.api, self.api_stage = self._api()
        for name, function in self.functions.items():
            function.add_environment(MANAGEMENT_ENDPOINT_VARIABLE, self.api_stage.callback_url)
            if name != names.BRIDGE_DISCONNECT:
                self.api_stage.grant_management_api_access(self.roles[name])
        self._management_suppression()
        self.dead_letters = self._dead_letter_queue()
        self._forward_async_invoke()
        self.rules = {kind: self._rule(kind) for kind in names.BRIDGE_RULE_KINDS}
        self._outputs()

    # ------------------------------------------------------------------ storage

    def _table(self) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            "BridgeTable",
            table_name=names.bridge_table_name(self.stage),
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            time_to_live_attribute=TTL_ATTRIBUTE,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        NagSuppressions.add_resource_suppressions(
            table,
            [
                {
                    "id": "AwsSolutions-DDB3",
                    "reason": "The bridge table is a buffer of sessions and undelivered events "
                    "that expire by TTL within days; the log table is the record. A restore "
                    "would bring back expired sessions, so point-in-time recovery buys nothing.",
                }
            ],
        )
        return table

    # ------------------------------------------------------------------ the API

    def _api(self) -> tuple[apigw.WebSocketApi, apigw.WebSocketStage]:
        connect = integrations.WebSocketLambdaIntegration(
            "Connect", self.functions[names.BRIDGE_CONNECT]
        )
        disconnect = integrations.WebSocketLambdaIntegration(
            "Disconnect", self.functions[names.BRIDGE_DISCONNECT]
        )
        message = integrations.WebSocketLambdaIntegration(
            "Message", self.functions[names.BRIDGE_MESSAGE]
        )
        api = apigw.WebSocketApi(
            self,
            "Api",
            api_name=names.bridge_api_name(self.stage),
            description=f"The bridge of stage {self.stage}: bus events to connected clients",
            route_selection_expression=names.BRIDGE_ROUTE_SELECTION,
            connect_route_options=apigw.WebSocketRouteOptions(
                integration=connect, authorizer=authorizers.WebSocketIamAuthorizer()
            ),
            disconnect_route_options=apigw.WebSocketRouteOptions(integration=disconnect),
            default_route_options=apigw.WebSocketRouteOptions(integration=message),
        )
        # every route but $connect: the client actions, and the two the API made itself
        routes: list[IConstruct] = [
            api.add_route(action, integration=message) for action in names.BRIDGE_CLIENT_ACTIONS
        ]
        routes += [api.node.find_child(f"{key}-Route") for key in ("$disconnect", "$default")]
        for route in routes:
            NagSuppressions.add_resource_suppressions(
                route,
                [
                    {
                        "id": "AwsSolutions-APIG4",
                        "reason": "A WebSocket API authorizes once per connection, on $connect "
                        "(IAM, SigV4, here); API Gateway takes no authorizer on any other "
                        "route, which runs only on a connection $connect let in.",
                    }
                ],
                apply_to_children=True,
            )
        access_log = logs.LogGroup(
            self,
            "AccessLogs",
            log_group_name=names.bridge_access_log_group_name(self.stage),
            retention=LOG_RETENTION,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        stage = apigw.WebSocketStage(
            self,
            "Stage",
            web_socket_api=api,
            stage_name=self.stage,
            auto_deploy=True,
            access_log_settings=_AccessLog(access_log),
            throttle=apigw.ThrottleSettings(
                rate_limit=THROTTLE_RATE_PER_SECOND, burst_limit=THROTTLE_BURST
            ),
        )
        return api, stage

    def _management_suppression(self) -> None:
        # grant_management_api_access grants on {api}/{stage}/*/@connections/*: any
        # method (POST, GET, DELETE) on any connection of this stage, which is what
        # posting to and closing connections is; the wildcards cannot be narrower.
        api_id = self.get_logical_id(cast(cdk.CfnElement, self.api.node.default_child))
        stage_arn = (
            f"Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:"
            f"<{api_id}>/{self.stage}/*/@connections/*"
        )
        for name, role in self.roles.items():
            if name == names.BRIDGE_DISCONNECT:
                continue
            NagSuppressions.add_resource_suppressions(
                role,
                [
                    {
                        "id": "AwsSolutions-IAM5",
                        "reason": "execute-api:ManageConnections on this API's own stage only: "
                        "the connection ids are made at connect time and the method (POST to "
                        "post, DELETE to close) is part of the ARN, so the stage is the "
                        "narrowest resource there is.",
                        "appliesTo": [stage_arn],
                    }
                ],
                apply_to_children=True,
            )

    # ------------------------------------------------------------------ forward

    def _dead_letter_queue(self) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            "ForwardDeadLetters",
            queue_name=names.bridge_forward_dlq_name(self.stage),
            encryption=sqs.QueueEncryption.SQS_MANAGED,  # EventBridge can't use aws/sqs
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
            redrive_allow_policy=sqs.RedriveAllowPolicy(
                redrive_permission=sqs.RedrivePermission.DENY_ALL
            ),
        )
        NagSuppressions.add_resource_suppressions(
            queue,
            [
                {
                    "id": "AwsSolutions-SQS3",
                    "reason": "This queue is itself the dead-letter destination of the bridge "
                    "rules and of the forward function's async invoke (it holds the events the "
                    "bridge did not take); a DLQ behind a DLQ would only move the same messages.",
                }
            ],
        )
        return queue

    def _forward_async_invoke(self) -> None:
        """Lambda's own retries of forward, then its failure record into the queue."""
        forward = self.functions[names.BRIDGE_FORWARD]
        role = self.roles[names.BRIDGE_FORWARD]
        # Lambda sends the failure record with the function's role (checked when the
        # config is made, hence the dependency below).
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["sqs:SendMessage"], resources=[self.dead_letters.queue_arn]
            )
        )
        config = lambda_.CfnEventInvokeConfig(
            self,
            f"Fn-{names.BRIDGE_FORWARD}-AsyncInvoke",
            function_name=forward.function_name,
            qualifier="$LATEST",
            maximum_retry_attempts=FORWARD_RETRY_ATTEMPTS,
            maximum_event_age_in_seconds=FORWARD_MAX_EVENT_AGE_SECONDS,
            destination_config=lambda_.CfnEventInvokeConfig.DestinationConfigProperty(
                on_failure=lambda_.CfnEventInvokeConfig.OnFailureProperty(
                    destination=self.dead_letters.queue_arn
                )
            ),
        )
        config.node.add_dependency(role)

    def _rule(self, kind: str) -> events.CfnRule:
        """A rule on the logs stack's bus sending live (or replayed) events to forward."""
        forward = self.functions[names.BRIDGE_FORWARD]
        # CfnRule: the pattern keys on the top-level "replay-name", which the L2
        # EventPattern has no field for.
        rule = events.CfnRule(
            self,
            f"Rule-{kind}",
            name=names.bridge_rule_name(self.stage, kind),
            description=(
                "Live events (no replay-name) to the bridge"
                if kind == "live"
                else "Replayed events (name this rule in StartReplay's FilterArns) to the bridge"
            ),
            event_bus_name=self.bus.event_bus_name,
            event_pattern=names.bridge_rule_pattern(kind),
            state="ENABLED",
            targets=[
                events.CfnRule.TargetProperty(
                    id=names.BRIDGE_FORWARD,
                    arn=forward.function_arn,
                    retry_policy=events.CfnRule.RetryPolicyProperty(
                        maximum_retry_attempts=RULE_RETRY_ATTEMPTS,
                        maximum_event_age_in_seconds=RULE_MAX_EVENT_AGE_SECONDS,
                    ),
                    dead_letter_config=events.CfnRule.DeadLetterConfigProperty(
                        arn=self.dead_letters.queue_arn
                    ),
                )
            ],
        )
        forward.add_permission(
            f"Fn-{names.BRIDGE_FORWARD}-{kind}-Invoke",
            principal=iam.ServicePrincipal("events.amazonaws.com"),
            source_arn=rule.attr_arn,
        )
        # EventBridge sends to a DLQ as itself, so the queue's policy lets it, for
        # this rule only.
        self.dead_letters.add_to_resource_policy(
            iam.PolicyStatement(
                sid=f"EventBridgeDeadLetters{kind.capitalize()}",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[self.dead_letters.queue_arn],
                conditions={"ArnEquals": {"aws:SourceArn": rule.attr_arn}},
            )
        )
        return rule

    # ------------------------------------------------------------------ outputs

    def _outputs(self) -> None:
        cdk.CfnOutput(self, "WebSocketUrl", value=self.api_stage.url)
        cdk.CfnOutput(self, "ManagementUrl", value=self.api_stage.callback_url)
        cdk.CfnOutput(
            self,
            "ConnectArn",
            description="What a client needs execute-api:Invoke on",
            value=self.api.arn_for_execute_api_v2("$connect", self.stage),
        )
        cdk.CfnOutput(self, "BridgeTableName", value=self.table.table_name)
        cdk.CfnOutput(self, "LiveRuleArn", value=self.rules["live"].attr_arn)
        cdk.CfnOutput(self, "ReplayRuleArn", value=self.rules["replay"].attr_arn)
        cdk.CfnOutput(self, "ForwardDeadLetterQueueUrl", value=self.dead_letters.queue_url)
