"""The bridge's names in bridge.core.names: what the stack, offline and the client share."""

from __future__ import annotations

import re

import pytest

from bridge.core import names
from bridge.core.patterns import validate_pattern

LONGEST_STAGE = "s" * 32  # check_stage's limit


def test_stack_api_and_table_names() -> None:
    assert names.bridge_stack_name("dev") == "dynamodb-logs-bridge-dev"
    assert names.bridge_api_name("dev") == "dynamodb-logs-bridge-dev"
    assert names.bridge_table_name("dev") == "dev-bridge"
    assert names.bridge_forward_dlq_name("dev") == "dynamodb-logs-dev-bridge-forward-dlq"
    assert names.bridge_access_log_group_name("dev") == (
        "/aws/apigateway/dynamodb-logs-bridge-dev/access"
    )


def test_functions_are_named_like_every_other_and_fit_lambdas_limit() -> None:
    assert names.BRIDGE_FUNCTIONS == (
        "bridge-connect",
        "bridge-disconnect",
        "bridge-message",
        "bridge-forward",
    )
    assert list(names.BRIDGE_HANDLERS) == list(names.BRIDGE_FUNCTIONS)
    for name in names.BRIDGE_FUNCTIONS:
        assert name.startswith(names.BRIDGE_PREFIX)
        assert names.function_name("dev", name) == f"dynamodb-logs-dev-{name}"
        full = names.function_name(LONGEST_STAGE, name)  # refused past 64: must not raise
        assert len(full) <= 64


def test_handlers_are_module_function_paths_in_bridge_lambdas() -> None:
    assert names.BRIDGE_HANDLERS == {
        "bridge-connect": "bridge.lambdas.bridge_connect.handler",
        "bridge-disconnect": "bridge.lambdas.bridge_disconnect.handler",
        "bridge-message": "bridge.lambdas.bridge_message.handler",
        "bridge-forward": "bridge.lambdas.bridge_forward.handler",
    }


def test_rules_and_their_patterns() -> None:
    assert names.BRIDGE_RULE_KINDS == ("live", "replay")
    assert names.bridge_rule_name("dev", "live") == "dynamodb-logs-dev-bridge-live"
    assert names.bridge_rule_name("dev", "replay") == "dynamodb-logs-dev-bridge-replay"
    for kind in names.BRIDGE_RULE_KINDS:
        rule = names.bridge_rule_name(LONGEST_STAGE, kind)
        assert re.fullmatch(r"[.\-_A-Za-z0-9]{1,64}", rule), rule  # EventBridge's rule names
    assert names.bridge_rule_pattern("live") == {"replay-name": [{"exists": False}]}
    assert names.bridge_rule_pattern("replay") == {"replay-name": [{"exists": True}]}
    for kind in names.BRIDGE_RULE_KINDS:
        assert validate_pattern(names.bridge_rule_pattern(kind)) == names.bridge_rule_pattern(kind)
    for bad in ("archive", "Live", ""):
        with pytest.raises(ValueError, match="live"):
            names.bridge_rule_name("dev", bad)
        with pytest.raises(ValueError, match="replay"):
            names.bridge_rule_pattern(bad)


def test_a_pattern_is_a_fresh_copy_each_time() -> None:
    pattern = names.bridge_rule_pattern("live")
    pattern["replay-name"][0]["exists"] = True
    pattern["source"] = ["x"]
    assert names.bridge_rule_pattern("live") == {"replay-name": [{"exists": False}]}


def test_routes() -> None:
    assert names.BRIDGE_ROUTE_SELECTION == "$request.body.action"
    assert names.BRIDGE_CLIENT_ACTIONS == (
        "hello",
        "subscribe",
        "resume",
        "ack",
        "ping",
        "sessions",
        "drop",
    )
    assert not any(action.startswith("$") for action in names.BRIDGE_CLIENT_ACTIONS)


def test_urls_and_the_connect_arn() -> None:
    assert names.bridge_websocket_url("abc123", "eu-west-1", "dev") == (
        "wss://abc123.execute-api.eu-west-1.amazonaws.com/dev"
    )
    assert names.bridge_management_url("abc123", "eu-west-1", "dev") == (
        "https://abc123.execute-api.eu-west-1.amazonaws.com/dev"
    )
    assert names.bridge_connect_arn("eu-west-1", "123456789012", "abc123", "dev") == (
        "arn:aws:execute-api:eu-west-1:123456789012:abc123/dev/$connect"
    )


def test_everything_new_is_exported() -> None:
    bridge = {name for name in vars(names) if name.lower().startswith("bridge")}
    assert bridge <= set(names.__all__), bridge - set(names.__all__)
    for name in names.__all__:
        assert hasattr(names, name), name
