"""A module that imports fine but has no ``handler``: Lambda's Runtime.HandlerNotFound."""

from __future__ import annotations


def something_else(event: object, context: object) -> None:
    """Not the configured handler name."""
