"""Helpers for the Lambda tests: real stream records, Lambda event shapes, tiny servers.

The events handed to handlers are built from what real servers returned (moto's
DynamoDB Streams API) and pass through JSON, exactly as Lambda delivers them.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3

from bridge.offline.poller import lambda_record

REGION = "us-east-1"


def unique(prefix: str) -> str:
    """A name no other test in this process uses (moto's state is shared per process)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def aws_environment(monkeypatch: Any, endpoint: str) -> None:
    """What a function's container would have: region, credentials, endpoint variables."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_EVENTBRIDGE"):
        monkeypatch.delenv(name, raising=False)


def session() -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


def read_stream(endpoint: str, table_name: str) -> tuple[str, list[dict[str, Any]]]:
    """Every record of a table's stream, oldest first, through the Streams API.

    Returns the stream ARN and the records as boto3 parsed them.
    """
    dynamodb = session().client("dynamodb", endpoint_url=endpoint)
    streams = session().client("dynamodbstreams", endpoint_url=endpoint)
    arn = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    records: list[dict[str, Any]] = []
    for shard in shards:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page["Records"]:
                break
            records.extend(page["Records"])
            iterator = page.get("NextShardIterator")
    return arn, records


def stream_event(records: list[dict[str, Any]], stream_arn: str) -> dict[str, Any]:
    """The event Lambda's DynamoDB event source mapping passes to a handler.

    The local cloud's poller builds it the same way (``eventSourceARN`` added,
    ``ApproximateCreationDateTime`` as epoch seconds, binary as base64); the JSON
    round trip leaves only what a real invocation carries.
    """
    event = {"Records": [lambda_record(r, stream_arn) for r in records]}
    return json.loads(json.dumps(event))


class RecordingHandler(BaseHTTPRequestHandler):
    """Base of the tests' stand-ins for AWS endpoints: records each request it gets.

    Subclasses implement ``respond(path, headers, body) -> (status, headers, body)``;
    it runs outside ``server.lock``, so it takes the lock itself to change shared state.
    The server's ``requests`` list holds ``(path, headers, body)`` per request; an
    error raised in ``respond`` (a failed assertion) is kept in ``errors`` and fails
    the test when the server stops.
    """

    def do_POST(self) -> None:  # the http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.requests.append((self.path, headers, body))  # type: ignore[attr-defined]
        try:
            status, reply_headers, reply = self.respond(self.path, headers, body)
        except BaseException as error:  # an assertion in the server thread: fail the test
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.errors.append(repr(error))  # type: ignore[attr-defined]
            status, reply_headers, reply = 500, {}, b'{"message": "test server error"}'
        self.send_response(status)
        for name, value in reply_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def respond(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Each test server says what AWS would answer; this one refuses everything."""
        return 501, {}, b'{"message": "this test server answers nothing"}'

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""


@contextmanager
def http_server(handler: type[RecordingHandler], **state: Any) -> Iterator[Any]:
    """Serve ``handler`` on a free port in a thread; yields the server (``.url``, ``.requests``).

    Keyword arguments become attributes of the server, for the handler to read.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.requests = []  # type: ignore[attr-defined]
    server.errors = []  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    for name, value in state.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert server.errors == [], server.errors  # what failed inside the server's thread
