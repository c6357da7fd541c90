"""Where commands point: stage, endpoint, region, credentials → boto3 sessions.

For stage ``local`` everything defaults to the local cloud (DynamoDB on
127.0.0.1:8000, dummy credentials) so no AWS account is ever touched by accident.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config

from bridge.core.inputs import check_region, check_url
from bridge.core.names import core_table_name, log_table_name, region_from

LOCAL_STAGE = "local"
LOCAL_DYNAMODB = "http://127.0.0.1:8000"
LOCAL_LAMBDA = "http://127.0.0.1:4010"  # bridge offline serves the Lambda Invoke API here
LOCAL_EVENTS = "http://127.0.0.1:4010"  # and its EventBridge endpoint
DUMMY_CREDENTIALS: dict[str, Any] = {
    "aws_access_key_id": "local",
    "aws_secret_access_key": "local",
}


def default_region() -> str:
    """The region when none is given: the SDK's variables, then us-east-1."""
    return region_from(os.environ)


def local_endpoint(service: str, default: str) -> str:
    """``AWS_ENDPOINT_URL_{SERVICE}`` (or ``AWS_ENDPOINT_URL``) when set, else ``default``.

    A variable set to something botocore cannot use is refused naming the variable:
    the user never typed it on this command line, so the option alone would mislead."""
    for name in (f"AWS_ENDPOINT_URL_{service}", "AWS_ENDPOINT_URL"):
        value = os.environ.get(name)
        if value:
            return check_url(f"${name}", value)
    return default


def is_loopback(url: str | None) -> bool:
    """Does the URL point at this machine? (An IP literal, not a name like 127.x.com.)"""
    host = urlparse(url or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Target:
    """One stage's endpoints and credentials, as given on the command line."""

    stage: str = LOCAL_STAGE
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None

    @property
    def is_local(self) -> bool:
        return self.stage == LOCAL_STAGE

    @property
    def dynamodb_endpoint(self) -> str | None:
        """--endpoint-url, else (stage local) what `bridge offline` told you to export,
        else its default port. Other stages: None, boto3's own resolution (AWS)."""
        if self.endpoint_url:
            return check_url("--endpoint-url", self.endpoint_url)
        if not self.is_local:
            return None
        return local_endpoint("DYNAMODB", LOCAL_DYNAMODB)

    @property
    def lambda_endpoint(self) -> str | None:
        """Where `bridge failures retry` invokes: `bridge offline`'s :4010 for stage local."""
        return local_endpoint("LAMBDA", LOCAL_LAMBDA) if self.is_local else None

    @property
    def log_table(self) -> str:
        return log_table_name(self.stage)

    @property
    def core_table(self) -> str:
        return core_table_name(self.stage)

    @property
    def local_endpoint(self) -> bool:
        """Stage local, or any stage pointed at a loopback endpoint (DynamoDB Local, moto)."""
        return self.is_local or is_loopback(self.endpoint_url)

    def session(self) -> boto3.Session:
        # botocore refuses a malformed region too, but as exit 1 and its own wording.
        if self.region:
            region = check_region("--region", self.region)
        else:
            region = check_region("$AWS_REGION / $AWS_DEFAULT_REGION", default_region())
        if self.profile:
            return boto3.Session(profile_name=self.profile, region_name=region)
        if self.local_endpoint:
            # Local endpoints accept any key; use the user's if set, dummy ones if not.
            session = boto3.Session(region_name=region)
            if session.get_credentials() is None:
                session = boto3.Session(region_name=region, **DUMMY_CREDENTIALS)
            return session
        return boto3.Session(region_name=region)

    def dynamodb(self, max_pool: int = 10) -> Any:
        """A DynamoDB resource (thread-safe enough for ``Table`` use from one thread)."""
        return self.session().resource(
            "dynamodb",
            endpoint_url=self.dynamodb_endpoint,
            config=Config(max_pool_connections=max_pool, retries={"mode": "standard"}),
        )

    def client(self, service: str, endpoint_url: str | None = None) -> Any:
        session: Any = self.session()  # any service by name: untyped on purpose
        return session.client(service, endpoint_url=endpoint_url)


def events_endpoint(stage: str, url: str | None) -> str | None:
    """--events-endpoint, else $AWS_ENDPOINT_URL_EVENTBRIDGE (or $AWS_ENDPOINT_URL),
    else `bridge offline`'s :4010 for stage local; None is AWS itself."""
    if url:
        return check_url("--events-endpoint", url)
    found = local_endpoint("EVENTBRIDGE", LOCAL_EVENTS if stage == LOCAL_STAGE else "")
    return found or None


def events_client(stage: str, url: str | None, region: str | None, profile: str | None) -> Any:
    """An EventBridge client of ``url`` (see :func:`events_endpoint`): dummy keys on a
    local endpoint when there are none, else the standard chain."""
    where = Target(stage=stage, endpoint_url=url, region=region, profile=profile)
    return where.client("events", endpoint_url=url)
