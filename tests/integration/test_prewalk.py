"""The plan job of a full refresh walks every province ahead of its job (jobs.refresh.prewalk).

Against the real server, with the sample in-process (to count and refuse calls) and over loopback HTTP
(a whole refresh): every province is handed to its job exactly once, walked or not; a walked one costs
its job no request; a walk that fails or is stopped leaves the province for its job to walk, which then
reports what the upstream said, as it did before walks were made ahead.
"""

from __future__ import annotations

import threading

import pytest
import redis

from jobs import keys
from jobs.config import Settings
from jobs.errors import PermanentUpstreamError, TransientUpstreamError
from jobs.refresh import published as store
from jobs.refresh.manager import SyncTaskManager
from jobs.refresh.prewalk import prewalk
from jobs.refresh.walk import walk_province
from jobs.upstream.base import Region
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import start_background
from tests.support.helpers import checksum, exported, settle

TASK = "task_20261201_000000_abcdef"


class CountingDirectory(SampleDirectory):
    """The sample, counting `children` calls; some regions refused (404) or failing (after retries)."""

    def __init__(self, refused: tuple[str, ...] = (), failing: tuple[str, ...] = ()) -> None:
        super().__init__(3000)
        self.refused, self.failing, self.calls = refused, failing, 0
        self._lock = threading.Lock()

    def children(self, region: Region) -> list[Region]:
        with self._lock:
            self.calls += 1
        if region["code"] in self.refused:
            raise PermanentUpstreamError(f"GET /regions/{region['code']}/children: 404")
        if region["code"] in self.failing:
            raise TransientUpstreamError(f"GET /regions/{region['code']}/children: 503 five times")
        return super().children(region)


def walked(conn: redis.Redis, code: str) -> bool:
    return bool(conn.hexists(keys.province_plan(TASK, code), "__complete__"))


def test_every_province_is_handed_over_once_walked_the_largest_first(conn: redis.Redis) -> None:
    sample = CountingDirectory()
    provinces = sample.provinces()
    handed: list[str] = []
    prewalk(conn, TASK, provinces, sample, 1, lambda p: handed.append(p["code"]), lambda: False)

    assert sorted(handed) == sorted(p["code"] for p in provinces)
    cities = {p["code"]: len(sample.children(p)) for p in provinces}
    without = [p["code"] for p in provinces if cities[p["code"]] == 0]  # Hong Kong, Macau: their own leaf
    with_cities = sorted((p["code"] for p in provinces if cities[p["code"]]), key=lambda c: -cities[c])
    assert handed == without + with_cities  # one thread: in the order asked, the most cities first
    # Each job then finds its province walked, with the leaves a walk of its own finds: no request.
    calls = sample.calls
    for province in provinces:
        leaves, refused = walk_province(conn, TASK, province, sample, 4)
        fresh, _ = walk_province(conn, "task_20261201_000000_fresh0", province, sample, 4)
        assert (leaves, refused) == (fresh, 0)
    assert sample.calls == calls + sum(1 + cities[p["code"]] for p in provinces if cities[p["code"]]) + len(without)


def test_a_walk_that_fails_leaves_the_province_to_its_job(conn: redis.Redis) -> None:
    sample = CountingDirectory(refused=("440000", "110100"), failing=("320100",))  # 广东, 北京's city, 南京
    provinces = [p for p in sample.provinces() if p["code"] in ("110000", "320000", "440000", "510000")]
    handed: list[str] = []
    prewalk(conn, TASK, provinces, sample, 4, lambda p: handed.append(p["code"]), lambda: False)

    assert sorted(handed) == ["110000", "320000", "440000", "510000"]
    assert walked(conn, "510000") and walked(conn, "110000")  # a refused city is a failure the walk records
    assert not walked(conn, "440000") and not walked(conn, "320000")
    guangdong = next(p for p in provinces if p["code"] == "440000")
    with pytest.raises(PermanentUpstreamError, match="440000"):  # what the province job reports
        walk_province(conn, TASK, guangdong, sample, 4)
    _leaves, refused = walk_province(conn, TASK, next(p for p in provinces if p["code"] == "110000"), sample, 4)
    assert refused == 1
    assert conn.hexists(keys.task_failed_regions(TASK), "110100")


def test_a_stopped_walk_hands_every_province_over_and_asks_no_more(conn: redis.Redis) -> None:
    sample = CountingDirectory()
    provinces = sample.provinces()
    handed: list[str] = []
    stopped = threading.Event()

    def ready(province: Region) -> None:
        handed.append(province["code"])
        stopped.set()  # a cancel lands as the first province is handed over

    prewalk(conn, TASK, provinces, sample, 1, ready, stopped.is_set)
    assert sorted(handed) == sorted(p["code"] for p in provinces)
    assert sample.calls <= len(provinces)  # the province lists already asked for; no city's
    cityless = {p["code"] for p in provinces if not sample.children(p)}
    assert {p["code"] for p in provinces if walked(conn, p["code"])} <= cityless


def test_a_full_refresh_asks_each_region_for_its_children_once(conn: redis.Redis, settings: Settings) -> None:
    sample = SampleDirectory(3000)
    with start_background(directory=sample) as server:
        manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": server.url})
        status = settle(conn, manager, manager.create_full_refresh_task())
        asked = server.counters.by_kind
    assert status["status"] == "SUCCEEDED", status
    # Each province and each city once (one without cities or districts too: it is asked, and answers none).
    assert asked["children"] == sum(1 + len(sample.children(p)) for p in sample.provinces())
    assert checksum(exported(conn)) == checksum(sample.all_hospitals())
    assert sum(meta["records"] for meta in store.published_provinces(conn).values()) == sample.scale
