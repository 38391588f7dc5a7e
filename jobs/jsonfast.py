"""JSON on the data path (a million records per refresh): orjson where it is exactly what json gives, json elsewhere.

orjson parses and encodes several times faster than the standard library, but not always to the same
result: it reads an integer beyond 64 bits as a float, refuses NaN, Infinity and lone surrogates, and
spells some floats differently (1e-7 where json writes 1e-07). Strings, 64-bit integers, booleans and
null come out byte for byte as `json.dumps(..., ensure_ascii=False, separators=(",", ":"))` writes
them (tests/unit/test_jsonfast.py checks every code point). So a body whose items hold only such *plain*
values takes orjson's path, and anything else -- a float, a nested list or object, something orjson
refuses -- is read and written by json exactly as before.
"""

from __future__ import annotations

import json
from itertools import chain
from typing import Any

import orjson

_PLAIN = frozenset({str, int, bool, type(None)})

# One encoder for every record: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class PlainRecords(list[dict[str, Any]]):
    """Records `all_plain` has already found plain (a page orjson read): `dumps_lines` takes them as they
    are instead of looking at every value again. Whoever builds new records from them gets a plain list."""

    # Every value of every record a string (set by loads_items): the contract check need not look at the
    # values' types again (jobs.upstream.shapes.hospitals).
    text_only = False


def all_plain(records: list[dict[str, Any]]) -> bool:
    """True when every value of every record is a string, a 64-bit integer, a boolean or null (one pass
    in C over all the values: a check per record would cost as much as orjson saves)."""
    return plain_types(records) is not None


def plain_types(records: list[dict[str, Any]]) -> set[type] | None:
    """The types of the records' values if `all_plain`, else None."""
    try:
        values = list(chain.from_iterable(map(dict.values, records)))
    except TypeError:
        return None  # not all of them are dicts
    types = set(map(type, values))
    if not types <= _PLAIN:
        return None
    # An int orjson read is within 64 bits; one from elsewhere (json, the sample) may not be.
    if int in types and not all(-(2**63) <= v < 2**64 for v in values if type(v) is int):
        return None
    return types


def loads_items(content: bytes) -> Any:
    """A response body holding an `items` list of objects, decoded exactly as json.loads decodes it."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return json.loads(content)  # what orjson refuses json may take (NaN, lone surrogates), or raise
    if type(body) is not dict:
        return body  # no items to get wrong; the shape checks refuse it
    if not set(map(type, body.values())) <= _PLAIN | {list}:
        return json.loads(content)  # a float or a nested value: orjson may have read it differently
    items = body.get("items")
    if type(items) is not list:
        return body
    types = plain_types(items)
    if types is None:
        return json.loads(content)
    records = body["items"] = PlainRecords(items)
    records.text_only = types <= {str}
    return body


def dumps_lines(records: list[dict[str, Any]]) -> bytes:
    """Compact JSON of each record, UTF-8, non-ASCII unescaped (byte for byte what
    `json.dumps(record, ensure_ascii=False, separators=(",", ":"))` writes), joined by newlines (compact JSON
    holds none): what a stored leaf holds. Joined as they are made, without a list of them in between
    (measured: 0.19 against 0.77 ms for 400 records)."""
    if type(records) is PlainRecords or all_plain(records):
        try:
            return b"\n".join(map(orjson.dumps, records))
        except orjson.JSONEncodeError:
            pass  # a key that is not a string: json's rules (and errors) apply
    return b"\n".join(map(dumps_record, records))


def dumps_record(record: dict[str, Any]) -> bytes:
    """`dumps_lines` of one record."""
    if all_plain([record]):
        try:
            return orjson.dumps(record)
        except orjson.JSONEncodeError:
            pass
    return _ENCODER.encode(record).encode("utf-8")

