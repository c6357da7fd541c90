"""The embedded DynamoDB endpoint: moto's server in this process, on a real port.

Two things moto's own ``ThreadedMotoServer`` lacks, and the local cloud needs:

* a **write gate**: on shutdown the endpoint stops taking writes (503, which SDKs
  retry) while DynamoDB Streams reads still work, so the stream poller can publish
  every acknowledged write before the process exits;
* a count of requests in flight, so shutdown waits for writes already accepted.

moto keeps its state per process, so every embedded endpoint of one process shares
the same tables — tests give each case its own stage/table names.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from typing import Any

from bridge.core.errors import BridgeError

STREAMS_TARGET_PREFIX = "DynamoDBStreams_"


def check_port_free(host: str, port: int) -> None:
    """Fail with one clear line when the port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                raise BridgeError(
                    f"port {port} on {host} is already in use; pick another with the port option"
                ) from None
            raise


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class _Gate:
    """WSGI middleware: counts requests in flight and refuses writes once closed.

    Requests signed with ``trusted_key`` still pass when closed: the local cloud's
    own functions finish their work (a projection writing the core table) while
    the pipeline drains.
    """

    def __init__(self, app: Any, trusted_key: str | None = None) -> None:
        self.app = app
        self.trusted = f"Credential={trusted_key}/" if trusted_key else None
        self.open = True
        self.in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        trusted = self.trusted and self.trusted in environ.get("HTTP_AUTHORIZATION", "")
        if not self.open and not trusted and not target.startswith(STREAMS_TARGET_PREFIX):
            start_response("503 Service Unavailable", [("Content-Type", "application/json")])
            return [b'{"__type":"ServiceUnavailable","message":"bridge offline is stopping"}']
        with self._lock:
            self.in_flight += 1
        try:
            # moto builds whole responses (no streaming), so the work is done here.
            return list(self.app(environ, start_response))
        finally:
            with self._lock:
                self.in_flight -= 1


class EmbeddedDynamoDB:
    """moto's DynamoDB (and Streams) endpoint served from a background thread."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 8000, trusted_key: str | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.trusted_key = trusted_key
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._gate: _Gate | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmbeddedDynamoDB:
        from moto.moto_server.werkzeug_app import (  # the `offline` extra
            DomainDispatcherApplication,
            create_backend_app,
        )
        from moto.server import MotoRequestHandler
        from werkzeug.serving import make_server

        if self.port:
            check_port_free(self.host, self.port)
        # werkzeug logs every request at INFO: far too loud for a local cloud.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._gate = _Gate(DomainDispatcherApplication(create_backend_app), self.trusted_key)
        self._server = make_server(
            self.host, self.port, self._gate, threaded=True, request_handler=MotoRequestHandler
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="embedded-dynamodb", daemon=True
        )
        self._thread.start()
        return self

    def close_writes(self, timeout: float = 10.0) -> None:
        """Refuse new writes, then wait for those in flight (streams stay readable)."""
        if self._gate is None:
            return
        self._gate.open = False
        deadline = time.monotonic() + timeout
        while self._gate.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> EmbeddedDynamoDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """``python -m bridge.offline.dynamodb [PORT]``: serve the embedded endpoint alone."""
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    with EmbeddedDynamoDB(port=port) as server:
        print(server.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
