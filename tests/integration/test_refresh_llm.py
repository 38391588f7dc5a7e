"""Province refreshes end to end through the LLM upstream, against the local OpenAI-compatible server
of tests/support/upstream_servers.py (real HTTP on loopback), run by real forking workers."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from jobs import keys
from jobs.config import Settings
from jobs.refresh import published as store
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from tests.support.helpers import checksum, drain, exported, province_hospitals, redis_keys_holding
from tests.support.upstream_servers import CODE, FakeChatServer, RunningChat, start_chat_server

SCALE = 3000
API_KEY = "sk-llm-test-0123456789"
MODEL = "test-model"


class RegionsNeverValid(FakeChatServer):
    """Answers like the "plain" style, except for some regions' children or hospitals: always invalid JSON."""

    def __init__(self, directory: SampleDirectory, codes: set[str], asked: str) -> None:
        super().__init__(directory, "plain", API_KEY, slow_seconds=5.0)
        self.bad_codes = codes
        self.bad_hospitals = asked == "hospitals"

    def answer(self, prompt: str, attempt: int) -> str:
        match = CODE.search(prompt)
        if match and match.group(1) in self.bad_codes and ("医院" in prompt) == self.bad_hospitals:
            return '```json\n[{"code": "110101", "name": "东'  # cut off mid-array, every time
        return super().answer(prompt, attempt)


@pytest.fixture
def llm_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with the LLM's API key, in this process and in the work-horses `drain` forks."""
    monkeypatch.setenv("REFRESHQ_LLM_API_KEY", API_KEY)
    return Settings.from_env()


def llm_manager(settings: Settings, conn: redis.Redis, chat: RunningChat) -> SyncTaskManager:
    return SyncTaskManager(settings, conn, upstream={"kind": "llm", "base_url": chat.url, "model": MODEL})


def refresh(manager: SyncTaskManager, conn: redis.Redis, province: str) -> dict[str, Any]:
    task_id = manager.create_province_refresh_task(province)
    drain(conn)
    return manager.get_task_status(task_id)


@pytest.mark.parametrize(
    ("style", "province", "code"),
    [("fenced", "广东", "440000"), ("prose", "海南省", "460000"), ("invalid_then_valid", "北京", "110000")],
)
def test_a_province_refresh_through_the_llm(
    style: str, province: str, code: str, llm_settings: Settings, conn: redis.Redis
) -> None:
    sample = SampleDirectory(SCALE)
    expected = province_hospitals(sample, code[:2])
    with start_chat_server(sample, style, API_KEY) as chat:
        status = refresh(llm_manager(llm_settings, conn, chat), conn, province)
        requests = chat.requests
    assert status["status"] == "SUCCEEDED", status
    assert status["progress"] == 100 and status["failed_regions"] == []
    assert status["statistics"]["hospitals_found"] == len(expected)
    assert list(store.published_provinces(conn)) == [code]
    assert checksum(exported(conn, code)) == checksum(expected)
    assert requests and all(r["model"] == MODEL for r in requests)
    # The API key went to the model server and nowhere into Redis.
    assert redis_keys_holding(conn, API_KEY) == []


@pytest.mark.parametrize(
    ("asked", "beijing", "tianjin"),
    [
        ("hospitals", ("110101", "东城区", "district"), ("120101", "和平区", "district")),
        ("children", ("110100", "北京市", "city"), ("120100", "天津市", "city")),
    ],
    ids=["a leaf's hospitals", "a city's districts"],
)
@pytest.mark.slow
def test_a_region_the_llm_never_answers_validly_fails_the_task_and_publishes_nothing(
    asked: str, beijing: tuple[str, str, str], tianjin: tuple[str, str, str], llm_settings: Settings,
    conn: redis.Redis,
) -> None:
    good_sample, bad_sample = SampleDirectory(SCALE), SampleDirectory(2 * SCALE)
    with start_chat_server(good_sample, "plain", API_KEY) as good:
        published = refresh(llm_manager(llm_settings, conn, good), conn, "北京")
    assert published["status"] == "SUCCEEDED", published
    before = exported(conn, "110000")
    assert checksum(before) == checksum(province_hospitals(good_sample, "11"))
    meta_before = store.published_provinces(conn)

    # 北京 was published before, 天津 never was; one region of each never gets a valid answer.
    with RunningChat(RegionsNeverValid(bad_sample, {beijing[0], tianjin[0]}, asked)) as bad:
        manager = llm_manager(llm_settings, conn, bad)
        again, never = manager.create_province_refresh_task("北京"), manager.create_province_refresh_task("天津")
        drain(conn)
        asked_bad = [r for r in bad.requests if f"行政区划代码 {beijing[0]}" in r["messages"][-1]["content"]]
    for task_id, (code, name, level) in ((again, beijing), (never, tianjin)):
        status = manager.get_task_status(task_id)
        assert status["status"] == "FAILED", status
        assert status["error_message"]
        assert [(r["code"], r["name"], r["level"]) for r in status["failed_regions"]] == [(code, name, level)]
    assert len(asked_bad) >= 3  # asked again, a bounded number of times, before giving up
    # Nothing of either refresh is published: 天津 has no data, the earlier 北京 is still the published one.
    assert conn.hget(keys.PUBLISHED, "120000") is None
    assert conn.hget(keys.PUBLISHED, "110000") == published["task_id"].encode()
    assert store.published_provinces(conn) == meta_before
    assert checksum(exported(conn)) == checksum(before)
    assert conn.ttl(keys.data_leaves("110000", published["task_id"])) == -1
