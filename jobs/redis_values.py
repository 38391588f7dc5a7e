"""Decoding what redis-py returns: bytes at run time, typed as `bytes | str` by its stubs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def as_texts(values: Iterable[Any]) -> list[str]:
    return [as_text(v) for v in values]


def as_text_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    try:  # bytes both sides, as redis-py returns them: decoded in C (status reads decode hundreds)
        return {k.decode(): v.decode() for k, v in raw.items()}
    except AttributeError:
        return {as_text(k): as_text(v) for k, v in raw.items()}
