"""Shared fixtures: one real moto server over HTTP for the session, fresh tables per test."""

from __future__ import annotations

import os
import uuid

import pytest

from bridge.aws import Target
from bridge.offline.dynamodb import EmbeddedDynamoDB
from bridge.store import LogStore, create_tables

# No test may reach a real AWS account: dummy credentials, fixed region.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def moto_url() -> str:
    """A moto server on a free port (DynamoDB, Streams, EventBridge, SQS …)."""
    with EmbeddedDynamoDB(port=0) as server:
        yield server.url


@pytest.fixture
def endpoint(moto_url: str) -> str:
    """The session's moto server, for tests that talk to it with raw boto3 clients."""
    return moto_url


@pytest.fixture
def target(moto_url: str) -> Target:
    """A stage of its own (moto state is shared per process) with both tables created."""
    stage = f"t{uuid.uuid4().hex[:10]}"
    target = Target(stage=stage, endpoint_url=moto_url)
    create_tables(target.dynamodb(), target.log_table, target.core_table)
    return target


@pytest.fixture
def store(target: Target) -> LogStore:
    return LogStore(target.dynamodb().Table(target.log_table))
