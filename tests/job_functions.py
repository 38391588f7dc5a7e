"""Job functions the tests enqueue; workers import them by name, as RQ's JSON serializer requires."""

from __future__ import annotations

from typing import Any


def add(a: int, b: int) -> int:
    return a + b


def describe(payload: dict[str, Any]) -> dict[str, Any]:
    return {"keys": sorted(payload), "size": len(payload)}
