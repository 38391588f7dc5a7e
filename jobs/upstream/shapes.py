"""Checks that a decoded body matches the contract shapes (shared/upstream-api.md)."""

from __future__ import annotations

import operator
from itertools import chain, repeat
from typing import Any

from jobs.jsonfast import PlainRecords
from jobs.upstream.base import LEVELS, Hospital, Region

HOSPITAL_FIELDS = ("id", "name", "region_code", "grade", "type", "address", "phone", "updated_at")
# Without these a hospital cannot be stored or placed; the others may be empty strings.
HOSPITAL_KEYS = ("id", "name", "region_code")
CHILD_LEVEL = {"province": "city", "city": "district"}


class ShapeError(ValueError):
    """Raised when a decoded body does not match the contract shapes."""


class ItemShapeError(ShapeError):
    """Raised when one item of an otherwise well-formed body does not match its shape (a dropped field)."""


def _text(item: dict[str, Any], key: str, *, required: bool) -> str:
    if key not in item:
        raise ItemShapeError(f"field {key!r} is missing")
    value = item[key]
    if not isinstance(value, str):
        raise ItemShapeError(f"field {key!r} is {type(value).__name__}, expected a string")
    if required and not value.strip():
        raise ItemShapeError(f"field {key!r} is empty")
    return value


def region(item: object) -> Region:
    """A contract Region from `item`, extra fields dropped; ShapeError if it is not one."""
    if not isinstance(item, dict):
        raise ItemShapeError(f"region is {type(item).__name__}, expected an object")
    level = _text(item, "level", required=True)
    if level not in LEVELS:
        raise ItemShapeError(f"region level {level!r} is not one of {', '.join(LEVELS)}")
    code, name = _text(item, "code", required=True), _text(item, "name", required=True)
    return Region(code=code, name=name, level=level)


_CONTRACT_VALUES = operator.itemgetter(*HOSPITAL_FIELDS)
_FIELD_SET = frozenset(HOSPITAL_FIELDS)
_REQUIRED_VALUES = operator.itemgetter(*HOSPITAL_KEYS)
assert HOSPITAL_FIELDS[:3] == HOSPITAL_KEYS  # the fast path of `hospital` checks the first three


def hospital(item: object) -> Hospital:
    """A contract Hospital from `item`, extra fields kept; ShapeError if it is not one."""
    # The common case checked in C (a million items a refresh); anything else takes the detailed path.
    if type(item) is dict:
        try:
            values = _CONTRACT_VALUES(item)
        except KeyError:
            values = ()
        if set(map(type, values)) == {str} and values[0].strip() and values[1].strip() and values[2].strip():
            return dict(item)
    return _checked_hospital(item)


def hospitals(items: list[object]) -> list[Hospital]:
    """`hospital` of every item of a freshly decoded page, whose dicts it keeps (nobody else holds them).

    A page of well-formed items is checked in a few passes in C; one with any doubt goes item by item,
    which names the first bad field."""
    if type(items) is PlainRecords and items.text_only:  # every value a string, no need to look again
        try:
            required = list(chain.from_iterable(map(_REQUIRED_VALUES, items)))
        except KeyError:
            required = []
        if required and all(map(operator.ge, map(dict.keys, items), repeat(_FIELD_SET))) \
                and all(map(str.strip, required)):
            return items
    elif set(map(type, items)) <= {dict}:
        try:
            values = list(chain.from_iterable(map(_CONTRACT_VALUES, items)))  # type: ignore[arg-type]
            required = list(chain.from_iterable(map(_REQUIRED_VALUES, items)))  # type: ignore[arg-type]
        except KeyError:
            values = required = []
        if values and set(map(type, values)) == {str} and all(map(str.strip, required)):
            return items  # type: ignore[return-value]
    return [hospital(item) for item in items]


def _checked_hospital(item: object) -> Hospital:
    if not isinstance(item, dict):
        raise ItemShapeError(f"hospital is {type(item).__name__}, expected an object")
    for key in HOSPITAL_FIELDS:
        _text(item, key, required=key in HOSPITAL_KEYS)
    return dict(item)


def regions(body: object) -> list[Region]:
    """The regions of a `{"items": [...]}` body; ItemShapeError for a bad item or a code listed twice."""
    found = [region(item) for item in items(body)]
    seen: set[str] = set()
    for child in found:
        if child["code"] in seen:
            raise ItemShapeError(f"region {child['code']!r} is listed twice")
        seen.add(child["code"])
    return found


def items(body: object) -> list[object]:
    """The `items` list of a response body."""
    if not isinstance(body, dict):
        raise ShapeError(f"body is {type(body).__name__}, expected an object")
    found = body.get("items")
    if not isinstance(found, list):
        raise ShapeError("body has no 'items' list")
    return found


def _count(body: object, key: str, minimum: int) -> int | None:
    value = body.get(key) if isinstance(body, dict) else None
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ShapeError(f"body's {key!r} is {value!r}, expected an integer >= {minimum}")
    return value


def total(body: object) -> int:
    """The `total` of a hospitals page."""
    value = _count(body, "total", 0)
    if value is None:
        raise ShapeError("body has no non-negative integer 'total'")
    return value


def echoed(body: object, key: str) -> int | None:
    """The `page` or `page_size` a hospitals page says it is (None when the server does not say)."""
    return _count(body, key, 1)
