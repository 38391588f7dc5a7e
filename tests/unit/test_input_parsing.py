"""What a user types, read without a server: a province by name, short name or code (with the closest names
when none matches), `cleanup --older-than` ages, `--args` JSON, and the progress bars drawn in a terminal."""

from __future__ import annotations

import pytest

from commands.display import bar, pad
from commands.runtime import parse_age_days
from commands.tasks import parse_args_option
from jobs.errors import TaskArgumentsError, ValidationError
from jobs.refresh.provinces import match_province
from jobs.upstream.sample import SampleDirectory

PROVINCES = SampleDirectory(0).provinces()


@pytest.mark.parametrize(("query", "code"), [
    ("广东省", "440000"), ("440000", "440000"), ("广东", "440000"), ("北京", "110000"), ("内蒙古", "150000"),
    ("广西", "450000"), ("新疆", "650000"), ("宁夏", "640000"), ("香港", "810000"), ("澳门特别行政区", "820000"),
])
def test_a_province_by_name_short_name_or_code(query: str, code: str) -> None:
    assert match_province(PROVINCES, query)["code"] == code


@pytest.mark.parametrize(("query", "message"), [
    ("广栋", "unknown province '广栋'; closest: 广东省, 广西壮族自治区"),
    ("河", "unknown province '河'; closest: 河南省, 河北省"),
    ("999999", "unknown province '999999'"),
    ("44000", "unknown province '44000'"),
    ("火星", "unknown province '火星'"),
])
def test_an_unknown_province_names_the_closest_ones(query: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        match_province(PROVINCES, query)
    assert str(refused.value) == message


@pytest.mark.parametrize(("text", "days"), [
    ("7d", 7.0), ("12h", 0.5), ("36h", 1.5), ("30m", 30 / 1440), ("90s", 90 / 86400), ("3", 3.0), (" 1.5d ", 1.5),
    ("0s", 0.0),
])
def test_cleanup_ages(text: str, days: float) -> None:
    assert parse_age_days(text) == pytest.approx(days)


@pytest.mark.parametrize("text", ["7x", "-1d", "", "d", "1e9d", "7 days", "1.d"])
def test_a_cleanup_age_that_is_none_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match=r"--older-than .* is not valid: expected e\.g\. 7d, 12h, 30m or 90s"):
        parse_age_days(text)


def test_args_are_a_json_array_or_object() -> None:
    assert parse_args_option(None) == ([], {})
    assert parse_args_option("[1, \"a\", null]") == ([1, "a", None], {})
    assert parse_args_option('{"older_than_days": 3}') == ([], {"older_than_days": 3})
    assert parse_args_option("[]") == ([], {})


@pytest.mark.parametrize(("text", "problem"), [
    ('"x"', "expected a JSON array (positional) or object (keyword arguments)"),
    ("3", "expected a JSON array"),
    ("{bad", "is not valid JSON"),
    ("[1, 2", "is not valid JSON"),
    ("[" * 30_000 + "]" * 30_000, "is nested too deeply"),
])
def test_args_that_are_neither_are_refused(text: str, problem: str) -> None:
    with pytest.raises(TaskArgumentsError) as refused:
        parse_args_option(text)
    assert problem in str(refused.value)
    assert str(refused.value).startswith(f"--args {text[:200]!r}")  # a huge --args is shown cut short
    assert len(str(refused.value)) < 400


def test_bars_fill_by_fraction_within_their_width() -> None:
    assert bar(0.0, 10) == "░" * 10
    assert bar(1.0, 10) == "█" * 10
    assert bar(0.5, 10) == "█" * 5 + "░" * 5
    assert bar(-3.0, 4) == "░" * 4 and bar(7.0, 4) == "█" * 4  # clamped
    assert len(bar(0.37)) == 30


def test_padding_counts_wide_characters_twice() -> None:
    assert pad("abc", 6) == "abc   "
    assert pad("广东省", 10) == "广东省    "  # three characters, six columns
    assert pad("新疆维吾尔自治区", 4) == "新疆维吾尔自治区"  # never cut
