"""An ``on_failure`` destination for the runtime tests: writes what it receives.

Each event becomes one JSON line in ``RECORDS_FILE`` (the function's own variable).
It can also sleep first (``SLOW_SECONDS``) so a test can show that ``stop()`` waits.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
    with open(os.environ["RECORDS_FILE"], "a", encoding="utf-8") as records:
        records.write(json.dumps({"event": event, "request_id": context.aws_request_id}) + "\n")
    return {"recorded": context.aws_request_id}
