"""The logs stack, synthesized for real: resources, IAM, cfn-lint, cdk-nag, synth/deploy.

jsii synthesis costs seconds, so one app holding two stacks is built per module:

* ``dynamodb-logs-ci`` from the packaged definition (users + failures), archive kept
  30 days — what a project deploys out of the box;
* ``dynamodb-logs-ciuser`` from a user project's definition with its own handler
  package, environment and permissions, archive kept forever and data not retained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from templates import all_statements, cfn_lint_errors, literal_strings, nag_findings

import cloud_stack  # noqa: F401  (first: silences jsii's Node banner before aws_cdk loads)
from bridge import deploy
from bridge.core import names
from bridge.core.errors import BridgeError, ValidationError
from bridge.core.subscriptions import parse
from bridge.subscriptions import load
from cloud_stack.assets import stage_code

cdk = pytest.importorskip("aws_cdk", reason="the cdk extra is not installed")

from aws_cdk.assertions import Template  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402
from cfnlint.api import lint_file  # noqa: E402

from cloud_stack.logs_stack import LogsStack  # noqa: E402

# The only place a literal "*" may stand in an Allow statement, and why: AWS offers
# no resource-level permission for dynamodb:ListStreams (Lambda's stream mapping
# calls it). Keyed by (statement action, resource).
WILDCARD_ALLOW_LIST = {("dynamodb:ListStreams", "*")}

USER_DEFINITION = """
[defaults]
timeout = 20
environment = { SERVICE = "shop" }

[functions.users]
handler = "bridge.lambdas.users_projection.handler"
on_failure = "audit"

[functions.users.pattern]
source = ["dynamodb-log"]
"detail-type" = ["stream changes"]
detail = { log = ["users"] }

[functions.audit]
handler = "shop.handlers.audit"
pattern = '{"source": ["dynamodb-log"], "detail": {"type": [{"prefix": "order"}]}}'
retry_attempts = 0
max_event_age = 60
memory = 512
on_failure = "failures"
permissions = ["log:write", "bus:put"]
environment = { AUDIT_LEVEL = "full" }

[functions.failures]
handler = "bridge.lambdas.failures.handler"
permissions = ["core:read", "core:write"]
"""


def _user_project(root: Path) -> Path:
    """A project with a handler package, plus files that must never reach Lambda."""
    package = root / "shop"
    (package / "tests").mkdir(parents=True)
    (package / "__pycache__").mkdir()
    (package / "__init__.py").write_text("")
    (package / "handlers.py").write_text("def audit(event, context):\n    return event\n")
    (package / "prices.json").write_text('{"eur": 1}\n')
    (package / "tests" / "test_handlers.py").write_text("def test(): pass\n")
    (package / "__pycache__" / "handlers.cpython-312.pyc").write_bytes(b"\0")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "tests" / "conftest.py").write_text("")
    path = root / "dynamodb-logs.toml"
    path.write_text(USER_DEFINITION.lstrip("\n"))
    return path


class Synthesized:
    """The app, its two stacks, their templates and the assembly on disk."""

    def __init__(self, tmp: Path) -> None:
        default = load()
        user = load(_user_project(tmp / "project"))
        self.app = cdk.App(outdir=str(tmp / "cdk.out"))
        self.default_stack = LogsStack(
            self.app,
            stage="ci",
            subscriptions=default,
            code=stage_code(default, tmp / "code-ci", (names.PUBLISHER_HANDLER,)),
            archive_retention_days=30,
        )
        self.user_code = stage_code(user, tmp / "code-user", (names.PUBLISHER_HANDLER,))
        self.user_stack = LogsStack(
            self.app,
            stage="ciuser",
            subscriptions=user,
            code=self.user_code,
            archive_retention_days=0,
            retain_data=False,
        )
        cdk.Aspects.of(self.app).add(AwsSolutionsChecks(log_ignores=True))
        self.assembly = self.app.synth()
        self.default = Template.from_stack(self.default_stack)
        self.user = Template.from_stack(self.user_stack)


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return Synthesized(tmp_path_factory.mktemp("cdk"))


def resources(template: Template, kind: str) -> dict[str, dict[str, Any]]:
    return template.find_resources(kind)


def function(template: Template, name: str) -> tuple[str, dict[str, Any]]:
    """(logical id, properties) of the function with this FunctionName."""
    for logical_id, resource in resources(template, "AWS::Lambda::Function").items():
        if resource["Properties"]["FunctionName"] == name:
            return logical_id, resource["Properties"]
    raise AssertionError(f"no function {name}")


def statements_of(template: Template, role_id: str) -> list[dict[str, Any]]:
    found = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_of(template: Template, function_name: str) -> str:
    return function(template, function_name)[1]["Role"]["Fn::GetAtt"][0]


def granted(template: Template, function_name: str) -> set[tuple[str, str]]:
    """(action, resource logical id or literal) pairs of a function's role."""
    pairs = set()
    for statement in statements_of(template, role_of(template, function_name)):
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                target = resource["Fn::GetAtt"][0] if isinstance(resource, dict) else resource
                pairs.add((action, target))
    return pairs


def logical_ids(template: Template) -> dict[str, str]:
    ids = {}
    for logical_id, table in resources(template, "AWS::DynamoDB::Table").items():
        ids["log" if table["Properties"]["TableName"].endswith("-dynamodb-logs") else "core"] = (
            logical_id
        )
    ids["bus"] = next(iter(resources(template, "AWS::Events::EventBus")))
    ids["queue"] = next(iter(resources(template, "AWS::SQS::Queue")))
    for logical_id, group in resources(template, "AWS::Logs::LogGroup").items():
        ids[group["Properties"]["LogGroupName"].rsplit("-", 1)[1] + "-logs"] = logical_id
    for logical_id, fn in resources(template, "AWS::Lambda::Function").items():
        ids[fn["Properties"]["FunctionName"].rsplit("-", 1)[1]] = logical_id
    return ids


READ = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}
WRITE = {
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
}
LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}


# --------------------------------------------------------------------------- storage


@pytest.mark.parametrize(
    ("table", "sort_type", "stream"),
    [("ci-dynamodb-logs", "N", True), ("ci-core", "S", False)],
)
def test_tables(synthesized: Synthesized, table: str, sort_type: str, stream: bool) -> None:
    found = synthesized.default.find_resources(
        "AWS::DynamoDB::Table", {"Properties": {"TableName": table}}
    )
    assert len(found) == 1
    resource = next(iter(found.values()))
    properties = resource["Properties"]
    assert properties["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert properties["AttributeDefinitions"] == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": sort_type},
    ]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    # AWS managed key: SSE on, no customer key (see the stack's docstring for why)
    assert properties["SSESpecification"] == {"SSEEnabled": True}
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    if stream:
        assert properties["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    else:
        assert "StreamSpecification" not in properties
    assert resource["DeletionPolicy"] == "Retain"  # the log outlives `bridge destroy`


def test_tables_are_deleted_with_the_stack_when_data_is_not_retained(
    synthesized: Synthesized,
) -> None:
    tables = resources(synthesized.user, "AWS::DynamoDB::Table").values()
    assert {table["DeletionPolicy"] for table in tables} == {"Delete"}


def test_bus_and_archive(synthesized: Synthesized) -> None:
    template = synthesized.default
    template.has_resource_properties("AWS::Events::EventBus", {"Name": "dynamodb-log"})
    bus_id = next(iter(resources(template, "AWS::Events::EventBus")))
    template.has_resource_properties(
        "AWS::Events::Archive",
        {
            "ArchiveName": "dynamodb-logs-archive",
            "SourceArn": {"Fn::GetAtt": [bus_id, "Arn"]},
            "EventPattern": {"source": ["dynamodb-log"]},
            "RetentionDays": 30,
        },
    )
    # retention 0 = forever: no RetentionDays at all (CloudFormation's default, 0)
    (archive,) = resources(synthesized.user, "AWS::Events::Archive").values()
    assert archive["Properties"].get("RetentionDays", 0) == 0


# --------------------------------------------------------------------------- publisher


def test_publisher_function_and_stream_mapping(synthesized: Synthesized) -> None:
    template = synthesized.default
    publisher_id, properties = function(template, "dynamodb-logs-ci-publisher")
    assert properties["Handler"] == "bridge.lambdas.publisher.handler"
    assert properties["Runtime"] == "python3.12"
    assert properties["Architectures"] == ["arm64"]
    assert properties["Environment"]["Variables"] == {
        "DYNAMODB_LOGS_TABLE": "ci-dynamodb-logs",
        "DYNAMODB_CORE_TABLE": "ci-core",
        "EVENT_BUS_NAME": "dynamodb-log",
    }
    log_table = logical_ids(template)["log"]
    queue_id = next(iter(resources(template, "AWS::SQS::Queue")))
    template.resource_count_is("AWS::Lambda::EventSourceMapping", 1)
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "FunctionName": {"Ref": publisher_id},
            "EventSourceArn": {"Fn::GetAtt": [log_table, "StreamArn"]},
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 25,
            "MaximumBatchingWindowInSeconds": 1,
            "ParallelizationFactor": 4,
            "BisectBatchOnFunctionError": True,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "MaximumRetryAttempts": 10,
            "MaximumRecordAgeInSeconds": 86400,
            "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [queue_id, "Arn"]}}},
        },
    )


def test_publisher_failure_queue_is_encrypted_and_refuses_plain_http(
    synthesized: Synthesized,
) -> None:
    template = synthesized.default
    ((queue_id, queue),) = resources(template, "AWS::SQS::Queue").items()
    assert queue["Properties"]["QueueName"] == "dynamodb-logs-ci-publisher-failures"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert queue["Properties"]["RedriveAllowPolicy"] == {"redrivePermission": "denyAll"}
    (policy,) = resources(template, "AWS::SQS::QueuePolicy").values()
    assert policy["Properties"]["Queues"] == [{"Ref": queue_id}]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# --------------------------------------------------------------------------- subscribers


def test_subscriber_functions_environment_and_settings(synthesized: Synthesized) -> None:
    project = {
        "DYNAMODB_LOGS_TABLE": "ciuser-dynamodb-logs",
        "DYNAMODB_CORE_TABLE": "ciuser-core",
        "EVENT_BUS_NAME": "dynamodb-log",
    }
    _, users = function(synthesized.default, "dynamodb-logs-ci-users")
    assert users["Handler"] == "bridge.lambdas.users_projection.handler"
    assert (users["Timeout"], users["MemorySize"]) == (30, 256)
    assert users["Environment"]["Variables"]["DYNAMODB_CORE_TABLE"] == "ci-core"
    _, failures = function(synthesized.default, "dynamodb-logs-ci-failures")
    assert failures["Handler"] == "bridge.lambdas.failures.handler"

    _, audit = function(synthesized.user, "dynamodb-logs-ciuser-audit")
    assert audit["Handler"] == "shop.handlers.audit"
    assert (audit["Runtime"], audit["Architectures"]) == ("python3.12", ["arm64"])
    assert (audit["Timeout"], audit["MemorySize"]) == (20, 512)  # defaults, then its own
    assert audit["Environment"]["Variables"] == {
        **project,
        "SERVICE": "shop",
        "AUDIT_LEVEL": "full",
    }
    _, user_users = function(synthesized.user, "dynamodb-logs-ciuser-users")
    assert user_users["Environment"]["Variables"] == {**project, "SERVICE": "shop"}
    assert len(resources(synthesized.user, "AWS::Lambda::Function")) == 4  # + publisher


def test_rules_carry_the_definition_patterns_verbatim(synthesized: Synthesized) -> None:
    template = synthesized.user
    bus_id = next(iter(resources(template, "AWS::Events::EventBus")))
    expected = {
        "dynamodb-logs-ciuser-users": {
            "source": ["dynamodb-log"],
            "detail-type": ["stream changes"],
            "detail": {"log": ["users"]},
        },
        "dynamodb-logs-ciuser-audit": {
            "source": ["dynamodb-log"],
            "detail": {"type": [{"prefix": "order"}]},
        },
    }
    rules = resources(template, "AWS::Events::Rule")
    assert len(rules) == 2  # failures has no pattern: no rule
    for rule in rules.values():
        properties = rule["Properties"]
        name = properties["Name"]
        function_id, _ = function(template, name)
        assert properties["EventPattern"] == expected[name]
        assert properties["EventBusName"] == {"Ref": bus_id}
        assert properties["State"] == "ENABLED"
        assert [target["Arn"] for target in properties["Targets"]] == [
            {"Fn::GetAtt": [function_id, "Arn"]}
        ]
        rule_id = next(k for k, v in rules.items() if v is rule)
        template.has_resource_properties(
            "AWS::Lambda::Permission",
            {
                "Action": "lambda:InvokeFunction",
                "FunctionName": {"Fn::GetAtt": [function_id, "Arn"]},
                "Principal": "events.amazonaws.com",
                "SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]},
            },
        )


def test_async_invoke_configs(synthesized: Synthesized) -> None:
    template = synthesized.user
    configs = {
        config["Properties"]["FunctionName"]["Ref"]: config
        for config in resources(template, "AWS::Lambda::EventInvokeConfig").values()
    }
    users_id, _ = function(template, "dynamodb-logs-ciuser-users")
    audit_id, _ = function(template, "dynamodb-logs-ciuser-audit")
    failures_id, _ = function(template, "dynamodb-logs-ciuser-failures")
    assert set(configs) == {users_id, audit_id, failures_id}

    def settings(function_id: str) -> tuple[Any, ...]:
        properties = configs[function_id]["Properties"]
        destination = properties.get("DestinationConfig", {}).get("OnFailure", {})
        return (
            properties["Qualifier"],
            properties["MaximumRetryAttempts"],
            properties["MaximumEventAgeInSeconds"],
            destination.get("Destination"),
        )

    assert settings(users_id) == ("$LATEST", 2, 21600, {"Fn::GetAtt": [audit_id, "Arn"]})
    assert settings(audit_id) == ("$LATEST", 0, 60, {"Fn::GetAtt": [failures_id, "Arn"]})
    assert settings(failures_id) == ("$LATEST", 2, 21600, None)
    # Lambda checks the destination permission when the config is created, so the
    # config waits for the policy that grants lambda:InvokeFunction on the target
    users_role = role_of(template, "dynamodb-logs-ciuser-users")
    (users_policy,) = (
        logical_id
        for logical_id, policy in resources(template, "AWS::IAM::Policy").items()
        if policy["Properties"]["Roles"] == [{"Ref": users_role}]
    )
    assert users_policy in configs[users_id]["DependsOn"]


def test_every_function_logs_to_its_own_group_kept_one_month(synthesized: Synthesized) -> None:
    for template in (synthesized.default, synthesized.user):
        groups = resources(template, "AWS::Logs::LogGroup")
        functions = resources(template, "AWS::Lambda::Function")
        assert len(groups) == len(functions)
        for function_resource in functions.values():
            properties = function_resource["Properties"]
            group_ref = properties["LoggingConfig"]["LogGroup"]
            group = groups[group_ref["Ref"]]
            assert (
                group["Properties"]["LogGroupName"] == f"/aws/lambda/{properties['FunctionName']}"
            )
            assert group["Properties"]["RetentionInDays"] == 30


def test_outputs(synthesized: Synthesized) -> None:
    template = synthesized.default
    log_table = logical_ids(template)["log"]
    bus_id = next(iter(resources(template, "AWS::Events::EventBus")))
    archive_id = next(iter(resources(template, "AWS::Events::Archive")))
    outputs = template.to_json()["Outputs"]
    assert outputs["LogTableName"]["Value"] == {"Ref": log_table}
    assert outputs["LogTableStreamArn"]["Value"] == {"Fn::GetAtt": [log_table, "StreamArn"]}
    assert outputs["EventBusArn"]["Value"] == {"Fn::GetAtt": [bus_id, "Arn"]}
    assert outputs["ArchiveArn"]["Value"] == {"Fn::GetAtt": [archive_id, "Arn"]}


# --------------------------------------------------------------------------- IAM


def test_each_function_gets_exactly_what_it_uses(synthesized: Synthesized) -> None:
    template = synthesized.default
    ids = logical_ids(template)

    def on(actions: set[str], target: str) -> set[tuple[str, str]]:
        return {(action, target) for action in actions}

    assert granted(template, "dynamodb-logs-ci-publisher") == (
        on(LOGS, ids["publisher-logs"])
        | on(
            {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"},
            ids["log"],
        )  # GetAtt StreamArn of the log table
        | {("dynamodb:ListStreams", "*")}
        | on({"events:PutEvents"}, ids["bus"])
        | on({"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}, ids["queue"])
    )
    stream_statement = next(
        s
        for s in statements_of(template, role_of(template, "dynamodb-logs-ci-publisher"))
        if "dynamodb:GetRecords" in as_list(s["Action"])
    )
    assert stream_statement["Resource"] == {"Fn::GetAtt": [ids["log"], "StreamArn"]}
    assert granted(template, "dynamodb-logs-ci-users") == (
        on(LOGS, ids["users-logs"])
        | on(READ, ids["log"])
        | on(READ | WRITE, ids["core"])
        | on({"lambda:InvokeFunction"}, ids["failures"])  # its onFailure destination
    )
    assert granted(template, "dynamodb-logs-ci-failures") == (
        on(LOGS, ids["failures-logs"]) | on(READ | WRITE, ids["core"])
    )

    user = synthesized.user
    user_ids = logical_ids(user)
    assert granted(user, "dynamodb-logs-ciuser-audit") == (
        on(LOGS, user_ids["audit-logs"])
        | on({"dynamodb:PutItem"}, user_ids["log"])
        | on({"events:PutEvents"}, user_ids["bus"])
        | on({"lambda:InvokeFunction"}, user_ids["failures"])
    )


def test_no_wildcard_action_or_resource_outside_the_allow_list(
    synthesized: Synthesized,
) -> None:
    checked = 0
    for stack in (synthesized.default_stack, synthesized.user_stack):
        template = Template.from_stack(stack).to_json()
        for logical_id, statement in all_statements(template):
            checked += 1
            if statement["Effect"] == "Deny":
                continue  # a wildcard in a Deny narrows access (the queue's SSL-only policy)
            actions = as_list(statement.get("Action", []))
            for action in actions:
                assert "*" not in action, f"{logical_id}: wildcard action {action}"
            for resource in as_list(statement.get("Resource", [])):
                for text in literal_strings(resource):
                    if "*" in text:
                        assert len(actions) == 1 and (actions[0], text) in WILDCARD_ALLOW_LIST, (
                            f"{logical_id}: wildcard resource {text!r} for {actions}"
                        )
            assert "NotAction" not in statement and "NotResource" not in statement
    assert checked > 30


# --------------------------------------------------------------------------- linters


def test_cfn_lint_finds_no_errors_in_any_template(synthesized: Synthesized) -> None:
    templates = [Path(stack.template_full_path) for stack in synthesized.assembly.stacks]
    assert len(templates) == 2
    for template in templates:
        errors = cfn_lint_errors(template)
        assert errors == [], "\n".join(errors)


def test_cdk_nag_aws_solutions_has_no_unsuppressed_errors(synthesized: Synthesized) -> None:
    for stack in (synthesized.default_stack, synthesized.user_stack):
        errors, warnings, triggered = nag_findings(stack)
        assert errors == [], errors
        assert warnings == [], warnings
        # each suppression that applied is reported: the checks ran over this stack,
        # and each suppression is still needed
        assert set(triggered) == {"AwsSolutions-L1", "AwsSolutions-IAM5", "AwsSolutions-SQS3"}


def test_every_suppression_has_a_real_reason(synthesized: Synthesized) -> None:
    seen = set()
    for template in (synthesized.default, synthesized.user):
        for resource in template.to_json()["Resources"].values():
            rules = resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
            for rule in rules:
                seen.add(rule["id"])
                assert len(rule["reason"]) >= 60, rule
                if rule["id"] == "AwsSolutions-IAM5":
                    assert rule["applies_to"] == ["Resource::*"]  # only ListStreams' "*"
    assert seen == {"AwsSolutions-L1", "AwsSolutions-IAM5", "AwsSolutions-SQS3"}


# --------------------------------------------------------------------------- the asset


def test_code_asset_holds_only_what_lambda_may_import(synthesized: Synthesized) -> None:
    files = {
        path.relative_to(synthesized.user_code).as_posix()
        for path in synthesized.user_code.rglob("*")
        if path.is_file()
    }
    assert {name.split("/")[0] for name in files} == {"bridge", "shop"}
    bridge_dirs = {
        name.split("/")[1] for name in files if name.startswith("bridge/") and name.count("/") > 1
    }
    assert bridge_dirs == {"core", "lambdas"}  # never offline/, client/ …
    assert {
        "bridge/__init__.py",
        "bridge/lambdas/publisher.py",
        "bridge/lambdas/users_projection.py",
        "bridge/lambdas/failures.py",
        "bridge/core/events.py",
    } <= files
    assert {name for name in files if name.startswith("shop/")} == {
        "shop/__init__.py",
        "shop/handlers.py",
        "shop/prices.json",
    }
    assert not any(
        part in {"tests", "__pycache__", ".venv", "cdk.out", "offline", "client"}
        for name in files
        for part in name.split("/")
    )
    # and that is what the assembly uploads
    _, properties = function(synthesized.user, "dynamodb-logs-ciuser-audit")
    asset_dirs = [
        entry for entry in Path(synthesized.app.outdir).iterdir() if entry.name.startswith("asset.")
    ]
    assert any((entry / "shop" / "handlers.py").is_file() for entry in asset_dirs)
    assert properties["Code"]["S3Key"].endswith(".zip")


def test_handlers_outside_the_project_or_lambda_packages_are_refused(tmp_path: Path) -> None:
    subs = parse(
        '[functions.x]\nhandler = "bridge.offline.bus.handler"\n',
        source=str(tmp_path / "dynamodb-logs.toml"),
    )
    with pytest.raises(BridgeError, match="only bridge.lambdas and bridge.core are packaged"):
        stage_code(subs, tmp_path / "code")
    subs = parse(
        '[functions.x]\nhandler = "pytest.main"\n', source=str(tmp_path / "dynamodb-logs.toml")
    )
    with pytest.raises(BridgeError, match="outside the project root"):
        stage_code(subs, tmp_path / "code2")


# --------------------------------------------------------------------------- synth/deploy


def test_synth_writes_the_templates_to_outdir(tmp_path: Path) -> None:
    outdir = tmp_path / "assembly"
    written = deploy.synth("cisynth", outdir, retention_days=7)

    assert written == [outdir / "dynamodb-logs-cisynth.template.json"]
    template = json.loads(written[0].read_text())
    archives = [r for r in template["Resources"].values() if r["Type"] == "AWS::Events::Archive"]
    assert [a["Properties"]["RetentionDays"] for a in archives] == [7]
    names_found = {
        r["Properties"]["FunctionName"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    }
    assert names_found == {
        "dynamodb-logs-cisynth-publisher",
        "dynamodb-logs-cisynth-users",
        "dynamodb-logs-cisynth-failures",
    }
    assert (outdir / "manifest.json").is_file()
    assert [p for p in outdir.iterdir() if p.name.startswith("asset.")]
    errors = [m for m in lint_file(written[0]) if m.rule.id.startswith("E")]
    assert errors == [], "\n".join(map(str, errors))


def test_synth_refuses_bad_input_before_starting_the_cdk(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="stage 'dev_1'"):
        deploy.synth("dev_1", tmp_path / "out")
    bad = tmp_path / "dynamodb-logs.toml"
    bad.write_text('[functions.x]\nhandler = "m.f"\ntimeout = 0\n')
    with pytest.raises(ValidationError, match=r"dynamodb-logs.toml:3: functions.x.timeout"):
        deploy.synth("dev", tmp_path / "out", config_path=bad)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def no_aws_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment where botocore finds no credentials and asks no metadata service."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no 169.254.169.254
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.mark.parametrize("action", ["deploy", "destroy"])
def test_deploy_and_destroy_fail_in_one_line_without_credentials(
    action: str, no_aws_credentials: None
) -> None:
    with pytest.raises(BridgeError) as caught:
        getattr(deploy, action)("ci")
    message = str(caught.value)
    assert message.startswith("no AWS credentials found:")
    assert "\n" not in message


def test_deploy_refuses_the_local_stage_and_needs_a_region(
    no_aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BridgeError, match="stage 'local' is the local cloud"):
        deploy.deploy("local")
    monkeypatch.delenv("AWS_REGION")
    with pytest.raises(BridgeError, match="^no AWS region"):
        deploy.destroy("ci")


def test_deploy_needs_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    with pytest.raises(BridgeError, match=r"^Node.js \(node and npx\) not found"):
        deploy.deploy("ci")


def test_bootstrap_is_checked_against_ssm(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against moto's STS and SSM (a real server on localhost), never AWS itself."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    region = "eu-west-3"  # moto state is per process: a region no other test uses
    account = deploy.check_credentials(region=region)
    assert account.region == region and account.account.isdigit()

    with pytest.raises(BridgeError) as caught:
        deploy.deploy("ci", region=region)  # stops before synth and before npx
    assert str(caught.value) == (
        f"account {account.account} region {region} is not bootstrapped for the CDK: "
        f"run: npx --yes aws-cdk@2 bootstrap aws://{account.account}/{region}"
    )

    import boto3

    ssm = boto3.client("ssm", region_name=region)
    ssm.put_parameter(Name=deploy.BOOTSTRAP_PARAMETER, Value="3", Type="String")
    with pytest.raises(BridgeError, match="is version 3, older than 6"):
        deploy.check_bootstrap(account)
    ssm.put_parameter(Name=deploy.BOOTSTRAP_PARAMETER, Value="21", Type="String", Overwrite=True)
    assert deploy.check_bootstrap(account) == 21


def test_tables_kept_by_an_earlier_destroy_are_reported_before_deploy(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against moto's CloudFormation and DynamoDB on localhost, never AWS itself."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    region = "ap-south-2"  # moto state is per process: a region no other test uses
    account = deploy.check_credentials(region=region)
    deploy.check_leftover_tables(account, "kept")  # nothing there: fine

    client = boto3.client("dynamodb", region_name=region)
    client.create_table(
        TableName="kept-dynamodb-logs",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    with pytest.raises(BridgeError) as caught:
        deploy.check_leftover_tables(account, "kept")
    assert str(caught.value).startswith(
        "kept-dynamodb-logs exist without the stack dynamodb-logs-kept"
    )
    assert "npx aws-cdk@2 import" in str(caught.value)
