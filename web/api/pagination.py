"""Pages of a list: `?page=` (from 1) and `?page_size=` (1 to 100), answered as
`{items, total, page, page_size, pages, has_prev, has_next}`; a page past the end is empty."""

from __future__ import annotations

from math import ceil
from typing import Any

from flask import request

from web.api.problems import BadQuery

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
MAX_PAGE = 10**9


def whole(name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high]; BadQuery (400) naming it otherwise."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise BadQuery(f"{name}={raw!r} is out of range: expected {low} to {high}")
    return value


def page_args(default_size: int = DEFAULT_PAGE_SIZE) -> tuple[int, int]:
    return whole("page", 1, 1, MAX_PAGE), whole("page_size", default_size, 1, MAX_PAGE_SIZE)


def choice(name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw not in allowed:
        raise BadQuery(f"{name}={raw!r} is not valid: expected one of {', '.join(allowed)}")
    return raw


def envelope(items: list[Any], total: int, page: int, page_size: int) -> dict[str, Any]:
    pages = ceil(total / page_size) if total else 0
    return {"items": items, "total": total, "page": page, "page_size": page_size, "pages": pages,
            "has_prev": page > 1, "has_next": page < pages}


def slice_of(items: list[Any], page: int, page_size: int) -> dict[str, Any]:
    """A page of a list already in memory (small lists: tasks, schedules, workers)."""
    start = (page - 1) * page_size
    return envelope(items[start : start + page_size], len(items), page, page_size)
