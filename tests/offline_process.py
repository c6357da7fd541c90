"""Run `bridge offline` as a real subprocess on free ports, as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from bridge.offline.ports import free_port

BRIDGE = Path(sys.executable).with_name("bridge")
LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _ignore_hangup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class OfflineProcess:
    def __init__(
        self,
        cwd: Path,
        *args: str,
        ports: dict[str, int] | None = None,
        env: dict[str, str] | None = None,
        ignore_hangup: bool = False,
        program: list[str] | None = None,
    ) -> None:
        self.cwd = cwd
        # What runs as `bridge` (tests/offline_faults.py runs it with a fault injected).
        self.program = program or [str(BRIDGE)]
        self.args = args
        self.env = {**os.environ, **LOCAL_ENV, **(env or {})}
        self.ignore_hangup = ignore_hangup  # started as `nohup` starts it
        self.ports = dict(
            ports or {"dynamodb": free_port(), "events": free_port(), "ws": free_port()}
        )
        # The bridge API gets a free port of its own too, so that no run binds 3002
        # (given ports without one: an older caller, or a run with --no-bridge).
        self.ports.setdefault("bridge", free_port())
        self.process: subprocess.Popen | None = None
        # A file, not a pipe: an unread pipe fills up and blocks the process's logging.
        self.log = cwd / "offline.log"
        self.started: dict = {}

    @property
    def dynamodb_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dynamodb']}"

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['events']}"

    @property
    def bridge_url(self) -> str:
        """The bridge API's WebSocket URL (the port is passed even with --no-bridge)."""
        return f"ws://127.0.0.1:{self.ports['bridge']}/local"

    def start(self) -> OfflineProcess:
        self.process = subprocess.Popen(
            [
                *self.program,
                "offline",
                "--json",
                "--dynamodb-port",
                str(self.ports["dynamodb"]),
                "--events-port",
                str(self.ports["events"]),
                "--ws-port",
                str(self.ports["ws"]),
                "--bridge-port",
                str(self.ports["bridge"]),
                *self.args,
            ],
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=self.log.open("a"),
            text=True,
            env=self.env,
            preexec_fn=_ignore_hangup if self.ignore_hangup else None,
        )
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise RuntimeError(f"bridge offline did not start: {self.log.read_text()}")
        self.started = json.loads(line)
        return self

    def stop(self, timeout: float = 120, sig: int = signal.SIGINT) -> dict:
        """Ctrl-C (or `sig`), wait for the clean shutdown, return its summary."""
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise AssertionError(
                f"bridge offline did not stop in {timeout} s:\n{self.log.read_text()}"
            ) from None
        assert self.process.returncode == 0, self.log.read_text()
        return json.loads(out.strip().splitlines()[-1])["stopped"]

    def __enter__(self) -> OfflineProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def embedded_dynamodb_pid(port: int) -> int:
    """The process id of the embedded DynamoDB child serving `port` (read from /proc)."""
    wanted = ["-m", "bridge.offline.dynamodb", "--host", "127.0.0.1", "--port", str(port)]
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            continue
        if argv[1 : 1 + len(wanted)] == wanted:
            return int(entry.name)
    raise AssertionError(f"no embedded DynamoDB on port {port}")
