"""`bridge offline` with one fault injected, for tests/test_supervision.py.

``python tests/offline_faults.py FAULT offline ARGS…`` replaces one method that a
long-lived task of offline runs by one raising ``RuntimeError("injected")`` (what a bug
would raise), then runs the `bridge` command exactly as its console script does
(``bridge.cli:main``). So the product carries no test hook, and the test still sees the
real command: its startup, its signal handling, its one error line and exit code.

Faults: ``archive-writer`` (the writer dies on the first event archived),
``stream-poller`` (the poller dies on its first pass).
"""

from __future__ import annotations

import sys
from typing import Any


async def _injected(*_: Any, **__: Any) -> Any:
    raise RuntimeError("injected")


def inject(fault: str) -> None:
    if fault == "archive-writer":
        from bridge.archive import ArchiveWriter

        ArchiveWriter._write = _injected  # type: ignore[method-assign]
    elif fault == "stream-poller":
        from bridge.offline.poller import StreamPoller

        StreamPoller.poll_once = _injected  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    inject(sys.argv.pop(1))
    from bridge.cli import main

    main()
