"""Checks that a decoded body matches the contract shapes (shared/upstream-api.md)."""

from __future__ import annotations

from typing import Any

from jobs.upstream.base import LEVELS, Hospital, Region

HOSPITAL_FIELDS = ("id", "name", "region_code", "grade", "type", "address", "phone", "updated_at")
# Without these a hospital cannot be stored or placed; the others may be empty strings.
HOSPITAL_KEYS = ("id", "name", "region_code")
CHILD_LEVEL = {"province": "city", "city": "district"}


class ShapeError(ValueError):
    """Raised when a decoded body does not match the contract shapes."""


def _text(item: dict[str, Any], key: str, *, required: bool) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise ShapeError(f"field {key!r} is {type(value).__name__}, expected a string")
    if required and not value.strip():
        raise ShapeError(f"field {key!r} is empty")
    return value


def region(item: object) -> Region:
    """A contract Region from `item`, extra fields dropped; ShapeError if it is not one."""
    if not isinstance(item, dict):
        raise ShapeError(f"region is {type(item).__name__}, expected an object")
    level = _text(item, "level", required=True)
    if level not in LEVELS:
        raise ShapeError(f"region level {level!r} is not one of {', '.join(LEVELS)}")
    code, name = _text(item, "code", required=True), _text(item, "name", required=True)
    return Region(code=code, name=name, level=level)


def hospital(item: object) -> Hospital:
    """A contract Hospital from `item`, extra fields kept; ShapeError if it is not one."""
    if not isinstance(item, dict):
        raise ShapeError(f"hospital is {type(item).__name__}, expected an object")
    for key in HOSPITAL_FIELDS:
        _text(item, key, required=key in HOSPITAL_KEYS)
    return dict(item)


def items(body: object) -> list[object]:
    """The `items` list of a response body."""
    if not isinstance(body, dict):
        raise ShapeError(f"body is {type(body).__name__}, expected an object")
    found = body.get("items")
    if not isinstance(found, list):
        raise ShapeError("body has no 'items' list")
    return found


def total(body: object) -> int:
    """The `total` of a hospitals page."""
    value = body.get("total") if isinstance(body, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ShapeError("body has no non-negative integer 'total'")
    return value
