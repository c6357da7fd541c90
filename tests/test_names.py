"""Names of a stage's resources (``bridge.core.names``): pure, so tested without AWS.

The expected names are written out literally: they are what the seed's handlers,
the CDK stack and users' scripts rely on, so a test must fail when one changes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core import events, names
from bridge.core.errors import ValidationError
from bridge.core.names import (
    EventsArn,
    archive_arn,
    bus_arn,
    check_stage,
    core_table_name,
    function_arn,
    function_name,
    log_group_name,
    log_table_name,
    parse_events_arn,
    publisher_failures_queue_name,
    region_from,
    replay_arn,
    rule_arn,
    rule_name,
    stack_name,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_shared_constants() -> None:
    assert names.BUS_NAME == "dynamodb-log"
    assert names.ARCHIVE_NAME == "dynamodb-logs-archive"
    assert names.DEFAULT_REGION == "us-east-1"
    assert names.LOCAL_ACCOUNT == "000000000000"
    assert (names.PUBLISHER, names.PUBLISHER_HANDLER) == (
        "publisher",
        "bridge.lambdas.publisher.handler",
    )


SHARED = {"BUS_NAME", "ARCHIVE_NAME", "DEFAULT_REGION", "LOCAL_ACCOUNT"}


def test_the_shared_constants_are_defined_in_names_and_nowhere_else() -> None:
    defined = {}
    for folder in ("bridge", "cloud_stack", "bench", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                targets = node.targets if isinstance(node, ast.Assign) else []
                if isinstance(node, ast.AnnAssign | ast.AugAssign):
                    targets = [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in SHARED:
                        defined.setdefault(target.id, []).append(str(path.relative_to(ROOT)))
    assert defined == {name: ["bridge/core/names.py"] for name in SHARED}
    assert set(names.__all__) >= SHARED
    # Imported, not copied: core/events uses the very objects, e.g. for its defaults.
    assert events.entry_for.__defaults__ == (names.BUS_NAME,)


@pytest.mark.parametrize(
    "stage", ["dev", "local", "a", "A1", "prod-eu-2", "x" * 32, "1-2", "feature-123"]
)
def test_stages_that_make_valid_names(stage: str) -> None:
    assert check_stage(stage) == stage


@pytest.mark.parametrize(
    "stage",
    ["", "-dev", "dev-", "dev_1", "dev.1", "dév", "x" * 33, "with space", "a/b", "dev\n"],
)
def test_stages_that_would_break_a_stack_table_or_function_name(stage: str) -> None:
    with pytest.raises(ValidationError, match="use 1-32 letters, digits and hyphens"):
        check_stage(stage)


def test_the_names_of_a_stage() -> None:
    assert stack_name("dev") == "dynamodb-logs-dev"
    assert log_table_name("dev") == "dev-dynamodb-logs"
    assert core_table_name("dev") == "dev-core"
    assert publisher_failures_queue_name("dev") == "dynamodb-logs-dev-publisher-failures"
    assert function_name("dev", "users") == "dynamodb-logs-dev-users"
    assert log_group_name("dynamodb-logs-dev-users") == "/aws/lambda/dynamodb-logs-dev-users"
    assert rule_name("dev", "users") == "dynamodb-logs-dev-users"  # named like its function
    assert function_arn("eu-west-1", "123456789012", "dev", "users") == (
        "arn:aws:lambda:eu-west-1:123456789012:function:dynamodb-logs-dev-users"
    )


def test_a_function_name_may_not_exceed_lambdas_64_characters() -> None:
    prefix = "dynamodb-logs-dev-"
    fits = "f" * (64 - len(prefix))
    assert len(function_name("dev", fits)) == 64
    with pytest.raises(ValidationError, match="is 65 characters; Lambda allows 64"):
        function_name("dev", fits + "f")
    with pytest.raises(ValidationError, match="shorten the stage"):
        function_arn("us-east-1", "0", "dev", fits + "f")
    with pytest.raises(ValidationError):
        rule_name("dev", fits + "f")  # the rule has its function's name, and limit


def test_the_arns_of_the_bus() -> None:
    assert bus_arn("us-east-1", "000000000000") == (
        "arn:aws:events:us-east-1:000000000000:event-bus/dynamodb-log"
    )
    assert rule_arn("us-east-1", "000000000000", "dynamodb-logs-dev-users") == (
        "arn:aws:events:us-east-1:000000000000:rule/dynamodb-log/dynamodb-logs-dev-users"
    )
    assert (
        archive_arn("eu-west-1", "1") == "arn:aws:events:eu-west-1:1:archive/dynamodb-logs-archive"
    )
    assert replay_arn("eu-west-1", "1", "again") == "arn:aws:events:eu-west-1:1:replay/again"
    assert bus_arn("r", "a", "other") == "arn:aws:events:r:a:event-bus/other"
    assert rule_arn("r", "a", "x", bus="other") == "arn:aws:events:r:a:rule/other/x"
    assert archive_arn("r", "a", "mine") == "arn:aws:events:r:a:archive/mine"


# The characters AWS allows: regions, 12-digit accounts, and the names' own patterns
# (rules, archives and replays: [.\-_A-Za-z0-9]; a bus name may also hold "/").
regions = st.from_regex(r"[a-z]{2}(-[a-z]+)+-[0-9]", fullmatch=True)
accounts = st.from_regex(r"[0-9]{12}", fullmatch=True)
plain_names = st.from_regex(r"[.\-_A-Za-z0-9]{1,64}", fullmatch=True)
bus_names = st.from_regex(
    r"[.\-_A-Za-z0-9]([/.\-_A-Za-z0-9]{0,62}[.\-_A-Za-z0-9])?", fullmatch=True
)


@given(regions, accounts, bus_names)
def test_a_bus_arn_round_trips(region: str, account: str, bus: str) -> None:
    assert parse_events_arn(bus_arn(region, account, bus)) == EventsArn(
        region, account, "event-bus", bus
    )


@given(regions, accounts, plain_names, bus_names)
def test_a_rule_arn_round_trips(region: str, account: str, name: str, bus: str) -> None:
    assert parse_events_arn(rule_arn(region, account, name, bus)) == EventsArn(
        region, account, "rule", name, bus=bus
    )


@given(regions, accounts, plain_names)
def test_archive_and_replay_arns_round_trip(region: str, account: str, name: str) -> None:
    assert parse_events_arn(archive_arn(region, account, name)) == EventsArn(
        region, account, "archive", name
    )
    assert parse_events_arn(replay_arn(region, account, name)) == EventsArn(
        region, account, "replay", name
    )


def test_parsing_other_forms_of_events_arns() -> None:
    # A rule of the default bus has no bus in its ARN; other partitions exist.
    assert parse_events_arn("arn:aws:events:us-east-1:1:rule/x") == EventsArn(
        "us-east-1", "1", "rule", "x", bus="default"
    )
    assert parse_events_arn("arn:aws-cn:events:cn-north-1:1:archive/a") == EventsArn(
        "cn-north-1", "1", "archive", "a", partition="aws-cn"
    )
    partner = "aws.partner/example.com/123/feed"  # partner bus names hold slashes
    assert parse_events_arn(f"arn:aws:events:r:1:event-bus/{partner}").name == partner
    assert parse_events_arn(f"arn:aws:events:r:1:rule/{partner}/x").bus == partner


@pytest.mark.parametrize(
    ("arn", "reason"),
    [
        ("", "not an EventBridge ARN"),
        ("dynamodb-logs-archive", "not an EventBridge ARN"),
        ("arn:aws:lambda:us-east-1:1:function:f", "not an EventBridge ARN"),
        ("arn::events:us-east-1:1:archive/a", "not an EventBridge ARN"),
        ("arn:aws:events:us-east-1:1", "not an EventBridge ARN"),
        ("arn:aws:events:us-east-1:1:connection/c", "expected event-bus/NAME or rule/NAME"),
        ("arn:aws:events:us-east-1:1:archive", "expected event-bus/NAME"),
        ("arn:aws:events:us-east-1:1:archive/", "expected event-bus/NAME"),
        ("arn:aws:events::1:archive/a", "region and the account must not be empty"),
        ("arn:aws:events:us-east-1::archive/a", "region and the account must not be empty"),
        ("arn:aws:events:us-east-1:1:archive/a/b", "a archive name has no '/'"),
        ("arn:aws:events:us-east-1:1:replay/a/b", "a replay name has no '/'"),
        ("arn:aws:events:us-east-1:1:rule//x", "the rule's bus name is empty"),
        ("arn:aws:events:us-east-1:1:rule/bus/", "the rule name is empty"),
    ],
)
def test_what_is_not_an_events_arn(arn: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_events_arn(arn)


@pytest.mark.parametrize(
    ("environ", "region"),
    [
        ({}, "us-east-1"),
        ({"AWS_DEFAULT_REGION": "eu-west-1"}, "eu-west-1"),
        ({"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "eu-west-1"}, "ap-south-1"),
        ({"AWS_REGION": "", "AWS_DEFAULT_REGION": "eu-west-1"}, "eu-west-1"),  # empty: unset
        ({"AWS_REGION": "", "AWS_DEFAULT_REGION": ""}, "us-east-1"),
    ],
)
def test_region_from_the_environment(environ: dict[str, str], region: str) -> None:
    assert region_from(environ) == region
