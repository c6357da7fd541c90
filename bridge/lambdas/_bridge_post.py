"""Posting to WebSocket connections through API Gateway's management API.

The endpoint comes from ``AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI``, which botocore
reads itself: the stack sets it to the stage's ``https://`` URL, the local cloud to its
gateway. What a post can answer, and what the bridge does about it:

* 410 ``GoneException`` — the socket is gone (``$disconnect`` is best effort; this is
  the real signal). The connection is dropped, the buffer keeps the events.
* 429 ``LimitExceededException`` — the client's outbound buffer is full. Back off and
  try again a few times; the event stays buffered either way, so giving up loses
  nothing (the client re-fetches on resume).
* 413 ``PayloadTooLargeException`` — a message over 128 KB: the codec's chunking makes
  this a bug of ours, reported as such.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bridge.lambdas import _env

THROTTLE_RETRIES = 4
THROTTLE_FIRST_PAUSE = 0.05


class Posted(enum.Enum):
    OK = "ok"
    GONE = "gone"
    THROTTLED = "throttled"  # still throttled after the retries
    FAILED = "failed"  # anything else: logged, the buffer still holds the event


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class Poster:
    """Sends texts to connections; ``sleep`` is injectable so tests need not wait."""

    def __init__(
        self, client: Any | None = None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._client = client
        self._sleep = sleep

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _env.client("apigatewaymanagementapi")
        return self._client

    def post(self, connection: str, text: str) -> Posted:
        pause = THROTTLE_FIRST_PAUSE
        for attempt in range(THROTTLE_RETRIES + 1):
            try:
                self.client.post_to_connection(ConnectionId=connection, Data=text.encode())
                return Posted.OK
            except ClientError as error:
                code, status = _code(error), _status(error)
                if code == "GoneException" or status == 410:
                    return Posted.GONE
                if code == "LimitExceededException" or status == 429:
                    if attempt == THROTTLE_RETRIES:
                        return Posted.THROTTLED
                    self._sleep(pause)
                    pause *= 2
                    continue
                _env.log("post failed", connection=connection, code=code, status=status)
                return Posted.FAILED
            except BotoCoreError as error:  # the endpoint itself unreachable
                _env.log("post failed", connection=connection, error=str(error))
                return Posted.FAILED
        return Posted.THROTTLED

    def post_all(self, connection: str, texts: Iterable[str]) -> Posted:
        """Post in order, stopping at the first answer that is not OK."""
        for text in texts:
            outcome = self.post(connection, text)
            if outcome is not Posted.OK:
                return outcome
        return Posted.OK

    def close(self, connection: str) -> None:
        """Close a connection (a superseded one); already gone is fine."""
        try:
            self.client.delete_connection(ConnectionId=connection)
        except ClientError as error:
            if _code(error) != "GoneException" and _status(error) != 410:
                _env.log("close failed", connection=connection, code=_code(error))
        except BotoCoreError as error:
            _env.log("close failed", connection=connection, error=str(error))
