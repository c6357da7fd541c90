"""Run `bridge connect` as a real subprocess, as a user would, and read what it prints.

With ``--json`` the client prints one JSON line per event (``cursor``, ``id``,
``event``) and, when it stops, ``{"summary": …}``. A thread reads stdout as it comes:
an unread pipe fills up (64 KB is about a hundred events) and then blocks the client's
event loop in the middle of a batch, which would look like a stalled bridge.
Tests wait on what was printed (:meth:`ConnectProcess.wait_for`), never on time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from offline_process import BRIDGE, LOCAL_ENV


class ConnectProcess:
    """``bridge connect --json ARGS…`` in ``cwd``; ``start()``, then wait, kill or stop."""

    def __init__(
        self, cwd: Path, *args: str, env: dict[str, str] | None = None, name: str = "connect"
    ) -> None:
        self.cwd = cwd
        self.args = args
        self.env = {**os.environ, **LOCAL_ENV, **(env or {})}
        self.name = name
        self.process: subprocess.Popen[str] | None = None
        self.events: list[dict[str, Any]] = []  # every event line printed, in order
        self.summary: dict[str, Any] | None = None
        self.other: list[str] = []  # stdout lines that are neither (there should be none)
        self.run_from = 0
        self.run_top = 0  # the highest cursor the current run printed
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None
        self._stderr_path = cwd / f"{name}.stderr"
        self._stderr_start = 0

    # ------------------------------------------------------------------ running

    def start(self) -> ConnectProcess:
        """Start (again: a restart keeps the events printed before, as a person's
        scrollback would, and reads the new run's output from its beginning)."""
        assert self.process is None or self.process.poll() is not None, "still running"
        self.summary = None
        self.run_from = len(self.events)  # this run's events start here
        self.run_top = 0
        self._stderr_start = self._stderr_path.stat().st_size if self._stderr_path.exists() else 0
        self.process = subprocess.Popen(
            [str(BRIDGE), "connect", "--json", *self.args],
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_path.open("a"),
            text=True,
            env=self.env,
            start_new_session=True,  # a Ctrl-C of the test run is not the client's
        )
        self._reader = threading.Thread(
            target=self._read, args=(self.process,), name=f"{self.name}-stdout", daemon=True
        )
        self._reader.start()
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                value = json.loads(line)
            except ValueError:
                value = None
            with self._changed:
                if isinstance(value, dict) and "cursor" in value and "event" in value:
                    self.events.append(value)
                    self.run_top = max(self.run_top, value["cursor"])
                elif isinstance(value, dict) and "summary" in value:
                    self.summary = value["summary"]
                else:
                    self.other.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def stderr(self) -> str:
        """What the current (or last) run wrote on stderr."""
        if not self._stderr_path.exists():
            return ""
        with self._stderr_path.open() as handle:
            handle.seek(self._stderr_start)
            return handle.read()

    def wait_for(
        self, condition: Callable[[ConnectProcess], bool], timeout: float, what: str
    ) -> None:
        """Wait until ``condition(self)`` holds, re-checked at every line printed; fail
        with ``what`` (and the client's stderr) if it does not within ``timeout`` s, or
        if the client exits first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self):
                if not self.running and not (self._reader and self._reader.is_alive()):
                    raise AssertionError(
                        f"{self.name} exited ({self.returncode}) before {what}:\n{self.stderr}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.name}: no {what} in {timeout} s ({len(self.events)} event "
                        f"lines, top cursor {self.run_top}):\n{self.stderr}"
                    )
                self._changed.wait(min(left, 1.0))

    def cursors(self) -> set[int]:
        """Every cursor printed, by every run."""
        with self._changed:
            return {line["cursor"] for line in self.events}

    # ------------------------------------------------------------------ ending

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL: no flush, no ack, no summary; the next run resumes from the sink."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self._wait_exit(60)

    def stop(self, timeout: float = 120, expect: int = 0) -> dict[str, Any]:
        """Ctrl-C: the client writes what arrived, acknowledges it, prints its summary
        and exits ``expect`` (0; 4 with --fail-on-gap after a gap); returns the summary."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        code = self._wait_exit(timeout)
        assert code == expect, f"{self.name} exited {code} on Ctrl-C:\n{self.stderr}"
        assert self.summary is not None, f"{self.name} printed no summary:\n{self.stderr}"
        return self.summary

    def wait_exit(self, timeout: float = 120) -> int:
        """Wait for the client to end by itself; its exit code."""
        return self._wait_exit(timeout)

    def _wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s:\n{self.stderr}"
            ) from None
        if self._reader is not None:
            self._reader.join(30)
        return code

    def close(self) -> None:
        """Make sure nothing is left running (a failed test)."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()


def run_bridge(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """One short `bridge` command, with the local key pair unless ``env`` says otherwise."""
    return subprocess.run(
        [str(BRIDGE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **LOCAL_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def one_line(text: str) -> str:
    """The only line of ``text`` (an error a user can cause is one line, never a traceback)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    return lines[0]


def json_lines(text: str) -> Sequence[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
