"""A handler for the long-line tests: writes one very long line to the function's log
(``print``) or raises an exception whose message is very long (``raise``).

``size`` is the line's length in bytes; the line is ``head`` (so the test can see the
line's start survived), then ``x`` up to the size, then ``TAIL`` (which must not appear
in the log on its own). The multi-byte ``é`` of the head lets a test place a cut inside a
character.
"""

from __future__ import annotations

import sys
from typing import Any

TAIL = "THE-TAIL-OF-THE-LINE"


def line(size: int, head: str) -> str:
    body = size - len(head.encode()) - len(TAIL)
    return head + "x" * body + TAIL


def handler(event: dict[str, Any], context: Any) -> Any:
    text = line(int(event["size"]), event.get("head", "HEAD-é-"))
    if event.get("action") == "raise":
        raise ValueError(text)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    print("the line after", flush=True)
    return {"printed": len(text.encode())}
