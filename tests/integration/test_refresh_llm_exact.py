"""Refreshes through an OpenAI-compatible model that slips (tests/support/upstream_servers.py's fake, real HTTP):
an item missing a field in 5 % of the answers, conflicting duplicates, truncated JSON. Each ends exact
(re-asked until the answer is whole) or FAILED naming the region; REFRESHQ_UPSTREAM_ATTEMPTS bounds the
asking."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import redis

from jobs import keys
from jobs.config import Settings
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from tests.support.helpers import checksum, drain, exported, province_hospitals
from tests.support.upstream_servers import CODE, FakeChatServer, RunningChat

API_KEY = "sk-llm-exact-0123456789"
SCALE = 3000
SLIPS = ("drop_required", "conflict", "truncate")


def _draw(prompt: str, attempt: int) -> float:
    """A fraction in [0, 1) fixed by the prompt and the attempt: the same run slips the same way."""
    digest = hashlib.blake2b(f"{prompt}\n{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64


class SlippingModel(FakeChatServer):
    """Answers from the sample, but a fraction of its answers slip: one item loses a field the record
    cannot do without (a region's code or name, a hospital's name), two items share an id with different
    fields, or the JSON stops mid-way. `always` makes every answer about those region codes slip."""

    def __init__(self, directory: SampleDirectory, rate: float, slips: tuple[str, ...], always: set[str]) -> None:
        super().__init__(directory, "plain", API_KEY, slow_seconds=5.0)
        self.rate, self.slips, self.always = rate, slips, always
        self.slipped: dict[str, int] = dict.fromkeys(SLIPS, 0)

    def answer(self, prompt: str, attempt: int) -> str:
        items: list[Any] = [dict(item) for item in self.items_for(prompt)]
        match = CODE.search(prompt)
        draw = _draw(prompt, attempt)
        forced = match is not None and match.group(1) in self.always
        if not items or not (forced or draw < self.rate):
            return json.dumps(items, ensure_ascii=False)
        slip = self.slips[int(draw * 1000) % len(self.slips)]
        with self.lock:
            self.slipped[slip] += 1
        victim = items[int(draw * 10_000) % len(items)]
        if slip == "drop_required":
            del victim["name" if "id" in victim or draw < self.rate / 2 else "code"]
        elif slip == "conflict":
            items.append({**victim, "name": victim["name"] + "（分院）"})
        else:
            return json.dumps(items, ensure_ascii=False)[: -len(json.dumps(victim, ensure_ascii=False))]
        return json.dumps(items, ensure_ascii=False)


@pytest.fixture
def llm_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("REFRESHQ_LLM_API_KEY", API_KEY)
    return Settings.from_env()


def manager_for(settings: Settings, conn: redis.Redis, chat: RunningChat) -> SyncTaskManager:
    return SyncTaskManager(settings, conn, upstream={"kind": "llm", "base_url": chat.url, "model": "test-model"})


def asked_about(chat: RunningChat, code: str) -> int:
    return sum(1 for r in chat.requests if f"行政区划代码 {code}" in r["messages"][-1]["content"])


@pytest.mark.slow
def test_a_full_refresh_through_a_model_that_slips_in_5_percent_of_answers_is_exact(
    llm_env: Settings, conn: redis.Redis
) -> None:
    """The measurement of the issue: 5 % of the answers lose a field of one item (here, or repeat an id
    with other fields, or stop mid-way). Before, whole cities vanished and the refresh SUCCEEDED; now
    each slipped answer is asked again."""
    sample = SampleDirectory(SCALE)
    slips = SLIPS
    with RunningChat(SlippingModel(sample, 0.05, slips, set())) as chat:
        manager = manager_for(llm_env, conn, chat)
        task_id = manager.create_full_refresh_task()
        drain(conn)
        status = manager.get_task_status(task_id)
        slipped, requests = chat.server.slipped, len(chat.requests)
        prompts = len({r["messages"][-1]["content"] for r in chat.requests})
    assert status["status"] == "SUCCEEDED", status
    assert sum(slipped.values()) > 50 and all(slipped[s] > 10 for s in slips), slipped
    # Every slipped answer, and only those, asked again; and the province list once more: asked when the
    # task was created (is the upstream there?), then by the plan job.
    assert requests == prompts + sum(slipped.values()) + 1
    assert checksum(exported(conn)) == checksum(sample.all_hospitals())
    assert status["statistics"]["hospitals_found"] == SCALE and status["failed_regions"] == []


@pytest.mark.parametrize("attempts", [2, 4])
@pytest.mark.parametrize(
    ("code", "name", "slip"),
    [("440104", "越秀区", "drop_required"), ("440104", "越秀区", "conflict"), ("440100", "广州市", "truncate"),
     ("440100", "广州市", "drop_required")],
    ids=["a leaf missing a name", "a leaf with conflicting duplicates", "a city cut mid-way",
         "a city's district missing its code"],
)
@pytest.mark.slow
def test_a_region_the_model_always_slips_on_fails_after_the_configured_attempts(
    attempts: int, code: str, name: str, slip: str, llm_env: Settings, conn: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REFRESHQ_UPSTREAM_ATTEMPTS", str(attempts))
    sample = SampleDirectory(SCALE)
    with RunningChat(SlippingModel(sample, 0.0, (slip,), {code})) as chat:
        manager = manager_for(Settings.from_env(), conn, chat)
        task_id = manager.create_province_refresh_task("广东")
        drain(conn)
        status = manager.get_task_status(task_id)
        asked = asked_about(chat, code)
    assert status["status"] == "FAILED", status
    assert [(r["code"], r["name"]) for r in status["failed_regions"]] == [(code, name)]
    assert f"{code} {name}" in status["error_message"]
    assert asked == attempts
    assert conn.hget(keys.PUBLISHED, "440000") is None


def test_a_region_that_slips_once_is_asked_again_and_the_refresh_is_exact(llm_env: Settings, conn: redis.Redis) -> None:
    sample = SampleDirectory(SCALE)

    class SlipsOnce(SlippingModel):
        def answer(self, prompt: str, attempt: int) -> str:
            if attempt > 1:
                return json.dumps(self.items_for(prompt), ensure_ascii=False)
            return super().answer(prompt, attempt)

    with RunningChat(SlipsOnce(sample, 0.0, SLIPS, {"440100", "440104", "440106"})) as chat:
        manager = manager_for(llm_env, conn, chat)
        task_id = manager.create_province_refresh_task("广东")
        drain(conn)
        status = manager.get_task_status(task_id)
        asked = [asked_about(chat, code) for code in ("440100", "440104", "440106")]
    assert status["status"] == "SUCCEEDED", status
    assert asked == [2, 2, 2]
    assert checksum(exported(conn)) == checksum(province_hospitals(sample, "44"))
