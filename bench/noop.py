"""The job of the short-jobs scenario: does nothing, so a drain measures only the job system."""

from __future__ import annotations


def noop() -> None:
    """Return at once (None serializes to JSON as null)."""
    return None
