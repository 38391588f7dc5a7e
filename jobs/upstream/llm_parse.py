"""Turns what a language model answered into contract Regions and Hospitals, or refuses it.

Models wrap JSON in Markdown fences, put prose around it, stop mid-array, omit fields and repeat
items. The framing is repaired (fences and prose stripped, numbers turned into text, exact repeats
collapsed); an item that cannot be used makes the whole answer invalid (InvalidAnswerError), which
the client asks again and finally reports as a failure of the region: dropping the item instead
would lose it, or a whole city under it, without a word.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

from jobs.upstream.base import Hospital, Region
from jobs.upstream.shapes import HOSPITAL_FIELDS

FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_decoder = json.JSONDecoder()


class InvalidAnswerError(ValueError):
    """Raised when an answer holds no complete JSON array, or an item in it that cannot be used as asked."""


def _candidates(text: str) -> list[str]:
    # Fenced blocks first (the model's own framing), then the whole text for unfenced answers.
    return [block.strip() for block in FENCE.findall(text)] + [text]


def _arrays(candidate: str) -> Iterator[list[Any]]:
    start = candidate.find("[")
    while start != -1:
        try:
            value, _ = _decoder.raw_decode(candidate, start)
        except ValueError:
            value = None
        if isinstance(value, list):
            yield value
        start = candidate.find("[", start + 1)


def extract_array(text: str) -> list[Any]:
    """The JSON array of objects in `text`, fenced or surrounded by prose.

    The first array holding an object wins, so a citation like "[1]" in the prose is passed over;
    failing that, the first array at all (an honest "[]").
    """
    first: list[Any] | None = None
    for candidate in _candidates(text):
        for array in _arrays(candidate):
            if any(isinstance(item, dict) for item in array):
                return array
            if first is None:
                first = array
    if first is None:
        raise InvalidAnswerError("the answer holds no complete JSON array (truncated or not JSON)")
    return first


def _scalar(value: object) -> str | None:
    """A stripped string from a string or a number; None for anything else or an empty string."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    return text or None


def _objects(found: list[Any], what: str) -> list[dict[str, Any]]:
    for number, item in enumerate(found, 1):
        if not isinstance(item, dict):
            raise InvalidAnswerError(f"{what} {number} of {len(found)} is {type(item).__name__}, not an object")
    return found


def _required(item: dict[str, Any], key: str, where: str) -> str:
    value = _scalar(item.get(key))
    if value is None:
        state = "missing" if key not in item else f"empty or not text ({type(item[key]).__name__})"
        raise InvalidAnswerError(f"{where}: field {key!r} is {state}")
    return value


def _optional(item: dict[str, Any], key: str, where: str) -> str:
    """A field the record keeps: it must be there (a dropped field is a model's slip, worth asking again),
    but may be null or empty when the model does not know it."""
    if key not in item:
        raise InvalidAnswerError(f"{where}: field {key!r} is missing")
    value = item[key]
    if value is None:
        return ""
    text = _scalar(value)
    if text is None and value != "":
        raise InvalidAnswerError(f"{where}: field {key!r} is {type(value).__name__}, expected text")
    return text or ""


def _add_once(kept: dict[str, Any], key: str, value: Any, what: str) -> None:
    """Keep `value` under `key`; an exact repeat collapses into it, a different one is a conflict."""
    if key in kept and kept[key] != value:
        raise InvalidAnswerError(f"{what} {key!r} is listed twice with different fields")
    kept[key] = value


def parse_regions(text: str, level: str) -> list[Region]:
    """The regions of an answer, all at `level`; every item needs a code and a name, or the answer is refused."""
    found = _objects(extract_array(text), "region")
    regions: dict[str, Region] = {}
    for number, item in enumerate(found, 1):
        where = f"region {number} of {len(found)}"
        code, name = _required(item, "code", where), _required(item, "name", where)
        # The level is what we asked for, whatever the model wrote: it cannot know our tree.
        _add_once(regions, code, Region(code=code, name=name, level=level), "region")
    return list(regions.values())


def derived_id(region_code: str, name: str) -> str:
    """A stable id for a hospital the model gave none: the same region and name give the same id."""
    digest = hashlib.blake2b(f"{region_code}\n{name}".encode(), digest_size=6).hexdigest()
    return f"L{region_code}{digest.upper()}"


def _hospital_id(given: str, region_code: str, name: str) -> str:
    if not given:
        return derived_id(region_code, name)
    # A model numbers items per answer ("1", "2"...): scope such ids to the region so two leaves'
    # hospitals never share one, while real registry-style ids that carry the code stay as given.
    return given if region_code in given else f"{region_code}-{given}"


def parse_hospitals(text: str, region_code: str) -> list[Hospital]:
    """The hospitals of an answer for leaf `region_code`.

    Every item must carry each field the record keeps (`name` not empty; the others may be null);
    `region_code` is ours to set. One item short of that, or two items with one id and different
    fields, refuses the whole answer: a record dropped silently is a record lost.
    """
    found = _objects(extract_array(text), "hospital")
    hospitals: dict[str, Hospital] = {}
    for number, item in enumerate(found, 1):
        where = f"hospital {number} of {len(found)}"
        name = _required(item, "name", where)
        record = {field: _optional(item, field, where) for field in HOSPITAL_FIELDS if field != "region_code"}
        record.update(id=_hospital_id(record["id"], region_code, name), name=name, region_code=region_code)
        _add_once(hospitals, record["id"], {field: record[field] for field in HOSPITAL_FIELDS}, "hospital")
    return list(hospitals.values())
