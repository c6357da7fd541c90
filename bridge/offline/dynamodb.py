"""The embedded DynamoDB endpoint: moto's server in this process, on a real port.

What moto's own ``ThreadedMotoServer`` lacks, and the local cloud needs:

* **durable tables** (with ``db``): every write is journaled before it is
  acknowledged and the tables are rebuilt from the snapshot and the journal at
  start, so what the endpoint acknowledged survives ``kill -9`` — see
  :mod:`bridge.offline.durable` for the design;
* **serialized writes and DynamoDB's stream rules**: one write at a time (unique
  stream sequence numbers, conditional checks that hold), and no stream record for
  a write that changes nothing — with or without ``db``;
* a **write gate**: on shutdown the endpoint stops taking writes (503, which SDKs
  retry) while DynamoDB Streams reads still work, so the stream poller can publish
  every acknowledged write before the process exits;
* a count of requests in flight, so shutdown waits for writes already accepted;
* a count of writes started and in flight, so the local cloud can tell a quiet
  moment (nothing written since it last looked) in which to fold the journal.

moto keeps its state per process, so every embedded endpoint of one process shares
the same tables — tests give each case its own stage/table names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bridge.core.errors import BridgeError
from bridge.core.names import DEFAULT_REGION
from bridge.offline.durable import WRITE_LOCK, DurableTables, install
from bridge.offline.journal import SEGMENT_ENTRIES
from bridge.offline.ports import check_port_free, free_port

STREAMS_TARGET_PREFIX = "DynamoDBStreams_"
CLOSE_WRITES_PATH = "/__bridge/close-writes"
OPEN_WRITES_PATH = "/__bridge/open-writes"
WRITES_PATH = "/__bridge/writes"
FOLD_PATH = "/__bridge/fold"
_CHILD_LEVELS = {"WARNING": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}
# Operations that may change a table. A read miscounted here costs a needless
# save; a write missed would cost a save that lacks it, so PartiQL counts too.
WRITE_OPERATIONS = frozenset(
    {
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "ExecuteStatement",
        "BatchExecuteStatement",
        "ExecuteTransaction",
        "CreateTable",
        "UpdateTable",
        "DeleteTable",
        "UpdateTimeToLive",
        "RestoreTableFromBackup",
        "RestoreTableToPointInTime",
    }
)


class _Gate:
    """WSGI middleware: counts requests in flight, refuses writes once closed, runs
    writes one at a time (journaled when ``tables`` is given) and holds back answers
    until what they may show is durable.

    Requests signed with ``trusted_key`` still pass when closed: the local cloud's
    own functions finish their work (a projection writing the core table) while
    the pipeline drains.
    """

    def __init__(
        self,
        app: Any,
        trusted_key: str | None = None,
        open: bool = True,
        tables: DurableTables | None = None,
    ) -> None:
        self.app = app
        self.tables = tables
        self.trusted = f"Credential={trusted_key}/" if trusted_key else None
        self.open = open
        self.in_flight = 0
        self.writes = 0  # write requests started, ever
        self.writing = 0  # write requests not finished yet
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if environ["REQUEST_METHOD"] == "POST" and environ.get("PATH_INFO") == OPEN_WRITES_PATH:
            self.open = True
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"writes":"open"}']
        if environ["REQUEST_METHOD"] == "POST" and environ.get("PATH_INFO") == CLOSE_WRITES_PATH:
            return self._close_writes(start_response)
        if environ["REQUEST_METHOD"] == "GET" and environ.get("PATH_INFO") == WRITES_PATH:
            with self._lock:
                written = json.dumps({"writes": self.writes, "writing": self.writing})
            start_response("200 OK", [("Content-Type", "application/json")])
            return [written.encode()]
        if environ["REQUEST_METHOD"] == "POST" and environ.get("PATH_INFO") == FOLD_PATH:
            counts = self.tables.fold() if self.tables is not None else {}
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"tables": counts}).encode()]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        trusted = self.trusted and self.trusted in environ.get("HTTP_AUTHORIZATION", "")
        if not self.open and not trusted and not target.startswith(STREAMS_TARGET_PREFIX):
            start_response("503 Service Unavailable", [("Content-Type", "application/json")])
            return [b'{"__type":"ServiceUnavailable","message":"bridge offline is stopping"}']
        write = target.rpartition(".")[2] in WRITE_OPERATIONS
        with self._lock:
            self.in_flight += 1
            self.writes += write
            self.writing += write
        try:
            # moto builds whole responses (no streaming), so the work is done here.
            if write and self.tables is not None:
                return self.tables.write(lambda: list(self.app(environ, start_response)))
            if write:
                with WRITE_LOCK:
                    return list(self.app(environ, start_response))
            body = list(self.app(environ, start_response))
            if self.tables is not None:
                self.tables.after_read()
            return body
        finally:
            with self._lock:
                self.in_flight -= 1
                self.writing -= write

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new writes, then wait for those in flight (streams stay readable)."""
        self.open = False
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def _close_writes(self, start_response: Any) -> list[bytes]:
        """The control call of a parent process."""
        self.close()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"writes":"closed"}']


class EmbeddedDynamoDB:
    """moto's DynamoDB (and Streams) endpoint served from a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        trusted_key: str | None = None,
        closed: bool = False,
        db: str | Path | None = None,
        region: str = DEFAULT_REGION,
        fsync: bool = False,
        segment_entries: int = SEGMENT_ENTRIES,
    ) -> None:
        self.host = host
        self.port = port
        self.trusted_key = trusted_key
        self.closed = closed  # start refusing writes (but the trusted key's) until opened
        self.db = db  # the tables' snapshot and journal; None: in memory only
        self.region = region  # where tables of the snapshot's layout before the journal go
        self.fsync = fsync
        self.segment_entries = segment_entries
        self.tables: DurableTables | None = None
        self.restored: dict[str, int] = {}
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
        install()
        if self.db is not None:
            self.tables = DurableTables(
                self.db, self.region, fsync=self.fsync, segment_entries=self.segment_entries
            )
            self.restored = self.tables.load()
        self._gate = _Gate(
            DomainDispatcherApplication(create_backend_app),
            self.trusted_key,
            not self.closed,
            self.tables,
        )
        try:
            self._server = make_server(
                self.host, self.port, self._gate, threaded=True, request_handler=MotoRequestHandler
            )
        except BaseException:
            if self.tables is not None:
                self.tables.close()
            raise
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="embedded-dynamodb", daemon=True
        )
        self._thread.start()
        return self

    def close_writes(self, timeout: float = 10.0) -> None:
        """Refuse new writes, then wait for those in flight (streams stay readable)."""
        if self._gate is not None:
            self._gate.close(timeout)

    def fold(self) -> dict[str, int]:
        """Fold the journal into the snapshot now; items per table ({} without ``db``)."""
        return self.tables.fold() if self.tables is not None else {}

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.tables is not None:
            self.tables.close()
            self.tables = None

    def __enter__(self) -> EmbeddedDynamoDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DynamoDBProcess:
    """The embedded endpoint in a child process, so moto's work (a busy core under
    load) doesn't share an interpreter lock with the poller, bus and gateway.

    Same interface as :class:`EmbeddedDynamoDB`. The child runs in its own session
    (Ctrl-C in the terminal reaches only the parent, which drains first) and exits
    when the parent's pipe closes, so it never outlives a crashed parent.

    With ``db`` the child keeps its tables there (snapshot and journal) and has
    rebuilt them before it reports ready (:attr:`restored`). It starts with writes
    closed to everyone but the trusted key: the local cloud creates its tables
    before any client may write, for a write into a table whose stream is not on yet
    would never be published. :meth:`open_writes` lets clients in.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        trusted_key: str | None = None,
        db: str | Path | None = None,
        region: str = DEFAULT_REGION,
        fsync: bool = False,
        segment_entries: int = SEGMENT_ENTRIES,
    ) -> None:
        self.host = host
        self.port = port
        self.trusted_key = trusted_key
        self.db = db
        self.region = region
        self.fsync = fsync
        self.segment_entries = segment_entries
        self.restored: dict[str, int] = {}  # items per table, as rebuilt at start
        self.replayed = 0  # journal entries the child applied over its snapshot
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> DynamoDBProcess:
        self.port = self.port or free_port(self.host)
        command = [
            sys.executable,
            "-m",
            "bridge.offline.dynamodb",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if self.trusted_key:
            command += ["--trusted-key", self.trusted_key, "--closed"]
        if self.db is not None:
            command += ["--db", str(self.db), "--region", self.region]
            command += ["--fsync"] if self.fsync else []
            if self.segment_entries != SEGMENT_ENTRIES:
                command += ["--segment-entries", str(self.segment_entries)]
        process = self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None and process.stderr is not None  # PIPE, above
        ready = process.stdout.readline()
        if not ready:
            error = process.stderr.read().strip().splitlines()
            process.wait()
            reason = error[-1].removeprefix("error: ") if error else "no reason given"
            raise BridgeError(f"the embedded DynamoDB did not start: {reason}")
        started = json.loads(ready)
        self.restored, self.replayed = started.get("restored", {}), started.get("replayed", 0)
        # moto logs a traceback per bad request: an unread pipe would fill and hang it.
        threading.Thread(target=self._forward_stderr, name="dynamodb-stderr", daemon=True).start()
        return self

    def _forward_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        log = logging.getLogger(__name__)
        for line in self._process.stderr:
            # The child's own warnings (a damaged journal line) and its last word (why
            # it had to exit) are shown; moto's per-request tracebacks only with -v.
            level, _, text = line.rstrip().partition(" ")
            if level in _CHILD_LEVELS and text.startswith("bridge."):
                log.log(_CHILD_LEVELS[level], "%s", text)
            elif level == "error:":
                log.error("%s", text)
            else:
                log.debug("%s", line.rstrip())

    def exit_status(self) -> int | None:
        """The child's exit code (negative: the signal) once it has ended, else None."""
        return self._process.poll() if self._process is not None else None

    def open_writes(self) -> None:
        self._control(OPEN_WRITES_PATH, timeout=10)

    def close_writes(self, timeout: float = 10.0) -> None:
        self._control(CLOSE_WRITES_PATH, timeout=timeout + 5)

    def fold(self, timeout: float = 600.0) -> dict[str, int]:
        """Fold the child's journal into the snapshot now; returns items per table."""
        request = urllib.request.Request(self.url + FOLD_PATH, data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["tables"]

    def write_counts(self) -> tuple[int, int]:
        """(write requests started so far, write requests still running)."""
        with urllib.request.urlopen(self.url + WRITES_PATH, timeout=10) as response:
            counts = json.loads(response.read())
        return counts["writes"], counts["writing"]

    def _control(self, path: str, timeout: float) -> None:
        request = urllib.request.Request(self.url + path, data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.stdin is not None:  # (always: started with stdin=PIPE)
            self._process.stdin.close()  # the child's signal to exit
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def main() -> None:
    """``python -m bridge.offline.dynamodb [--port 8000] [--db db]``: serve the endpoint alone.

    Prints one JSON line once it listens (its ``url``, the items ``restored`` per
    table); exits on Ctrl-C, SIGTERM or when stdin closes.
    """
    import argparse

    parser = argparse.ArgumentParser(description="the embedded DynamoDB endpoint")
    # The parent shows the child's warnings (its own code's, prefixed with the level).
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--trusted-key")
    parser.add_argument("--closed", action="store_true", help="refuse writes until opened")
    parser.add_argument("--db", help="keep the tables in this SQLite file and its journal")
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--fsync", action="store_true", help="flush the journal to the disk")
    parser.add_argument(
        "--segment-entries", type=int, default=SEGMENT_ENTRIES, help="journal entries per segment"
    )
    args = parser.parse_args()
    try:
        server = EmbeddedDynamoDB(
            args.host,
            args.port,
            args.trusted_key,
            args.closed,
            args.db,
            args.region,
            args.fsync,
            args.segment_entries,
        ).start()
    except (BridgeError, OSError, TimeoutError, sqlite3.Error) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    replayed = server.tables.replayed if server.tables is not None else 0
    ready = {"url": server.url, "restored": server.restored, "replayed": replayed}
    print(json.dumps(ready), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def exit_when_stdin_closes() -> None:  # the parent's pipe: closed when it ends
        sys.stdin.read()
        done.set()

    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    server.stop()


if __name__ == "__main__":
    main()
