"""``bridge synth / deploy / destroy``: the logs stack, or the bridge stack, through the CDK.

Synthesis runs in this process (the CDK app is Python, :mod:`cloud_stack`) and needs
no AWS access. Deploying and destroying hand the synthesized cloud assembly to the
CDK CLI (``npx --yes aws-cdk@2 ... --app <assembly>``), pinned to major version 2 so
that a CLI release cannot change the meaning of the templates under us.

Before the CLI starts, every precondition a user can fix is checked and reported
in one line (:class:`BridgeError`): the stage, Node.js/npx, AWS credentials and
region, and the CDK bootstrap of the target account and region. The CLI would find
the same problems, but minutes later and in a page of output.

The bridge stack (``bridge=True``) lives on the logs stack's bus without a
CloudFormation export between them (see :mod:`cloud_stack.bridge_stack`), so the
order is kept here, from CloudFormation's DescribeStacks: the bridge is deployed only
beside a logs stack, and the logs stack is not destroyed while the bridge stack is
there: the bus holds the bridge's rules, and EventBridge either refuses to delete
it (its API reference) or deletes the rules with it (its user guide), leaving the
logs stack's delete failed half-way or the bridge stack broken.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from bridge.core import names
from bridge.core.errors import BridgeError

__all__ = [
    "BOOTSTRAP_PARAMETER",
    "CDK_CLI",
    "DEFAULT_ARCHIVE_RETENTION_DAYS",
    "Account",
    "check_api_logging_role",
    "check_bootstrap",
    "check_credentials",
    "check_logs_stack",
    "check_no_bridge_stack",
    "check_node",
    "deploy",
    "destroy",
    "synth",
]

#: The CDK CLI package, pinned to the major version the templates are written for.
CDK_CLI = "aws-cdk@2"
#: Written by ``cdk bootstrap`` (default qualifier); its value is the bootstrap version.
BOOTSTRAP_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
#: Templates of the default synthesizer refuse older bootstrap stacks (CheckBootstrapVersion).
MIN_BOOTSTRAP_VERSION = 6
MIN_NODE_MAJOR = 18
#: See cloud_stack.app (kept here too so importing this module never loads aws_cdk).
DEFAULT_ARCHIVE_RETENTION_DAYS = 90


@dataclass(frozen=True)
class Account:
    """Who the credentials belong to, and where the stack would go."""

    account: str
    arn: str
    region: str
    profile: str | None = None


# --------------------------------------------------------------------------- synth


def synth(
    stage: str,
    outdir: str | Path,
    config_path: str | Path | None = None,
    retention_days: int = DEFAULT_ARCHIVE_RETENTION_DAYS,
    *,
    retain_data: bool = True,
    bridge: bool = False,
) -> list[Path]:
    """Write the cloud assembly of ``dynamodb-logs-{stage}`` to ``outdir``, or with
    ``bridge`` that of ``dynamodb-logs-bridge-{stage}`` (which ignores the archive and
    data options: they are the logs stack's).

    Returns the CloudFormation template files written. ``config_path`` is the
    subscriptions definition (default: ./dynamodb-logs.toml, else the packaged one),
    whose ``[bridge]`` table the bridge stack reads; ``retention_days`` is the
    archive's retention, 0 keeps events forever.
    """
    names.check_stage(stage)
    if retention_days < 0:
        raise BridgeError("archive retention must be 0 (forever) or a number of days")
    from bridge.subscriptions import load

    subs = load(config_path)  # fails fast, before jsii starts
    cloud = _cdk_modules()
    with tempfile.TemporaryDirectory(prefix="dynamodb-logs-code-") as staging:
        extra = cloud.BRIDGE_EXTRA_HANDLERS if bridge else cloud.LOGS_EXTRA_HANDLERS
        # refuses a missing handler before anything is written to outdir
        code = cloud.stage_code(subs, Path(staging) / "code", extra_handlers=extra)
        out = _writable_dir(Path(outdir))  # so does a bad --out (jsii would hang or crash)
        if bridge:
            app, _ = cloud.build_bridge_app(stage, subs.bridge, code, outdir=out)
        else:
            app, _ = cloud.build_app(
                stage,
                subs,
                code,
                outdir=out,
                archive_retention_days=retention_days,
                retain_data=retain_data,
            )
        assembly = app.synth()  # copies the staged code into the assembly
    return [Path(stack.template_full_path) for stack in assembly.stacks]


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-")  # noqa: SIM115
        probe.close()
    except OSError as error:
        raise BridgeError(f"cannot write the templates to {path}: {error.strerror}") from None
    return path


def _cdk_modules() -> Any:
    """:mod:`cloud_stack.app` (its builders, handler lists and stage_code), loaded late."""
    try:
        from cloud_stack import app
    except ImportError as error:
        raise BridgeError(
            f"the CDK libraries are missing ({error.name}): pip install 'dynamodb-logs-bridge[cdk]'"
        ) from None
    return app


# --------------------------------------------------------------------------- checks


def check_node() -> str:
    """The path of ``npx``, after checking Node.js is there and recent enough."""
    npx = shutil.which("npx")
    node = shutil.which("node")
    if npx is None or node is None:
        raise BridgeError(
            "Node.js (node and npx) not found on PATH: install Node.js 18 or newer "
            "from https://nodejs.org to deploy with the AWS CDK"
        )
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        raise BridgeError(f"cannot run {node} --version: {error}") from None
    found = re.match(r"v?(\d+)\.", version)
    if found is None or int(found.group(1)) < MIN_NODE_MAJOR:
        raise BridgeError(
            f"Node.js {version or '(unknown version)'} is too old for the AWS CDK: "
            f"install Node.js {MIN_NODE_MAJOR} or newer"
        )
    return npx


def _session(profile: str | None, region: str | None) -> boto3.Session:
    # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is what the CDK and Lambda use
    region = region or os.environ.get("AWS_REGION") or None
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except ProfileNotFound:
        raise BridgeError(
            f"AWS profile {profile!r} not found: check ~/.aws/config or pass another profile"
        ) from None
    if not session.region_name:
        raise BridgeError(
            "no AWS region: set AWS_REGION (or a region in your profile) or pass --region"
        )
    return session


def check_credentials(profile: str | None = None, region: str | None = None) -> Account:
    """Ask STS who we are; no credentials (or bad ones) end in one line saying what to do."""
    session = _session(profile, region)
    try:
        identity = session.client("sts").get_caller_identity()
    except (NoCredentialsError, PartialCredentialsError):
        raise BridgeError(
            "no AWS credentials found: export AWS_PROFILE (or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY), run `aws sso login`, or pass --profile"
        ) from None
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise BridgeError(
            f"AWS rejected the credentials ({code}): refresh them (e.g. `aws sso login`)"
        ) from None
    except BotoCoreError as error:
        raise BridgeError(f"cannot reach AWS STS to check the credentials: {error}") from None
    return Account(
        account=identity["Account"],
        arn=identity["Arn"],
        region=str(session.region_name),
        profile=profile,
    )


def check_bootstrap(account: Account) -> int | None:
    """The CDK bootstrap version of the account and region; fails if it is not bootstrapped.

    Returns None when the parameter cannot be read (access denied): principals that
    deploy only through the bootstrap roles may not read SSM themselves, and the
    CLI then checks the version with those roles.
    """
    session = _session(account.profile, account.region)
    fix = f"run: npx --yes {CDK_CLI} bootstrap aws://{account.account}/{account.region}"
    try:
        response = session.client("ssm").get_parameter(Name=BOOTSTRAP_PARAMETER)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code == "ParameterNotFound":
            raise BridgeError(
                f"account {account.account} region {account.region} is not bootstrapped "
                f"for the CDK: {fix}"
            ) from None
        if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            return None
        raise BridgeError(f"cannot read {BOOTSTRAP_PARAMETER}: {error}") from None
    except BotoCoreError as error:
        raise BridgeError(f"cannot reach AWS SSM to check the CDK bootstrap: {error}") from None
    value = response["Parameter"]["Value"]
    version = int(value) if value.isdigit() else 0
    if version < MIN_BOOTSTRAP_VERSION:
        raise BridgeError(
            f"the CDK bootstrap of {account.account}/{account.region} is version {value}, "
            f"older than {MIN_BOOTSTRAP_VERSION}: {fix}"
        )
    return version


def check_leftover_tables(account: Account, stage: str) -> None:
    """Tables a `destroy` kept (they are retained) block a new deploy of the stage with
    "already exists": say so before CloudFormation fails half-way."""
    session = _session(account.profile, account.region)
    try:
        session.client("cloudformation").describe_stacks(StackName=names.stack_name(stage))
        return  # the stack exists: an update, its tables are its own
    except ClientError as error:
        if "does not exist" not in str(error):
            return  # can't tell (e.g. no permission): let the CLI decide
    except BotoCoreError:
        return
    tables = (names.log_table_name(stage), names.core_table_name(stage))
    try:
        existing = session.client("dynamodb").list_tables().get("TableNames", [])
    except (ClientError, BotoCoreError):
        return
    left = [t for t in tables if t in existing]
    if left:
        raise BridgeError(
            f"{', '.join(left)} exist without the stack {names.stack_name(stage)} (kept by an "
            f"earlier destroy, or made by hand): bring them into the stack with "
            f"`npx {CDK_CLI} import`, or delete them if their data may go"
        )


class _CannotTell(Exception):
    """CloudFormation did not say (no permission, no answer): let the CDK CLI decide."""


def _stack_status(account: Account, stack: str) -> str | None:
    """The status of ``stack`` (``CREATE_COMPLETE`` …), or None when it does not exist."""
    session = _session(account.profile, account.region)
    try:
        found = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise _CannotTell from None
    except BotoCoreError:
        raise _CannotTell from None
    status = found[0]["StackStatus"] if found else None
    return None if status == "DELETE_COMPLETE" else status


# A logs stack in these states has no bus (never created, rolled back, going away).
_NO_BUS_STATUSES = frozenset(
    {
        "REVIEW_IN_PROGRESS",
        "CREATE_IN_PROGRESS",
        "CREATE_FAILED",
        "ROLLBACK_IN_PROGRESS",
        "ROLLBACK_FAILED",
        "ROLLBACK_COMPLETE",
        "DELETE_IN_PROGRESS",
        "DELETE_FAILED",
    }
)


def check_logs_stack(account: Account, stage: str) -> None:
    """The bridge stack puts its rules on the logs stack's bus: that stack must be there."""
    stack = names.stack_name(stage)
    try:
        status = _stack_status(account, stack)
    except _CannotTell:
        return
    where = f"account {account.account} region {account.region}"
    if status is None:
        raise BridgeError(
            f"the logs stack {stack} is not deployed in {where}, and the bridge lives on its "
            f"bus: deploy it first with `bridge deploy --stage {stage}`"
        )
    if status in _NO_BUS_STATUSES:
        raise BridgeError(
            f"the logs stack {stack} is {status} in {where}, so its bus may not exist: "
            f"deploy it (`bridge deploy --stage {stage}`) before the bridge"
        )


def check_no_bridge_stack(account: Account, stage: str) -> None:
    """Destroying the logs stack under the bridge stack would fail half-way: refuse."""
    bridge = names.bridge_stack_name(stage)
    try:
        status = _stack_status(account, bridge)
    except _CannotTell:
        return
    if status is not None:
        raise BridgeError(
            f"the bridge stack {bridge} ({status}) has rules on the bus of "
            f"{names.stack_name(stage)}: destroy it first with "
            f"`bridge destroy --stage {stage} --bridge`"
        )


def check_api_logging_role(account: Account) -> None:
    """API Gateway writes a WebSocket stage's access log with the account's CloudWatch
    role (an account-wide setting, not the stack's); without one the stage fails to
    deploy with "CloudWatch Logs role ARN must be set in account settings"."""
    session = _session(account.profile, account.region)
    try:
        settings = session.client("apigateway").get_account()
    except (ClientError, BotoCoreError):
        return  # can't tell (e.g. no apigateway:GET): let CloudFormation decide
    if not settings.get("cloudwatchRoleArn"):
        raise BridgeError(
            f"API Gateway in account {account.account} region {account.region} has no "
            "CloudWatch Logs role, which the bridge API's access log needs: create a role "
            "for apigateway.amazonaws.com with the AmazonAPIGatewayPushToCloudWatchLogs "
            "policy and run `aws apigateway update-account --patch-operations "
            "op=replace,path=/cloudwatchRoleArn,value=ROLE_ARN`"
        )


def _preflight(stage: str, profile: str | None, region: str | None) -> tuple[str, Account]:
    names.check_stage(stage)
    if stage == "local":
        raise BridgeError(
            "stage 'local' is the local cloud (`bridge offline`); deploy another stage to AWS"
        )
    npx = check_node()
    account = check_credentials(profile, region)
    check_bootstrap(account)
    return npx, account


def _deploy_preflight(
    stage: str, profile: str | None, region: str | None, bridge: bool
) -> tuple[str, Account]:
    npx, account = _preflight(stage, profile, region)
    if bridge:
        check_logs_stack(account, stage)
        check_api_logging_role(account)
    else:
        check_leftover_tables(account, stage)
    return npx, account


# --------------------------------------------------------------------------- CLI runs


@contextmanager
def _assembly(outdir: str | Path | None) -> Iterator[Path]:
    if outdir is not None:
        yield Path(outdir)
        return
    with tempfile.TemporaryDirectory(prefix="dynamodb-logs-cdk-") as temporary:
        yield Path(temporary)


def _run_cdk(npx: str, account: Account, arguments: list[str]) -> None:
    command = [npx, "--yes", CDK_CLI, *arguments]
    if account.profile:
        command += ["--profile", account.profile]
    env = {
        **os.environ,
        "AWS_REGION": account.region,
        "AWS_DEFAULT_REGION": account.region,
        "CDK_DISABLE_VERSION_CHECK": "1",
    }
    try:
        completed = subprocess.run(command, env=env, check=False)
    except OSError as error:
        raise BridgeError(f"cannot start the CDK CLI ({npx}): {error}") from None
    if completed.returncode != 0:
        raise BridgeError(
            f"cdk {arguments[0]} failed (exit {completed.returncode}); see its output above"
        )


def _check_inputs(stage: str, config_path: str | Path | None) -> None:
    """The user's own mistakes (stage name, subscriptions file) before AWS's."""
    from bridge.subscriptions import load

    names.check_stage(stage)
    load(config_path)


def deploy(
    stage: str,
    *,
    config_path: str | Path | None = None,
    retention_days: int = DEFAULT_ARCHIVE_RETENTION_DAYS,
    retain_data: bool = True,
    profile: str | None = None,
    region: str | None = None,
    outdir: str | Path | None = None,
    approve: bool = False,
    bridge: bool = False,
) -> dict[str, str]:
    """Deploy ``dynamodb-logs-{stage}`` (or with ``bridge``, ``dynamodb-logs-bridge-{stage}``
    beside it) and return the stack's outputs.

    ``approve=True`` skips the CLI's confirmation of IAM changes (needed when stdin
    is not a terminal); otherwise the CLI asks when permissions are broadened.
    """
    _check_inputs(stage, config_path)
    npx, account = _deploy_preflight(stage, profile, region, bridge)
    stack = names.bridge_stack_name(stage) if bridge else names.stack_name(stage)
    with _assembly(outdir) as assembly, tempfile.TemporaryDirectory() as scratch:
        synth(stage, assembly, config_path, retention_days, retain_data=retain_data, bridge=bridge)
        outputs_file = Path(scratch) / "outputs.json"
        arguments = ["deploy", stack, "--app", str(assembly), "--outputs-file", str(outputs_file)]
        arguments += ["--require-approval", "never" if approve else "broadening"]
        _run_cdk(npx, account, arguments)
        try:
            outputs = json.loads(outputs_file.read_text())
        except (OSError, ValueError):
            return {}
    return {str(key): str(value) for key, value in outputs.get(stack, {}).items()}


def destroy(
    stage: str,
    *,
    config_path: str | Path | None = None,
    profile: str | None = None,
    region: str | None = None,
    outdir: str | Path | None = None,
    bridge: bool = False,
) -> None:
    """Delete ``dynamodb-logs-{stage}``, or with ``bridge`` only ``dynamodb-logs-bridge-{stage}``.

    Tables of the logs stack deployed with ``retain_data`` (the default) stay, with
    their data: the log is the source of truth. Delete them with ``aws dynamodb
    delete-table`` if meant. The bridge's table is a buffer and goes with its stack.
    The logs stack is refused while the bridge stack is deployed on its bus.
    """
    _check_inputs(stage, config_path)
    npx, account = _preflight(stage, profile, region)
    if not bridge:
        check_no_bridge_stack(account, stage)
    stack = names.bridge_stack_name(stage) if bridge else names.stack_name(stage)
    with _assembly(outdir) as assembly:
        synth(stage, assembly, config_path, bridge=bridge)
        _run_cdk(npx, account, ["destroy", stack, "--app", str(assembly), "--force"])
