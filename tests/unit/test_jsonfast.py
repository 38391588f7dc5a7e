"""jobs.jsonfast gives exactly what json gives: the same bytes for every record, the same values for every body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobs import jsonfast
from jobs.refresh import published as store
from jobs.upstream import shapes
from jobs.upstream.listing import Listing, Page


def compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_every_code_point_is_written_as_json_writes_it() -> None:
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(points), 4096):
        record = {"id": "H1", "name": "".join(points[start : start + 4096])}
        assert jsonfast.dumps_lines([record]) == compact(record), hex(ord(points[start]))
    singles = [{"id": p, p: p} for p in [*points[:0x3000:7], "\u2028", "\u2029", "\x7f", "😀", "𠀀"]]
    assert jsonfast.dumps_lines(singles) == b"\n".join(compact(r) for r in singles)


ODD: list[Any] = [
    1e16, 1e-07, -0.0, 0.1, 1e300, 5e-324, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 2**70,
    True, False, None, [], {}, [1.5, {"a": [2**70]}], {"b": 1, "a": 2}, "", "\x00\x1f\"\\",
]


@pytest.mark.parametrize("value", ODD, ids=repr)
def test_records_with_any_value_are_written_as_json_writes_them(value: Any) -> None:
    records = [{"id": "H1", "name": "甲"}, {"id": "H2", "extra": value, "name": "乙"}]
    assert jsonfast.dumps_record(records[1]) == compact(records[1])
    assert jsonfast.dumps_lines(records) == compact(records[0]) + b"\n" + compact(records[1])


@pytest.mark.parametrize("names", [
    ["},{", "甲"], ['"},{"', "x"], ["a},{b},{c", "}", "{"], ["}\n{", "},{"], ["", ""],
], ids=repr)
def test_lines_split_only_between_records(names: list[str]) -> None:
    """A `},{` inside a string is no boundary: the lines are the records whatever their strings hold."""
    records = [{"id": f"H{i}", "name": name} for i, name in enumerate(names)]
    assert jsonfast.dumps_lines(records) == b"\n".join(compact(r) for r in records)
    assert jsonfast.dumps_lines(records).split(b"\n") == [compact(r) for r in records]


def test_lines_of_odd_records() -> None:
    assert jsonfast.dumps_lines([]) == b""
    assert jsonfast.dumps_lines([{}, {}, {"id": "H1"}]) == b"{}\n{}\n" + compact({"id": "H1"})
    with pytest.raises(TypeError):  # json's own error for a key it cannot write, as before
        jsonfast.dumps_lines([{"id": "H1", (1, 2): "x"}])  # type: ignore[dict-item]
    assert jsonfast.dumps_lines([{"id": "H1", 1: "x"}]) == b'{"id":"H1","1":"x"}'  # type: ignore[dict-item]


@pytest.mark.parametrize("text", [
    '{"items":[{"id":"H1","n":1180591620717411303424}],"total":1}',  # orjson would read a float
    '{"items":[{"id":"H1","n":NaN}],"total":1}',  # orjson refuses NaN
    '{"items":[{"id":"H1","n":1e400}],"total":1}',
    '{"items":[{"id":"H1","n":"\\ud800"}],"total":1}',  # a lone surrogate
    '{"items":[{"id":"H1","n":"\\ud83d\\ude00","n":2}],"total":1}',  # a key twice: the last value, the first place
    '{"items":[{"id":"H1","f":1E2,"g":-0,"h":[1.25]}],"total":18446744073709551616}',
    '{"items":[{"id":"H1"}, 7, "x"],"total":1}',
    '[1, 2]', '"text"', '{"items": {"id": "H1"}}',
])
def test_bodies_are_read_as_json_reads_them(text: str) -> None:
    got = jsonfast.loads_items(text.encode())
    assert repr(got) == repr(json.loads(text))
    assert [type(v) for v in _values(got)] == [type(v) for v in _values(json.loads(text))]


def _values(body: Any) -> list[Any]:
    items = body.get("items") if isinstance(body, dict) else None
    return [v for item in items if isinstance(item, dict) for v in item.values()] if isinstance(items, list) else []


def test_what_json_refuses_is_refused() -> None:
    with pytest.raises(ValueError):
        jsonfast.loads_items(b'{"items": [')


def test_the_fast_shape_check_refuses_what_the_detailed_one_refuses() -> None:
    good = {f: f"v-{f}" for f in shapes.HOSPITAL_FIELDS}
    assert shapes.hospital(good) == good and shapes.hospital(good) is not good
    for broken, error in [
        ({**good, "name": " "}, "field 'name' is empty"),
        ({**good, "phone": 5}, "field 'phone' is int, expected a string"),
        ({k: v for k, v in good.items() if k != "grade"}, "field 'grade' is missing"),
    ]:
        with pytest.raises(shapes.ItemShapeError, match=error):
            shapes.hospital(broken)
    assert shapes.hospital({**good, "grade": ""})["grade"] == ""  # optional fields may be empty


def test_a_page_is_checked_as_its_items_are() -> None:
    good = [{f: f"v{n}-{f}" for f in shapes.HOSPITAL_FIELDS} | {"extra": n} for n in range(3)]
    assert shapes.hospitals(list(good)) == good
    assert shapes.hospitals([]) == []
    for bad, error in [
        ({**good[0], "region_code": "\t"}, "field 'region_code' is empty"),
        ({**good[0], "address": None}, "field 'address' is NoneType, expected a string"),
        ({k: v for k, v in good[0].items() if k != "id"}, "field 'id' is missing"),
        (["not", "a", "dict"], "hospital is list, expected an object"),
    ]:
        with pytest.raises(shapes.ItemShapeError, match=error):
            shapes.hospitals([*good, bad])


def test_a_page_read_plain_with_only_strings_is_checked_as_any_page() -> None:
    """orjson's pages of strings only skip the values' type check, not the fields' presence or emptiness."""
    good = [{f: f"v{n}-{f}" for f in shapes.HOSPITAL_FIELDS} | {"extra": f"{n}"} for n in range(3)]

    def page(items: list[dict[str, object]]) -> list[object]:
        return jsonfast.loads_items(json.dumps({"items": items, "total": len(items)}).encode())["items"]

    read = page(good)
    assert type(read) is jsonfast.PlainRecords and read.text_only and shapes.hospitals(read) == good
    assert not page([*good, {**good[0], "extra": 1}]).text_only
    for bad, error in [
        ({**good[0], "name": " "}, "field 'name' is empty"),
        ({**good[0], "id": ""}, "field 'id' is empty"),
        ({k: v for k, v in good[0].items() if k != "phone"}, "field 'phone' is missing"),
        ({k: v for k, v in good[0].items() if k != "region_code"}, "field 'region_code' is missing"),
        ({**good[0], "phone": 5}, "field 'phone' is int, expected a string"),
        ({**good[0], "address": None}, "field 'address' is NoneType, expected a string"),
    ]:
        with pytest.raises(shapes.ItemShapeError, match=error):
            shapes.hospitals(page([*good, bad]))


def test_a_page_read_plain_is_written_without_a_second_look() -> None:
    """A page orjson read whole comes back as PlainRecords, and stays so through the listing: only
    such pages skip the value check when written. Anything read by json is a plain list."""
    plain = jsonfast.loads_items(b'{"items":[{"id":"H2","n":"\\u4e59"},{"id":"H1","n":7}],"total":2}')
    assert type(plain["items"]) is jsonfast.PlainRecords
    floats = jsonfast.loads_items(b'{"items":[{"id":"H1","n":1.5}],"total":1}')
    assert type(floats["items"]) is list
    listing = Listing("GET x", 500)
    assert listing.add(1, Page(items=plain["items"], total=2))
    assert type(listing.hospitals) is jsonfast.PlainRecords
    assert jsonfast.dumps_lines(listing.hospitals) == b"\n".join(compact(r) for r in plain["items"])
    mixed = Listing("GET x", 1)
    assert not mixed.add(1, Page(items=jsonfast.PlainRecords([{"id": "H0"}]), total=3))
    assert not mixed.add(2, Page(items=floats["items"], total=3))
    assert type(mixed.hospitals) is list
    ids, lines = store.pack_leaf(listing.hospitals)  # reordered by id, still written as json writes it
    assert ids == ["H1", "H2"] and lines == compact(plain["items"][1]) + b"\n" + compact(plain["items"][0])
