"""LLMClient against a local OpenAI-compatible server that answers from the sample directory."""

from __future__ import annotations

import json
import logging

import pytest

from jobs.errors import PermanentUpstreamError, TransientUpstreamError
from jobs.upstream import llm_parse
from jobs.upstream.base import Region
from jobs.upstream.llm import LLMClient
from jobs.upstream.retry import Backoff
from jobs.upstream.sample import SampleDirectory
from tests.support.upstream_servers import RunningChat, start_chat_server, walk

API_KEY = "sk-test-0123456789abcdef"
FAST = Backoff(base=0.001, cap=0.005)
# A municipality, a province with city-level leaves, and a province-level leaf.
SOME = ("110000", "460000", "820000")
GUANGZHOU = Region(code="440100", name="广州市", level="city")
YUEXIU = Region(code="440104", name="越秀区", level="district")


@pytest.fixture(scope="module")
def sample() -> SampleDirectory:
    return SampleDirectory(20_000)


def llm(server: RunningChat, *, max_attempts: int = 3, timeout: float = 5.0, key: str = API_KEY) -> LLMClient:
    return LLMClient(
        server.url,
        api_key=key,
        model="test-model",
        concurrency=4,
        timeout=timeout,
        max_attempts=max_attempts,
        backoff=FAST,
        sleep=lambda _: None,
    )


@pytest.mark.parametrize("style", ["plain", "fenced", "prose", "messy", "invalid_then_valid"])
def test_walk_equals_the_sample(sample: SampleDirectory, style: str) -> None:
    with start_chat_server(sample, style, API_KEY) as server, llm(server) as upstream:
        assert walk(upstream, SOME, workers=4) == walk(sample, SOME)


def test_invalid_answers_are_retried_a_bounded_number_of_times(sample: SampleDirectory) -> None:
    with start_chat_server(sample, "invalid_then_valid", API_KEY) as server, llm(server) as upstream:
        assert upstream.children(GUANGZHOU) == sample.children(GUANGZHOU)
        assert upstream.requests_made == 2


@pytest.mark.parametrize("style", ["always_invalid", "nothing_valid"])
def test_never_valid_is_a_permanent_failure_of_the_region(sample: SampleDirectory, style: str) -> None:
    with start_chat_server(sample, style, API_KEY) as server, llm(server, max_attempts=3) as upstream:
        with pytest.raises(PermanentUpstreamError, match="after 3 attempts"):
            upstream.children(GUANGZHOU)
        with pytest.raises(PermanentUpstreamError):
            upstream.hospitals(YUEXIU)
        assert upstream.requests_made == 6


def test_unavailable_model_is_retried(sample: SampleDirectory) -> None:
    with start_chat_server(sample, "unavailable_then_valid", API_KEY) as server, llm(server) as upstream:
        assert upstream.hospitals(YUEXIU) == sample.hospitals(YUEXIU)
        assert upstream.requests_made == 2


def test_a_slow_answer_times_out_and_is_retried(sample: SampleDirectory) -> None:
    with start_chat_server(sample, "slow_then_valid", API_KEY) as server, llm(server, timeout=0.3) as upstream:
        assert upstream.children(GUANGZHOU) == sample.children(GUANGZHOU)
        assert upstream.requests_made == 2


def test_a_body_that_is_no_completion_stays_transient(sample: SampleDirectory) -> None:
    with start_chat_server(sample, "not_a_completion", API_KEY) as server, llm(server) as upstream:
        with pytest.raises(TransientUpstreamError) as failed:
            upstream.provinces()
        assert not isinstance(failed.value, PermanentUpstreamError)


def test_districts_are_leaves_without_asking(sample: SampleDirectory) -> None:
    with start_chat_server(sample, "plain", API_KEY) as server, llm(server) as upstream:
        assert upstream.children(YUEXIU) == []
        assert upstream.requests_made == 0


def test_request_shape_and_api_key(sample: SampleDirectory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with start_chat_server(sample, "always_invalid", API_KEY) as server:
        with llm(server) as upstream, pytest.raises(PermanentUpstreamError) as invalid:
            upstream.provinces()
        with llm(server, key="wrong-key") as wrong, pytest.raises(PermanentUpstreamError) as denied:
            wrong.provinces()
        body = server.requests[0]
    assert body["model"] == "test-model" and body["messages"][-1]["role"] == "user"
    assert "401" in str(denied.value)
    for text in (str(invalid.value), str(denied.value), repr(upstream), *(r.getMessage() for r in caplog.records)):
        assert API_KEY not in text


def test_parse_strips_fences_and_prose() -> None:
    answer = '好的：\n```json\n[{"code": "440103", "name": "荔湾区", "level": "city"}]\n```\n以上。'
    assert llm_parse.parse_regions(answer, "district") == [{"code": "440103", "name": "荔湾区", "level": "district"}]
    assert llm_parse.parse_regions("以下是 [注] 结果 []", "city") == []
    cited = '据资料[1]，结果如下：[{"code": "1", "name": "某区"}]'
    assert llm_parse.parse_regions(cited, "district") == [{"code": "1", "name": "某区", "level": "district"}]
    with pytest.raises(llm_parse.InvalidAnswerError):
        llm_parse.parse_regions('[{"code": "440103", "name": "荔', "district")
    with pytest.raises(llm_parse.InvalidAnswerError):
        llm_parse.parse_regions("没有数据", "district")


FIELDS = {"grade": "三级甲等", "type": "综合医院", "address": None, "phone": 12345, "updated_at": ""}


def test_parse_repairs_what_it_can() -> None:
    answer = json.dumps([
        {"id": None, "name": " 越秀区人民医院 ", "region_code": "999999", **FIELDS},
        {"id": "", "name": "越秀区人民医院", **FIELDS},  # the same record again: collapses into one
        {"id": 7, "name": "越秀区中医医院", "region_code": None, **FIELDS},
        {"id": "H440104000009", "name": "越秀区口腔医院", "region_code": "440104", **FIELDS},
    ], ensure_ascii=False)
    first, second, third = llm_parse.parse_hospitals(answer, "440104")
    assert first == {
        "id": llm_parse.derived_id("440104", "越秀区人民医院"),
        "name": "越秀区人民医院",
        "region_code": "440104",
        "grade": "三级甲等",
        "type": "综合医院",
        "address": "",
        "phone": "12345",
        "updated_at": "",
    }
    assert first["id"] == llm_parse.derived_id("440104", "越秀区人民医院")  # stable between answers
    assert second["id"] == "440104-7" and second["region_code"] == "440104" and second["address"] == ""
    assert third["id"] == "H440104000009"
    regions = '[{"code": 440103, "name": "荔湾区", "level": "city"}, {"code": "440103", "name": "荔湾区"}]'
    assert llm_parse.parse_regions(regions, "district") == [{"code": "440103", "name": "荔湾区", "level": "district"}]


GOOD = {"id": "H1", "name": "越秀区人民医院", **FIELDS}


@pytest.mark.parametrize(
    ("items", "why"),
    [
        ([GOOD, {k: v for k, v in GOOD.items() if k != "name"} | {"id": "H2"}], "'name' is missing"),
        ([GOOD, GOOD | {"id": "H2", "name": "  "}], "'name' is empty"),
        ([GOOD, {k: v for k, v in GOOD.items() if k != "phone"} | {"id": "H2"}], "'phone' is missing"),
        ([GOOD, {k: v for k, v in GOOD.items() if k != "id"} | {"name": "另一家医院"}], "'id' is missing"),
        ([GOOD, GOOD | {"id": "H2", "address": ["广州"]}], "'address' is list"),
        ([GOOD, GOOD | {"id": "H2", "name": {"zh": "x"}}], "'name' is empty or not text"),
        ([GOOD, "医院"], "is str, not an object"),
        ([GOOD, GOOD | {"phone": "020-1"}], "listed twice with different fields"),
    ],
    ids=["no name", "empty name", "no phone", "no id", "list address", "object name", "junk", "conflict"],
)
def test_one_bad_hospital_refuses_the_whole_answer(items: list[object], why: str) -> None:
    with pytest.raises(llm_parse.InvalidAnswerError, match=why):
        llm_parse.parse_hospitals(json.dumps(items, ensure_ascii=False), "440104")


@pytest.mark.parametrize(
    "items",
    [
        [{"code": "440103", "name": "荔湾区"}, {"name": "越秀区"}],
        [{"code": "440103", "name": "荔湾区"}, {"code": "440104", "name": ""}],
        [{"code": "440103", "name": "荔湾区"}, {"code": ["440104"], "name": "越秀区"}],
        [{"code": "440103", "name": "荔湾区"}, {"code": "440103", "name": "越秀区"}],
        [{"code": "440103", "name": "荔湾区"}, None],
    ],
    ids=["no code", "empty name", "list code", "conflict", "null item"],
)
def test_one_bad_region_refuses_the_whole_answer(items: list[object]) -> None:
    with pytest.raises(llm_parse.InvalidAnswerError):
        llm_parse.parse_regions(json.dumps(items, ensure_ascii=False), "district")
