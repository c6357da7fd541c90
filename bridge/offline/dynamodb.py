"""The embedded DynamoDB endpoint: a moto server in this process, on a real port.

moto keeps its state per process, so every embedded endpoint of one process
shares the same tables — tests give each case its own stage/table names.
"""

from __future__ import annotations

import errno
import logging
import socket

from bridge.core.errors import BridgeError


def check_port_free(host: str, port: int) -> None:
    """Fail with one clear line when the port is taken (moto would hang instead)."""
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


class EmbeddedDynamoDB:
    """moto's DynamoDB (and Streams) endpoint served from a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmbeddedDynamoDB:
        from moto.server import ThreadedMotoServer  # the `offline` extra

        check_port_free(self.host, self.port)
        # werkzeug logs every request at INFO: far too loud for a local cloud.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(self.host, self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> EmbeddedDynamoDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """``python -m bridge.offline.dynamodb [PORT]``: serve the embedded endpoint alone."""
    import sys
    import threading

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    with EmbeddedDynamoDB(port=port) as server:
        print(server.url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
