"""An exclusive lock on a data file, held for the life of a process that writes it.

``{file}.lock`` is ``flock``-ed: the kernel releases it when the holder dies, even by
``kill -9``, so a crash never leaves a lock that blocks the next run; the file itself
is removed on a clean release. Used for offline's ``./db`` and a bridge client's sink.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from bridge.core.errors import BridgeError


class FileLock:
    """``FileLock(path, busy="...").acquire()``; ``busy`` is the one line a second
    holder gets."""

    def __init__(self, data_file: str | Path, busy: str) -> None:
        self.path = Path(f"{data_file}.lock")
        self.busy = busy
        self._file: IO[str] | None = None
        self.stale = False  # a previous holder ended without a clean release

    def acquire(self) -> FileLock:
        self.stale = self.path.exists()
        try:
            handle = self.path.open("a+")
        except OSError as error:  # a missing or read-only folder
            raise BridgeError(f"cannot use {self.path}: {error.strerror or error}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise BridgeError(self.busy) from None
        self._file = handle
        return self

    def release(self) -> None:
        """Remove the lock file while still holding it, then let go."""
        if self._file is not None:
            self.path.unlink(missing_ok=True)
            self._file.close()
            self._file = None
