"""Turns what a language model answered into contract Regions and Hospitals, or refuses it.

Models wrap JSON in Markdown fences, put prose around it, stop mid-array, omit fields and repeat
items. What can be repaired is repaired; an item that cannot is dropped; an answer with nothing
usable left raises InvalidAnswerError, which the client retries and finally reports as a failure.
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
    """Raised when an answer holds no usable JSON array of the expected shape."""


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


def _usable(found: list[Any], kept: list[Any], what: str) -> None:
    if found and not kept:
        raise InvalidAnswerError(f"none of the {len(found)} {what} in the answer has the required fields")


def parse_regions(text: str, level: str) -> list[Region]:
    """The regions of an answer, all at `level`; entries without a code and a name are dropped."""
    found = extract_array(text)
    regions: dict[str, Region] = {}
    for item in found:
        if not isinstance(item, dict):
            continue
        code, name = _scalar(item.get("code")), _scalar(item.get("name"))
        if code and name and code not in regions:
            # The level is what we asked for, whatever the model wrote: it cannot know our tree.
            regions[code] = Region(code=code, name=name, level=level)
    _usable(found, list(regions.values()), "regions")
    return list(regions.values())


def derived_id(region_code: str, name: str) -> str:
    """A stable id for a hospital the model gave none: the same region and name give the same id."""
    digest = hashlib.blake2b(f"{region_code}\n{name}".encode(), digest_size=6).hexdigest()
    return f"L{region_code}{digest.upper()}"


def _hospital_id(raw: object, region_code: str, name: str) -> str:
    given = _scalar(raw)
    if given is None:
        return derived_id(region_code, name)
    # A model numbers items per answer ("1", "2"...): scope such ids to the region so two leaves'
    # hospitals never share one, while real registry-style ids that carry the code stay as given.
    return given if region_code in given else f"{region_code}-{given}"


def parse_hospitals(text: str, region_code: str) -> list[Hospital]:
    """The hospitals of an answer for leaf `region_code`; entries without a name are dropped."""
    found = extract_array(text)
    hospitals: dict[str, Hospital] = {}
    for item in found:
        name = _scalar(item.get("name")) if isinstance(item, dict) else None
        if not isinstance(item, dict) or name is None:
            continue
        record = {field: _scalar(item.get(field)) or "" for field in HOSPITAL_FIELDS}
        record.update(id=_hospital_id(item.get("id"), region_code, name), name=name, region_code=region_code)
        hospitals.setdefault(record["id"], record)
    _usable(found, list(hospitals.values()), "hospitals")
    return list(hospitals.values())
