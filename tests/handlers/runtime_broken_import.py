"""A module whose dependency is missing: Lambda's Runtime.ImportModuleError."""

from __future__ import annotations

import bridge_offline_no_such_dependency  # noqa: F401


def handler(event: object, context: object) -> None:
    """Never reached: importing the module fails."""
