"""The built-in sample directory: the real division tree and an exact, deterministic hospital set."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys

import pytest

from jobs.errors import PermanentUpstreamError
from jobs.upstream import synth
from jobs.upstream.base import Region
from jobs.upstream.sample import PAGE_SIZE, SampleDirectory, distribute, load_tree
from jobs.upstream.shapes import HOSPITAL_FIELDS

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.fixture(scope="module")
def sample() -> SampleDirectory:
    return SampleDirectory(20_000)


def region(code: str, sample: SampleDirectory) -> Region:
    found = sample.find_region(code)
    assert found is not None, code
    return found


def test_level_counts_match_the_real_divisions() -> None:
    nodes = load_tree().nodes.values()
    counts = {level: sum(1 for n in nodes if n.level == level) for level in ("province", "city", "district")}
    assert counts == {"province": 34, "city": 369, "district": 2814}
    assert len(load_tree().leaves) == 2853


def test_real_names_and_codes(sample: SampleDirectory) -> None:
    assert region("440000", sample) == {"code": "440000", "name": "广东省", "level": "province"}
    assert region("440100", sample) == {"code": "440100", "name": "广州市", "level": "city"}
    assert region("440104", sample) == {"code": "440104", "name": "越秀区", "level": "district"}
    names = {p["name"] for p in sample.provinces()}
    assert {"北京市", "新疆维吾尔自治区", "香港特别行政区", "澳门特别行政区", "台湾省"} <= names
    assert all(re.fullmatch(r"\d{6}", n.code) for n in load_tree().nodes.values())


def test_municipalities_have_one_city_named_after_them(sample: SampleDirectory) -> None:
    for code, name in (("110000", "北京市"), ("120000", "天津市"), ("310000", "上海市"), ("500000", "重庆市")):
        [city] = sample.children(region(code, sample))
        assert city == {"code": code[:2] + "0100", "name": name, "level": "city"}
    beijing = sample.children(region("110100", sample))
    assert {"东城区", "朝阳区", "延庆区"} <= {d["name"] for d in beijing}
    chongqing = sample.children(region("500100", sample))
    assert {"渝中区", "江北区", "城口县", "彭水苗族土家族自治县"} <= {d["name"] for d in chongqing}
    assert not any(n.name == "市辖区" for n in load_tree().nodes.values())


@pytest.mark.parametrize("code", ["810000", "820000", "710000"])
def test_province_level_leaves(sample: SampleDirectory, code: str) -> None:
    assert sample.children(region(code, sample)) == []
    assert sample.is_leaf(code) and sample.leaf_count(code) == 1


@pytest.mark.parametrize("code", ["441900", "442000", "460400", "620200", "419001", "659001"])
def test_city_level_leaves(sample: SampleDirectory, code: str) -> None:
    assert region(code, sample)["level"] == "city"
    assert sample.children(region(code, sample)) == []


def test_children_carry_the_next_level(sample: SampleDirectory) -> None:
    for province in sample.provinces():
        for city in sample.children(province):
            assert city["level"] == "city"
            assert all(d["level"] == "district" for d in sample.children(city))


def test_unknown_region_is_a_permanent_error(sample: SampleDirectory) -> None:
    bogus = Region(code="999999", name="?", level="province")
    with pytest.raises(PermanentUpstreamError):
        sample.children(bogus)
    with pytest.raises(PermanentUpstreamError):
        sample.hospitals(bogus)
    assert sample.find_region("999999") is None


@pytest.mark.parametrize("scale", [0, 1, 7, 2852, 2853, 12_345, 1_000_000, 987_654_321])
def test_scale_is_exact(scale: int) -> None:
    directory = SampleDirectory(scale)
    assert sum(directory.hospital_count(p["code"]) for p in directory.provinces()) == scale
    assert sum(directory.hospital_count(leaf["code"]) for leaf in directory.leaves()) == scale


def test_distribute_is_exact_and_proportional() -> None:
    counts = distribute(10, {"a": 1, "b": 1, "c": 3})
    assert sum(counts.values()) == 10 and counts["c"] == 6
    assert distribute(0, {"a": 1}) == {"a": 0}


def test_every_leaf_gets_hospitals_at_full_scale() -> None:
    directory = SampleDirectory(1_000_000)
    assert min(directory.hospital_count(leaf["code"]) for leaf in directory.leaves()) > 0
    hong_kong = directory.hospital_count("810000")
    hospitals = directory.hospitals(region("810000", directory))
    assert len(hospitals) == hong_kong > PAGE_SIZE
    # Served over HTTP, the same leaf comes in full pages and a last short one.
    pages = [directory.hospital_page("810000", n, PAGE_SIZE)[0] for n in range(1, hong_kong // PAGE_SIZE + 2)]
    assert [len(p) for p in pages[:-1]] == [PAGE_SIZE] * (len(pages) - 1) and 0 < len(pages[-1]) < PAGE_SIZE
    assert [h for p in pages for h in p] == hospitals


def test_hospitals_have_exactly_the_contract_fields(sample: SampleDirectory) -> None:
    leaf = region("440104", sample)
    hospitals = sample.hospitals(leaf)
    assert hospitals
    for h in hospitals:
        assert tuple(h) == HOSPITAL_FIELDS
        assert all(isinstance(v, str) and v for v in h.values())
        assert h["region_code"] == "440104" and h["address"].startswith("广东省广州市越秀区")
        assert ISO_Z.match(h["updated_at"])
    assert hospitals[0]["name"] == "越秀区人民医院" and hospitals[0]["id"] == "H440104000001"


def test_ids_are_unique_and_hospitals_only_at_leaves(sample: SampleDirectory) -> None:
    everything = list(sample.all_hospitals())
    assert len(everything) == 20_000
    assert len({h["id"] for h in everything}) == 20_000
    leaves = {leaf["code"] for leaf in sample.leaves()}
    assert {h["region_code"] for h in everything} <= leaves
    assert sample.hospitals(region("440000", sample)) == []


def test_generation_is_deterministic_across_processes(sample: SampleDirectory) -> None:
    script = (
        "from jobs.upstream.sample import SampleDirectory;import json;"
        "print(json.dumps(SampleDirectory(20000).hospital_page('440104', 1, 5)[0], ensure_ascii=False))"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == sample.hospital_page("440104", 1, 5)[0]
    assert list(itertools.islice(SampleDirectory(20_000).all_hospitals(), 50)) == list(
        itertools.islice(sample.all_hospitals(), 50)
    )


def test_hospital_page_slices_the_leaf(sample: SampleDirectory) -> None:
    total = sample.hospital_count("810000")
    first, reported = sample.hospital_page("810000", 1, 3)
    assert reported == total and [h["id"] for h in first] == [f"H810000{i:06d}" for i in (1, 2, 3)]
    assert sample.hospital_page("810000", 10_000, 3) == ([], total)
    assert sample.hospital_page("440000", 1, 3) == ([], 0)


def test_leaf_count_counts_leaves_of_a_subtree(sample: SampleDirectory) -> None:
    assert sum(sample.leaf_count(p["code"]) for p in sample.provinces()) == 2853
    assert sample.leaf_count("440100") == len(sample.children(region("440100", sample)))


def test_chinese_ordinals() -> None:
    assert [synth.chinese_number(n) for n in (1, 10, 11, 20, 21, 105, 1005, 2000)] == [
        "一", "十", "十一", "二十", "二十一", "一百零五", "一千零五", "二千",
    ]  # fmt: skip


def test_import_loads_nothing() -> None:
    script = "import jobs.upstream.sample as s; assert s.load_tree.cache_info().currsize == 0"
    subprocess.run([sys.executable, "-c", script], check=True)


def test_opaque_ids_are_a_deterministic_mapping_of_the_same_records(sample: SampleDirectory) -> None:
    """`id_format="opaque"`: the same records, each id 32 hex digits that say nothing of its leaf, unique across
    the directory and the same in every process."""
    opaque = SampleDirectory(20_000, id_format="opaque")
    coded_records, opaque_records = list(sample.all_hospitals()), list(opaque.all_hospitals())
    assert [{**h, "id": ""} for h in coded_records] == [{**h, "id": ""} for h in opaque_records]
    ids = [h["id"] for h in opaque_records]
    assert len(set(ids)) == 20_000 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert sum(i[1:7] == h["region_code"] for i, h in zip(ids, opaque_records, strict=True)) == 0  # none at home
    assert ids[:40] != sorted(ids[:40])  # served in index order: not in id order, as a real directory may
    script = (
        "from jobs.upstream.sample import SampleDirectory;import json;"
        "print(json.dumps(SampleDirectory(20000, 'opaque').hospital_page('440104', 1, 5)[0], ensure_ascii=False))"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == opaque.hospital_page("440104", 1, 5)[0]
    with pytest.raises(ValueError, match="id_format must be one of coded, opaque"):
        SampleDirectory(10, id_format="uuid")
