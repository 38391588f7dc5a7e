"""An Upstream that asks an OpenAI-compatible chat model for the directory, one region at a time."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar, Unpack

import httpx

from jobs.errors import TransientUpstreamError, UpstreamInconsistencyError
from jobs.upstream import llm_parse
from jobs.upstream.base import Hospital, Region
from jobs.upstream.client import ClientOptions, PooledClient
from jobs.upstream.retry import Backoff
from jobs.upstream.shapes import CHILD_LEVEL

T = TypeVar("T")

SYSTEM_PROMPT = (
    "你是中国行政区划与医疗机构名录的数据助手。只输出一个 JSON 数组，不要输出任何解释、前言或 Markdown。"
    " You answer with a single JSON array and nothing else."
)
REGION_SHAPE = '{"code": "6位行政区划代码", "name": "名称", "level": "%s"}'
HOSPITAL_SHAPE = (
    '{"id": "机构编号", "name": "医院名称", "region_code": "%s", "grade": "如 三级甲等",'
    ' "type": "如 综合医院", "address": "详细地址", "phone": "电话", "updated_at": "2026-01-01T00:00:00Z"}'
)
CHILD_WORDS = {
    "city": "地级行政区（地级市、自治州、地区、盟）及省直辖的县级行政区",
    "district": "县级行政区（市辖区、县、县级市、旗等）",
}


def provinces_prompt() -> str:
    return (
        "列出中华人民共和国全部省级行政区（省、自治区、直辖市、特别行政区，共34个）。"
        f"每个元素的格式：{REGION_SHAPE % 'province'}"
    )


def children_prompt(region: Region, child_level: str) -> str:
    return (
        f"列出{region['name']}（行政区划代码 {region['code']}）直接管辖的全部{CHILD_WORDS[child_level]}。"
        f"每个元素的格式：{REGION_SHAPE % child_level}。没有下级行政区时输出 []。"
    )


def hospitals_prompt(region: Region) -> str:
    return (
        f"列出位于{region['name']}（行政区划代码 {region['code']}）的全部医院。"
        f"每个元素的格式：{HOSPITAL_SHAPE % region['code']}。没有医院时输出 []。"
    )


def answer_text(body: Any) -> str:
    """choices[0].message.content of a chat completion; ValueError if the body has none."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as error:
        raise ValueError(f"no choices[0].message.content ({type(error).__name__})") from None
    if not isinstance(content, str):
        raise ValueError("choices[0].message.content is not a string")
    return content


class LLMClient(PooledClient):
    """An Upstream over `POST {base_url}/chat/completions`; thread-safe, at most `concurrency` calls."""

    def __init__(
        self, base_url: str, api_key: str | None, model: str, temperature: float | None = 0.0,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(base_url, api_key, options, defaults=(4, 120.0, Backoff(base=1.0, inconsistent_base=0.1)))
        self.model = model
        self._temperature = temperature

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.base_url!r}, model={self.model!r}, concurrency={self.concurrency})"

    def provinces(self) -> list[Region]:
        return self._ask("provinces", provinces_prompt(), _provinces)

    def children(self, region: Region) -> list[Region]:
        level = CHILD_LEVEL.get(region["level"])
        if level is None:  # districts are the bottom of the tree: nothing to ask
            return []
        return self._ask(
            f"children of {region['code']}",
            children_prompt(region, level),
            lambda text: llm_parse.parse_regions(text, level),
        )

    def hospitals(self, region: Region) -> list[Hospital]:
        code = region["code"]
        return self._ask(
            f"hospitals of {code}", hospitals_prompt(region), lambda text: llm_parse.parse_hospitals(text, code)
        )

    def _ask(self, what: str, prompt: str, parse: Callable[[str], T]) -> T:
        # An answer still invalid after the last attempt fails its region.
        return self._with_retries(lambda: self._attempt(what, prompt, parse), f"LLM {what}")

    def _request_body(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
        }
        if self._temperature is not None:
            body["temperature"] = self._temperature  # a directory wants the model's likeliest answer
        return body

    def _post(self, what: str, prompt: str) -> httpx.Response:
        self._counted()
        try:
            return self._client.post(f"{self.base_url}/chat/completions", json=self._request_body(prompt))
        except httpx.TransportError as error:
            raise self._transport_error(f"LLM {what}", error) from None

    def _attempt(self, what: str, prompt: str, parse: Callable[[str], T]) -> T:
        response = self._post(what, prompt)
        return self._answer(response, f"LLM {what}", lambda: self._read(response, parse, what))

    def _read(self, response: httpx.Response, parse: Callable[[str], T], what: str) -> T:
        try:
            text = answer_text(json.loads(response.content))
        except ValueError as error:  # not a chat completion at all: a faulty proxy, plainly transient
            raise TransientUpstreamError(self._redact(f"LLM {what}: invalid body: {error}")) from None
        try:
            return parse(text)
        except llm_parse.InvalidAnswerError as error:
            raise UpstreamInconsistencyError(self._redact(f"LLM {what}: invalid answer: {error}")) from None


def _provinces(text: str) -> list[Region]:
    found = llm_parse.parse_regions(text, "province")
    if not found:
        # An empty top level is never true, and a full refresh believing it would unpublish everything.
        raise llm_parse.InvalidAnswerError("the answer lists no provinces")
    return found
