"""Bad input on a real `bridge offline -q`'s EventBridge port, as a hard probe sends it.

Before: a lone surrogate in a Detail was accepted, killed the archive writer, and
then DescribeArchive and Ctrl-C hung; a deep Detail was an HTTP 500; a truncated
body or an oversized header put aiohttp tracebacks in the log even with ``-q``.
Now each is refused as AWS would (per entry where AWS fails per entry), logged as one
line, and offline archives what it accepted and stops cleanly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from offline_process import LOCAL_ENV, OfflineProcess

from bridge.archive import iter_events

AWS = Path(sys.executable).with_name("aws")
HEAD = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: AWSEvents.PutEvents\r\n"
    b"Content-Type: application/x-amz-json-1.1\r\n"
)


def client(service: str, url: str):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"total_max_attempts": 1}),
    )


def exchange(port: int, data: bytes, close_write: bool = True) -> bytes:
    """Raw bytes to the port; what comes back before the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(data)
        if close_write:
            connection.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
        return reply


def entry(detail: str, **extra: str) -> dict:
    return {
        "Source": "app",
        "DetailType": "t",
        "Detail": detail,
        "EventBusName": "dynamodb-log",
        **extra,
    }


@pytest.fixture
def offline(tmp_path: Path):
    with OfflineProcess(tmp_path, "-q") as running:
        yield running


def test_bad_input_on_the_events_port_is_refused_in_one_line_each(offline, tmp_path):
    url = f"http://127.0.0.1:{offline.ports['events']}"
    events = client("events", url)

    # the reproduction, word for word
    cli = subprocess.run(
        [
            str(AWS),
            "events",
            "put-events",
            "--endpoint-url",
            url,
            "--entries",
            '[{"Source":"app","DetailType":"t","Detail":"{\\"x\\":\\"\\\\ud800\\"}",'
            '"EventBusName":"dynamodb-log"}]',
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **LOCAL_ENV},
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["Entries"] == [
        {"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed."}
    ]

    # the other entries of a call are accepted
    deep = '{"x": ' + "[" * 5000 + "]" * 5000 + "}"
    mixed = events.put_events(
        Entries=[
            entry(deep),
            entry('{"x": "\\udcff"}'),
            entry("{}", Source="app\ud800"),
            entry('{"n": 1}'),
        ]
    )
    assert [e.get("ErrorCode") for e in mixed["Entries"]] == [
        "MalformedDetail",
        "MalformedDetail",
        "InvalidArgument",
        None,
    ]
    accepted = [mixed["Entries"][3]["EventId"]]

    # malformed HTTP: a body cut short (client gone), an oversized header (a 400)
    cut = exchange(offline.ports["events"], HEAD + b"Content-Length: 100\r\n\r\n{")
    assert cut == b""  # nobody left to answer: the connection just ends
    big = exchange(offline.ports["events"], HEAD + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n", False)
    assert big.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))

    # Lambda Invoke on the same port: an event no worker or failure record could carry
    functions = client("lambda", url)
    for payload in ("[" * 5000 + "]" * 5000, '{"x": "\\ud800"}'):
        with pytest.raises(ClientError) as refused:
            functions.invoke(FunctionName="failures", Payload=payload.encode())
        assert refused.value.response["Error"]["Code"] == "InvalidRequestContentException"

    # the archive is alive and holds exactly what was accepted; Ctrl-C stops cleanly
    described = events.describe_archive(ArchiveName="dynamodb-logs-archive")
    assert described["EventCount"] == 1
    accepted.append(events.put_events(Entries=[entry('{"n": 2}')])["Entries"][0]["EventId"])
    summary = offline.stop(timeout=60)
    assert summary["archived"] == 2
    assert [event["id"] for event in iter_events(tmp_path / "db")] == accepted

    log = offline.log.read_text()
    assert "Traceback" not in log
    assert "aiohttp" not in log
    refusals = [line for line in log.splitlines() if " bridge.offline.events_api " in line]
    assert len(refusals) == 6, log  # CLI, mixed, cut, big, two invokes: one line each
    assert any("body ended before it was complete" in line for line in refusals)
    assert any("Got more than 8190 bytes" in line for line in refusals)
