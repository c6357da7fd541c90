"""The embedded DynamoDB's write-ahead journal: append-only segment files, group-committed.

What goes in an entry, and how it is replayed and folded, is :mod:`bridge.offline.durable`'s
business; this module only makes entries durable, in order, fast.

* **Files.** Segments ``{db}.dynamodb.000001``, ``…000002`` beside the database. One
  segment is open for appending; when it holds ``segment_entries`` entries (or
  ``segment_bytes`` bytes) it is *sealed* and the next one is opened, so a sealed
  segment can be folded into the snapshot and deleted while writes go on.
* **Lines.** One entry per line: ``{crc32:08x} {json}\\n``, the JSON ASCII-only (so
  no raw newline or lone surrogate can reach the file); ``bytes`` (moto keeps binary
  attributes as bytes) round-trip as ``{"$b64": …}`` (:func:`dumps`, :func:`loads`).
  A line cut short (the process died inside ``write``, or the power went before the
  page cache was written) or whose checksum does not match ends what
  :func:`read_segment` returns of that segment, with a warning; entries after it in
  that segment are skipped.
* **Group commit.** A writer takes a ticket (:meth:`Journal.reserve`) and hands in its
  bytes (:meth:`Journal.append`) in ticket order — the caller serializes that —
  then :meth:`Journal.wait`\\ s for its ticket to be on disk. The first waiter finds
  nobody writing and becomes the leader: it writes *everything* appended so far in
  one ``write`` (one ``fsync`` when asked), then wakes the others. Concurrent
  requests thus share one system call instead of queueing for one each.
* **Durability.** Without ``fsync`` an entry is durable once ``write`` returned: the
  data is in the kernel, and survives ``kill -9`` of the process. With ``fsync`` it
  survives a power cut too, at the cost of a disk flush per group (measured in
  ``bench/offline.py``).

A failed write (disk full, file removed) cannot be undone in memory, so it is
reported to ``on_fatal``; the embedded endpoint then exits rather than acknowledge
writes it cannot keep.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SEGMENT_ENTRIES = 10_000  # entries per segment: what a fold applies in one transaction
SEGMENT_BYTES = 16 * 1024 * 1024  # and bytes: batch writes make big entries
_SEGMENT = re.compile(r"\.dynamodb\.(\d{6,})$")


def segment_path(db: str | os.PathLike[str], number: int) -> Path:
    return Path(f"{os.fspath(db)}.dynamodb.{number:06d}")


def segments(db: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The journal segments beside ``db`` that exist, oldest first."""
    db = Path(db)
    found = []
    for path in db.parent.glob(f"{db.name}.dynamodb.*"):
        match = _SEGMENT.search(path.name)
        if match and path.name == f"{db.name}{match.group(0)}":
            found.append((int(match.group(1)), path))
    return sorted(found)


def dumps(value: Any) -> str:
    """JSON text, ASCII only, ``bytes`` kept as ``{"$b64": …}``.

    Unambiguous in typed JSON: a value there is always ``{type: value}``, and no
    DynamoDB type is called ``$b64``.
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, default=_bytes_out)


def loads(text: str | bytes) -> Any:
    """:func:`dumps` read back, ``bytes`` as bytes."""
    binary = b'"$b64"' in text if isinstance(text, bytes) else '"$b64"' in text
    if not binary:  # the common case, and a hook on every object costs a third
        return json.loads(text)
    return json.loads(text, object_hook=_bytes_in)


def _bytes_out(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _bytes_in(value: dict[str, Any]) -> Any:
    if len(value) == 1 and isinstance(value.get("$b64"), str):
        return base64.b64decode(value["$b64"])
    return value


def encode(entry: dict[str, Any]) -> bytes:
    """One journal line."""
    payload = dumps(entry).encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def read_segment(path: Path) -> Iterator[dict[str, Any]]:
    """The entries of one segment, in order, up to its first damaged line."""
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            entry = _decode(line)
            if entry is None:
                rest = sum(1 for _ in file)
                log.warning(
                    "journal %s: line %d is incomplete or damaged; it and the %d lines "
                    "after it were never acknowledged as one whole write and are skipped",
                    path.name,
                    number,
                    rest,
                )
                return
            yield entry


def _decode(line: bytes) -> dict[str, Any] | None:
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
        return None
    payload = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        entry = loads(payload)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _fatal(message: str) -> None:
    raise RuntimeError(message)


class Journal:
    """Appends entries to the open segment; see the module docstring for the protocol."""

    def __init__(
        self,
        db: str | os.PathLike[str],
        first_segment: int,
        *,
        fsync: bool = False,
        segment_entries: int = SEGMENT_ENTRIES,
        segment_bytes: int = SEGMENT_BYTES,
        on_sealed: Callable[[], None] = lambda: None,
        on_fatal: Callable[[str], None] = _fatal,
    ) -> None:
        self.db = Path(db)
        self.fsync = fsync
        self.segment_entries = segment_entries
        self.segment_bytes = segment_bytes
        self.on_sealed = on_sealed
        self.on_fatal = on_fatal
        self._cond = threading.Condition()
        self._buffer: list[bytes] = []
        self.reserved = 0  # the last ticket handed out
        self._appended = 0  # every ticket up to here is in the buffer or on disk
        self.durable = 0  # every ticket up to here is on disk
        self._writing = False  # a leader (or a rotation) owns the file
        self.segment = first_segment - 1
        self._fd = -1
        self._entries = self._bytes = 0
        self._broken: str | None = None  # a write failed: nothing after it is durable
        self.written = 0  # entries written, ever (for tests and the bench)
        self.groups = 0  # write calls that carried them
        self._open(first_segment)

    # ------------------------------------------------------------------ writers

    def reserve(self) -> int:
        """A ticket for the next entry. Tickets must be appended in the order taken."""
        with self._cond:
            self.reserved += 1
            return self.reserved

    def append(self, ticket: int, data: bytes) -> None:
        """Hand in the entry of ``ticket`` (``b""``: the write changed nothing)."""
        with self._cond:
            if data:
                self._buffer.append(data)
            elif not self._buffer and not self._writing and self.durable == ticket - 1:
                self.durable = ticket  # nothing to write, and all before it is on disk
            self._appended = ticket
            self._cond.notify_all()

    def wait(self, ticket: int) -> None:
        """Return once every entry up to ``ticket`` is on disk (leading a write if needed)."""
        if self.durable >= ticket:
            return
        with self._cond:
            while self.durable < ticket:
                if self._broken is not None:
                    raise RuntimeError(self._broken)
                if self._writing or self._appended <= self.durable:
                    self._cond.wait()
                    continue
                batch, self._buffer = self._buffer, []
                upto = self._appended
                self._writing = True
                self._cond.release()
                try:
                    self._write(batch)
                except BaseException as error:
                    self._broken = f"the journal failed: {error}"
                    raise
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()
                self.durable = upto
                self._cond.notify_all()

    def rotate(self) -> bool:
        """Seal the open segment now (if it holds anything); True if one was sealed."""
        with self._cond:
            while self._writing:
                self._cond.wait()
            if not self._entries:
                return False
            self._writing = True
        try:
            self._open(self.segment + 1)
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
        self.on_sealed()
        return True

    def close(self) -> None:
        """Write what is appended, then close the file; a later write is refused (its
        request fails), never acknowledged."""
        with contextlib.suppress(RuntimeError):  # a write failed before: nothing to add
            self.wait(self._appended)
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._broken = self._broken or "the journal is closed"
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._cond.notify_all()

    # ------------------------------------------------------------------ the file

    def _write(self, batch: list[bytes]) -> None:
        """The leader's work, outside the lock: one write (and fsync) for the batch."""
        if not batch:
            return
        data = b"".join(batch)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if self.fsync:
                os.fsync(self._fd)
        except OSError as error:
            path = segment_path(self.db, self.segment)
            self.on_fatal(f"cannot write the journal {path}: {error}")
            raise
        self.written += len(batch)
        self.groups += 1
        self._entries += len(batch)
        self._bytes += len(data)
        if self._entries >= self.segment_entries or self._bytes >= self.segment_bytes:
            self._open(self.segment + 1)
            self.on_sealed()

    def _open(self, number: int) -> None:
        path = segment_path(self.db, number)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if self.fsync:  # the new file's name must be on disk before entries count on it
                directory = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
        except OSError as error:
            self.on_fatal(f"cannot open the journal {path}: {error}")
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self.segment = fd, number
        self._entries = self._bytes = 0


def lock_path(db: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(db)}.dynamodb.lock")


class JournalLock:
    """``{db}.dynamodb.lock``: one embedded endpoint at a time replays, appends to and
    folds a journal. A new one waits for an old one still exiting (its parent was
    killed a moment ago) instead of reading segments it is still writing."""

    def __init__(self, db: str | os.PathLike[str]) -> None:
        self.path = lock_path(db)
        self._fd = -1

    def acquire(self, timeout: float = 30.0) -> JournalLock:
        import fcntl
        import time

        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() > deadline:
                    message = f"{self.path} is held by another embedded DynamoDB"
                    raise TimeoutError(message) from None
                time.sleep(0.05)
                continue
            # The holder before us may have removed the file as it let go: a lock on a
            # name that is gone would not keep the next one out. Take the new file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)

    def release(self) -> None:
        if self._fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1
