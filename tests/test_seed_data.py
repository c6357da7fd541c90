"""The seed's data, exactly: a handler written for the seed runs on `bridge generate` data.

The handler (tests/handlers/seed_users.py) is written the way the seed's Python handler
is: it reads ``phoneNumber`` and ``long``/``lat`` straight from the payloads, keeps
``pk = sk = users#{id}`` and writes conditionally on ``version``. It runs as a user's
own function, from a ``dynamodb-logs.toml`` in the project folder of a real
`bridge offline` process, on what a real `bridge generate` wrote.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import boto3
from offline_process import BRIDGE, LOCAL_ENV, OfflineProcess

from bridge.core.failure import FAILURE_PK_PREFIX
from bridge.core.log import from_dynamo
from bridge.fake import fake_users

HANDLERS = Path(__file__).parent / "handlers"
USERS, SEED = 30, 17
DEFINITION = """
[defaults]
retry_attempts = 2
retry_delay_ms = 200

[functions.seedusers]
handler = "seed_users.handler"
pattern = { source = ["dynamodb-log"], detail = { log = ["users"] } }
on_failure = "failures"
permissions = ["log:read", "core:read", "core:write"]

[functions.failures]
handler = "bridge.lambdas.failures.handler"
permissions = ["core:read", "core:write"]
"""
T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something (a condition, not a tuned sleep)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.2)
    return value


def test_a_handler_written_for_the_seed_runs_on_generated_data(tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "dynamodb-logs.toml").write_text(DEFINITION)
    shutil.copy(HANDLERS / "seed_users.py", project / "seed_users.py")

    with OfflineProcess(project, "--no-bridge") as offline:
        generate = subprocess.run(
            [str(BRIDGE), "generate", "--users", str(USERS), "--seed", str(SEED)]
            + ["--endpoint-url", offline.dynamodb_url, "--json"],
            capture_output=True,
            text=True,
            env=offline.env,
            timeout=120,
        )
        assert generate.returncode == 0, generate.stderr
        core = boto3.resource(
            "dynamodb", endpoint_url=offline.dynamodb_url, region_name="us-east-1", **_keys()
        ).Table("local-core")

        def built() -> list[dict[str, Any]] | None:
            # A user whose retries ran out will never be built: say so at once.
            assert "seedusers request" not in offline.log.read_text(), offline.log.read_text()
            items = core.scan(ConsistentRead=True)["Items"]
            done = [i for i in items if i.get("type") == "user" and i["version"] == 4]
            return items if len(done) == USERS else None

        items = eventually(built, 120, f"{USERS} users at version 4")
        offline.stop()  # drains: every invocation, retries included, has ended
    log = offline.log.read_text()

    assert not [i for i in items if i["pk"].startswith(FAILURE_PK_PREFIX)], log
    assert "seedusers request" not in log  # no "... failed (RetriesExhausted ...)" line
    # An attempt may lose a race to another invocation for the same user (the seed's
    # handler does not retry a failed condition itself; Lambda's retry does), but none
    # failed on the data: no KeyError, TypeError, ValidationException.
    errors = set(re.findall(r"seedusers \S+ [\d.]+ ms error (\S+)", log))
    assert errors <= {"ConditionalCheckFailedException"}, log

    expected = {}
    for events in fake_users(USERS, SEED):
        id = events[0].id
        signup, phone, _, location = (e.payload for e in events)
        expected[id] = {
            "pk": f"users#{id}",
            "sk": f"users#{id}",
            "type": "user",
            "id": id,
            "name": signup["name"],
            "email": signup["email"],
            "phoneNumber": phone["phoneNumber"],
            "verifiedPhoneNumber": True,
            "location": {"long": location["long"], "lat": location["lat"]},
            "version": 4,
        }
    assert {item["id"]: from_dynamo(item) for item in items} == expected
    # The coordinates are DynamoDB numbers, exactly the generated digits.
    for item in items:
        where = item["location"]
        assert isinstance(where["long"], Decimal) and isinstance(where["lat"], Decimal)
        generated = expected[item["id"]]["location"]
        assert where == {k: Decimal(repr(v)) for k, v in generated.items()}


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": LOCAL_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
    }
