"""Reading synthesized CloudFormation templates: shared by the stacks' tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def all_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every policy statement of the template, with the logical id it belongs to."""
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = [properties.get("PolicyDocument"), properties.get("AssumeRolePolicyDocument")]
        documents += [policy.get("PolicyDocument") for policy in properties.get("Policies", [])]
        for document in documents:
            for statement in (document or {}).get("Statement", []):
                yield logical_id, statement
        if resource["Type"] == "AWS::Lambda::Permission":
            yield logical_id, {"Effect": "Allow", "Action": properties["Action"]}


def literal_strings(value: Any) -> Iterator[str]:
    """The literal text in a resource value (Fn::Join parts included, references not)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from literal_strings(item)
    elif isinstance(value, dict) and "Fn::Join" in value:
        yield from literal_strings(value["Fn::Join"][1])


def cfn_lint_errors(template: Path) -> list[str]:
    """cfn-lint's errors (rules E*) for one template file."""
    from cfnlint.api import lint_file

    return [str(match) for match in lint_file(template) if match.rule.id.startswith("E")]


def nag_findings(stack: Any) -> tuple[list[Any], list[Any], dict[str, set[str]]]:
    """cdk-nag's AwsSolutions errors and warnings on a stack, and the suppressions that
    applied (log_ignores=True reports each as info): rule -> the construct paths."""
    from aws_cdk.assertions import Annotations, Match

    annotations = Annotations.from_stack(stack)
    rule = Match.string_like_regexp("AwsSolutions-.*")
    errors = [error.entry.data for error in annotations.find_error("*", rule)]
    warnings = [warning.entry.data for warning in annotations.find_warning("*", rule)]
    triggered: dict[str, set[str]] = {}
    for info in annotations.find_info("*", rule):
        found = re.search(r"(AwsSolutions-\w+) was triggered", str(info.entry.data))
        if found:
            triggered.setdefault(found.group(1), set()).add(info.id)
    return errors, warnings, triggered
