"""How the parts of `bridge offline` say that they cannot go on: one path, one line.

`bridge offline` is a handful of long-lived asyncio tasks (the archive writer, the
stream poller, the autosave, each gateway connection's worker and watchdog, each
sandbox's log pump, every async invocation, every replay) beside the embedded
DynamoDB's process. A task that dies of an exception nobody expected used to die
alone: the rest went on, half alive — a poller blocked on a flush the dead archive
writer would never finish, a connection whose messages were never handled. Here every
such task is started through a :class:`Supervisor` (or handed to it); its death
*breaks* the local cloud:

* :attr:`Supervisor.broken` is set, with one line saying which task died of what (the
  traceback is logged at debug level, for ``-v``);
* the listeners registered with :meth:`Supervisor.on_break` run at once: the runtime
  stops invoking (what was in flight is kept for the next start, never counted as a
  handler's failure), the bus refuses new events, the poller stops;
* `bridge offline` then stops and exits with that line, as when the embedded DynamoDB
  dies.

Parts that can die without raising in a task — the embedded DynamoDB's process — are
*checks* (:meth:`Supervisor.add_check`): a function saying why the part is gone, or
None. :meth:`Supervisor.healthy` runs them, so code that just saw a failure asks it
before blaming the failure on anyone: a handler that failed because DynamoDB died a
millisecond earlier has not failed, the cloud has.

A part used on its own (tests, a tool) is given no supervisor: :func:`report_death`
then logs a task's death, one line, and nothing else changes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bridge.core.errors import BridgeError

log = logging.getLogger(__name__)

T = TypeVar("T")
#: ``supervise(task, what)``: watch ``task`` (``what`` names it in the one line).
Supervise = Callable[["asyncio.Task[Any]", str], None]
#: A check of a part that is not a task: why it is gone, or None while it is fine.
Check = Callable[[], str | None]
#: How much of an exception's text the line keeps.
MAX_REASON = 300


class Halted(BridgeError):
    """Work refused or cut short because the local cloud is going down: not a failure of
    the work itself (a handler's retries and onFailure are not used up by it)."""


def death_line(what: str, error: BaseException) -> str:
    """``what`` died of ``error``, in one line of reasonable length."""
    text = " ".join(str(error).split())
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON] + " …"
    if isinstance(error, BridgeError) and text:  # its message is written for the user
        return f"{what} died: {text}"
    return f"{what} died: {type(error).__name__}" + (f": {text}" if text else "")


def _died(task: asyncio.Task[Any]) -> BaseException | None:
    """The exception a finished task died of; None if it returned or was cancelled."""
    return None if task.cancelled() else task.exception()


def report_death(task: asyncio.Task[Any], what: str) -> None:
    """The :data:`Supervise` of a part used without a supervisor: its death is logged."""

    def ended(task: asyncio.Task[Any]) -> None:
        if (error := _died(task)) is not None:
            log.error("%s", death_line(what, error), exc_info=error)

    task.add_done_callback(ended)


class Supervisor:
    """Watches offline's tasks and checks; the first death breaks the cloud, once."""

    def __init__(self) -> None:
        self.broken = asyncio.Event()
        self.reason = ""
        self._listeners: list[Callable[[], None]] = []
        self._checks: list[Check] = []

    def on_break(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (synchronously, at once) when the cloud breaks."""
        self._listeners.append(listener)

    def add_check(self, check: Check) -> None:
        self._checks.append(check)

    def healthy(self) -> bool:
        """Whether nothing has broken; runs the checks first, so a part that just died is
        known to have died before a failure it caused is blamed on anyone else."""
        if not self.broken.is_set():
            for check in self._checks:
                reason = check()
                if reason is not None:
                    self.fail(reason)
                    break
        return not self.broken.is_set()

    def fail(self, reason: str) -> None:
        """Break the cloud for ``reason`` (the first reason stays: later deaths are its
        consequences) and tell every listener."""
        if self.broken.is_set():
            log.debug("also: %s", reason)
            return
        self.reason = reason
        self.broken.set()
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001 - the others must still hear of it
                log.debug("a listener of the break failed", exc_info=True)

    def watch(self, task: asyncio.Task[Any], what: str) -> None:
        """Break the cloud if ``task`` dies of an exception (returning or being cancelled
        is a task's normal end). This is a :data:`Supervise`."""
        task.add_done_callback(functools.partial(self._ended, what))

    def spawn(self, coro: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        """``asyncio.create_task``, watched."""
        task = asyncio.create_task(coro, name=what)
        self.watch(task, what)
        return task

    def _ended(self, what: str, task: asyncio.Task[Any]) -> None:
        error = _died(task)
        if error is None:
            return
        log.debug("%s died", what, exc_info=error)  # the traceback, for -v
        self.fail(death_line(what, error))
